"""examples/own_attributions.ipynb runs from top to bottom (executed here with nbclient, in a
kernel of this interpreter), and what it shows holds: every method scored, the summary with
intervals and tests, the one-line refusal of an array for a robustness metric, the heatmap."""
from __future__ import annotations

import os
import shutil

import nbformat
import pytest

from experiments.run.config import ROOT

NOTEBOOK = ROOT / "examples" / "own_attributions.ipynb"


def _outputs(cell) -> str:
    parts = []
    for out in cell.get("outputs", []):
        if out.get("output_type") == "stream":
            parts.append(out["text"])
        elif "data" in out:
            parts.append(out["data"].get("text/plain", ""))
    return "".join(parts)


@pytest.mark.slow
def test_the_own_attributions_notebook_runs_and_shows_what_it_says(tmp_path, monkeypatch):
    from nbclient import NotebookClient

    shutil.copy(NOTEBOOK, tmp_path / NOTEBOOK.name)
    nb = nbformat.read(tmp_path / NOTEBOOK.name, as_version=4)
    # the kernel imports this checkout's packages, and writes nothing outside the temporary folder
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p))
    monkeypatch.setenv("BACKTRACE_BENCH_NO_PROGRESS", "1")
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()

    code = [c for c in nb.cells if c.cell_type == "code"]
    assert all(not any(o.get("output_type") == "error" for o in c.get("outputs", [])) for c in code)
    text = "\n".join(_outputs(c) for c in code)
    accuracy = float(text.split("test accuracy ")[1].split()[0])
    assert accuracy > 0.8
    for method in ("backtrace", "ig", "saliency", "occlusion (array)", "occlusion (function)"):
        assert method in text
    for column in ("ci_low", "ci_high", "test", "p_holm"):
        assert column in text
    assert ("metric(s) max_sensitivity (robustness) explain again, which the fixed attributions "
            "'occlusion (array)' cannot") in text
    assert (tmp_path / "own_attributions_heatmap.png").stat().st_size > 10_000
