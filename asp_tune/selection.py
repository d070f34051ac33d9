"""Choosing ``m`` of ``N`` samples from importance values, on the values' device.

A selection has two steps:

1. **A rule** turns a metric's values into a probability per sample (the first-draw distribution):

   - ``zscore``: ``softmax(zscore(v) / T)``, the first design. Its greediness depends on the
     metric's distribution: on a partly trained network the top 10% of samples held 0.92 of the
     mass under ``loss`` and 0.17 under ``prediction``.
   - ``paper``: the ASP paper's literal ``softmax(v / T)`` over the raw values (section 3.4);
     equal to ``zscore`` at ``T = std(v)``. Nearly uniform for bounded metrics, nearly top-m
     for the cumulative prediction score.
   - ``calibrated``: ``softmax(zscore(v) / T*)`` with ``T*`` found by bisection so that the top
     10% of samples hold exactly ``top10_mass`` of the probability: one greediness that means
     the same for every metric and every epoch.

   Then a ``uniform_floor`` ``f`` mixes in the uniform distribution, ``(1 - f) p + f / N``, so
   no sample starves (every inclusion probability is at least about ``m f / N``).

2. **A sampler with known inclusion probabilities.** Each sample is included with probability
   ``pi_i = min(1, c p_i)``, ``sum(pi) = m`` (capped at 1 and redistributed), drawn by systematic
   sampling over a random order: exactly ``m`` distinct samples, O(N) on the device, and the
   exact ``pi`` is known. That is what makes the optional **unbiased reweighting** exact: a
   selected sample's loss is weighted by ``m / (N pi_i)`` (mean weight 1 in expectation), so
   the expected weighted subset loss equals the full-data mean loss (Horvitz-Thompson).
   With ``class_balance`` every class gets a share of the ``m`` picks proportional to its size
   (largest remainders), and the same sampling runs within each class.

``T = 0`` (any rule) is deterministic top-m, the core-set special case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from asp_tune.errors import ConfigError
from asp_tune.constraints import check_value
from asp_tune.proxy_settings import ProxySettings, default



def normalise(values: torch.Tensor) -> torch.Tensor:
    """Z-score over all samples. Constant values (e.g. a fresh memory) normalise to zeros."""
    values = values.float()
    std, mean = torch.std_mean(values, unbiased=False)
    return torch.where(std > 0, (values - mean) / std.clamp_min(1e-12), torch.zeros_like(values))


def top_share(probs: torch.Tensor, fraction: float = 0.1) -> float:
    """Share of ``probs`` on the top ``fraction`` of samples: how greedy a selection is."""
    k = max(1, math.ceil(fraction * probs.numel()))
    return float(torch.topk(probs, k, sorted=False).values.sum() / probs.sum())


def calibrated_scale(z: torch.Tensor, target: float, fraction: float = 0.1, iterations: int = 30) -> float:
    """``beta = 1/T`` with ``top_share(softmax(beta z)) == target``. Returns 0 (uniform) when ``z`` is
    constant or the target is at most uniform.

    Newton's method on ``log share(beta) - log target`` (the share grows with ``beta``; its
    log-derivative is the gap between the mean of ``z`` over the top and over all samples, under
    the same weights), kept inside a bisection bracket: a handful of passes over ``z``.
    """
    n = z.numel()
    k = max(1, math.ceil(fraction * n))
    if target <= k / n or float(z.max() - z.min()) == 0.0:
        return 0.0
    z = z.double()
    z_top = torch.topk(z, k, sorted=False).values
    goal = math.log(target)

    def f(beta: float) -> tuple[float, float]:
        w_all = torch.softmax(beta * z, 0)
        w_top = torch.softmax(beta * z_top, 0)
        log_share = float(torch.logsumexp(beta * z_top, 0) - torch.logsumexp(beta * z, 0))
        return log_share - goal, float((w_top * z_top).sum() - (w_all * z).sum())

    lo, hi, beta = 0.0, math.inf, 1.0
    for _ in range(iterations):
        value, slope = f(beta)
        if abs(value) < 1e-4:
            return beta
        lo, hi = (beta, hi) if value < 0 else (lo, beta)
        step = beta - value / slope if slope > 0 else math.nan
        if not (lo < step < hi) or not math.isfinite(step):
            step = 2 * beta if hi == math.inf else 0.5 * (lo + hi)
        beta = min(step, 1e4)
    return beta


@dataclass(frozen=True)
class SelectionRule:
    """How importance values become a subset. Validated on construction (errors name the field).
    The defaults are :class:`~asp_tune.proxy_settings.ProxySettings`'s (the measured ones)."""

    rule: str = default("selection_rule")
    temperature: float = default("temperature")  # zscore / paper; 0 = deterministic top-m for every rule
    top10_mass: float = default("top10_mass")  # calibrated: target share of probability on the top 10%
    uniform_floor: float = default("uniform_floor")  # fraction of the probability spread uniformly
    class_balance: bool = default("class_balance")  # picks per class proportional to the class's size
    reweight: bool = default("reweight")  # weight selected losses by m / (N pi_i): an unbiased gradient

    def __post_init__(self) -> None:
        for field, name in (("selection_rule", "rule"), ("temperature", "temperature"), ("top10_mass", "top10_mass"),
                            ("uniform_floor", "uniform_floor"), ("class_balance", "class_balance"),
                            ("reweight", "reweight")):
            check_value(ProxySettings, field, getattr(self, name))  # ProxySettings' declared constraint

    @classmethod
    def from_settings(cls, settings) -> "SelectionRule":
        """The rule a :class:`~asp_tune.proxy_settings.ProxySettings` (or ``TrainConfig``) describes."""
        return cls(settings.selection_rule, settings.temperature, settings.top10_mass, settings.uniform_floor,
                   settings.class_balance, settings.reweight)

    @property
    def deterministic(self) -> bool:
        return self.temperature == 0

    def probabilities(self, values: torch.Tensor) -> torch.Tensor:
        """First-draw probability of every sample (float64, sums to 1) under this rule and floor."""
        n = values.numel()
        if self.rule == "paper":
            logits = values.double() / max(self.temperature, 1e-12)
        elif self.rule == "zscore":
            logits = normalise(values).double() / max(self.temperature, 1e-12)
        else:
            # calibrate the final share, floor included: (1 - f) s + f * 0.1 = target
            f = self.uniform_floor
            target = self.top10_mass if f >= 1 else (self.top10_mass - 0.1 * f) / (1.0 - f)
            z = normalise(values)
            logits = calibrated_scale(z, min(target, 0.999)) * z.double()
        p = torch.softmax(logits.double(), dim=0)  # float64: low temperatures must not underflow
        if self.uniform_floor > 0:
            p = (1.0 - self.uniform_floor) * p + self.uniform_floor / n
        return p


