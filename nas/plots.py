"""The figure of a NAS search: supernet training per epoch and supernet score against ground truth."""

from __future__ import annotations

from pathlib import Path

import pandas as pd

from asp_tune.plots import _pyplot, save_figure


def plot_search(epochs: pd.DataFrame, candidates: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    plt = _pyplot()
    truth = [c for c in candidates.columns if c.startswith("nb201_")]
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
        ax.set_xlabel("supernet score (held-out accuracy, inherited weights)")
        ax.set_ylabel(f"NAS-Bench-201 {truth[0].removeprefix('nb201_')} (%)")
        ax.set_title("candidates: supernet ranking against ground truth")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    return save_figure(fig, path)
