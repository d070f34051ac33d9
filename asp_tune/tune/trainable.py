"""The Ray Tune trainable: one ASP proxy-data training run per trial, one report per epoch.

A report carries a checkpoint of the whole trainer (model, optimiser, LR schedule, proxy memory,
feeder and RNG states) where the search can pause or stop the trial, at its last epoch, and once
``checkpoint_every_s`` passed since the last one; so a trial paused by a scheduler or restarted
after a node failure or a killed driver continues exactly as an uninterrupted one would (from an
earlier epoch, it trains the epochs since again, with the same result).
"""

from __future__ import annotations

import json
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Callable

import torch

from asp_tune.build import build_trainer
from asp_tune.imports import add_search_paths
from asp_tune.registry import install_extensions
from asp_tune.memory import ProxyMemory
from asp_tune.tune.space import SearchSpace

from asp_tune.tune.reports import (CHECKPOINT_FILE, REPORTED, START_FILE, checkpoint_due,  # noqa: F401
                                   trial_metrics)

#: Fields that change which data is read; a space that searches one of them cannot share the data.
DATA_SOURCE_FIELDS = ("dataset", "data_dir", "download", "image_size")


def proxy_trial(config: dict[str, Any], *, space: SearchSpace, run: dict[str, Any], threads: int = 1,
                arrays: dict[str, Any] | None = None, validate_epochs: tuple[int, ...] | None = None,
                extensions: dict[str, dict[str, Any]] | None = None, search_paths: list[str] | None = None,
                checkpoint_epochs: tuple[int, ...] | None = None, checkpoint_every_s: float = 0.0,
                changes: str | None = None, report: Callable[..., None] | None = None,
                get_checkpoint: Callable[[], Any] | None = None,
                make_checkpoint: Callable[[str], Any] | None = None) -> None:
    """Train one configuration on proxy data; ``report``, ``get_checkpoint`` and ``make_checkpoint``
    (a checkpoint from a folder) default to Ray Tune's, so the function also runs without Ray.

    ``arrays``: the decoded data set, read once by the driver and shared through Ray's object store
    (read-only, zero-copy on each node), so a trial only splits it. The trainer is rebuilt from the
    config and checkpoint every time, so a reused worker process behaves exactly like a fresh one.
    Every report carries the trial's start-up seconds (data, model, checkpoint) apart from training.
    ``validate_epochs``: validate only after these epochs (the scheduler's decision points); the
    other reports carry no validation metrics, so a scheduler never sees a stale or missing score.
    ``checkpoint_epochs``: checkpoint after these epochs, the last one, and whenever
    ``checkpoint_every_s`` of the trial's time passed since its last checkpoint; None: every epoch.
    ``changes``: the search's ratio changes file (:mod:`asp_tune.tune.fulldata`): a trial starting fresh
    trains on its latest ratio, kept in the trial's checkpoints so a restarted trial keeps it too.
    """
    if report is None or get_checkpoint is None or make_checkpoint is None:
        from ray import tune

        report = report or tune.report
        get_checkpoint = get_checkpoint or tune.get_checkpoint
        make_checkpoint = make_checkpoint or tune.Checkpoint.from_directory
    started, started_at = time.perf_counter(), time.time()
    add_search_paths(search_paths or ())  # the driver's folders of the user's modules (same machine)
    install_extensions(extensions)  # what the driver registered (models, data sets, strategies, statistics)
    torch.set_num_threads(max(1, threads))
    trainer, restored, gpus, start_ratio = _start(config, space, run, arrays, get_checkpoint, changes)
    proxy = trainer.proxy_summary()  # a static proxy's scoring model: its seconds are reported apart
    startup = time.perf_counter() - started - (proxy["proxy_seconds"] if proxy.get("proxy_computed") else 0.0)
    where = {"node_id": _node_id(), "assigned_gpus": ",".join(gpus), "device": str(trainer.device),
             "trial_started_at": started_at, "start_ratio": start_ratio, **proxy, **restored}
    saved = time.perf_counter()
    while not trainer.done:
        trainer.validate_each_epoch = validate_epochs is None or trainer.epoch + 1 in validate_epochs
        record = trainer.train_epoch()
        metrics = {**trial_metrics(record), "startup_seconds": startup, "reported_at": time.time(), **where}
        if not checkpoint_due(trainer.epoch, trainer.done, checkpoint_epochs, time.perf_counter() - saved,
                              checkpoint_every_s):
            report(metrics)
            continue
        with tempfile.TemporaryDirectory() as folder:
            trainer.save_checkpoint(Path(folder) / CHECKPOINT_FILE)
            Path(folder, START_FILE).write_text(json.dumps({"ratio": start_ratio}))
            report(metrics, checkpoint=make_checkpoint(folder))
        saved = time.perf_counter()


def _start(config: dict[str, Any], space: SearchSpace, run: dict[str, Any], arrays: dict[str, Any] | None,
           get_checkpoint: Callable[[], Any], changes: str | None = None):
    """The trial's trainer, restored from its checkpoint when Ray gave one (with what it continues from:
    the epoch and a fingerprint of its memory, reported with every later epoch), its GPUs, and the ratio
    it started on (the search's latest correction for a fresh trial, its checkpoint's for a restored one)."""
    from asp_tune.tune.fulldata import started_ratio

    checkpoint = get_checkpoint()
    ratio = float(run.get("ratio", 1.0))
    if checkpoint is None:
        ratio = started_ratio(changes, ratio)
    else:
        with checkpoint.as_directory() as folder:
            saved = Path(folder, START_FILE)
            ratio = float(json.loads(saved.read_text())["ratio"]) if saved.is_file() else ratio
    params = {p.name: config[p.name] for p in space.params if p.name in config}
    cfg = space.train_config(params, **{**run, "ratio": ratio})
    gpus = _assigned_gpus()
    if gpus and cfg.device == "auto" and not torch.cuda.is_available():
        warnings.warn(f"Ray assigned GPU {','.join(gpus)} to this trial but CUDA is not available in its worker: "
                      "training on the CPU (use --device cuda to make this an error)", stacklevel=3)
    trainer = build_trainer(cfg, arrays=arrays)
    if checkpoint is None:
        return trainer, {}, gpus, ratio
    with checkpoint.as_directory() as folder:
        trainer.load_checkpoint(Path(folder) / CHECKPOINT_FILE)
    return trainer, {"restored_epoch": trainer.epoch,
                     "restored_memory": ProxyMemory.fingerprint(trainer.selector.memory.state_dict())}, gpus, ratio


def _assigned_gpus() -> list[str]:
    """The GPU ids Ray assigned this trial (its CUDA_VISIBLE_DEVICES; "cuda" then means the first)."""
    try:
        import ray

        return [str(g) for g in ray.get_gpu_ids()] if ray.is_initialized() else []
    except Exception:  # noqa: BLE001 - outside a Ray worker
        return []


def _node_id() -> str:
    """The Ray node this trial runs on ("" outside Ray), recorded with every report."""
    try:
        import ray

        return ray.get_runtime_context().get_node_id() if ray.is_initialized() else ""
    except Exception:  # noqa: BLE001 - only a label
        return ""
