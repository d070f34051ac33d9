"""Sub-commands ``hpo``, ``compare``, ``correlate`` and ``demo`` (registered into ``asp-tune``)."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from asp_tune.cli import add_output_flags, add_train_arguments, command, given_fields, results_folder, subcommand
from asp_tune.config import SELECTION_FIELDS
from asp_tune.errors import ConfigError
from asp_tune.flags import add_arguments, float_list, values_from_args
from asp_tune.proxy_settings import metric_choices

if TYPE_CHECKING:
    from asp_tune.run_dir import RunDirectory

REPO_SPACES = Path(__file__).resolve().parents[2] / "search_spaces"
#: What ``correlate`` can put in a cell: every selection metric but ``none`` (the full-data column) and
#: ``infobatch`` (its cost is not a ratio).
def correlate_metrics() -> tuple[str, ...]:
    return tuple(m for m in metric_choices() if m not in ("none", "infobatch", "auto"))


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
                 "grace_period", "reduction_factor", "time_budget_s", "data_passes_budget", "optuna_storage")
RAY_FIELDS = ("seed", "device", "address", "cpus_per_trial", "gpus_per_trial", "storage_path", "max_failures",
              "checkpoint_every_s", "tracking", "tracking_uri", "verbose")
#: What the search commands default to where HpoSettings' API defaults differ (given once, here). A constant
#: ratio, not the paper's dynamic one: on bench/baselines.py's grid the dynamic schedule (about 2r early, almost
#: nothing in the last epochs) cut ASP's Kendall tau from 0.70 to 0.48 at r = 0.3 and from 0.62 to 0.42 at r = 0.1
#: (3 seeds, README "Baselines"), below a fixed random subset of the same r.
CLI_DEFAULTS = {"ratio": 0.3, "ratio_schedule": "constant"}


def _hpo_settings_class():
    from asp_tune.tune.runner import HpoSettings

    return HpoSettings


def _add_search_flags(p: argparse.ArgumentParser, extra: tuple[str, ...] = ()) -> None:
    _add_space_flags(p)
    add_arguments(p, _hpo_settings_class(), CLI_DEFAULTS, only=SEARCH_FIELDS + extra)
    add_train_arguments(p, only=SELECTION_FIELDS, keep_unset=True)
    _add_ray_flags(p)


def _add_ray_flags(p: argparse.ArgumentParser, only: tuple[str, ...] = RAY_FIELDS) -> None:
    add_arguments(p, _hpo_settings_class(), CLI_DEFAULTS, only=only)
    add_output_flags(p, quiet=False)


def hpo_settings_from_args(args: argparse.Namespace, ratio: float):
    """The validated HpoSettings of a search command's flags, at ``ratio``."""
    from asp_tune.tune.runner import HpoSettings

    values = values_from_args(args, HpoSettings, skip=("ratio",))
    values["storage_path"] = experiments_folder(args)
    return HpoSettings(space=load_space_args(args), ratio=ratio, selection=given_fields(args, SELECTION_FIELDS),
                       **values).validate()


def experiments_folder(args: argparse.Namespace) -> str | None:
    """``--storage-path``, or for a local run ``.OUT.ray`` beside ``--out``: Ray's experiment folders
    stay with the run (not in ``~/ray_results``), outside the results folder that is only moved into
    place when the run succeeds, so an interrupted search can still be resumed from there."""
    given = getattr(args, "storage_path", None)
    if given is not None or getattr(args, "address", None) is not None or not getattr(args, "out", None):
        return given
    out = Path(args.out).expanduser().resolve()
    return str(out.with_name(f".{out.name}.ray"))


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
                     "configuration is retrained on full data. Writes report.md, comparison.csv, comparison.png "
                     "and per-run trials CSVs.")
    _add_search_flags(p)
    p.add_argument("--ratios", type=float_list, default=(1.0, 0.3, 0.1),
                   help="the full-data run and the proxy ratios [default: 1.0,0.3,0.1]")
    p.add_argument("--retrain-seeds", type=int, default=1,
                   help="full-data retrains of each run's pick, one per seed [default: 1]")


