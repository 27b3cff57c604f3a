"""A user's own method, metric, model and dataset from a config folder outside the project:
valid choices through --config-dir and hydra.searchpath, and run end to end by run.py."""
from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

from experiments.errors import ConfigError
from experiments.run.config import (ROOT, check_command_line, check_overrides, compose, group_options, method_config,
                                    split_command_line)
from tests.helpers.faults_helpers import cli, one_error_line

EXAMPLE = ROOT / "examples" / "extend"
PROJECT_METHODS = sorted(p.stem for p in (ROOT / "configs" / "method").glob("*.yaml"))


@pytest.fixture
def user_dir(tmp_path):
    """The example extension copied to a folder of the user's own, outside the project."""
    dst = tmp_path / "mine"
    shutil.copytree(EXAMPLE, dst, ignore=shutil.ignore_patterns("__pycache__"))
    return dst


def test_options_on_the_search_path_are_valid_choices(user_dir):
    conf = user_dir / "conf"
    assert group_options("method") == PROJECT_METHODS
    assert group_options("method", [conf]) == sorted([*PROJECT_METHODS, "my_method"])
    assert group_options("method", overrides=[f"hydra.searchpath=[file://{conf}]"]) == sorted([*PROJECT_METHODS,
                                                                                               "my_method"])
    assert "tiny" in group_options("model", [conf]) and "blobs" in group_options("dataset", [conf])
    assert "top_feature_drop" in group_options("metric", [conf]) and "mine" in group_options("metrics", [conf])
    check_overrides(["--config-dir", str(conf), "model=tiny", "method=my_method,ig", "metrics=mine"])
    check_overrides([f"--config-dir={conf}", "method=my_method"])
    check_overrides([f"hydra.searchpath=[file://{conf}]", "dataset=blobs"])


def test_unknown_option_lists_what_the_search_path_holds(user_dir):
    conf = user_dir / "conf"
    with pytest.raises(ConfigError) as err:
        check_overrides(["--config-dir", str(conf), "method=my_methd"])
    assert str(err.value) == f"unknown method 'my_methd'; valid choices: {', '.join(sorted([*PROJECT_METHODS, 'my_method']))}"
    with pytest.raises(ConfigError) as err:     # without the folder the option does not exist
        check_overrides(["method=my_method"])
    assert str(err.value) == f"unknown method 'my_method'; valid choices: {', '.join(PROJECT_METHODS)}"


def test_config_dir_and_searchpath_compose_the_same_run(user_dir, tmp_path):
    conf = user_dir / "conf"
    dirs = [f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]
    (a,) = check_command_line(["--config-dir", str(conf), "model=tiny", "method=my_method", "metrics=mine", *dirs])
    (b,) = check_command_line([f"hydra.searchpath=[file://{conf}]", "model=tiny", "method=my_method", "metrics=mine",
                               *dirs])
    assert a == b
    assert a.dataset._target_ == "my_extension.blobs" and a.model.net._target_ == "my_extension.TinyNet"
    assert list(a.metrics) == ["top_feature_drop", "sparseness", "relevance_rank_accuracy"]
    assert compose(["model=tiny"], config_dirs=[conf]).dataset.n_features == 6
    cfg = method_config("my_method", "logits", config_dirs=[conf])
    assert dict(cfg) == {"_target_": "my_extension.GradientTimesDelta", "reference": 0.0, "output": "logits"}


def test_command_line_split_and_a_config_dir_flag_without_a_folder():
    assert split_command_line(["-m", "--config-dir", "a", "-cd=b", "--config-dir=c", "x=1"]) == (
        ["-m"], ["a", "b", "c"], ["x=1"])
    with pytest.raises(ConfigError, match="^--config-dir needs a folder: --config-dir DIR$"):
        split_command_line(["x=1", "--config-dir"])


def test_a_bad_key_of_a_users_config_is_the_usual_one_line(user_dir):
    with pytest.raises(ConfigError) as err:
        check_command_line(["--config-dir", str(user_dir / "conf"), "model=tiny", "model.net.hiden=3"])
    assert str(err.value) == ("unknown setting 'model.net.hiden'; valid keys under model.net: hidden "
                              "(prefix + to add a new key: +model.net.hiden=...)")


@pytest.mark.parametrize("args,message", [
    (["--config-dir", "nope"], "error: config dir 'nope' is not a folder; give a folder holding "
                               "<group>/<option>.yaml files"),
    (["hydra.searchpath=[file:///nonexistent/conf]"], "error: hydra.searchpath entry 'file:///nonexistent/conf' "
                                                     "is not a folder; give file://<folder holding "
                                                     "<group>/<option>.yaml files>"),
    (["-cd", "nope/conf"], "error: config dir 'nope/conf' is not a folder; give a folder holding "
                           "<group>/<option>.yaml files"),
])
def test_a_config_folder_that_does_not_exist_is_one_line(args, message, tmp_path):
    code, _, err = cli([*args, "model=mlp", f"results_dir={tmp_path / 'runs'}"])
    assert code == 2 and one_error_line(err) == message
    assert not (tmp_path / "runs").exists()


