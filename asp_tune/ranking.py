"""How well one scoring of candidates ranks them like another (proxy against ground truth)."""

from __future__ import annotations

import math

import numpy as np
from scipy import stats


def rank_correlation(x: list[float] | np.ndarray, y: list[float] | np.ndarray) -> dict[str, float]:
    """Kendall tau, Pearson r and Spearman rho of paired scores (NaN with fewer than 3 pairs)."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size < 3 or np.ptp(x) == 0 or np.ptp(y) == 0:
        return {"kendall_tau": math.nan, "pearson": math.nan, "spearman": math.nan, "n": int(x.size)}
    return {"kendall_tau": float(stats.kendalltau(x, y).statistic),
            "pearson": float(stats.pearsonr(x, y).statistic),
            "spearman": float(stats.spearmanr(x, y).statistic), "n": int(x.size)}
