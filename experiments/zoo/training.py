"""Train-on-first-use model cache, keyed by a hash of everything that determines the weights.

A classifier trains on cross-entropy and is scored by its test accuracy; a dense model (a task in
``baselines.vocabulary.DENSE_TASKS``) trains on its task's loss through the same loop and is scored
by its task's test score (``experiments.zoo.dense_training``). A cached model is loaded, never retrained; a file that fails to load or whose checksum does not
match is reported and rebuilt. Files are written to a temporary name and renamed, so a killed
training never leaves a file that looks complete.
"""
from __future__ import annotations

import functools
import hashlib
import inspect
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

from experiments.data.datasets import Dataset
from experiments.errors import ConfigError, unimportable
from experiments.zoo import dense_training

CLASSIFIER_SCORE = "test accuracy"


@dataclass
class TrainedModel:
    model: nn.Module
    accuracy: Optional[float]       # the test score score_name names; None where the test labels are unknown
    cache_key: str
    cache_path: Optional[Path]
    from_cache: bool
    train_seconds: float
    score_name: str = CLASSIFIER_SCORE   # a dense model's: its task's (dense_training.SCORES)


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short hash of a JSON-able object that does not depend on key order."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def model_cache_key(model_cfg: DictConfig, dataset_cfg: DictConfig, seed: int) -> str:
    """A dense model's key also holds its task and the loss it trains with (the configured one or
    the task's default), so a changed default never loads weights trained on another loss."""
    key = {
        "net": OmegaConf.to_container(model_cfg.net, resolve=True),
        "train": OmegaConf.to_container(model_cfg.train, resolve=True) if model_cfg.get("train") else None,
        "dataset": OmegaConf.to_container(dataset_cfg, resolve=True),
        "seed": seed,
    }
    task = model_cfg.get("task", "classification")
    if task != "classification":
        key.update(task=task, loss=dense_training.loss_name(task, model_cfg.get("train") or {}))
    return stable_hash(key)


def build_network(model_cfg: DictConfig, dataset: Dataset) -> nn.Module:
    """Instantiate the network, giving it the sizes the dataset determines that it accepts."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_method, instantiate

    try:
        factory = get_method(model_cfg.net._target_)
    except ImportError as exc:
        raise unimportable("model", model_cfg.net._target_, exc) from None
    params = inspect.signature(factory).parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = {p.name for p in params}
    sizes = {k: v for k, v in dataset.model_kwargs().items() if takes_any or k in names}
    try:
        return instantiate(model_cfg.net, **sizes)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        if isinstance(cause, (TypeError, ValueError)):  # a value of the wrong kind in model.net
            raise ConfigError(f"model {model_cfg.name}: cannot build {model_cfg.net._target_} from model.net "
                              f"({type(cause).__name__}: {cause})".replace("\n", " ")) from None
        raise


# adam: Adam with L2 weight decay (the image and tabular models); adamw: decoupled weight decay,
# the usual choice for fine-tuning transformers (the text models). AdamW runs fused: a text model's
# token-embedding table (30k x d) gets a dense update every step, which the fused kernel does
# about 7x faster on a CPU than the per-tensor loop.
OPTIMIZERS = {"adam": torch.optim.Adam, "adamw": functools.partial(torch.optim.AdamW, fused=True)}


def check_train_config(model_cfg: DictConfig) -> None:
    """Refuse training settings that cannot train, before any step is taken."""
    train_cfg = model_cfg.train
    def number(key: str) -> Any:
        value = train_cfg.get(key)
        return value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
    for key, ok, valid in (
        ("epochs", lambda v: isinstance(v, int) and v >= 0, "a non-negative integer"),
        ("batch_size", lambda v: isinstance(v, int) and v > 0, "a positive integer"),
        ("lr", lambda v: math.isfinite(v) and v > 0, "a positive number"),
        ("weight_decay", lambda v: math.isfinite(v) and v >= 0, "a non-negative number"),
    ):
        value = number(key)
        if value is None or not ok(value):
            raise ConfigError(f"model.train.{key}={train_cfg.get(key)!r} is invalid; choose {valid}")
    optimizer = train_cfg.get("optimizer", "adam")
    if not isinstance(optimizer, str) or optimizer not in OPTIMIZERS:
        raise ConfigError(f"model.train.optimizer={optimizer!r} is invalid; choose one of: {', '.join(OPTIMIZERS)}")


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Predicted classes, in batches on the model's device, returned on the CPU."""
    device = next(model.parameters()).device
    return torch.cat([model(x[i:i + batch_size].to(device)).argmax(-1).cpu() for i in range(0, len(x), batch_size)])


