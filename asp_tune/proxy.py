"""The per-run proxy-data selector: a subset strategy, the per-sample memory and the seeded state.

:class:`ProxySelector` binds a :class:`~asp_tune.strategies.SubsetStrategy` to one run, plans each
epoch, learns from trained batches (only when the strategy reads the memory) and round-trips all
of it through ``state_dict``. The built-in trainer, the Ray trainable, the NAS searchers and the
loop API (:class:`asp_tune.loop.ProxyData`) all use it.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Sequence

import torch

from asp_tune.config import TrainConfig
from asp_tune.constraints import check_value
from asp_tune.device import restore_generator
from asp_tune.errors import ConfigError
from asp_tune.memory import ProxyMemory, available_inputs
from asp_tune.proxy_settings import ProxySettings
from asp_tune.strategies import ALL_SAMPLES, EpochPlan, InfoBatchPruning, Run, SubsetStrategy, make_strategy

__all__ = ["ALL_SAMPLES", "EpochPlan", "ProxySelector"]


def __getattr__(name: str) -> Any:
    if name == "InfoBatch":  # one InfoBatch: asp_tune.InfoBatch (the loop API's); this was the strategy class
        import warnings

        warnings.warn("asp_tune.proxy.InfoBatch is deprecated: the strategy is asp_tune.strategies.InfoBatchPruning "
                      "and asp_tune.InfoBatch wraps a data set", DeprecationWarning, stacklevel=2)
        return InfoBatchPruning
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ProxySelector:
    """Chooses each epoch's proxy subset and learns sample importance from training batches.

    Typical loop::

        selector = ProxySelector(num_samples=N, epochs=E, ratio=0.3, metric="loss", labels=y)
        for epoch in range(E):
            plan = selector.plan(epoch)
            for x, y, idx in feeder.batches(plan.indices):
                logits = model(x); ...; selector.observe(idx, logits, y)

    ``strategy``: a :class:`SubsetStrategy`, a registered name, a statistic or an import path; by
    default the one ``settings`` (any :class:`ProxySettings` field as a keyword: ``ratio``,
    ``metric``, ``selection_rule``, ...) name. The defaults are :class:`ProxySettings`'s, the same as
    ``TrainConfig``'s and ``ProxyData``'s. ``labels`` are needed for class balance and for
    strategies that choose by class; ``proxy_scores`` for strategies that need a scoring model.

    ``seen`` marks the samples trained at least once (unseen-first strategies pick the others first). With
    ``seen_when_planned`` (the built-in trainer, which trains every sample it plans) planning marks them;
    else the caller marks what it trained with :meth:`mark_trained` (the loop API, whose loop may drop a
    last batch or leave an epoch early).
    """

    def __init__(self, num_samples: int, epochs: int, strategy: SubsetStrategy | str | None = None, *,
                 seed: int = 0, device: torch.device | str = "cpu", labels: torch.Tensor | None = None,
                 proxy_scores: Any = None, starts_at_ratio: bool = False, seen_when_planned: bool = True,
                 **settings: Any):
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ConfigError("num_samples", num_samples, "an integer >= 1")
        check_value(TrainConfig, "epochs", epochs)
        unknown = sorted(set(settings) - set(vars(ProxySettings())))
        if unknown:
            raise ConfigError("setting", unknown[0], sorted(vars(ProxySettings())))
        if labels is None and strategy is None:
            settings.setdefault("class_balance", False)  # nothing to balance by (regression, multi-label)
        proxy = ProxySettings(**settings)
        proxy.check_proxy()
        self.settings = proxy
        self.strategy = make_strategy(strategy if strategy is not None else proxy.metric, proxy, starts_at_ratio)
        self.num_samples, self.epochs = num_samples, epochs
        self.device = torch.device(device)
        self.labels = None if labels is None else labels.to(self.device)
        if self.strategy.needs_labels and self.labels is None:
            why = ("its subsets are balanced by class (class_balance=True; class_balance=False selects without "
                   "labels)" if proxy.class_balance else "it chooses by class")
            raise ConfigError("labels", None, f"the samples' class labels for strategy '{self.strategy.name}': {why}")
        if self.strategy.needs_scores and proxy_scores is None:
            raise ConfigError("metric", self.strategy.name, "a strategy given the scores of its proxy model "
                                                            "(asp_tune.build makes them from a config)")
        self.memory = ProxyMemory(num_samples, self.device)
        missing = [s for s in self.strategy.statistics() if s not in self.memory.columns]
        if missing:
            raise ConfigError("metric", self.strategy.name, f"statistics the memory keeps (missing {missing})")
        self.seen = torch.zeros(num_samples, dtype=torch.bool, device=self.device)  # trained at least once
        self.seen_when_planned = bool(seen_when_planned)
        self.times_selected = torch.zeros(num_samples, dtype=torch.int32, device=self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))
        self.strategy.bind(Run(num_samples, epochs, self.device, self.generator, self.memory, self.seen, int(seed),
                               self.labels, proxy_scores))

    @property
    def metric(self) -> str:
        return self.strategy.name

    @property
    def tracks_importance(self) -> bool:
        """Whether trained batches must be observed (the strategy reads the memory)."""
        return bool(self.strategy.statistics())

    @property
    def required_inputs(self) -> frozenset[str]:
        """What :meth:`observe` must be given for the strategy's statistics (``loss``, ``logits``, ``targets``)."""
        from asp_tune.registry import STATISTICS

        needs: set[str] = set()
        for name in self.strategy.statistics():
            needs |= STATISTICS[name].needs
        return frozenset(needs)

    @property
    def selection_seconds(self) -> float:
        """Seconds spent choosing a static subset (k-centers: the bulk of an SVP core-set's cost)."""
        return float(getattr(self.strategy, "selection_seconds", 0.0))

    def epoch_size(self, epoch: int) -> int | None:
        """How many samples ``epoch`` trains on, before it is planned (None when it cannot be known)."""
        return self.strategy.epoch_size(epoch)

    def plan(self, epoch: int, most: int | None = None) -> EpochPlan:
        """Select and shuffle the samples of ``epoch``; consumes seeded random state. ``most``: at most this many
        of them (the first of the shuffled picks), the others neither marked seen nor counted selected."""
        plan = self.strategy.plan(epoch)
        if most is not None and plan.count > most:
            plan = dataclasses.replace(plan, indices=plan.indices[:most])
        return self._planned(plan)

    @staticmethod
    def plan_together(selectors: Sequence["ProxySelector"], epochs: Sequence[int]) -> list[EpochPlan]:
        """:meth:`plan` of several selectors (a pack's members) for their ``epochs``, drawn together where their
        strategies are of one class (:meth:`~asp_tune.strategies.SubsetStrategy.plan_together`): each
        selector's plan and random state are the ones :meth:`plan` leaves (up to the rounding of sums:
        :func:`~asp_tune.selection.select_subsets`)."""
        kinds = {type(s.strategy) for s in selectors}
        kind = kinds.pop() if len(kinds) == 1 else SubsetStrategy  # of several classes: each plans alone
        plans = kind.plan_together([s.strategy for s in selectors], list(epochs))
        return [s._planned(plan) for s, plan in zip(selectors, plans)]

    def planning_state(self) -> dict:
        """A copy of all that planning an epoch changes (the random state, which samples were seen and how often,
        the strategy's own state; not the memory, which only training batches change):
        :meth:`restore_planning` undoes a plan that was not trained."""
        return copy.deepcopy({"strategy": self.strategy.state_dict(), "generator": self.generator.get_state(),
                              "seen": self.seen, "times_selected": self.times_selected})

    def restore_planning(self, state: dict) -> None:
        """Put back a :meth:`planning_state` (or those parts of a :meth:`state_dict`)."""
        self.seen.copy_(state["seen"])
        self.times_selected.copy_(state["times_selected"])
        restore_generator(self.generator, state["generator"])
        self.strategy.load_state_dict(state["strategy"])

    def _planned(self, plan: EpochPlan) -> EpochPlan:
        if self.seen_when_planned:
            self.mark_trained(plan.indices)
        self.times_selected.index_add_(0, plan.indices, torch.ones_like(plan.indices, dtype=torch.int32))
        return plan

    def mark_trained(self, indices: torch.Tensor) -> None:
        """Mark ``indices`` (on the selector's device) trained: seen (no wait for a device)."""
        self.seen.index_fill_(0, indices, True)

    def observe(self, indices: torch.Tensor, logits: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                feature_norms: torch.Tensor | None = None, losses: torch.Tensor | None = None) -> None:
        """Update the memory from a trained batch: its per-sample losses and/or logits and targets
        (and its last-layer input norms). A no-op when the strategy reads no statistic."""
        if not self.tracks_importance:
            return
        self.check_inputs(logits, targets, losses)
        self.memory.update(indices, logits, targets, feature_norms, losses)

    def check_inputs(self, logits: torch.Tensor | None, targets: torch.Tensor | None,
                     losses: torch.Tensor | None) -> None:
        """Refuse, naming what is missing, a batch without what the strategy's statistics read."""
        given = available_inputs(losses, logits, targets)
        missing = sorted(n for n in self.required_inputs if not given[n])
        if missing:
            raise ConfigError("update", f"without {' and '.join(missing)}",
                              f"the {' and '.join(missing)} of the batch: strategy '{self.strategy.name}' reads "
                              f"{', '.join(self.strategy.statistics())}")

    def describe(self) -> dict[str, Any]:
        return self.strategy.describe()

    def state_dict(self) -> dict:
        return {
            "strategy_name": self.strategy.name,
            "ratio": self.strategy.ratio,
            "memory": self.memory.state_dict(),
            "strategy": self.strategy.state_dict(),
            "generator": self.generator.get_state(),
            "seen": self.seen.cpu().clone(),
            "times_selected": self.times_selected.cpu().clone(),
        }

    def load_state_dict(self, state: dict) -> None:
        if "strategy" not in state:
            raise ValueError("selector state from an older asp_tune (no strategy state); start the run again")
        if state.get("strategy_name", self.strategy.name) != self.strategy.name:
            raise ValueError(f"it was saved with strategy '{state['strategy_name']}', not '{self.strategy.name}'")
        if state["seen"].numel() != self.num_samples:
            raise ValueError(f"it was saved for {state['seen'].numel()} samples, not {self.num_samples}")
        if abs(float(state.get("ratio", self.strategy.ratio)) - self.strategy.ratio) > 1e-12:
            raise ValueError(f"it was saved at ratio {state['ratio']:g}, not {self.strategy.ratio:g}")
        self.memory.load_state_dict(state["memory"])
        self.restore_planning(state)
