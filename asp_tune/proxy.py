"""The per-run proxy-data selector: memory + schedules + selection, one object per training run."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from asp_tune.errors import ConfigError
from asp_tune.memory import ProxyMemory
from asp_tune.schedules import MetricSchedule, RatioSchedule
from asp_tune.selection import select, top_mass

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

    @property
    def count(self) -> int:
        return int(self.indices.numel())


class ProxySelector:
    """Chooses each epoch's proxy subset and learns sample importance from training logits.

    Typical loop::

        selector = ProxySelector(num_samples=N, epochs=E, ratio=0.3, metric="mixture")
        for epoch in range(E):
            plan = selector.plan(epoch)
            for x, y, idx in feeder.batches(plan.indices):
                logits = model(x); ...; selector.observe(idx, logits, y)

    ``metric="none"`` is the full-data baseline (plain shuffling, ratio must be 1.0).
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
    ):
        if not (isinstance(temperature, (int, float)) and temperature >= 0):
            raise ConfigError("temperature", temperature, "a number >= 0 (0 = deterministic top-m)")
        if not (isinstance(num_samples, int) and num_samples >= 1):
            raise ConfigError("num_samples", num_samples, "an integer >= 1")
        self.ratio_schedule = RatioSchedule(ratio, epochs, ratio_schedule, first_epoch_full)
        self.metric_schedule = MetricSchedule(metric, epochs, mixture_order, mixture_width, seed)
        if metric == "none" and ratio != 1.0:
            raise ConfigError(
                "metric", metric,
                "'none' only with ratio 1.0 (the full-data baseline); use 'random' for a uniform proxy subset",
            )
        self.num_samples = num_samples
        self.epochs = epochs
        self.temperature = float(temperature)
        self.device = torch.device(device)
        self.memory = ProxyMemory(num_samples, self.device)
        self.generator = torch.Generator(device=self.device)
        self.generator.manual_seed(int(seed))

    @property
    def metric(self) -> str:
        return self.metric_schedule.metric

    @property
    def tracks_importance(self) -> bool:
        """Whether training logits must be observed (not for ``none`` or a lone ``random``)."""
        return self.metric not in ("none", "random")

    def plan(self, epoch: int) -> EpochPlan:
        """Select and shuffle the samples of ``epoch``; consumes seeded random state."""
        n = self.num_samples
        count = self.ratio_schedule.count_at(epoch, n)
        target = self.ratio_schedule.ratio_at(epoch)
        if self.metric == "none" or count >= n:
            perm = torch.randperm(n, generator=self.generator, device=self.device)
            return EpochPlan(epoch, perm, "none" if self.metric == "none" else ALL_SAMPLES, target, 0.1)
        metric = self.metric_schedule.draw(epoch)
        values = None if metric == "random" else self.memory[metric]
        chosen = select(values, count, self.temperature, self.generator, num_samples=n)
        order = torch.randperm(count, generator=self.generator, device=self.device)
        return EpochPlan(epoch, chosen[order], metric, target, top_mass(values, self.temperature))

    def observe(self, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Update the memory from a trained batch's logits."""
        self.memory.update(indices, logits, targets)

    def state_dict(self) -> dict:
        return {
            "memory": self.memory.state_dict(),
            "metric_schedule": self.metric_schedule.state_dict(),
            "generator": self.generator.get_state(),
        }

    def load_state_dict(self, state: dict) -> None:
        self.memory.load_state_dict(state["memory"])
        self.metric_schedule.load_state_dict(state["metric_schedule"])
        self.generator.set_state(state["generator"].cpu())
