"""Ray Tune's Hyperband scheduler with one race of its closed.

When the last trial of a bracket reaches the bracket's final milestone, Ray stops the bracket's other trials
that are PAUSED. A trial whose pause is still being saved at that moment is RUNNING, so it is passed over;
once its save lands it is PAUSED in a finished bracket that nothing looks at again, and the search waits for
it until its time budget (or forever). Trials that report at the same moment (packs, fast epochs, a loaded
machine) hit this. :class:`Hyperband` stops such a trial the next time Tune asks it what to run, as Ray would
have stopped it had its save been quicker. (BOHB's scheduler needs no such help: it processes a bracket only
once every other trial of it is PAUSED, so a trial still saving leaves the reporting one paused too, and when no
trial runs it processes every bracket holding a paused trial again.)

Both Hyperband schedulers also leave a finished trial out of their brackets when a search is resumed
(:class:`FinishedTrialsStayOut`). A ``HyperBandScheduler`` or ``HyperBandForBOHB`` handed to
:func:`asp_tune.tune.search` is run as ours with its settings (``algorithms.as_ours``); a subclass of one's
own is run as given.
"""

from __future__ import annotations

from typing import Any

from ray.tune.experiment import Trial
from ray.tune.schedulers import HyperBandForBOHB, HyperBandScheduler


class FinishedTrialsStayOut:
    """For Ray's Hyperband schedulers: a trial that a resumed search restores finished (TERMINATED, or ERROR and
    not retried) gets no place in a bracket. Ray adds every restored trial to the new scheduler's brackets; a
    finished one never reports again, so its bracket never saw every trial reach its milestone: a resumed BOHB
    search waited forever with its other trials PAUSED (and Hyperband's ran them on without halving)."""

    def on_trial_add(self, tune_controller: Any, trial: Trial) -> None:
        if trial.status not in (Trial.TERMINATED, Trial.ERROR):
            super().on_trial_add(tune_controller, trial)


class BohbHyperband(FinishedTrialsStayOut, HyperBandForBOHB):
    """:class:`ray.tune.schedulers.HyperBandForBOHB` that resumes (:class:`FinishedTrialsStayOut`)."""


class Hyperband(FinishedTrialsStayOut, HyperBandScheduler):
    """:class:`ray.tune.schedulers.HyperBandScheduler`, never left waiting for a trial paused in a finished
    bracket: before choosing a trial to run, it stops every PAUSED trial left in one."""

    def choose_trial_to_run(self, tune_controller: Any) -> Trial | None:
        for band in self._hyperbands:
            for bracket in band:
                if bracket is None or not bracket.finished():
                    continue
                for trial in bracket.current_trials():
                    if trial.status == Trial.PAUSED:
                        tune_controller.stop_trial(trial)
        return super().choose_trial_to_run(tune_controller)
