"""One NAS search from settings to results: supernet training with checkpoints, then selection.

``run_search`` is what the CLI, the benchmark and each Ray task call. The space
(:mod:`nas.spaces`) and the searcher (:data:`SEARCHERS`) are objects looked up by name: nothing
here asks which space it searches. A search saves a checkpoint after every supernet epoch;
started again with the same settings and checkpoint path it resumes where it stopped (wall time
already spent is carried over).
"""

from __future__ import annotations

import math
import random
import time
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Hashable

import numpy as np
import pandas as pd

from asp_tune.errors import AspTuneError
from asp_tune.models import count_parameters
from asp_tune.quality import proxy_quality, seed_spread
from nas.checkpoint import train_resumably
from nas.settings import NAS_AUTO_METRIC, SEARCHERS, NasSettings
from nas.spaces import GroundTruthTable, NasSpace


@dataclass
class NasResult:
    summary: dict[str, Any]
    epochs: pd.DataFrame
    candidates: pd.DataFrame  # SPOS: every scored architecture; empty for DARTS
    rank_sample: pd.DataFrame | None = None  # the uniform sample kendall_tau ranks (arch, score, ground truth)


def supernet_trainer(settings: NasSettings):
    """The searcher's trainer for these settings (data loaded, supernet built, nothing trained)."""
    settings.validate()
    return SEARCHERS[settings.searcher]().trainer(settings, settings.search_space)


def run_search(settings: NasSettings, checkpoint: str | Path | None = None,
               on_epoch: Callable[[dict[str, Any]], None] | None = None,
               on_score: Callable[[dict[str, Any]], None] | None = None,
               table: GroundTruthTable | None = None) -> NasResult:
    """Train the supernet (resuming from ``checkpoint`` when it exists), select, look up ground truth."""
    started = time.perf_counter()
    settings.validate()
    space = settings.search_space
    if table is None and settings.ground_truth:
        table = space.load_ground_truth(settings.ground_truth)  # fail before any training
    if table is not None and not _matches(table, settings.train.dataset):
        warnings.warn(f"the ground truth has no accuracies measured on '{settings.train.dataset}' (it holds "
                      f"{', '.join(table.columns)}): its {table.column_for(settings.train.dataset)} is reported, and "
                      "the supernet's rank agreement is measured against another data set", stacklevel=2)
    searcher = SEARCHERS[settings.searcher]()
    trainer = supernet_trainer(settings)
    setup_seconds = time.perf_counter() - started  # the data, the ground truth, the supernet, a static proxy's model
    trainer.validate_each_epoch = settings.monitor
    run = train_resumably(trainer, settings.training_dict(), checkpoint, on_epoch)
    select_start = time.perf_counter()
    arch, found, candidates = searcher.select(trainer, settings, space, on_score)
    select_seconds = time.perf_counter() - select_start
    tied = all_tied(candidates)
    if tied:
        warnings.warn(tied, stacklevel=2)
    rank_start = time.perf_counter()
    sample = rank_sample(searcher, trainer, settings, candidates) if table is not None else None
    rank_seconds = time.perf_counter() - rank_start
    cfg = settings.train
    proxy = trainer.proxy_summary()  # a static proxy's scoring model and subset choice: part of the cost
    proxy_seconds = proxy.get("proxy_seconds", 0.0) + proxy.get("subset_selection_seconds", 0.0)
    summary: dict[str, Any] = {"space": space.name, "searcher": settings.searcher, "arch": space.format(arch),
                               **space.summarise(arch), **found}
    summary.update({
        # what shrinks with the data: training steps, selection and a static proxy's cost; the per-epoch
        # validation (monitor_s), checkpoint writes (checkpoint_s) and the rank sample's scoring apart
        "search_time_s": trainer.train_seconds + select_seconds + proxy_seconds,
        "supernet_train_s": trainer.train_seconds,
        "static_proxy_s": proxy_seconds,
        "selection_s": select_seconds,
        "selection_share": select_seconds / max(trainer.train_seconds + select_seconds, 1e-9),
        "monitor_s": trainer.val_seconds,
        "checkpoint_s": run.checkpoint_seconds,
        "rank_sample_s": rank_seconds,
        "setup_s": setup_seconds,
        # this process's set-up (a static proxy's model trained here, not read from the cache, included) and
        # every session's training: a resumed run's earlier sessions count, their set-up does not
        "wall_time_s": setup_seconds + run.seconds + select_seconds + rank_seconds,
        "data_passes": trainer.samples_seen / trainer.selector.num_samples,
        "samples_seen": trainer.samples_seen,
        "epochs": trainer.epoch,
        "ratio": cfg.ratio, "ratio_schedule": cfg.ratio_schedule, "metric": cfg.metric,
        "strategy": trainer.selector.metric, "seed": cfg.seed,  # metric as asked; strategy as resolved (auto)
        "dataset": cfg.dataset, "data": trainer.data.describe(), "device": str(trainer.device),
        "supernet_parameters": count_parameters(trainer.model),
        "candidates_scored": len(candidates),
        "resumed_from_epoch": run.resumed_from_epoch,
        **proxy,
    })
    if cfg.metric == "auto":
        summary["auto_resolution"] = (f"{trainer.selector.metric}: a search's auto is none where it never leaves "
                                      f"ratio 1, else {NAS_AUTO_METRIC}, which ranked architectures no worse than "
                                      "loss or mixture in this project's measurements (nas.settings.NAS_AUTO_METRIC)")
    if table is not None:
        summary.update(ground_truth_summary(space, table, summary["arch"], candidates, cfg.dataset, sample))
    summary["settings"] = settings.to_dict()
    return NasResult(summary, pd.DataFrame(trainer.history), candidates, sample)


