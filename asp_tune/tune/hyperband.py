"""Ray Tune's Hyperband scheduler with one race of its closed.

When the last trial of a bracket reaches the bracket's final milestone, Ray stops the bracket's other trials
that are PAUSED. A trial whose pause is still being saved at that moment is RUNNING, so it is passed over;
once its save lands it is PAUSED in a finished bracket that nothing looks at again, and the search waits for
it until its time budget (or forever). Trials that report at the same moment (packs, fast epochs, a loaded
machine) hit this. :class:`Hyperband` stops such a trial the next time Tune asks it what to run, as Ray would
have stopped it had its save been quicker. (BOHB's scheduler needs no such help: it processes a bracket only
once every other trial of it is PAUSED, so a trial still saving leaves the reporting one paused too, and when no
trial runs it processes every bracket holding a paused trial again.)

Both Hyperband schedulers also resume where the interrupted search stood (:class:`ReplayedBrackets`): Ray
restores a scheduler as the search built it, its brackets empty, and adds the restored trials to it in the order
of their last report. Each trial goes back to the bracket it was made for and each bracket halves again on the
reports its trials made before the interrupt. A ``HyperBandScheduler`` or ``HyperBandForBOHB`` handed to
:func:`asp_tune.tune.search` is run as ours with its settings (``algorithms.as_ours``); a subclass of one's
own is run as given.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandForBOHB, HyperBandScheduler

from asp_tune.tune.storage import trial_folder, trial_reports


FINISHED = (Trial.TERMINATED, Trial.ERROR)


def creation_number(trial: Any) -> int | None:
    """The count its searcher gave a trial when it made it (the number opening its experiment tag)."""
    head = str(getattr(trial, "experiment_tag", "") or "").split("_", 1)[0]
    return int(head) if head.isdigit() else None


def replay_bracket(bracket: Any, reports: dict[Any, list[dict]], metric: str, metric_op: float,
                   only_when_full: bool = False) -> None:
    """Bring a new bracket holding its restored trials (Ray's ``_Bracket``) to where the interrupted search left
    it: each milestone that every trial still in it had reached is halved again on the reports made there (Ray's
    own ``successive_halving``); a trial that ended short of a milestone, or waiting at one without being halved,
    leaves the bracket as it did when it ended. ``only_when_full`` (BOHB's rule): a milestone is halved once the
    bracket holds all its trials, or where a trial reported past it (which only a halving lets it do).
    ``reports``: each trial's, in order."""
    time_attr = bracket._time_attr

    def at(trial: Any, milestone: float) -> dict | None:
        return next((r for r in reports.get(trial, []) if r.get(time_attr, 0) >= milestone), None)

    def drop(leaving: list[Any]) -> None:
        for trial in leaving:
            bracket.cleanup_trial(trial)

    while bracket._live_trials:
        milestone = bracket._cumul_r
        drop([t for t in bracket._live_trials if t.status in FINISHED and at(t, milestone) is None])
        reached = {t: at(t, milestone) for t in bracket._live_trials}
        halved = not only_when_full or len(bracket._all_trials) >= bracket._n0 or any(
            r.get(time_attr, 0) > milestone for t in bracket._live_trials for r in reports.get(t, []))
        if halved and reached and all(r is not None for r in reached.values()):
            bracket._live_trials.update(reached)
            if bracket._halves == 0:
                if not bracket.finished():  # stop_last_trials=False: the last trials go on to max_t
                    drop([t for t in bracket._live_trials if t.status in FINISHED])
                break
            bracket.is_being_processed = True  # as Ray leaves a bracket it halved once
            _, bad = bracket.successive_halving(metric, metric_op)
            drop(bad)
            continue
        ended = [t for t in bracket._live_trials if t.status in FINISHED]  # ended otherwise (a budget, a failure)
        if not ended:
            break
        drop(ended)
    if not bracket.finished():
        for trial in bracket._live_trials:
            made = reports.get(trial) or [None]
            bracket._live_trials[trial] = at(trial, bracket._cumul_r) or made[-1]
    bracket._completed_progress = sum(r[-1].get(time_attr, 0) for t in bracket._all_trials
                                      if (r := reports.get(t)))


class ReplayedBrackets:
    """For Ray's Hyperband schedulers: a resumed search goes on as the interrupted one would have. Ray restores
    the scheduler as built (its brackets empty) and adds every restored trial, in the order of their last
    reports: Ray's own put them in other brackets than they were made for, and a finished one waited for
    forever. Here the restored trials are held until Tune first asks what to run (or reports), then placed
    in the order they were made, their brackets replayed (:func:`replay_bracket`): a trial halved out or in a
    finished bracket is stopped, one waiting at its milestone is paused again, the rest go on."""

    _restored: list[Trial] | None = None  # trials added since the scheduler was unpickled, not yet placed

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)
        self._hyperbands, self._trial_info = [[]], {}
        self._state, self._num_stopped = {"bracket": None, "band_idx": 0}, 0
        self._restored = []

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if self._restored is not None:
            self._restored.append(trial)
        elif trial.status not in FINISHED:  # only a restored trial is added finished: it has no place left
            super().on_trial_add(tune_controller, trial)

    _only_when_full = False  # which milestones a replay halves (replay_bracket)

    def _settled(self, tune_controller: Any, trial: Trial, paused: bool) -> None:
        """A restored trial left in its bracket after the replay: waiting at its milestone (``paused``; PENDING
        as Tune restores it, so paused again here) or to run."""
        if paused and trial.status != Trial.PAUSED:
            tune_controller._set_trial_status(trial, Trial.PAUSED)

    def _place_restored(self, tune_controller: Any) -> None:
        restored, self._restored = self._restored, None
        if not restored:
            return
        order = sorted(range(len(restored)), key=lambda i: (creation_number(restored[i]) is None,
                                                            creation_number(restored[i]) or 0, i))
        for i in order:
            super().on_trial_add(tune_controller, restored[i])
        reports = {t: self._reports(t) for t in restored}
        brackets = list({id(self._trial_info[t][0]): self._trial_info[t][0] for t in restored}.values())
        for bracket in brackets:
            replay_bracket(bracket, reports, self._metric, self._metric_op, self._only_when_full)
        for bracket in brackets:
            done = bracket.finished()
            for trial in bracket._all_trials:
                if trial.status in FINISHED or trial not in restored:
                    continue
                if done or trial not in bracket._live_trials:
                    tune_controller.stop_trial(trial)
                else:
                    self._settled(tune_controller, trial, paused=not bracket.continue_trial(trial))

    def _reports(self, trial: Trial) -> list[dict]:
        """A restored trial's reports: its ``result.json``, and the last result Tune's saved state holds where
        that is later (a file written behind the state)."""
        folder = trial_folder(trial)
        made = trial_reports(folder) if folder is not None else []
        last = getattr(trial, "last_result", None)
        when = self._time_attr
        if isinstance(last, dict) and isinstance(last.get(when), (int, float)) and self._metric in last and (
                not made or last[when] > made[-1].get(when, 0)):
            made.append(last)
        return made

    def _paused_short_of_its_milestone(self) -> Trial | None:
        """A PAUSED trial its bracket lets go on (below its milestone), where Tune is told nothing else to run.
        Hyperband pauses a trial only at a milestone; one paused below it (seen after a resume from Ctrl-C: the
        restored trial paused on starting, before any report) was never chosen again, and Tune spun forever."""
        for band in self._hyperbands:
            for bracket in band:
                if bracket is None or bracket.finished():
                    continue
                for trial in bracket.current_trials():
                    if trial.status == Trial.PAUSED and bracket.continue_trial(trial):
                        return trial
        return None

    def on_trial_result(self, tune_controller: Any, trial: Trial, result: dict) -> str:
        self._place_restored(tune_controller)
        return super().on_trial_result(tune_controller, trial, result)

    def on_trial_remove(self, tune_controller: Any, trial: Trial) -> None:
        self._place_restored(tune_controller)
        super().on_trial_remove(tune_controller, trial)


class BohbHyperband(ReplayedBrackets, HyperBandForBOHB):
    """:class:`ray.tune.schedulers.HyperBandForBOHB` that resumes (:class:`ReplayedBrackets`)."""

    _only_when_full = True  # BOHB halves a bracket once it holds all its trials (or when none runs)

    def _settled(self, tune_controller: Any, trial: Trial, paused: bool) -> None:
        """As the scheduler, BOHB's searcher learns which restored trials wait and which run: its saved state
        can predate a halving the replay made, and a kept trial it still counted paused let it hand out
        configurations beyond ``max_concurrent``."""
        super()._settled(tune_controller, trial, paused)
        searcher = tune_controller.search_alg.searcher
        (searcher.on_pause if paused else searcher.on_unpause)(trial.trial_id)

    def choose_trial_to_run(self, tune_controller: Any, allow_recurse: bool = True) -> Trial | None:
        self._place_restored(tune_controller)
        return super().choose_trial_to_run(tune_controller, allow_recurse) or self._paused_short_of_its_milestone()


class Hyperband(ReplayedBrackets, HyperBandScheduler):
    """:class:`ray.tune.schedulers.HyperBandScheduler` that resumes (:class:`ReplayedBrackets`), never left
    waiting for a trial paused in a finished bracket: before choosing a trial to run, it stops every PAUSED trial
    left in one."""

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        self._place_restored(tune_controller)
        for band in self._hyperbands:
            for bracket in band:
                if bracket is None or not bracket.finished():
                    continue
                for trial in bracket.current_trials():
                    if trial.status == Trial.PAUSED:
                        tune_controller.stop_trial(trial)
        return super().choose_trial_to_run(tune_controller) or self._paused_short_of_its_milestone()
