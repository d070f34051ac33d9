"""A search, ready to run (:class:`SearchJob`), and a finished one (:class:`SearchResult`): plain data that
:func:`asp_tune.tune.run.run_search` runs and the callers build (:mod:`asp_tune.tune.builtin`,
:mod:`asp_tune.tune.user`, the audit of :mod:`asp_tune.tune.deciding`)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from asp_tune.tune.algorithms import SAMPLED_TRIALS, Built
from asp_tune.tune.settings import HpoSettings


@dataclass
class SearchJob:
    """One search, ready to run.

    ``make_trainable()``: the Ray Tune trainable with its resources (called once Ray runs, since
    ``tune.with_parameters`` needs it). ``built``: the algorithm's scheduler, searcher and the space
    the Tuner gets. ``rungs``: where the algorithm decides (its proxy trust is measured there; None:
    it never stops a trial early). ``max_concurrent``: None when the algorithm keeps it itself.
    ``settings``: what the search was started with, kept beside the experiment; a resume must
    match it in ``resume_keys``. ``summary``: what the caller knows of the run before it starts
    (algorithm, ratio, strategy...); ``summarizers``: more entries read from the finished experiment.
    ``full_data``: how the search ends on full data (:class:`~asp_tune.tune.deciding.FullDataPlan`; its
    ``make_trainable`` then takes ``changes``, the file of the search's ratio changes); None: the
    proxy's scores pick, unchecked.
    """

    make_trainable: Callable[[], Any]
    built: Built
    name: str
    param_names: list[str]
    epochs: int
    metric: str = "val_accuracy"
    mode: str = "max"
    num_samples: int = SAMPLED_TRIALS
    max_concurrent: int | None = HpoSettings.max_concurrent
    total_trials: int | None = None
    budget: dict[str, Any] = field(default_factory=dict)
    rungs: tuple[int, ...] | None = None
    storage_path: str | None = None
    address: str | None = None
    modules: list = field(default_factory=list)
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    max_failures: int = 0
    verbose: int = 0
    label: str = "search"
    settings: dict[str, Any] = field(default_factory=dict)
    resume_keys: tuple[str, ...] = ()
    settings_are_arguments: bool = False  # the settings are search()'s arguments (a refused resume names them so)
    summary: dict[str, Any] = field(default_factory=dict)
    summarizers: dict[str, Callable[[str], Any]] = field(default_factory=dict)
    sparse_reports: bool = False  # some reports carry no score (trials validate only where the algorithm reads)
    keep_checkpoints: bool = False  # a finished search keeps its trials' checkpoints (else only what a resume needs)
    tracking: str = "none"
    tracking_uri: str | None = None
    full_data: Any = None  # a FullDataPlan (asp_tune.tune.deciding): full data decides; None: the proxy picks
    packs: Any = None  # a PackJob (asp_tune.tune.pack_ray): the trials train in pack workers; None: each alone


@dataclass
class SearchResult:
    """A finished search: ``trials``, one row per trial (``trials.csv``); ``summary``, what ``summary.json``
    holds (``best_config``, ``best_score``, ``decided_by``, ``full_data``...); ``histories``, each trial's
    reports by trial id (``trial_epochs.csv``)."""

    def __repr__(self) -> str:  # not every trial's table
        return (f"SearchResult({len(self.trials)} trials, best_config={self.summary.get('best_config')}, "
                f"best_score={self.summary.get('best_score')})")

    trials: pd.DataFrame
    summary: dict[str, Any]
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)


