"""Sub-commands ``nas`` and ``nas-retrain`` (registered into ``asp-tune``)."""

from __future__ import annotations

import argparse
import contextlib
import sys
from pathlib import Path
from typing import Any

from asp_tune.commands import add_output_flags, add_train_arguments, command, config_from_args, results_folder, subcommand
from asp_tune.errors import ConfigError, RunInterrupted
from asp_tune.flags import add_arguments, values_from_args


def _add_output_flags(p: argparse.ArgumentParser) -> None:
    add_output_flags(p)
    p.add_argument("--checkpoint-dir", default=None,
                   help="where per-epoch checkpoints live (default: .OUT.checkpoints beside --out); "
                        "an interrupted run started again with the same flags resumes from them")
    p.add_argument("--restart", action="store_true",
                   help="delete this run's earlier checkpoints (only files asp_tune wrote) and start over")


@subcommand("nas", "architecture search (SPOS or DARTS) with ASP proxy data")
def add_nas_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Train a supernet on ASP proxy data, then pick an architecture: SPOS or DARTS, on any "
                     "registered space. --ratio 1.0 --metric none is the full-data baseline. Writes summary.json, "
                     "epochs.csv, candidates.csv (SPOS) and search.png.")
    from nas.settings import NAS_METRIC_HELP, EvolutionSettings, NasSettings, supernet_train_config

    add_arguments(p, NasSettings)
    add_arguments(p, EvolutionSettings, group="SPOS selection (held-out split, inherited weights)")
    add_train_arguments(p, supernet_train_config(), skip=("model",), helps={"metric": NAS_METRIC_HELP})
    p.set_defaults(seed=None)  # None: --seed not given (refused beside --seeds); the help keeps its default
    from nas.settings import SeedsSettings

    add_arguments(p, SeedsSettings)
    _add_output_flags(p)


@subcommand("nas-retrain", "train a DARTS genotype's network from scratch")
def add_retrain_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Build the evaluation network of a genotype and train it from scratch; reports test "
                     "accuracy. Writes summary.json, epochs.csv and training.png.")
    p.add_argument("--genotype", required=True,
                   help="darts_v2, a Genotype(...) string, JSON, or a file (a DARTS-space search's summary.json, or "
                        "its folder; RUN#seed=S: seed S of a search of several)")
    from nas.settings import RetrainSettings, retrain_train_config

    add_arguments(p, RetrainSettings)
    add_train_arguments(p, retrain_train_config(), skip=("model",))
    _add_output_flags(p)




def settings_from_args(args: argparse.Namespace):
    from nas.settings import EvolutionSettings, NasSettings

    values = values_from_args(args, NasSettings)
    if values["ground_truth"]:
        values["ground_truth"] = str(Path(values["ground_truth"]).expanduser().resolve())
    train = config_from_args(args)
    if train.data_dir and "://" not in train.data_dir:
        train = train.replace(data_dir=str(Path(train.data_dir).expanduser().resolve()))
    return NasSettings(**values, train=train,
                       evolution=EvolutionSettings(**values_from_args(args, EvolutionSettings))).validate()


@contextlib.contextmanager
def _checkpoint_folder(args: argparse.Namespace):
    """The run's checkpoint folder; ``--restart`` deletes the checkpoints asp_tune wrote there. A run that
    fails before its first checkpoint (a network too large, bad data) leaves no folder behind; one that
    succeeds removes it (``remove``) once its results are written."""
    from asp_tune.run_dir import CheckpointFolder

    out = Path(args.out).expanduser().absolute()
    folder = CheckpointFolder(args.checkpoint_dir or out.parent / f".{out.name}.checkpoints")
    if args.restart:
        folder.clear()
    try:
        yield folder
    except BaseException as exc:
        folder.remove_if_unused()
        folder.release()  # what is left is for a resume, by the next run
        if isinstance(exc, KeyboardInterrupt) and folder.holds_checkpoints():
            raise RunInterrupted(f"interrupted; no results were committed. The epochs trained are kept in "
                                 f"{folder.path}: the same command again resumes from them (--restart starts "
                                 "over)") from None
        raise


