"""The benchmark harness: data (``experiments.data``), the model zoo (``experiments.zoo``), running
cells (``experiments.run``) and reporting their records (``experiments.report``).

``from experiments import evaluate, run_cell, sweep`` gives the Python API (:mod:`experiments.api`),
imported on first use so that the harness's light modules stay light."""
from typing import Any

_API = ("evaluate", "run_cell", "sweep", "summary_table", "record_frame")


def __getattr__(name: str) -> Any:
    if name in _API:
        from experiments import api

        return getattr(api, name)
    raise AttributeError(f"module 'experiments' has no attribute {name!r}")
