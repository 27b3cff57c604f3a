"""Train-on-first-use model cache, keyed by a hash of everything that determines the weights.

A classifier trains on cross-entropy and is scored by its test accuracy; a dense model (a task in
``baselines.vocabulary.DENSE_TASKS``) trains on its task's loss through the same loop and is scored
by its task's test score (``experiments.zoo.dense_training``). A cached model is loaded, never retrained; a file that fails to load or whose checksum does not
match is reported and rebuilt. Files are written to a temporary name and renamed, so a killed
training never leaves a file that looks complete.
"""
from __future__ import annotations

import contextlib
import functools
import hashlib
import importlib.metadata
import inspect
import io
import json
import math
import os
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Optional

import torch
from omegaconf import DictConfig, OmegaConf
from torch import nn
from tqdm.auto import tqdm

from experiments.data.datasets import Dataset
from experiments.errors import ConfigError, missing_extra, needs_extra, quiet_lookup, unimportable
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
    weights_sha256: Optional[str] = None   # sha256 of the state dict as torch.save writes it (the cached blob)


# Training threads (``model.train.threads``; this when a config leaves it out). Floating-point
# sums split over threads add in another order, so the weights depended on the run's thread count:
# trained with 1 and 2 threads, the cnn's and bert_tiny's weights differed (bert_tiny test accuracy
# 0.976 and 0.970) and the image table's ResNet-8 reached 0.8450 and 0.8675. Training therefore
# runs on a fixed count, never the run's ``threads`` or a launcher's share of the cores. A fixed 1
# and a fixed 2 both give the same weights in every run, thread setting and joblib worker
# (measured on the cnn); 1 is the default because every machine and every parallel worker can give
# it without oversubscribing the cores. Measured on a shared 2-core machine: in a two-worker joblib
# sweep the cnn trained in 30 s per worker with 1 thread and 125 s with 2; a ResNet-8 step took
# 0.17 s of CPU with 1 thread (about 50 s for its 3 epochs on an idle core, against about 36 s with
# 2 threads on an idle machine) and 4x the wall time of 1 thread with 2 threads on busy cores.
TRAIN_THREADS = 1

# A progress bar factory, ``(total, description, unit) -> tqdm``. Whether a bar is drawn is the
# run's decision (experiments.run.progress: on a terminal only, never in CI or parallel workers),
# so the run passes its own; training called directly draws none.
ProgressBar = Callable[[int, str, str], Any]


def no_bar(total: int, desc: str, unit: str) -> Any:
    return tqdm(total=total, desc=desc, unit=unit, disable=True)


def stable_hash(obj: Any, length: int = 16) -> str:
    """A short hash of a JSON-able object that does not depend on key order."""
    blob = json.dumps(obj, sort_keys=True, default=str).encode()
    return hashlib.sha256(blob).hexdigest()[:length]


def train_threads(train_cfg: Optional[DictConfig]) -> int:
    """The thread count training runs on: ``model.train.threads``, :data:`TRAIN_THREADS` if unset."""
    threads = train_cfg.get("threads") if train_cfg is not None else None
    if threads is None:
        return TRAIN_THREADS
    if isinstance(threads, bool) or not isinstance(threads, int) or threads <= 0:
        raise ConfigError(f"model.train.threads={threads!r} is invalid; choose a positive integer")
    return threads


def _version(*distributions: str) -> Optional[str]:
    for name in distributions:
        try:
            return importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return None


def weight_versions(model_cfg: DictConfig) -> dict[str, Optional[str]]:
    """The versions of the packages whose arithmetic or random streams the weights depend on.

    torch trains (kernels, initialisation, dropout); numpy generates and subsets the datasets
    (its ``Generator`` promises no stream compatibility across releases) and feeds Keras; text
    models take their ids from the tokenizers package and, for BERT, their layers and pretrained
    weights' loading from transformers; Keras models train in TensorFlow. scikit-learn is left
    out: its bundled datasets are fixed files and its splits use numpy's legacy ``RandomState``,
    whose streams are frozen."""
    versions = {"torch": torch.__version__, "numpy": _version("numpy")}
    if model_cfg.get("modality") == "text":
        versions.update(transformers=_version("transformers"), tokenizers=_version("tokenizers"))
    if model_cfg.get("framework") == "keras" or model_cfg.get("torch_copy_of"):
        versions.update(tensorflow=_version("tensorflow", "tensorflow-cpu"), keras=_version("keras"))
    return versions


