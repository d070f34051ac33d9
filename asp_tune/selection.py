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
   (its floor, plus one pick drawn with probability the fractional part, so a class's expected
   picks are exactly its share: :func:`class_quotas`), and the same sampling runs within each
   class; ``pi`` is the inclusion probability over both draws, so the reweighting stays exact.

``T = 0`` (any rule) is deterministic top-m, the core-set special case.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Sequence

import torch

from asp_tune.constraints import check_value
from asp_tune.proxy_settings import ProxySettings, default

#: A probability below this has underflowed (float64 denormals keep too few digits to sum).
UNDERFLOW = 1e-300


def finite(values: torch.Tensor) -> torch.Tensor:
    """``values`` with NaN and +inf as the largest finite value of their row and -inf as the smallest (0 in a
    row with none), on their device: a non-finite value makes the z-scores NaN, which selected uniformly."""
    ok = torch.isfinite(values)
    high = torch.where(ok, values, -math.inf).amax(-1, keepdim=True)
    low = torch.where(ok, values, math.inf).amin(-1, keepdim=True)
    high, low = (torch.where(torch.isfinite(v), v, 0.0) for v in (high, low))
    return torch.where(ok, values, torch.where(values == -math.inf, low, high))


def normalise(values: torch.Tensor) -> torch.Tensor:
    """Z-score along the last dimension (each row of a batch alone). Constant values (e.g. a fresh memory)
    normalise to zeros; non-finite ones count as the row's extremes (:func:`finite`)."""
    values = finite(values.float())
    std, mean = torch.std_mean(values, dim=-1, correction=0, keepdim=True)
    return torch.where(std > 0, (values - mean) / std.clamp_min(1e-12), torch.zeros_like(values))


def top_share(probs: torch.Tensor, fraction: float = 0.1) -> float:
    """Share of ``probs`` on the top ``fraction`` of samples: how greedy a selection is."""
    return float(_top_shares(probs.reshape(1, -1), fraction)[0])


def _top_shares(probs: torch.Tensor, fraction: float = 0.1) -> torch.Tensor:
    """:func:`top_share` of each row of ``probs`` (K, N)."""
    k = max(1, math.ceil(fraction * probs.shape[-1]))
    return torch.topk(probs, k, dim=-1, sorted=False).values.sum(-1) / probs.sum(-1)


def calibrated_scale(z: torch.Tensor, target: float, fraction: float = 0.1, iterations: int = 30) -> float:
    """``beta = 1/T`` with ``top_share(softmax(beta z)) == target``. Returns 0 (uniform) when ``z`` is
    constant or the target is at most uniform.

    Newton's method on ``log share(beta) - log target`` (the share grows with ``beta``; its
    log-derivative is the gap between the mean of ``z`` over the top and over all samples, under
    the same weights), kept inside a bisection bracket: a handful of passes over ``z``.
    """
    return float(calibrated_scales(z.reshape(1, -1), target, fraction, iterations)[0])


