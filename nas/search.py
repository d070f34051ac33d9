"""One NAS search from settings to results: supernet training with checkpoints, then selection.

``run_search`` is what the CLI, the benchmark and each Ray task call. A search saves a checkpoint
after every supernet epoch; started again with the same settings and checkpoint path it resumes
where it stopped (wall time already spent is carried over).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd
import torch

from asp_tune.config import TrainConfig
from asp_tune.datasets import load_dataset
from asp_tune.errors import ConfigError
from asp_tune.ranking import rank_correlation
from asp_tune.trainer import Trainer
from nas.checkpoint import resume_run, save_run
from nas.darts import DartsTrainer
from nas.darts_space import DartsSearchNetwork, count_parameters
from nas.nb201 import GROUND_TRUTH_COLUMNS, GroundTruth
from nas.nb201_net import Nb201DartsNetwork
from nas.spos import EvolutionSettings, SposTrainer, evolutionary_search

SPACES = ("nb201", "darts")
SEARCHERS = ("spos", "darts")
DEFAULT_CELLS = {"nb201": 5, "darts": 8}  # NB201: cells per stage; DARTS: layers


def default_train_config() -> TrainConfig:
    """Supernet training as NAS-Bench-201 and DARTS set it: SGD 0.025 -> 0.001 cosine, batch 64."""
    return TrainConfig(lr=0.025, lr_min=0.001, weight_decay=3e-4, batch_size=64, epochs=10)


@dataclass
class NasSettings:
    """A search: the space, the searcher, the supernet's training (``train``) and selection settings."""

    space: str = "nb201"
    searcher: str = "spos"
    train: TrainConfig = field(default_factory=default_train_config)
    channels: int = 16
    cells: int | None = None  # NB201 cells per stage (default 5) or DARTS layers (default 8)
    evolution: EvolutionSettings = field(default_factory=EvolutionSettings)
    order: int = 1  # DARTS: 1 first order, 2 second order (unrolled)
    arch_lr: float = 3e-4
    arch_weight_decay: float = 1e-3
    grad_clip: float = 5.0
    nb201_table: str | None = None
    monitor: bool = True  # validate the supernet after every epoch (SPOS: a fresh random path per batch)
    score_samples: int | None = None  # SPOS: held-out images each candidate is scored on (None: auto)

    def validate(self) -> "NasSettings":
        if self.space not in SPACES:
            raise ConfigError("space", self.space, SPACES)
        if self.searcher not in SEARCHERS:
            raise ConfigError("searcher", self.searcher, SEARCHERS)
        if self.searcher == "spos" and self.space != "nb201":
            raise ConfigError("searcher", self.searcher, "'darts' for --space darts (spos runs on nb201)")
        if self.order not in (1, 2):
            raise ConfigError("order", self.order, (1, 2))
        for name in ("channels", "cells"):
            value = getattr(self, name)
            if value is not None and not (isinstance(value, int) and value >= 1):
                raise ConfigError(name, value, "an integer >= 1")
        if self.space == "darts" and self.cells is not None and self.cells < 3:
            raise ConfigError("cells", self.cells, "an integer >= 3 for the DARTS space (two are reduction cells)")
        for name in ("arch_lr", "arch_weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ConfigError(name, value, "a number >= 0")
        if self.score_samples is not None and not (isinstance(self.score_samples, int) and self.score_samples >= 32):
            raise ConfigError("score_samples", self.score_samples, "an integer >= 32, or auto")
        if self.nb201_table is not None and self.space != "nb201":
            raise ConfigError("nb201_table", self.nb201_table, "only with --space nb201")
        self.train.validate()
        self.evolution.validate()
        return self

    @property
    def num_cells(self) -> int:
        return self.cells if self.cells is not None else DEFAULT_CELLS[self.space]

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"] = self.train.to_dict()
        d["cells"] = self.num_cells
        return d

    def with_seed(self, seed: int) -> "NasSettings":
        return dataclasses.replace(self, train=self.train.replace(seed=seed))


@dataclass
class NasResult:
    summary: dict[str, Any]
    epochs: pd.DataFrame
    candidates: pd.DataFrame  # SPOS: every scored architecture; empty for DARTS


def auto_score_samples(settings: NasSettings, num_train: int) -> int:
    """Held-out images per candidate so that scoring costs about 10% of the search.

    A training sample costs about three forward passes (forward and backward), a scored one one:
    scoring ``K`` candidates on ``S`` images costs ``K S``, training ``3 P N`` for ``P`` data passes
    over ``N`` images, so ``K S <= (0.1 / 0.9) 3 P N`` gives ``S = P N / (3 K)`` (at least 256).
    """
    from asp_tune.schedules import RatioSchedule

    cfg, ev = settings.train, settings.evolution
    schedule = RatioSchedule(cfg.ratio, cfg.epochs, cfg.ratio_schedule, cfg.first_epoch_full)
    passes = sum(schedule.count_at(e, num_train) for e in range(cfg.epochs)) / num_train
    candidates = ev.candidates + ev.generations * (ev.mutations + ev.crossovers)
    return max(256, int(passes * num_train / (3 * max(1, candidates))))


def build_trainer(settings: NasSettings) -> Trainer:
    cfg = settings.train
    data = load_dataset(cfg.dataset, cfg.data_dir, val_fraction=cfg.val_fraction, subset=cfg.subset,
                        test_subset=cfg.test_subset, seed=cfg.seed, download=cfg.download)
    if settings.searcher == "spos":
        return SposTrainer(cfg, data, settings.channels, settings.num_cells)
    torch.manual_seed(cfg.seed)
    c, _, _ = data.image_shape
    if settings.space == "nb201":
        model = Nb201DartsNetwork(settings.channels, settings.num_cells, data.num_classes, c)
    else:
        model = DartsSearchNetwork(settings.channels, settings.num_cells, data.num_classes, c)
    return DartsTrainer(cfg, data, model, order=settings.order, arch_lr=settings.arch_lr,
                        arch_weight_decay=settings.arch_weight_decay, grad_clip=settings.grad_clip)


def run_search(settings: NasSettings, checkpoint: str | Path | None = None,
               on_epoch: Callable[[dict[str, Any]], None] | None = None,
               on_score: Callable[[dict[str, Any]], None] | None = None,
               table: GroundTruth | None = None) -> NasResult:
    """Train the supernet (resuming from ``checkpoint`` when it exists), select, look up ground truth."""
    settings.validate()
    if table is None and settings.nb201_table:
        table = GroundTruth.load(settings.nb201_table)  # fail before any training
    trainer = build_trainer(settings)
    trainer.validate_each_epoch = settings.monitor
    checkpoint = Path(checkpoint) if checkpoint else None
    spent = 0.0
    if checkpoint is not None and checkpoint.exists():
        spent = resume_run(checkpoint, settings.to_dict(), trainer)
    start = time.perf_counter()
    while not trainer.done:
        record = trainer.train_epoch()
        record["search_seconds"] = spent + time.perf_counter() - start
        if on_epoch is not None:
            on_epoch(record)
        if checkpoint is not None:
            save_run(checkpoint, settings.to_dict(), trainer, spent + time.perf_counter() - start)
    train_seconds = spent + time.perf_counter() - start
    summary: dict[str, Any] = {"space": settings.space, "searcher": settings.searcher}
    candidates = pd.DataFrame(columns=["arch", "score", "phase", "generation"])
    select_start = time.perf_counter()
    if settings.searcher == "spos":
        wanted = settings.score_samples or auto_score_samples(settings, trainer.selector.num_samples)
        summary["score_samples"] = trainer.set_score_subset(wanted)
        records = evolutionary_search(trainer.score, settings.evolution, settings.train.seed, on_score)
        best = max(records, key=lambda r: r["score"])
        summary["arch"] = str(best["arch"])
        summary["supernet_val_accuracy"] = best["score"]
        candidates = pd.DataFrame([{**r, "arch": str(r["arch"])} for r in records])
    elif settings.space == "nb201":
        summary["arch"] = str(trainer.model.derive())
        summary["alpha"] = trainer.model.alpha.detach().cpu().tolist()
    else:
        genotype = trainer.model.derive()
        summary["genotype"] = genotype.to_dict()
        summary["genotype_str"] = str(genotype)
    select_seconds = time.perf_counter() - select_start
    cfg = settings.train
    summary.update({
        "search_time_s": train_seconds + select_seconds,
        "supernet_train_s": train_seconds,
        "selection_s": select_seconds,
        "selection_share": select_seconds / max(train_seconds + select_seconds, 1e-9),
        "data_passes": trainer.samples_seen / trainer.selector.num_samples,
        "samples_seen": trainer.samples_seen,
        "epochs": trainer.epoch,
        "ratio": cfg.ratio, "ratio_schedule": cfg.ratio_schedule, "metric": cfg.metric, "seed": cfg.seed,
        "dataset": cfg.dataset, "data": trainer.data.describe(), "device": str(trainer.device),
        "supernet_parameters": count_parameters(trainer.model),
        "candidates_scored": len(candidates),
    })
    if settings.space == "nb201" and table is not None:
        summary.update(ground_truth_summary(table, summary["arch"], candidates, cfg.dataset))
    summary["settings"] = settings.to_dict()
    return NasResult(summary, pd.DataFrame(trainer.history), candidates)


def ground_truth_summary(table: GroundTruth, arch: str, candidates: pd.DataFrame, dataset: str) -> dict[str, Any]:
    """The found arch's NAS-Bench-201 accuracies, and how well supernet scores rank the candidates."""
    out: dict[str, Any] = {f"nb201_{k}": v for k, v in table.lookup(arch).items()}
    column = GROUND_TRUTH_COLUMNS.get(dataset, "cifar10_test")
    column = column if column in table.columns else table.columns[0]
    best_arch, best_acc = table.best(dataset)
    out.update({"nb201_reference_column": column, "nb201_best_possible": best_acc,
                "nb201_best_arch": str(best_arch)})
    if len(candidates):
        truth = [table.lookup(a)[column] for a in candidates["arch"]]
        candidates[f"nb201_{column}"] = truth
        corr = rank_correlation(candidates["score"].to_numpy(), truth)
        out.update({"kendall_tau": corr["kendall_tau"], "spearman": corr["spearman"], "tau_pairs": corr["n"]})
    return out


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every numeric summary field."""
    keys = ["search_time_s", "data_passes", "supernet_val_accuracy", "kendall_tau", "spearman",
            "nb201_cifar10_test", "nb201_cifar100_test", "nb201_imagenet16_120_test"]
    out: dict[str, Any] = {}
    for key in keys:
        values = [s[key] for s in summaries if isinstance(s.get(key), (int, float)) and not math.isnan(s[key])]
        if values:
            out[f"{key}_mean"] = float(np.mean(values))
            out[f"{key}_std"] = float(np.std(values))
    return out