@subcommand("correlate", "the ASP paper's Table 5: rank correlation per (ratio, metric)")
def add_correlate_parser(p: argparse.ArgumentParser) -> None:
    p.description = ("Every configuration of a grid space on full data and at every (ratio, metric), in parallel "
                     "on Ray; writes correlation.csv, table.md, scores.csv, scatter.png.")
    _add_space_flags(p)
    p.add_argument("--ratios", type=float_list, default=(0.1, 0.3, 0.5), help="proxy ratios [default: 0.1,0.3,0.5]")
    p.add_argument("--metrics", default="random,loss,entropy,gradient,prediction,mixture",
                   help="comma-separated metrics, one cell per (ratio, metric): ASP metrics and static baselines "
                        f"({', '.join(correlate_metrics())}) [default: random,loss,entropy,gradient,prediction,mixture]")
    add_arguments(p, _hpo_settings_class(), CLI_DEFAULTS, only=("ratio_schedule", "max_concurrent"))
    add_train_arguments(p, only=SELECTION_FIELDS, keep_unset=True)
    p.add_argument("--max-configs", type=int, default=None, help="only the first N grid configurations")
    _add_ray_flags(p, only=tuple(f for f in RAY_FIELDS if f != "max_failures"))


@subcommand("demo", "offline demo: ASHA on digits at ratio 0.3 beside the full-data baseline")
def add_demo_parser(p: argparse.ArgumentParser) -> None:
    p.add_argument("--out", default="runs/demo", help="results folder [default: runs/demo]")
    p.add_argument("--overwrite", action="store_true", help="replace --out (only an asp_tune results folder)")
    add_arguments(p, _hpo_settings_class(), CLI_DEFAULTS, only=("num_samples", "verbose"))


def _write_hpo(out: RunDirectory, result, settings) -> None:
    from asp_tune.tune.runner import settings_dict

    out.write_table("trials.csv", result.trials)
    if result.histories:
        import pandas as pd

        frames = [h.assign(trial_id=t) for t, h in result.histories.items()]
        out.write_table("trial_epochs.csv", pd.concat(frames, ignore_index=True))
    result.summary["settings"] = settings_dict(settings)
    trust = result.summary.get("proxy_trust")
    if trust and trust["pairs"]:
        from asp_tune.plots import plot_rung_agreement

        plot_rung_agreement(trust, out.file("trust.png"), f"{settings.algo} r={settings.ratio}: rank agreement "
                                                          "of consecutive rungs")


@command("hpo")
def run_hpo_command(args: argparse.Namespace) -> int:
    from asp_tune.tune.runner import run_hpo

    settings = hpo_settings_from_args(args, args.ratio)
    with results_folder(args) as out:
        result = run_hpo(settings, resume=args.resume, resume_unsigned=args.resume_unsigned)
        _write_hpo(out, result, settings)
        target = out.commit(result.summary)
    s = result.summary
    trust = s.get("proxy_trust") or {}
    mark = "" if not trust.get("measured") else (" (trusted)" if trust["trusted"] else " (UNTRUSTED: see the warning)")
    print(f"best val {s['best_val_accuracy']} with {s['best_config']}{mark} | {s['num_trials']} trials "
          f"({s['num_failed']} failed), {s['data_passes_total']:.1f} data passes, {s['wall_time_s']:.1f}s -> {target}")
    return 0


def _check_compare(ratios: list[float], seeds: int) -> None:
    if not ratios or any(not (0 < r <= 1) for r in ratios):
        raise ConfigError("ratios", ratios, "a comma-separated list of numbers in (0, 1]")
    if all(r == 1.0 for r in ratios):
        raise ConfigError("ratios", ratios, "at least one proxy ratio below 1.0 (the full-data search at 1.0 "
                                            "runs beside them anyway)")
    if not (isinstance(seeds, int) and seeds >= 1):
        raise ConfigError("retrain_seeds", seeds, "an integer >= 1")


def _compare(settings, ratios: list[float], seeds: int, out: RunDirectory, title: str) -> dict[str, Any]:
    import pandas as pd

    from asp_tune.tune.compare import comparison_markdown, plot_comparison, run_compare

    res = run_compare(settings, ratios, seeds)
    table = res["table"]
    out.write_table("comparison.csv", table.drop(columns=["best_config", "retrained"]).assign(
        best_config=[json.dumps(c) for c in table["best_config"]]))
    out.write_table("retrained.csv", pd.DataFrame([{"ratio": row["ratio"], **x} for _, row in table.iterrows()
                                                   for x in row["retrained"]]))
    for r, run in res["runs"].items():
        out.write_table(f"trials_r{r}.csv", run.trials)
    md = comparison_markdown(table, title)
    out.file("report.md").write_text(md)
    plot_comparison(table, res["scatter"], out.file("comparison.png"))
    print("\n" + md)
    return {"title": title, "ratios": sorted(res["runs"], reverse=True),
            "rows": json.loads(table.to_json(orient="records")),
            "runs": {str(r): run.summary for r, run in res["runs"].items()}}


