"""The figure of a NAS search: supernet training per epoch and supernet score against ground truth."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from asp_tune.plots import pyplot, save_figure


def plot_search(epochs: pd.DataFrame, candidates: pd.DataFrame, path: str | Path, title: str = "",
                truth_column: str | None = None, best_possible: float | None = None) -> Path:
    """Supernet training per epoch; with a ground-truth column in ``candidates``, the candidates'
    supernet scores against their known accuracies, the chosen one and the best possible marked."""
    plt = pyplot()
    truth = [truth_column] if truth_column and truth_column in candidates.columns else []
    fig, axes = plt.subplots(1, 2 if truth else 1, figsize=(12 if truth else 7, 4.5), squeeze=False)
    ax = axes[0][0]
    for seed, run in epochs.groupby("seed") if "seed" in epochs else [(None, epochs)]:
        label = "" if seed is None else f" (seed {seed})"
        ax.plot(run["epoch"], run["val_accuracy"], marker=".", label=f"val accuracy{label}")
        ax.bar(run["epoch"], run["ratio"], alpha=0.15, color="tab:green")
    ax.set_xlabel("supernet epoch")
    ax.set_ylabel("accuracy / fraction of data used (bars)")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    if truth:
        ax = axes[0][1]
        for phase, group in candidates.groupby("phase"):
            ax.scatter(group["score"], group[truth[0]], s=14, label=phase, alpha=0.7)
        for seed, own in _by_seed(candidates):  # each seed's supernet scored its own candidates: its own pick
            chosen = own.loc[own["score"].idxmax()]
            ax.scatter([chosen["score"]], [chosen[truth[0]]], marker="*", s=220, zorder=5,
                       label="chosen" if seed is None else f"chosen (seed {seed})",
                       color="red" if seed is None else None, edgecolors="black")
        best_truth = candidates[truth[0]].max()
        ax.axhline(best_truth, color="green", lw=0.8, ls="--", label=f"best candidate {best_truth:.2f}")
        if best_possible is not None:
            ax.axhline(best_possible, color="black", lw=0.8, ls=":", label=f"best in the space {best_possible:.2f}")
        ax.set_xlabel("supernet score (held-out accuracy, inherited weights)")
        ax.set_ylabel(f"known accuracy: {truth[0]} (%)")
        ax.set_title(truth_title(candidates, truth[0]), fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)


def _by_seed(candidates: pd.DataFrame) -> list[tuple[int | None, pd.DataFrame]]:
    """The candidates of each seed's search (one group, seed None, for a single search)."""
    return list(candidates.groupby("seed")) if "seed" in candidates else [(None, candidates)]


def truth_title(candidates: pd.DataFrame, column: str) -> str:
    """The title of the candidates' picture: the Kendall tau of their supernet scores against ``column``, each
    seed's over its own candidates (scores of different supernets do not rank together) and their mean."""
    from asp_tune.ranking import rank_correlation

    taus = [(seed, rank_correlation(own["score"].to_numpy(), own[column].to_numpy())["kendall_tau"])
            for seed, own in _by_seed(candidates)]
    tau = float(np.nanmean([t for _, t in taus])) if taus else float("nan")
    note = " (negative: ranks backwards)" if tau < 0 else ""
    if len(taus) < 2:
        return f"candidates against ground truth: Kendall tau {tau:.2f}{note}"
    each = ", ".join(f"seed {seed}: {t:.2f}" for seed, t in taus)
    return f"candidates against ground truth: mean Kendall tau {tau:.2f}{note}\n({each})"
