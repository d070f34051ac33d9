"""How a run's proxy subsets are chosen: one settings dataclass, the single source of every default.

:class:`ProxySettings` holds the strategy name (``metric``), the ratio and every selection setting,
each declared once with its default, help text and allowed values (:func:`asp_tune.flags.option`,
checked from that declaration by :mod:`asp_tune.constraints`). ``TrainConfig`` inherits these
fields, ``ProxySelector`` and ``ProxyData`` take them as keyword arguments, and the command-line
flags are generated from them, so the same words give the same strategy everywhere.

The defaults are the measured ones (``bench/README.md``): the calibrated rule with 0.2 of the
probability on the top 10% of samples, a 0.3 uniform floor, class balance and unbiased
reweighting; ``metric="auto"`` resolves by :func:`auto_strategy`.
"""

from __future__ import annotations

import dataclasses
import functools
from dataclasses import dataclass
from typing import Any, Collection

from asp_tune.constraints import Boolean, Check, Interval, OneOf, check_fields
from asp_tune.errors import ConfigError
from asp_tune.flags import option
from asp_tune.imports import check_name, import_object, is_import_path
from asp_tune.registry import MODELS, SELECTION_RULES, STATIC_PROXY_NAMES, strategy_names

RATIO_SCHEDULES: tuple[str, ...] = ("constant", "dynamic")
MIXTURE_ORDERS: tuple[str, ...] = ("g012", "g021", "g102", "g120", "g201", "g210")
GROUP = "proxy data (ASP)"
STATIC_GROUP = "static proxies (baselines)"

#: Below this ratio ``auto`` takes a fixed random subset: at r = 0.1 it ranked configurations best at
#: equal cost, while importance sampling with a full first epoch cost 2.1x its data (bench/baselines.py).
AUTO_STATIC_BELOW = 0.2


STEPS_PREFIX = "steps:"
#: A sampling ratio: a share of the training samples, more than none and at most all of them.
RATIO = Interval(0.0, 1.0, "right")


def ratio_steps(kind: str) -> tuple[tuple[int, float], ...]:
    """The ``(epoch, ratio)`` steps of a ``steps:E1=R1,...`` schedule (``()`` for the named kinds);
    a :class:`ConfigError` naming ``ratio_schedule`` for anything else. Parsed once per text."""
    if isinstance(kind, str) and kind in RATIO_SCHEDULES:
        return ()
    if not isinstance(kind, str) or not kind.startswith(STEPS_PREFIX):
        raise ConfigError("ratio_schedule", kind, _STEPS_ALLOWED)
    return _parse_steps(kind)


def lowest_ratio(ratio: float, schedule: str) -> float:
    """The ratio ``metric="auto"`` is resolved for: ``ratio``, or the lowest step of a ``steps:`` schedule below
    it (so one that leaves full data never runs strategy ``none``). ``dynamic`` counts as its ratio, its mean over
    the run, as it was measured (bench/README.md: at r = 0.3 ``loss`` beat a random subset under it)."""
    return min([ratio] + [r for _, r in ratio_steps(schedule)])


def ignores_schedule(metric: str) -> bool:
    """Whether a strategy trains on one fixed subset (a static proxy) or on all data (``none``) whatever a ratio
    schedule says: a run of it takes the ``constant`` schedule."""
    return metric == "none" or metric in STATIC_PROXY_NAMES


def schedule_moves(ratio: float, schedule: str) -> bool:
    """Whether a run at ``ratio`` under ``schedule`` ever trains at another ratio (a ``steps:`` step elsewhere;
    ``dynamic`` below ratio 1, where Algorithm 2 stays at 1)."""
    if schedule == "dynamic":
        return ratio < 1.0
    return any(r != ratio for _, r in ratio_steps(schedule))


def check_steps_within(kind: str, epochs: int) -> None:
    """Refuse a ``steps:`` schedule with a step a run of ``epochs`` epochs never reaches (naming
    ``ratio_schedule``): after E epochs the ratio is R, so E must be below ``epochs``."""
    late = [epoch for epoch, _ in ratio_steps(kind) if epoch >= epochs]
    if late:
        raise ConfigError("ratio_schedule", kind, f"steps after fewer epochs than the run's {epochs} (a run of "
                                                  f"{epochs} epochs has ended after {late[0]}: that step never "
                                                  "applies)")


_STEPS_ALLOWED = (f"one of {', '.join(repr(k) for k in RATIO_SCHEDULES)}, or steps:EPOCH=RATIO,... (epochs "
                  f"increasing from 1, ratios in (0, 1])")


