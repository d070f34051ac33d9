"""The per-run proxy-data selector: memory + schedules + selection, one object per training run."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import torch

from asp_tune.device import restore_generator, synchronize
from asp_tune.errors import ConfigError
from asp_tune.memory import ProxyMemory
from asp_tune.registry import STATIC_PROXIES
from asp_tune.schedules import MetricSchedule, RatioSchedule
from asp_tune.selection import SelectionRule, select_subset
from asp_tune.static_proxies import StaticSubset

#: ``metric_used`` reported for an epoch that trains on every sample without ranking them.
ALL_SAMPLES = "all"


@dataclass(frozen=True)
class EpochPlan:
    """What one epoch trains on."""

    epoch: int
    indices: torch.Tensor  # selected sample indices, shuffled, on the selector's device
    metric: str  # metric that ranked the samples, "all" when every sample is used, or "none"
    target_ratio: float  # ratio asked for by the schedule
    top10_mass: float  # share of selection probability on the top 10% of samples
    weights: torch.Tensor | None = None  # (N,) loss weight by sample index, None for plain means

    @property
    def count(self) -> int:
        return int(self.indices.numel())


@dataclass(frozen=True)
class InfoBatch:
    """InfoBatch soft pruning (Qin et al., ICLR 2024), as a selection strategy.

    Each epoch every sample whose remembered loss is below the mean is dropped with probability
    ``prune``; all others are kept. Kept low-loss samples have their loss scaled by
    ``1 / (1 - prune)``, so the expected epoch loss equals the full-data loss. The last
    ``anneal`` fraction of the epochs uses all data. Its cost is set by ``prune`` (about 40% saved
    on CIFAR in the paper), not by a sampling ratio.
    """

    prune: float = 0.5
    anneal: float = 0.125

    def __post_init__(self) -> None:
        if not (isinstance(self.prune, (int, float)) and 0.0 <= self.prune < 1.0):
            raise ConfigError("infobatch_prune", self.prune, "a number in [0, 1)")
        if not (isinstance(self.anneal, (int, float)) and 0.0 <= self.anneal <= 1.0):
            raise ConfigError("infobatch_anneal", self.anneal, "a number in [0, 1] (fraction of the epochs)")

    def full_epoch(self, epoch: int, epochs: int) -> bool:
        return epoch >= epochs - math.ceil(self.anneal * epochs)

    def plan(self, loss: torch.Tensor, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
        """(kept indices, per-sample weights) for one pruned epoch."""
        low = loss < loss.mean()
        dropped = low & (torch.rand(loss.numel(), generator=generator, device=loss.device) < self.prune)
        weights = torch.where(low, 1.0 / (1.0 - self.prune), 1.0).float()
        return torch.nonzero(~dropped).squeeze(1), weights


class ProxySelector:
    """Chooses each epoch's proxy subset and learns sample importance from training logits.

    Typical loop::

        selector = ProxySelector(num_samples=N, epochs=E, ratio=0.3, metric="mixture")
        for epoch in range(E):
            plan = selector.plan(epoch)
            for x, y, idx in feeder.batches(plan.indices):
                logits = model(x); ...; selector.observe(idx, logits, y)

    ``metric="none"`` is the full-data baseline (plain shuffling, ratio must be 1.0). ``rule``
    says how values become a subset (see :mod:`asp_tune.selection`); ``labels`` are needed for
    its class balance. ``metric="infobatch"`` prunes with :class:`InfoBatch` instead (ratio 1.0).

    ``unseen_first``: until every sample has been trained once, samples never trained are picked
    before any other (at random among them; they have no memory value yet), so without a full
    first epoch every sample is seen after ``ceil(1/r)`` epochs. Once some samples have been seen,
    the unseen ones are included with probability 1 and the rest by the rule, and reweighting
    uses those inclusion probabilities; an epoch of unseen samples only is not reweighted.

    A static proxy (``metric`` in :data:`~asp_tune.registry.STATIC_PROXIES`) is chosen here once,
    from ``proxy_scores`` when it needs a proxy model, and trained on every epoch at ``ratio``.
    """

    def __init__(
        self,
        num_samples: int,
        epochs: int,
        ratio: float = 1.0,
        ratio_schedule: str = "constant",
        metric: str = "mixture",
        mixture_order: str = "g012",
        mixture_width: float = 0.125,
        temperature: float = 1.0,
        first_epoch_full: bool = True,
        seed: int = 0,
        device: torch.device | str = "cpu",
        rule: SelectionRule | None = None,
        labels: torch.Tensor | None = None,
        infobatch: InfoBatch | None = None,
        unseen_first: bool = True,
        proxy_scores=None,
    ):
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ConfigError("num_samples", num_samples, "an integer >= 1")
        self.rule = rule if rule is not None else SelectionRule("zscore", temperature=temperature)
        self.ratio_schedule = RatioSchedule(ratio, epochs, ratio_schedule, first_epoch_full)
        self.metric_schedule = MetricSchedule(metric, epochs, mixture_order, mixture_width, seed)
        if metric == "none" and ratio != 1.0:
            raise ConfigError(
                "metric", metric,
                "'none' only with ratio 1.0 (the full-data baseline); use 'random' for a uniform proxy subset",
            )
        if metric == "infobatch" and ratio != 1.0:
            raise ConfigError("ratio", ratio, "1.0 with metric 'infobatch' (its cost is set by infobatch_prune)")
        self.infobatch = infobatch or InfoBatch()
        self.num_samples = num_samples
        self.epochs = epochs
        self.device = torch.device(device)
        self.labels = None if labels is None else labels.to(self.device)
        if self.rule.class_balance and self.labels is None:
            raise ConfigError("class_balance", True, "False unless the selector is given the labels")
        self.memory = ProxyMemory(num_samples, self.device)
        self.unseen_first = bool(unseen_first)
        self.seen = torch.zeros(num_samples, dtype=torch.bool, device=self.device)  # planned at least once
        self.times_selected = torch.zeros(num_samples, dtype=torch.int32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self.static: StaticSubset | None = None  # a static proxy's samples, chosen once
        self.selection_seconds = 0.0  # choosing them (k-centers: the bulk of an SVP core-set's cost)
        if metric in STATIC_PROXIES:
            strategy = STATIC_PROXIES[metric]
            if self.labels is None and (self.rule.class_balance or strategy.needs_labels):
                raise ConfigError("metric", metric, "a static proxy given the labels of the samples")
            start = time.perf_counter()
            count = RatioSchedule(ratio, epochs, "constant", first_epoch_full=False).count_at(0, num_samples)
            labels = self.labels if self.labels is not None else torch.zeros(num_samples, dtype=torch.long)
            self.static = StaticSubset(strategy, count, num_samples, labels, proxy_scores, seed,
                                       self.rule.class_balance, self.device)
            synchronize(self.device)
            self.selection_seconds = time.perf_counter() - start

    @property
    def metric(self) -> str:
        return self.metric_schedule.metric

    @property
    def temperature(self) -> float:
        return float(self.rule.temperature)

    @property
    def tracks_importance(self) -> bool:
        """Whether training logits must be observed (not for ``none`` or a lone ``random``)."""
        return self.metric not in ("none", "random") and self.static is None

    def plan(self, epoch: int) -> EpochPlan:
        """Select and shuffle the samples of ``epoch``; consumes seeded random state."""
        plan = self._plan(epoch)
        self.seen[plan.indices] = True
        self.times_selected.index_add_(0, plan.indices, torch.ones_like(plan.indices, dtype=torch.int32))
        return plan

    def _plan(self, epoch: int) -> EpochPlan:
        n = self.num_samples
        if self.metric == "infobatch":
            return self._plan_infobatch(epoch)
        if self.static is not None:
            return self._plan_static(epoch)
        count = self.ratio_schedule.count_at(epoch, n)
        target = self.ratio_schedule.ratio_at(epoch)
        if self.metric == "none" or count >= n:
            perm = torch.randperm(n, generator=self.generator, device=self.device)
            return EpochPlan(epoch, perm, "none" if self.metric == "none" else ALL_SAMPLES, target, 0.1)
        metric = self.metric_schedule.draw(epoch)
        values = None if metric == "random" else self.memory[metric]
        unseen = torch.nonzero(~self.seen).squeeze(1) if self.unseen_first else None
        if unseen is not None and 0 < unseen.numel():
            indices, weights, top10 = self._select_unseen_first(values, count, unseen)
            metric = f"{metric}+unseen"
        else:
            chosen = select_subset(values, count, self.rule, self.generator, self.labels, num_samples=n)
            indices, weights, top10 = chosen.indices, chosen.weights, chosen.top10_mass
        order = torch.randperm(count, generator=self.generator, device=self.device)
        return EpochPlan(epoch, indices[order], metric, target, top10, weights)

    def _select_unseen_first(self, values: torch.Tensor | None, count: int, unseen: torch.Tensor):
        """Never-trained samples first (uniformly if there are more than ``count``), the rest of the
        picks by the rule among the samples already seen."""
        n = self.num_samples
        if unseen.numel() >= count:  # only fresh samples: plain uniform SGD on them, weight 1
            pick = unseen[torch.randperm(unseen.numel(), generator=self.generator, device=self.device)[:count]]
            return pick, None, 0.1
        seen = torch.nonzero(self.seen).squeeze(1)
        rest = count - unseen.numel()
        sub = select_subset(None if values is None else values[seen], rest, self.rule, self.generator,
                            None if self.labels is None else self.labels[seen], num_samples=seen.numel())
        weights = None
        if self.rule.reweight and sub.inclusion is not None:
            pi = torch.ones(n, device=self.device)
            pi[seen] = sub.inclusion.to(self.device)
            weights = count / (n * pi)
        return torch.cat([unseen, seen[sub.indices]]), weights, sub.top10_mass

    def _plan_static(self, epoch: int) -> EpochPlan:
        indices = self.static.epoch(self.generator)
        return EpochPlan(epoch, indices, self.static.strategy.name, self.ratio_schedule.ratio, math.nan)

    def _plan_infobatch(self, epoch: int) -> EpochPlan:
        n = self.num_samples
        if epoch == 0 or self.infobatch.full_epoch(epoch, self.epochs):
            perm = torch.randperm(n, generator=self.generator, device=self.device)
            return EpochPlan(epoch, perm, ALL_SAMPLES, 1.0, 0.1)
        kept, weights = self.infobatch.plan(self.memory["loss"], self.generator)
        order = torch.randperm(kept.numel(), generator=self.generator, device=self.device)
        return EpochPlan(epoch, kept[order], "infobatch", 1.0, 0.1, weights)

    def observe(self, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
                feature_norms: torch.Tensor | None = None) -> None:
        """Update the memory from a trained batch's logits (and its last-layer input norms)."""
        self.memory.update(indices, logits, targets, feature_norms)

    def state_dict(self) -> dict:
        return {
            "memory": self.memory.state_dict(),
            "metric_schedule": self.metric_schedule.state_dict(),
            "generator": self.generator.get_state(),
            "seen": self.seen.cpu().clone(),
            "times_selected": self.times_selected.cpu().clone(),
            "static": None if self.static is None else self.static.state_dict(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.memory.load_state_dict(state["memory"])
        seen = state.get("seen")
        self.seen.copy_(seen if seen is not None else self.memory.times_trained.cpu() > 0)
        self.metric_schedule.load_state_dict(state["metric_schedule"])
        if "times_selected" in state:
            self.times_selected.copy_(state["times_selected"])
        restore_generator(self.generator, state["generator"])
        if self.static is not None and state.get("static") is not None:
            self.static.load_state_dict(state["static"])
