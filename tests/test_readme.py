"""The console examples of the README and the docs pages are what the commands print today (they
are regenerated with ``python -m tests.helpers.readme_examples README.md docs/*.md``, never typed)."""
from __future__ import annotations

import pytest

from experiments.run.config import ROOT
from tests.helpers.readme_examples import examples, run_example

PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
SHOWN = [(page.relative_to(ROOT).as_posix(), command, shown)
         for page in PAGES for command, shown in examples(page.read_text())]


def test_the_pages_show_console_examples():
    running = [command for page, command, _ in SHOWN if page == "docs/running.md"]
    assert running[:1] == [".venv/bin/python run.py model=nope"]


@pytest.mark.parametrize("page,command,shown", SHOWN, ids=[f"{p}: {c}" for p, c, _ in SHOWN])
def test_a_console_example_prints_what_its_page_shows(page, command, shown):
    assert run_example(command) == shown, "rerun `python -m tests.helpers.readme_examples README.md docs/*.md`"
