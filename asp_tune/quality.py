"""How good a proxy is: the measures of the proxy-datasets paper and of ASP, in one place.

For paired results of the same configurations (``proxy[i]``, ``target[i]``: accuracy with the
proxy, accuracy with full data):
- Kendall tau, Pearson r, Spearman rho (:func:`asp_tune.ranking.rank_correlation`);
- ``r2``: the r^2 of ``target = beta * proxy`` on accuracies normalised to mean 0 and standard
  deviation 1 (the share of the target's variance the proxy explains; equal to Pearson r squared);
- ``good_spearman``: Spearman rho over the good configurations only, those whose proxy accuracy
  reaches ``min_accuracy`` (default: the median proxy accuracy), because a search cares about the
  order of the best configurations;
- ``top1_regret``: the full-data accuracy lost by taking the proxy's best configuration;
- ``relative_cost``: proxy cost over target cost (seconds, or data passes).
Known cases: a perfect proxy gives 1 everywhere and regret 0; a reversed one gives -1 for the
rank measures, r^2 = 1 (r^2 does not see the sign: read it beside tau) and the largest regret; a
constant proxy ranks nothing, so every measure is NaN (never an arbitrary number), as is every measure
of fewer than 3 pairs. ``mode="min"`` reads both as losses (lower is better; the regret is still >= 0).
A configuration with a target score whose proxy run failed or diverged (its proxy score NaN or
infinite) is one the proxy ranked last: Kendall tau, Spearman rho and the regret count it there (``failed``
says how many), good Spearman never counts it among the good ones, Pearson and r^2 leave it out (a failed run
has no value to correlate). Dropping it
would make a proxy that failed on the best configuration look perfect.
Across strategies, :func:`cost_adjusted_r2` is each strategy's r^2 minus a cubic fit of r^2 over
relative cost: what a proxy explains beyond what its cost buys.
"""

from __future__ import annotations

import math
from typing import Sequence

import numpy as np
from scipy import stats

from asp_tune.ranking import rank_correlation


