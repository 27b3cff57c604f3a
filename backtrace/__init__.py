"""DLBacktrace for PyTorch: relevance by proportional back-tracing, vectorised over the batch.

>>> from backtrace import Backtrace, explain
>>> R = explain(model, x)                       # input relevance, shape of x
>>> Rpos, Rneg = explain(model, x, mode="contrastive")
"""
from backtrace.engine import MODES, TASKS, Backtrace, explain
from backtrace.errors import UnsupportedOperation

__all__ = ["Backtrace", "explain", "UnsupportedOperation", "MODES", "TASKS"]
