"""Config discovery, composition outside a Hydra app, and validation of the run settings.

Every bad value is reported as one :class:`ConfigError` line that names the value and the valid
choices; ``run.py`` prints it and exits non-zero before anything is written.
"""
from __future__ import annotations

import os
import re
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterator, Optional, Sequence

from omegaconf import DictConfig, OmegaConf, read_write

from baselines.vocabulary import CHANNEL_REDUCTIONS, DENSE_OUTPUT, DENSE_TASKS, OUTPUTS, TASKS, check_choice
from experiments.errors import ConfigError, installed, needs_extra

ROOT = Path(__file__).resolve().parents[2]
CONFIG_DIR = ROOT / "configs"
# The configs as package data: an installed wheel holds the top-level configs/ folder as this
# package (pyproject.toml maps it), which Hydra reads through its pkg:// search path.
CONFIG_PACKAGE = "backtrace_bench_configs"
GROUPS = ("model", "dataset", "method", "metrics", "metric", "experiment")
RUN_SETTINGS = (
    "n_samples", "sample_selection", "batch_size", "seed", "target", "output", "device",
    "channel_reduction", "results_dir", "cache_dir", "force", "table", "threads",
)
CHOICES = {
    "target": ("label", "prediction"),
    "output": OUTPUTS,
    "device": ("cpu", "cuda", "auto"),
    "sample_selection": ("first", "random"),
    "channel_reduction": CHANNEL_REDUCTIONS,
}


ConfigDirs = Sequence["str | os.PathLike[str]"]


def check_config_dirs(config_dirs: ConfigDirs) -> list[str]:
    """Absolute paths of extra config folders (``--config-dir``, or the API's ``config_dirs``),
    each of which must exist: Hydra would only warn about a missing one."""
    out = []
    for d in config_dirs:
        path = Path(d).expanduser().resolve()
        if not path.is_dir():
            raise ConfigError(f"config dir {str(d)!r} is not a folder; give a folder holding <group>/<option>.yaml files")
        out.append(str(path))
    return out


def searchpath_overrides(overrides: Sequence[str]) -> list[str]:
    """The ``hydra.searchpath=[...]`` overrides among ``overrides`` (Hydra adds their folders to
    the search path when it composes), each ``file://`` entry checked to be a folder."""
    found = [o for o in overrides if o.lstrip("+").startswith("hydra.searchpath=")]
    for o in found:
        for entry in o.split("=", 1)[1].strip("[]").split(","):
            entry = entry.strip().strip("'\"")
            if entry.startswith("file://") and not Path(entry[len("file://"):]).is_dir():
                raise ConfigError(f"hydra.searchpath entry {entry!r} is not a folder; "
                                  f"give file://<folder holding <group>/<option>.yaml files>")
    return found


def primary_config_path() -> str:
    """Where the project's configs are, as Hydra names a config folder: ``configs/`` next to the
    code in a checkout (or an editable install of one), else the installed package data
    (``pkg://backtrace_bench_configs``). The checkout comes first, so that a checkout run beside
    an installed copy reads its own configs."""
    if (CONFIG_DIR / "config.yaml").is_file():
        return str(CONFIG_DIR)
    return f"pkg://{CONFIG_PACKAGE}"


def search_path(config_dirs: ConfigDirs = ()) -> Any:
    """Hydra's config search path for this project: its configs (:func:`primary_config_path`)
    as the primary config folder, with each extra folder in front of it, as
    ``run.py --config-dir DIR`` builds it."""
    from hydra._internal.utils import create_config_search_path

    csp = create_config_search_path(primary_config_path())
    for d in reversed(check_config_dirs(config_dirs)):
        csp.prepend(provider="command-line", path=f"file://{d}")
    return csp


