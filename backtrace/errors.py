"""Errors raised when a model cannot be explained: named, never a silent pass-through."""
from __future__ import annotations

from typing import Iterable


class UnsupportedOperation(Exception):
    """An op of the model has no relevance rule (or cannot be mapped onto the graph).

    The message names the graph node, where it came from in the user's model (module path
    or function) and the op kinds that are supported, so the user knows what to change.
    """

    def __init__(self, node: str, source: str, supported: Iterable[str], detail: str = "") -> None:
        self.node = node
        self.source = source
        self.supported = sorted(set(supported))
        extra = f" ({detail})" if detail else ""
        super().__init__(
            f"unsupported operation at node {node!r}: {source}{extra}; "
            f"supported kinds: {', '.join(self.supported)}"
        )