def test_a_class_that_cannot_be_imported_is_one_line(tmp_path):
    conf = tmp_path / "conf"
    (conf / "method").mkdir(parents=True)
    (conf / "method" / "gone.yaml").write_text("_target_: no_such_module_here.Method\noutput: ${output}\n")
    code, _, err = cli(["--config-dir", str(conf), "model=mlp", "model.train.epochs=1", "method=gone", "n_samples=2",
                        f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"])
    assert code == 2
    assert one_error_line(err) == (
        "error: method config names 'no_such_module_here.Method', which cannot be imported (ModuleNotFoundError: "
        "No module named 'no_such_module_here'); check the name, and put the folder of its module on PYTHONPATH")


def _run_py(*args: str, cwd, pythonpath) -> subprocess.CompletedProcess:
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1", "PYTHONPATH": str(pythonpath)}
    return subprocess.run([sys.executable, str(ROOT / "run.py"), *args], cwd=cwd, capture_output=True, text=True,
                          env=env, timeout=900)


def _records(root):
    return {json.loads((p / "record.json").read_text())["method"]["name"]: p for p in root.iterdir()
            if (p / "record.json").exists()}


@pytest.mark.slow
def test_own_method_model_dataset_and_metric_run_end_to_end(user_dir, tmp_path):
    """The example of docs/extend.md: with --config-dir, a sweep of the user's method and the project's
    gradient x input (the same attributions, since the user's reference is 0); with
    hydra.searchpath, the same cell again, giving the same record."""
    conf = user_dir / "conf"
    common = ["model=tiny", "metrics=mine", "n_samples=8", f"cache_dir={tmp_path / 'cache'}"]
    proc = _run_py("-m", "--config-dir", str(conf), "method=my_method,gradxinput", *common,
                   f"results_dir={tmp_path / 'a'}", cwd=tmp_path, pythonpath=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = _records(tmp_path / "a")
    assert sorted(runs) == ["gradxinput", "my_method"]
    record = json.loads((runs["my_method"] / "record.json").read_text())
    assert record["model"]["name"] == "tiny" and record["dataset"]["name"] == "blobs"
    assert list(record["metrics"]) == ["top_feature_drop", "sparseness", "relevance_rank_accuracy"]
    assert record["method"]["absent"] == {"reference": 0.0}
    ours, theirs = (np.load(runs[m] / "arrays.npz")["attributions"] for m in ("my_method", "gradxinput"))
    assert ours.shape == (8, 6) and np.allclose(ours, theirs, atol=1e-6) and np.abs(ours).sum() > 0

    proc = _run_py(f"hydra.searchpath=[file://{conf}]", "method=my_method", *common,
                   f"results_dir={tmp_path / 'b'}", cwd=tmp_path, pythonpath=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    (again,) = _records(tmp_path / "b").values()
    assert again.name == runs["my_method"].name                 # the same config hash
    assert (again / "scores.csv").read_text() == (runs["my_method"] / "scores.csv").read_text()


@pytest.mark.slow
def test_two_own_configs_of_one_class_are_named_as_chosen_and_make_two_rows(user_dir, tmp_path):
    """gxd_half.yaml next to my_method.yaml: the same class with reference 0.5 instead of 0.0.
    The console and the record name each cell by the config chosen, and the table has both rows."""
    from experiments.report.paper_tables import main as tables

    conf = user_dir / "conf"
    (conf / "method" / "gxd_half.yaml").write_text(
        "_target_: my_extension.GradientTimesDelta\nreference: 0.5\noutput: ${output}\n")
    proc = _run_py("-m", "--config-dir", str(conf), "model=tiny", "metrics=mine", "n_samples=8",
                   "method=my_method,gxd_half", f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}",
                   cwd=tmp_path, pythonpath=user_dir)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "tiny on blobs, method my_method, 8 samples" in proc.stdout
    assert "tiny on blobs, method gxd_half, 8 samples" in proc.stdout
    records = [json.loads((p / "record.json").read_text()) for p in (tmp_path / "runs").iterdir()
               if (p / "record.json").exists()]
    assert sorted((r["method"]["config"], r["method"]["name"], r["method"]["params"]["reference"]) for r in records) == [
        ("gxd_half", "my_method", 0.5), ("my_method", "my_method", 0.0)]
    assert tables(["--results-dir", str(tmp_path / "runs"), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "tables" / "tiny_blobs.md").read_text()
    assert "| my_method | " in md and "| gxd_half | " in md
