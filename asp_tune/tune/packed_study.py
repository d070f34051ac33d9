"""An Optuna study whose trials train together in packs, in this process: the study's sampler proposes the
configurations, its pruner stops them, and the ones that train at once share one vectorised network
(:class:`~asp_tune.pack.Pack`) on one copy of the data. No Ray, and no process per trial.

::

    study = optuna.create_study(direction="maximize", pruner=optuna.pruners.SuccessiveHalvingPruner(),
                                sampler=optuna.samplers.TPESampler(seed=0))
    packed = asp_tune.tune.optimize_in_packs(study, "search_spaces/digits_mlp.yaml", n_trials=64)
    print(packed.line())
    audit = packed.audit()              # the study's best (and some drawn at random) on full data

Each trial is an ordinary Optuna trial: it is asked for its parameters from the space's distributions,
reports its validation score after every epoch (``trial.report``), leaves when its pruner says so
(``trial.should_prune``) or at its last epoch (``study.tell``), and its place in the pack goes to the next
trial the sampler proposes. The trainers are those of :class:`~asp_tune.tune.pack_server.PackServer`, the
engine of the Ray search's packs too, so a trial's records are those of a run alone.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import math
import numbers
import time
import warnings
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from asp_tune.config import TrainConfig
from asp_tune.constraints import check_value
from asp_tune.errors import ConfigError
from asp_tune.pack import PER_MEMBER, PackChoice, choose_pack_size
from asp_tune.proxy_settings import search_proxy_fields
from asp_tune.tune.optuna_audit import exception_types
from asp_tune.tune.pack_server import PackServer, say_if_nothing_fused
from asp_tune.tune.settings import SEARCH_RATIO, HpoSettings, as_space
from asp_tune.tune.space import SearchSpace
from asp_tune.tune.study_settings import RUN_ATTR, check_settings, settings_tag, trained_settings

#: What a trial may report to its study after each epoch, and the direction the study must optimise it in.
REPORTS = {"val_score": "maximize", "val_loss": "minimize"}
#: Values an Optuna categorical distribution holds as they are; other choices are asked for by their repr.
PLAIN = (type(None), bool, int, float, str)
#: The run fields of a full-data run (the audit's): all the data every epoch, no selection.
FULL_DATA = {"ratio": 1.0, "metric": "none", "ratio_schedule": "constant"}


@dataclass
class PackedStudy:
    """What :func:`optimize_in_packs` did: the study (its trials hold the results), how the packs were chosen,
    the wall time with its breakdown (``startup_s``: building trainers; ``train_s``: training and validation;
    ``study_s``: the sampler and pruner), and how many trial-epochs trained in packs and alone."""

    study: Any
    space: SearchSpace
    run: dict[str, Any]
    pack: PackChoice
    wall_time_s: float
    breakdown: dict[str, float]
    fused_epochs: int
    alone_epochs: int
    notes: list[str] = field(default_factory=list)
    trials: list[Any] = field(default_factory=list)  # this call's trials (frozen), as they ended
    full_data: Any = None  # the StudyAudit that made the pick on full data (None: the proxy's scores picked)
    run_tag: str | None = None  # the tag of this call's run settings in the study (RUN_ATTR); None: not kept

    @property
    def best_params(self) -> dict[str, Any]:
        """The pick: the best on full data where the study was audited, else the study's best proxy score."""
        return self.full_data.best_params if self.full_data is not None else dict(self.study.best_params)

    def line(self) -> str:
        """This call's trials by state, its wall time, how the packs were chosen (and the study's total, where
        it held trials before)."""
        counts: dict[str, int] = {}
        for trial in self.trials:
            counts[trial.state.name.lower()] = counts.get(trial.state.name.lower(), 0) + 1
        states = ", ".join(f"{n} {s}" for s, n in sorted(counts.items()))
        share = self.fused_epochs / max(1, self.fused_epochs + self.alone_epochs)
        held = len(self.study.trials)
        total = f"; the study holds {held}" if held != len(self.trials) else ""
        picked = (f"; picked on full data: {self.full_data.line()}" if self.full_data is not None else
                  "; the pick rests on proxy scores alone (packed.audit() trains it on full data)")
        why = ("" if share >= 1 or self.fused_epochs + self.alone_epochs == 0 else
               f" (the rest alone: a pack takes trials at the same epoch that differ in nothing but "
               f"{', '.join(PER_MEMBER)}; other model_args, or a trial left without such a partner, train alone)")
        return (f"{len(self.trials)} trials ({states or 'none'}) in {self.wall_time_s:.1f} s{total}; "
                f"{self.pack.reason}; {share:.0%} of their epochs trained in packs{why}{picked}")

    def config(self, params: dict[str, Any], **overrides: Any) -> TrainConfig:
        """The run config of a trial's ``params`` (its searched values), with ``overrides`` of the run fields."""
        return self.space.train_config(_searched(self.space, params), **{**self.run, **overrides})

    def full_data_score(self, params: dict[str, Any]) -> float:
        """The last validation score (or loss, as the study reports) of ``params`` trained on all the data, with
        this run's settings (:attr:`run` as it is now)."""
        from asp_tune.build import build_trainer

        trainer = build_trainer(self.config(params, **FULL_DATA))
        while not trainer.done:
            record = trainer.train_epoch()
        return float(record[self.report])

    @property
    def full_data_tag(self) -> str:
        """The tag of the full-data runs' settings (:attr:`run` as it is now, on all the data): the study keeps
        their scores under it, so an audit of this study by any later call with these settings reuses them."""
        first = self.space.first_params()
        return "full-" + settings_tag(trained_settings(self.space, self.space.train_config(
            first, **{**self.run, **FULL_DATA})))

    @property
    def report(self) -> str:
        """The record each trial reports: ``val_score``, or ``val_loss`` in a minimising study."""
        return _report_of(self.study)

    def audit(self, count: int | None = None, catch: Iterable[type[Exception]] | type[Exception] = ()):
        """:func:`asp_tune.tune.audit_study` of the study with :meth:`full_data_score`: the pick made on full
        data, and the proxy measured against it; kept as :attr:`full_data` (so :attr:`best_params` is its pick)
        and returned. Its warnings (a misranking proxy, a pick that lost on full data) are warned. Only the
        study's trials trained with this run's settings take part: another setting's proxy values do not compare
        with theirs (a study resumed with other settings is warned as it starts). Each full-data score is kept
        in the study as it arrives (under :attr:`full_data_tag`): a configuration any audit with these settings
        trained (this call's, a larger one, a later call's on the same study) trains once. ``catch``: errors
        that score a configuration NaN and let the audit go on."""
        from asp_tune.tune.optuna_audit import audit_study

        trials = (None if self.run_tag is None else
                  [t for t in self.study.trials if t.user_attrs.get(RUN_ATTR) == self.run_tag])
        self.full_data = audit_study(self.study, self.full_data_score, count=count, seed=int(self.run.get("seed", 0)),
                                     count_hint="packed.audit(count=N)", trials=trials, catch=catch,
                                     keep_as=self.full_data_tag)  # warns its warnings
        return self.full_data


