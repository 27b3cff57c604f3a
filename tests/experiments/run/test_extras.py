"""A missing optional extra is one line naming it, exit code 2, nothing written: for a Keras model
and for a method whose module needs TensorFlow alike. TensorFlow is hidden from a fresh
interpreter (``sys.modules['tensorflow'] = None``), as on a machine without the ``tf`` extra."""
from __future__ import annotations

import os
import subprocess
import sys

import pytest

from experiments.errors import ConfigError, missing_extra, needs_extra, unimportable
from experiments.run.config import ROOT

HIDE_TF = "import sys; sys.modules['tensorflow'] = None; sys.modules['keras'] = None; "
EXTRA_LINE = "needs TensorFlow and Keras, which are not installed; install the 'tf' extra: pip install 'backtrace-bench[tf]'"


def _run_py_without_tf(args: list[str], cwd, pythonpath: str = "") -> subprocess.CompletedProcess:
    code = (HIDE_TF + f"sys.argv = ['run.py', *{args!r}]; import runpy; "
            f"runpy.run_path({str(ROOT / 'run.py')!r}, run_name='__main__')")
    env = {**os.environ, "BACKTRACE_BENCH_NO_PROGRESS": "1",
           "PYTHONPATH": os.pathsep.join(p for p in (str(ROOT), pythonpath) if p)}
    return subprocess.run([sys.executable, "-c", code], cwd=cwd, capture_output=True, text=True, env=env, timeout=600)


def _one_line(proc: subprocess.CompletedProcess) -> str:
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    return lines[0]


@pytest.mark.parametrize("model", ["keras_mlp", "keras_cnn_torch"])
def test_a_keras_model_without_the_tf_extra_is_one_line(model, tmp_path):
    proc = _run_py_without_tf([f"model={model}", "method=saliency", "n_samples=2", f"results_dir={tmp_path / 'runs'}",
                               f"cache_dir={tmp_path / 'cache'}"], cwd=tmp_path)
    assert proc.returncode == 2
    assert _one_line(proc) == f"error: model '{model}' {EXTRA_LINE}"
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()


def test_a_method_that_needs_tensorflow_without_the_tf_extra_is_one_line(tmp_path):
    (tmp_path / "conf" / "method").mkdir(parents=True)
    (tmp_path / "conf" / "method" / "keras_only.yaml").write_text("_target_: tf_method.KerasOnly\noutput: ${output}\n")
    (tmp_path / "tf_method.py").write_text("import tensorflow  # noqa: F401\nfrom baselines.base import Explainer\n\n\n"
                                           "class KerasOnly(Explainer):\n    name = 'keras_only'\n")
    proc = _run_py_without_tf(["--config-dir", str(tmp_path / "conf"), "model=mlp", "model.train.epochs=1",
                               "method=keras_only", "n_samples=2", f"results_dir={tmp_path / 'runs'}",
                               f"cache_dir={tmp_path / 'cache'}"], cwd=tmp_path, pythonpath=str(tmp_path))
    assert proc.returncode == 2
    assert _one_line(proc) == f"error: method 'keras_only' {EXTRA_LINE}"
    assert "Error" not in proc.stdout                     # no Hydra report on stdout either
    assert not (tmp_path / "runs").exists() and not (tmp_path / "cache").exists()   # refused before training


def test_the_extra_is_found_through_the_causes_and_only_for_its_modules():
    try:
        try:
            raise ModuleNotFoundError("No module named 'keras'", name="keras")
        except ImportError as inner:
            raise RuntimeError("wrapped") from inner
    except RuntimeError as exc:
        assert missing_extra(exc) == "tf"
        assert str(unimportable("model", "pkg.net", exc)) == f"model 'pkg.net' {EXTRA_LINE}"
    assert missing_extra(ModuleNotFoundError("No module named 'numpy'", name="numpy")) is None
    assert missing_extra(ModuleNotFoundError("x", name="tensorflow.python")) == "tf"
    assert isinstance(needs_extra("method", "m", "tf"), ConfigError)
