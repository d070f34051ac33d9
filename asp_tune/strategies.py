"""Subset strategies: how each epoch's proxy subset is chosen, one object per run.

A strategy is bound to a run (:class:`Run`: the number of samples, epochs, device, seeded
generator, the per-sample memory and, where it needs them, labels and a scoring model's scores),
then asked each epoch for an :class:`EpochPlan`. It names the memory statistics it reads, so the
selector only updates the memory for strategies that use it, and it round-trips its own state.

Built in: :class:`FullData` (``none``), :class:`Importance` (``random`` and every memory statistic,
under a :class:`~asp_tune.selection.SelectionRule`), :class:`Mixture` (the paper's mixture),
:class:`InfoBatchPruning` (``infobatch``) and every static proxy (:mod:`asp_tune.static_proxies`).
Each sits in :data:`asp_tune.registry.STRATEGIES` by name; nothing elsewhere asks which one it has.
A new strategy is one class and one ``register_strategy`` line (see ``tests/test_strategies.py``).
"""

from __future__ import annotations

import copy

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, Sequence

import torch

from asp_tune.constraints import check_value
from asp_tune.errors import ConfigError
from asp_tune.imports import import_object, is_import_path
from asp_tune.proxy_settings import ProxySettings
from asp_tune.registry import STATISTICS, STRATEGIES
from asp_tune.schedules import MetricSchedule, RatioSchedule
from asp_tune.selection import SelectionRule, select_subsets

if TYPE_CHECKING:
    from asp_tune.memory import ProxyMemory
    from asp_tune.scores import ProxyScores

#: ``metric`` reported for an epoch that trains on every sample without ranking them.
ALL_SAMPLES = "all"


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch trains on."""

    epoch: int
    indices: torch.Tensor  # selected sample indices, shuffled, on the selector's device
    metric: str  # what ranked the samples, "all" when every sample is used, or "none"
    target_ratio: float  # ratio asked for by the schedule
    top10_mass: float  # share of selection probability on the top 10% of samples
    weights: torch.Tensor | None = None  # (N,) loss weight by sample index, None for plain means

    @property
    def count(self) -> int:
        return int(self.indices.numel())


@dataclass
class Run:
    """What a strategy is bound to: one training run's sizes, device, random state and memory."""

    num_samples: int
    epochs: int
    device: torch.device
    generator: torch.Generator  # the selector's: every draw of a run comes from it, in order
    memory: "ProxyMemory"
    seen: torch.Tensor  # (N,) bool: trained at least once (ProxySelector.seen)
    seed: int = 0
    labels: torch.Tensor | None = None
    scores: "ProxyScores | None" = None


class SubsetStrategy:
    """How each epoch's subset is chosen. Subclasses set the class attributes that apply and
    implement :meth:`plan`; the rest has sensible defaults.

    - ``needs_scores``: it needs a scoring (proxy) model's per-sample scores, trained before the run.
    - ``needs_labels``: it chooses by class (the selector must be given the labels).
    - ``kind``: ``"ASP"`` (chosen anew each epoch), ``"static"`` (chosen once) or ``"full"``.
    """

    name: str = "strategy"
    needs_scores: bool = False
    needs_labels: bool = False
    kind: str = "ASP"
    run: Run

    @classmethod
    def from_settings(cls, settings: ProxySettings) -> "SubsetStrategy":
        """Build from :class:`ProxySettings` (a registered class is built this way)."""
        return cls()

    def statistics(self) -> tuple[str, ...]:
        """The memory statistics :meth:`plan` reads (the memory learns from batches only if any)."""
        return ()

    def bind(self, run: Run) -> None:
        """Attach to one run; called once, before the first :meth:`plan`."""
        self.run = run

    def plan(self, epoch: int) -> EpochPlan:
        raise NotImplementedError

    @classmethod
    def plan_together(cls, strategies: Sequence["SubsetStrategy"], epochs: Sequence[int]) -> list[EpochPlan]:
        """The plans of several runs' strategies of this class (a pack's members) for their ``epochs``: each
        run's plan the one its :meth:`plan` makes. A class may draw them in one vectorised pass; by default
        each plans alone."""
        return [strategy.plan(epoch) for strategy, epoch in zip(strategies, epochs)]

    def epoch_size(self, epoch: int) -> int | None:
        """How many samples ``epoch`` trains on, known before it is planned; None when it depends on
        what the run learns (InfoBatch)."""
        return None

    @property
    def ratio(self) -> float:
        """The data fraction per epoch it aims at (reported; 1.0 for full data)."""
        return 1.0

    def data_share(self, epochs: int) -> float:
        """The mean share of the data an epoch takes over a run of ``epochs`` (budgets are rescaled by it): its
        ratio, for a strategy whose every epoch takes it (a static subset: no full first epoch, no schedule)."""
        return min(1.0, float(self.ratio))

    def describe(self) -> dict[str, Any]:
        """What a summary reports about the strategy."""
        return {"strategy": self.name, "kind": self.kind, "ratio": self.ratio}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

    def _shuffled(self, count: int) -> torch.Tensor:
        return torch.randperm(count, generator=self.run.generator, device=self.run.device)


