"""HPO algorithms as a registry of small descriptions: what each builds and how it behaves.

An :class:`Algorithm` says what scheduler and searcher it builds (:meth:`Algorithm.build`), where it
decides (its rung epochs), whether it pauses trials, whether it keeps ``max_concurrent`` trials
running itself and whether another searcher may go with its scheduler. A search reads these and
never asks for a name: the names live here and at the command line's edge. Adding one is one line,
``register_algorithm("mine", Algorithm(...))``, an installed package's entry point
(``[project.entry-points."asp_tune.algorithms"]``), or an import path ``--algo package.module:NAME``.

Nothing here imports Ray until an algorithm is built, so the command line's help stays fast.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any, Callable, NamedTuple

from asp_tune.errors import ConfigError
from asp_tune.imports import is_import_path, resolve
from asp_tune.registry import LazyRegistry


#: trials of a search whose space draws parameters at random, where none is said (``--num-samples``)
SAMPLED_TRIALS = 8


@dataclass(frozen=True)
class Context:
    """What an algorithm is built for: the trials' epochs and the search's knobs, the score to
    optimise, and the parameters (Ray Tune domains; ``space``: the YAML space when there is one)."""

    epochs: int
    num_samples: int = SAMPLED_TRIALS
    max_concurrent: int = 2
    grace_period: int = 1
    reduction_factor: int = 3
    seed: int = 0
    metric: str = "val_accuracy"
    mode: str = "max"
    param_space: dict[str, Any] | None = None
    space: Any = None
    name: str | None = None  # the search's name: its Optuna study's, with optuna_storage
    optuna_storage: str | None = None
    study_settings: dict[str, Any] | None = None  # what the trials train with, kept in that study

    @property
    def grace(self) -> int:
        return min(self.grace_period, self.epochs)


class Built(NamedTuple):
    """A built algorithm: Ray Tune's scheduler and searcher, and the parameter space the Tuner gets
    (empty when the searcher holds the space itself)."""

    scheduler: Any
    searcher: Any
    param_space: dict[str, Any]


def asha_milestones(ctx: Context) -> tuple[int, ...]:
    """ASHA's rung epochs and the last one, by the very expression of Ray's ASHA bracket (so they
    match it bit for bit)."""
    import numpy as np

    rungs = int(np.log(ctx.epochs / ctx.grace) / np.log(ctx.reduction_factor) + 1)
    return tuple(sorted({ctx.grace * ctx.reduction_factor ** k for k in range(rungs)} | {ctx.epochs}))


def geometric_rungs(ctx: Context) -> tuple[int, ...]:
    """``grace * eta^k`` below the last epoch, and the last epoch (Hyperband's and Hyper-Tune's rungs)."""
    from asp_tune.tune.trust import rung_epochs

    return rung_epochs(ctx.grace, ctx.reduction_factor, ctx.epochs)


@dataclass(frozen=True)
class Algorithm:
    """One HPO algorithm.

    ``build(ctx) -> Built``. ``rungs(ctx)``: the epochs where it decides to stop or promote trials
    (None: it never stops one early, and is not multi-fidelity). ``validates_at_rungs``: its
    decisions read scores only at those epochs, so trials validate only there (ASHA, Hyper-Tune);
    otherwise they validate every epoch. ``pauses_trials``: it pauses trials at milestones of its own
    (Hyperband, BOHB), so trials checkpoint every epoch. ``owns_concurrency``: it keeps
    ``max_concurrent`` trials training itself (Ray's limiter would count its paused trials).
    ``own_searcher``: its scheduler only works with its own searcher. ``grid``: it accepts grid
    parameters. ``keeps_study``: it can keep its study in an Optuna journal (``optuna_storage``).
    ``summary(experiment_path, ctx)``: what it adds to ``summary.json``.
    """

    build: Callable[[Context], Built]
    description: str = ""
    rungs: Callable[[Context], tuple[int, ...]] | None = None
    validates_at_rungs: bool = False
    pauses_trials: bool = False
    owns_concurrency: bool = False
    own_searcher: bool = False
    grid: bool = True
    keeps_study: bool = False
    summary: Callable[[str, Context], Any] | None = None

    @property
    def multi_fidelity(self) -> bool:
        return self.rungs is not None

    def rung_epochs(self, ctx: Context) -> tuple[int, ...] | None:
        return None if self.rungs is None else self.rungs(ctx)

    def validation_epochs(self, ctx: Context) -> tuple[int, ...] | None:
        """The epochs at which a trial must validate for this algorithm; None: every epoch."""
        return self.rung_epochs(ctx) if self.validates_at_rungs else None

    def checkpoint_epochs(self, ctx: Context) -> tuple[int, ...] | None:
        """Where trials must checkpoint besides their last epoch: where it can pause or stop them
        (None: every epoch)."""
        if self.pauses_trials:
            return None
        return self.rung_epochs(ctx) or ()

    def stopped_by(self, stopping: "Algorithm") -> "Algorithm":
        """This algorithm's searcher with ``stopping``'s early stopping (``--early-stop``)."""
        def build(ctx: Context) -> Built:
            mine, theirs = self.build(ctx), stopping.build(ctx)
            return Built(theirs.scheduler, mine.searcher, mine.param_space)

        # a searcher other than random reads every report (Ray's OptunaSearch its metric): every epoch validates
        return dataclasses.replace(stopping, build=build, description=f"{self.description} + "
                                                                      f"{stopping.description}",
                                   own_searcher=False, grid=self.grid and stopping.grid,
                                   keeps_study=self.keeps_study,
                                   validates_at_rungs=stopping.validates_at_rungs and self is RANDOM)


# ----------------------------------------------------------------------------- builders


def _target(ctx: Context) -> dict[str, str]:
    return {"metric": ctx.metric, "mode": ctx.mode}


def _random_searcher(ctx: Context, limit: bool = True):
    """Random (and grid) configurations, at most ``ctx.max_concurrent`` trials at once when ``limit`` (Ray Tune
    ignores ``max_concurrent_trials`` beside a searcher handed in). A scheduler that pauses trials until its
    bracket is complete gets no limit: paused trials would count against it."""
    from ray.tune.search import BasicVariantGenerator

    return BasicVariantGenerator(random_state=ctx.seed, max_concurrent=ctx.max_concurrent if limit else 0)


def _fifo(ctx: Context) -> Built:
    from ray.tune.schedulers import FIFOScheduler

    return Built(FIFOScheduler(), _random_searcher(ctx), dict(ctx.param_space or {}))


def _asha(ctx: Context) -> Built:
    from asp_tune.tune.asha import ResumableASHA

    scheduler = ResumableASHA(time_attr="training_iteration", max_t=ctx.epochs, grace_period=ctx.grace,
                              reduction_factor=ctx.reduction_factor, **_target(ctx))
    return Built(scheduler, _random_searcher(ctx), dict(ctx.param_space or {}))


def _hyperband(ctx: Context) -> Built:
    from asp_tune.tune.hyperband import Hyperband

    scheduler = Hyperband(time_attr="training_iteration", max_t=ctx.epochs,
                          reduction_factor=ctx.reduction_factor, **_target(ctx))
    return Built(scheduler, _random_searcher(ctx, limit=False), dict(ctx.param_space or {}))


def _bohb(ctx: Context) -> Built:
    from asp_tune.tune.bohb_search import PlainBOHB
    from asp_tune.tune.hyperband import BohbHyperband

    owned = ctx.space is not None
    searcher = PlainBOHB(space=ctx.space.to_configspace(ctx.seed) if owned else None, seed=ctx.seed, **_target(ctx))
    scheduler = BohbHyperband(time_attr="training_iteration", max_t=ctx.epochs,
                              reduction_factor=ctx.reduction_factor, **_target(ctx))
    return Built(scheduler, searcher, {} if owned else dict(ctx.param_space or {}))


def _tpe(ctx: Context) -> Built:
    import optuna
    from ray.tune.schedulers import FIFOScheduler
    from asp_tune.tune.tpe_search import BestEpochOptunaSearch

    kept: dict[str, Any] = {}
    if ctx.optuna_storage:
        from pathlib import Path

        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        journal = Path(ctx.optuna_storage).expanduser().resolve()
        journal.parent.mkdir(parents=True, exist_ok=True)
        if not ctx.name:
            raise ConfigError("name", ctx.name, "the study's name beside optuna_storage")
        kept = {"storage": JournalStorage(JournalFileBackend(str(journal))), "study_name": ctx.name}
    elif ctx.name:  # in memory: the study still carries the search's name (Optuna's log said "optuna")
        kept = {"study_name": ctx.name}
    owned = ctx.space is not None
    # Tune's domains converted here: handed over as they are, Ray warned each search as of a user's mistake
    space = BestEpochOptunaSearch.convert_search_space(ctx.param_space) if owned and ctx.param_space else None
    searcher = BestEpochOptunaSearch(space=space, epochs=ctx.epochs,
                                     settings=ctx.study_settings, sampler=optuna.samplers.TPESampler(seed=ctx.seed),
                                     **_target(ctx), **kept)
    return Built(FIFOScheduler(), searcher, {} if owned else dict(ctx.param_space or {}))


RANDOM = Algorithm(_fifo, "random search, every trial to the end")
ASHA = Algorithm(_asha, "asynchronous successive halving (random configurations)", rungs=asha_milestones,
                 validates_at_rungs=True)
HYPERBAND = Algorithm(_hyperband, "Hyperband (random configurations)", rungs=geometric_rungs, pauses_trials=True)
BOHB = Algorithm(_bohb, "BOHB: Hyperband with a TPE-like model (needs hpbandster and ConfigSpace)",
                 rungs=geometric_rungs, pauses_trials=True, own_searcher=True, grid=False)
TPE = Algorithm(_tpe, "Optuna's TPE, every trial to the end", grid=False, keeps_study=True)

#: Every HPO algorithm by name (``asp-tune hpo --algo NAME``).
ALGORITHMS = LazyRegistry("algorithm", group="asp_tune.algorithms", entries={
    "hyperband": HYPERBAND, "bohb": BOHB, "asha": ASHA, "hypertune": "asp_tune.tune.hypertune_ray:HYPERTUNE",
    "tpe": TPE, "random": RANDOM,
})

#: What ``--early-stop`` may add to an algorithm that does not stop trials itself.
EARLY_STOPPING = ("none", "asha")


def algorithm_names() -> tuple[str, ...]:
    return tuple(ALGORITHMS)


def register_algorithm(name: str, algorithm: Algorithm | str) -> None:
    """Add (or replace) ``name``: an :class:`Algorithm`, or a ``"module:attribute"`` path to one."""
    ALGORITHMS.register(name, algorithm)


def get_algorithm(name: Any, field: str = "algo") -> Algorithm:
    """The algorithm ``name`` stands for: a registered name or an import path to an :class:`Algorithm`;
    a :class:`ConfigError` naming ``field`` and the registered names otherwise."""
    found = resolve(ALGORITHMS, name, field)
    if not isinstance(found, Algorithm):
        raise ConfigError(field, name, "a registered algorithm or an import path to an "
                                       "asp_tune.tune.algorithms.Algorithm")
    return found


def check_algorithm(field: str, name: Any) -> None:
    """A declared constraint: ``name`` is a registered algorithm, or an import path to one."""
    if isinstance(name, str) and (name in ALGORITHMS or is_import_path(name)):
        get_algorithm(name, field)
        return
    raise ConfigError(field, name, algorithm_names())


#: The word for a search without early stopping, as ``scheduler=`` of :func:`asp_tune.tune.search`.
NO_EARLY_STOPPING = ("fifo", None)


def check_grace_period(grace_period: int, epochs: int, rungs: tuple[int, ...] | None, hint: str) -> None:
    """A grace period that leaves an early-stopping search no rung below its last epoch is refused: no trial
    would be stopped early, and the search would quietly be one without early stopping. ``rungs``: where the
    search's algorithm decides (None: it stops nothing early); ``hint``: how the caller asks for no early
    stopping, in its own words."""
    if rungs is not None and epochs > 1 and grace_period >= epochs and not [r for r in rungs if r < epochs]:
        raise ConfigError("grace_period", grace_period, f"an integer below the epochs ({epochs}) under early "
                                                        f"stopping: at {epochs} or more the search has no rung before "
                                                        f"its last epoch ({hint})")


def as_ours(given: Any) -> Any:
    """``given`` itself, or, when it is exactly one of Ray's classes asp_tune mends (``HyperBandScheduler``,
    ``HyperBandForBOHB``, ``TuneBOHB``), a copy of it as ours with its settings and state
    (:mod:`asp_tune.tune.hyperband`, :mod:`asp_tune.tune.bohb_search`); the object handed in keeps its class."""
    from ray.tune.schedulers import HyperBandForBOHB, HyperBandScheduler
    from ray.tune.search.bohb import TuneBOHB

    from asp_tune.tune.bohb_search import PlainBOHB
    from asp_tune.tune.hyperband import BohbHyperband, Hyperband

    ours = {HyperBandScheduler: Hyperband, HyperBandForBOHB: BohbHyperband, TuneBOHB: PlainBOHB}.get(type(given))
    if ours is None:
        return given
    copied = copy.copy(given)
    copied.__class__ = ours
    return copied


def compose(scheduler: Any, search_alg: Any, ctx: Context) -> tuple[Built, Algorithm]:
    """A user's choice of scheduler and searcher, each a registered name or a Ray Tune object, as one
    built algorithm and the description the search reads (its rungs, concurrency).

    ``scheduler``: ``"fifo"``/None (no early stopping), an algorithm's name (its scheduler; with
    Hyper-Tune or BOHB their own searcher too) or a ``TrialScheduler``. ``search_alg``: None/``"random"``,
    an algorithm's name (its searcher, e.g. ``"tpe"``) or a ``Searcher``/``SearchAlgorithm``.
    """
    from ray.tune.schedulers import TrialScheduler
    from ray.tune.search import SearchAlgorithm, Searcher

    allowed = (f"'fifo', one of {', '.join(algorithm_names())} or a Ray Tune TrialScheduler")
    if isinstance(scheduler, TrialScheduler):
        scheduler = as_ours(scheduler)
        base = dataclasses.replace(RANDOM, rungs=_rungs_of(scheduler, ctx), pauses_trials=True)
        built = Built(scheduler, None, dict(ctx.param_space or {}))
    elif scheduler in NO_EARLY_STOPPING or (isinstance(scheduler, str) and scheduler in ALGORITHMS):
        base = RANDOM if scheduler in NO_EARLY_STOPPING else get_algorithm(scheduler, "scheduler")
        built = base.build(ctx)
    else:
        raise ConfigError("scheduler", scheduler, allowed)
    searcher_given = search_alg not in (None, "random")
    if base.own_searcher and searcher_given:
        raise ConfigError("search_alg", search_alg, f"none with scheduler {scheduler!r} (it proposes its own "
                                                    "configurations)")
    if isinstance(search_alg, (Searcher, SearchAlgorithm)):
        searcher = as_ours(search_alg)
    elif search_alg in (None, "random"):
        # an algorithm that runs every trial to the end with a searcher of its own (tpe) searches with it
        proposes = search_alg is None and base is not RANDOM and plain_fifo(built.scheduler) and built.searcher
        searcher = built.searcher if base.own_searcher or proposes else _random_searcher(ctx, limit=not base.pauses_trials)
    elif isinstance(search_alg, str) and search_alg in ALGORITHMS:
        chosen = get_algorithm(search_alg, "search_alg")
        grids = [k for k, v in (ctx.param_space or {}).items() if isinstance(v, dict) and "grid_search" in v]
        if grids and not chosen.grid:
            raise ConfigError("search_alg", search_alg, f"a searcher that takes grid parameters ('random') for a space "
                                                        f"with grid_search ({', '.join(map(str, grids))})")
        searcher = chosen.build(dataclasses.replace(ctx, space=None)).searcher
    else:
        raise ConfigError("search_alg", search_alg, f"'random', one of {', '.join(algorithm_names())} or a Ray "
                                                    "Tune Searcher")
    return Built(built.scheduler, searcher, dict(ctx.param_space or {})), base


def plain_fifo(scheduler: Any) -> bool:
    """Whether ``scheduler`` stops no trial early: Ray's ``FIFOScheduler`` itself (every other Ray scheduler,
    and any of a user's, derives from it and may)."""
    from ray.tune.schedulers import FIFOScheduler

    return type(scheduler) is FIFOScheduler


