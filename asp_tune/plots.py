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
    """The score per epoch (accuracy, or R² for regression), fraction of data selected per epoch, and the
    metric used."""
    plt = pyplot()
    fig, axes = plt.subplots(3, 1, figsize=(7, 8), sharex=True,
                             gridspec_kw={"height_ratios": [3, 2, 1.4]})
    ax = axes[0]
    proxy = bool((epochs["ratio"] < 1.0).any())
    score = next((c[len("train_"):] for c in epochs.columns if c.startswith("train_") and c != "train_loss"
                  and c != "train_seconds_total"), "accuracy")
    ax.plot(epochs["epoch"], epochs[f"train_{score}"], label="train (proxy subset)" if proxy else "train (all data)",
            marker=".")
    ax.plot(epochs["epoch"], epochs["val_score"], label="validation", marker=".")
    ax.set_ylabel("R²" if score == "r2" else score)
    if score == "accuracy":
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


def plot_groups(frame: pd.DataFrame, by: str, panels: list[tuple[str, str, str]], path: str | Path,
                title: str = "") -> Path:
    """One panel per ``(x column, y column, y label)``, one line per value of column ``by``."""
    plt = pyplot()
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (x, y, label) in zip(axes[0], panels):
        for name, part in frame.groupby(by, sort=False):
            ax.plot(part[x], part[y], marker="o", label=str(name))
        ax.set(xlabel=x, ylabel=label)
        ax.grid(alpha=0.3)
    axes[0][0].set_title(title)
    axes[0][0].legend()
    return save_figure(fig, path)


def save_figure(fig, path: str | Path) -> Path:
    """Lay out, write as PNG and close ``fig``."""
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    fig.clf()
    pyplot().close(fig)
    return path


def regression_line(ax, x, y, color: str = "tab:red") -> float:
    """Draw the y = x diagonal and the least-squares line ``y = a + b x``; return its r^2 (NaN with
    fewer than 3 finite pairs or no spread in ``x``)."""
    import numpy as np

    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if x.size:
        lo, hi = float(min(x.min(), y.min())), float(max(x.max(), y.max()))
        ax.plot([lo, hi], [lo, hi], color="grey", lw=0.8, ls="--")
    if x.size < 3 or np.ptp(x) == 0:
        return float("nan")
    slope, intercept = np.polyfit(x, y, 1)
    fitted = intercept + slope * x
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float(((y - fitted) ** 2).sum()) / total if total > 0 else float("nan")
    xs = np.array([x.min(), x.max()])
    backwards = ", falling: ranks reversed" if slope < 0 else ""  # a high r² of a falling line is no agreement
    ax.plot(xs, intercept + slope * xs, color=color, lw=1.2, label=f"fit: r² {r2:.2f}{backwards}")
    return r2


def agreement_scatter(ax, x, y, label: str | None = None, **style) -> float:
    """Proxy score against reference score with the y = x diagonal and the regression line;
    returns Kendall tau."""
    from asp_tune.ranking import rank_correlation

    ax.scatter(x, y, s=style.pop("s", 14), label=label, **style)
    regression_line(ax, list(x), list(y), color=style.get("color", "tab:red"))
    return rank_correlation(list(x), list(y))["kendall_tau"]


def plot_rung_agreement(trust: dict, path: str | Path, title: str = "") -> Path:
    """Kendall tau of each consecutive pair of rungs against the pair (from a search's ``proxy_trust``),
    each bar labelled with its number of configurations, the trust threshold dashed."""
    plt = pyplot()
    pairs = trust["pairs"]
    fig, ax = plt.subplots(figsize=(max(5.5, 1.3 * len(pairs) + 3), 3.6))
    labels = [f"{p['low']}->{p['high']}" for p in pairs]
    taus = [p["kendall_tau"] if p["kendall_tau"] == p["kendall_tau"] else 0.0 for p in pairs]
    colours = ["tab:grey" if p["trusted"] is None else ("tab:green" if p["trusted"] else "tab:red") for p in pairs]
    bars = ax.bar(labels, taus, color=colours)
    for bar, p in zip(bars, pairs):  # inside a tall bar, else beside it (a tau near 0 has no bar to hold it)
        height, inside = bar.get_height(), abs(bar.get_height()) >= 0.3
        ax.annotate(f"{p['pairs']} configs", (bar.get_x() + bar.get_width() / 2, height / 2 if inside else height),
                    xytext=(0, 0 if inside else (3 if height >= 0 else -3)), textcoords="offset points",
                    ha="center", va="center" if inside else ("bottom" if height >= 0 else "top"), fontsize=8,
                    color="white" if inside else "black")
    ax.axhline(trust["threshold"], color="black", ls="--", lw=0.8, label=f"threshold {trust['threshold']}")
    ax.axhline(0.0, color="black", lw=0.5)
    ax.set_ylim(-1.05, 1.05)
    ax.set_xlabel("rungs (epochs)\nred: below the threshold; grey: too few configurations to judge (tau as measured)",
                  fontsize=8)
    ax.set_ylabel("Kendall tau")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(title or "rank agreement of consecutive rungs", fontsize=10)
    return save_figure(fig, path)


def plot_full_data_agreement(trials: pd.DataFrame, section: dict, path: str | Path, title: str = "",
                             mode: str = "max") -> Path:
    """Each configuration's proxy score (y) against its full-data score (x) (from a decided search's ``trials``:
    ``proxy_score``, ``full_data_score``, ``full_data_from``), the pick ringed, Kendall tau and its interval
    (the ``full_data`` section of its summary) in the title."""
    plt = pyplot()
    both = trials[trials["proxy_score"].notna() & trials["full_data_score"].notna()]
    fig, ax = plt.subplots(figsize=(5.2, 4.2))
    for source, colour in (("top rung", "tab:blue"), ("audit", "tab:orange")):
        part = both[both["full_data_from"] == source]
        if len(part):
            ax.scatter(part["full_data_score"], part["proxy_score"], s=22, color=colour, label=source)
    if len(both):
        best = both.loc[both["full_data_score"].idxmax() if mode == "max" else both["full_data_score"].idxmin()]
        ax.scatter([best["full_data_score"]], [best["proxy_score"]], s=140, facecolors="none", edgecolors="black",
                   label="the pick")
    constant = section.get("constant_score")
    if constant is not None and constant == constant:  # chance: scores near it learnt nothing
        ax.axhline(constant, color="grey", ls=":", lw=1, label=f"chance ({constant:.3g})")
        ax.axvline(constant, color="grey", ls=":", lw=1)
    tau, (low, high) = section.get("kendall_tau"), section.get("interval") or (None, None)
    detail = (f"Kendall tau {tau:+.2f} ({int(100 * section.get('level', 0.9))}% interval {low:+.2f} .. {high:+.2f}), "
              f"{len(both)} configurations" if section.get("measured")
              else f"not measured: full data scores all {len(both)} configurations alike"
              if len(both) >= (section.get("min_pairs") or 0) and both["full_data_score"].nunique() == 1
              else f"not measured: {len(both)} configurations have both scores, {section.get('min_pairs')} needed")
    ax.set_xlabel("full-data score")
    ax.set_ylabel("proxy score")  # as the comparison's picture: the proxy against its reference
    ax.legend(loc="best", fontsize=8)
    ax.set_title(f"{title}\n{detail}" if title else detail, fontsize=9)
    return save_figure(fig, path)