def model_cache_key(model_cfg: DictConfig, dataset_cfg: DictConfig, seed: int,
                    device: torch.device | str = "cpu") -> str:
    """The hash of everything that decides the trained weights: network, training settings (with
    the training thread count filled in), dataset, seed, the device kind (a GPU's kernels sum in
    another order than the CPU's) and the versions of the packages that compute them."""
    train = OmegaConf.to_container(model_cfg.train, resolve=True) if model_cfg.get("train") else None
    if isinstance(train, dict):
        train["threads"] = train_threads(model_cfg.train)
    key = {
        "net": OmegaConf.to_container(model_cfg.net, resolve=True),
        "train": train,
        "dataset": OmegaConf.to_container(dataset_cfg, resolve=True),
        "seed": seed,
        "device": torch.device(device).type,
        "versions": weight_versions(model_cfg),
    }
    task = model_cfg.get("task", "classification")
    if task != "classification":
        key.update(task=task, loss=dense_training.loss_name(task, model_cfg.get("train") or {}))
    return stable_hash(key)


def build_network(model_cfg: DictConfig, dataset: Dataset, cache_dir: Optional[str | Path] = None) -> nn.Module:
    """Instantiate the network, giving it the sizes the dataset determines that it accepts, and
    the run's ``cache_dir`` where it takes one (a network that converts its weights once, SmolLM2:
    a place to keep them that is not part of the config)."""
    from hydra.errors import InstantiationException
    from hydra.utils import get_method, instantiate

    try:
        with quiet_lookup():
            factory = get_method(model_cfg.net._target_)
    except ImportError as exc:
        raise unimportable("model", model_cfg.net._target_, exc) from None
    params = inspect.signature(factory).parameters.values()
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params)
    names = {p.name for p in params}
    sizes = {k: v for k, v in dataset.model_kwargs().items() if takes_any or k in names}
    if cache_dir is not None and "cache_dir" in names:
        sizes["cache_dir"] = str(cache_dir)
    try:
        return instantiate(model_cfg.net, **sizes)
    except InstantiationException as exc:
        cause = exc.__cause__
        if isinstance(cause, ConfigError):
            raise cause from None
        extra = missing_extra(exc)
        if extra is not None:        # a network built with an optional framework that is not installed
            raise needs_extra("model", model_cfg.name, extra) from None
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
    train_threads(train_cfg)
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


@contextlib.contextmanager
def deterministic_torch(threads: int, device: torch.device) -> Iterator[None]:
    """Run the block on ``threads`` torch threads with torch's deterministic algorithms (an op
    without a deterministic implementation raises instead of running), restoring the caller's
    thread count and settings afterwards.

    On a GPU, cuBLAS needs a fixed workspace to be deterministic (``CUBLAS_WORKSPACE_CONFIG``,
    read when its first handle is made) and cuDNN's benchmark mode could pick another algorithm
    per run; both are set for the block."""
    saved = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
             torch.is_deterministic_algorithms_warn_only_enabled(), torch.backends.cudnn.benchmark)
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        torch.set_num_threads(saved[0])
        torch.use_deterministic_algorithms(saved[1], warn_only=saved[2])
        torch.backends.cudnn.benchmark = saved[3]