def group_options(group: str, config_dirs: ConfigDirs = (), overrides: Sequence[str] = ()) -> list[str]:
    """The option names of a config group, as Hydra's own config repository sees them: the
    project's ``configs/<group>/``, every ``config_dirs`` folder and every folder a
    ``hydra.searchpath`` override in ``overrides`` adds (and anything in Hydra's ConfigStore)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    loader = ConfigLoaderImpl(config_search_path=search_path(config_dirs))
    return sorted(loader.get_group_options(group, results_filter=ObjectType.CONFIG, config_name="config",
                                           overrides=searchpath_overrides(overrides)))


def config_groups(config_dirs: ConfigDirs = (), overrides: Sequence[str] = ()) -> list[str]:
    """The config groups on the search path (the project's, plus any a user's folder adds)."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra.core.object_type import ObjectType

    loader = ConfigLoaderImpl(config_search_path=search_path(config_dirs))
    found = loader.get_group_options("", results_filter=ObjectType.GROUP, config_name="config",
                                     overrides=searchpath_overrides(overrides))
    return [g for g in GROUPS if g in found] + sorted(g for g in found if g not in GROUPS and g != "hydra")


@contextmanager
def hydra_context(config_dirs: ConfigDirs = ()) -> Iterator[None]:
    """Hydra initialised on this project's search path (plus ``config_dirs``) for the compose
    API, as ``initialize_config_dir`` does for one folder; the previous global state (a running
    ``@hydra.main`` app's) is restored afterwards."""
    from hydra import version
    from hydra._internal.hydra import Hydra
    from hydra.core.global_hydra import GlobalHydra
    from hydra.initialize import get_gh_backup, restore_gh_from_backup

    csp = search_path(config_dirs)
    backup = get_gh_backup()
    version.setbase("1.3")
    GlobalHydra.instance().clear()
    Hydra.create_main_hydra2(task_name="run", config_search_path=csp)
    try:
        yield
    finally:
        restore_gh_from_backup(backup)


def compose(overrides: Sequence[str] = (), config_name: str = "config", config_dirs: ConfigDirs = ()) -> DictConfig:
    """Compose the run config as ``run.py`` would (``config_dirs``: as ``--config-dir``; a
    ``hydra.searchpath=[file://DIR]`` override works too), for tests, notebooks and scripts."""
    from hydra import compose as hydra_compose
    from omegaconf import open_dict

    with hydra_context(config_dirs):
        cfg = hydra_compose(config_name, overrides=list(overrides), return_hydra_config=True)
    choices = cfg.hydra.runtime.choices
    with read_write(cfg), open_dict(cfg):
        del cfg["hydra"]          # as Hydra's compose leaves it without return_hydra_config
        if "method_config" in cfg:
            cfg.method_config = choices.get("method")
    return cfg


def name_method_config(cfg: DictConfig) -> Optional[str]:
    """The name of the method config a run chose (``method=gxd_half``): set by :func:`compose`,
    or read here from Hydra's choices inside a Hydra job (``run.py``, a launcher's worker).
    None when neither knows it (a config built by other means)."""
    if cfg.get("method_config") is None and "method_config" in cfg:
        from hydra.core.hydra_config import HydraConfig

        if HydraConfig.initialized():
            chosen = HydraConfig.get().runtime.choices.get("method")
            with read_write(cfg):
                cfg.method_config = chosen
    return cfg.get("method_config")


def method_config(name: str, output: str = "softmax", config_dirs: ConfigDirs = (), **overrides: Any) -> DictConfig:
    """``<group dir>/method/<name>.yaml`` on its own (found on the search path, ``config_dirs``
    first), resolved with the run settings it reads (the ``output`` every method explains), plus
    ``overrides``: what scripts and tests instantiate."""
    from hydra._internal.config_repository import ConfigRepository

    check_choice("method", name, group_options("method", config_dirs))
    check_choice("output", output, CHOICES["output"])
    loaded = ConfigRepository(search_path(config_dirs)).load_config(f"method/{name}")
    assert loaded is not None
    root = OmegaConf.create({"output": output, "method": loaded.config})
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
    if cfg.get("model") is not None:
        check_task_output(cfg.model, cfg.get("output"))
    check_extras(cfg)
    check_metric_entries(cfg.get("metrics"))


def check_extras(cfg: DictConfig) -> None:
    """Refuse, before any work, a Keras model (or the torch copy of one, which trains the Keras
    model first) when the ``tf`` extra is not installed: one line naming the extra."""
    model = cfg.get("model")
    if model is None or not (model.get("framework") == "keras" or model.get("torch_copy_of")):
        return
    if not all(installed(m) for m in ("tensorflow", "keras")):
        raise needs_extra("model", model.get("name"), "tf")


