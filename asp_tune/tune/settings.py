"""The settings of one search with asp_tune's own proxy-data trainable (``asp-tune hpo``, ``compare``, ``demo``).

Each field is declared once, with its default, help, allowed values and constraint; the flags of the
search commands are generated from these fields (:mod:`asp_tune.flags`). The proxy fields (ratio,
schedule, strategy) and the run's seed and device are the declarations of
:class:`~asp_tune.proxy_settings.ProxySettings` and :class:`~asp_tune.config.TrainConfig`, reused
(:func:`asp_tune.flags.reuse`): only the search's default ratio is its own, :data:`SEARCH_RATIO`.
What depends on the algorithm (its rungs, where trials validate and checkpoint) is read from its
registry entry (:mod:`asp_tune.tune.algorithms`), never from its name.
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from asp_tune.config import AUTO_MIN_SPEEDUP, SELECTION_FIELDS, TrainConfig, check_pack
from asp_tune.constraints import Boolean, Check, Interval, OneOf, check_fields
from asp_tune.errors import ConfigError
from asp_tune.flags import both_spellings, option, reuse
from asp_tune.imports import is_import_path, user_modules
from asp_tune.proxy_settings import (AUTO_STATIC_BELOW, RATIO, ProxySettings, ratio_steps, search_proxy_fields,
                                     steps_schedule, trials_start_at_ratio)
from asp_tune.registry import extensions
from asp_tune.tune.algorithms import (ALGORITHMS, EARLY_STOPPING, SAMPLED_TRIALS, Algorithm, Context, algorithm_names,
                                      check_algorithm, check_grace_period, get_algorithm)
from asp_tune.tune.space import SearchSpace

SEARCH, RAY = "search", "Ray"
#: The sampling ratio of a search unless told otherwise (a training run's default is all data,
#: ProxySettings.ratio): the ASP paper's middle ratio, and the one bench/README.md measures most.
SEARCH_RATIO = 0.3
TRACKERS = ("none", "mlflow", "tensorboard", "wandb")
#: The package each tracker needs.
TRACKER_PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboardX", "wandb": "wandb"}
METRIC = "val_accuracy"
#: Who picks a search's configuration (``decide``): full-data scores, or the proxy's alone.
DECISIONS = ("full", "proxy")


def check_tracker(name: str, value: Any) -> None:
    OneOf(lambda: TRACKERS)(name, value)
    if value != "none":
        import importlib.util

        package = TRACKER_PACKAGES[value]
        if importlib.util.find_spec(package) is None:
            raise ConfigError(name, value, f"a tracker whose package is installed (pip install {package})")


@functools.lru_cache(maxsize=64)
def rung_ratio_values(text: str) -> tuple[float, ...]:
    """The ratios of a ``rung_ratios`` text such as ``0.1,0.3,1`` (parsed once per text); a
    :class:`ConfigError` naming ``rung_ratios`` when they are not increasing ratios in (0, 1]."""
    allowed = "increasing ratios in (0, 1], one per rung, comma-separated (e.g. 0.1,0.3,1)"
    try:
        ratios = tuple(float(v) for v in str(text).split(","))
    except ValueError:
        raise ConfigError("rung_ratios", text, allowed) from None
    if not all(RATIO.contains(r) for r in ratios) or any(b <= a for a, b in zip(ratios, ratios[1:])):
        raise ConfigError("rung_ratios", text, allowed)
    return ratios


def check_rung_ratios(name: str, value: Any) -> None:
    if value is not None:
        rung_ratio_values(value if isinstance(value, str) else repr(value))


def check_address(name: str, value: Any) -> None:
    if value is None:
        return
    if not (isinstance(value, str) and (value == "auto" or value.startswith(("ray://", "localhost", "127."))
                                        or ":" in value)):
        raise ConfigError(name, value, "'auto', ray://HOST:PORT or HOST:PORT")


def check_selection(name: str, value: Any) -> None:
    if not isinstance(value, dict):
        raise ConfigError(name, value, "a mapping of selection settings")
    for key in value:
        if key not in SELECTION_FIELDS:
            raise ConfigError(name, key, SELECTION_FIELDS)


def check_journal(name: str, value: Any) -> None:
    """An Optuna journal file: a path whose folder can hold it, not a folder or a device."""
    if value is None:
        return
    from pathlib import Path

    path = Path(str(value)).expanduser()
    if not isinstance(value, str) or not value or path.is_dir() or (path.exists() and not path.is_file()):
        raise ConfigError(name, value, "a journal file path (a file Optuna appends to, not a folder or a device)")
    if "://" in value:  # sqlite:///x.db was made a folder 'sqlite:' holding a journal named x.db
        raise ConfigError(name, value, "a journal file path, not a database URL (Optuna's JournalStorage file; "
                                       "optuna-dashboard opens it)")


def check_audit(decide: str, audit: int | None, proxy_decides: str) -> None:
    """An audit only where full data decides: with the proxy picking (``proxy_decides``, in the caller's words)
    nothing is trained on full data, and an audit asked for would quietly not run."""
    if decide == "proxy" and audit:
        raise ConfigError("audit", audit, f"none or 0 with {proxy_decides} (the proxy picks: nothing is trained on "
                                          "full data)")


def trials_of(space: SearchSpace, num_samples: int | None) -> int:
    """``num_samples`` resolved for ``space`` (None: :data:`SAMPLED_TRIALS`, or one of each configuration of a
    space whose parameters are all grid); repeats of such a space's grid are refused: the built-in trials train
    with the search's one seed, so every repeat would train and score the same as the first."""
    if not space.grid_only:
        return SAMPLED_TRIALS if num_samples is None else num_samples
    if num_samples not in (None, 1):
        raise ConfigError("num_samples", num_samples, f"1 or none for space {space.name!r}, whose parameters are all "
                                                      "grid: its trials train with the search's one --seed, so each "
                                                      "repeat of the grid would train the same configurations again "
                                                      "and score the same (add a sampled parameter, or run another "
                                                      "--seed)")
    return 1


def as_space(space: Any) -> SearchSpace:
    """``space`` as a :class:`~asp_tune.tune.space.SearchSpace`: one as it is, a mapping parsed, a path read."""
    from asp_tune.tune.space import load_space, parse_space

    if isinstance(space, SearchSpace):
        return space
    if isinstance(space, Mapping):
        return parse_space(dict(space))
    if isinstance(space, (str, Path)):
        return load_space(space)
    raise ConfigError("space", type(space).__name__, "a SearchSpace, a mapping with keys name, fixed, params, or the "
                                                     "path of a YAML file")


@dataclass
class HpoSettings:
    """One experiment. Budgets are given as for full data and rescaled by :func:`data_scale`.

    Each field's default, help and allowed values live here; the ``hpo``, ``compare``,
    ``correlate`` and ``demo`` flags are generated from these fields (:mod:`asp_tune.flags`).
    """

    space: SearchSpace | dict[str, Any] | str | Path = option(flag=False)  # read by validate: as_space
    algo: str = option("asha", "search algorithm: a registered one, or an import path package.module:NAME to an "
                               "asp_tune.tune.algorithms.Algorithm", SEARCH, algorithm_names,
                       check=Check(check_algorithm, ("nope", 3)), imports=True)
    ratio: float = reuse(ProxySettings, "ratio", default=SEARCH_RATIO, group=SEARCH,
                         help="sampling ratio (1.0 with --strategy none: full data)")
    ratio_schedule: str = reuse(ProxySettings, "ratio_schedule", group=SEARCH)
    rung_ratios: str | None = option(
        None, "the data ratio as a fidelity: one ratio per rung, increasing, e.g. 0.1,0.3,1 (a promoted trial "
              "continues from its checkpoint on the larger subset with its memory); overrides --ratio and "
              "--ratio-schedule", SEARCH, check=Check(check_rung_ratios, ("0.5,0.3", "0,1", "1.5", "x", 3)))
    metric: str = reuse(ProxySettings, "metric", group=SEARCH,
                        help="subset strategy of proxy runs; auto: the best measured (random, never-seen samples "
                             "first, when trials start at the ratio under early stopping; else, on the ratio or a "
                             f"steps: schedule's lowest step, loss at r >= {AUTO_STATIC_BELOW:g} and fixed_random "
                             "below, random below under a schedule)")
    num_samples: int | None = option(None, f"trials (a space with grid parameters: repeats of its grid); none: "
                                           f"{SAMPLED_TRIALS}, and 1 for a space whose parameters are all grid (its "
                                           "trials train with one --seed, so a repeat would train a configuration "
                                           "again and score the same)", SEARCH,
                                     check=Interval(1, None, integer=True, optional=True))
    max_epochs: int | None = option(None, "epochs per trial (none: the space's)", SEARCH,
                                    check=Interval(1, None, integer=True, optional=True))
    max_concurrent: int = option(2, "trials at once (the paper runs 8); with --pack: packs at once", SEARCH,
                                 check=Interval(1, None, integer=True))
    pack: str = option("1", "configurations of one network trained at once in one process, each still its own trial "
                            "(a pack; its worker holds one trial's CPUs and GPUs, and counts as one trial at once): "
                            "K, or auto (measured on this machine: as many as the device's memory holds, and 1 "
                            f"where a pack's step at the run's batch size is not {AUTO_MIN_SPEEDUP:g}x faster or would "
                            "save less training than starting its trials' processes costs)", RAY, check=Check(check_pack, ("0", "x", 2.5)))
    cpus_per_trial: float = option(1.0, "CPUs per trial", RAY, check=Interval(0.0, None, "right"))
    gpus_per_trial: float = option(0.0, "GPUs per trial; fractions allowed, e.g. 0.25", RAY, check=Interval(0.0, None))
    time_budget_s: float | None = option(None, "full-data wall-time budget; x the data share of a trial's epoch "
                                               "(its ratios' mean, a full first epoch included)", SEARCH,
                                         check=Interval(0.0, None, "right", optional=True))
    data_passes_budget: float | None = option(None, "full-data budget in data passes; x the data share of a trial's "
                                                    "epoch (its ratios' mean, a full first epoch included)", SEARCH,
                                              check=Interval(0.0, None, "right", optional=True))
    early_stop: str = option("none", "add ASHA early stopping to an algorithm that does not stop trials itself "
                                     "(tpe, random)", SEARCH, EARLY_STOPPING, check=OneOf(lambda: EARLY_STOPPING))
    optuna_storage: str | None = option(None, "tpe: keep the Optuna study in this journal file (optuna-dashboard "
                                              "opens it; the study is named after the search, asp-SPACE-rRATIO "
                                              "or the API's name=, so a later search of that space and ratio adds "
                                              "to it, warned where its settings differ)", SEARCH,
                                        check=Check(check_journal, ("/", "", "sqlite:///opt.db")))
    grace_period: int = option(1, "ASHA/Hyperband: epochs before a trial may be stopped", SEARCH,
                               check=Interval(1, None, integer=True))
    reduction_factor: int = option(3, "ASHA/Hyperband: 1/this of the trials go on at each rung", SEARCH,
                                   check=Interval(2, None, integer=True))
    decide: str = option("full", "who picks: full (the top rung of an early-stopping search trains on all the data, "
                                 "other searches end with an audit on full data; the best on full data wins, and the "
                                 "proxy is measured against it) or proxy (the best proxy score wins, unchecked)",
                         SEARCH, DECISIONS, check=OneOf(lambda: DECISIONS))
    audit: int | None = option(None, "configurations trained on full data after the search (beside a full-data top "
                                     "rung, as a promoted trial: the proxy, then the top rung on all the data; none: "
                                     "enough to measure the proxy in a search of 18 or more, else the proxy's best 3 "
                                     "where no top rung decides)", SEARCH,
                               check=Interval(0, None, integer=True, optional=True))
    min_first_rung_steps: int = option(16, "optimiser steps a trial takes before its first rung decides: a longer "
                                           "grace period, then a larger ratio, where it would take fewer (0: as "
                                           "given)", SEARCH, check=Interval(0, None, integer=True))
    seed: int = reuse(TrainConfig, "seed", help="seed of the search and of every trial", group=RAY)
    device: str = reuse(TrainConfig, "device", help="training device of the trials", group=RAY)
    address: str | None = option(None, "Ray cluster: auto, HOST:PORT or ray://HOST:10001 (none: start locally)", RAY,
                                 check=Check(check_address, ("nohost", 3)))
    storage_path: str | None = option(None, "where Ray keeps experiments: a folder every node sees, s3:// or gs:// "
                                            "(none: .OUT.ray beside --out for a local run, else Ray's ~/ray_results)",
                                      RAY)
    name: str | None = option(None, flag=False)
    verbose: int = option(1, "0: no progress bar (notices and warnings stay); 1: one progress bar per search; "
                             "2: Ray Tune's own tables and logs", RAY,
                          check=OneOf(lambda: (0, 1, 2)))
    selection: dict[str, Any] = option(flag=False, default_factory=dict,  # SELECTION_FIELDS given as flags
                                       check=Check(check_selection, ({"nope": 1}, 3)))
    tracking: str = option("none", "hand the run to Ray Tune's own tracking callback: mlflow, tensorboard or wandb "
                                   "(the package must be installed)", RAY, TRACKERS,
                           check=Check(check_tracker, ("nope", 3)))
    tracking_uri: str | None = option(None, "mlflow: the tracking URI (none: MLflow's own default or "
                                            "$MLFLOW_TRACKING_URI); wandb: the project (none: the experiment's name)",
                                      RAY)
    max_failures: int | None = option(None, "retry a failed trial this often from its last checkpoint (a lost "
                                            "node); -1: forever; none: 3 on a cluster (--address), 0 locally", RAY,
                                      check=Interval(-1, None, integer=True, optional=True))
    checkpoint_every_s: float = option(60.0, "a trial checkpoints where its scheduler can pause or stop it, at its "
                                             "last epoch, and once this many seconds passed since its last "
                                             "checkpoint; 0: after every epoch", RAY, check=Interval(0.0, None))
    keep_checkpoints: bool = option(False, "keep the trials' checkpoints of a finished search (by default only what a "
                                           "resume needs stays: a finished search needs none)", RAY,
                                    check=Boolean())

    def validate(self) -> "HpoSettings":
        """Every declared constraint, then the rules between fields; returns self."""
        self.space = as_space(self.space)
        if isinstance(self.rung_ratios, (tuple, list)):  # as numbers from Python: the text a flag would hold
            self.rung_ratios = ",".join(f"{float(r):g}" for r in self.rung_ratios)
        if isinstance(self.pack, int) and not isinstance(self.pack, bool):  # from Python: the text a flag holds
            self.pack = str(self.pack)
        check_fields(self)
        self.num_samples = trials_of(self.space, self.num_samples)
        algorithm = self.algorithm
        if self.optuna_storage is not None and not algorithm.keeps_study:
            raise ConfigError("optuna_storage", self.optuna_storage, "none unless the algorithm keeps an Optuna "
                                                                     "study (--algo tpe)")
        if self.early_stop != "none" and get_algorithm(self.algo).multi_fidelity:
            raise ConfigError("early_stop", self.early_stop, f"none with --algo {self.algo}, which stops trials "
                                                             "itself (--early-stop adds ASHA to tpe and random)")
        smallest = self.smallest_pack_for_all_trials()
        if self.pack not in ("1", "auto") and smallest is not None and int(self.pack) < smallest:
            raise ConfigError("pack", self.pack, f"1, auto, or at least {smallest} with --algo {self.algo} and "
                                                 f"--max-concurrent {self.max_concurrent}: it pauses trials and sets "
                                                 f"no limit on trials at once, so a packed search starts all "
                                                 f"{self.total_trials} trials together, and "
                                                 f"its packs must hold them")
        check_audit(self.decide, self.audit, "--decide proxy")
        check_grace_period(self.grace_period, self.epochs, self.rungs(), "a search without early stopping is "
                                                                          "--algo random or tpe without --early-stop")
        if self.space.has_grid and not algorithm.grid:
            raise ConfigError("algo", self.algo, "an algorithm that takes grid parameters (random, hyperband or asha) "
                                                 "for a space with grid parameters")
        if self.rung_ratios is not None:
            self._apply_rung_ratios()
        first = self.trial_config()  # the fixed settings plus the run's flags must make a valid TrainConfig
        from asp_tune.models import check_model_args

        models = next((p.values for p in self.space.params if p.name == "model"), None) or [first.model]
        for model in models:  # a misspelled model_args key: named now, not in every trial
            check_model_args(model, dict(first.model_args))
        if self.address is None:  # a local run: the device must exist here
            from asp_tune.device import resolve_device

            resolve_device(self.device)
        return self

    @property
    def algorithm(self) -> Algorithm:
        """The registered algorithm, with ``early_stop``'s early stopping added when asked."""
        found = get_algorithm(self.algo)
        return found if self.early_stop == "none" else found.stopped_by(ALGORITHMS[self.early_stop])

    def context(self, metric: str = METRIC, pack_size: int = 1) -> Context:
        """What the algorithm is built for (:meth:`asp_tune.tune.algorithms.Algorithm.build`), optimising
        ``metric`` (:meth:`score_metric`), with ``pack_size`` trials in each of ``max_concurrent`` packs."""
        return Context(self.epochs, num_samples=self.num_samples, max_concurrent=self.max_concurrent * pack_size,
                       grace_period=self.grace_period, reduction_factor=self.reduction_factor, seed=self.seed,
                       metric=metric, mode="max", param_space=self.space.to_tune(), space=self.space,
                       name=self.study_name, optuna_storage=self.optuna_storage,
                       study_settings=self.study_settings(metric) if self.optuna_storage else None)

    @property
    def study_name(self) -> str:
        """The name of the search's Optuna study (``--optuna-storage``): ``name``, else ``asp-SPACE-rRATIO``."""
        return self.name or f"asp-{self.space.name}-r{self.ratio}"

    def study_settings(self, metric: str) -> dict[str, Any]:
        """What the search's trials train with (less the searched values) and how it searches, as its Optuna
        study keeps them: a later search of the same study name with other settings is warned."""
        from asp_tune.tune.study_settings import trained_settings

        return trained_settings(self.space, self.trial_config(), algo=self.algo, early_stop=self.early_stop,
                                grace_period=self.grace_period, reduction_factor=self.reduction_factor,
                                rung_ratios=self.rung_ratios, objective=metric)

    def score_metric(self, float_targets: bool = False) -> str:
        """What the search optimises: the validation score of the trials' task (``val_accuracy`` for
        classification, ``val_r2`` for regression; ``auto`` decides by whether the targets are floats)."""
        from asp_tune.registry import TASKS

        task = self.trial_config().task
        name = ("regression" if float_targets else "classification") if task == "auto" else task
        return f"val_{TASKS[name].score_name}"

    def failures_allowed(self) -> int:
        """Retries of a failed trial: ``max_failures``, or by default 3 on a cluster and 0 locally
        (where a failure is a bug to see at once, not a lost node)."""
        if self.max_failures is not None:
            return self.max_failures
        return 3 if self.address else 0

    @property
    def epochs(self) -> int:
        return self.max_epochs or int(self.space.fixed.get("epochs", TrainConfig.epochs))

    @property
    def early_stopping(self) -> bool:
        return self.algorithm.multi_fidelity

    def _apply_rung_ratios(self) -> None:
        """``ratio`` and ``ratio_schedule`` from ``rung_ratios``: the first rung's ratio until the first
        rung's epoch, then each next ratio from the rung before it."""
        if not self.early_stopping:
            raise ConfigError("rung_ratios", self.rung_ratios, "none unless --algo is one of "
                              f"{', '.join(n for n in algorithm_names() if ALGORITHMS[n].multi_fidelity)} or "
                              "--early-stop asha is given (ratios need rungs)")
        ratios, rungs = rung_ratio_values(self.rung_ratios), self.rungs()
        if len(ratios) != len(rungs):
            raise ConfigError("rung_ratios", self.rung_ratios, f"{len(rungs)} ratios, one per rung at epochs "
                                                               f"{', '.join(map(str, rungs))}")
        if self.metric in ("none", "infobatch") and ratios[0] < 1.0:  # not its ratio, which the rungs replace
            raise ConfigError("metric", self.metric, f"a strategy that selects subsets: "
                                                     f"{both_spellings('rung_ratios', self.rung_ratios)} trains the "
                                                     f"first rung at ratio {ratios[0]:g}, and '{self.metric}' runs at "
                                                     "ratio 1.0 only")
        steps = steps_schedule(list(zip(rungs[:-1], ratios[1:])))
        if self.ratio_schedule not in ("constant", steps):
            raise ConfigError("ratio_schedule", self.ratio_schedule, "constant with --rung-ratios")
        self.ratio, self.ratio_schedule = ratios[0], steps

    def fit_first_rung(self, train_samples: int) -> dict[str, Any] | None:
        """Lengthen the first rung to ``min_first_rung_steps`` optimiser steps over ``train_samples``
        (:func:`asp_tune.tune.fulldata.fit_first_rung`): a longer grace period, then a larger ratio. Returns
        what changed, with the steps before and after (None: nothing). A search on full data gets the longer grace
        period too (its ratio has nowhere to rise): in ``compare`` it kept rungs 1, 3, 6 where its proxies ran
        2, 6, so the two were different searches."""
        from asp_tune.tune.fulldata import first_rung_steps, fit_first_rung

        if not (self.min_first_rung_steps and self.early_stopping and self.rung_ratios is None):
            return None
        batch = self.trial_config().batch_size
        grace, ratio = fit_first_rung(self.ratio, self.grace_period, self.reduction_factor, self.epochs,
                                      train_samples, batch, self.min_first_rung_steps)
        if (grace, ratio) == (self.grace_period, self.ratio):
            return None
        change = {"grace_period": [self.grace_period, grace], "ratio": [self.ratio, ratio],
                  "steps": [first_rung_steps(self.ratio, self.grace_period, train_samples, batch),
                            first_rung_steps(ratio, grace, train_samples, batch)],
                  "minimum": self.min_first_rung_steps, "train_samples": train_samples, "batch_size": batch}
        self.grace_period, self.ratio = grace, ratio
        return change

    def end_on_full_data(self) -> bool:
        """With ``decide`` full, an early-stopping search trains its top rung on all the data (a promoted trial
        continues from its checkpoint at ratio 1, as ``rung_ratios`` ending in 1 does); returns whether its
        top rung is on full data."""
        from asp_tune.tune.fulldata import full_data_top_rung

        schedule = full_data_top_rung(self.trial_config(), self.rungs(), self.decide)
        if schedule is not None:
            self.ratio_schedule = schedule
        return schedule is not None

    def run_fields(self) -> dict[str, Any]:
        """The fields every trial takes from the command rather than the space (selection settings
        given as flags override the space's ``fixed`` ones).

        With an early-stopping scheduler most trials stop after a rung or two, so unless told
        otherwise a proxy trial does not spend a full first pass: its first epochs take never-seen
        samples first (``unseen_first``) at the ratio.
        """
        run = {**self.selection, "ratio": self.ratio, "ratio_schedule": self.ratio_schedule, "seed": self.seed,
               "device": self.device, "epochs": self.epochs}
        return {**run, **search_proxy_fields(self.ratio, self.metric, self.early_stopping, self._given(),
                                             self.ratio_schedule)}

    def _given(self) -> set[str]:
        """The selection fields the user set: as flags, or in the space's ``fixed``."""
        return set(self.selection) | set(self.space.fixed)

    @property
    def starts_at_ratio(self) -> bool:
        """Whether trials skip the full first pass (early stopping, unless the first epoch is set)."""
        return trials_start_at_ratio(self.ratio, self.early_stopping, self._given())

    def resolved_metric(self) -> str:
        """``metric``, with ``auto`` made the best measured choice (:func:`auto_strategy`): ``none`` at
        ratio 1, a uniform pick of never-seen samples when trials start at the ratio, else the
        importance metric under the calibrated rule."""
        return search_proxy_fields(self.ratio, self.metric, self.early_stopping, self._given(),
                                   self.ratio_schedule)["metric"]

    def user_modules(self) -> list:
        """The user's modules this search's trials import: those its import paths name (model, data set,
        strategy, scoring model) and those that define what the driver registered."""
        names = [self.metric, *(self.space.fixed.get(k) for k in ("model", "dataset", "proxy_model", "metric"))]
        names += [v for p in self.space.params if p.name in ("model", "dataset") for v in p.values]
        registered = [e for added in extensions().values() for e in added.values()]
        return user_modules([n for n in names if is_import_path(n)] + registered)

    def rungs(self) -> tuple[int, ...] | None:
        """The epochs where this search's early stopping decides (None without early stopping)."""
        return self.algorithm.rung_epochs(self.context())

    def trial_config(self) -> TrainConfig:
        first = self.space.first_params()
        return self.space.train_config(first, **self.run_fields())

    def validation_epochs(self) -> tuple[int, ...] | None:
        """The epochs at which a trial must validate for the algorithm; None: every epoch. A budget
        (time, data passes) can stop a trial at any epoch, so then every epoch validates."""
        if self.time_budget_s is not None or self.data_passes_budget is not None:
            return None
        return self.algorithm.validation_epochs(self.context())

    def checkpoint_epochs(self) -> tuple[int, ...] | None:
        """The epochs after which a trial checkpoints besides its last one and ``checkpoint_every_s``:
        where its algorithm can pause or stop it. None: after every epoch."""
        if self.checkpoint_every_s == 0:
            return None
        return self.algorithm.checkpoint_epochs(self.context())

    def data_scale(self) -> float:
        """:func:`data_scale` of this search's trials."""
        return data_scale(self.trial_config().proxy_settings(), self.epochs)

    @property
    def total_trials(self) -> int:
        """Trials the search runs: ``num_samples`` of each point of the space's grid."""
        return self.num_samples * self.space.grid_size()

    def smallest_pack_for_all_trials(self) -> int | None:
        """For an algorithm that pauses trials (its searcher sets no limit on trials at once, and packed trials
        reserve no CPU, so all of them start together): the smallest pack that holds every trial in
        ``--max-concurrent`` packs. None for the others (their searchers keep ``--pack`` x ``--max-concurrent``)."""
        if not self.algorithm.pauses_trials:
            return None
        return -(-self.total_trials // self.max_concurrent)

    def budget(self) -> dict[str, Any]:
        """Nominal (full-data) and rescaled budgets (:func:`rescaled_budget`)."""
        return rescaled_budget(self.data_scale(), self.time_budget_s, self.data_passes_budget, self.num_samples,
                               self.epochs, self.total_trials * self.epochs)

    def to_dict(self) -> dict[str, Any]:
        """Plain values (the space as its name, fixed settings and parameters), for summaries and resume."""
        d = asdict(self)
        d["space"] = {"name": self.space.name, "fixed": self.space.fixed,
                      "params": [asdict(p) for p in self.space.params]}
        return d


def data_scale(proxy: ProxySettings, epochs: int) -> float:
    """The share of the data a trial's epoch costs, by which budgets are rescaled: the mean over a run of
    ``epochs`` of the share each epoch of the strategy ``proxy`` names takes (its ratio, with a schedule's
    changes, a top rung on all the data and a full first epoch where it takes them; a static subset's ratio:
    0.19 for 10 epochs at r = 0.1 after a full first one, where scaling by the ratio bought about half the
    trials the full-data budget does). One rule for the command line and :func:`asp_tune.tune.search`."""
    if proxy.ratio >= 1.0:
        return 1.0
    from asp_tune.strategies import make_strategy

    return make_strategy(proxy.metric, proxy).data_share(epochs)


def rescaled_budget(scale: float, time_budget_s: float | None, data_passes: float | None, num_samples: int,
                    epochs: int, passes_if_all_finish: float | None = None) -> dict[str, Any]:
    """Nominal (full-data) and rescaled budgets: at a data scale below 1 every budget becomes that share."""
    return {
        "scale": scale,
        "num_trials": num_samples,
        "max_epochs_per_trial": epochs,
        "nominal_time_budget_s": time_budget_s,
        "time_budget_s": None if time_budget_s is None else time_budget_s * scale,
        "nominal_data_passes": data_passes,
        "data_passes": None if data_passes is None else data_passes * scale,
        "nominal_data_passes_if_all_trials_finish": passes_if_all_finish if passes_if_all_finish is not None
        else num_samples * epochs,
        "scheduler_resource": "training_iteration (one epoch, costing about r data passes)",
    }


def settings_dict(s: HpoSettings) -> dict[str, Any]:
    return s.to_dict()
