"""config -> (dataset, trained model): the part of a run that scripts and benchmarks share.

A dense model (``model.task`` binary-segmentation or bbox-regression) is handed on behind its
head (``baselines.dense_heads``): the model every method explains and every metric reads is the
network followed by the value the head computes from it."""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from torch import nn

from experiments.data.datasets import Dataset
from experiments.errors import ConfigError, DataError, unimportable
from experiments.run.config import check_pairing, model_task
from experiments.run.progress import bar
from experiments.zoo.training import TrainedModel, load_or_train


@dataclass
class Prepared:
    dataset: Dataset
    model: nn.Module          # what is explained: the network, or a dense network behind its head
    model_kind: str
    trained: TrainedModel     # the network as trained (trained.model)
    device: torch.device
    seconds: dict[str, float] = field(default_factory=dict)
    task: str = "classification"
    head: dict[str, Any] = field(default_factory=dict)   # a dense model's head settings, defaults filled in


def resolve_device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device 'cuda' requested but no CUDA device is available; valid choices here: cpu, auto")
    return torch.device(name)


def load_dataset(cfg: DictConfig) -> Dataset:
    """The dataset a config names; a value of the wrong kind in ``dataset.*`` is one config line.
    A loader that takes a ``cache_dir`` (one that asks a model, ``copy_prompts``) gets the run's."""
    import inspect

    from hydra.errors import InstantiationException
    from hydra.utils import get_method

    try:
        takes_cache = "cache_dir" in inspect.signature(get_method(cfg.dataset._target_)).parameters
    except Exception:      # an unimportable target: instantiate names it below
        takes_cache = False
    try:
        return instantiate(cfg.dataset, **({"cache_dir": cfg.cache_dir} if takes_cache else {}))
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, (DataError, ConfigError, FileNotFoundError)):
            raise cause from None
        if isinstance(cause, ImportError):
            raise unimportable("dataset", cfg.dataset._target_, cause) from None
        if isinstance(cause, (TypeError, ValueError)):
            raise ConfigError(f"dataset: cannot load {cfg.dataset._target_} with these settings "
                              f"({type(cause).__name__}: {cause})".replace("\n", " ")) from None
        raise


def prepare(cfg: DictConfig) -> Prepared:
    """Load the dataset, check the pairing, and get the (cached or trained) model of a checked
    config (:func:`experiments.run.config.load_config`, or the runner's own check)."""
    device = resolve_device(cfg.device)
    seconds: dict[str, float] = {}
    start = time.perf_counter()
    dataset = load_dataset(cfg)
    seconds["load_data"] = time.perf_counter() - start
    check_pairing(cfg.model, dataset.name, dataset.modality, dataset.task)
    start = time.perf_counter()
    trained = load_or_train(cfg.model, cfg.dataset, dataset, int(cfg.seed), cfg.cache_dir, device, progress=bar)
    seconds["load_model"] = time.perf_counter() - start
    for p in trained.model.parameters():
        p.requires_grad_(False)
    task, model, head = model_task(cfg.model), trained.model, {}
    if task != "classification":
        from baselines.dense_heads import head_of, head_settings

        params = OmegaConf.to_container(cfg.model.get("head") or OmegaConf.create({}), resolve=True)
        head = head_settings(task, params)
        model = head_of(trained.model, task, params)
    return Prepared(dataset, model, str(cfg.model.kind), trained, device, seconds, task, head)


def build_explainer(method_cfg: DictConfig, model: nn.Module, context: Any) -> Any:
    """The method of ``method_cfg`` for ``model``, given its explain context as it is.

    Hydra's ``instantiate`` merges keyword arguments into the config, which would turn the
    context (a dataclass) and the dataclasses it holds (the kv_retrieval tokenizer) into OmegaConf
    configs without their methods; the config is made a partial and called with the objects."""
    return instantiate(method_cfg, _partial_=True)(model=model, context=context)