def train(model: nn.Module, dataset: Dataset, train_cfg: DictConfig, seed: int, device: torch.device,
          progress: ProgressBar = no_bar) -> nn.Module:
    """Adam (or AdamW, ``optimizer``) with cross-entropy, deterministic from the seed, with a
    progress bar from ``progress`` (:data:`ProgressBar`). Only parameters that require
    gradients are optimised (a pretrained encoder's frozen layers stay as they are); inputs may be
    floats or token ids. A dense task's model trains in the same loop on ``dataset.targets_train``
    with its task's loss (``train.loss``, ``experiments.zoo.dense_training``).

    The weights are the same bit for bit whatever thread count or launcher the run has: training
    runs on ``model.train.threads`` threads (:data:`TRAIN_THREADS`) with deterministic algorithms,
    the data order comes from a generator seeded with ``seed``, and initialisation and dropout
    from torch's global generator, seeded with ``seed`` before the network is built and again here.

    ``label_smoothing`` (0 when absent) keeps the model from saturating: a softmax output of
    exactly 1.0 in float32 has zero gradient and does not move when a feature is removed, which
    leaves gradient explanations and drop-one faithfulness scores of that sample undefined.
    A Keras model (``experiments.zoo.keras_models``) trains with Keras's own ``fit``, likewise, on
    TensorFlow thread pools of ``model.train.threads`` threads."""
    threads = train_threads(train_cfg)
    task = dataset.task
    dense = task != "classification"
    if getattr(model, "framework", "torch") == "keras" and dense:
        return model.fit_dense(dataset.x_train, dataset.targets_train, dense_training.loss_name(task, train_cfg),
                               epochs=int(train_cfg.epochs), batch_size=int(train_cfg.batch_size),
                               lr=float(train_cfg.lr), weight_decay=float(train_cfg.weight_decay), seed=seed,
                               threads=threads, progress=progress).eval()
    if getattr(model, "framework", "torch") == "keras":
        return model.fit(dataset.x_train, dataset.y_train, epochs=int(train_cfg.epochs),
                         batch_size=int(train_cfg.batch_size), lr=float(train_cfg.lr),
                         weight_decay=float(train_cfg.weight_decay), seed=seed, threads=threads,
                         label_smoothing=float(train_cfg.get("label_smoothing", 0.0)), progress=progress).eval()
    with deterministic_torch(threads, device):
        return _train_torch(model, dataset, train_cfg, seed, device, progress)


def _train_torch(model: nn.Module, dataset: Dataset, train_cfg: DictConfig, seed: int,
                 device: torch.device, progress_bar: ProgressBar) -> nn.Module:
    task = dataset.task
    dense = task != "classification"
    loss_name = dense_training.loss_name(task, train_cfg) if dense else None
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
    progress = progress_bar(epochs * steps, f"training {type(model).__name__}", "step")
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
            progress.update(1)
            if not progress.disable:
                progress.set_postfix(epoch=f"{epoch + 1}/{epochs}", loss=f"{loss.item():.3f}", refresh=False)
    progress.close()
    return model.eval()


def state_blob(state: dict[str, torch.Tensor]) -> bytes:
    """A state dict as the cache stores it and the weights' hash reads it: ``torch.save`` of a plain
    dict of CPU tensors (a module's own ``state_dict()`` pickles its metadata too)."""
    buf = io.BytesIO()
    torch.save({k: v.detach().cpu() for k, v in state.items()}, buf)
    return buf.getvalue()