def calibrated_scales(z: torch.Tensor, target: float, fraction: float = 0.1, iterations: int = 30) -> torch.Tensor:
    """:func:`calibrated_scale` of each row of ``z`` (K, N) at once (float64, (K,)): the passes over the rows are
    one vectorised pass; each row's Newton steps, taken on the host in float64, are the ones it takes alone, and
    a row stops where it would stop alone."""
    rows, n = z.shape
    k = max(1, math.ceil(fraction * n))
    result = [0.0] * rows
    if target <= k / n:
        return torch.zeros(rows, dtype=torch.float64, device=z.device)
    z = z.double()
    z_top = torch.topk(z, k, dim=-1, sorted=False).values
    goal = math.log(target)
    constant = ((z.amax(-1) - z.amin(-1)) == 0).tolist()  # constant rows: uniform
    brackets = {r: (0.0, math.inf, 1.0) for r in range(rows) if not constant[r]}  # (lo, hi, beta) of each row
    for _ in range(iterations):
        if not brackets:
            break
        live = list(brackets)
        betas = [brackets[r][2] for r in live]
        beta = betas[0] if len(live) == 1 else torch.tensor(betas, dtype=torch.float64, device=z.device)[:, None]
        on, on_top = (z, z_top) if len(live) == rows else (z[live], z_top[live])
        scaled, scaled_top = beta * on, beta * on_top
        shares = (torch.logsumexp(scaled_top, -1) - torch.logsumexp(scaled, -1)).tolist()
        slopes = ((torch.softmax(scaled_top, -1) * on_top).sum(-1) - (torch.softmax(scaled, -1) * on).sum(-1)).tolist()
        for r, share, slope in zip(live, shares, slopes):
            lo, hi, b = brackets[r]
            value = share - goal
            if abs(value) < 1e-4:
                result[r] = b
                del brackets[r]
                continue
            lo, hi = (b, hi) if value < 0 else (lo, b)
            step = b - value / slope if slope > 0 else math.nan
            if not (lo < step < hi) or not math.isfinite(step):
                step = 2 * b if hi == math.inf else 0.5 * (lo + hi)
            brackets[r] = (lo, hi, min(step, 1e4))
    for r, (_, _, b) in brackets.items():
        result[r] = b
    return torch.tensor(result, dtype=torch.float64, device=z.device)


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
        """First-draw probability of every sample (float64, sums to 1) under this rule and floor; of each row
        alone for a batch of values (K, N)."""
        n = values.shape[-1]
        if self.rule == "paper":
            logits = finite(values.double()) / max(self.temperature, 1e-12)
        elif self.rule == "zscore":
            logits = normalise(values).double() / max(self.temperature, 1e-12)
        else:
            # calibrate the final share, floor included: (1 - f) s + f * 0.1 = target
            f = self.uniform_floor
            target = self.top10_mass if f >= 1 else (self.top10_mass - 0.1 * f) / (1.0 - f)
            z = normalise(values)
            beta = calibrated_scales(z.reshape(-1, n), min(target, 0.999))
            logits = beta.reshape(z.shape[:-1] + (1,)) * z.double()
        p = torch.softmax(logits.double(), dim=-1)  # float64: low temperatures must not underflow
        if self.uniform_floor > 0:
            p = (1.0 - self.uniform_floor) * p + self.uniform_floor / n
        return p


def water_fill(probs: torch.Tensor, count: int) -> torch.Tensor:
    """``pi_i = min(1, c p_i)`` with ``sum(pi) = count``: the largest probabilities are capped at 1
    and the rest rescaled (exact; only the top ``count`` are sorted). Zero-probability samples fill
    in only when fewer than ``count`` samples have a positive probability. Each row alone for (K, N)."""
    p = probs.double()
    rows = p.reshape(-1, p.shape[-1])
    rows = torch.where(rows < UNDERFLOW, 0.0, rows)  # denormals carry no precision: underflowed, as zeros
    n = rows.shape[-1]
    count = min(int(count), n)
    if count == 0:
        return torch.zeros_like(p)
    positive = (rows > 0).sum(-1, keepdim=True)
    # everything positive is taken; the remaining picks are uniform
    few = torch.where(rows > 0, 1.0, (count - positive).double() / (n - positive).clamp_min(1).double())
    q, order = torch.topk(rows, count, dim=-1, sorted=True)
    # tail[k] = mass from the k-th largest on, summed from the small end: a difference of sums would lose the
    # tail to rounding where the largest hold nearly all the mass (a greedy rule)
    rest = rows.scatter(-1, order, 0.0).sum(-1, keepdim=True)
    tail = rest + torch.flip(torch.cumsum(torch.flip(q, [-1]), -1), [-1])
    k = torch.arange(count, device=p.device, dtype=torch.float64)
    fits = (count - k) * q <= tail * (1 + 1e-12)
    capped = torch.where(fits.any(-1), torch.argmax(fits.int(), -1), count)
    tail_at = tail.gather(-1, capped.clamp(max=count - 1)[:, None])
    # p / tail <= 1 below the capped ones: no overflow where the tail is tiny
    pi = torch.where(capped[:, None] < count, rows / tail_at.clamp_min(UNDERFLOW) * (count - capped)[:, None], 0.0)
    on_top = torch.arange(count, device=p.device)[None, :] < capped[:, None]
    pi.scatter_(-1, order, torch.where(on_top, 1.0, pi.gather(-1, order)))
    pi = torch.where(positive <= count, few, pi.clamp_(max=1.0))
    return pi.reshape(p.shape)