@command("compare")
def run_compare_command(args: argparse.Namespace) -> int:
    settings = hpo_settings_from_args(args, 1.0)
    _check_compare(args.ratios, args.retrain_seeds)
    with results_folder(args) as out:
        summary = _compare(settings, args.ratios, args.retrain_seeds, out,
                           f"{settings.space.name}: {settings.algo}, metric {settings.metric}")
        target = out.commit(summary)
    print(f"-> {target}")
    return 0


@command("correlate")
def run_correlate_command(args: argparse.Namespace) -> int:
    from asp_tune.tune.compare import correlation_markdown, plot_correlation_scatter, run_correlate

    metrics = [m.strip() for m in args.metrics.split(",") if m.strip()]
    for m in metrics:
        if m not in correlate_metrics():
            raise ConfigError("metrics", m, correlate_metrics())
    if len(set(args.ratios)) != len(args.ratios):
        raise ConfigError("ratios", args.ratios, "distinct ratios (each is one column of the table)")
    if len(set(metrics)) != len(metrics):
        raise ConfigError("metrics", args.metrics, "distinct metrics (each is one row of the table)")
    if not args.ratios or any(not (0 < r < 1) for r in args.ratios):
        raise ConfigError("ratios", args.ratios, "numbers in (0, 1)")
    if not metrics:
        raise ConfigError("metrics", args.metrics, "a comma-separated list of metrics")
    if args.max_concurrent < 1:
        raise ConfigError("max_concurrent", args.max_concurrent, "an integer >= 1")
    if args.max_configs is not None and args.max_configs < 1:
        raise ConfigError("max_configs", args.max_configs, "an integer >= 1")
    space = load_space_args(args)
    with results_folder(args) as out:
        res = run_correlate(space, args.ratios, metrics, ratio_schedule=args.ratio_schedule,
                            max_concurrent=args.max_concurrent, cpus_per_trial=args.cpus_per_trial,
                            gpus_per_trial=args.gpus_per_trial, seed=args.seed, device=args.device,
                            address=args.address, storage_path=experiments_folder(args), max_configs=args.max_configs,
                            verbose=args.verbose, selection=given_fields(args, SELECTION_FIELDS))
        out.write_table("scores.csv", res["scores"])
        out.write_table("correlation.csv", res["correlations"])
        md = correlation_markdown(res["correlations"], f"{space.name}: rank correlation with full data")
        out.file("table.md").write_text(md)
        plot_correlation_scatter(res["scores"], out.file("scatter.png"))
        print("\n" + md)
        target = out.commit({"space": space.name, "num_configs": res["num_configs"], "ratios": args.ratios,
                             "metrics": metrics, "wall_time_s": res["wall_time_s"],
                             "experiment_path": res["experiment_path"],
                             "correlations": json.loads(res["correlations"].to_json(orient="records"))})
    print(f"-> {target}")
    return 0


@command("demo")
def run_demo_command(args: argparse.Namespace) -> int:
    from asp_tune.tune.runner import HpoSettings
    from asp_tune.tune.space import load_space

    space_file = REPO_SPACES / "digits_demo.yaml"
    if not space_file.is_file():
        raise ConfigError("space", str(space_file), "the repository's search_spaces/digits_demo.yaml "
                          "(install with pip install -e . from a checkout)")
    settings = HpoSettings(space=load_space(space_file), **CLI_DEFAULTS, num_samples=args.num_samples,
                           verbose=args.verbose, storage_path=experiments_folder(args)).validate()
    print(f"[asp-tune demo] ASHA, {args.num_samples} trials on digits: full data vs ASP proxy (r=0.3, "
          f"{settings.ratio_schedule}, metric {dataclasses.replace(settings, ratio=0.3).resolved_metric()}); each pick retrained "
          "on full data")
    with results_folder(args) as out:
        summary = _compare(settings, [1.0, 0.3], 1, out, "demo: digits MLP, ASHA")
        target = out.commit(summary)
    print(f"-> {target}")
    return 0