class FullData(SubsetStrategy):
    """Every sample every epoch, reshuffled (the full-data baseline, ``none``)."""

    name, kind = "none", "full"

    def plan(self, epoch: int) -> EpochPlan:
        return EpochPlan(epoch, self._shuffled(self.run.num_samples), "none", 1.0, 0.1)

    def epoch_size(self, epoch: int) -> int:
        return self.run.num_samples


class Importance(SubsetStrategy):
    """Sampling by one memory statistic (``metric``; ``random``: uniform) under ``rule``, at the
    ratios of ``schedule`` (:class:`~asp_tune.schedules.RatioSchedule`).

    ``unseen_first``: until every sample has been trained once, samples never trained are picked
    before any other (at random among them; they have no memory value yet), so without a full
    first epoch every sample is seen after ``ceil(1/r)`` epochs. Once some samples have been seen,
    the unseen ones are included with probability 1 and the rest by the rule, and reweighting
    uses those inclusion probabilities; an epoch of unseen samples only is not reweighted.
    """

    def __init__(self, metric: str = "loss", ratio: float = 0.3, rule: SelectionRule | None = None,
                 schedule: str = "constant", first_epoch_full: bool = True, unseen_first: bool = True):
        if metric != "random" and metric not in STATISTICS:
            raise ConfigError("metric", metric, ("random",) + tuple(STATISTICS))
        self.metric = metric
        self.name = metric
        self._ratio = ratio
        self.rule = rule if rule is not None else SelectionRule()
        self.schedule_kind = schedule
        self.first_epoch_full = bool(first_epoch_full)
        self.unseen_first = bool(unseen_first)
        RatioSchedule(ratio, 1, schedule, first_epoch_full)  # validates ratio and schedule now

    @classmethod
    def settings_for(cls, metric: str, settings: ProxySettings) -> "Importance":
        return cls(metric, settings.ratio, SelectionRule.from_settings(settings), settings.ratio_schedule, settings.first_epoch_full,
                   settings.unseen_first)

    @property
    def needs_labels(self) -> bool:  # type: ignore[override]
        return self.rule.class_balance

    @property
    def ratio(self) -> float:
        return float(self._ratio)

    def data_share(self, epochs: int) -> float:
        """The mean of its schedule's ratios: a full first epoch, Algorithm 2's or a steps schedule included."""
        return float(RatioSchedule(self._ratio, epochs, self.schedule_kind, self.first_epoch_full).ratios().mean())

    def bind(self, run: Run) -> None:
        super().bind(run)
        self.schedule = RatioSchedule(self._ratio, run.epochs, self.schedule_kind, self.first_epoch_full)

    def statistics(self) -> tuple[str, ...]:
        return () if self.metric == "random" else (self.metric,)

    def metric_at(self, epoch: int) -> str:
        """The statistic that ranks ``epoch``'s samples."""
        return self.metric

    def epoch_size(self, epoch: int) -> int:
        return self.schedule.count_at(epoch, self.run.num_samples)

    def plan(self, epoch: int) -> EpochPlan:
        return Importance.plan_together([self], [epoch])[0]

    @classmethod
    def plan_together(cls, strategies: Sequence["SubsetStrategy"], epochs: Sequence[int]) -> list[EpochPlan]:
        """Runs alike (the same rule, epoch and sizes) select in one vectorised pass
        (:func:`~asp_tune.selection.select_subsets`), each with its own memory, generator and unseen samples. A run
        of a subclass that plans its own way plans alone; runs that share a generator all plan one by one."""
        if len({id(s.run.generator) for s in strategies}) < len(strategies):  # their draws interleave alone
            return [strategy.plan(epoch) for strategy, epoch in zip(strategies, epochs)]
        plans: list[EpochPlan | None] = [None] * len(strategies)
        alike: dict[tuple, list[int]] = {}
        for i, (strategy, epoch) in enumerate(zip(strategies, epochs)):
            if type(strategy).plan is not Importance.plan:
                plans[i] = strategy.plan(epoch)
                continue
            run = strategy.run
            key = (strategy.rule, strategy.unseen_first, epoch, strategy.epoch_size(epoch), run.num_samples,
                   str(run.device))
            alike.setdefault(key, []).append(i)
        for (_, _, epoch, count, _, _), members in alike.items():
            for i, plan in zip(members, _plan_alike([strategies[i] for i in members], epoch, count)):
                plans[i] = plan
        return plans

    def describe(self) -> dict[str, Any]:
        rule = self.rule.rule if self.statistics() else "uniform"  # no statistic to weigh: the rule plays no part
        return {**super().describe(), "rule": rule, "schedule": self.schedule_kind}