def _say_resuming(checkpoints: list[Path]) -> None:
    """Say which checkpoints a run goes on from (the same command after an interruption)."""
    found = [p for p in checkpoints if p.exists()]
    if found:
        print(f"[asp-tune nas] resuming from {', '.join(p.name for p in found)} in {found[0].parent} "
              "(--restart starts over)", file=sys.stderr)


def _progress(total: int, desc: str, quiet: bool, unit: str):
    from tqdm.auto import tqdm

    return tqdm(total=total, desc=desc, unit=unit, disable=quiet, file=sys.stderr)


@command("nas")
def run_nas(args: argparse.Namespace) -> int:
    from nas.plots import plot_search
    from nas.search import aggregate, run_search
    from nas.settings import SEARCHERS, SeedsSettings

    settings = settings_from_args(args)
    parallel = SeedsSettings(**values_from_args(args, SeedsSettings)).validate()
    if parallel.seeds and args.seed is not None:
        raise ConfigError("seed", settings.train.seed, "not given beside --seeds: --seeds sets each search's seed, "
                                                       "so --seed would be ignored")
    space = settings.search_space
    table = space.load_ground_truth(settings.ground_truth) if settings.ground_truth else None
    if space.has_ground_truth and table is None:
        print("[asp-tune nas] no --ground-truth: the found architecture's known accuracy and the "
              "supernet's Kendall tau are not reported", file=sys.stderr)
    seeds = parallel.seeds or [settings.train.seed]
    if len(seeds) > 1:  # resources no node has are refused before any folder is made
        from asp_tune.tune.session import check_resources, ensure_ray

        ensure_ray(parallel.address)
        check_resources(parallel.cpus_per_search, parallel.gpus_per_search, field="per_search")
    with results_folder(args) as out, _checkpoint_folder(args) as ckpt:
        cfg = settings.train_config()  # auto made concrete, as the search runs it
        print(f"[asp-tune nas] {settings.searcher} on {settings.space} (C={settings.channels}, "
              f"cells={settings.num_cells}) | {cfg.dataset} | ratio {cfg.ratio} ({cfg.ratio_schedule}), "
              f"metric {cfg.metric} | seeds {seeds}", file=sys.stderr)
        if len(seeds) == 1:
            settings = settings.with_seed(seeds[0])
            bar = _progress(cfg.epochs, "supernet", args.quiet, "epoch")

            def on_epoch(rec: dict[str, Any]) -> None:
                bar.update(rec["epoch"] - bar.n)  # a resumed run's first epoch is not its first
                bar.set_postfix(val=f"{rec['val_accuracy']:.3f}", used=f"{rec['ratio']:.2f}",
                                metric=rec["metric_used"], passes=f"{rec['data_passes']:.2f}")

            scoring = _progress(None, "selection", args.quiet or not SEARCHERS[settings.searcher].scores_candidates,
                                "arch")
            _say_resuming([ckpt.file(f"seed{seeds[0]}.pt")])
            results = [run_search(settings, ckpt.file(f"seed{seeds[0]}.pt"), on_epoch,
                                  lambda rec: scoring.update(1), table)]
            bar.close()
            scoring.close()
        else:
            from nas.parallel import run_seeds

            bar = _progress(len(seeds), "searches", args.quiet, "seed")
            _say_resuming([ckpt.file(f"seed{s}.pt") for s in seeds])
            results = run_seeds(settings, seeds, {s: ckpt.file(f"seed{s}.pt") for s in seeds},
                                parallel.cpus_per_search, parallel.gpus_per_search, parallel.address,
                                on_done=lambda r: bar.update(1), max_failures=parallel.max_failures)
            bar.close()
        import pandas as pd

        epochs = pd.concat([r.epochs.assign(seed=r.summary["seed"]) for r in results], ignore_index=True)
        candidates = pd.concat([r.candidates.assign(seed=r.summary["seed"]) for r in results], ignore_index=True)
        out.write_table("epochs.csv", epochs)
        if len(candidates):
            out.write_table("candidates.csv", candidates)
        samples = [r.rank_sample.assign(seed=r.summary["seed"]) for r in results if r.rank_sample is not None]
        if samples:
            out.write_table("rank_sample.csv", pd.concat(samples, ignore_index=True))
        first = results[0].summary
        plot_search(epochs, candidates, out.file("search.png"),
                    f"{settings.searcher} on {space.name}: r={cfg.ratio} {cfg.ratio_schedule}, {cfg.metric}",
                    truth_column=first.get("ground_truth_column"),
                    best_possible=first.get(f"{space.name}_best_possible"))
        if len(results) == 1:
            summary = first
        else:
            means = aggregate([r.summary for r in results])
            summary = {**{k.removesuffix("_mean"): v for k, v in means.items() if k.endswith("_mean")}, **means,
                       "space": space.name, "searcher": settings.searcher, "seeds": seeds,
                       "arch": [r.summary["arch"] for r in results],
                       "ground_truth_fields": first.get("ground_truth_fields", []),
                       "runs": [{k: v for k, v in r.summary.items() if k != "settings"} for r in results],
                       "settings": {**settings.to_dict(), "seeds": seeds}}
            summary["settings"]["train"]["seed"] = None  # each search's is in "seeds"
        target = out.commit(summary)
    ckpt.remove()
    print(_nas_line(summary, len(results)) + f"  -> {target}")
    return 0


