"""The settings of ``asp-tune compare`` and ``correlate`` (and of :func:`asp_tune.tune.compare_trainable` and
:func:`asp_tune.tune.correlate_trainable`): which ratios and strategies run beside full data, each declared
once with its default, help and constraint; the commands' flags are generated from them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from asp_tune.constraints import Check, Interval, check_fields, check_seeds
from asp_tune.errors import ConfigError
from asp_tune.flags import option, parse_seeds
from asp_tune.proxy_settings import RATIO
from asp_tune.tune.settings import SEARCH, SEARCH_RATIO


def check_compare_ratios(name: str, value: Any) -> None:
    if not (isinstance(value, (tuple, list)) and value and all(RATIO.contains(r) for r in value)):
        raise ConfigError(name, value, "a comma-separated list of numbers in (0, 1]")
    if len(set(value)) != len(value):
        raise ConfigError(name, value, "distinct ratios (each is one search)")
    if all(r == 1.0 for r in value):
        raise ConfigError(name, value, "at least one proxy ratio below 1.0 (the full-data search at 1.0 runs beside "
                                       "them anyway)")


@dataclass
class CompareSettings:
    """``asp-tune compare`` and :func:`asp_tune.tune.compare_trainable`: which ratios run beside full data and
    how often each pick is retrained."""

    ratios: tuple[float, ...] = option((1.0, SEARCH_RATIO, 0.1), "the full-data run and the proxy ratios", SEARCH,
                                       check=Check(check_compare_ratios,
                                                   ((), (1.0,), (0.0, 1.0), (1.0, 0.3, 0.3), "x")))
    retrain_seeds: int = option(1, "full-data retrains of each run's pick, one per seed", SEARCH,
                                check=Interval(1, None, integer=True))
    seeds: list[int] | None = option(None, "e.g. 0,1,2: the whole comparison once per seed (its searches, controls "
                                           "and retrains share the seed; --seed names one), every figure as mean ± "
                                           "sample std over the seeds, paired within each: what a claim needs (3 or "
                                           "more)", SEARCH, kind=parse_seeds,
                                     check=Check(check_seeds, ([1, 1], [-1], "x")))
    control: bool = option(True, "beside each proxy ratio whose strategy is not uniformly random, the same search on "
                                 "a uniformly random subset of the same size (random; fixed_random beside a static "
                                 "proxy), its pick retrained too: what the proxy gains over it", SEARCH)

    def validate(self) -> "CompareSettings":
        check_fields(self)
        return self


def correlate_strategies() -> tuple[str, ...]:
    """What a ``correlate`` cell can use: every strategy but ``none`` (the full-data column) and
    ``infobatch`` (its cost is not a ratio); ``auto`` is the best measured one at the cell's ratio."""
    from asp_tune.proxy_settings import metric_choices

    return tuple(m for m in metric_choices() if m not in ("none", "infobatch"))


def check_cell_ratios(name: str, value: Any) -> None:
    if not (isinstance(value, (tuple, list)) and value and all(RATIO.contains(r) and r < 1 for r in value)):
        raise ConfigError(name, value, "numbers in (0, 1)")
    if len(set(value)) != len(value):
        raise ConfigError(name, value, "distinct ratios (each is one column of the table)")


def check_cell_strategies(name: str, value: Any) -> None:
    names = [m.strip() for m in str(value).split(",") if m.strip()] if isinstance(value, str) else None
    if not names:
        raise ConfigError(name, value, "a comma-separated list of metrics")
    for strategy in names:
        if strategy not in correlate_strategies():
            raise ConfigError(name, strategy, correlate_strategies())
    if len(set(names)) != len(names):
        raise ConfigError(name, value, "distinct metrics (each is one row of the table)")


#: Configurations a correlation needs: fewer rank nothing (every measure NaN, :mod:`asp_tune.quality`).
MIN_CONFIGS = 3


def check_grid_size(configs: list, field: str = "space") -> None:
    """Refuse a grid too small to correlate, before anything runs."""
    if len(configs) < MIN_CONFIGS:
        raise ConfigError(field, f"{len(configs)} configuration{'s' if len(configs) != 1 else ''}",
                          f"a grid of at least {MIN_CONFIGS} configurations (grid_search values crossed): a rank "
                          "correlation needs 3")


@dataclass
class CorrelateSettings:
    """``asp-tune correlate`` (the ASP paper's Table 5): the cells beside full data."""

    ratios: tuple[float, ...] = option((0.1, SEARCH_RATIO, 0.5), "proxy ratios (one column each)", SEARCH,
                                       check=Check(check_cell_ratios, ((), (1.0,), (0.3, 0.3), "x")))
    metrics: str = option("random,loss,entropy,gradient,prediction,mixture",
                          lambda: "comma-separated strategies, one row each: ASP metrics and static baselines "
                                  f"({', '.join(correlate_strategies())})", SEARCH,
                          check=Check(check_cell_strategies, ("", "loss,loss", "nope", 3)),
                          aliases=("--strategies",))
    max_configs: int | None = option(None, "only the first N grid configurations (at least 3: a rank correlation "
                                           "needs 3)", SEARCH,
                                     check=Interval(MIN_CONFIGS, None, integer=True, optional=True))

    def validate(self) -> "CorrelateSettings":
        check_fields(self)
        return self

    @property
    def strategies(self) -> list[str]:
        return [m.strip() for m in self.metrics.split(",") if m.strip()]