def optimize_in_packs(study: Any, space: Any, n_trials: int, *, pack_size: int | str = "auto",
                      ratio: float = SEARCH_RATIO, seed: int = 0, device: str = "auto", epochs: int | None = None,
                      timeout: float | None = None, catch: Iterable[type[Exception]] | type[Exception] = (),
                      callbacks: Iterable[Callable[[Any, Any], None]] = (), decide: str = "full",
                      **fields: Any) -> PackedStudy:
    """Run ``n_trials`` trials of ``study`` over ``space`` (a :class:`~asp_tune.tune.space.SearchSpace`, a
    mapping, or a YAML path), each trained on ``ratio`` of the data per epoch, at most ``pack_size`` at once in
    one pack (``auto``: :func:`~asp_tune.pack.choose_pack_size`, timed on the space's first configuration, its
    memory bounded by the largest kind of pack the space makes,
    :meth:`~asp_tune.tune.space.SearchSpace.sizing_configs`; 1: one at a time).

    ``fields``: any other :class:`~asp_tune.config.TrainConfig` field for every trial (``strategy``, or its
    alias ``metric``,
    ``ratio_schedule``, ``first_epoch_full``, ...; not one the space searches); with a pruner, trials start at the
    ratio and ``metric`` ``auto`` is a uniform pick of never-seen samples, as in an early-stopping search (said
    in :attr:`PackedStudy.notes`). Any pruner but ``NopPruner`` counts, Optuna's default ``MedianPruner`` (a
    study created without one) too: create the study with ``pruner=optuna.pruners.NopPruner()`` for the
    strategy of trials that all run to their last epoch.
    ``timeout``: seconds after which no trial starts (those running finish); ``study.stop()`` (from a callback,
    Optuna's ``GridSampler`` or ``MaxTrialsCallback``) does the same. ``catch``: exceptions that fail a trial and
    let the study go on, as in ``study.optimize`` (an error raised in the user's code counts as its own type; a
    diverged trial always fails alone); any other error fails the running trials and is raised once every
    member's epoch is recorded. ``callbacks``: called with ``(study, frozen_trial)`` as each trial ends.
    ``decide``: ``full`` (below ratio 1, the study's best trials and some drawn at random are trained on all the
    data after it, :meth:`PackedStudy.audit`, and ``best_params`` is the best there, with the proxy measured
    against it) or ``proxy`` (the best proxy score picks, unchecked)."""
    import optuna

    started = time.perf_counter()
    if not isinstance(study, optuna.Study):
        raise ConfigError("study", type(study).__name__, "an optuna.Study")
    space = as_space(space)
    report = _report_of(study)
    catch = exception_types(catch)
    callbacks = list(callbacks) if isinstance(callbacks, Iterable) and not callable(callbacks) else callbacks
    if not isinstance(callbacks, list) or not all(callable(c) for c in callbacks):
        raise ConfigError("callbacks", callbacks, "a list of functions callback(study, frozen_trial)")
    if not (isinstance(n_trials, numbers.Integral) and not isinstance(n_trials, bool) and n_trials >= 1):
        raise ConfigError("n_trials", n_trials, "an integer >= 1")
    if not (pack_size == "auto" or (isinstance(pack_size, numbers.Integral) and not isinstance(pack_size, bool)
                                    and pack_size >= 1)):
        raise ConfigError("pack_size", pack_size, "an integer >= 1 or 'auto'")
    if timeout is not None and not (isinstance(timeout, (int, float)) and not isinstance(timeout, bool)
                                    and timeout > 0):
        raise ConfigError("timeout", timeout, "None or seconds > 0")
    check_value(TrainConfig, "ratio", ratio)
    check_value(HpoSettings, "decide", decide)
    if "strategy" in fields:  # the strategy's main name, as ProxyData and search() take it; metric its alias
        if "metric" in fields:
            raise ConfigError("strategy", fields["strategy"], "strategy= or its alias metric=, not both")
        check_value(TrainConfig, "metric", fields["strategy"], "strategy")
        fields["metric"] = fields.pop("strategy")
    known = {f.name for f in dataclasses.fields(TrainConfig)}
    searched = {p.name.split(".", 1)[0] for p in space.params}
    for name in fields:
        if name not in known:
            raise ConfigError(name, fields[name], "a keyword of optimize_in_packs (n_trials, pack_size, ratio, "
                                                  "seed, device, epochs, timeout, catch, callbacks, decide, "
                                                  "strategy) or a TrainConfig field")
        if name in searched:
            raise ConfigError(name, fields[name], f"a field the space does not search (it searches "
                                                  f"{', '.join(p.name for p in space.params)})")
    distributions = _distributions(space)
    pruning = not isinstance(study.pruner, optuna.pruners.NopPruner)
    metric = fields.pop("metric", space.fixed.get("metric", "auto"))
    given = set(fields) | set(space.fixed)
    run = {**fields, "ratio": ratio, "seed": seed, "device": device,
           **({"epochs": epochs} if epochs is not None else {}),
           **search_proxy_fields(ratio, metric, pruning, given, fields.get("ratio_schedule", space.fixed.get(
               "ratio_schedule", "constant")))}
    first = space.train_config(space.first_params(), **run)  # the run fields make a valid TrainConfig: named now

    server = PackServer(space, run, arrays=None, pack_size=1)
    breakdown = {"startup_s": 0.0, "train_s": 0.0, "study_s": 0.0}
    live: dict[str, Any] = {}  # member name -> its Optuna trial
    ended: list[Any] = []  # this call's trials, as told
    asked = 0
    notes: list[str] = []
    fatal: BaseException | None = None  # the error that stops the study, and its trial
    fatal_trial: int | None = None
    tag = check_settings(study, trained_settings(space, first), notes)  # what a trial trains with, less its params
    if pruning and ratio < 1.0:  # optuna.create_study() without a pruner gets MedianPruner: said, not silent
        notes.append(f"the study's {type(study.pruner).__name__} prunes, so its trials take the early-stopping "
                     f"search's data strategy: metric={first.metric!r}, first_epoch_full={first.first_epoch_full} "
                     "(a study created with pruner=optuna.pruners.NopPruner() prunes nothing and takes the strategy "
                     "of trials that all run to their last epoch)")

    def may_start() -> bool:
        return asked < n_trials and not getattr(study, "_stop_flag", False) and (
            timeout is None or time.perf_counter() - started < timeout)

    def ask() -> None:
        nonlocal asked
        tick = time.perf_counter()
        trial = study.ask(distributions)
        trial.set_user_attr(RUN_ATTR, tag)  # the settings it trains with
        breakdown["study_s"] += time.perf_counter() - tick
        asked += 1
        name = live_name(trial)
        live[name] = trial  # before its trainer is built: a failed build fails the trial, never leaves it RUNNING
        tick = time.perf_counter()
        try:
            info = server.join(name, _decoded(space, trial.params))
        except Exception as exc:
            if not _caught(exc, catch):
                raise
            end(name, optuna.trial.TrialState.FAIL, error=exc)
            return
        finally:
            breakdown["startup_s"] += time.perf_counter() - tick
        trial.set_user_attr("device", info["device"])

    def end(name: str, state: Any, value: float | None = None, error: BaseException | None = None,
            call_back: bool = True) -> None:
        trial = live.pop(name)
        if error is not None:
            trial.set_user_attr("error", error.args[0] if isinstance(error, StudyStopped) else
                                f"{type(error).__name__}: {_one_line(error)}")
        tick = time.perf_counter()
        try:
            frozen = study.tell(trial, value, state=state) if value is not None else study.tell(trial, state=state)
        finally:
            breakdown["study_s"] += time.perf_counter() - tick
            server.leave(name)
        ended.append(frozen)
        _log_ended(study, frozen, error)
        for callback in callbacks if call_back else ():
            callback(study, frozen)

    with _in_optimize_loop(study):
        try:
            tick = time.perf_counter()
            choice = None
            if pack_size != "auto":
                choice = choose_pack_size(int(pack_size), n_trials, None)
            else:  # measured on the space's first configuration: a trial's failure decides nothing
                try:
                    server.join("first", space.first_params())
                except Exception as exc:  # that configuration cannot be built: measured on the first trial that is
                    if not _caught(exc, catch):
                        raise
                    notes.append(f"the space's first configuration could not be built ({_one_line(exc)}): the "
                                 "packs are measured on the first trial that builds")
                else:
                    choice = _measured(n_trials, server.trainers["first"], lambda measure: space.sizing_configs(run, measure))
                    server.leave("first")
            breakdown["startup_s"] += time.perf_counter() - tick
            while choice is None and may_start():  # one trial at a time until one builds and is measured
                ask()
                if live:
                    choice = _measured(n_trials, server.trainers[next(iter(live))], lambda measure: space.sizing_configs(run, measure))
            if choice is None:
                choice = PackChoice(1, "no configuration could be built to measure the packs on")
            server.pack_size = choice.size
            waiting = _waits_for_a_finished_trial(study.pruner, study)
            if waiting and choice.size > 1:
                notes.append(f"{type(study.pruner).__name__}'s {waiting}='auto' prunes nothing until a trial "
                             f"finishes, so the first {choice.size} trials (one pack) all train to their last "
                             f"epoch; give it {waiting}")
                warnings.warn(notes[-1], stacklevel=2)
            while True:
                while len(live) < choice.size and may_start():
                    ask()
                if not live:
                    if may_start():
                        continue  # every trial asked for failed to build: ask again
                    break
                tick = time.perf_counter()
                results = server.train(sorted(live))
                breakdown["train_s"] += time.perf_counter() - tick
                reported: dict[str, float] = {}
                for name, record in sorted(results.items()):
                    trial = live[name]
                    if isinstance(record, BaseException):
                        if not _caught(record, catch) and fatal is None:
                            fatal, fatal_trial = record, trial.number
                        end(name, optuna.trial.TrialState.FAIL, error=record, call_back=_caught(record, catch))
                        continue
                    value = float(record[report])
                    for key in ("data_passes", "samples_seen", "epoch"):
                        trial.set_user_attr(key, record[key])
                    if not math.isfinite(value):
                        end(name, optuna.trial.TrialState.FAIL, error=ValueError(f"{report} is {value}"))
                        continue
                    trial.report(value, int(record["epoch"]))
                    reported[name] = value
                # every member reports before any is judged: a pruner compares each with the whole pack's epoch,
                # as it would had they trained one after another, not with those that happened to report first
                for name, value in reported.items():
                    if server.done(name):
                        end(name, optuna.trial.TrialState.COMPLETE, value=value)
                    elif live[name].should_prune():
                        end(name, optuna.trial.TrialState.PRUNED)
                if fatal is not None:
                    raise fatal
        except BaseException as exc:
            why = (f"not finished: the study stopped when trial {fatal_trial} failed ({type(exc).__name__})"
                   if exc is fatal else f"not finished: the study stopped ({type(exc).__name__}: {_one_line(exc)})")
            for name in list(live):  # none left RUNNING in the study, whatever fails on the way
                try:
                    end(name, optuna.trial.TrialState.FAIL, error=StudyStopped(why), call_back=False)
                except Exception:  # noqa: BLE001 - the first error is the one to raise
                    live.pop(name, None)
            raise
    summary = say_if_nothing_fused(server.summary(), choice.size)
    packed = PackedStudy(study, space, run, choice, time.perf_counter() - started, breakdown,
                         summary["fused_epochs"], summary["alone_epochs"], [choice.reason, *notes, *summary["notes"]],
                         trials=ended, run_tag=tag)
    if decide == "full" and ratio < 1.0 and any(t.state == optuna.trial.TrialState.COMPLETE for t in ended):
        tick = time.perf_counter()
        packed.audit()
        packed.breakdown["full_data_s"] = time.perf_counter() - tick
        packed.wall_time_s = time.perf_counter() - started
    return packed


