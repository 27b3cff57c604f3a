"""Shared helpers for the backtrace tests: small models in the reference's layout."""
from __future__ import annotations

import os
from collections import OrderedDict

import pytest
import torch
from torch import Tensor, nn

os.environ.setdefault("TQDM_DISABLE", "1")   # the reference prints a progress bar per call


class Chain(nn.Module):
    """Children run in registration order: the layout the reference package requires
    (a leading ``identity``, activation modules as children), and traceable by torch.fx."""

    def __init__(self, layers: "OrderedDict[str, nn.Module]") -> None:
        super().__init__()
        for name, mod in layers.items():
            self.add_module(name, mod)

    def forward(self, x: Tensor) -> Tensor:
        for mod in self.children():
            x = mod(x)
        return x


def rel_err(ours: Tensor, ref: Tensor) -> float:
    """Max abs difference over the max abs value of the reference (one sample)."""
    ours = torch.as_tensor(ours, dtype=torch.float64)
    ref = torch.as_tensor(ref, dtype=torch.float64)
    scale = ref.abs().max().item()
    diff = (ours - ref).abs().max().item()
    return diff / scale if scale > 0 else diff


@pytest.fixture(autouse=True)
def _seeded() -> None:
    torch.manual_seed(0)
