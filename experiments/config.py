"""Config discovery, composition outside a Hydra app, and validation of the run settings.

Every bad value is reported as one :class:`ConfigError` line that names the value and the valid
choices; ``run.py`` prints it and exits non-zero before anything is written.
"""
from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any, Iterable, Sequence

from omegaconf import DictConfig, OmegaConf

ROOT = Path(__file__).resolve().parent.parent
CONFIG_DIR = ROOT / "configs"
GROUPS = ("model", "dataset", "method", "metrics", "metric", "experiment")
RUN_SETTINGS = (
    "n_samples", "sample_selection", "batch_size", "seed", "target", "output", "device",
    "channel_reduction", "results_dir", "cache_dir", "force", "table", "threads",
)
CHOICES = {
    "target": ("label", "prediction"),
    "output": ("softmax", "logits"),
    "device": ("cpu", "cuda", "auto"),
    "sample_selection": ("first", "random"),
    "channel_reduction": ("sum", "mean", "abs_sum", "max_abs", "none"),
}


class ConfigError(ValueError):
    """A bad config value; its message is the one line shown to the user."""


def group_options(group: str) -> list[str]:
    """The option names of a config group: the YAML files under ``configs/<group>/``."""
    return sorted(p.stem for p in (CONFIG_DIR / group).glob("*.yaml"))


def check_choice(kind: str, value: Any, choices: Iterable[str]) -> None:
    choices = list(choices)
    if value not in choices:
        raise ConfigError(f"unknown {kind} {value!r}; valid choices: {', '.join(choices)}")


def compose(overrides: Sequence[str] = (), config_name: str = "config") -> DictConfig:
    """Compose the run config as ``run.py`` would, for tests, notebooks and scripts."""
    from hydra import compose as hydra_compose
    from hydra import initialize_config_dir
    from hydra.core.global_hydra import GlobalHydra

    GlobalHydra.instance().clear()
    with initialize_config_dir(str(CONFIG_DIR), version_base="1.3"):
        return hydra_compose(config_name, overrides=list(overrides), return_hydra_config=False)


def method_config(name: str, output: str = "softmax", **overrides: Any) -> DictConfig:
    """``configs/method/<name>.yaml`` on its own, resolved with the run settings it reads (the
    ``output`` every method explains), plus ``overrides``: what scripts and tests instantiate."""
    check_choice("method", name, group_options("method"))
    check_choice("output", output, CHOICES["output"])
    root = OmegaConf.create({"output": output, "method": OmegaConf.load(CONFIG_DIR / "method" / f"{name}.yaml")})
    resolved = OmegaConf.create(OmegaConf.to_container(root, resolve=True)["method"])
    return OmegaConf.merge(resolved, overrides) if overrides else resolved


def _positive_int(cfg: DictConfig, key: str) -> int:
    value = cfg.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise ConfigError(f"{key} must be a positive integer, got {value!r}")
    return value


def validate(cfg: DictConfig) -> None:
    """Check the run settings and the model/dataset pairing before any work is done."""
    _positive_int(cfg, "n_samples")
    _positive_int(cfg, "batch_size")
    seed = cfg.get("seed")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ConfigError(f"seed must be a non-negative integer, got {seed!r}")
    for key, choices in CHOICES.items():
        check_choice(key, cfg.get(key), choices)
    threads = cfg.get("threads")
    if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0):
        raise ConfigError(f"threads must be a positive integer or null, got {threads!r}")
    if not isinstance(cfg.get("force"), bool):
        raise ConfigError(f"force must be true or false, got {cfg.get('force')!r}")
    for key in ("results_dir", "cache_dir"):
        if not isinstance(cfg.get(key), str) or not cfg.get(key):
            raise ConfigError(f"{key} must be a path, got {cfg.get(key)!r}")


def check_writable(key: str, path: str | os.PathLike[str]) -> None:
    """Refuse an output folder that cannot be written, before any data is loaded or model trained.

    The folder itself is not created here (nothing is written for a refused run): the nearest
    existing folder on its path must accept a new file, which is probed with an unnamed
    temporary file, so permissions, read-only mounts and running as root are all judged by the
    system itself rather than guessed from mode bits.
    """
    target = Path(path).expanduser()
    if target.exists() and not target.is_dir():
        raise ConfigError(f"{key}={str(path)!r} is a file, not a folder; choose a folder path")
    probe = target
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    if probe.exists() and not probe.is_dir():
        raise ConfigError(f"{key}={str(path)!r} cannot be created: {str(probe)!r} is a file; choose a folder path")
    try:
        with tempfile.TemporaryFile(dir=probe):
            pass
    except OSError as exc:
        where = "" if probe == target else f" ({str(probe)!r}, where it would be created, is not writable)"
        raise ConfigError(f"{key}={str(path)!r} is not writable{where}: {exc.strerror or exc}; "
                          f"choose a writable folder") from None


def check_output_dirs(cfg: DictConfig) -> None:
    """``results_dir`` (always) and ``cache_dir`` (where a model is trained) must be writable."""
    check_writable("results_dir", cfg.results_dir)
    model = cfg.get("model")
    if model is None or not model.get("pretrained"):
        check_writable("cache_dir", cfg.cache_dir)