def uniform_sample(space: NasSpace, size: int, seed: int) -> list[Hashable]:
    """``size`` distinct architectures drawn uniformly from ``space`` (all of them if it holds fewer), seeded by
    ``seed`` alone: the same for every ratio, metric and schedule of that seed."""
    rng = random.Random(seed * 2654435761 + 97)
    wanted = size if space.size is None else min(size, space.size)
    drawn: dict[Hashable, None] = {}
    while len(drawn) < wanted:
        drawn[space.random(rng)] = None
    return list(drawn)


def rank_sample(searcher: Any, trainer: Any, settings: NasSettings, candidates: pd.DataFrame) -> pd.DataFrame | None:
    """The supernet's scores of :func:`uniform_sample`'s ``rank_sample`` architectures (columns ``arch``,
    ``score``), those already scored as candidates taken from ``candidates``; None where the searcher scores
    no single architectures or the size is 0."""
    if not settings.rank_sample or not getattr(searcher, "scores_candidates", False):
        return None
    space = settings.search_space
    archs = uniform_sample(space, settings.rank_sample, settings.train.seed)
    known = dict(zip(candidates.get("arch", []), candidates.get("score", [])))
    names = [space.format(a) for a in archs]
    todo = [a for a, n in zip(archs, names) if n not in known]
    known.update(zip((space.format(a) for a in todo), searcher.score(trainer, settings, todo)))
    return pd.DataFrame({"arch": names, "score": [float(known[n]) for n in names]})