def _plan_alike(strategies: list[Importance], epoch: int, count: int) -> list[EpochPlan]:
    """:meth:`Importance.plan` of runs alike, their selections drawn together. Each run draws from its own
    generator in the order it draws alone: its subset, then the subset's shuffle."""
    first = strategies[0]
    n, rule = first.run.num_samples, first.rule
    targets = [s.schedule.ratio_at(epoch) for s in strategies]
    if count >= n:
        return [EpochPlan(epoch, s._shuffled(n), ALL_SAMPLES, t, 0.1) for s, t in zip(strategies, targets)]
    metrics = [s.metric_at(epoch) for s in strategies]
    values = [None if m == "random" else s.run.memory[m] for s, m in zip(strategies, metrics)]
    unseen = [torch.nonzero(~s.run.seen).squeeze(1) if s.unseen_first else None for s in strategies]
    chosen: list[tuple[torch.Tensor, torch.Tensor | None, float] | None] = [None] * len(strategies)
    pools: dict[int, list[int]] = {}  # runs that still pick among some samples by the rule, by how many
    for i, (s, fresh) in enumerate(zip(strategies, unseen)):
        if fresh is not None and fresh.numel() >= count:  # only fresh samples: plain uniform SGD on them, weight 1
            chosen[i] = fresh[s._shuffled(fresh.numel())[:count]], None, 0.1
        else:
            pools.setdefault(0 if fresh is None else int(fresh.numel()), []).append(i)
    for fresh_count, members in pools.items():
        # never-trained samples first (included with probability 1), the rest by the rule among the seen ones
        seen = [torch.nonzero(strategies[i].run.seen).squeeze(1) if fresh_count else None for i in members]
        labels = [strategies[i].run.labels for i in members]
        pool_values = [values[i] for i in members]
        if fresh_count:
            pool_values = [v if v is None else v[idx] for v, idx in zip(pool_values, seen)]
            labels = [lab if lab is None else lab[idx] for lab, idx in zip(labels, seen)]
        picks = select_subsets(pool_values, count - fresh_count, rule, [strategies[i].run.generator for i in members],
                               labels if rule.class_balance else None, n - fresh_count)
        for i, idx, pick in zip(members, seen, picks):
            if not fresh_count:
                chosen[i] = pick.indices, pick.weights, pick.top10_mass
                continue
            weights = None
            if rule.reweight and pick.inclusion is not None:
                pi = torch.ones(n, device=idx.device)
                pi[idx] = pick.inclusion.to(idx.device)
                weights = count / (n * pi)
            chosen[i] = torch.cat([unseen[i], idx[pick.indices]]), weights, pick.top10_mass
    plans = []
    for s, metric, fresh, target, (indices, weights, top10) in zip(strategies, metrics, unseen, targets, chosen):
        if fresh is not None and fresh.numel() > 0:
            metric = f"{metric}+unseen"
        plans.append(EpochPlan(epoch, indices[s._shuffled(count)], metric, target, top10, weights))
    return plans