def inclusion_probabilities(probs: torch.Tensor, count: int, groups: torch.Tensor | None = None,
                            counts: torch.Tensor | None = None, rounds: int = 4) -> torch.Tensor:
    """Inclusion probabilities summing to ``count`` (or to ``counts[g]`` within each group ``g``); each row
    alone for a batch (K, N) (``groups`` (K, N), ``counts`` (K, G)).

    Vectorised over all groups: scale each group's probabilities to its count, cap at 1 what
    exceeds it, rescale the rest, and repeat until nothing more is capped (one or two rounds for
    a gentle rule). A row whose very greedy rule needs more rounds, or with a group whose probabilities
    underflowed to zero, falls back to the exact sort-based :func:`water_fill` per group.
    """
    if groups is None:
        return water_fill(probs, count)
    if probs.dim() == 1:
        return inclusion_probabilities(probs[None], count, groups[None], counts[None], rounds)[0]
    p = probs.double()
    counts = counts.double().to(p.device)
    capped = torch.zeros_like(p, dtype=torch.bool)
    result = done = exact = None  # kept once some rows finish before others
    for _ in range(rounds):
        free = torch.zeros_like(counts).scatter_add_(-1, groups, torch.where(capped, 0.0, p))
        left = counts - torch.zeros_like(counts).scatter_add_(-1, groups, capped.double())
        underflow = ((free < UNDERFLOW) & (left > 0)).any(-1)  # only the exact fill knows what to do there
        pi = torch.where(capped, 1.0, p * (left.clamp_min(0) / free.clamp_min(UNDERFLOW)).gather(-1, groups))
        newly = (pi > 1.0) & ~capped
        going_on = newly.any(-1) | underflow
        if result is None:  # no row has finished yet
            if not bool(going_on.any()):
                return pi  # every row finishes in this round
            if not bool(underflow.any()) and bool(going_on.all()):
                capped |= newly  # every row goes on
                continue
            result, done, exact = torch.zeros_like(p), torch.zeros_like(going_on), torch.zeros_like(going_on)
        exact = exact | (underflow & ~done)
        finished = ~going_on & ~done & ~exact
        result = torch.where(finished[:, None], pi, result)
        done = done | finished
        if bool((done | exact).all()):
            break
        capped |= newly
    if result is None:  # no row finished within the rounds
        return grouped_water_fill(p, groups, counts)
    slow = ~done
    if bool(slow.any()):
        result[slow] = grouped_water_fill(p[slow], groups[slow], counts[slow])
    return result


