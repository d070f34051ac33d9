"""Choosing ``m`` of ``N`` samples from importance values, on the values' device.

Probabilities are ``softmax(normalise(v) / T)``; samples are drawn without replacement with the
Gumbel-top-k trick (exact for sequential sampling without replacement, O(N) plus one top-k).
``T = 0`` gives deterministic top-m, the core-set special case.
"""

from __future__ import annotations

import math

import torch


def normalise(values: torch.Tensor) -> torch.Tensor:
    """Z-score over all samples, so one temperature means the same for every metric.

    Constant values (e.g. a fresh memory) normalise to zeros, i.e. uniform selection.
    """
    values = values.float()
    std, mean = torch.std_mean(values, unbiased=False)
    return torch.where(std > 0, (values - mean) / std.clamp_min(1e-12), torch.zeros_like(values))


def selection_logits(values: torch.Tensor, temperature: float) -> torch.Tensor:
    """Logits of the selection distribution for ``temperature > 0``."""
    return normalise(values) / temperature


def selection_probabilities(values: torch.Tensor, temperature: float) -> torch.Tensor:
    """The per-sample probability of the first draw, ``softmax(normalise(v) / T)``."""
    return torch.softmax(selection_logits(values, temperature), dim=0)


def select(
    values: torch.Tensor | None,
    count: int,
    temperature: float = 1.0,
    generator: torch.Generator | None = None,
    num_samples: int | None = None,
) -> torch.Tensor:
    """Indices of ``count`` distinct samples.

    ``values=None`` selects uniformly (the ``random`` metric; give ``num_samples``). Otherwise
    samples are drawn without replacement with probabilities ``softmax(normalise(v) / T)``;
    ``temperature == 0`` returns the top-``count`` values. The order of the result follows the
    draw (most favoured first), so shuffle before batching.
    """
    if values is None:
        if num_samples is None:
            raise ValueError("select() needs num_samples when values is None")
        device = generator.device if generator is not None else torch.device("cpu")
        return torch.randperm(num_samples, generator=generator, device=device)[:count]
    n = values.numel()
    if not 1 <= count <= n:
        raise ValueError(f"count must be in [1, {n}], got {count}")
    if temperature < 0:
        raise ValueError(f"temperature must be >= 0, got {temperature}")
    if temperature == 0:
        return torch.topk(normalise(values), count, sorted=False).indices
    # Gumbel-top-k: argtop-k of logits + Gumbel noise, Gumbel = -log(-log U). (Drawing U and
    # taking two logs is ~3x faster on CPU than torch's exponential_.)
    u = torch.rand(n, generator=generator, device=values.device).clamp_(min=1e-12)
    keys = selection_logits(values, temperature) - u.log_().neg_().log_()
    return torch.topk(keys, count, sorted=False).indices


def top_mass(values: torch.Tensor | None, temperature: float, fraction: float = 0.1) -> float:
    """Share of the selection probability on the top ``fraction`` of samples.

    ``fraction`` for uniform selection, 1.0 when ``T = 0`` and ``fraction`` covers the pick:
    a quick read of how greedy a selection is.
    """
    if values is None:
        return float(fraction)
    n = values.numel()
    k = max(1, math.ceil(fraction * n))
    if temperature == 0:
        return 1.0
    probs = selection_probabilities(values, temperature)
    return float(torch.topk(probs, k, sorted=False).values.sum())
