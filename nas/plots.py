"""The figure of a NAS search: supernet training per epoch and supernet score against ground truth."""

from __future__ import annotations

from pathlib import Path

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
        chosen = candidates.loc[candidates["score"].idxmax()]
        ax.scatter([chosen["score"]], [chosen[truth[0]]], marker="*", s=220, color="red", label="chosen", zorder=5)
        best_truth = candidates[truth[0]].max()
        ax.axhline(best_truth, color="green", lw=0.8, ls="--", label=f"best candidate {best_truth:.2f}")
        if best_possible is not None:
            ax.axhline(best_possible, color="black", lw=0.8, ls=":", label=f"best in the space {best_possible:.2f}")
        ax.set_xlabel("supernet score (held-out accuracy, inherited weights)")
        ax.set_ylabel(f"known accuracy: {truth[0]} (%)")
        from asp_tune.ranking import rank_correlation

        tau = rank_correlation(candidates["score"].to_numpy(), candidates[truth[0]].to_numpy())["kendall_tau"]
        note = " (negative: ranks backwards)" if tau < 0 else ""
        ax.set_title(f"candidates against ground truth: Kendall tau {tau:.2f}{note}", fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
