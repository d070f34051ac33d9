"""Ray Tune's ``OptunaSearch`` telling Optuna what asp_tune picks by (imported only with Ray)."""

from __future__ import annotations

from typing import Any

from ray.tune.search.optuna import OptunaSearch

from asp_tune.tune.fulldata import finite


class BestEpochOptunaSearch(OptunaSearch):
    """``OptunaSearch`` that tells Optuna each finished trial's best reported score, the one the search's pick
    and ``trials.csv`` use (``best_score``), where Ray's tells its last: TPE learns what is picked by, and a study
    kept in ``--optuna-storage`` holds the values the results show. A trial that never reported a finite score
    is told as failed (Ray's would leave it running in the study)."""

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
            else:
                result = {**result, self.metric: best}
        super().on_trial_complete(trial_id, result, error)

    @property
    def _best_scores(self) -> dict[str, float]:
        return self.__dict__.setdefault("_best", {})  # a searcher restored from an older save has none yet