def _oriented(proxy: Sequence[float], target: Sequence[float], mode: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """The pairs with a target score, signed so that higher is better; a failed proxy score stays non-finite."""
    if mode not in ("max", "min"):
        raise ValueError(f"mode must be 'max' or 'min', not {mode!r}")
    sign = 1.0 if mode == "max" else -1.0
    x, y = sign * np.asarray(proxy, float), sign * np.asarray(target, float)
    keep = np.isfinite(y)
    return x[keep], y[keep]


def ranked_last(x: np.ndarray) -> tuple[np.ndarray, int]:
    """Higher-is-better proxy scores with every failed one (NaN, infinite) below every finite one (tied among
    themselves), and how many failed."""
    failed = ~np.isfinite(x)
    if not failed.any():
        return x, 0
    finite = x[~failed]
    floor = float(finite.min() - 1.0 - np.ptp(finite)) if finite.size else 0.0
    return np.where(failed, floor, x), int(failed.sum())


def _pairs(proxy: Sequence[float], target: Sequence[float], mode: str = "max") -> tuple[np.ndarray, np.ndarray]:
    """The pairs where both scores are finite (higher is better)."""
    x, y = _oriented(proxy, target, mode)
    keep = np.isfinite(x)
    return x[keep], y[keep]


def seed_spread(values: Sequence[float]) -> float:
    """The standard deviation reported beside a mean over seeds (the sample's, ``ddof=1``); NaN for fewer than
    two values (one seed measures no spread: never a spread of 0)."""
    if len(values) < 2:
        return math.nan
    return float(np.std(np.asarray(values, float), ddof=1))


def normalised(values: np.ndarray) -> np.ndarray:
    """Mean 0, standard deviation 1 (all zeros when the values do not vary)."""
    std = values.std()
    return (values - values.mean()) / std if std > 0 else np.zeros_like(values)


def r_squared(proxy: Sequence[float], target: Sequence[float], mode: str = "max") -> float:
    """r^2 of ``target = beta * proxy`` on normalised accuracies (NaN with fewer than 3 finite pairs)."""
    x, y = _pairs(proxy, target, mode)
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return math.nan
    x, y = normalised(x), normalised(y)
    beta = float(x @ y / (x @ x))
    residual = y - beta * x
    return float(1.0 - residual @ residual / (y @ y))


def good_spearman(proxy: Sequence[float], target: Sequence[float], min_accuracy: float | None = None,
                  mode: str = "max") -> float:
    """Spearman rho over the configurations whose proxy score is at least ``min_accuracy`` (at most, for
    ``mode="min"``; default: the median of the proxy scores that did not fail); NaN with fewer than 2 such pairs or
    no variation."""
    x, y = _oriented(proxy, target, mode)
    finite = np.isfinite(x)
    if not finite.any():
        return math.nan
    threshold = float(np.median(x[finite])) if min_accuracy is None else \
        (min_accuracy if mode == "max" else -min_accuracy)
    good = finite & (x >= threshold)  # a failed configuration is never a good one
    if good.sum() < 2 or np.ptp(x[good]) == 0 or np.ptp(y[good]) == 0:
        return math.nan
    return float(stats.spearmanr(x[good], y[good]).statistic)


def top1_regret(proxy: Sequence[float], target: Sequence[float], mode: str = "max") -> float:
    """Best target score minus the target score of the proxy's best configuration (>= 0; for ``mode="min"`` the
    proxy pick's loss less the best loss), the best counted among every configuration with a target score, those
    whose proxy failed too; NaN with fewer than 3 pairs or when the proxy scores are all equal (it picks nothing)."""
    x, y = _oriented(proxy, target, mode)
    x, _ = ranked_last(x)
    if x.size < 3 or np.ptp(x) == 0:
        return math.nan
    return float(y.max() - y[int(np.argmax(x))])


def relative_cost(proxy_cost: float, target_cost: float) -> float:
    return proxy_cost / target_cost if target_cost else math.nan


def proxy_quality(proxy: Sequence[float], target: Sequence[float], proxy_cost: float | None = None,
                  target_cost: float | None = None, min_accuracy: float | None = None,
                  mode: str = "max") -> dict[str, float]:
    """Every per-strategy measure of one proxy against the target, as one record: ``n`` pairs with a target score,
    ``failed`` of them without a proxy score (ranked last, see the module's text)."""
    x, y = _oriented(proxy, target, mode)
    ranked, failed = ranked_last(x)
    record: dict[str, float] = dict(rank_correlation(ranked, y))
    finite = np.isfinite(x)
    record["pearson"] = rank_correlation(x[finite], y[finite])["pearson"]
    record.update({"failed": failed, "r2": r_squared(x, y), "good_spearman": good_spearman(proxy, target, min_accuracy, mode),
                   "top1_regret": top1_regret(x, y)})
    if proxy_cost is not None and target_cost is not None:
        record["relative_cost"] = relative_cost(proxy_cost, target_cost)
    return record


def cost_adjusted_r2(r2: Sequence[float], cost: Sequence[float], degree: int = 3) -> np.ndarray:
    """Each strategy's r^2 minus a least-squares polynomial (cubic, as in the proxy-datasets paper;
    lower where there are too few strategies: a fit keeps at least one point more than it has terms). NaN
    where r^2 or the cost is missing; all NaN where no line can be fitted with a point to spare (fewer
    than three usable strategies, or one cost for all): a curve through every point leaves residuals of
    rounding, not of quality."""
    r2, cost = np.asarray(r2, float), np.asarray(cost, float)
    keep = np.isfinite(r2) & np.isfinite(cost)
    out = np.full(r2.shape, math.nan)
    deg = min(degree, int(keep.sum()) - 2, len(set(cost[keep])) - 1)
    if deg < 1:
        return out
    fit = np.polynomial.Polynomial.fit(cost[keep], r2[keep], deg=deg)
    out[keep] = r2[keep] - fit(cost[keep])
    return out
