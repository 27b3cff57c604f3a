"""Shared fixtures: every test writes into its own temporary results and cache folders."""
from __future__ import annotations

import os

import pytest
import torch

os.environ.setdefault("BACKTRACE_BENCH_NO_PROGRESS", "1")
# TensorFlow takes its thread count once, when it starts, whichever test starts it; Keras models
# train on model.train.threads (1) threads (experiments.zoo.keras_models.tensorflow_threads)
os.environ.setdefault("TF_NUM_INTRAOP_THREADS", "1")
os.environ.setdefault("TF_NUM_INTEROP_THREADS", "1")
torch.set_num_threads(max(1, min(2, torch.get_num_threads())))


@pytest.fixture
def run_dirs(tmp_path):
    """Overrides that send a run's record and model cache into the test's temp folder."""
    return [f"results_dir={tmp_path / 'runs'}", f"cache_dir={tmp_path / 'cache'}"]


@pytest.fixture(scope="module")
def one_thread():
    """Tiny models run faster on one thread than on two contended ones."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)
