"""The benchmark harness: data (``experiments.data``), the model zoo (``experiments.zoo``), running
cells (``experiments.run``) and reporting their records (``experiments.report``).

``from experiments import evaluate, run_cell, sweep`` gives the Python API (:mod:`experiments.api`),
imported on first use so that the harness's light modules stay light."""
import os
from typing import Any

# Set before anything imports TensorFlow (quantus does whenever it is installed). Its start-up log
# lines on stderr would bury the one-line errors. Its oneDNN kernels are off because they change
# Keras models' outputs in the sixth digit from what TensorFlow's own kernels give, and a published
# Keras table must re-derive to 1e-6 in any process that imports the harness, not only in those
# started by run.py.
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
os.environ.setdefault("TF_ENABLE_ONEDNN_OPTS", "0")

_API = ("evaluate", "run_cell", "sweep", "summary_table", "record_frame")


def __getattr__(name: str) -> Any:
    if name in _API:
        from experiments import api

        return getattr(api, name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")
