"""The README's console examples are what the commands print today (they are regenerated with
``python -m tests.helpers.readme_examples``, never typed)."""
from __future__ import annotations

import pytest

from experiments.run.config import ROOT
from tests.helpers.readme_examples import examples, run_example

SHOWN = examples((ROOT / "README.md").read_text())


def test_the_readme_shows_console_examples():
    assert [c for c, _ in SHOWN][:1] == [".venv/bin/python run.py model=nope"]


@pytest.mark.parametrize("command,shown", SHOWN, ids=[c for c, _ in SHOWN])
def test_a_readme_console_example_prints_what_the_readme_shows(command, shown):
    assert run_example(command) == shown, "rerun `python -m tests.helpers.readme_examples README.md`"
