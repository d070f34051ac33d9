"""Figures a person would rather look at than read (matplotlib, written as PNG)."""

from __future__ import annotations

from pathlib import Path

import pandas as pd


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_training_run(epochs: pd.DataFrame, path: str | Path, title: str = "") -> Path:
    """Accuracy per epoch, fraction of data selected per epoch, and the metric used."""
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 1.4]})
    ax = axes[0]
    proxy = bool((epochs["ratio"] < 1.0).any())
    ax.plot(epochs["epoch"], epochs["train_accuracy"], label="train (proxy subset)" if proxy else "train (all data)",
            marker=".")
    ax.plot(epochs["epoch"], epochs["val_accuracy"], label="validation", marker=".")
    ax.set_ylabel("accuracy")
    ax.set_ylim(0, 1.0)
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
    pyplot().close(fig)
    return path


def agreement_scatter(ax, x, y, label: str | None = None, **style) -> float:
    """Proxy score against reference score with the y = x diagonal; returns Kendall tau."""
    from asp_tune.ranking import rank_correlation

    ax.scatter(x, y, s=style.pop("s", 14), label=label, **style)
    values = [v for v in list(x) + list(y) if v == v]
    if values:
        lo, hi = min(values), max(values)
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    return rank_correlation(list(x), list(y))["kendall_tau"]
