"""Ray's ASHA whose rung records survive a resume (no torch; Ray only where a search runs).

Ray restores a scheduler as the experiment built it (``tuner.pkl``: its rungs empty) and never calls its
``restore``; it adds every trial of the experiment again. Without its records a resumed ASHA lets the first
trials to reach each rung go on: a resumed 30-trial search trained 8 trials to the end where an uninterrupted
one trained 5. :class:`ResumableASHA` replays each added trial's reports (its ``result.json``) into its bracket,
so the cutoffs are those of the run before the interrupt.
"""

from __future__ import annotations

from typing import Any

from ray.tune.schedulers import AsyncHyperBandScheduler

from asp_tune.tune.storage import trial_folder, trial_reports


class ResumableASHA(AsyncHyperBandScheduler):
    """:class:`ray.tune.schedulers.ASHAScheduler`, but a trial added with reports already made (a resumed
    experiment's) has them recorded in its bracket's rungs, as they were when it made them."""

    def on_trial_add(self, tune_controller: Any, trial: Any) -> None:
        super().on_trial_add(tune_controller, trial)
        folder = trial_folder(trial)
        if folder is None:
            return
        bracket = self._trial_info[trial.trial_id]
        for report in trial_reports(folder):
            value = report.get(self._metric)
            if self._time_attr in report and isinstance(value, (int, float)):
                bracket.on_result(trial, report[self._time_attr], self._metric_op * value)