def check_metric_entries(metrics: Any) -> None:
    """Every entry of ``metrics`` must be a whole metric config. Settings merged into ``metrics.<name>``
    from outside the chosen set (an experiment config that sets a metric's parameters itself) outlive
    ``metrics=none`` or another set as a stub without ``_target_``: refused here, before any work."""
    for name, entry in (metrics or {}).items():
        if not isinstance(entry, DictConfig) or "_target_" not in entry:
            keys = ", ".join(str(k) for k in entry) if isinstance(entry, DictConfig) else repr(entry)
            raise ConfigError(f"metric {name!r} has settings ({keys}) but no _target_: the chosen metric set lacks "
                              f"it; set metric parameters in a metric set (configs/metrics/<set>.yaml), not in an "
                              f"experiment config")


def model_task(model_cfg: DictConfig) -> str:
    """What a model predicts (``model.task``; a classifier where the config does not say)."""
    return str(check_choice("model.task", model_cfg.get("task", "classification"), TASKS))


def check_task_output(model_cfg: DictConfig, output: Any) -> None:
    """A dense model is explained, always and only, through its head's value (output
    ``identity``) with checked head settings; a classifier never is."""
    task = model_task(model_cfg)
    if task in DENSE_TASKS:
        if output != DENSE_OUTPUT:
            raise ConfigError(f"model {model_cfg.name!r} is a {task} model: every method explains its head's value, "
                              f"output={DENSE_OUTPUT}; got output={output!r}")
        from baselines.dense_heads import head_settings

        head = model_cfg.get("head") or {}
        try:
            head_settings(task, OmegaConf.to_container(head, resolve=True) if isinstance(head, DictConfig) else dict(head))
        except ConfigError as exc:
            raise ConfigError(f"model {model_cfg.name!r} head: {exc}") from None
    elif output == DENSE_OUTPUT:
        raise ConfigError(f"output={DENSE_OUTPUT!r} is the value of a dense model's head "
                          f"({', '.join(DENSE_TASKS)}); model {model_cfg.name!r} is a classifier: "
                          f"choose one of: {', '.join(o for o in OUTPUTS if o != DENSE_OUTPUT)}")


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
    """``results_dir`` (always) and ``cache_dir`` (where a model is trained, or a pretrained one
    keeps its converted weights: ``model.weights_cache``) must be writable."""
    check_writable("results_dir", cfg.results_dir)
    model = cfg.get("model")
    if model is None or not model.get("pretrained") or model.get("weights_cache"):
        check_writable("cache_dir", cfg.cache_dir)


def home() -> Path:
    """The folder results and caches go under by default: ``$BACKTRACE_BENCH_HOME``, else the
    current folder (``configs/config.yaml`` reads the same variable)."""
    return Path(os.environ.get("BACKTRACE_BENCH_HOME") or ".")


def announce_output_dirs(configs: Sequence[DictConfig]) -> None:
    """One line, the first time a folder is used for results (it does not exist yet): where the
    records and the trained models will go, and how to move them."""
    seen = set()
    for cfg in configs:
        results, cache = cfg.get("results_dir"), cfg.get("cache_dir")
        if not results or (results, cache) in seen or Path(results).expanduser().exists():
            continue
        seen.add((results, cache))
        print(f"note: run records go to {Path(results).expanduser().resolve()} and trained models to "
              f"{Path(cache).expanduser().resolve()} (results_dir=, cache_dir= or $BACKTRACE_BENCH_HOME move them)")


def _article(word: str) -> str:
    return "an" if word[:1].lower() in "aeiou" else "a"


def check_pairing(model_cfg: DictConfig, dataset_name: str, modality: str, task: str = "classification") -> None:
    """Refuse an image model on tabular data (and the like), or a model of one task on data
    labelled for another (a U-Net on class labels), with a clear line."""
    if model_cfg.modality != modality:
        raise ConfigError(
            f"model {model_cfg.name!r} takes {model_cfg.modality} data but dataset {dataset_name!r} is {modality}; "
            f"choose {_article(model_cfg.modality)} {model_cfg.modality} dataset"
        )
    wanted = model_task(model_cfg)
    if wanted != task:
        raise ConfigError(f"model {model_cfg.name!r} is a {wanted} model but dataset {dataset_name!r} is labelled "
                          f"for {task}; choose a dataset labelled for {wanted}")


