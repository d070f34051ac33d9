"""The Ray Tune trainable: one ASP proxy-data training run per trial, one report per epoch.

Every report carries a checkpoint of the whole trainer (model, optimiser, LR schedule, proxy
memory, feeder and RNG states), so a trial paused by Hyperband/BOHB or restarted after a node
failure continues exactly as an uninterrupted one would.
"""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any, Callable

import torch

from asp_tune.trainer import Trainer
from asp_tune.tune.space import SearchSpace

CHECKPOINT_FILE = "trainer.pt"

#: Columns of every report, besides Ray's own.
REPORTED = ("epoch", "proxy_ratio", "target_ratio", "selected", "samples_seen", "data_passes", "metric_used",
            "train_loss", "train_accuracy", "val_loss", "val_accuracy", "epoch_seconds", "train_seconds_total",
            "coverage", "lr")


def trial_metrics(record: dict[str, Any]) -> dict[str, Any]:
    metrics = {k: record[k] for k in REPORTED if k in record}
    metrics["proxy_ratio"] = record["ratio"]
    return metrics


def proxy_trial(config: dict[str, Any], *, space: SearchSpace, run: dict[str, Any], threads: int = 1,
                report: Callable[..., None] | None = None,
                get_checkpoint: Callable[[], Any] | None = None) -> None:
    """Train one configuration on proxy data; ``report``/``get_checkpoint`` default to Ray Tune's."""
    from ray import tune

    report = report or tune.report
    get_checkpoint = get_checkpoint or tune.get_checkpoint
    torch.set_num_threads(max(1, threads))
    params = {p.name: config[p.name] for p in space.params if p.name in config}
    trainer = Trainer(space.train_config(params, **run))
    checkpoint = get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            trainer.load_checkpoint(Path(folder) / CHECKPOINT_FILE)
    while not trainer.done:
        record = trainer.train_epoch()
        with tempfile.TemporaryDirectory() as folder:
            trainer.save_checkpoint(Path(folder) / CHECKPOINT_FILE)
            report(trial_metrics(record), checkpoint=tune.Checkpoint.from_directory(folder))
