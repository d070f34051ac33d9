"""The proxy model of the static strategies: trained once, its per-sample scores cached on disk.

SVP and the proxy-datasets paper score every training sample with a cheaper model: a smaller
network, or the target network trained for fewer epochs. :func:`proxy_scores` trains it on all
the training data (counting forgetting events from the training logits), then scores every
sample in one pass without augmentation: loss, entropy, least confidence and penultimate
features (for k-centers). The result is cached under :func:`cache_dir`, keyed by everything that
changes it, and a file lock makes concurrent trials wait for one computation instead of
repeating it: every trial of a search shares one proxy, whose seconds count once in its cost.

The proxy trains with the default optimisation settings (:class:`TrainConfig`'s optimiser, lr, momentum,
weight decay, batch size, schedule), not a trial's, so trials that differ in those share it; it takes the
target's ``model_args`` only when it is the target network (trials that differ in them then train one each).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import time
import warnings
import weakref
from pathlib import Path
from typing import Any, Iterator

import torch
import torch.nn.functional as F

from asp_tune.config import TrainConfig
from asp_tune.datasets import DataBundle, ImageArrays
from asp_tune.device import autocast
from asp_tune.errors import AspTuneError, ConfigError, RunFailed
from asp_tune.memory import output_layer
from asp_tune.scores import ProxyScores
from asp_tune.static_proxies import ForgettingEvents
from asp_tune.trainer import StepOutput, Trainer, load_state, make_feeder, save_state

#: Settings of the proxy's own training that a trial's do not change (see the module docstring).
OPTIMISATION_FIELDS = ("optimizer", "betas", "batch_size", "lr", "momentum", "nesterov", "weight_decay",
                       "label_smoothing", "lr_schedule", "lr_min", "milestones", "lr_gamma")
#: Settings of the proxy's run kept from the caller's: part of the cache key too.
RUN_FIELDS = ("model", "model_args", "epochs", "task", "amp")
#: Settings that change which samples exist or how they look: part of the cache key.
DATA_FIELDS = ("dataset", "data_dir", "subset", "test_subset", "val_fraction", "seed", "crop_padding", "flip_p",
               "cutout")


def proxy_epochs(config: TrainConfig) -> int:
    """``proxy_epochs``, or by default a quarter of the target's epochs (at least 1; at least 2 for
    ``forgetting``, whose events need two consecutive epochs)."""
    if config.proxy_epochs is not None:
        return config.proxy_epochs
    return max(2 if config.metric == "forgetting" else 1, config.epochs // 4)


def proxy_train_config(config: TrainConfig, own_optimisation: bool = False) -> TrainConfig:
    """The proxy model's own run: ``proxy_model`` (default: the target network, with its ``model_args``) on all
    data for :func:`proxy_epochs`, with the default optimisation settings (so every trial of a search shares one),
    or with ``config``'s where ``own_optimisation`` (active learning's round models: one configuration)."""
    defaults = TrainConfig()
    own = config.proxy_model in (None, config.model)
    optimisation = config if own_optimisation else defaults
    return config.replace(model=config.model if own else config.proxy_model,
                          model_args=config.model_args if own else defaults.model_args,
                          epochs=proxy_epochs(config), ratio=1.0, metric="none", ratio_schedule="constant",
                          **{name: getattr(optimisation, name) for name in OPTIMISATION_FIELDS})


def cache_dir() -> Path:
    """``$ASP_TUNE_CACHE/proxy_scores`` (default ``~/.cache/asp_tune/proxy_scores``)."""
    from asp_tune.datasets import default_cache_dir

    return default_cache_dir() / "proxy_scores"


#: by the tensor's id while it lives (a tensor's == is elementwise: no dict key): (its version, its digest)
_DIGESTS: dict[int, tuple[int, str]] = {}


def _digest(values: torch.Tensor) -> str:
    """A SHA-256 of a tensor's bytes (about 0.1 s for CIFAR-10's training images), once per tensor and
    version: every static-proxy trial of a process asks for its data's key, and an in-place edit (which
    bumps the tensor's version counter) is digested again."""
    try:
        version = values._version
    except RuntimeError:  # an inference tensor keeps no version counter (and cannot be edited in place later)
        version = -1
    known = _DIGESTS.get(id(values))
    if known is None or known[0] != version:
        raw = values.detach().contiguous().reshape(-1).view(torch.uint8).cpu().numpy()  # any dtype, bfloat16 too
        if known is None:
            weakref.finalize(values, _DIGESTS.pop, id(values), None)
        known = _DIGESTS[id(values)] = (version, hashlib.sha256(memoryview(raw)).hexdigest())
    return known[1]


