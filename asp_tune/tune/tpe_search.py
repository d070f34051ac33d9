"""Ray Tune's ``OptunaSearch`` telling Optuna what asp_tune picks by (imported only with Ray)."""

from __future__ import annotations

import numbers
from typing import Any

from ray.tune.search.optuna import OptunaSearch

from asp_tune.errors import ConfigError
from asp_tune.tune.fulldata import finite
from asp_tune.tune.study_settings import RUN_ATTR, check_settings


class BestEpochOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna each finished trial's best reported score, the one the search's pick
    and ``trials.csv`` use (``best_score``), where Ray's tells its last: TPE learns what is picked by, and a study
    kept in ``--optuna-storage`` holds the values the results show. A trial that never reported a finite score
    is told as failed (Ray's would leave it running in the study). ``epochs``: a trial's last epoch; one that
    ends before it without an error (stopped by a scheduler, e.g. ``--early-stop asha``) is told PRUNED, its
    value the last score it reported, as Optuna keeps a pruned trial's. ``settings``: what the trials train
    with (:func:`~asp_tune.tune.study_settings.trained_settings`), kept in the study and tagged on each trial:
    a study of the same name holding trials trained otherwise is warned, naming what differs; one optimised in
    the other direction is refused."""

    def __init__(self, *args: Any, epochs: int | None = None, settings: dict[str, Any] | None = None,
                 **kwargs: Any) -> None:
        self._epochs, self._settings, self._tag = epochs, settings, None
        super().__init__(*args, **kwargs)

    def _setup_study(self, mode: Any) -> None:
        super()._setup_study(mode)
        if isinstance(mode, str):
            wanted = "minimize" if mode == "min" else "maximize"
            found = self._ot_study.direction.name.lower()
            if found != wanted:
                raise ConfigError("optuna_storage", f"study {self._study_name!r}",
                                  f"a storage whose study {self._study_name!r} is to {wanted} {self._metric} (mode "
                                  f"{mode}); the one it holds is to {found}: give another --optuna-storage file or "
                                  "another search name")
        if getattr(self, "_settings", None):
            self._tag = check_settings(self._ot_study, self._settings, [], stacklevel=2)

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        new = trial_id not in self._ot_trials
        config = super().suggest(trial_id)
        if new and trial_id in self._ot_trials and getattr(self, "_tag", None):
            self._ot_trials[trial_id].set_user_attr(RUN_ATTR, self._tag)  # the settings it trains with
        return config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if not isinstance(self.metric, str):  # several objectives: Optuna takes no intermediate values
            return super().on_trial_result(trial_id, result)
        value = result.get(self.metric)
        if finite(value):  # a NumPy score (np.float32 too) as the float Optuna keeps
            value = float(value)
            kept = self._best_scores.get(trial_id, value)
            self._best_scores[trial_id] = max(kept, value) if self.mode == "max" else min(kept, value)
        if value is not None:  # an epoch that did not validate reports nothing to Optuna
            super().on_trial_result(trial_id, {**result, self.metric: value})

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        best = self._best_scores.pop(trial_id, None)
        if result and isinstance(self.metric, str):
            last = result.get(self.metric)
            if finite(last):
                last = float(last)
                best = last if best is None else (max(best, last) if self.mode == "max" else min(best, last))
            if best is None:  # told as failed: without a value, Ray tells Optuna FAIL
                error, result = True, {k: v for k, v in result.items() if k != self.metric}
            elif not error and self._stopped_early(result):  # without a value and no error, Ray tells PRUNED
                result = {k: v for k, v in result.items() if k != self.metric}
            else:
                result = {**result, self.metric: best}
        super().on_trial_complete(trial_id, result, error)

    def _stopped_early(self, result: dict[str, Any]) -> bool:
        """Whether a trial ended before its last epoch (its scheduler stopped it)."""
        epochs, done = getattr(self, "_epochs", None), result.get("training_iteration")
        return epochs is not None and isinstance(done, numbers.Integral) and done < epochs

    @property
    def _best_scores(self) -> dict[str, float]:
        return self.__dict__.setdefault("_best", {})  # a searcher restored from an older save has none yet