def water_fill(probs: torch.Tensor, count: int) -> torch.Tensor:
    """``pi_i = min(1, c p_i)`` with ``sum(pi) = count``: the largest probabilities are capped at 1
    and the rest rescaled (exact; only the top ``count`` are sorted). Zero-probability samples fill
    in only when fewer than ``count`` samples have a positive probability."""
    n = probs.numel()
    count = min(int(count), n)
    p = probs.double()
    pi = torch.zeros(n, dtype=torch.float64, device=p.device)
    if count == 0:
        return pi
    positive = int((p > 0).sum())
    if positive <= count:  # everything positive is taken; the remaining picks are uniform
        pi[p > 0] = 1.0
        if positive < n:
            pi[p <= 0] = (count - positive) / (n - positive)
        return pi
    q, order = torch.topk(p, count, sorted=True)
    tail = p.sum() - torch.cumsum(q, 0) + q  # tail[k] = mass from the k-th largest on
    k = torch.arange(count, device=p.device, dtype=torch.float64)
    fits = (count - k) * q <= tail * (1 + 1e-12)
    capped = int(torch.nonzero(fits)[0]) if bool(fits.any()) else count
    pi = p * ((count - capped) / float(tail[capped])) if capped < count else torch.zeros_like(p)
    pi[order[:capped]] = 1.0
    return pi.clamp_(max=1.0)