def grouped_water_fill(probs: torch.Tensor, groups: torch.Tensor, counts: torch.Tensor) -> torch.Tensor:
    """:func:`water_fill` within every group at once: one sort, then per-group ranks and tail sums; each row
    alone for a batch (K, N) (``groups`` (K, N), ``counts`` (K, G))."""
    if probs.dim() == 1:
        return grouped_water_fill(probs[None], groups[None], counts[None])[0]
    n = probs.shape[-1]
    p = probs.double().clamp_min(UNDERFLOW)  # underflowed samples share what is left, uniformly
    counts = counts.double()
    order = torch.argsort(p, dim=-1, descending=True, stable=True)
    order = order.gather(-1, torch.argsort(groups.gather(-1, order), dim=-1, stable=True))
    g, q = groups.gather(-1, order), p.gather(-1, order)
    labels = torch.arange(counts.shape[-1], device=p.device).expand(counts.shape).contiguous()
    start = torch.searchsorted(g.contiguous(), labels)
    rank = torch.arange(n, device=p.device) - start.gather(-1, g)
    tail = _suffix_sums_within_groups(q, g, rank, counts.shape[-1])  # mass from each sample on, in its group
    ranks, want = rank.double(), counts.gather(-1, g)
    fits = ((want - ranks) * q <= tail * (1 + 1e-12)) & (ranks < want)
    capped = torch.full_like(counts, float(n)).scatter_reduce(-1, g, torch.where(fits, ranks, float(n)), reduce="amin")
    capped = torch.minimum(capped, counts)
    at_k = (start + capped.long()).clamp_max(n - 1)
    tail_at = tail.gather(-1, at_k).clamp_min(UNDERFLOW).gather(-1, g)
    pi_sorted = torch.where(ranks < capped.gather(-1, g), 1.0, q / tail_at * (counts - capped).gather(-1, g))
    return torch.empty_like(p).scatter_(-1, order, pi_sorted.clamp(max=1.0))


def _suffix_sums_within_groups(q: torch.Tensor, groups: torch.Tensor, rank: torch.Tensor,
                               num_groups: int) -> torch.Tensor:
    """Each sample's mass from it on within its group (``q`` (K, N) sorted by group, then descending; ``rank``:
    its place in its group), summed from each group's small end, so that no tail is a difference of two large
    sums. Groups of similar sizes (within a factor of 2) are padded to one width and scanned together: at most
    2N values per row, and each group's sums do not depend on the others'."""
    rows, n = q.shape
    segment = (torch.arange(rows, device=q.device)[:, None] * num_groups + groups).flatten()
    rank, values = rank.flatten(), q.flatten()
    sizes = torch.bincount(segment, minlength=rows * num_groups)
    width_class = torch.ceil(torch.log2(sizes.clamp_min(1).double())).long()
    element_class = width_class[segment]
    out = torch.empty_like(values)
    for cls in torch.unique(element_class).tolist():
        members = torch.nonzero(element_class == cls).squeeze(1)
        segments = torch.nonzero((width_class == cls) & (sizes > 0)).squeeze(1)
        local = torch.full_like(sizes, -1)
        local[segments] = torch.arange(segments.numel(), device=q.device)
        where = (local[segment[members]], rank[members])
        padded = torch.zeros(segments.numel(), 1 << cls, dtype=q.dtype, device=q.device)
        padded[where] = values[members]
        sums = torch.flip(torch.cumsum(torch.flip(padded, [-1]), -1), [-1])  # zeros padded at the end add nothing
        out[members] = sums[where]
    return out.view(rows, n)


def systematic_sample(pi: torch.Tensor, count: int, generator: torch.Generator | None = None,
                      groups: torch.Tensor | None = None) -> torch.Tensor:
    """Exactly ``count`` distinct indices, index ``i`` included with probability ``pi[i]``.

    Systematic sampling over a random order (grouped by ``groups`` when given, so each group whose
    ``pi`` sums to an integer gets exactly that many): one uniform offset, one cumulative sum.
    """
    return systematic_samples(pi[None], count, [generator], None if groups is None else groups[None])[0]


