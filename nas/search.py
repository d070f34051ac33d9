"""One NAS search from settings to results: supernet training with checkpoints, then selection.

``run_search`` is what the CLI, the benchmark and each Ray task call. The space
(:mod:`nas.spaces`) and the searcher (:data:`SEARCHERS`) are objects looked up by name: nothing
here asks which space it searches. A search saves a checkpoint after every supernet epoch;
started again with the same settings and checkpoint path it resumes where it stopped (wall time
already spent is carried over).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import numpy as np
import pandas as pd

from asp_tune.config import TrainConfig
from asp_tune.errors import ConfigError
from asp_tune.flags import option, optional
from asp_tune.models import count_parameters
from asp_tune.ranking import rank_correlation
from nas.checkpoint import train_resumably
from nas.darts import DartsSearch
from nas.spaces import GroundTruthTable, NasSpace, get_space, space_names
from nas.spos import EvolutionSettings, SposSearch

#: Searchers by name; each builds its trainer for a space and selects an architecture afterwards.
SEARCHERS = {"spos": SposSearch(), "darts": DartsSearch()}


def default_train_config() -> TrainConfig:
    """Supernet training as NAS-Bench-201 and DARTS set it: SGD 0.025 -> 0.001 cosine, batch 64."""
    return TrainConfig(lr=0.025, lr_min=0.001, weight_decay=3e-4, batch_size=64, epochs=10)


SEARCH, DARTS = "search", "DARTS searcher"


def _cells_help() -> str:
    return "; ".join(f"{get_space(n).name}: {get_space(n).cells_help} (default {get_space(n).default_cells})"
                     for n in space_names())


@dataclass
class NasSettings:
    """A search: the space, the searcher, the supernet's training (``train``) and selection settings.

    Each field's default, help and allowed values live here; ``asp-tune nas`` generates its flags
    from these fields and from :class:`~nas.spos.EvolutionSettings` (:mod:`asp_tune.flags`).
    """

    space: str = option("nb201", "search space (a registered name, see nas.spaces)", SEARCH, space_names)
    searcher: str | None = option(None, lambda: "searcher (none: the space's own: " + ", ".join(
        f"{get_space(n).default_searcher} on {n}" for n in space_names()) + ")", SEARCH, lambda: tuple(SEARCHERS))
    train: TrainConfig = option(flag=False, default_factory=default_train_config)
    channels: int = option(16, "supernet width C (16 in both papers)", SEARCH)
    cells: int | None = option(None, _cells_help, SEARCH)
    evolution: EvolutionSettings = option(flag=False, default_factory=EvolutionSettings)
    order: int = option(1, "1 first order, 2 second order (unrolled)", DARTS, (1, 2))
    arch_lr: float = option(3e-4, "architecture learning rate (Adam)", DARTS)
    arch_weight_decay: float = option(1e-3, "architecture weight decay", DARTS)
    grad_clip: float = option(5.0, "gradient-norm clip of the network weights (0: off)", DARTS)
    ground_truth: str | None = option(None, "a table of known accuracies for spaces that have one: for nb201 the "
                                            "NAS-Bench-201 CSV (arch, cifar10_test, cifar100_test, "
                                            "imagenet16_120_test)", SEARCH, aliases=("--nb201-table",))
    monitor: bool = option(True, "validate the supernet after each epoch (SPOS: a fresh random path per batch; "
                                 "costs one pass over the val split)", SEARCH)
    score_samples: int | None = option(None, "SPOS: held-out images each candidate is scored on (the same seeded "
                                             "subset for all); auto: sized so scoring takes about 10% of the search",
                                       SEARCH, kind=optional(int, ("auto", "none", "")))

    def validate(self) -> "NasSettings":
        space = self.search_space  # an unknown space is an error naming the registered ones
        if self.searcher is None:
            self.searcher = space.default_searcher
        if self.searcher not in SEARCHERS:
            raise ConfigError("searcher", self.searcher, tuple(SEARCHERS))
        if self.order not in (1, 2):
            raise ConfigError("order", self.order, (1, 2))
        if not (isinstance(self.channels, int) and self.channels >= 1):
            raise ConfigError("channels", self.channels, "an integer >= 1")
        if self.cells is not None and not (isinstance(self.cells, int) and self.cells >= space.min_cells):
            raise ConfigError("cells", self.cells, f"an integer >= {space.min_cells} for the {space.name} space "
                                                   f"({space.cells_help})")
        for name in ("arch_lr", "arch_weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ConfigError(name, value, "a number >= 0")
        if self.score_samples is not None and not (isinstance(self.score_samples, int) and self.score_samples >= 32):
            raise ConfigError("score_samples", self.score_samples, "an integer >= 32, or auto")
        if self.ground_truth is not None and not space.has_ground_truth:
            raise ConfigError("ground_truth", self.ground_truth, f"no table: the {space.name} space has none")
        self.train.validate()
        self.evolution.validate(space.size)
        return self

    @property
    def search_space(self) -> NasSpace:
        return get_space(self.space)

    @property
    def num_cells(self) -> int:
        return self.cells if self.cells is not None else self.search_space.default_cells

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


def build_trainer(settings: NasSettings):
    """The searcher's trainer for these settings (data loaded, supernet built, nothing trained)."""
    settings.validate()
    return SEARCHERS[settings.searcher].trainer(settings, settings.search_space)


