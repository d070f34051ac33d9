"""Static proxies: a subset chosen once, then fixed for the whole run (the baselines ASP must beat).

From the proxy-datasets paper (a random subset; the easiest or hardest samples by a proxy model's
loss; half of the classes; fewer epochs on all data) and from selection via proxy (SVP, Coleman et
al. 2020: forgetting events, max entropy, least confidence and greedy k-centers, each scored by a
small proxy model trained once, :mod:`asp_tune.proxy_scores`).

Every strategy is a ``metric`` setting (registered in :data:`asp_tune.registry.STRATEGIES`): at ratio
``r`` it trains on the same ``round(r N)`` samples every epoch, so its cost is ``r`` data passes per
epoch (plus the proxy model's, for those that need one). ``entropy_histogram`` is the selection of
Na et al. ("Accelerating Neural Architecture Search via Proxy Data", IJCAI 2021; the ASP paper's
"DARTS-Accelerating" baseline). The ratio schedule and the full first epoch are
ASP's and do not apply. ``fewer_epochs`` trains on all data for ``r`` times the epochs: each epoch
takes the next ``r N`` samples of a stream of shuffled full passes, and the learning-rate schedule
(stepped per epoch) is compressed with it.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch

from asp_tune.device import synchronize
from asp_tune.errors import ConfigError, DataError
from asp_tune.schedules import RatioSchedule
from asp_tune.selection import SelectionRule, inclusion_probabilities, select_subset, systematic_sample
from asp_tune.strategies import EpochPlan, Run, SubsetStrategy

if TYPE_CHECKING:
    from asp_tune.scores import ProxyScores


@dataclass(frozen=True)
class StaticProxy:
    """One static strategy. ``choose`` returns the fixed subset's indices (``None``: all data, streamed)."""

    name: str
    description: str
    needs_proxy_model: bool = False
    proxy_no_bigger: bool = False  # SVP's premise: the proxy model must cost less than the target
    needs_labels: bool = False  # chooses by class whatever class_balance says
    balances_classes: bool = True  # reads class_balance (False: chooses its own way, which the summary says)

    def choose(self, count: int, labels: torch.Tensor, scores: "ProxyScores | None", generator: torch.Generator,
               class_balance: bool = True) -> torch.Tensor | None:
        raise NotImplementedError

    def __call__(self, settings: Any) -> "StaticStrategy":
        """The strategy for one run at ``settings.ratio`` (the registry's factory)."""
        return StaticStrategy(self, settings.ratio, settings.class_balance)