class StudyStopped(Exception):
    """What a running trial is failed with when another error stops the study."""


def _one_line(error: BaseException) -> str:
    """An error's first line."""
    return str(error).splitlines()[0] if str(error) else type(error).__name__


def _log_ended(study: Any, trial: Any, error: BaseException | None) -> None:
    """The line ``study.optimize`` logs as a trial ends (``study.tell`` logs none), through Optuna's logger, so
    ``optuna.logging.set_verbosity`` governs it: finished with its value and parameters (and the best so far),
    pruned, or failed (a warning)."""
    import optuna

    logger = optuna.logging.get_logger(f"optuna.{__name__}")
    if trial.state == optuna.trial.TrialState.FAIL:
        logger.warning(f"Trial {trial.number} failed with parameters: {trial.params} because of the following "
                       f"error: {error!r}.")
    elif trial.state == optuna.trial.TrialState.PRUNED:
        logger.info(f"Trial {trial.number} pruned at epoch {trial.last_step}.")
    elif logger.isEnabledFor(logging.INFO):
        try:
            best = study.best_trial
            said = f" Best is trial {best.number} with value: {best.value}."
        except ValueError:  # no best trial (Optuna says none either)
            said = ""
        logger.info(f"Trial {trial.number} finished with value: {trial.value} and parameters: {trial.params}.{said}")