def inclusion_probabilities(probs: torch.Tensor, count: int, groups: torch.Tensor | None = None,
                            counts: torch.Tensor | None = None, rounds: int = 4) -> torch.Tensor:
    """Inclusion probabilities summing to ``count`` (or to ``counts[g]`` within each group ``g``).

    Vectorised over all groups: scale each group's probabilities to its count, cap at 1 what
    exceeds it, rescale the rest, and repeat until nothing more is capped (one or two rounds for
    a gentle rule). A very greedy rule that needs more rounds, or a group whose probabilities
    underflowed to zero, falls back to the exact sort-based :func:`water_fill` per group.
    """
    if groups is None:
        return water_fill(probs, count)
    p = probs.double()
    counts = counts.double().to(p.device)
    num_groups = int(counts.numel())
    capped = torch.zeros_like(p, dtype=torch.bool)
    for _ in range(rounds):
        free = torch.zeros(num_groups, dtype=torch.double, device=p.device).index_add_(
            0, groups, torch.where(capped, 0.0, p))
        left = counts - torch.zeros(num_groups, dtype=torch.double, device=p.device).index_add_(
            0, groups, capped.double())
        if bool(((free <= 0) & (left > 0)).any()):
            break  # underflow: only the exact fill knows what to do with zero probabilities
        pi = torch.where(capped, 1.0, p * (left.clamp_min(0) / free.clamp_min(1e-300))[groups])
        newly = (pi > 1.0) & ~capped
        if not bool(newly.any()):
            return pi
        capped |= newly
    return grouped_water_fill(p, groups, counts)


