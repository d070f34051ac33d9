"""Pictures of a run (``asp-tune inspect RUN_DIR``, or ``train --inspect``), written as PNG.

For a ``train`` run: per-sample importance trajectories over the epochs (ASP appendix D), the
easiest and hardest training images by the final model's loss (overall and per class), and how
often each sample was selected. For a ``correlate`` run: proxy against full-data accuracy per
cell, with the least-squares regression line.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd

from asp_tune.run_files import SAMPLES_FILE, TRAJECTORIES_FILE
from asp_tune.errors import ConfigError
from asp_tune.plots import pyplot, regression_line, save_figure

EXAMPLES = 8  # images per row of a grid


def plot_trajectories(trajectories: pd.DataFrame, path: Path, title: str = "") -> Path:
    """One panel per memory metric: each tracked sample's value after every epoch; filled markers
    where that epoch trained on the sample."""
    plt = pyplot()
    metrics = [c for c in trajectories.columns if c not in ("epoch", "sample", "label", "selected", "metric_used")]
    rows = -(-(len(metrics) + 1) // 3)
    fig, axes = plt.subplots(rows, 3, figsize=(12, 3.2 * rows), sharex=True, squeeze=False)
    for ax in axes.flat[len(metrics) + 1:]:
        ax.set_visible(False)
    for ax, metric in zip(axes.flat, metrics):
        for _, part in trajectories.groupby("sample"):
            line, = ax.plot(part["epoch"], part[metric], lw=0.8, alpha=0.7)
            chosen = part[part["selected"].astype(bool)]
            ax.scatter(chosen["epoch"], chosen[metric], s=8, color=line.get_color())
        ax.set_title(metric)
        ax.grid(alpha=0.3)
    used = trajectories.drop_duplicates("epoch")
    ax = axes.flat[len(metrics)]
    names = list(dict.fromkeys(used["metric_used"]))
    ax.scatter(used["epoch"], [names.index(m) for m in used["metric_used"]], c="tab:purple", s=18)
    ax.set_yticks(range(len(names)), names)
    ax.set_title("metric used")
    for ax in axes[-1]:
        ax.set_xlabel("epoch")
    fig.suptitle(title or f"importance of {trajectories['sample'].nunique()} random samples (dots: selected)")
    return save_figure(fig, path)


def plot_selection_frequency(samples: pd.DataFrame, epochs: int, path: Path, classes: list[str]) -> Path:
    """Histogram of how many epochs selected each sample, and the mean per class."""
    plt = pyplot()
    fig, axes = plt.subplots(1, 2, figsize=(11, 3.6))
    counts = samples["times_selected"].to_numpy()
    axes[0].hist(counts, bins=np.arange(epochs + 2) - 0.5, color="tab:green")
    axes[0].set(xlabel=f"epochs that selected the sample (of {epochs})", ylabel="samples",
                title=f"never selected: {(counts == 0).mean():.1%}, every epoch: {(counts == epochs).mean():.1%}")
    if samples["label"].dtype.kind in "iu":  # class labels; regression targets have no classes
        per_class = samples.groupby("label")["times_selected"].mean()
        axes[1].bar([classes[i] if i < len(classes) else str(i) for i in per_class.index], per_class.values / epochs)
        axes[1].set(ylabel="mean fraction of epochs selected", title="per class")
        axes[1].tick_params(axis="x", rotation=45)
    else:
        axes[1].scatter(samples["label"], samples["times_selected"] / epochs, s=4)
        axes[1].set(xlabel="target", ylabel="fraction of epochs selected", title="by target")
    return save_figure(fig, path)


def _show(ax, image: np.ndarray, caption: str) -> None:
    ax.imshow(image.transpose(1, 2, 0).squeeze(), cmap="gray" if image.shape[0] == 1 else None, vmin=0, vmax=255)
    ax.set_title(caption, fontsize=7)
    ax.axis("off")


def plot_examples(images: np.ndarray, labels: np.ndarray, losses: np.ndarray, classes: list[str], path: Path,
                  per_class: bool) -> Path:
    """The easiest and hardest training images by loss: overall (two rows) or per class (one row
    per class: easiest on the left, hardest on the right)."""
    plt = pyplot()
    order = np.argsort(losses, kind="stable")
    if not per_class:
        rows = [("easiest", order[:EXAMPLES]), ("hardest", order[::-1][:EXAMPLES])]
        fig, axes = plt.subplots(2, EXAMPLES, figsize=(1.3 * EXAMPLES, 3.2), squeeze=False)
        for r, (name, idx) in enumerate(rows):
            for c, i in enumerate(idx):
                _show(axes[r][c], images[i], f"{classes[labels[i]]} {losses[i]:.2f}")
            axes[r][0].text(-0.3, 0.5, name, transform=axes[r][0].transAxes, rotation=90, va="center")
        fig.suptitle("easiest and hardest training images (caption: label, final loss)")
        return save_figure(fig, path)
    shown = [k for k in range(len(classes)) if (labels == k).any()][:20]
    half = EXAMPLES // 2
    fig, axes = plt.subplots(len(shown), 2 * half, figsize=(1.2 * 2 * half, 1.25 * len(shown)), squeeze=False)
    for r, k in enumerate(shown):
        mine = order[labels[order] == k]
        for c, i in enumerate(list(mine[:half]) + list(mine[::-1][:half])):
            _show(axes[r][c], images[i], f"{losses[i]:.2f}")
        axes[r][0].text(-0.4, 0.5, classes[k], transform=axes[r][0].transAxes, ha="right", va="center", fontsize=8)
    fig.suptitle(f"per class: {half} easiest (left) and {half} hardest (right) by final loss")
    return save_figure(fig, path)


def plot_proxy_vs_target(scores: pd.DataFrame, path: Path) -> Path:
    """Each (ratio, metric) cell of a ``correlate`` run: proxy against full-data score (``scores.csv``'s
    ``score``; ``val_accuracy`` in files written before it), with the least-squares regression line."""
    plt = pyplot()
    column = "score" if "score" in scores else "val_accuracy"
    full = scores[scores["metric"] == "none"].set_index("config")[column]
    proxy = scores[scores["metric"] != "none"]
    cells = list(proxy.groupby(["metric", "ratio"], sort=False))
    columns = min(4, max(1, len(cells)))
    rows = -(-len(cells) // columns)
    fig, axes = plt.subplots(rows, columns, figsize=(3.2 * columns, 3 * rows), squeeze=False)
    for ax, ((metric, ratio), part) in zip(axes.flat, cells):
        part = part.set_index("config")
        common = part.index.intersection(full.index)
        x, y = part.loc[common, column].to_numpy(), full.loc[common].to_numpy()
        ax.scatter(x, y, s=14)
        r2 = regression_line(ax, x, y)
        ax.set_title(f"{metric}, r={ratio}: r² {r2:.2f}", fontsize=9)
        ax.set(xlabel="proxy score", ylabel="full-data score")
    for ax in list(axes.flat)[len(cells):]:
        ax.axis("off")
    return save_figure(fig, path)


def training_pictures(folder: Path, file: Callable[[str], Path], images: np.ndarray | None = None,
                      losses: np.ndarray | None = None, classes: list[str] | None = None) -> list[Path]:
    """The pictures of a ``train`` results folder (``samples.csv``, ``trajectories.csv``), written
    where ``file(name)`` says; ``images``/``losses`` (training split, final model) add the example grids."""
    import json

    summary = json.loads((folder / "summary.json").read_text())
    samples = pd.read_csv(folder / SAMPLES_FILE)
    classes = classes or [str(k) for k in sorted(samples["label"].unique())]
    written = [plot_selection_frequency(samples, int(summary["epochs"]), file("selection_frequency.png"), classes)]
    if (folder / TRAJECTORIES_FILE).is_file():  # runs with an importance memory (ASP metrics)
        written.append(plot_trajectories(pd.read_csv(folder / TRAJECTORIES_FILE), file("importance_trajectories.png")))
    if images is not None and losses is not None and images.ndim == 4 and images.dtype == np.uint8:  # images only
        labels = samples["label"].to_numpy()
        written.append(plot_examples(images, labels, losses, classes, file("examples.png"), per_class=False))
        written.append(plot_examples(images, labels, losses, classes, file("examples_per_class.png"), per_class=True))
    return written


def score_samples_for_pictures(trainer) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """(training images, each one's loss under the trainer's model, class names); no losses for a task without
    classes (regression: the example grids are by class, and scoring reads class logits)."""
    from asp_tune.proxy_scores import score_samples

    if not trainer.task.has_classes:
        return trainer.data.train.images.numpy(), None, list(trainer.data.classes)
    loss = score_samples(trainer)[0].numpy()
    return trainer.data.train.images.numpy(), loss, list(trainer.data.classes)


def final_losses(folder: Path, trust: tuple[str, ...] = ()) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """:func:`score_samples_for_pictures` of the run's final model (``model.pt``), on the run's own
    data split (rebuilt from its config; its import paths only into registries and ``trust``)."""
    import torch

    from asp_tune.trainer import Trainer, load_model

    import json

    model, config, _ = load_model(folder / "model.pt", trust=trust, check_config=True)
    device = config.device if torch.cuda.is_available() else "cpu"
    trainer = Trainer(config.replace(device=device, metric="none", ratio=1.0, ratio_schedule="constant"), model=model)
    recorded = json.loads((folder / "summary.json").read_text()).get("train_split")
    if recorded and recorded != trainer.split_fingerprint():  # data changed since: pictures would mislabel it
        now = trainer.split_fingerprint()
        differs = "" if now["samples"] != recorded["samples"] else " with other labels"
        raise ConfigError("run_dir", str(folder), f"a run whose data is still what it trained on: "
                                                  f"{config.data_dir or config.dataset} now gives a training split of "
                                                  f"{now['samples']} samples (the run had {recorded['samples']})"
                                                  f"{differs}")
    return score_samples_for_pictures(trainer)


def inspect_folder(folder: Path, file: Callable[[str], Path], trust: tuple[str, ...] = ()) -> list[Path]:
    """Every picture the results folder ``folder`` supports (a ``train`` or ``correlate`` run); the code
    its files name is imported only from registries and the modules in ``trust``."""
    if (folder / "scores.csv").is_file():
        return [plot_proxy_vs_target(pd.read_csv(folder / "scores.csv"), file("proxy_vs_target.png"))]
    if (folder / SAMPLES_FILE).is_file():
        images = losses = classes = None
        if (folder / "model.pt").is_file():
            images, losses, classes = final_losses(folder, trust)
        return training_pictures(folder, file, images, losses, classes)
    raise ConfigError("run_dir", str(folder), "a results folder of asp-tune train (samples.csv) or correlate "
                                              "(scores.csv)")
