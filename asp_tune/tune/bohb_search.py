"""BOHB's searcher (Ray Tune's ``TuneBOHB``) handing out configurations of Python values."""

from __future__ import annotations

from typing import Any

from ray.tune.search.bohb import TuneBOHB

from asp_tune.tune.space import plain_values


class PlainBOHB(TuneBOHB):
    """``TuneBOHB`` whose configurations hold Python numbers and booleans, not ConfigSpace's NumPy scalars: a
    trial's checkpoint keeps its configuration and is loaded with ``weights_only`` (which refuses a NumPy
    scalar, so a paused or restarted trial failed), and the audit's JSON record keeps a ``True`` as ``true``."""

    def suggest(self, trial_id: str) -> dict[str, Any] | None:
        config = super().suggest(trial_id)
        return plain_values(config) if isinstance(config, dict) else config