class StaticStrategy(SubsetStrategy):
    """A static proxy as a subset strategy: its subset is chosen once, when bound to a run, then
    trained on every epoch (reshuffled); ``selection_seconds`` is what choosing it cost."""

    kind = "static"

    def __init__(self, proxy: StaticProxy, ratio: float, class_balance: bool = True):
        RatioSchedule(ratio, 1)  # validates the ratio
        # what it does: kcenters, entropy_histogram and half_classes choose without it (summaries said True)
        self.proxy, self._ratio = proxy, float(ratio)
        self.class_balance = bool(class_balance) and proxy.balances_classes
        self.name = proxy.name
        self.needs_scores = proxy.needs_proxy_model
        self.needs_labels = proxy.needs_labels or self.class_balance
        self.selection_seconds = 0.0

    @property
    def ratio(self) -> float:
        return self._ratio

    def bind(self, run: Run) -> None:
        super().bind(run)
        start = time.perf_counter()
        count = RatioSchedule(self._ratio, run.epochs, "constant", first_epoch_full=False).count_at(0, run.num_samples)
        labels = run.labels if run.labels is not None else torch.zeros(run.num_samples, dtype=torch.long)
        self.subset = StaticSubset(self.proxy, count, run.num_samples, labels, run.scores, run.seed,
                                   self.class_balance, run.device)
        synchronize(run.device)
        self.selection_seconds = time.perf_counter() - start

    def epoch_size(self, epoch: int) -> int:
        return self.subset.count if self.subset.fixed is None else int(self.subset.fixed.numel())

    def plan(self, epoch: int) -> EpochPlan:
        return EpochPlan(epoch, self.subset.epoch(self.run.generator), self.name, self._ratio, math.nan)

    def describe(self) -> dict[str, Any]:
        return {**super().describe(), "subset_selection_seconds": self.selection_seconds}

    def state_dict(self) -> dict:
        return {"static": self.subset.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        if state.get("static") is not None:
            self.subset.load_state_dict(state["static"])


@dataclass(frozen=True)
class RandomSubset(StaticProxy):
    def choose(self, count, labels, scores, generator, class_balance=True):
        rule = SelectionRule("zscore", class_balance=class_balance)
        return select_subset(None, count, rule, generator, labels.to(generator.device),
                             num_samples=labels.numel()).indices


@dataclass(frozen=True)
class TopScores(StaticProxy):
    """The ``count`` samples with the largest (``largest``) or smallest proxy score ``score``,
    within each class in proportion to its size when ``class_balance``."""

    score: str = "loss"
    largest: bool = True

    def choose(self, count, labels, scores, generator, class_balance=True):
        values = scores.score(self.score).to(generator.device)
        return top_indices(values if self.largest else -values, count, labels.to(generator.device), class_balance,
                           generator)


@dataclass(frozen=True)
class HalfClasses(StaticProxy):
    balances_classes: bool = False

    def choose(self, count, labels, scores, generator, class_balance=True):
        labels = labels.to(generator.device)
        kept = half_of_classes(int(labels.max()) + 1, generator)
        pool = torch.nonzero(torch.isin(labels, kept)).squeeze(1)
        pick = torch.randperm(pool.numel(), generator=generator, device=generator.device)[:count]
        return pool[pick]  # all of the kept classes when they hold fewer than count samples


@dataclass(frozen=True)
class FewerEpochs(StaticProxy):
    balances_classes: bool = False

    def choose(self, count, labels, scores, generator, class_balance=True):
        return None


@dataclass(frozen=True)
class KCenters(StaticProxy):
    balances_classes: bool = False

    def choose(self, count, labels, scores, generator, class_balance=True):
        return greedy_k_centers(scores.features.to(generator.device), count, generator=generator)


@dataclass(frozen=True)
class EntropyHistogram(StaticProxy):
    """Na et al. (IJCAI 2021): a sample is drawn with probability inverse to how many samples share
    its bin of the proxy model's prediction entropy (``bins`` equal-width bins), so the crowded middle
    of the entropy distribution is thinned and both tails, easy and hard samples, are kept. ``count``
    distinct samples are drawn with these exact inclusion probabilities (systematic sampling)."""

    bins: int = 10
    balances_classes: bool = False

    def choose(self, count, labels, scores, generator, class_balance=True):
        entropy = scores.score("entropy").to(generator.device).float()
        return entropy_histogram_sample(entropy, count, self.bins, generator)


def entropy_histogram_probabilities(entropy: torch.Tensor, bins: int = 10) -> torch.Tensor:
    """``p_i ~ 1 / h(b(i))``: the inverse of the size of sample i's entropy bin, normalised."""
    low, high = float(entropy.min()), float(entropy.max())
    if high <= low:
        return torch.full_like(entropy, 1.0 / entropy.numel(), dtype=torch.float64)
    bin_of = ((entropy - low) / (high - low) * bins).long().clamp_(0, bins - 1)
    sizes = torch.bincount(bin_of, minlength=bins).double()
    p = 1.0 / sizes[bin_of]
    return p / p.sum()


def entropy_histogram_sample(entropy: torch.Tensor, count: int, bins: int, generator: torch.Generator) -> torch.Tensor:
    pi = inclusion_probabilities(entropy_histogram_probabilities(entropy, bins), count)
    return systematic_sample(pi, count, generator)


def top_indices(values: torch.Tensor, count: int, labels: torch.Tensor, class_balance: bool,
                generator: torch.Generator | None = None) -> torch.Tensor:
    """The ``count`` largest ``values`` (per class in proportion to class size when ``class_balance``), ties
    broken at random with ``generator`` (by position they took whole classes of a set stored class by class:
    forgetting counts and never-learnt samples tie by the hundreds)."""
    bad = int((~torch.isfinite(values)).sum())
    if bad:  # NaN ranked as the largest: it was both the hardest and the easiest sample
        raise ValueError(f"{bad} of the {values.numel()} proxy scores are NaN or infinite: a static proxy ranks "
                         "finite scores (a diverged proxy model, or scores of your own to mend)")
    rule = SelectionRule("zscore", temperature=0.0, class_balance=class_balance)
    shuffled = torch.randperm(values.numel(), generator=generator, device=values.device)
    # the generator draws each class's rounding too: the global one made a seed's subset depend on what
    # else the process had drawn (a target network's initialisation)
    chosen = select_subset(values[shuffled].float(), count, rule, generator, labels=labels[shuffled]).indices
    return shuffled[chosen]


def half_of_classes(num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """``num_classes // 2`` distinct class ids, drawn with ``generator`` (at least 2 classes needed)."""
    if num_classes < 2:
        raise ConfigError("metric", "half_classes", "a data set with at least 2 classes")
    return torch.randperm(num_classes, generator=generator, device=generator.device)[: num_classes // 2]


def greedy_k_centers(features: torch.Tensor, count: int, initial: torch.Tensor | None = None,
                     generator: torch.Generator | None = None, chunk: int = 4096) -> torch.Tensor:
    """Greedy k-centers (SVP's core-set): repeatedly add the point farthest from every centre so far.

    Starts from ``initial`` centres (e.g. the labelled pool, not returned) or one random point.
    Each pick is one distance update over all ``N`` points on their device: O(N d) per pick,
    O(N d count) in all; the distances to ``initial`` are computed in ``chunk``-sized blocks.
    Returns ``count`` distinct indices not in ``initial``, in the order picked.
    """
    x = features.float()
    n = x.shape[0]
    bad = ~torch.isfinite(x).reshape(n, -1).all(dim=1)
    if bool(bad.any()):  # NaN wins argmax and spreads through minimum: centres would be picked twice
        raise DataError(f"k-centers: {int(bad.sum())} of {n} feature rows hold NaN or infinity (the scoring model "
                        "diverged or its features overflowed)")
    available = n - (0 if initial is None else int(initial.numel()))
    if not 1 <= count <= available:
        raise ConfigError("count", count, f"an integer in [1, {available}] (points not yet centres)")
    nearest = torch.full((n,), float("inf"), device=x.device)
    chosen = torch.empty(count, dtype=torch.long, device=x.device)
    start = 0
    if initial is not None and initial.numel():
        initial = initial.to(x.device)
        for i in range(0, initial.numel(), chunk):
            centres = x[initial[i:i + chunk]]
            nearest = torch.minimum(nearest, torch.cdist(x, centres).min(dim=1).values.square())
        nearest[initial] = -1.0  # a centre is never picked again
    else:
        device = generator.device if generator is not None else x.device
        first = int(torch.randint(n, (1,), generator=generator, device=device))
        chosen[0] = first
        nearest = (x - x[first]).square().sum(dim=1)
        nearest[first] = -1.0
        start = 1
    for k in range(start, count):
        pick = torch.argmax(nearest)  # stays on the device: no host sync per pick
        chosen[k] = pick
        nearest = torch.minimum(nearest, (x - x[pick]).square().sum(dim=1))
        nearest[pick] = -1.0
    return chosen


class StaticSubset:
    """A static proxy's samples over a run: its fixed subset reshuffled every epoch, or for
    ``fewer_epochs`` the next ``count`` samples of a stream of shuffled full passes (every sample
    once per pass, never twice in one epoch). All state round-trips through ``state_dict``."""

    def __init__(self, strategy: StaticProxy, count: int, num_samples: int, labels: torch.Tensor,
                 scores: "ProxyScores | None", seed: int, class_balance: bool, device: torch.device):
        if strategy.needs_proxy_model and scores is None:
            raise ConfigError("metric", strategy.name, "a static proxy given the scores of its proxy model")
        self.strategy, self.count, self.num_samples = strategy, count, num_samples
        generator = torch.Generator(device=device)
        generator.manual_seed(int(seed) + 104_729)  # its own stream: choosing does not shift later draws
        chosen = strategy.choose(count, labels.to(device), scores, generator, class_balance)
        self.fixed = None if chosen is None else chosen.to(device)
        self.stream = torch.empty(0, dtype=torch.long, device=device)  # fewer_epochs: the current pass
        self.position = 0

    def epoch(self, generator: torch.Generator) -> torch.Tensor:
        """This epoch's samples, in training order."""
        device = generator.device
        if self.fixed is not None:
            return self.fixed[torch.randperm(self.fixed.numel(), generator=generator, device=device)]
        n, parts, needed = self.num_samples, [], self.count
        while needed:
            if self.position >= self.stream.numel():  # a new pass; this epoch's samples go last in it
                fresh = torch.randperm(n, generator=generator, device=device)
                if parts:
                    late = torch.isin(fresh, torch.cat(parts))
                    fresh = torch.cat([fresh[~late], fresh[late]])
                self.stream, self.position = fresh, 0
            take = min(needed, n - self.position)
            parts.append(self.stream[self.position:self.position + take])
            self.position += take
            needed -= take
        return torch.cat(parts)

    def state_dict(self) -> dict:
        return {"fixed": None if self.fixed is None else self.fixed.cpu().clone(), "stream": self.stream.cpu().clone(),
                "position": self.position}

    def load_state_dict(self, state: dict) -> None:
        device = self.stream.device
        if state.get("fixed") is not None:  # the subset the run started with, whatever a cache holds now
            self.fixed = state["fixed"].to(device)
        self.stream, self.position = state["stream"].to(device), int(state["position"])


class ForgettingEvents:
    """Forgetting events per sample (Toneva et al. 2019), counted from training logits.

    A forgetting event is a sample predicted right the last time it was trained and wrong now.
    Samples never predicted right score above every other (they are the hardest to learn).
    One gather and two scatters per batch, on the device.
    """

    def __init__(self, num_samples: int, device: torch.device | str = "cpu"):
        self.last_correct = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.learned = torch.zeros(num_samples, dtype=torch.bool, device=device)
        self.events = torch.zeros(num_samples, dtype=torch.long, device=device)

    @torch.no_grad()
    def update(self, indices: torch.Tensor, correct: torch.Tensor) -> None:
        """``correct[i]``: whether sample ``indices[i]`` was predicted right in this step."""
        forgot = self.last_correct[indices] & ~correct
        self.events.index_add_(0, indices, forgot.long())
        self.last_correct[indices] = correct
        self.learned[indices] |= correct

    def scores(self) -> torch.Tensor:
        """Events per sample as floats; never-learned samples get ``max + 1``."""
        events = self.events.float()
        top = float(events.max()) + 1.0 if events.numel() else 1.0
        return torch.where(self.learned, events, torch.full_like(events, top))


FIXED_RANDOM = RandomSubset("fixed_random", "a uniformly random subset (stratified by class with class_balance)")
EASIEST = TopScores("easiest", "the samples with the lowest loss under the proxy model", True, False,
                    score="loss", largest=False)
HARDEST = TopScores("hardest", "the samples with the highest loss under the proxy model", True, False,
                    score="loss", largest=True)
HALF_CLASSES = HalfClasses("half_classes", "half of the classes (seeded), then random within them", needs_labels=True)
FEWER_EPOCHS = FewerEpochs("fewer_epochs", "all data for ratio x epochs (a stream of shuffled passes)")
FORGETTING = TopScores("forgetting", "SVP: most forgetting events while the proxy model trained", True, True,
                       score="forgetting", largest=True)
MAX_ENTROPY = TopScores("max_entropy", "SVP: highest predictive entropy of the proxy model", True, True,
                        score="entropy", largest=True)
LEAST_CONFIDENCE = TopScores("least_confidence", "SVP: lowest top-class probability of the proxy model", True,
                             True, score="least_confidence", largest=True)
KCENTERS = KCenters("kcenters", "SVP: greedy k-centers on the proxy model's penultimate features", True, True)
ENTROPY_HISTOGRAM = EntropyHistogram("entropy_histogram", "Na et al. 2021 (DARTS-Accelerating): drawn with "
                                     "probability inverse to the density of the proxy model's entropy", True, False)
