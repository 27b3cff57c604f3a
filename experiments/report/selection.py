"""Choosing records by their settings: ``model=mlp method=ig,saliency table=paper_tabular n_samples=16``.

One filter language for the records browser (``python -m experiments.records list model=mlp``) and
the table writers' ``--where`` (which splits a table whose cells differ in a setting). A filter is
``key=value``; several values separated by commas match any of them; several filters must all match.
The keys are the names a user sees (:data:`SHORTCUTS`) or any dotted path into the record's
resolved config (``n_samples``, ``seed``, ``method.n_steps``, ``metrics.mprt.max_samples``,
``model.train.epochs``). Values compare as the config writes them: ``8``, ``0.5``, ``true``, ``null``.
"""
from __future__ import annotations

import json
from typing import Any, Callable, Optional, Sequence

from experiments.errors import ConfigError

_MISSING = object()


def table_name(record: dict[str, Any]) -> str:
    """The table a record belongs to: its ``table=`` setting, else ``<model>_<dataset>``."""
    return record["config"].get("table") or f"{record['model']['name']}_{record['dataset']['name']}"


# Keys that name what a user sees in ``records list`` rather than a config path.
SHORTCUTS: dict[str, Callable[[dict[str, Any]], Any]] = {
    "hash": lambda r: r.get("config_hash"),
    "table": table_name,
    "model": lambda r: r["model"]["name"],
    "dataset": lambda r: r["dataset"]["name"],
    "method": lambda r: r["method"].get("config") or r["method"]["name"],   # the method config chosen
    "n": lambda r: r.get("n_samples"),
    "created": lambda r: r.get("created"),
    "cache_key": lambda r: r["model"].get("cache_key"),
    "weights": lambda r: r["model"].get("weights_sha256"),
}
# Shortcuts matched on a prefix (a hash is long; its first characters name it).
PREFIX_KEYS = ("hash", "cache_key", "weights", "created")


def as_text(value: Any) -> str:
    """A setting as the config writes it (``null``, ``true``, ``0.5``, ``[1, 2]``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (dict, list)):
        return json.dumps(value, sort_keys=True)
    return str(value)


def config_value(config: Any, path: str) -> Any:
    """The value at a dotted ``path`` of a nested dict (``_MISSING`` where there is none)."""
    node = config
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return _MISSING
        node = node[part]
    return node


def record_value(record: dict[str, Any], key: str) -> Any:
    """What filter ``key`` reads of a record (``_MISSING`` where the record has no such setting)."""
    if key in SHORTCUTS:
        return SHORTCUTS[key](record)
    return config_value(record.get("config") or {}, key)


Filter = tuple[str, tuple[str, ...]]


def parse_filters(tokens: Sequence[str]) -> list[Filter]:
    """``["model=mlp", "method=ig,saliency"]`` -> ``[("model", ("mlp",)), ("method", ("ig", "saliency"))]``;
    a token without ``=`` is one line naming it and the form."""
    out = []
    for token in tokens:
        key, eq, value = token.partition("=")
        if not eq or not key:
            raise ConfigError(f"malformed filter {token!r}: expected key=value (keys: {', '.join(SHORTCUTS)}, "
                              f"or a config path such as n_samples or method.n_steps)")
        out.append((key, tuple(value.split(","))))
    return out


def matches(record: dict[str, Any], filters: Sequence[Filter]) -> bool:
    for key, values in filters:
        value = record_value(record, key)
        if value is _MISSING:
            return False
        text = as_text(value)
        if not any(text.startswith(v) if key in PREFIX_KEYS else text == v for v in values):
            return False
    return True


def check_keys(records: Sequence[dict[str, Any]], filters: Sequence[Filter]) -> None:
    """Refuse a filter key that no record has (a typo would otherwise select nothing, silently)."""
    for key, _ in filters:
        if key not in SHORTCUTS and records and all(record_value(r, key) is _MISSING for r in records):
            raise ConfigError(f"unknown filter {key!r}: no record has that setting; valid keys: "
                              f"{', '.join(SHORTCUTS)}, or a config path such as n_samples or method.n_steps")


def first_difference(a: Any, b: Any, path: str) -> Optional[tuple[str, Any, Any]]:
    """The first dotted path under ``path`` where two settings differ, with both values (None
    when they are equal): how a table that mixes settings can be split with a filter."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            found = first_difference(a.get(key, None), b.get(key, None), f"{path}.{key}")
            if found is not None:
                return found
        return None
    return None if a == b else (path, a, b)
