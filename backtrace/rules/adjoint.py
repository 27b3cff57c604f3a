"""Pull-backs through linear ops by autograd: exact adjoints without writing one per op."""
from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor


def adjoint(fn: Callable[[Tensor], Tensor], like: Tensor, cotangent: Tensor) -> Tensor:
    """``J^T v`` for a linear op ``fn`` evaluated at inputs shaped like ``like``.

    The op is re-run on zeros shaped like ``like``, so ops that move the batch dimension
    (``transpose(0, 1)``, a permute of dim 0) pull back correctly. ``cotangent`` may also stack
    ``k`` maps along its first dimension (``k`` times the op's output rows) for a batch-wise
    op: the op is then re-run on ``k`` stacked copies of the input so one backward pass serves
    them all.
    """
    with torch.enable_grad():
        z = torch.zeros(like.shape, dtype=cotangent.dtype, device=cotangent.device, requires_grad=True)
        y = fn(z)
        if y.shape != cotangent.shape:
            k = cotangent.shape[0] // y.shape[0] if y.dim() > 0 and y.shape[0] > 0 else 0
            if (like.dim() == 0 or k < 2 or cotangent.shape[0] != k * y.shape[0]
                    or cotangent.shape[1:] != y.shape[1:]):
                raise ValueError(f"relevance of shape {tuple(cotangent.shape)} does not match the op's output "
                                 f"shape {tuple(y.shape)} (nor k stacked copies of it)")
            z = torch.zeros((k * like.shape[0],) + tuple(like.shape[1:]), dtype=cotangent.dtype,
                            device=cotangent.device, requires_grad=True)
            y = fn(z)
        (g,) = torch.autograd.grad(y, z, grad_outputs=cotangent.to(y.dtype), allow_unused=True)
    return torch.zeros_like(z) if g is None else g


def adjoint_multi(fn: Callable[..., Tensor], likes: Sequence[Tensor], cotangent: Tensor) -> list[Tensor]:
    """Adjoint of a multi-input linear op (e.g. ``torch.cat``): one tensor per input."""
    with torch.enable_grad():
        zs = [torch.zeros_like(t, dtype=cotangent.dtype, requires_grad=True) for t in likes]
        y = fn(*zs)
        gs = torch.autograd.grad(y, zs, grad_outputs=cotangent.to(y.dtype), allow_unused=True)
    return [torch.zeros_like(z) if g is None else g for z, g in zip(zs, gs)]


def sum_to_shape(t: Tensor, shape: Sequence[int]) -> Tensor:
    """Undo broadcasting: sum ``t`` down to ``shape`` (relevance of a broadcast operand)."""
    shape = tuple(shape)
    if tuple(t.shape) == shape:
        return t
    lead = t.dim() - len(shape)
    if lead > 0:
        t = t.sum(dim=tuple(range(lead)))
    dims = tuple(i for i, s in enumerate(shape) if s == 1 and t.shape[i] != 1)
    return t.sum(dim=dims, keepdim=True) if dims else t