def split_command_line(argv: Sequence[str]) -> tuple[list[str], list[str], list[str]]:
    """``run.py``'s arguments as (Hydra flags, ``--config-dir``/``-cd`` folders, overrides)."""
    flags, dirs, overrides = [], [], []
    args = list(argv)
    while args:
        arg = args.pop(0)
        name, eq, value = arg.partition("=")
        if name in ("--config-dir", "-cd"):
            if not eq:
                if not args:
                    raise ConfigError(f"{name} needs a folder: {name} DIR")
                value = args.pop(0)
            dirs.append(value)
        elif arg.startswith("-"):
            flags.append(arg)
        else:
            overrides.append(arg)
    return flags, dirs, overrides


def check_overrides(argv: Sequence[str]) -> None:
    """Check command-line overrides of config groups and run settings before Hydra sees them,
    so a typo is one line naming the bad value and the choices, not a composition traceback.
    The choices are what Hydra finds on the search path: ``configs/``, every ``--config-dir``
    and every ``hydra.searchpath`` folder."""
    _, config_dirs, overrides = split_command_line(argv)
    config_dirs = check_config_dirs(config_dirs)
    searchpath = searchpath_overrides(overrides)
    groups: list[str] | None = None
    for arg in overrides:
        if "=" not in arg:
            continue
        key, _, value = arg.partition("=")
        key = key.lstrip("+~")
        if key.startswith("hydra") or "." in key or "/" in key or "@" in key:
            continue
        if groups is None:
            groups = config_groups(config_dirs, searchpath) if (config_dirs or searchpath) else list(GROUPS)
        if key in groups:
            options = group_options(key, config_dirs, searchpath)
            if value.startswith(("range(", "glob(", "choice(", "interval(")):
                continue
            for v in value.split(","):
                if v != "null":
                    check_choice(key, v, options)
        elif key not in RUN_SETTINGS:
            raise ConfigError(
                f"unknown setting {key!r}; valid settings: {', '.join(RUN_SETTINGS)} "
                f"and the groups {', '.join(g for g in groups if g != 'metric')}"
            )


def to_container(cfg: DictConfig) -> dict[str, Any]:
    return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]


# Hydra's command-line options that take no value and leave composition to us.
_PLAIN_FLAGS = ("-m", "--multirun")


def _first_line(exc: BaseException) -> str:
    lines = [line.strip() for line in str(exc).splitlines() if line.strip() and not line.startswith("See https")]
    return lines[0] if lines else type(exc).__name__


def _unknown_key_message(key: str, overrides: list[str], config_dirs: ConfigDirs = ()) -> str | None:
    """'unknown setting a.b; valid keys under a: ...' for an override of a key the config lacks."""
    parent, _, leaf = key.rpartition(".")
    if not parent:
        return None
    try:
        cfg = compose([o for o in overrides if not o.lstrip("+~").startswith(f"{key}=")], config_dirs=config_dirs)
    except Exception:
        return None
    node = OmegaConf.select(cfg, parent, default=None)
    if not isinstance(node, DictConfig):
        return None
    keys = [str(k) for k in node.keys() if not str(k).startswith("_")]
    return (f"unknown setting {key!r}; valid keys under {parent}: {', '.join(keys) or '(none)'} "
            f"(prefix + to add a new key: +{key}=...)")


def expand_sweep(overrides: Sequence[Any], multirun: bool) -> list[list[str]]:
    """The jobs of a command line's parsed ``overrides`` (Hydra ``Override`` objects), each a list
    of override strings: the one job, or with ``-m`` every combination of its sweeps, in the order
    Hydra's basic sweeper runs them.

    Hydra expands sweeps only inside its sweeper; the expansion is its private
    ``BasicSweeper.split_arguments``, used here and nowhere else (``hydra-core`` is pinned in
    ``constraints.txt`` because of it)."""
    if not multirun:
        return [[o.input_line for o in overrides]]
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.errors import HydraException

    try:
        return BasicSweeper.split_arguments(list(overrides), None)[0]
    except HydraException as exc:
        raise ConfigError(f"unsupported sweep: {_first_line(exc)}") from None