def test_score(model: nn.Module, dataset: Dataset) -> tuple[Optional[float], str]:
    """The test score recorded for a model and its name: a classifier's accuracy, or a dense
    model's task score (mean IoU, ``experiments.zoo.dense_training``)."""
    if dataset.task == "classification":
        return accuracy(model, dataset.x_test, dataset.y_test), CLASSIFIER_SCORE
    return dense_training.dense_score(model, dataset), dense_training.SCORES[dataset.task]


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int = 256) -> Optional[float]:
    """Top-1 accuracy over the samples with a known label (label >= 0)."""
    known = y >= 0
    if not bool(known.any()):
        return None
    model.eval()
    preds = predict(model, x, batch_size)
    return float((preds[known] == y[known]).float().mean())


def train(model: nn.Module, dataset: Dataset, train_cfg: DictConfig, seed: int, device: torch.device) -> nn.Module:
    """Adam (or AdamW, ``optimizer``) with cross-entropy, deterministic from the seed, with a
    progress bar per epoch. Only parameters that require gradients are optimised (a pretrained
    encoder's frozen layers stay as they are); inputs may be floats or token ids. A dense task's
    model trains in the same loop on ``dataset.targets_train`` with its task's loss
    (``train.loss``, ``experiments.zoo.dense_training``).

    ``label_smoothing`` (0 when absent) keeps the model from saturating: a softmax output of
    exactly 1.0 in float32 has zero gradient and does not move when a feature is removed, which
    leaves gradient explanations and drop-one faithfulness scores of that sample undefined.
    A Keras model (``experiments.zoo.keras_models``) trains with Keras's own ``fit``, likewise."""
    task = dataset.task
    dense = task != "classification"
    loss_name = dense_training.loss_name(task, train_cfg) if dense else None
    progress = os.environ.get("BACKTRACE_BENCH_NO_PROGRESS") != "1"
    if getattr(model, "framework", "torch") == "keras" and dense:
        return model.fit_dense(dataset.x_train, dataset.targets_train, loss_name, epochs=int(train_cfg.epochs),
                               batch_size=int(train_cfg.batch_size), lr=float(train_cfg.lr),
                               weight_decay=float(train_cfg.weight_decay), seed=seed, progress=progress).eval()
    if getattr(model, "framework", "torch") == "keras":
        return model.fit(dataset.x_train, dataset.y_train, epochs=int(train_cfg.epochs),
                         batch_size=int(train_cfg.batch_size), lr=float(train_cfg.lr),
                         weight_decay=float(train_cfg.weight_decay), seed=seed,
                         label_smoothing=float(train_cfg.get("label_smoothing", 0.0)),
                         progress=progress).eval()
    torch.manual_seed(seed)
    gen = torch.Generator().manual_seed(seed)
    model.to(device).train()
    optimizer = OPTIMIZERS[str(train_cfg.get("optimizer", "adam"))]
    opt = optimizer([p for p in model.parameters() if p.requires_grad], lr=float(train_cfg.lr),
                    weight_decay=float(train_cfg.weight_decay))
    if dense:
        targets = dataset.targets_train
        def loss_fn(out: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
            return dense_training.dense_loss(task, loss_name, out, target)
    else:
        targets = dataset.y_train
        loss_fn = nn.CrossEntropyLoss(label_smoothing=float(train_cfg.get("label_smoothing", 0.0)))
    n, bs = len(dataset.x_train), int(train_cfg.batch_size)
    epochs, steps = int(train_cfg.epochs), -(-n // bs)
    bar = tqdm(total=epochs * steps, desc=f"training {type(model).__name__}", unit="step", mininterval=1.0,
               disable=not progress)
    for epoch in range(epochs):
        order = torch.randperm(n, generator=gen)
        for i in range(0, n, bs):
            idx = order[i:i + bs]
            xb, yb = dataset.x_train[idx].to(device), targets[idx].to(device)
            if dataset.modality == "text":  # drop the batch's all-padding columns: outputs do not depend on them
                xb = xb[:, : int(xb.ne(int(dataset.info["tokenizer"]["pad_token_id"])).sum(1).max())]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(xb), yb)
            loss.backward()
            opt.step()
            bar.update(1)
            bar.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss.item():.3f}", refresh=False)
    bar.close()
    return model.eval()