def ground_truth_summary(space: NasSpace, table: GroundTruthTable, arch: str, candidates: pd.DataFrame,
                         dataset: str, sample: pd.DataFrame | None = None) -> dict[str, Any]:
    """The found arch's known accuracies, the best possible one, and how well the supernet's scores rank
    architectures (keys prefixed by the space's name, e.g. ``nb201_cifar10_test``): ``kendall_tau`` and the
    other measures of :func:`~asp_tune.quality.proxy_quality` over the uniform ``sample`` (the same for
    every run of a seed), the same with ``_candidates`` over the candidates evolution chose (biased to
    high scores, and different for each run)."""
    prefix = f"{space.name}_"
    out: dict[str, Any] = {prefix + k: v for k, v in _known(table, arch).items()}
    column = table.column_for(dataset)
    best_arch, best_acc = table.best(dataset)
    out.update({"ground_truth_column": prefix + column, "ground_truth_fields": [prefix + c for c in table.columns],
                prefix + "reference_column": column, "ground_truth_matches_dataset": _matches(table, dataset),
                prefix + "best_possible": best_acc, prefix + "best_arch": space.format(best_arch)})
    ranked = [(sample, ""), (candidates, "_candidates")] if sample is not None else [(candidates, "_candidates")]
    unknown = {a for a in [arch, *(a for part, _ in ranked for a in part.get("arch", []))] if not _holds(table, a)}
    if unknown:
        out["ground_truth_unknown"] = len(unknown)
        warnings.warn(f"{len(unknown)} of the architectures found or scored are not in the ground-truth table: "
                      "their accuracies are NaN and they are left out of the rank agreement", stacklevel=2)
    for part, suffix in ranked:
        if not len(part):
            continue
        truth = np.array([_known(table, a)[column] for a in part["arch"]], dtype=float)
        part[prefix + column] = truth
        known = np.isfinite(truth)
        quality = proxy_quality(part["score"].to_numpy()[known], truth[known])
        out.update({f"{name}{suffix}": quality[key] for name, key in QUALITY_FIELDS})
    if sample is not None:
        out["rank_sample_size"] = len(sample)
    return out


#: (summary name, :func:`~asp_tune.quality.proxy_quality` key) of each rank-agreement measure
QUALITY_FIELDS = (("kendall_tau", "kendall_tau"), ("spearman", "spearman"), ("tau_pairs", "n"), ("r2", "r2"),
                  ("good_spearman", "good_spearman"), ("top1_regret", "top1_regret"))


def all_tied(candidates: pd.DataFrame) -> str | None:
    """What to say when every scored candidate has the same score (the supernet tells none apart, so the pick
    is the first scored), else None."""
    scores = candidates["score"] if "score" in candidates else pd.Series(dtype=float)
    if len(scores) < 2 or scores.nunique(dropna=False) > 1:
        return None
    return (f"all {len(scores)} candidates scored {scores.iloc[0]:g}: the supernet tells none apart, so the pick is "
            "the first scored and no rank agreement can be measured; train it longer (more epochs or data)")


def _known(table: GroundTruthTable, arch: str) -> dict[str, float]:
    """``arch``'s accuracies in ``table``, NaN where the table does not hold it."""
    return table.lookup(arch) if _holds(table, arch) else {c: math.nan for c in table.columns}


def _holds(table: GroundTruthTable, arch: str) -> bool:
    if hasattr(type(table), "__contains__"):
        return arch in table
    try:
        table.lookup(arch)
    except (KeyError, LookupError, ValueError, AspTuneError):
        return False
    return True


def _matches(table: GroundTruthTable, dataset: str) -> bool:
    return bool(table.matches(dataset)) if hasattr(table, "matches") else True


def aggregate(summaries: list[dict[str, Any]]) -> dict[str, Any]:
    """Mean and sample standard deviation (``ddof=1``; NaN for one seed) over seeds of every numeric field that all
    summaries have; every other field that all summaries hold alike (the data set, the strategy...) as it is."""
    out: dict[str, Any] = {}
    for key in summaries[0] if summaries else ():
        values = [s.get(key) for s in summaries]
        if key == "seed":
            continue
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values):
            if all(key in s and s[key] == values[0] for s in summaries) and isinstance(values[0], (str, bool)):
                out[key] = values[0]
            continue
        values = [float(v) for v in values if not math.isnan(v)]
        if values:
            out[f"{key}_mean"] = float(np.mean(values))
            out[f"{key}_std"] = seed_spread(values)
    return out


def __getattr__(name: str) -> Any:
    if name == "build_trainer":  # renamed: asp_tune.build.build_trainer is the config's trainer
        import warnings

        warnings.warn("nas.search.build_trainer is deprecated: use nas.search.supernet_trainer", DeprecationWarning,
                      stacklevel=2)
        return supernet_trainer
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
