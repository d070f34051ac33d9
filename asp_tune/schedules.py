"""Per-epoch schedules: how much data an epoch uses and which importance metric ranks it.

Both follow the ASP paper (appendix B): the sampling-ratio scheduler of Algorithm 2 and the
mixture of metrics whose selection probabilities are Gaussians over the epoch axis.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from asp_tune.config import TrainConfig
from asp_tune.constraints import check_value
from asp_tune.proxy_settings import MIXTURE_ORDERS, ProxySettings, ratio_steps  # noqa: F401 - MIXTURE_ORDERS: its old home

#: Metric groups of the mixture (paper appendix B.2).
METRIC_GROUPS: dict[int, tuple[str, ...]] = {
    0: ("random",),
    1: ("prediction", "gradient"),
    2: ("loss", "entropy"),
}


@dataclass(frozen=True)
class RatioSchedule:
    """Fraction of the training set used at each epoch.

    ``constant``: ``ratio`` every epoch. ``dynamic`` (Algorithm 2): for ``ratio <= 0.5`` the
    ratios are ``linspace(1, 0.01, epochs) * 2 * ratio``; above 0.5 ``linspace(1, 2 * ratio - 1,
    epochs)``. ``steps:E1=R1,E2=R2,...``: ``ratio`` until epoch ``E1`` (counted from 0), ``R1``
    from there, ``R2`` from ``E2`` on (a search's ratio rungs: a promoted trial continues on a larger
    subset). With ``first_epoch_full`` epoch 0 uses every sample (Algorithm 1) so that each one has
    a memory value before the first selection.
    """

    ratio: float
    epochs: int
    kind: str = "constant"
    first_epoch_full: bool = True

    def __post_init__(self) -> None:
        check_value(ProxySettings, "ratio", self.ratio)
        check_value(ProxySettings, "ratio_schedule", self.kind)
        check_value(TrainConfig, "epochs", self.epochs)
        object.__setattr__(self, "_steps", ratio_steps(self.kind))  # parsed once; nothing per epoch is stored

    def algorithm2(self) -> np.ndarray:
        """The raw per-epoch ratios of Algorithm 2 (before the first-epoch rule)."""
        if self.kind == "constant":
            return np.full(self.epochs, float(self.ratio))
        steps = ratio_steps(self.kind)
        if steps:
            out = np.full(self.epochs, float(self.ratio))
            for epoch, ratio in steps:
                out[epoch:] = ratio
            return out
        if self.ratio <= 0.5:
            return np.linspace(1.0, 0.01, self.epochs) * 2.0 * self.ratio
        return np.linspace(1.0, 2.0 * self.ratio - 1.0, self.epochs)

    def ratios(self) -> np.ndarray:
        """Per-epoch ratios actually used, clipped to (0, 1] (an array of every epoch: made on demand)."""
        r = np.clip(self.algorithm2(), 0.0, 1.0)
        if self.first_epoch_full:
            r[0] = 1.0
        return r

    def ratio_at(self, epoch: int) -> float:
        """The ratio of ``epoch``, computed for that epoch alone (the same number ``ratios()`` holds)."""
        e = min(epoch, self.epochs - 1)
        if e == 0 and self.first_epoch_full:
            return 1.0
        if self.kind == "constant":
            value = float(self.ratio)
        elif self._steps:
            value = float(self.ratio)
            for start, ratio in self._steps:
                if e >= start:
                    value = ratio
        else:  # Algorithm 2, as numpy's linspace computes it
            start, stop = (1.0, 0.01) if self.ratio <= 0.5 else (1.0, 2.0 * self.ratio - 1.0)
            n = self.epochs
            value = stop if (n > 1 and e == n - 1) else (e * ((stop - start) / (n - 1)) + start if n > 1 else start)
            if self.ratio <= 0.5:
                value *= 2.0 * self.ratio
        return float(min(max(value, 0.0), 1.0))

    def count_at(self, epoch: int, num_samples: int) -> int:
        """Number of samples selected at ``epoch`` out of ``num_samples``; at least 2 (a batch-norm
        network cannot train on one sample) unless the data set is smaller."""
        return min(num_samples, max(2, int(round(self.ratio_at(epoch) * num_samples))))


def parse_mixture_order(order: str) -> tuple[int, int, int]:
    """``"g201"`` -> ``(2, 0, 1)``: the group placed at 1/4, 2/4 and 3/4 of the run."""
    check_value(ProxySettings, "mixture_order", order)
    return tuple(int(c) for c in order[1:])  # type: ignore[return-value]


@dataclass
class MetricSchedule:
    """Chooses the importance metric of each epoch.

    A single metric is used every epoch; ``mixture`` draws one of the five metrics per epoch with
    probability proportional to a Gaussian density over the run's progress, centred at 1/4, 2/4
    or 3/4 according to its group's place in ``order``, all with standard deviation ``width``
    (a fraction of the run). Draws are seeded and the generator state is checkpointed.
    """

    metric: str
    epochs: int
    order: str = "g012"
    width: float = 0.125
    seed: int = 0
    _rng: np.random.Generator = field(init=False, repr=False)

    def __post_init__(self) -> None:
        parse_mixture_order(self.order)
        check_value(ProxySettings, "mixture_width", self.width)
        self._rng = np.random.default_rng(self.seed)

    def centres(self) -> dict[str, float]:
        """Centre of each metric's Gaussian as a fraction of the run."""
        groups = parse_mixture_order(self.order)
        return {
            metric: (slot + 1) / 4.0
            for slot, group in enumerate(groups)
            for metric in METRIC_GROUPS[group]
        }

    def progress(self, epoch: int) -> float:
        """Position of ``epoch``'s midpoint in the run, in (0, 1)."""
        return (epoch + 0.5) / self.epochs

    def densities(self, epoch: int) -> dict[str, float]:
        """Unnormalised Gaussian weight of each mixture metric at ``epoch`` (peak 1 at its centre)."""
        x = self.progress(epoch)
        return {m: math.exp(-0.5 * ((x - c) / self.width) ** 2) for m, c in self.centres().items()}

    def probabilities(self, epoch: int) -> dict[str, float]:
        """Probability of each metric at ``epoch`` (a point mass for a single metric)."""
        if self.metric != "mixture":
            return {self.metric: 1.0}
        x = self.progress(epoch)
        dens = self.densities(epoch)
        total = sum(dens.values())
        if total <= 0.0:  # far in the tails of every Gaussian: fall back to the nearest centre
            nearest = min(self.centres().items(), key=lambda kv: abs(kv[1] - x))[1]
            winners = [m for m, c in self.centres().items() if c == nearest]
            return {m: (1.0 / len(winners) if m in winners else 0.0) for m in dens}
        return {m: d / total for m, d in dens.items()}

    def draw(self, epoch: int) -> str:
        """The metric used at ``epoch`` (consumes one draw from the seeded generator)."""
        probs = self.probabilities(epoch)
        names = list(probs)
        if len(names) == 1:
            return names[0]
        return str(self._rng.choice(names, p=np.asarray([probs[n] for n in names])))

    def state_dict(self) -> dict:
        return {"rng": self._rng.bit_generator.state}

    def load_state_dict(self, state: dict) -> None:
        self._rng.bit_generator.state = state["rng"]