def systematic_samples(pi: torch.Tensor, count: int, generators: list[torch.Generator | None],
                       groups: torch.Tensor | None = None) -> torch.Tensor:
    """:func:`systematic_sample` of each row of ``pi`` (K, N) with its own generator (K, ``count``): each row's
    draws and indices are the ones it gets alone."""
    rows, n = pi.shape
    orders, offsets = [], []
    for generator in generators:  # each generator draws as it does alone: its order, then its offset
        orders.append(torch.randperm(n, generator=generator, device=pi.device))
        offsets.append(torch.rand((), generator=generator, device=pi.device, dtype=torch.double))
    order, u = torch.stack(orders), torch.stack(offsets)[:, None]
    if groups is not None:
        order = order.gather(-1, torch.argsort(groups.gather(-1, order), dim=-1, stable=True))
    hits = torch.floor(torch.cumsum(pi.gather(-1, order).double(), -1) - u)
    taken = hits > torch.cat([torch.floor(-u), hits[:, :-1]], -1)
    if bool((taken.sum(-1) == count).all()):
        return order[taken].view(rows, count)
    return torch.stack([_exactly(order[r][taken[r]], pi[r], count) for r in range(rows)])


def _exactly(chosen: torch.Tensor, pi: torch.Tensor, count: int) -> torch.Tensor:
    """``count`` of systematic sampling's ``chosen``: float rounding at the very end of the sum can take one
    more or one fewer; fixed up deterministically by the largest inclusion probabilities."""
    if chosen.numel() > count:
        return chosen[torch.argsort(pi[chosen], descending=True, stable=True)[:count]]
    if chosen.numel() < count:
        rest = pi.double().clone()
        rest[chosen] = -1.0
        return torch.cat([chosen, torch.topk(rest, count - chosen.numel()).indices])
    return chosen


def class_shares(labels: torch.Tensor, count: int, num_classes: int) -> torch.Tensor:
    """Each class's exact share of ``count`` picks, ``size_c * count / N`` (float64, not rounded); each row alone
    for labels (K, N) (shares (K, ``num_classes``))."""
    rows = labels.reshape(-1, labels.shape[-1])
    sizes = torch.zeros(rows.shape[0], num_classes, dtype=torch.float64, device=labels.device)
    sizes.scatter_add_(-1, rows, torch.ones_like(rows, dtype=torch.float64))
    return (sizes * (count / sizes.sum(-1, keepdim=True))).reshape(labels.shape[:-1] + (num_classes,))


def class_quotas(labels: torch.Tensor, count: int, num_classes: int,
                 generators: Sequence[torch.Generator | None] | None = None) -> torch.Tensor:
    """Whole picks per class summing to ``count``, each class's expected quota exactly its share
    :func:`class_shares`: the floor of the share, plus one with probability its fractional part, drawn by
    systematic sampling over the classes in a random order (one permutation and one offset from each row's
    generator). A class whose share is below 1 is thus picked in that fraction of the epochs, never starved.
    Each row alone for labels (K, N) (quotas (K, ``num_classes``)); ``generators``: one per row (None: the
    global generator)."""
    share = class_shares(labels, count, num_classes).reshape(-1, num_classes)
    base = torch.floor(share)
    fraction = share - base
    short = count - base.sum(-1, keepdim=True)  # whole: the fractions' sum
    device = labels.device
    draws = generators if generators is not None else [None] * share.shape[0]
    present = (labels.reshape(-1, labels.shape[-1]).amax(-1) + 1).tolist()  # a row draws over its own classes
    order = torch.stack([torch.cat([torch.randperm(c, generator=g, device=device),
                                    torch.arange(c, num_classes, device=device)]) for g, c in zip(draws, present)])
    offset = torch.stack([torch.rand((), generator=g, device=device, dtype=torch.float64) for g in draws])[:, None]
    cum = torch.minimum(torch.cumsum(fraction.gather(-1, order), -1), short)
    cum[:, -1] = short[:, 0]  # exactly ``short`` extra picks, whatever the rounding of the sum
    hits = torch.floor(cum - offset)
    taken = hits > torch.cat([torch.floor(-offset), hits[:, :-1]], -1)
    quotas = base + torch.zeros_like(base).scatter_(-1, order, taken.double())
    return quotas.reshape(labels.shape[:-1] + (num_classes,))


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
    return select_subsets([values], count, rule, [generator], None if labels is None else [labels],
                          num_samples)[0]