def _atomic_save(payload: dict[str, Any], path: Path) -> str:
    """Write the cache file; returns the sha256 of its state-dict blob (the weights' hash)."""
    blob = state_blob(payload["state_dict"])
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
    return str(meta["sha256"])


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
                  cache_dir: str | Path, device: torch.device, progress: ProgressBar = no_bar) -> TrainedModel:
    """The model for this config: from the cache when present and sound, else trained (with a bar
    from ``progress``) and cached.

    ``model.torch_copy_of`` (a Keras model's name, with that model's ``net`` and ``train``) gives
    the torch version of that same trained Keras network: the Keras model is loaded from (or
    trained into) its own cache entry, then its weights go into the zoo's torch network
    (``experiments.zoo.keras_models.torch_copy``); nothing is retrained."""
    source = model_cfg.get("torch_copy_of")
    if not source:
        return _load_or_train(model_cfg, dataset_cfg, dataset, seed, cache_dir, device, progress)
    keras_cfg = OmegaConf.merge(model_cfg, {"name": source, "framework": "keras"})
    trained = _load_or_train(keras_cfg, dataset_cfg, dataset, seed, cache_dir, device, progress)
    from experiments.zoo.keras_models import torch_copy

    net = torch_copy(trained.model).to(device).eval()
    acc, score_name = test_score(net, dataset)
    print(f"model {model_cfg.name}: torch copy of {source} ({_scored(score_name, acc)})")
    # the copy's weights are a fixed function of the Keras weights: the source's hash names them
    return TrainedModel(net, acc, trained.cache_key, trained.cache_path, trained.from_cache, trained.train_seconds,
                        score_name=score_name, weights_sha256=trained.weights_sha256)


def _scored(name: str, value: Optional[float]) -> str:
    return f"{name} {value:.4f}" if value is not None else f"{name} unknown"


def _load_or_train(model_cfg: DictConfig, dataset_cfg: DictConfig, dataset: Dataset, seed: int,
                   cache_dir: str | Path, device: torch.device, progress: ProgressBar) -> TrainedModel:
    key = model_cache_key(model_cfg, dataset_cfg, seed, device)
    path = Path(cache_dir) / "models" / f"{model_cfg.name}-{key}.pt"
    pretrained = bool(model_cfg.get("pretrained"))
    loaded = None if pretrained else _load(path)
    if model_cfg.get("framework") == "keras" and not pretrained:
        from experiments.zoo.keras_models import tensorflow_threads

        # TensorFlow fixes its thread pools when it starts, which building the network does:
        # give them the training thread count now (a model that will train needs them so)
        tensorflow_threads(train_threads(model_cfg.train), required=loaded is None)
    torch.manual_seed(seed)
    net = build_network(model_cfg, dataset, cache_dir)
    if pretrained:
        sha = hashlib.sha256(state_blob(net.state_dict())).hexdigest()
        net.to(device).eval()
        acc, score_name = test_score(net, dataset)
        return TrainedModel(net, acc, key, None, True, 0.0, score_name=score_name, weights_sha256=sha)

    if loaded is not None:
        meta, state = loaded
        net.load_state_dict(state)
        net.to(device).eval()
        score_name = str(meta.get("score_name", CLASSIFIER_SCORE))
        print(f"model {model_cfg.name}: loaded from cache {path} ({_scored(score_name, meta['accuracy'])})")
        return TrainedModel(net, meta["accuracy"], key, path, True, float(meta.get("train_seconds", 0.0)),
                            score_name=score_name, weights_sha256=meta["sha256"])
    if path.exists():
        print(f"model {model_cfg.name}: cache file {path} is corrupt; retraining")

    check_train_config(model_cfg)
    start = time.perf_counter()
    train(net, dataset, model_cfg.train, seed, device, progress)
    seconds = time.perf_counter() - start
    broken = [name for name, p in net.state_dict().items() if p.is_floating_point() and not bool(torch.isfinite(p).all())]
    if broken:  # never cache or explain a model whose weights went to NaN/inf
        raise ConfigError(f"model {model_cfg.name}: training diverged (non-finite weights in {broken[0]}); "
                          f"lower model.train.lr (now {model_cfg.train.lr})")
    acc, score_name = test_score(net, dataset)
    print(f"model {model_cfg.name}: trained in {seconds:.1f} s, {_scored(score_name, acc)}")
    state = {k: v.detach().cpu() for k, v in net.state_dict().items()}
    sha = _atomic_save({"state_dict": state, "accuracy": acc, "score_name": score_name, "train_seconds": seconds,
                        "key": key, "model": model_cfg.name, "train_threads": train_threads(model_cfg.train)}, path)
    return TrainedModel(net, acc, key, path, False, seconds, score_name=score_name, weights_sha256=sha)
