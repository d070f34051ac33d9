"""Sub-commands ``coreset`` and ``active-learn`` (selection via proxy; registered into ``asp-tune``)."""

from __future__ import annotations

import argparse
import sys
from typing import Any

from asp_tune.commands import (add_output_flags, add_train_arguments, announce_proxy_model, command,
                               config_from_args, results_folder, subcommand)
from asp_tune.flags import add_arguments, values_from_args

#: Training flags that are ASP's per-epoch selection, not used by a fixed subset or a labelled pool.
ASP_ONLY_FIELDS = ("model", "metric", "ratio", "ratio_schedule", "mixture_order", "mixture_width", "selection_rule",
                   "temperature", "top10_mass", "uniform_floor", "reweight", "infobatch_prune", "infobatch_anneal",
                   "first_epoch_full", "unseen_first")


#: Training flags active learning has no use for: its picks are not class-stratified, and its pool is the whole
#: training split (no model of it validates).
UNUSED_BY_ACTIVE_LEARNING = ("class_balance", "val_fraction")
#: Proxy-model helps as active learning uses them (a model per round, not one cached).
ACTIVE_LEARNING_HELPS = {
    "proxy_model": "network trained on the labelled pool each round to pick the next labels (none: the target "
                   "network)",
    "proxy_epochs": "epochs of each round's model, retrained every round with the optimisation flags (none: a quarter "
                    "of --epochs, at least 1)"}


def _add_common(p: argparse.ArgumentParser, settings_class: type, skip: tuple[str, ...] = (),
                helps: dict[str, str] | None = None) -> None:
    add_arguments(p, settings_class)
    add_train_arguments(p, skip=ASP_ONLY_FIELDS + skip, helps=helps)
    add_output_flags(p)


@subcommand("coreset", "SVP core-set: proxy model -> select a fraction -> train the target, against full data")
def add_coreset_parser(p: argparse.ArgumentParser) -> None:
    from asp_tune.svp_settings import CoresetSettings

    p.description = ("Selection via proxy: train a proxy model (--proxy-model, --proxy-epochs; trained once and "
                     "cached), keep --fraction of the training data by --strategy (the top scores within each "
                     "class in proportion to its size; --class-balance false ranks over all classes, as SVP did), "
                     "train --target-model on it; "
                     "beside the target on all data. Writes summary.json (accuracy and end-to-end seconds of "
                     "each, with their breakdown), epochs.csv, subset.csv and coreset.png.")
    _add_common(p, CoresetSettings)


@subcommand("active-learn", "SVP active learning: rounds of proxy-picked labels, against random labelling")
def add_active_learn_parser(p: argparse.ArgumentParser) -> None:
    from asp_tune.svp_settings import ActiveLearningSettings

    p.description = ("Pool-based active learning: from a random initial pool of the training split, each round "
                     "retrains the proxy model on the labelled samples (with the optimisation flags) and labels "
                     "--budget more by --strategy; a --target-model is trained on the final pool. Random labelling runs from the same initial pool beside it. Writes "
                     "summary.json, rounds.csv and rounds.png.")
    _add_common(p, ActiveLearningSettings, UNUSED_BY_ACTIVE_LEARNING, ACTIVE_LEARNING_HELPS)


def _bar(total: int, desc: str, unit: str, quiet: bool):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr)


