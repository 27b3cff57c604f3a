"""Which row of a table a run record is: the method config it chose, plus every parameter that
sets it apart.

A row is named by the method config as chosen on the command line (``method=gxd_half``: the
record's ``method.config``; older records, which lack it, by the method's class name) and the
parameters that differ between the table's records of that config, plus, for the project's own
configs, those that differ from the config file (``ig (n_steps=4)``). So two records of one
config with different settings are two rows, whatever folder the config came from, and two
configs of one class (``my_method`` and ``gxd_half``) are two rows by their names.
"""
from __future__ import annotations

import json
from functools import lru_cache
from typing import Any, Optional, Sequence

from baselines.vocabulary import OUTPUTS

# Parameters that follow a run setting (every method explains the run's ``output``): the same
# for a whole table, never a row's mark.
FOLLOW_RUN = ("output",)
_ABSENT = object()


def config_name(record: dict[str, Any]) -> str:
    """The method config a record's run chose; the class's name for records that predate it."""
    return str(record["method"].get("config") or record["method"]["name"])


def short(value: Any) -> str:
    return json.dumps(value, sort_keys=True) if isinstance(value, (dict, list)) else str(value)


@lru_cache(maxsize=None)
def _project_params(name: str, output: str) -> Optional[str]:
    """The project's method config ``name``, resolved for ``output``, as JSON (None if the project
    has no config of that name). Cached: a table asks for each config once per record."""
    from omegaconf import OmegaConf

    from experiments.run.config import group_options, method_config

    if name not in group_options("method"):
        return None
    resolved = method_config(name, output if output in OUTPUTS else "softmax")
    return json.dumps(OmegaConf.to_container(resolved, resolve=True), sort_keys=True)


def project_defaults(name: str, target: Any, output: str) -> Optional[dict[str, Any]]:
    """The parameters of the project's method config ``name`` when it builds the same class
    (``target``); None for a config of one's own (or one that shadows the project's with another class)."""
    found = _project_params(name, output)
    if found is None:
        return None
    params = json.loads(found)
    return params if params.get("_target_") == target else None


def _params(record: dict[str, Any]) -> dict[str, Any]:
    params = dict(record["method"].get("params") or {})
    return {k: v for k, v in params.items() if k not in FOLLOW_RUN}


def variant_labels(records: Sequence[dict[str, Any]]) -> list[str]:
    """One row label per record of one table (in order): the config's name, and in brackets every
    parameter that differs between the records of that config or from the project's config
    file. Records with different method settings never share a label."""
    names = [config_name(r) for r in records]
    params = [_params(r) for r in records]
    varying: dict[str, set[str]] = {}
    for name in set(names):
        group = [p for n, p in zip(names, params) if n == name]
        keys = set().union(*group)
        varying[name] = {k for k in keys if len({short(p.get(k, _ABSENT)) for p in group}) > 1}
    labels = []
    for record, name, p in zip(records, names, params):
        defaults = project_defaults(name, p.get("_target_"), str(record.get("output", "softmax")))
        differ = set(varying[name])
        if defaults is not None:
            differ |= {k for k, v in p.items() if k != "_target_" and defaults.get(k, _ABSENT) != v}
        marks = [f"{k}={short(p[k]) if k in p else '-'}" for k in sorted(differ)]
        labels.append(f"{name} ({', '.join(marks)})" if marks else name)
    return labels