@functools.lru_cache(maxsize=256)
def _parse_steps(kind: str) -> tuple[tuple[int, float], ...]:
    allowed = _STEPS_ALLOWED
    steps: list[tuple[int, float]] = []
    for part in kind[len(STEPS_PREFIX):].split(","):
        epoch, _, ratio = part.partition("=")
        try:
            step = (int(epoch), float(ratio))
        except ValueError:
            raise ConfigError("ratio_schedule", kind, allowed) from None
        if not RATIO.contains(step[1]) or step[0] < 1 or (steps and step[0] <= steps[-1][0]):
            raise ConfigError("ratio_schedule", kind, allowed)
        steps.append(step)
    return tuple(steps)


def steps_schedule(steps: "list[tuple[int, float]]") -> str:
    """The ``ratio_schedule`` text of ``(epoch, ratio)`` steps."""
    return STEPS_PREFIX + ",".join(f"{e}={r:g}" for e, r in steps)


def metric_choices() -> tuple[str, ...]:
    """Every ``metric`` name accepted now (registered strategies and statistics, and ``auto``)."""
    return strategy_names() + ("auto",)


def check_strategy(name: str, value: Any) -> None:
    """A registered ``metric`` name, or an import path ``package.module:attribute`` to a strategy
    factory or class (imported here, so a wrong path fails at the edge)."""
    if is_import_path(value) and value not in metric_choices():
        import_object(value, name)
        return
    OneOf(metric_choices)(name, value)


@dataclass
class ProxySettings:
    """Which subset strategy a run uses and how it selects. ``metric`` names a strategy
    (``asp_tune.registry.STRATEGIES``), a memory statistic (importance sampling on it), or ``auto``."""

    ratio: float = option(1.0, "sampling ratio r in (0, 1]", GROUP, check=RATIO)
    ratio_schedule: str = option("constant", "constant r, dynamic (the paper's Algorithm 2), or steps:E=R,... (after "
                                             "E epochs the ratio is R: steps:2=0.3 from the third)", GROUP,
                                 RATIO_SCHEDULES, pattern="steps:E=R,...",
                                 check=Check(lambda name, value: ratio_steps(value),
                                             ("sometimes", "steps:0=0.5", "steps:2=1.5", 3)))
    metric: str = option("auto", "subset strategy: an importance metric, mixture (one drawn per epoch), infobatch, "
                                 "a static proxy, none (full data), or auto (the best measured for the ratio, or the "
                                 f"lowest step of a steps: schedule: none at 1, loss at >= {AUTO_STATIC_BELOW:g}, "
                                 "fixed_random below, random below under a schedule)", GROUP, metric_choices,
                         check=Check(check_strategy, ("no-such-strategy", 3)), name="--strategy", aliases=("--metric",),
                         imports=True)
    mixture_order: str = option("g012", "order of the mixture's metric groups over the run", GROUP, MIXTURE_ORDERS,
                                check=OneOf(lambda: MIXTURE_ORDERS))
    mixture_width: float = option(0.125, "std of each metric's Gaussian, as a fraction of the run", GROUP,
                                  check=Interval(0.0, None, "neither"))
    selection_rule: str = option("calibrated", "how values become probabilities: zscore softmax(z/T), paper "
                                               "softmax(v/T), calibrated (--top10-mass)", GROUP, SELECTION_RULES,
                                 check=OneOf(lambda: SELECTION_RULES))
    temperature: float = option(1.0, "selection temperature for zscore and paper; 0 = deterministic top-m", GROUP,
                                check=Interval(0.0, None, "left"))
    top10_mass: float = option(0.2, "calibrated rule: share of the probability on the top 10% of samples "
                                    "(0.1 = uniform)", GROUP, check=Interval(0.1, 1.0, "left"))
    uniform_floor: float = option(0.3, "fraction of the probability spread uniformly, so no sample starves", GROUP,
                                  check=Interval(0.0, 1.0))
    class_balance: bool = option(True, "pick within each class in proportion to its size", GROUP, check=Boolean())
    reweight: bool = option(True, "weight selected losses by m/(N pi): an unbiased full-data gradient", GROUP,
                            check=Boolean())
    infobatch_prune: float = option(0.5, "infobatch: chance of dropping a below-mean-loss sample", GROUP,
                                    check=Interval(0.0, 1.0, "left"))
    infobatch_anneal: float = option(0.125, "infobatch: 1 - InfoBatch's delta; epochs after floor(E (1 - anneal)) "
                                            "train on all data, as InfoBatch's own code (epoch 0 prunes nothing)", GROUP,
                                     check=Interval(0.0, 1.0))
    first_epoch_full: bool = option(True, "train the first epoch on all data (the paper's Algorithm 1; a search "
                                          "that stops trials early, below ratio 1, starts them at the ratio "
                                          "unless this is given)", GROUP, check=Boolean())
    unseen_first: bool = option(True, "pick never-trained samples before all others until each was seen once "
                                      "(matters without a full first epoch)", GROUP, check=Boolean())
    proxy_model: str | None = option(None, "network that scores samples for the static proxies that need one "
                                           "(none: the target network)", STATIC_GROUP, lambda: tuple(MODELS),
                                     check=Check(lambda name, value: value is None or check_name(MODELS, value, name),
                                                 ("no-such-model", 3)), imports=True)
    proxy_epochs: int | None = option(None, "epochs of the proxy model, trained once and cached (none: a quarter "
                                            "of --epochs, at least 1; at least 2 for forgetting)", STATIC_GROUP,
                                      check=Interval(1, None, integer=True, optional=True))

    def check_proxy(self) -> None:
        """Raise :class:`ConfigError` naming the first bad proxy setting."""
        check_fields(self, only=proxy_field_names())
        if self.metric == "none" and self.ratio != 1.0:
            raise ConfigError("metric", self.metric, "'none' only with ratio 1.0 (the full-data baseline); "
                                                     "use 'random' for a uniform proxy subset")
        if self.metric == "infobatch" and self.ratio != 1.0:
            raise ConfigError("ratio", self.ratio, "1.0 with metric 'infobatch' (its cost is set by infobatch_prune)")
        if ignores_schedule(self.metric) and schedule_moves(self.ratio, self.ratio_schedule):
            kept = ("one that stays at 1.0 with metric 'none' (full data; 'random' or 'auto' follow a schedule)"
                    if self.metric == "none" else f"constant with the static proxy '{self.metric}' (it keeps one "
                                                  "subset of the ratio: a schedule would be ignored)")
            raise ConfigError("ratio_schedule", self.ratio_schedule, kept)

    def proxy_settings(self) -> "ProxySettings":
        """These settings alone (from a subclass such as ``TrainConfig`` too)."""
        return ProxySettings(**{name: getattr(self, name) for name in proxy_field_names()})

    def resolved(self, starts_at_ratio: bool = False) -> "ProxySettings":
        """The settings with ``metric="auto"`` made concrete (:func:`auto_strategy`)."""
        settings = self.proxy_settings()
        if settings.metric != "auto":
            return settings
        return dataclasses.replace(settings, **auto_strategy(settings.ratio, starts_at_ratio, settings.ratio_schedule))