def select_subsets(values: list[torch.Tensor | None], count: int, rule: SelectionRule,
                   generators: list[torch.Generator | None], labels: list[torch.Tensor] | None = None,
                   num_samples: int | None = None) -> list[Selection]:
    """:func:`select_subset` for several runs at once (a pack's members), each with its values (None: uniform),
    its generator and its samples' labels, over equally many samples: one vectorised pass, and each run's
    selection the one it makes alone (up to the summation order of reductions)."""
    known = [v for v in values if v is not None]
    n = known[0].shape[-1] if known else int(num_samples or 0)
    if not 1 <= count <= n:
        raise ValueError(f"count must be in [1, {n}], got {count}")
    device = known[0].device if known else next((g.device for g in generators if g is not None),
                                                torch.device("cpu"))
    if rule.class_balance and (labels is None or any(lab is None for lab in labels)):
        raise ValueError("class_balance needs the labels of the samples")
    groups = counts = share = None
    if rule.class_balance:
        groups = torch.stack([lab.to(device) for lab in labels])
        classes = int(groups.max()) + 1
        share = class_shares(groups, count, classes)
    if known and rule.deterministic:  # top-m where values are known; a uniform row draws as it does alone
        valued = [r for r, v in enumerate(values) if v is not None]
        if groups is not None:
            counts = dict(zip(valued, class_quotas(groups[valued], count, classes, [generators[r] for r in valued])))
        return [_top_m(v, count, None if groups is None else groups[r], None if counts is None else counts[r])
                if v is not None else select_subsets([None], count, rule, [generators[r]],
                                                     None if labels is None else [labels[r]], n)[0]
                for r, v in enumerate(values)]
    if groups is not None:
        counts = class_quotas(groups, count, classes, generators)
    if len(known) == len(values):
        probs = rule.probabilities(torch.stack(values) if len(values) > 1 else values[0][None])
    else:
        probs = torch.full((len(values), n), 1.0 / n, device=device).double()
        if known:
            valued = torch.tensor([v is not None for v in values], device=device)[:, None]
            stacked = torch.stack([v if v is not None else known[0] for v in values])
            probs = torch.where(valued, rule.probabilities(stacked), probs)
    if groups is None:
        pi = drawn = inclusion_probabilities(probs, count)
    else:  # a class drawn one more pick than the floor of its share draws by those probabilities
        floor = torch.floor(share)
        low = inclusion_probabilities(probs, count, groups, floor)
        high = inclusion_probabilities(probs, count, groups, floor + (share > floor).double())
        drawn = torch.where((counts > floor).gather(-1, groups), high, low)
        pi = low + (share - floor).gather(-1, groups) * (high - low)  # over the draw of the quotas: exact
    chosen = systematic_samples(drawn, count, generators, groups)
    weights = (count / (n * pi)).float() if rule.reweight else None
    shares = _top_shares(probs).tolist()
    inclusion = pi.float()
    return [Selection(chosen[r], inclusion[r], None if weights is None else weights[r], shares[r])
            for r in range(len(values))]


def _top_m(values: torch.Tensor, count: int, groups: torch.Tensor | None, counts: torch.Tensor | None) -> Selection:
    """The deterministic selection (temperature 0): the top ``count`` values, within each class by its quota."""
    n = values.numel()
    z = normalise(values)
    if groups is None:
        idx = torch.topk(z, count, sorted=False).indices
    else:  # top within each class: rank inside the class after sorting by value
        order = torch.argsort(z, descending=True, stable=True)
        order = order[torch.argsort(groups[order], stable=True)]
        g = groups[order]
        start = torch.searchsorted(g, torch.arange(counts.numel(), device=values.device))
        rank = torch.arange(n, device=values.device) - start[g]
        idx = order[rank < counts.long()[g]]
    return Selection(idx, None, None, 1.0 if count / n <= 0.1 else 0.1 / (count / n))


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
