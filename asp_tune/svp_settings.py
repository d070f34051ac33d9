"""Settings of the SVP commands (``coreset``, ``active-learn``): torch-free, so their help is instant."""

from __future__ import annotations

from dataclasses import dataclass

from asp_tune.constraints import Boolean, Interval, OneOf, check_fields
from asp_tune.errors import ConfigError
from asp_tune.config import TrainConfig
from asp_tune.flags import option, reuse
from asp_tune.registry import STATIC_PROXY_NAMES

#: Static proxies that keep a subset (``fewer_epochs`` keeps all data).
CORESET_STRATEGIES = tuple(name for name in STATIC_PROXY_NAMES if name != "fewer_epochs")
#: How an active-learning round picks: by a proxy model retrained on the labelled pool, or at random.
ACTIVE_STRATEGIES = ("least_confidence", "max_entropy", "kcenters", "random")


@dataclass
class CoresetSettings:
    """``asp-tune coreset``: proxy -> selection -> target, against the target on all data."""

    strategy: str = option("forgetting", "how the core-set is chosen (a static proxy)", "core-set",
                           CORESET_STRATEGIES, check=OneOf(lambda: CORESET_STRATEGIES))
    fraction: float = option(0.5, "fraction of the training samples kept, in (0, 1]", "core-set",
                             check=Interval(0, 1, "right"))
    target_model: str = reuse(TrainConfig, "model", group="core-set",
                              help="network trained on the core-set (and on all data): a registered one, or an "
                                   "import path package.module:builder")
    baseline: bool = option(True, "also train the target on all data, for the comparison", "core-set",
                            check=Boolean())

    def validate(self) -> "CoresetSettings":
        check_fields(self)
        return self


@dataclass
class ActiveLearningSettings:
    """``asp-tune active-learn``: rounds of proxy-driven labelling, against random labelling."""

    strategy: str = option("least_confidence", "how each round picks what to label", "active learning",
                           ACTIVE_STRATEGIES, check=OneOf(lambda: ACTIVE_STRATEGIES))
    rounds: int = option(4, "labelling rounds", "active learning", check=Interval(1, None, integer=True))
    budget: int = option(100, "samples labelled per round", "active learning", check=Interval(1, None, integer=True))
    initial: int | None = option(None, "size of the initial random labelled pool (none: --budget, at least 2)",
                                 "active learning", check=Interval(2, None, integer=True, optional=True))
    target_model: str = reuse(TrainConfig, "model", group="active learning",
                              help="network trained on the final labelled pool: a registered one, or an import path "
                                   "package.module:builder")
    baseline: bool = option(True, "also run random labelling from the same initial pool", "active learning",
                            check=Boolean())

    def validate(self) -> "ActiveLearningSettings":
        check_fields(self)
        return self

    @property
    def initial_size(self) -> int:
        return self._size(self.budget)

    def check_pool(self, pool: int) -> None:
        """A named error when the rounds would label more samples than the pool holds, naming the field to
        change and the largest value that fits (``rounds`` when no budget or initial pool would)."""
        if self.initial_size + self.rounds * self.budget <= pool:
            return
        smallest_initial = 2  # the initial pool's own minimum (its declared constraint)
        if pool < smallest_initial + self.rounds:  # not even 1 label a round fits
            raise ConfigError("rounds", self.rounds, f"at most {max(pool - smallest_initial, 0)}: an initial pool "
                                                     f"of {smallest_initial} plus a label a round must fit in the "
                                                     f"{pool} training samples")
        if self.initial is not None and self.initial + self.rounds > pool:
            raise ConfigError("initial", self.initial, f"at most {pool - self.rounds}: the initial pool plus "
                                                       f"{self.rounds} rounds of at least 1 label must fit in the "
                                                       f"{pool} training samples")
        guess = (pool - (self.initial or 0)) // (self.rounds + (self.initial is None))  # exact but near 2
        most = next(b for b in range(max(guess, 1), 0, -1) if self._size(b) + self.rounds * b <= pool)
        initial = "the budget, at least 2" if self.initial is None else self.initial
        raise ConfigError("budget", self.budget, f"at most {most}: the initial pool ({initial}) plus {self.rounds} "
                                                 f"rounds x budget must fit in the {pool} training samples")

    def _size(self, budget: int) -> int:
        """The initial pool's size with ``budget``."""
        return self.initial if self.initial is not None else max(2, budget)