def _atomic_save(payload: dict[str, Any], path: Path) -> None:
    buf = io.BytesIO()
    torch.save(payload["state_dict"], buf)
    blob = buf.getvalue()
    meta = {k: v for k, v in payload.items() if k != "state_dict"}
    meta["sha256"] = hashlib.sha256(blob).hexdigest()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "wb") as f:
        header = json.dumps(meta).encode()
        f.write(len(header).to_bytes(8, "little"))
        f.write(header)
        f.write(blob)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def _load(path: Path) -> Optional[tuple[dict[str, Any], dict[str, torch.Tensor]]]:
    """Meta and state dict of a cache file, or None if the file is missing or corrupt."""
    try:
        raw = path.read_bytes()
        size = int.from_bytes(raw[:8], "little")
        meta = json.loads(raw[8:8 + size])
        blob = raw[8 + size:]
        if hashlib.sha256(blob).hexdigest() != meta["sha256"]:
            return None
        state = torch.load(io.BytesIO(blob), map_location="cpu", weights_only=True)
        return meta, state
    except FileNotFoundError:
        return None
    except Exception:  # any unreadable file is a corrupt cache entry: rebuild it
        return None


def load_or_train(model_cfg: DictConfig, dataset_cfg: DictConfig, dataset: Dataset, seed: int,
                  cache_dir: str | Path, device: torch.device) -> TrainedModel:
    """The model for this config: from the cache when present and sound, else trained and cached.

    ``model.torch_copy_of`` (a Keras model's name, with that model's ``net`` and ``train``) gives
    the torch version of that same trained Keras network: the Keras model is loaded from (or
    trained into) its own cache entry, then its weights go into the zoo's torch network
    (``experiments.zoo.keras_models.torch_copy``); nothing is retrained."""
    source = model_cfg.get("torch_copy_of")
    if not source:
        return _load_or_train(model_cfg, dataset_cfg, dataset, seed, cache_dir, device)
    keras_cfg = OmegaConf.merge(model_cfg, {"name": source, "framework": "keras"})
    trained = _load_or_train(keras_cfg, dataset_cfg, dataset, seed, cache_dir, device)
    from experiments.zoo.keras_models import torch_copy

    net = torch_copy(trained.model).to(device).eval()
    acc, score_name = test_score(net, dataset)
    print(f"model {model_cfg.name}: torch copy of {source} ({_scored(score_name, acc)})")
    return TrainedModel(net, acc, trained.cache_key, trained.cache_path, trained.from_cache, trained.train_seconds,
                        score_name)


def _scored(name: str, value: Optional[float]) -> str:
    return f"{name} {value:.4f}" if value is not None else f"{name} unknown"


def _load_or_train(model_cfg: DictConfig, dataset_cfg: DictConfig, dataset: Dataset, seed: int,
                   cache_dir: str | Path, device: torch.device) -> TrainedModel:
    key = model_cache_key(model_cfg, dataset_cfg, seed)
    torch.manual_seed(seed)
    net = build_network(model_cfg, dataset)
    if model_cfg.get("pretrained"):
        net.to(device).eval()
        acc, score_name = test_score(net, dataset)
        return TrainedModel(net, acc, key, None, True, 0.0, score_name)

    path = Path(cache_dir) / "models" / f"{model_cfg.name}-{key}.pt"
    loaded = _load(path)
    if loaded is not None:
        meta, state = loaded
        net.load_state_dict(state)
        net.to(device).eval()
        score_name = str(meta.get("score_name", CLASSIFIER_SCORE))
        print(f"model {model_cfg.name}: loaded from cache {path} ({_scored(score_name, meta['accuracy'])})")
        return TrainedModel(net, meta["accuracy"], key, path, True, float(meta.get("train_seconds", 0.0)), score_name)
    if path.exists():
        print(f"model {model_cfg.name}: cache file {path} is corrupt; retraining")

    check_train_config(model_cfg)
    start = time.perf_counter()
    train(net, dataset, model_cfg.train, seed, device)
    seconds = time.perf_counter() - start
    broken = [name for name, p in net.state_dict().items() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if broken:  # never cache or explain a model whose weights went to NaN/inf
        raise ConfigError(f"model {model_cfg.name}: training diverged (non-finite weights in {broken[0]}); "
                          f"lower model.train.lr (now {model_cfg.train.lr})")
    acc, score_name = test_score(net, dataset)
    print(f"model {model_cfg.name}: trained in {seconds:.1f} s, {_scored(score_name, acc)}")
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    _atomic_save({"state_dict": state, "accuracy": acc, "score_name": score_name, "train_seconds": seconds,
                  "key": key, "model": model_cfg.name}, path)
    return TrainedModel(net, acc, key, path, False, seconds, score_name)