def _nas_line(s: dict[str, Any], runs: int) -> str:
    def pm(key: str, fmt: str) -> str:
        if runs > 1 and f"{key}_mean" in s:
            return f"{s[key + '_mean']:{fmt}} +- {s[key + '_std']:{fmt}}"
        return f"{s[key]:{fmt}}" if isinstance(s.get(key), (int, float)) else "n/a"

    found = s["arch"] if runs == 1 else f"{runs} seeds"
    line = f"{found}\nsearch {pm('search_time_s', '.1f')} s, data passes {pm('data_passes', '.2f')}"
    truth = [k for k in s.get("ground_truth_fields", []) if k in s]
    if truth:
        line += ", known accuracy " + ", ".join(f"{k} {pm(k, '.2f')}" for k in truth)
    if "kendall_tau" in s:
        line += f", supernet Kendall tau {pm('kendall_tau', '.3f')} over {pm('rank_sample_size', '.0f')} uniform archs"
        if not s.get("ground_truth_matches_dataset", True):
            line += f" (against {s.get('ground_truth_column')}, measured on another data set)"
        elif isinstance(s["kendall_tau"], (int, float)) and s["kendall_tau"] < 0:
            line += " (negative: the supernet ranks these architectures backwards; train it longer)"
    return line


@command("nas-retrain")
def run_nas_retrain(args: argparse.Namespace) -> int:
    from asp_tune.plots import plot_training_run
    from nas.genotypes import Genotype
    from nas.retrain import run_retrain
    from nas.settings import RetrainSettings

    genotype = Genotype.parse(args.genotype)
    train = config_from_args(args)
    settings = RetrainSettings(genotype=genotype, train=train, **values_from_args(args, RetrainSettings)).validate()
    with results_folder(args) as out, _checkpoint_folder(args) as ckpt:
        bar = _progress(train.epochs, "retrain", args.quiet, "epoch")

        def on_epoch(rec: dict[str, Any]) -> None:
            bar.update(rec["epoch"] - bar.n)
            bar.set_postfix(val=f"{rec['val_accuracy']:.3f}", used=f"{rec['ratio']:.2f}")

        _say_resuming([ckpt.file("retrain.pt")])
        summary, epochs = run_retrain(settings, ckpt.file("retrain.pt"), on_epoch)
        bar.close()
        out.write_table("epochs.csv", epochs)
        plot_training_run(epochs, out.file("training.png"), f"retrain {args.channels}x{args.layers} on {train.dataset}")
        target = out.commit(summary)
    ckpt.remove()
    print(f"test {summary['final_test_accuracy']:.4f}  params {summary['parameters']:,}  "
          f"wall {summary['wall_time_s']:.1f}s  -> {target}")
    return 0

