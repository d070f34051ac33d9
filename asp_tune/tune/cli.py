"""Sub-commands ``hpo``, ``compare``, ``correlate`` and ``demo`` (registered into ``asp-tune``)."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asp_tune.commands import add_output_flags, add_train_arguments, command, given_fields, results_folder, subcommand
from asp_tune.config import SELECTION_FIELDS
from asp_tune.errors import ConfigError
from asp_tune.constraints import check_value
from asp_tune.flags import add_arguments, values_from_args

if TYPE_CHECKING:
    from asp_tune.run_dir import RunDirectory

REPO_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
def _add_space_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument("--space", required=True, help="search-space YAML (see search_spaces/); a relative data_dir "
                                                  "in it is relative to the YAML file")
    p.add_argument("--data-dir", default=None, help="use this data instead of the space's data_dir")


def load_space_args(args: argparse.Namespace):
    """The ``--space`` YAML, with ``--data-dir`` replacing its data_dir when given."""
    from asp_tune.tune.space import SearchSpace, load_space

    space = load_space(args.space)
    if args.data_dir:
        space = SearchSpace(space.name, {**space.fixed, "data_dir": str(Path(args.data_dir).expanduser().resolve())},
                            space.params)
    return space


#: Flags of one search; the rest of HpoSettings' flagged fields are the Ray flags.
SEARCH_FIELDS = ("algo", "ratio_schedule", "metric", "num_samples", "max_epochs", "max_concurrent", "early_stop",
                 "grace_period", "reduction_factor", "min_first_rung_steps", "decide", "audit", "time_budget_s",
                 "data_passes_budget", "optuna_storage")
RAY_FIELDS = ("seed", "device", "address", "pack", "cpus_per_trial", "gpus_per_trial", "storage_path", "max_failures",
              "checkpoint_every_s", "keep_checkpoints", "tracking", "tracking_uri", "verbose")


def _hpo_settings_class():
    from asp_tune.tune.settings import HpoSettings

    return HpoSettings


def _add_search_flags(p: argparse.ArgumentParser, extra: tuple[str, ...] = ()) -> None:
    _add_space_flags(p)
    add_arguments(p, _hpo_settings_class(), only=SEARCH_FIELDS + extra)
    add_train_arguments(p, only=SELECTION_FIELDS, keep_unset=True)
    _add_ray_flags(p)


def _add_ray_flags(p: argparse.ArgumentParser, only: tuple[str, ...] = RAY_FIELDS) -> None:
    add_arguments(p, _hpo_settings_class(), only=only)
    add_output_flags(p, quiet=False)


def hpo_settings_from_args(args: argparse.Namespace, ratio: float):
    """The validated HpoSettings of a search command's flags, at ``ratio``."""
    from asp_tune.tune.settings import HpoSettings

    values = values_from_args(args, HpoSettings, skip=("ratio",))
    values["storage_path"] = experiments_folder(args)
    return HpoSettings(space=load_space_args(args), ratio=ratio, selection=given_fields(args, SELECTION_FIELDS),
                       **values).validate()


def experiments_folder(args: argparse.Namespace) -> str | None:
    """Where Ray keeps the experiments of a command (:func:`asp_tune.tune.run.experiments_folder`)."""
    from asp_tune.tune.run import experiments_folder as place

    return place(getattr(args, "out", None), getattr(args, "storage_path", None), getattr(args, "address", None))


@subcommand("hpo", "hyper-parameter search with proxy-data trials on Ray Tune")
def add_hpo_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("One search; writes trials.csv and summary.json. Budgets are given as for full data and "
                     "become ratio x that.")
    _add_search_flags(p, extra=("ratio", "rung_ratios"))
    p.add_argument("--resume", default=None, help="Ray experiment folder of an interrupted run to finish")
    p.add_argument("--resume-unsigned", action="store_true",
                   help="resume an experiment without the signed copy of its state (from elsewhere, or from asp_tune "
                        "before 0.2): Ray then unpickles whatever the folder holds, so only for a folder you trust")


@subcommand("compare", "full-data baseline and proxy ratios side by side, picks retrained")
def add_compare_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Same search and seed at ratio 1.0 (metric none) and each proxy ratio; every run's best "
                     "configuration is retrained on full data. Writes report.md, comparison.csv, retrained.csv, "
                     "comparison.png, summary.json and per-run trials CSVs.")
    from asp_tune.tune.compare_settings import CompareSettings

    _add_search_flags(p)
    add_arguments(p, CompareSettings)
    p.set_defaults(seed=None)  # None: --seed not given (refused beside --seeds); the help keeps its default


