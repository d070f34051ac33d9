"""Hyper-Tune's thin Ray Tune adapters: a scheduler and a searcher over one shared
:class:`~asp_tune.tune.hypertune.HyperTune` state."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler
from ray.tune.search import Searcher

from asp_tune.errors import ConfigError
from asp_tune.tune.algorithms import Algorithm, Built, Context, geometric_rungs
from asp_tune.tune.hypertune import HyperTune
from asp_tune.tune.progress import publish_trial_logs
from asp_tune.tune.surrogate import UnitSpace


class HyperTuneScheduler(TrialScheduler):
    """Ray Tune scheduler of :class:`HyperTune`: pauses a trial at each rung of its bracket, resumes it
    when D-ASHA promotes it, and stops what is left once every configuration has been tried."""

    def __init__(self, state: HyperTune):
        super().__init__()
        self.state = state
        self._trials: dict[str, Any] = {}
        self._metric, self._mode = state.metric, state.mode

    def set_search_properties(self, metric, mode, **spec) -> bool:
        if metric:
            self.state.metric = self._metric = metric
        if mode:
            self.state.mode = self._mode = mode
        return True

    def on_trial_add(self, tune_controller, trial) -> None:
        tid = trial.trial_id
        self._trials[tid] = trial
        if tid in self.state.bracket_of:  # restored by --resume
            if tid in self.state.waiting and trial.status == Trial.PENDING:
                trial.set_status(Trial.PAUSED)  # it waits for its promotion, as before the driver died
            elif tid not in self.state.waiting and tid not in self.state.finished:
                self.state.active.add(tid)
            return
        self.state.add(tid)

    def on_trial_result(self, tune_controller, trial, result: dict) -> str:
        decision = self.state.result(trial.trial_id, int(result.get(self.state.time_attr, 0)), result)
        return {"continue": self.CONTINUE, "pause": self.PAUSE, "stop": self.STOP}[decision.action]

    def on_trial_complete(self, tune_controller, trial, result: dict) -> None:
        if result:
            self.state.result(trial.trial_id, int(result.get(self.state.time_attr, 0)), result)
        self.state.remove(trial.trial_id)

    def on_trial_error(self, tune_controller, trial) -> None:
        self.state.remove(trial.trial_id)

    def on_trial_remove(self, tune_controller, trial) -> None:
        self.state.remove(trial.trial_id)

    def choose_trial_to_run(self, tune_controller):
        state = self.state
        due = state.next_promotion() if len(state.active) < state.max_concurrent else None
        if due is None and state.all_started() and not state.active:
            due = state.next_promotion(final=True)
            if due is None:  # nothing more to promote: the waiting trials end here
                for tid in sorted(state.waiting):
                    tune_controller.stop_trial(self._trials[tid])
                return None
        if due is not None and due[0] in self._trials:
            trial = self._trials[due[0]]
            if trial.status == Trial.PAUSED:
                state.promote(*due)
                publish_trial_logs(trial)  # Ray's loggers copy the storage path's back as it restarts
                return trial
        for trial in self._trials.values():
            if trial.status == Trial.PENDING and trial.trial_id not in state.waiting:
                return trial
        return None

    def debug_string(self) -> str:
        return f"HyperTune: rungs {self.state.rungs}, {len(self.state.waiting)} waiting, " \
               f"{len(self.state.active)} training"


class HyperTuneSearcher(Searcher):
    """Ray Tune searcher of :class:`HyperTune`: proposes a configuration when a worker is free and no
    promotion is due, from the multi-fidelity ensemble (:meth:`HyperTune.propose`)."""

    def __init__(self, state: HyperTune, param_space: dict[str, Any] | None = None):
        super().__init__(metric=state.metric, mode=state.mode)
        self.state = state
        # given here too, since a search restored by --resume is not handed its space again
        self.space: UnitSpace | None = None if not param_space else UnitSpace(param_space)

    def set_search_properties(self, metric, mode, config, **spec) -> bool:
        if metric:
            self._metric = self.state.metric = metric
        if mode:
            self._mode = self.state.mode = mode
        if config:
            self.space = UnitSpace(config)
        return True

    def suggest(self, trial_id: str):
        if self.space is None:
            raise ConfigError("param_space", None, "the search space, handed to the Tuner as param_space")
        if not self.state.may_start_new():
            return None
        point = self.state.propose(self.space)
        self.state.configs[trial_id] = [float(v) for v in point]
        return self.space.decode(point)

    def on_trial_complete(self, trial_id: str, result=None, error: bool = False) -> None:
        pass  # the scheduler files every result in the shared state

    def save(self, checkpoint_path: str) -> None:
        with open(checkpoint_path, "w") as f:
            json.dump(self.state.state_dict(), f)

    def restore(self, checkpoint_path: str) -> None:
        with open(checkpoint_path) as f:
            self.state.load_state_dict(json.load(f))


def hypertune(max_t: int, *, num_samples: int, param_space: dict[str, Any] | None = None, max_concurrent: int = 2,
              grace_period: int = 1, reduction_factor: int = 3, metric: str = "val_accuracy", mode: str = "max",
              seed: int = 0):
    """(scheduler, searcher) of one Hyper-Tune search over ``param_space`` (Ray Tune domains; else the
    Tuner's), to hand to ``tune.TuneConfig`` (without ``max_concurrent_trials``: Hyper-Tune keeps ``max_concurrent`` trials training itself, since its
    paused trials hold no worker)."""
    state = HyperTune(max_t, num_samples=num_samples, max_concurrent=max_concurrent, grace_period=grace_period,
                      eta=reduction_factor, metric=metric, mode=mode, seed=seed)
    return HyperTuneScheduler(state), HyperTuneSearcher(state, param_space)


def _build(ctx: Context) -> Built:
    scheduler, searcher = hypertune(ctx.epochs, num_samples=ctx.num_samples, param_space=ctx.param_space,
                                    max_concurrent=ctx.max_concurrent, grace_period=ctx.grace,
                                    reduction_factor=ctx.reduction_factor, seed=ctx.seed, metric=ctx.metric, mode=ctx.mode)
    return Built(scheduler, searcher, dict(ctx.param_space or {}))


def _summary(experiment_path: str, ctx: Context) -> dict[str, Any] | None:
    """Hyper-Tune's brackets and promotions, from the state it saved with the experiment (plain JSON)."""
    states = sorted(Path(experiment_path).glob("searcher-state-*.pkl"), key=lambda p: p.stat().st_mtime)
    if not states:
        return None
    state = HyperTune(ctx.epochs, num_samples=ctx.num_samples, max_concurrent=ctx.max_concurrent,
                      grace_period=ctx.grace, eta=ctx.reduction_factor, seed=ctx.seed)
    state.load_state_dict(json.loads(states[-1].read_text()))
    return state.summary()


#: Hyper-Tune in the algorithm registry (``--algo hypertune``).
HYPERTUNE = Algorithm(_build, "Hyper-Tune: delayed promotions, learnt brackets, a multi-fidelity surrogate",
                      rungs=geometric_rungs, validates_at_rungs=True, owns_concurrency=True, own_searcher=True,
                      grid=False, summary=_summary)
