"""Config discovery, composition outside a Hydra app, and validation of the run settings.

Every bad value is reported as one :class:`ConfigError` line that names the value and the valid
choices; ``run.py`` prints it and exits non-zero before anything is written.
"""
from __future__ import annotations

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


def check_pairing(model_cfg: DictConfig, dataset_name: str, modality: str) -> None:
    """Refuse an image model on tabular data (and the like) with a clear line."""
    if model_cfg.modality != modality:
        raise ConfigError(
            f"model {model_cfg.name!r} takes {model_cfg.modality} data but dataset {dataset_name!r} is {modality}; "
            f"choose a {model_cfg.modality} dataset"
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