@subcommand("correlate", "the ASP paper's Table 5: rank correlation per (ratio, metric)")
def add_correlate_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Every configuration of a grid space on full data and at every (ratio, metric), in parallel "
                     "on Ray; writes correlation.csv, table.md, scores.csv, scatter.png and summary.json.")
    _add_space_flags(p)
    from asp_tune.tune.compare_settings import CorrelateSettings

    add_arguments(p, CorrelateSettings)
    add_arguments(p, _hpo_settings_class(), only=("ratio_schedule", "max_concurrent"))
    add_train_arguments(p, only=SELECTION_FIELDS, keep_unset=True)
    _add_ray_flags(p, only=tuple(f for f in RAY_FIELDS if f != "max_failures"))


#: The settings the demo takes from its command line (the rest are the space's, :func:`demo_search`'s and the
#: defaults); its notices name only these flags.
DEMO_FIELDS = ("num_samples", "pack", "audit", "min_first_rung_steps", "verbose", "keep_checkpoints")


def demo_search() -> dict[str, Any]:
    """The demo's searches run one trial at a time on up to two cores. Asynchronous ASHA then sees its trials
    report in one order, so the demo's promotions, data passes and picks are the same every time; with two
    trials at a time, which trials reached the last rung changed with timing (1-4), and the demo's cost with it."""
    import os

    import ray

    cpus = ray.cluster_resources().get("CPU", 1) if ray.is_initialized() else (os.cpu_count() or 1)  # Ray's CPUs
    return {"max_concurrent": 1, "cpus_per_trial": float(min(2, cpus))}


@subcommand("demo", "offline demo: ASHA on digits at ratio 0.3 beside the full-data baseline")
def add_demo_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Offline, in about a minute on 2 CPU cores, the same every time (one trial at a time; with "
                     "--pack K, K trials at a time, whose promotions follow their timing): an ASHA "
                     "search of wide-MLP trials on scikit-learn's "
                     "digits on full data, beside the same search on proxy data (a subset re-chosen every epoch by the "
                     "default strategy, with full data deciding the pick); each pick retrained on full data. "
                     "Writes report.md, comparison.csv and comparison.png to --out.")
    p.add_argument("--out", default="runs/demo", help="results folder [default: runs/demo]")
    p.add_argument("--overwrite", action="store_true", help="replace --out (only an asp_tune results folder)")
    add_arguments(p, _hpo_settings_class(), only=DEMO_FIELDS)


@command("hpo")
def run_hpo_command(args: argparse.Namespace) -> int:
    from asp_tune.tune.builtin import job_from_settings
    from asp_tune.tune.results import search_into

    settings = hpo_settings_from_args(args, args.ratio)
    job = job_from_settings(settings)
    result, target = search_into(job, args.out, overwrite=args.overwrite, resume=args.resume,
                                 resume_unsigned=args.resume_unsigned, title=f"{settings.algo} r={settings.ratio}")
    s = result.summary
    print(f"best {s['score_metric']} {s['best_score']:.4f} with {s['best_config']} (decided by {s['decided_by']}"
          f"{pick_verdict(s)}) | {s['num_trials']} trials ({s['num_failed']} failed), {s['data_passes_total']:.1f} data "
          f"passes, {s['wall_time_s']:.1f}s -> {target}")
    return 0


def pick_verdict(summary: dict[str, Any]) -> str:
    """``; the proxy ...`` after a pick: its agreement with full data when measured, or that it was not."""
    full = summary.get("full_data") or {}
    if not full:
        return ""
    if not full.get("measured"):
        return "; the proxy was not measured against full data"
    low, high = full["interval"]
    word = "MISRANKS" if full["misranks"] else ("ranks like full data" if full["trusted"] else "is uncertain")
    return f"; the proxy {word}: tau {full['kendall_tau']:+.2f} ({low:+.2f} .. {high:+.2f})"


def _compare(settings, ratios: list[float], seeds: int, out: RunDirectory, title: str,
             control: bool = True, search_seeds: list[int] | None = None) -> dict[str, Any]:
    from asp_tune.tune.builtin import compare_settings
    from asp_tune.tune.compare import write_comparison

    comparison = compare_settings(settings, ratios, seeds, control, search_seeds)
    score = comparison["runs"][1.0].summary["score_metric"].removeprefix("val_")
    return write_comparison(out, comparison, title, f"retrained test {'R²' if score == 'r2' else score}")


@command("compare")
def run_compare_command(args: argparse.Namespace) -> int:
    from asp_tune.tune.compare_settings import CompareSettings

    from asp_tune.tune.settings import HpoSettings

    given = args.seed
    if given is None:
        args.seed = HpoSettings.seed  # the declared default
    settings = hpo_settings_from_args(args, 1.0)
    compare = CompareSettings(**values_from_args(args, CompareSettings)).validate()
    if compare.seeds and given is not None:  # even the default's value: one of the two would be ignored
        raise ConfigError("seed", settings.seed, f"left out beside --seeds {','.join(map(str, compare.seeds))} "
                                                 "(which names every seed)")
    with results_folder(args) as out:
        summary = _compare(settings, list(compare.ratios), compare.retrain_seeds, out,
                           f"{settings.space.name}: {settings.algo}, metric {settings.metric}", compare.control,
                           compare.seeds)
        target = out.commit(summary)
    print(f"-> {target}")
    return 0