def _measured(n_trials: int, trainer: Any, others: Sequence[TrainConfig] | Callable[..., Any] = ()) -> PackChoice:
    """:func:`choose_pack_size` ``auto`` on ``trainer`` (and the footprints of ``others``, the space's other kinds
    of pack); one at a time, said, where the measurement fails."""
    try:
        return choose_pack_size("auto", n_trials, trainer, others=others)
    except Exception as exc:  # noqa: BLE001 - a network that cannot be measured trains alone
        return PackChoice(1, f"one configuration at a time: the packs could not be measured ({_one_line(exc)})")


def live_name(trial: Any) -> str:
    """A trial's name in the pack server: its number, zero-padded so names sort as numbers."""
    return f"{trial.number:09d}"


def _caught(error: BaseException, catch: tuple[type[BaseException], ...]) -> bool:
    """Whether ``error`` fails only its trial: a diverged one, or one of ``catch`` (itself, or raised in the
    user's code and wrapped in a :class:`~asp_tune.errors.UserCodeError`)."""
    from asp_tune.trainer import TrainingDiverged

    return isinstance(error, (TrainingDiverged, *catch)) or isinstance(error.__cause__, catch)


@contextlib.contextmanager
def _in_optimize_loop(study: Any):
    """Optuna's own state while ``study.optimize`` runs, so that ``study.stop()`` (called by ``GridSampler``,
    ``MaxTrialsCallback``, a user's callback) asks for no more trials rather than raising."""
    local = getattr(study, "_thread_local", None)
    if local is None or not hasattr(study, "_stop_flag"):  # an Optuna without them: stop() stays refused
        yield
        return
    if getattr(local, "in_optimize_loop", False):
        raise ConfigError("study", "inside study.optimize", "a study not being optimised already (no nesting)")
    study._stop_flag = False
    local.in_optimize_loop = True
    try:
        yield
    finally:
        local.in_optimize_loop = False


