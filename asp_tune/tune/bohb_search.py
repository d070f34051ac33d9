"""BOHB's searcher (Ray Tune's ``TuneBOHB``) handing out configurations of Python values, and resumable."""

from __future__ import annotations

from typing import Any

from ray.tune.search.bohb import TuneBOHB

from asp_tune.tune.space import plain_values


class PlainBOHB(TuneBOHB):
    """``TuneBOHB`` whose configurations hold Python numbers and booleans, not ConfigSpace's NumPy scalars: a
    trial's checkpoint keeps its configuration and is loaded with ``weights_only`` (which refuses a NumPy
    scalar, so a paused or restarted trial failed), and the audit's JSON record keeps a ``True`` as ``true``.

    A trial it holds no configuration of (a resumed search's searcher state saved before the trial's last
    event) is no error: its results do not reach BOHB's model, and its end is noted (Ray's raised a KeyError
    that stopped the resumed search)."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        return plain_values(config) if isinstance(config, dict) else config

    def on_trial_result(self, trial_id: str, result: dict[str, Any]) -> None:
        if trial_id in self.trial_to_params:
            super().on_trial_result(trial_id, result)
        elif trial_id not in self.paused:
            self.running.add(trial_id)

    def on_trial_complete(self, trial_id: str, result: dict[str, Any] | None = None, error: bool = False) -> None:
        self.trial_to_params.pop(trial_id, None)
        self.paused.discard(trial_id)
        self.running.discard(trial_id)