@command("correlate")
def run_correlate_command(args: argparse.Namespace) -> int:
    from asp_tune.tune.builtin import correlate_space
    from asp_tune.tune.correlate import write_correlation

    from asp_tune.tune.compare_settings import CorrelateSettings

    cells = CorrelateSettings(**values_from_args(args, CorrelateSettings)).validate()
    metrics = cells.strategies
    for name in ("max_concurrent", "pack"):
        check_value(_hpo_settings_class(), name, getattr(args, name))
    space = load_space_args(args)
    from asp_tune.tune.compare_settings import check_grid_size

    check_grid_size(space.grid_configs()[:cells.max_configs])  # before the results folder opens
    with results_folder(args) as out:
        run = correlate_space(space, list(cells.ratios), metrics, ratio_schedule=args.ratio_schedule,
                              max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
                              gpus_per_trial=args.gpus_per_trial, seed=args.seed, device=args.device,
                              address=args.address, storage_path=experiments_folder(args),
                              max_configs=cells.max_configs, verbose=args.verbose,
                              selection=given_fields(args, SELECTION_FIELDS), pack=args.pack)
        target = out.commit(write_correlation(out, run, f"{space.name}: rank correlation with full data",
                                              {"space": space.name, "ratios": list(cells.ratios),
                                               "metrics": metrics}))
    print(f"-> {target}")
    return 0


@command("demo")
def run_demo_command(args: argparse.Namespace) -> int:
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import load_space

    space_file = REPO_SPACES / "digits_demo.yaml"
    if not space_file.is_file():
        raise ConfigError("space", str(space_file), "the repository's search_spaces/digits_demo.yaml "
                          "(install with pip install -e . from a checkout)")
    settings = HpoSettings(space=load_space(space_file), storage_path=experiments_folder(args), **demo_search(),
                           **{name: getattr(args, name) for name in DEMO_FIELDS}).validate()
    print(f"[asp-tune demo] ASHA, {settings.num_samples} trials on digits: full data vs proxy data (r={settings.ratio}, "
          f"{settings.ratio_schedule}, strategy {settings.resolved_metric()}: the default's choice for a search whose "
          "trials start at the ratio); each pick retrained on full data")
    if str(settings.pack) != "1":
        print(f"[asp-tune demo] --pack {settings.pack}: a pack's trials run at once, so asynchronous ASHA sees their "
              "reports in the order of their timing and this demo's promotions and data passes can differ from run "
              "to run (one trial at a time, the default, gives the same every time)", file=sys.stderr)
    with results_folder(args) as out:
        summary = _compare(settings, [1.0, settings.ratio], 1, out, "demo: digits MLP, ASHA")
        summary["proxy_only"] = _price_of_full_data(settings, summary, out)
        target = out.commit(summary)
    print(f"-> {target}")
    return 0


def _price_of_full_data(settings, summary: dict[str, Any], out: RunDirectory) -> dict[str, Any]:
    """The same proxy search with the proxy alone picking (``--decide proxy``; its first rung as long as the
    default's), timed beside the default's: what checking the pick on full data cost, and nothing else. Appended
    to ``report.md``."""
    import dataclasses

    from asp_tune.tune.builtin import run_hpo

    print(f"[asp-tune demo] the same search at r={settings.ratio} with the proxy alone picking (what `asp-tune hpo "
          "--decide proxy` does)")
    alone = run_hpo(dataclasses.replace(settings, decide="proxy", audit=None)).summary
    runs = summary["runs"]
    full, checked = runs["1.0"]["wall_time_s"], runs[str(settings.ratio)]["wall_time_s"]
    line = (f"Price of full data deciding: the r={settings.ratio} search took {checked:.1f} s with full data deciding "
            f"(wall ratio {checked / full:.2f} against full data) and {alone['wall_time_s']:.1f} s with the proxy "
            f"alone picking (wall ratio {alone['wall_time_s'] / full:.2f}; its unchecked pick scored "
            f"{alone['best_score']:.4f} on validation).")
    print(line)
    report = out.file("report.md")
    report.write_text(report.read_text() + "\n" + line + "\n")
    return {"wall_time_s": alone["wall_time_s"], "wall_ratio": alone["wall_time_s"] / full,
            "best_config": alone["best_config"], "best_score": alone["best_score"]}
