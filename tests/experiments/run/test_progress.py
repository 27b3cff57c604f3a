"""Progress bars for explaining and metrics: drawn on a terminal, never in CI or into a pipe."""
from __future__ import annotations

import fcntl
import os
import pty
import struct
import subprocess
import sys
import termios

import pytest

from experiments.run import progress
from experiments.run.config import ROOT

TINY = ["model=mlp", "model.train.epochs=2", "method=saliency", "metrics=quick", "n_samples=8", "batch_size=4"]


def _run_on_a_terminal(tmp_path, env_extra: dict[str, str]) -> tuple[str, str]:
    """run.py with stderr on a pseudo-terminal: (what the terminal showed, stdout)."""
    env = {k: v for k, v in os.environ.items() if k not in ("CI", "BACKTRACE_BENCH_NO_PROGRESS")}
    env.update(env_extra)
    master, slave = pty.openpty()
    # a terminal 120 columns wide (a new pseudo-terminal has 0, and tqdm draws bars to fit)
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 120, 0, 0))
    proc = subprocess.Popen([sys.executable, str(ROOT / "run.py"), *TINY, f"results_dir={tmp_path / 'runs'}",
                             f"cache_dir={tmp_path / 'cache'}", "force=true"],
                            cwd=tmp_path, stdout=subprocess.PIPE, stderr=slave, env=env)
    os.close(slave)
    shown = b""
    while True:
        try:
            chunk = os.read(master, 4096)
        except OSError:  # the terminal closed: the process is done with it
            break
        if not chunk:
            break
        shown += chunk
    stdout = proc.stdout.read()
    assert proc.wait(timeout=600) == 0, shown.decode(errors="replace")
    os.close(master)
    return shown.decode(errors="replace"), stdout.decode()


@pytest.mark.slow
def test_bars_on_a_terminal_and_none_in_ci(tmp_path):
    shown, out = _run_on_a_terminal(tmp_path, {})
    assert "training MLP" in shown                                      # the model trains on first use
    assert "explaining (saliency)" in shown and "/2 [" in shown          # two batches of four
    assert "metrics" in shown and "faithfulness_correlation" in shown and "sparseness" in shown
    shown_ci, out_ci = _run_on_a_terminal(tmp_path, {"CI": "true"})
    assert "explaining" not in shown_ci and "metrics" not in shown_ci
    # the bars go to the terminal only, never into what the run prints
    assert "explaining" not in out + out_ci and "record:" in out and "record:" in out_ci


def test_progress_is_off_without_a_terminal_in_ci_and_when_asked(monkeypatch):
    class Tty:
        def isatty(self):
            return True
    monkeypatch.delenv("BACKTRACE_BENCH_NO_PROGRESS", raising=False)
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.setattr(sys, "stderr", Tty())
    assert progress.progress_enabled()
    for value, on in (("true", False), ("1", False), ("false", True), ("", True)):
        monkeypatch.setenv("CI", value)
        assert progress.progress_enabled() is on, value
    monkeypatch.delenv("CI")
    monkeypatch.setenv("BACKTRACE_BENCH_NO_PROGRESS", "1")
    assert not progress.progress_enabled()
    monkeypatch.delenv("BACKTRACE_BENCH_NO_PROGRESS")
    monkeypatch.setattr(sys, "stderr", open(os.devnull, "w"))
    assert not progress.progress_enabled()