def check_pairing(model_cfg: DictConfig, dataset_name: str, modality: str) -> None:
    """Refuse an image model on tabular data (and the like) with a clear line."""
    if model_cfg.modality != modality:
        article = "an" if str(model_cfg.modality)[:1] in "aeiou" else "a"
        raise ConfigError(
            f"model {model_cfg.name!r} takes {model_cfg.modality} data but dataset {dataset_name!r} is {modality}; "
            f"choose {article} {model_cfg.modality} dataset"
        )


def check_overrides(argv: Sequence[str]) -> None:
    """Check command-line overrides of config groups and run settings before Hydra sees them,
    so a typo is one line naming the bad value and the choices, not a composition traceback."""
    for arg in argv:
        if arg.startswith("-") or "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra") or "." in key or "/" in key:
            continue
        if key in GROUPS:
            options = group_options(key)
            if value.startswith(("range(", "glob(", "choice(", "interval(")):
                continue
            for v in value.split(","):
                if v not in options and v != "null":
                    raise ConfigError(f"unknown {key} {v!r}; valid choices: {', '.join(options)}")
        elif key not in RUN_SETTINGS:
            raise ConfigError(
                f"unknown setting {key!r}; valid settings: {', '.join(RUN_SETTINGS)} "
                f"and the groups {', '.join(g for g in GROUPS if g != 'metric')}"
            )


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# Hydra's command-line options that take no value and leave composition to us.
_PLAIN_FLAGS = ("-m", "--multirun")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("See https")]
    return lines[0] if lines else type(exc).__name__


def _unknown_key_message(key: str, overrides: list[str]) -> str | None:
    """'unknown setting a.b; valid keys under a: ...' for an override of a key the config lacks."""
    parent, _, leaf = key.rpartition(".")
    if not parent:
        return None
    try:
        cfg = compose([o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")])
    except Exception:
        return None
    node = OmegaConf.select(cfg, parent, default=None)
    if not isinstance(node, DictConfig):
        return None
    keys = [str(k) for k in node.keys() if not str(k).startswith("_")]
    return (f"unknown setting {key!r}; valid keys under {parent}: {', '.join(keys) or '(none)'} "
            f"(prefix + to add a new key: +{key}=...)")


def check_command_line(argv: Sequence[str]) -> list[DictConfig]:
    """Parse and compose the command line as Hydra will, before Hydra runs, so that an override
    Hydra rejects (bad syntax, a key the config lacks, a sweep without ``-m``) is one
    :class:`ConfigError` line instead of Hydra's multi-line report; then check that every
    composed job's output folders are writable. With ``-m`` each combination of the sweep is
    composed. Returns the composed configs (none when Hydra's own options are used, e.g.
    ``--cfg``, which are left to Hydra).
    """
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException, OverrideParseException
    from omegaconf.errors import OmegaConfBaseException

    if any(a.startswith("-") and a not in _PLAIN_FLAGS for a in argv):
        return []
    multirun = any(a in _PLAIN_FLAGS for a in argv)
    overrides = [a for a in argv if not a.startswith("-")]
    parser = OverridesParser.create()
    parsed = []
    for text in overrides:
        try:
            parsed += parser.parse_overrides([text])
        except OverrideParseException as exc:
            if "=" not in text.lstrip("~"):
                raise ConfigError(f"malformed override {text!r}: expected key=value (or ~key to delete a key)") from None
            raise ConfigError(f"malformed override {text!r}: {_first_line(exc)} "
                              f"(syntax: key=value, lists [a,b], quote values with special characters)") from None
    ours = [o for o in parsed if not o.get_key_element().lstrip("+~").startswith("hydra")]
    if multirun:
        try:
            jobs = BasicSweeper.split_arguments(ours, None)[0]
        except HydraException as exc:
            raise ConfigError(f"unsupported sweep: {_first_line(exc)}") from None
    else:
        jobs = [[o.input_line for o in ours]]
    sweep_keys = {o.get_key_element() for o in ours if o.is_sweep_override()}
    configs, checked = [], set()
    for job in jobs:
        try:
            cfg = compose(job)
        except (HydraException, OmegaConfBaseException) as exc:
            message = None
            if "Could not override" in str(exc) or "not in struct" in str(exc):
                bad = [o for o in job if "." in o.split("=", 1)[0] and not o.startswith(("+", "~"))]
                for o in bad:
                    try:
                        compose([x for x in job if x != o])
                    except Exception:
                        continue
                    message = _unknown_key_message(o.split("=", 1)[0], job)
                    break
            if message is None and "Ambiguous value" in str(exc):
                message = f"{_first_line(exc)}; add -m to sweep over several values"
            message = message or f"cannot compose the config with {' '.join(job)}: {_first_line(exc)}"
            swept = [o for o in job if o.split("=", 1)[0] in sweep_keys]
            if multirun and swept:
                message += f" (in the sweep job {' '.join(swept)})"
            raise ConfigError(message) from None
        dirs = (cfg.get("results_dir"), cfg.get("cache_dir"), bool(cfg.get("model", {}).get("pretrained")))
        if dirs not in checked:
            checked.add(dirs)
            validate(cfg)
            check_output_dirs(cfg)
        configs.append(cfg)
    return configs
