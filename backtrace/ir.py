"""A framework-neutral graph of ops: the one thing every rule and front end agrees on.

A front end (torch.fx, Keras) turns a model into a :class:`Graph`; the engine walks it
backwards applying one rule per :attr:`Node.kind`.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


@dataclass
class Node:
    """One op. ``inputs`` name earlier nodes (or graph inputs); ``params`` hold tensors and
    hyper-parameters the rule needs (weights, stride, dims, ...); ``source`` says where the op
    came from in the user's model (module path or function name) for error messages."""

    name: str
    kind: str
    inputs: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)
    source: str = ""
    meta: dict[str, Any] = field(default_factory=dict)


@dataclass
class Graph:
    """Nodes in topological order; ``inputs`` are the graph's input names, ``output`` the node
    whose value is the model's output."""

    nodes: list[Node]
    inputs: tuple[str, ...]
    output: str

    def node(self, name: str) -> Node:
        for n in self.nodes:
            if n.name == name:
                return n
        raise KeyError(name)

    def consumers(self, name: str) -> list[Node]:
        return [n for n in self.nodes if name in n.inputs]
