"""The console's summary of a cell: the method config as chosen, and every number to three
significant digits (a mean of 7.12e-4 is not 0.0000)."""
from __future__ import annotations

from pathlib import Path

from experiments.run.runner import print_summary


def _record(config: str | None) -> dict:
    return {"model": {"name": "tiny", "test_accuracy": 0.95}, "dataset": {"name": "blobs"},
            "method": {"name": "my_method", "config": config}, "n_samples": 8,
            "runtime": {"seconds_per_sample": 0.000123456},
            "metrics": {"infidelity": {"direction": "lower", "mean": 7.123e-4, "n": 8, "n_nan": 0},
                        "sparseness": {"direction": "higher", "mean": 0.41257, "n": 8, "n_nan": 1},
                        "pixel_flipping": {"direction": "lower", "mean": 12345.6, "n": 8, "n_nan": 0}}}


def test_the_summary_names_the_config_and_prints_three_significant_digits(capsys):
    print_summary(_record("gxd_half"), Path("runs/abc"))
    out = capsys.readouterr().out
    assert "tiny on blobs, method gxd_half, 8 samples" in out and "my_method" not in out
    assert "7.12e-04" in out and "0.0000" not in out
    assert "0.413" in out and "1.23e+04" in out
    assert "explain 1.23e-04 s/sample" in out


def test_a_record_without_the_config_name_shows_the_class_name(capsys):
    print_summary(_record(None), Path("runs/abc"))
    assert "method my_method, 8 samples" in capsys.readouterr().out