@command("coreset")
def run_coreset_command(args: argparse.Namespace) -> int:
    import pandas as pd

    from asp_tune.svp import run_coreset
    from asp_tune.svp_settings import CoresetSettings

    settings = CoresetSettings(**values_from_args(args, CoresetSettings)).validate()
    config = config_from_args(args).replace(model=settings.target_model)
    runs = 2 if settings.baseline else 1
    with results_folder(args) as out:
        bar = None

        def announce() -> None:
            nonlocal bar
            announce_proxy_model(config.replace(metric=settings.strategy, ratio=settings.fraction), "asp-tune coreset")
            bar = _bar(runs * config.epochs, "coreset", "epoch", args.quiet)

        def progress(run: str, rec: dict[str, Any]) -> None:
            bar.update(1)
            bar.set_postfix(run=run, val=f"{rec['val_score']:.3f}")

        result = run_coreset(config, settings, on_epoch=progress, before_training=announce)
        bar.close()
        epochs = pd.DataFrame(result["epochs"])
        out.write_table("epochs.csv", epochs)
        out.write_table("subset.csv", pd.DataFrame(result["subset"]))
        plot_coreset(epochs, out.file("coreset.png"), f"{settings.strategy} core-set ({settings.fraction:g} of the "
                                                      f"data) vs full data: {settings.target_model}")
        summary = {**result["summary"], "settings": vars(settings)}  # its config: what the core-set ran
        target = out.commit(summary)
    s = result["summary"]
    kept = "" if abs(s["data_fraction"] - s["fraction"]) < 0.01 else f", {s['data_fraction']:.3g} kept"
    line = (f"core-set ({s['strategy']}, {s['fraction']:g}{kept}) test {s['score']} {s['coreset_test_score']:.4f} in "
            f"{s['coreset_end_to_end_seconds']:.1f}s end to end")
    if "full_test_score" in s:
        line += (f" | full data {s['full_test_score']:.4f} in {s['full_end_to_end_seconds']:.1f}s | "
                 f"{s['speedup']:.2f}x, {100 * s['score_change']:+.1f} points (one seed)")
    print(f"{line}  -> {target}")
    return 0


@command("active-learn")
def run_active_learn_command(args: argparse.Namespace) -> int:
    import pandas as pd

    from asp_tune.svp import run_active_learning
    from asp_tune.svp_settings import ActiveLearningSettings

    settings = ActiveLearningSettings(**values_from_args(args, ActiveLearningSettings)).validate()
    config = config_from_args(args).replace(model=settings.target_model)
    strategies = 2 if settings.baseline and settings.strategy != "random" else 1
    with results_folder(args) as out:
        bar = _bar(strategies * settings.rounds, "active-learn", "round", args.quiet)

        def progress(result) -> None:
            bar.update(1)
            bar.set_postfix(strategy=result.strategy, labelled=result.labelled,
                            error=f"{result.model_test_error:.3f}")

        result = run_active_learning(config, settings, on_round=progress)
        bar.close()
        rounds = pd.DataFrame(result["rounds"])
        out.write_table("rounds.csv", rounds)
        out.write_table("final.csv", pd.DataFrame(result["finals"]))
        plot_rounds(rounds, out.file("rounds.png"), f"active learning: {settings.strategy} vs random",
                    result["summary"]["error_is"])
        summary = {**result["summary"], "settings": vars(settings)}  # with the config it ran (no validation split)
        target = out.commit(summary)
    finals = "  ".join(f"{f['strategy']}: target error ({f['error_is']}) {f['target_test_error']:.4f} on "
                       f"{f['labelled']} labels"
                       for f in result["finals"])
    print(f"{finals}  -> {target}")
    return 0


def plot_coreset(epochs, path, title: str) -> None:
    """Validation accuracy per epoch and cumulative training seconds of each run."""
    from asp_tune.plots import plot_groups

    plot_groups(epochs, "run", [("epoch", "val_score", "validation score (accuracy; r2 for regression)"),
                                ("epoch", "train_seconds_total", "training seconds (cumulative)")], path, title)


def plot_rounds(rounds, path, title: str, error_is: str = "1 - accuracy") -> None:
    """Test error (``error_is``) and selection seconds per round, one line per strategy."""
    from asp_tune.plots import plot_groups

    plot_groups(rounds, "strategy", [("labelled", "model_test_error", f"test error ({error_is}) of the round's model"),
                                     ("round", "selection_seconds", "selection seconds (train + score + pick)")],
                path, title)