def _builder_code(name: str) -> str:
    """A digest of the source file of the network ``name``'s builder where it is the user's (registered or by
    import path): an edited builder trains another network under the same name. Empty for asp_tune's own
    (the key's version covers them) or where the source cannot be read."""
    import inspect

    from asp_tune.imports import resolve
    from asp_tune.models import MODELS, _ours

    builder = resolve(MODELS, name, "model")
    if _ours(builder):
        return ""
    try:
        return hashlib.sha256(Path(inspect.getsourcefile(builder) or "").read_bytes()).hexdigest()
    except (OSError, TypeError):
        return ""


def cache_key(config: TrainConfig, data: DataBundle) -> str:
    """Everything the scores depend on: the proxy's settings, its builder's source file where the network is
    yours, and the exact training split (its inputs' and labels' bytes: an edited image or a changed loader's
    output is scored again)."""
    proxy = proxy_train_config(config)
    identity = {"train": {name: getattr(proxy, name) for name in DATA_FIELDS + OPTIMISATION_FIELDS + RUN_FIELDS},
                "data": data.describe(), "labels": _digest(data.train.labels), "inputs": _digest(data.train.images),
                "model_code": _builder_code(proxy.model), "version": 3}
    for name in ("milestones", "betas"):
        identity["train"][name] = list(identity["train"][name])
    return hashlib.sha256(json.dumps(identity, sort_keys=True, default=str).encode()).hexdigest()[:20]


