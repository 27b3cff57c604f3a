"""Table rows never merge records of different method settings: a row is the method config
chosen plus every parameter that sets it apart, for one's own configs as for the project's."""
from __future__ import annotations

import numpy as np
import pandas as pd

from experiments.report.paper_tables import collect
from experiments.report.variants import variant_labels
from experiments.run.records import write_record

OWN = "my_extension.GradientTimesDelta"
IG = "baselines.IntegratedGradientsMethod"


def _record(config: str | None, params: dict, name: str = "my_method", n: int = 6,
            created: str = "2026-01-01T00:00:00", seed: int = 0) -> dict:
    method = {"name": name, "signed": True, "params": {**params, "output": "softmax"}}
    if config is not None:
        method["config"] = config
    return {"config_hash": f"{config}-{params}", "created": created, "n_samples": n, "output": "softmax",
            "config": {"table": "own", "n_samples": n, "seed": seed}, "model": {"name": "tiny", "test_accuracy": 0.9},
            "dataset": {"name": "blobs", "modality": "tabular"}, "method": method,
            "runtime": {"seconds_per_sample": 0.01, "forward_backward_units": 1.0},
            "metrics": {"faith": {"direction": "higher", "mean": 0.0, "n": n, "n_nan": 0}}}


def test_two_configs_of_one_class_are_two_rows_by_their_names():
    a = _record("my_method", {"_target_": OWN, "reference": 0.0})
    b = _record("gxd_half", {"_target_": OWN, "reference": 0.5})
    assert variant_labels([a, b]) == ["my_method", "gxd_half"]


def test_records_of_one_config_with_other_parameters_name_every_difference():
    a = _record("my_method", {"_target_": OWN, "reference": 0.0, "k": 1})
    b = _record("my_method", {"_target_": OWN, "reference": 0.5, "k": 1})
    c = _record("my_method", {"_target_": OWN, "reference": 0.5, "k": 2})
    assert variant_labels([a, b, c]) == ["my_method (k=1, reference=0.0)", "my_method (k=1, reference=0.5)",
                                         "my_method (k=2, reference=0.5)"]
    # a parameter only one record has is a difference too
    d = _record("my_method", {"_target_": OWN, "reference": 0.0, "k": 1, "extra": True})
    assert variant_labels([a, d]) == ["my_method (extra=-)", "my_method (extra=True)"]


def test_the_projects_configs_also_name_what_differs_from_the_file():
    """ig.yaml says n_steps: 50; a lone record run with n_steps=4 says so, one run as configured does not."""
    file_params = {"_target_": IG, "n_steps": 50, "baseline": "zero", "method": "gausslegendre",
                   "internal_batch_size": 64}
    assert variant_labels([_record("ig", {**file_params, "n_steps": 4}, name="ig")]) == ["ig (n_steps=4)"]
    assert variant_labels([_record("ig", file_params, name="ig")]) == ["ig"]
    # records written before the config name was stored: the class's name, compared with the file
    assert variant_labels([_record(None, {**file_params, "n_steps": 4}, name="ig")]) == ["ig (n_steps=4)"]
    # an own config shadowing a project name with another class is not compared with the project's file
    assert variant_labels([_record("ig", {"_target_": OWN, "reference": 0.0})]) == ["ig"]


def _write(root, record: dict, faith: np.ndarray, folder: str) -> None:
    n = len(faith)
    scores = pd.DataFrame({"sample": np.arange(n), "faith": faith})
    write_record(root, folder, record, scores, {"attributions": np.zeros((n, 3))})


def test_collect_keeps_both_own_configs_and_both_settings_of_one(tmp_path):
    root = tmp_path / "runs"
    _write(root, _record("my_method", {"_target_": OWN, "reference": 0.0}), np.arange(6.0), "a")
    _write(root, _record("gxd_half", {"_target_": OWN, "reference": 0.5}), np.arange(6.0) + 1, "b")
    _write(root, _record("gxd_half", {"_target_": OWN, "reference": 0.25}, created="2026-02-01T00:00:00"),
           np.arange(6.0) + 2, "c")
    (data,) = collect(root)
    assert sorted(data.folders) == ["gxd_half (reference=0.25)", "gxd_half (reference=0.5)", "my_method"]
    means = data.scores.groupby("method")["score"].mean()
    assert means["my_method"] == 2.5 and means["gxd_half (reference=0.5)"] == 3.5


def test_a_row_with_two_records_of_other_run_settings_says_which_it_left_out(tmp_path, capsys):
    """Same method settings, other seed: the newer record is the row, and one line names the other."""
    root = tmp_path / "runs"
    _write(root, _record("my_method", {"_target_": OWN, "reference": 0.0}, seed=1), np.arange(6.0), "old")
    _write(root, _record("my_method", {"_target_": OWN, "reference": 0.0}, created="2026-03-01T00:00:00"),
           np.arange(6.0) + 1, "new")
    (data,) = collect(root)
    assert data.folders["my_method"].name == "new"
    err = capsys.readouterr().err.strip()
    assert err == (f"note: table 'own': row 'my_method' has two records that differ in seed; using the newer "
                   f"(new), leaving out {root / 'old'}")