def _waits_for_a_finished_trial(pruner: Any, study: Any = None) -> str | None:
    """The setting of Optuna's own ``pruner`` that, left ``auto``, is learnt from the first finished trial
    (nothing is pruned before), or None; None too where ``study`` holds a finished trial with steps (the
    pruner learns it at its first call, as on a second ``optimize_in_packs`` of one study)."""
    import optuna

    if study is not None and any(t.last_step is not None for t in study.get_trials(
            deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))):
        return None
    if isinstance(pruner, optuna.pruners.SuccessiveHalvingPruner) and getattr(pruner, "_min_resource", 1) is None:
        return "min_resource"
    if isinstance(pruner, optuna.pruners.HyperbandPruner) and getattr(pruner, "_max_resource", 1) == "auto":
        return "max_resource"
    return None


def _report_of(study: Any) -> str:
    """What ``study``'s trials report: the validation score for a maximising study, the loss for a minimising
    one; a multi-objective study is refused."""
    directions = [d.name.lower() for d in study.directions]
    if len(directions) != 1:
        raise ConfigError("study", f"{len(directions)} objectives", "a single-objective study")
    return next(r for r, d in REPORTS.items() if d == directions[0])


def _distributions(space: SearchSpace) -> dict[str, Any]:
    """Optuna distributions for the space's parameters (a choice of values Optuna cannot hold is asked for by
    their reprs); grid parameters are refused: a study's sampler draws, it does not cross values."""
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    found: dict[str, Any] = {}
    for p in space.params:
        if p.type in ("loguniform", "uniform"):
            found[p.name] = FloatDistribution(p.low, p.high, log=p.type == "loguniform")
        elif p.type == "int":
            found[p.name] = IntDistribution(int(p.low), int(p.high))
        elif p.type == "choice":
            found[p.name] = CategoricalDistribution(_choices(p.values))
        else:
            raise ConfigError(f"params.{p.name}.type", p.type, "loguniform, uniform, int or choice in a study (its "
                                                               "sampler draws values; optuna.samplers.GridSampler "
                                                               "crosses a choice's values)")
    return found


def _choices(values: tuple[Any, ...]) -> list[Any]:
    return list(values) if all(isinstance(v, PLAIN) for v in values) else [repr(v) for v in values]


def _decoded(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    """A trial's ``params`` with choices asked for by their reprs turned back into the space's values."""
    decoded = dict(params)
    for p in space.params:
        if p.type == "choice" and p.name in params and _choices(p.values) != list(p.values):
            decoded[p.name] = next(v for v in p.values if repr(v) == params[p.name])
    return decoded


def _searched(space: SearchSpace, params: dict[str, Any]) -> dict[str, Any]:
    names = {p.name for p in space.params}
    return {k: v for k, v in _decoded(space, params).items() if k in names}