def grouped_water_fill(probs: torch.Tensor, groups: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """:func:`water_fill` within every group at once: one sort, then per-group ranks and tail sums."""
    n = probs.numel()
    p = probs.double().clamp_min(1e-300)  # underflowed samples share what is left, uniformly
    order = torch.argsort(p, descending=True, stable=True)
    order = order[torch.argsort(groups[order], stable=True)]
    g, q = groups[order], p[order]
    num_groups = int(counts.numel())
    start = torch.searchsorted(g, torch.arange(num_groups, device=p.device))
    rank = (torch.arange(n, device=p.device) - start[g]).double()
    before = torch.cumsum(q, 0) - q  # mass ahead of each sample, all groups
    total = torch.zeros(num_groups, dtype=torch.double, device=p.device).index_add_(0, g, q)
    tail = total[g] - (before - before[start.clamp_max(n - 1)][g])
    want = counts.double()[g]
    fits = ((want - rank) * q <= tail * (1 + 1e-12)) & (rank < want)
    capped = torch.full((num_groups,), float(n), dtype=torch.double, device=p.device)
    capped = capped.scatter_reduce(0, g[fits], rank[fits], reduce="amin")
    capped = torch.minimum(capped, counts.double())
    k = capped[g]
    at_k = (start + capped.long()).clamp_max(n - 1)
    scale = (counts.double() - capped) / tail[at_k].clamp_min(1e-300)
    pi_sorted = torch.where(rank < k, 1.0, q * scale[g])
    pi = torch.empty(n, dtype=torch.double, device=p.device)
    pi[order] = pi_sorted.clamp(max=1.0)
    return pi


def systematic_sample(pi: torch.Tensor, count: int, generator: torch.Generator | None = None,
                      groups: torch.Tensor | None = None) -> torch.Tensor:
    """Exactly ``count`` distinct indices, index ``i`` included with probability ``pi[i]``.

    Systematic sampling over a random order (grouped by ``groups`` when given, so each group whose
    ``pi`` sums to an integer gets exactly that many): one uniform offset, one cumulative sum.
    """
    n = pi.numel()
    order = torch.randperm(n, generator=generator, device=pi.device)
    if groups is not None:
        order = order[torch.argsort(groups[order], stable=True)]
    cum = torch.cumsum(pi[order].double(), 0)
    u = torch.rand((), generator=generator, device=pi.device, dtype=torch.double)
    hits = torch.floor(cum - u)
    before = torch.cat([torch.floor(-u).reshape(1), hits[:-1]])
    chosen = order[hits > before]
    if chosen.numel() != count:  # float rounding at the very end of the sum: fix up deterministically
        taken = torch.zeros(n, dtype=torch.bool, device=pi.device)
        taken[chosen] = True
        if chosen.numel() > count:
            chosen = chosen[torch.argsort(pi[chosen], descending=True, stable=True)[:count]]
        else:
            rest = torch.where(taken, -1.0, pi.double())
            extra = torch.topk(rest, count - chosen.numel()).indices
            chosen = torch.cat([chosen, extra])
    return chosen


def class_quotas(labels: torch.Tensor, count: int, num_classes: int) -> torch.Tensor:
    """Picks per class proportional to class size, summing to ``count`` (largest remainders)."""
    sizes = torch.bincount(labels, minlength=num_classes).double()
    quota = sizes * (count / sizes.sum())
    base = torch.floor(quota)
    short = int(count - base.sum())
    if short > 0:
        order = torch.argsort(quota - base, descending=True, stable=True)[:short]
        base[order] += 1
    return torch.minimum(base, sizes)


@dataclass(frozen=True)
class Selection:
    """The samples of one epoch, their inclusion probabilities and, if asked, their loss weights."""

    indices: torch.Tensor
    inclusion: torch.Tensor | None  # (N,) exact inclusion probabilities; None for top-m
    weights: torch.Tensor | None  # (N,) loss weight per sample (only selected ones matter), or None
    top10_mass: float


def select_subset(values: torch.Tensor | None, count: int, rule: SelectionRule,
                  generator: torch.Generator | None = None, labels: torch.Tensor | None = None,
                  num_samples: int | None = None) -> Selection:
    """Choose ``count`` samples from ``values`` under ``rule``.

    ``values=None`` is uniform selection (the ``random`` metric; give ``num_samples``); class
    balance and reweighting still apply (reweighting uniform picks gives weight 1).
    """
    n = values.numel() if values is not None else int(num_samples or 0)
    if not 1 <= count <= n:
        raise ValueError(f"count must be in [1, {n}], got {count}")
    device = values.device if values is not None else (generator.device if generator is not None else "cpu")
    if rule.class_balance and labels is None:
        raise ValueError("class_balance needs the labels of the samples")
    groups = labels.to(device) if rule.class_balance else None
    counts = None
    if groups is not None:
        counts = class_quotas(groups, count, int(groups.max()) + 1)
    if values is not None and rule.deterministic:
        z = normalise(values)
        if groups is None:
            idx = torch.topk(z, count, sorted=False).indices
        else:  # top within each class: rank inside the class after sorting by value
            order = torch.argsort(z, descending=True, stable=True)
            order = order[torch.argsort(groups[order], stable=True)]
            g = groups[order]
            start = torch.searchsorted(g, torch.arange(counts.numel(), device=device))
            rank = torch.arange(n, device=device) - start[g]
            idx = order[rank < counts.long()[g]]
        return Selection(idx, None, None, 1.0 if count / n <= 0.1 else 0.1 / (count / n))
    probs = torch.full((n,), 1.0 / n, device=device) if values is None else rule.probabilities(values)
    pi = inclusion_probabilities(probs, count, groups, counts)
    idx = systematic_sample(pi, count, generator, groups)
    weights = (count / (n * pi)).float() if rule.reweight else None
    return Selection(idx, pi.float(), weights, top_share(probs))


# --------------------------------------------------------------------------- simple API (first design)


def _first_design(temperature: float) -> SelectionRule:
    return SelectionRule("zscore", temperature=temperature, uniform_floor=0.0, class_balance=False, reweight=False)


def selection_probabilities(values: torch.Tensor, temperature: float) -> torch.Tensor:
    """``softmax(zscore(v) / T)``: the ``zscore`` rule's first-draw probabilities."""
    return _first_design(temperature).probabilities(values).float()


def select(values: torch.Tensor | None, count: int, temperature: float = 1.0,
           generator: torch.Generator | None = None, num_samples: int | None = None) -> torch.Tensor:
    """Indices of ``count`` distinct samples under the ``zscore`` rule (``T = 0``: top-``count``)."""
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    return select_subset(values, count, _first_design(temperature), generator,
                         num_samples=num_samples).indices


def top_mass(values: torch.Tensor | None, temperature: float, fraction: float = 0.1) -> float:
    """Share of the ``zscore`` rule's probability on the top ``fraction`` of samples."""
    if values is None:
        return float(fraction)
    if temperature == 0:
        return 1.0
    return top_share(selection_probabilities(values, temperature), fraction)