def proxy_field_names() -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(ProxySettings))


def default(name: str) -> Any:
    """The declared default of one :class:`ProxySettings` field."""
    return next(f.default for f in dataclasses.fields(ProxySettings) if f.name == name)


#: What ``auto`` becomes when trials start at the ratio (early-stopping HPO): a plain uniform pick of
#: never-seen samples ranked best there (class-balanced random ranked worse).
EARLY_STOPPING_PROXY = {"metric": "random", "class_balance": False}


def trials_start_at_ratio(ratio: float, early_stopping: bool, given: Collection[str]) -> bool:
    """Whether a search's trials skip the full first pass: under early stopping most stop after a rung or
    two, so below ratio 1 their first epochs take never-seen samples first at the ratio, unless the first
    epoch is set (``first_epoch_full`` among the ``given`` fields)."""
    return early_stopping and ratio < 1.0 and "first_epoch_full" not in given


def search_proxy_fields(ratio: float, metric: str, early_stopping: bool, given: Collection[str],
                        schedule: str = "constant") -> dict[str, Any]:
    """The proxy fields every trial of a search takes beside its ratio: ``metric`` with ``auto`` made the best
    measured choice for the ratio and ``schedule`` (:func:`auto_strategy`), and no full first pass where trials
    start at the ratio. A field among ``given`` (set by the user) is never overridden."""
    starts = trials_start_at_ratio(ratio, early_stopping, given)
    fields: dict[str, Any] = {"first_epoch_full": False} if starts else {}
    if metric != "auto":
        return {**fields, "metric": metric}
    chosen = auto_strategy(ratio, starts, schedule)
    return {**fields, **{k: v for k, v in chosen.items() if k == "metric" or k not in given}}


def auto_strategy(ratio: float, starts_at_ratio: bool = False, schedule: str = "constant") -> dict[str, Any]:
    """The settings ``metric="auto"`` stands for, the best measured for this case (bench/README.md), judged on
    the ratio or a ``steps:`` schedule's lowest step (:func:`lowest_ratio`): full data where that is 1; a uniform pick
    of never-seen samples when trials start at the ratio (early-stopping searches); below
    :data:`AUTO_STATIC_BELOW` a fixed random subset at a constant ratio (a uniform pick each epoch under a
    schedule, which a fixed subset would ignore); else ``loss`` under the default (calibrated, gentle) rule
    with a full first epoch."""
    lowest = lowest_ratio(ratio, schedule)
    if lowest >= 1.0:
        return {"metric": "none"}
    if starts_at_ratio:
        return dict(EARLY_STOPPING_PROXY)
    if lowest < AUTO_STATIC_BELOW:
        return {"metric": "random" if schedule_moves(ratio, schedule) else "fixed_random"}
    return {"metric": "loss"}