@contextlib.contextmanager
def preserved_rng() -> Iterator[None]:
    """Restore torch's (CPU and CUDA), Python's and NumPy's global random states on exit."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=range(torch.cuda.device_count()) if torch.cuda.is_available() else []):
            yield
    finally:  # an error inside leaves them as they were too
        random.setstate(python_state)
        np.random.set_state(numpy_state)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    import os

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        # never through a link planted at the lock's name: it would create or touch the file it names
        fd = os.open(path, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        handle = os.fdopen(fd, "r+")
    except OSError as exc:  # a cache folder that cannot be made, or a link: compute without sharing the result
        warnings.warn(f"proxy scores cache lock {path} is not usable ({exc.strerror or exc}; set "
                      "ASP_TUNE_CACHE to a writable folder); the proxy is trained without a cache", stacklevel=3)
        yield
        return
    with handle:
        fcntl.flock(handle, fcntl.LOCK_EX)  # concurrent trials wait here for the one computing
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def proxy_scores(config: TrainConfig, data: DataBundle, target: torch.nn.Module | None = None,
                 forbid_bigger: bool = False) -> ProxyScores:
    """The cached scores of ``config``'s proxy model on ``data``'s training split (computed on a miss).

    ``forbid_bigger``: refuse a proxy network with more parameters than ``target`` (SVP's premise)."""
    proxy_config = proxy_train_config(config)
    if forbid_bigger and target is not None:
        check_proxy_smaller(proxy_config.model, data, target, config.metric, proxy_config.model_args)
    if config.metric == "forgetting" and proxy_config.epochs < 2:
        warnings.warn("'forgetting' counts a sample's forgetting events between consecutive epochs of its scoring "
                      f"model, which trains {proxy_config.epochs} epoch here: every sample it learnt scores alike; "
                      "give proxy_epochs (--proxy-epochs) 2 or more", stacklevel=2)
    key = cache_key(config, data)
    file = cache_dir() / f"{key}.pt"
    with _locked(file.with_suffix(".lock")):
        if file.is_file():
            try:
                cached = ProxyScores.from_state(load_state(file, "loss", "an asp_tune proxy-scores file"))
                problem = cached.mismatch(key, len(data.train))
            except (AspTuneError, TypeError) as exc:  # damaged or from another version: computed again
                problem = f"it is unreadable ({exc})"
            if problem is None:
                return cached
            warnings.warn(f"proxy scores cache {file} does not fit: {problem}; training the proxy again",
                          stacklevel=2)
        with preserved_rng():  # a cache hit and a miss leave the caller's random state alike
            scores = compute_proxy_scores(proxy_config, data)
        scores.key = key
        try:
            save_state(scores.to_state(), file)
        except (AspTuneError, OSError) as exc:  # a read-only, full or impossible cache: used, only not kept
            warnings.warn(f"proxy scores not cached ({exc}); the next run trains the proxy model again",
                          stacklevel=2)
    scores.computed_here = True
    return scores


def check_proxy_smaller(proxy_model: str, data: DataBundle, target: torch.nn.Module, strategy: str,
                        model_args: dict[str, Any] | None = None) -> None:
    """Refuse a scoring network (built with the ``model_args`` it trains with) bigger than ``target``."""
    from asp_tune.models import build_model

    built = build_model(proxy_model, data.input_shape, data.num_classes, **(model_args or {}))
    proxy_size = sum(p.numel() for p in built.parameters())
    target_size = sum(p.numel() for p in getattr(target, "weight_parameters", target.parameters)())
    if proxy_size > target_size:
        raise ConfigError("proxy_model", proxy_model,
                          f"a network no bigger than the target ({target_size:,} parameters; '{proxy_model}' has "
                          f"{proxy_size:,}) for '{strategy}': a bigger proxy costs more than it saves")


def compute_proxy_scores(proxy_config: TrainConfig, data: DataBundle) -> ProxyScores:
    """Train the proxy on all of ``data``'s training split, then score every training sample."""
    start = time.perf_counter()
    trainer = ProxyModelTrainer(proxy_config, data=data)
    forgetting = trainer.forgetting
    trainer.validate_each_epoch = False
    while not trainer.done:
        trainer.train_epoch()
    val_accuracy, _ = trainer.evaluate("val")
    loss, entropy, confidence, features = score_samples(trainer)
    check_finite({"loss": loss, "entropy": entropy, "confidence": confidence, "features": features},
                 f"the scoring model ({proxy_config.model}, {proxy_config.epochs} epochs)",
                 "it diverged under the default optimisation settings it trains with; no scores were kept (another "
                 "--proxy-model, or fewer --proxy-epochs)")
    return ProxyScores(loss=loss, entropy=entropy, least_confidence=1.0 - confidence,
                       forgetting=forgetting.scores().cpu(), features=features,
                       seconds=time.perf_counter() - start, model=proxy_config.model, epochs=proxy_config.epochs,
                       val_accuracy=val_accuracy)


def check_finite(scores: dict[str, torch.Tensor], model: str, advice: str) -> None:
    """Raise :class:`RunFailed` naming ``model`` and the score when any sample's is NaN or infinite (one NaN makes
    a top-m pick a uniform draw and k-centers pick a centre twice), with ``advice``."""
    for name, values in scores.items():
        bad = ~torch.isfinite(values.reshape(len(values), -1)).all(dim=1)
        if bool(bad.any()):
            raise RunFailed(f"{model} gave {int(bad.sum())} of {len(values)} samples a NaN or infinite {name}: "
                            f"{advice}")


class ProxyModelTrainer(Trainer):
    """The plain full-data trainer whose training logits also count forgetting events."""

    def __init__(self, config: TrainConfig, data: DataBundle | None = None, **kwargs: Any):
        super().__init__(config, data, **kwargs)
        self.forgetting = ForgettingEvents(len(self.data.train), self.device)

    def train_step(self, batch: Any) -> StepOutput:
        out = super().train_step(batch)
        seen = out.trained
        self.forgetting.update(seen.indices, seen.logits.detach().argmax(dim=1) == seen.targets)
        return out


@torch.inference_mode()
def score_samples(trainer: Trainer, arrays: ImageArrays | None = None) -> tuple[torch.Tensor, ...]:
    """(loss, entropy, max probability, penultimate features) of every sample of ``arrays`` (default:
    the trainer's training split), in index order, from one pass without augmentation; on the CPU."""
    data, cfg = trainer.data, trainer.config
    arrays = data.train if arrays is None else arrays
    feeder = make_feeder(arrays, data, cfg, trainer.device, False, trainer.channels_last, 0)
    layer = output_layer(trainer.model)
    captured: list[torch.Tensor] = []
    hook = None if layer is None else layer.register_forward_pre_hook(
        lambda module, inputs: captured.append(inputs[0].detach().float().flatten(1)))
    trainer.model.eval()
    parts: list[tuple[torch.Tensor, ...]] = []
    try:
        for x, y, _ in feeder.batches(None, cfg.eval_batch_size):
            with autocast(trainer.device, cfg.amp):
                logits = trainer.forward_eval(x)
            logits = logits.float()
            log_p = F.log_softmax(logits, dim=1)
            p = log_p.exp()
            feats = captured.pop() if captured else logits
            parts.append((F.nll_loss(log_p, y, reduction="none"), -(p * log_p).sum(dim=1), p.max(dim=1).values,
                          feats))  # float32: half precision turns an activation above 65,504 into infinity
    finally:
        if hook is not None:
            hook.remove()
    return tuple(torch.cat([part[i] for part in parts]).cpu() for i in range(4))
