"""Loading through transformers without its progress bars and load reports."""
from __future__ import annotations

from typing import Any


def quietly(load: Any, *args: Any, **kwargs: Any) -> Any:
    """Call a transformers loader without its progress bar and load report: the pretrained
    encoder's unused pooler weights are expected (no pooling layer is built), and every cell of a
    sweep would print them again."""
    from transformers.utils import logging as hf_logging

    verbosity, bars = hf_logging.get_verbosity(), hf_logging.is_progress_bar_enabled()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        return load(*args, **kwargs)
    finally:
        hf_logging.set_verbosity(verbosity)
        if bars:
            hf_logging.enable_progress_bar()