class Mixture(Importance):
    """The ASP mixture: each epoch one statistic is drawn by the Gaussians of
    :class:`~asp_tune.schedules.MetricSchedule` (groups ordered by ``order``, std ``width``)."""

    def __init__(self, ratio: float = 0.3, order: str = "g012", width: float = 0.125, **kwargs: Any):
        super().__init__("random", ratio, **kwargs)
        self.name = "mixture"
        self.order, self.width = order, width
        centres = MetricSchedule("mixture", 1, order, width).centres()  # validates order and width now
        # asked several times a step: kept, not a schedule and a generator built per call
        self._statistics = tuple(m for m in centres if m != "random")

    def bind(self, run: Run) -> None:
        super().bind(run)
        self.metric_schedule = MetricSchedule("mixture", run.epochs, self.order, self.width, run.seed)

    def statistics(self) -> tuple[str, ...]:
        return self._statistics

    def metric_at(self, epoch: int) -> str:
        return self.metric_schedule.draw(epoch)

    def state_dict(self) -> dict:
        return {"metric_schedule": self.metric_schedule.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.metric_schedule.load_state_dict(state["metric_schedule"])


class InfoBatchPruning(SubsetStrategy):
    """InfoBatch soft pruning (Qin et al., ICLR 2024).

    Each epoch every sample whose remembered loss is below the mean is dropped with probability
    ``prune``; all others are kept. Kept low-loss samples have their loss scaled by
    ``1 / (1 - prune)``, so the expected epoch loss equals the full-data loss. The first epoch and
    the epochs after ``floor(E (1 - anneal))`` use all data, as the reference implementation's
    ``delta = 1 - anneal`` does (epochs ``1 .. floor(E delta)`` prune). Its cost is set by ``prune``
    (about 40% saved on CIFAR in the paper), not by a ratio.
    """

    name = "infobatch"

    def __init__(self, prune: float = 0.5, anneal: float = 0.125):
        from asp_tune.proxy_settings import ProxySettings

        check_value(ProxySettings, "infobatch_prune", prune)
        check_value(ProxySettings, "infobatch_anneal", anneal)
        self.prune, self.anneal = float(prune), float(anneal)

    def statistics(self) -> tuple[str, ...]:
        return ("loss",)

    def full_epoch(self, epoch: int) -> bool:
        """Epoch 0 and those after ``floor(E delta)``, ``delta = 1 - anneal`` (1e-9: ``1 - (1 - delta)`` may
        round below ``delta``)."""
        return epoch == 0 or epoch > math.floor(self.run.epochs * (1.0 - self.anneal) + 1e-9)

    def epoch_size(self, epoch: int) -> int | None:
        return self.run.num_samples if self.full_epoch(epoch) else None

    def prune_plan(self, loss: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept indices, per-sample weights) for one pruned epoch."""
        low = loss < loss.mean()
        dropped = low & (torch.rand(loss.numel(), generator=generator, device=loss.device) < self.prune)
        weights = torch.where(low, 1.0 / (1.0 - self.prune), 1.0).float()
        return torch.nonzero(~dropped).squeeze(1), weights

    def plan(self, epoch: int) -> EpochPlan:
        if self.full_epoch(epoch):
            return EpochPlan(epoch, self._shuffled(self.run.num_samples), ALL_SAMPLES, 1.0, 0.1)
        kept, weights = self.prune_plan(self.run.memory["loss"], self.run.generator)
        return EpochPlan(epoch, kept[self._shuffled(kept.numel())], "infobatch", 1.0, 0.1, weights)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "prune": self.prune, "anneal": self.anneal}


# ----------------------------------------------------------------------------- registry factories
# Each takes the run's ProxySettings; STRATEGIES names them ("module:attribute", imported on first use).

def full_data(settings: ProxySettings) -> SubsetStrategy:
    if settings.ratio != 1.0:
        raise ConfigError("metric", "none", "'none' only with ratio 1.0 (the full-data baseline); "
                                            "use 'random' for a uniform proxy subset")
    return FullData()


def uniform(settings: ProxySettings) -> SubsetStrategy:
    return Importance.settings_for("random", settings)


def mixture(settings: ProxySettings) -> SubsetStrategy:
    return Mixture(settings.ratio, settings.mixture_order, settings.mixture_width, rule=SelectionRule.from_settings(settings),
                   schedule=settings.ratio_schedule, first_epoch_full=settings.first_epoch_full,
                   unseen_first=settings.unseen_first)


def infobatch(settings: ProxySettings) -> SubsetStrategy:
    if settings.ratio != 1.0:
        raise ConfigError("ratio", settings.ratio, "1.0 with metric 'infobatch' (its cost is set by infobatch_prune)")
    return InfoBatchPruning(settings.infobatch_prune, settings.infobatch_anneal)


def register_strategy(name: str, entry: Any) -> None:
    """Register a strategy under ``name``: a factory ``(ProxySettings) -> SubsetStrategy``, a
    :class:`SubsetStrategy` subclass (built with ``from_settings``), or a ``"module:attribute"`` path
    to either. Accepted at once by ``ProxyData``, ``TrainConfig`` (``metric=name``) and search spaces."""
    STRATEGIES.register(name, entry)


def _unbound(strategy: SubsetStrategy) -> SubsetStrategy:
    """``strategy`` for its first run (a copy of it kept as it was then); for each later run, a copy of it as it
    was before its first, so two runs never share one strategy's state. (An object without a ``__dict__`` is
    used as given.)"""
    state = getattr(strategy, "__dict__", None)
    if state is None:
        return strategy
    if state.get("run") is not None:  # bound to a run already
        before = state.get("_before_first_run")
        if before is None:
            raise ConfigError("strategy", type(strategy).__name__, "a strategy object no other run uses (this one "
                                                                   "serves one already and cannot be copied): a new "
                                                                   "one for each ProxyData")
        fresh = copy.deepcopy(before)
        fresh.__dict__["_before_first_run"] = before  # a strategy handed on from a run is copied the same way
        return fresh
    if "_before_first_run" not in state:
        try:
            state["_before_first_run"] = copy.deepcopy(strategy)
        except Exception:  # noqa: BLE001 - holds what cannot be copied: it serves one run only
            state["_before_first_run"] = None
    return strategy


def follows_ratio_schedule(settings: ProxySettings) -> bool:
    """Whether the strategy ``settings`` name trains each epoch on the ratio its schedule gives (a static proxy
    keeps the subset it chose once: a step to ratio 1 never reaches all the data)."""
    return make_strategy(settings.metric, settings).kind != "static"


#: The strategies that pick uniformly at random: the control a proxy must beat at the same cost (drawn anew each
#: epoch, and drawn once for a static proxy).
UNIFORM_CONTROLS = ("random", "fixed_random")


def uniform_control(metric: str, settings: ProxySettings | None = None) -> str | None:
    """The uniformly random strategy of the same cost as ``metric``: ``fixed_random`` beside a static proxy,
    ``random`` beside one that follows the ratio schedule; None when ``metric`` is one already (or full data)."""
    if metric in UNIFORM_CONTROLS or metric in ("none", ALL_SAMPLES):
        return None
    return "fixed_random" if make_strategy(metric, settings or ProxySettings(ratio=0.5)).kind == "static" else "random"


def make_strategy(strategy: "str | SubsetStrategy | Callable[[ProxySettings], SubsetStrategy]",
                  settings: ProxySettings | None = None, starts_at_ratio: bool = False) -> SubsetStrategy:
    """A fresh strategy for one run: ``strategy`` as an object (used as given; once it served a run, a copy
    of it as it was before), a registered name, a memory statistic's
    name (importance sampling on it), an import path ``package.module:name``, or ``"auto"``; named ones are
    built from ``settings`` (default: :class:`ProxySettings`'s)."""
    if isinstance(strategy, SubsetStrategy):
        return _unbound(strategy)
    settings = (settings or ProxySettings()).proxy_settings()
    if strategy is None:
        strategy = settings.metric
    if isinstance(strategy, str):
        settings = ProxySettings(**{**vars(settings), "metric": strategy}).resolved(starts_at_ratio)
        strategy = settings.metric
        if strategy in STRATEGIES:
            entry = STRATEGIES[strategy]
        elif strategy in STATISTICS:
            return Importance.settings_for(strategy, settings)
        elif is_import_path(strategy):
            entry = import_object(strategy, "metric")
        else:
            from asp_tune.proxy_settings import metric_choices

            raise ConfigError("metric", strategy, metric_choices())
    else:
        entry = strategy
    if isinstance(entry, SubsetStrategy):
        raise ConfigError("metric", getattr(entry, "name", entry), "a registered factory or class, not a bound object")
    built = entry.from_settings(settings) if isinstance(entry, type) and issubclass(entry, SubsetStrategy) \
        else entry(settings)
    if not isinstance(built, SubsetStrategy):
        raise ConfigError("metric", strategy, "a factory that returns a SubsetStrategy")
    return built


__all__ = ["ALL_SAMPLES", "EpochPlan", "FullData", "Importance", "InfoBatchPruning", "Mixture", "Run",
           "SubsetStrategy", "follows_ratio_schedule", "make_strategy", "register_strategy"]