def _compose_job(job: list[str], config_dirs: ConfigDirs, swept: list[str]) -> DictConfig:
    """One job's config, or one :class:`ConfigError` line saying why Hydra cannot compose it
    (``swept``: the job's sweep overrides, named in the message of a multirun)."""
    from hydra.errors import HydraException
    from omegaconf.errors import OmegaConfBaseException

    try:
        return compose(job, config_dirs=config_dirs)
    except (HydraException, OmegaConfBaseException) as exc:
        message = None
        if "Could not override" in str(exc) or "not in struct" in str(exc):
            bad = [o for o in job if "." in o.split("=", 1)[0] and not o.startswith(("+", "~", "hydra"))]
            for o in bad:
                try:
                    compose([x for x in job if x != o], config_dirs=config_dirs)
                except Exception:
                    continue
                message = _unknown_key_message(o.split("=", 1)[0], job, config_dirs)
                break
        if message is None and "Ambiguous value" in str(exc):
            message = f"{_first_line(exc)}; add -m to sweep over several values"
        missing = re.search(r"Could not find '([\w-]+)/([^'/]+)'", str(exc))
        if message is None and missing and missing.group(1) in GROUPS:
            try:
                check_choice(missing.group(1), missing.group(2), group_options(missing.group(1), config_dirs, job))
            except ConfigError as err:
                message = str(err)
        message = message or f"cannot compose the config with {' '.join(job)}: {_first_line(exc)}"
        if swept:
            message += f" (in the sweep job {' '.join(swept)})"
        raise ConfigError(message) from None


def check_command_line(argv: Sequence[str]) -> list[DictConfig]:
    """Parse and compose the command line as Hydra will, before Hydra runs, so that an override
    Hydra rejects (bad syntax, a key the config lacks, a sweep without ``-m``) is one
    :class:`ConfigError` line instead of Hydra's multi-line report; then validate every composed
    job's run settings and check that its output folders are writable (each distinct set of
    folders once). With ``-m`` each combination of the sweep is composed. Returns the composed,
    checked configs: the runner does not check them again (none when Hydra's own options are
    used, e.g. ``--cfg``, which are left to Hydra).
    """
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    flags, config_dirs, overrides = split_command_line(argv)
    if any(a not in _PLAIN_FLAGS for a in flags):
        return []
    multirun = bool(flags)
    config_dirs = check_config_dirs(config_dirs)
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
    # the search path Hydra will compose with: the extra folders stay in every job
    searchpath = searchpath_overrides([o.input_line for o in parsed])
    sweep_keys = {o.get_key_element() for o in ours if o.is_sweep_override()}
    configs, checked = [], set()
    for job in expand_sweep(ours, multirun):
        swept = [o for o in job if o.split("=", 1)[0] in sweep_keys] if multirun else []
        cfg = _compose_job([*searchpath, *job], config_dirs, swept)
        validate(cfg)
        model = cfg.get("model", {})
        dirs = (cfg.get("results_dir"), cfg.get("cache_dir"),
                bool(model.get("pretrained")) and not model.get("weights_cache"))
        if dirs not in checked:
            checked.add(dirs)
            check_output_dirs(cfg)
        configs.append(cfg)
    return configs


def load_config(overrides: Sequence[str] = (), config_dirs: ConfigDirs = ()) -> DictConfig:
    """The run config of ``overrides`` (``config_dirs``: as ``run.py --config-dir``), composed and
    checked once as ``run.py`` checks its command line: names and choices on the search path,
    composition, run settings, output folders. What the Python API, ``reproduce`` and the
    benchmarks run; the runner takes it as checked."""
    argv = [*(f"--config-dir={Path(d).expanduser().resolve()}" for d in config_dirs), *overrides]
    check_overrides(argv)
    (cfg,) = check_command_line(argv)
    return cfg
