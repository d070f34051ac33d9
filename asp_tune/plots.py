"""Figures a person would rather look at than read (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_run(epochs: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Accuracy per epoch, fraction of data selected per epoch, and the metric used."""
    plt = _pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 1.4]})
    ax = axes[0]
    ax.plot(epochs["epoch"], epochs["train_accuracy"], label="train (proxy subset)", marker=".")
    ax.plot(epochs["epoch"], epochs["val_accuracy"], label="validation", marker=".")
    ax.set_ylabel("accuracy")
    ax.legend(loc="lower right")
    ax.grid(alpha=0.3)
    ax.set_title(title)
    ax = axes[1]
    ax.bar(epochs["epoch"], epochs["ratio"], color="tab:green", alpha=0.7, label="fraction used")
    ax.plot(epochs["epoch"], epochs["data_passes"] / epochs["epoch"], color="k", lw=1, marker=".",
            label="mean fraction so far (data passes / epochs)")
    ax.set_ylabel("fraction of train set")
    ax.set_ylim(0, 1.05)
    ax.legend(loc="upper right")
    ax.grid(alpha=0.3)
    ax = axes[2]
    names = list(dict.fromkeys(epochs["metric_used"]))
    ax.scatter(epochs["epoch"], [names.index(m) for m in epochs["metric_used"]], c="tab:purple", s=18)
    ax.set_yticks(range(len(names)), names)
    ax.set_ylabel("metric")
    ax.set_xlabel("epoch")
    ax.grid(alpha=0.3)
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write as PNG and close ``fig``."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    fig.clf()
    _pyplot().close(fig)
    return path
