"""Where a run executes: alone, in a sequential sweep, or as one worker of a parallel Hydra launcher.

The launcher decides two things a run must adapt to: how many torch threads it may use (workers x
threads = cores, so parallel cells do not oversubscribe the machine) and whether it may draw a
progress bar (parallel workers share one terminal).
"""
from __future__ import annotations

import os
from typing import Any, Optional

# Hydra launchers that run cells in separate processes at the same time.
PARALLEL_LAUNCHERS = ("joblib", "submitit")


def hydra_runtime() -> Optional[Any]:
    """The Hydra config of the running job (``hydra.*``), or None outside a Hydra app."""
    from hydra.core.hydra_config import HydraConfig

    return HydraConfig.get() if HydraConfig.initialized() else None


def in_sweep() -> bool:
    from hydra.types import RunMode

    hc = hydra_runtime()
    return hc is not None and hc.mode == RunMode.MULTIRUN


def launcher_name() -> Optional[str]:
    """``joblib``, ``submitit_local``, ``submitit_slurm``, ``basic``, ... for a sweep's job; None otherwise."""
    if not in_sweep():
        return None
    hc = hydra_runtime()
    target = str(hc.launcher.get("_target_", ""))
    for name in ("joblib", "submitit", "ray"):
        if name in target.lower():
            if name == "submitit":
                return "submitit_slurm" if "Slurm" in target else "submitit_local"
            return name
    return "basic"


def in_parallel_worker() -> bool:
    name = launcher_name()
    return name is not None and name.startswith(PARALLEL_LAUNCHERS)


def joblib_workers(n_jobs: Any, cores: int) -> int:
    """Worker processes of ``joblib.Parallel(n_jobs)``: negative counts from the core count, as joblib does."""
    n = int(n_jobs) if n_jobs is not None else -1
    if n < 0:
        n = cores + 1 + n
    return max(1, n)


def run_threads(threads: Optional[int], cores: Optional[int] = None) -> Optional[int]:
    """Torch threads for this run: ``threads`` when set; in a joblib sweep ``cores // n_jobs``; in a
    submitit sweep the job's ``cpus_per_task`` when set; None (torch's default) otherwise."""
    if threads is not None:
        return int(threads)
    name = launcher_name()
    if name is None:
        return None
    cores = cores or os.cpu_count() or 1
    launcher = hydra_runtime().launcher
    if name == "joblib":
        return max(1, cores // joblib_workers(launcher.get("n_jobs"), cores))
    if name.startswith("submitit") and launcher.get("cpus_per_task"):
        return int(launcher.cpus_per_task)
    return None