def run_search(settings: NasSettings, checkpoint: str | Path | None = None,
               on_epoch: Callable[[dict[str, Any]], None] | None = None,
               on_score: Callable[[dict[str, Any]], None] | None = None,
               table: GroundTruthTable | None = None) -> NasResult:
    """Train the supernet (resuming from ``checkpoint`` when it exists), select, look up ground truth."""
    settings.validate()
    space = settings.search_space
    if table is None and settings.ground_truth:
        table = space.load_ground_truth(settings.ground_truth)  # fail before any training
    searcher = SEARCHERS[settings.searcher]
    trainer = build_trainer(settings)
    trainer.validate_each_epoch = settings.monitor
    train_seconds = train_resumably(trainer, settings.to_dict(), checkpoint, on_epoch)
    select_start = time.perf_counter()
    arch, found, candidates = searcher.select(trainer, settings, space, on_score)
    select_seconds = time.perf_counter() - select_start
    cfg = settings.train
    summary: dict[str, Any] = {"space": space.name, "searcher": settings.searcher, "arch": space.format(arch),
                               **space.summarise(arch), **found}
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
    if table is not None:
        summary.update(ground_truth_summary(space, table, summary["arch"], candidates, cfg.dataset))
    summary["settings"] = settings.to_dict()
    return NasResult(summary, pd.DataFrame(trainer.history), candidates)


def ground_truth_summary(space: NasSpace, table: GroundTruthTable, arch: str, candidates: pd.DataFrame,
                         dataset: str) -> dict[str, Any]:
    """The found arch's known accuracies, the best possible one, and how well the supernet's scores
    rank the candidates (keys prefixed by the space's name, e.g. ``nb201_cifar10_test``)."""
    prefix = f"{space.name}_"
    out: dict[str, Any] = {prefix + k: v for k, v in table.lookup(arch).items()}
    column = table.column_for(dataset)
    best_arch, best_acc = table.best(dataset)
    out.update({"ground_truth_column": prefix + column, "ground_truth_fields": [prefix + c for c in table.columns],
                prefix + "reference_column": column,
                prefix + "best_possible": best_acc, prefix + "best_arch": space.format(best_arch)})
    if len(candidates):
        truth = [table.lookup(a)[column] for a in candidates["arch"]]
        candidates[prefix + column] = truth
        corr = rank_correlation(candidates["score"].to_numpy(), truth)
        out.update({"kendall_tau": corr["kendall_tau"], "spearman": corr["spearman"], "tau_pairs": corr["n"]})
    return out


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and standard deviation over seeds of every numeric field that all summaries have."""
    out: dict[str, Any] = {}
    for key in summaries[0] if summaries else ():
        values = [s.get(key) for s in summaries]
        if key == "seed" or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            continue
        values = [float(v) for v in values if not math.isnan(v)]
        if values:
            out[f"{key}_mean"] = float(np.mean(values))
            out[f"{key}_std"] = float(np.std(values))
    return out
