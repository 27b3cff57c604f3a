"""What :func:`experiments.api.evaluate` takes as ``methods``, read into one list: config names,
and one's own attributions, as an array shaped like ``x`` or a function ``(inputs, targets) ->
attributions``, each checked (shape, finiteness, and which metrics can score it) before any work.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Mapping, Optional, Sequence, Union

import numpy as np
import torch

from experiments.errors import ConfigError

MethodsArg = Union[str, Mapping[str, Any], Sequence[Union[str, Mapping[str, Any]]]]
HOW = ("give method config names, or a mapping name -> attributions (an array shaped like x) or "
       "name -> function (inputs, targets) -> attributions")


@dataclass
class MethodEntry:
    """One method of an evaluation: a config name (``config``), a function of one's own (``fn``)
    or attributions computed elsewhere (``given``)."""

    name: str
    config: bool = False
    fn: Optional[Callable[..., Any]] = None
    given: Optional[torch.Tensor] = None


def method_entries(methods: MethodsArg) -> list[MethodEntry]:
    """``methods`` as entries in the order given: a name, a list of names and mappings, or a
    mapping name -> array or function. Each name once."""
    items: list[Any] = [methods] if isinstance(methods, (str, Mapping)) else list(methods)
    entries: list[MethodEntry] = []
    for item in items:
        if isinstance(item, str):
            entries.append(MethodEntry(item, config=True))
        elif isinstance(item, Mapping):
            for name, spec in item.items():
                entries.append(_own_entry(name, spec))
        else:
            raise ConfigError(f"methods holds {item!r} ({type(item).__name__}); {HOW}")
    if not entries:
        raise ConfigError("methods is empty; give a list of method names, e.g. ['backtrace', 'ig'], "
                          "or a mapping name -> your attributions")
    seen: set[str] = set()
    for entry in entries:
        if entry.name in seen:
            raise ConfigError(f"method name {entry.name!r} is given twice; give each method one name")
        seen.add(entry.name)
    return entries


def _own_entry(name: Any, spec: Any) -> MethodEntry:
    if not isinstance(name, str) or not name:
        raise ConfigError(f"your attributions need a name (a non-empty string) as their key, got {name!r}")
    if isinstance(spec, str):
        raise ConfigError(f"methods[{name!r}] is the string {spec!r}; list config names as plain names, and map "
                          f"names only to your attributions (an array shaped like x) or a function")
    if callable(spec) and not isinstance(spec, (torch.Tensor, np.ndarray)):
        return MethodEntry(name, fn=spec)
    if isinstance(spec, torch.Tensor):
        given = spec.detach().cpu()
        numeric = given.dtype.is_floating_point or given.dtype in (torch.int8, torch.int16, torch.int32, torch.int64)
    else:
        try:
            array = np.asarray(spec)
        except (TypeError, ValueError):
            raise ConfigError(f"methods[{name!r}] is a {type(spec).__name__}; {HOW}") from None
        numeric = array.dtype.kind in "fiu"
        given = torch.as_tensor(array.astype(np.float32)) if numeric else None
        if array.dtype == object or array.ndim == 0:
            raise ConfigError(f"methods[{name!r}] is a {type(spec).__name__}; {HOW}")
    if not numeric or given is None:
        raise ConfigError(f"attributions {name!r} must be numbers, got dtype {getattr(spec, 'dtype', type(spec).__name__)}")
    return MethodEntry(name, given=given.float())


def check_given(entry: MethodEntry, x: torch.Tensor, modality: str) -> None:
    """Attributions computed elsewhere: shaped like ``x`` (images: or one map per pixel,
    (N, 1, H, W)), finite, one line naming what is wrong otherwise."""
    assert entry.given is not None
    shape, accepted = tuple(entry.given.shape), [tuple(x.shape)]
    if modality == "image" and x.ndim == 4:
        accepted.append((x.shape[0], 1, *x.shape[2:]))
    if shape not in accepted:
        raise ConfigError(f"attributions {entry.name!r} have shape {shape}; expected the shape of x "
                          f"{tuple(x.shape)}" + (" or (N, 1, H, W) for one map per pixel" if len(accepted) > 1 else ""))
    bad = ~torch.isfinite(entry.given.reshape(len(entry.given), -1)).all(1)
    if bool(bad.any()):
        first = int(torch.nonzero(bad).flatten()[0])
        value = entry.given[first][~torch.isfinite(entry.given[first])].flatten()[0].item()
        raise ConfigError(f"attributions {entry.name!r} hold a non-finite value ({value}) in sample {first} "
                          f"({int(bad.sum())} sample(s) affected); non-finite attributions are refused")


def check_scorable(entries: Sequence[MethodEntry], metrics: Mapping[str, Any]) -> None:
    """Refuse, before any work, a metric that explains again (robustness, randomisation: its
    category says so) paired with fixed attributions, which cannot be explained again."""
    fixed = [e.name for e in entries if e.given is not None]
    again = [f"{name} ({metric.info.category})" for name, metric in metrics.items() if metric.info.reexplains]
    if fixed and again:
        raise ConfigError(f"metric(s) {', '.join(again)} explain again, which the fixed attributions "
                          f"{', '.join(map(repr, fixed))} cannot; give a function (inputs, targets) -> attributions "
                          f"instead, or leave those metrics out")