def _rungs_of(scheduler: Any, ctx: Context) -> Callable[[Context], tuple[int, ...]] | None:
    """Where a scheduler object decides, in epochs, when it says so and runs trials to the search's last epoch
    (its resource ``training_iteration``, its ``max_t`` the search's epochs): Ray's ASHA, its first bracket's
    milestones; Ray's Hyperband, every bracket's resources as its successive halving raises them. None for
    any other (an audit then decides on full data)."""
    from ray.tune.schedulers import AsyncHyperBandScheduler, HyperBandScheduler

    try:
        if getattr(scheduler, "_time_attr", None) != "training_iteration":
            return None
        if isinstance(scheduler, HyperBandScheduler):
            eta, max_t = scheduler._eta, int(scheduler._max_t_attr)
            milestones = set()
            for s in range(scheduler._s_max_1):
                r = scheduler._get_r0(s)
                for _ in range(s + 1):
                    milestones.add(r)
                    r = int(min(r * eta, max_t))
        elif isinstance(scheduler, AsyncHyperBandScheduler):
            max_t = int(scheduler._max_t)
            milestones = {int(m) for m, _ in scheduler._brackets[0]._rungs}
        else:
            return None
    except (TypeError, IndexError, AttributeError, ValueError):
        return None
    if max_t != ctx.epochs:  # it stops every trial at max_t, or never at the search's last epoch
        return None
    rungs = tuple(sorted({m for m in milestones if 0 < m < ctx.epochs} | {ctx.epochs}))
    return lambda ctx: rungs
