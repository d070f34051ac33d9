"""The cells of ``asp-tune correlate``: full data, and one ``RATIO:STRATEGY`` cell per proxy ratio and strategy
(read by the trials themselves, one per process or in packs, so nothing heavy is imported here)."""

from __future__ import annotations

from typing import Any

FULL_CELL = "1.0:none"


def cells(ratios: list[float], strategies: list[str]) -> list[str]:
    """The full-data cell, then one ``RATIO:STRATEGY`` cell per pair."""
    return [FULL_CELL] + [f"{r}:{m}" for r in ratios for m in strategies]


def cell_of(config: dict[str, Any]) -> tuple[float, str]:
    """A trial's (ratio, strategy), from its ``cell``."""
    ratio, strategy = config["cell"].split(":")
    return float(ratio), strategy


def cell_fields(config: dict[str, Any]) -> dict[str, Any]:
    """The run fields a trial takes from its ``cell``: ratio and strategy, and the ``constant`` schedule where the
    strategy keeps one subset or all data whatever the search's schedule says (full data, a static proxy)."""
    from asp_tune.proxy_settings import ignores_schedule

    ratio, strategy = cell_of(config)
    return {"ratio": ratio, "metric": strategy, **({"ratio_schedule": "constant"} if ignores_schedule(strategy) else {})}
