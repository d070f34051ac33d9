"""Proxy against full data: the same search at several ratios, each best config retrained on full data.

Also the paper's Table 5 experiment (``correlate``): every configuration of a grid trained on full
data and at every (ratio, metric), with rank correlations between the two scores per cell.
"""

from __future__ import annotations

import dataclasses
import math
import time
from typing import Any

import numpy as np
import pandas as pd
from asp_tune.config import TrainConfig
from asp_tune.errors import RunFailed
from asp_tune.quality import cost_adjusted_r2, proxy_quality, relative_cost
from asp_tune.tune.runner import (HpoResult, HpoSettings, check_resources, check_shared_storage, ensure_ray,
                                  error_line, fit_interruptibly, last_values, make_tuner, proxy_model_seconds,
                                  quiet_ray_logs, run_hpo)
from asp_tune.tune.space import SearchSpace
from asp_tune.tune.storage import join, storage_root


def config_key(row: pd.Series | dict[str, Any], names: list[str]) -> tuple:
    def norm(v: Any) -> Any:
        return round(float(v), 6) if isinstance(v, (float, np.floating)) else v
    return tuple(norm(row[f"config/{n}"]) for n in names)


def _retrain_one(config: dict[str, Any], threads: int, extensions: dict | None = None,
                 search_paths: list[str] | None = None) -> dict[str, Any]:
    import torch

    from asp_tune.build import build_trainer
    from asp_tune.imports import add_search_paths
    from asp_tune.registry import install_extensions

    add_search_paths(search_paths or ())
    install_extensions(extensions)
    torch.set_num_threads(max(1, threads))
    summary = build_trainer(TrainConfig.from_dict(config)).fit()
    return {"seed": config["seed"], "test_accuracy": summary["final_test_accuracy"],
            "val_accuracy": summary["final_val_accuracy"], "seconds": summary["train_seconds"]}


def retrain_full_data(space: SearchSpace, best_config: dict[str, Any], epochs: int, seeds: list[int],
                      device: str, cpus: float, gpus: float) -> list[dict[str, Any]]:
    """Train ``best_config`` on all training data once per seed, in parallel as Ray tasks."""
    import ray

    from asp_tune.imports import search_paths, user_modules
    from asp_tune.registry import extensions

    remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(_retrain_one)
    configs = [space.train_config(best_config, ratio=1.0, metric="none", ratio_schedule="constant",
                                  seed=seed, device=device, epochs=epochs).to_dict() for seed in seeds]
    added = extensions()
    paths = search_paths(user_modules([configs[0]["model"], configs[0]["dataset"],
                                       *(e for entries in added.values() for e in entries.values())]))
    return ray.get([remote.remote(c, max(1, int(cpus)), added, paths) for c in configs])


def run_compare(base: HpoSettings, ratios: list[float], retrain_seeds: int = 1) -> dict[str, Any]:
    """Full-data baseline (ratio 1.0, metric none) and each proxy ratio, same seed and search."""
    ensure_ray(base.address, modules=base.user_modules())
    runs: dict[float, HpoResult] = {}
    ordered = sorted(set(ratios) | {1.0}, reverse=True)
    for r in ordered:
        settings = dataclasses.replace(base, ratio=r, metric="none" if r == 1.0 else base.metric,
                                       ratio_schedule="constant" if r == 1.0 else base.ratio_schedule,
                                       name=None if base.name is None else f"{base.name}-r{r}")
        print(f"[asp-tune compare] search at ratio {r} ({settings.metric})")
        runs[r] = run_hpo(settings)
    names = [p.name for p in base.space.params]
    full = runs[1.0]
    full_scores = {config_key(row, names): row["best_val_accuracy"] for _, row in full.trials.iterrows()
                   if row["status"] != "ERROR"}
    rows, scatter = [], {}
    for r, res in runs.items():
        s = res.summary
        retrained = []
        if s["best_config"] is not None:
            print(f"[asp-tune compare] retraining ratio-{r} pick on full data x{retrain_seeds}")
            retrained = retrain_full_data(base.space, s["best_config"], base.epochs,
                                          list(range(retrain_seeds)), base.device, base.cpus_per_trial,
                                          base.gpus_per_trial)
        accs = [x["test_accuracy"] for x in retrained]
        pairs = [(full_scores[k], row["best_val_accuracy"]) for _, row in res.trials.iterrows()
                 if row["status"] != "ERROR" and (k := config_key(row, names)) in full_scores]
        quality = proxy_quality([b for _, b in pairs], [a for a, _ in pairs], s["wall_time_s"],
                                full.summary["wall_time_s"])
        scatter[r] = pairs
        rows.append({
            "ratio": r, "metric": s["metric"], "algo": s["algo"], "num_trials": s["num_trials"],
            "num_failed": s["num_failed"], "wall_time_s": s["wall_time_s"],
            "data_passes_total": s["data_passes_total"],
            "speedup_wall": full.summary["wall_time_s"] / s["wall_time_s"] if s["wall_time_s"] else math.nan,
            "speedup_data_passes": (full.summary["data_passes_total"] / s["data_passes_total"]
                                    if s["data_passes_total"] else math.nan),
            "best_val_accuracy": s["best_val_accuracy"],
            "retrained_test_mean": float(np.mean(accs)) if accs else math.nan,
            "retrained_test_std": float(np.std(accs)) if len(accs) > 1 else 0.0 if accs else math.nan,
            "retrained": retrained,  # every seed's retrain: seed, test and val accuracy, seconds
            **{f"corr_{k}": quality[k] for k in ("kendall_tau", "pearson", "spearman", "n")},
            **{k: quality[k] for k in ("r2", "good_spearman", "top1_regret")},
            "relative_cost": quality["relative_cost"],
            "relative_data_passes": relative_cost(s["data_passes_total"], full.summary["data_passes_total"]),
            "best_config": s["best_config"],
            "experiment_path": s["experiment_path"],
            **rung_trust(s.get("proxy_trust")),
        })
    table = pd.DataFrame(rows)
    table["cost_adjusted_r2"] = cost_adjusted_r2(table["r2"].where(table["ratio"] != 1.0), table["relative_cost"])
    return {"table": table, "runs": runs, "scatter": scatter}


def rung_trust(trust: dict | None) -> dict:
    """The lowest rung agreement a search measured (with its pairs) and whether its pick is trusted."""
    measured = [p for p in (trust or {}).get("pairs", []) if p["trusted"] is not None]
    worst = min(measured, key=lambda p: p["kendall_tau"]) if measured else None
    return {"rung_tau_min": math.nan if worst is None else worst["kendall_tau"],
            "rung_pairs": "" if worst is None else f"{worst['low']}->{worst['high']} ({worst['pairs']})",
            "pick_trusted": None if not measured else bool((trust or {}).get("trusted"))}


def comparison_markdown(table: pd.DataFrame, title: str) -> str:
    lines = [f"# {title}", "",
             "| ratio | metric | trials | wall s | speed-up (wall) | data passes | speed-up (passes) | best val | "
             "retrained test | Kendall tau | Pearson | Spearman | r² | good Spearman | top-1 regret | n | "
             "rung tau (min) | pick |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        trusted = {True: "trusted", False: "**untrusted**"}.get(r.get("pick_trusted"), "not measured")
        rung = "-" if r.get("rung_tau_min") != r.get("rung_tau_min") else f"{r['rung_tau_min']:.2f} ({r['rung_pairs']})"
        lines.append(
            f"| {r['ratio']} | {r['metric']} | {r['num_trials']} | {r['wall_time_s']:.1f} | {r['speedup_wall']:.2f}x | "
            f"{r['data_passes_total']:.1f} | {r['speedup_data_passes']:.2f}x | {r['best_val_accuracy']:.4f} | "
            f"{100 * r['retrained_test_mean']:.2f} ± {100 * r['retrained_test_std']:.2f} | "
            f"{r['corr_kendall_tau']:.3f} | {r['corr_pearson']:.3f} | {r['corr_spearman']:.3f} | {r['r2']:.3f} | "
            f"{r['good_spearman']:.3f} | {100 * r['top1_regret']:.2f} | {r['corr_n']} | {rung} | {trusted} |")
    lines += ["", "Speed-ups are against the full-data run (ratio 1.0, metric none) of the same search and seed. "
              "Retrained test accuracy: each run's best configuration trained from scratch on all training "
              "data (mean ± std over seeds). Correlations: best validation accuracy of the configurations that "
              "both the proxy run and the full-data run evaluated; r² of full = beta x proxy on normalised "
              "accuracies; good Spearman: over the configurations whose proxy accuracy is at least the median; "
              "top-1 regret: full-data validation points lost by taking the proxy's best of those configurations "
              "(asp_tune/quality.py). Rung tau: the lowest Kendall tau between consecutive rungs of the search's "
              "own early stopping (rungs, configurations that reached both); below 0.3 over at least 6 "
              "configurations the pick is untrusted (asp_tune/tune/trust.py)."]
    return "\n".join(lines) + "\n"


def plot_comparison(table: pd.DataFrame, scatter: dict[float, list[tuple[float, float]]], path) -> None:
    from asp_tune.plots import agreement_scatter, pyplot, save_figure

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    labels = [f"r={r}" for r in table["ratio"]]
    axes[0].bar(labels, table["wall_time_s"], color="tab:blue")
    axes[0].set_title("search wall time (s)")
    axes[1].bar(labels, 100 * table["retrained_test_mean"], yerr=100 * table["retrained_test_std"],
                color="tab:green")
    axes[1].set_ylim(0, 100)  # an honest axis: small gaps look small
    axes[1].set_title("retrained test accuracy (%)")
    axes[2].bar(labels, table["data_passes_total"], color="tab:orange")
    axes[2].set_title("data passes (all trials)")
    taus = []
    for r, pairs in scatter.items():
        if r != 1.0 and pairs:
            tau = agreement_scatter(axes[3], [a for a, _ in pairs], [b for _, b in pairs], label=f"r={r}")
            taus.append(f"r={r}: tau {tau:.2f}")
    axes[3].set_xlabel("full-data best val accuracy")
    axes[3].set_ylabel("proxy best val accuracy")
    axes[3].set_title("same configurations; " + ", ".join(taus), fontsize=9)
    if taus:
        axes[3].legend()
    save_figure(fig, path)


# ----------------------------------------------------------------------------- Table 5


def _cell_trial(config: dict[str, Any], *, space: SearchSpace, run: dict[str, Any], threads: int = 1,
                arrays: dict[str, Any] | None = None, **shipped: Any) -> None:
    from asp_tune.tune.trainable import proxy_trial

    ratio, metric = config["cell"].split(":")
    proxy_trial(config, space=space, run={**run, "ratio": float(ratio), "metric": metric}, threads=threads,
                arrays=arrays, **shipped)


def run_correlate(space: SearchSpace, ratios: list[float], metrics: list[str], *, ratio_schedule: str = "constant",
                  max_concurrent: int = 2, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0,
                  seed: int = 0, device: str = "auto", address: str | None = None,
                  storage_path: str | None = None, max_configs: int | None = None, verbose: int = 1,
                  selection: dict[str, Any] | None = None) -> dict[str, Any]:
    """Every grid configuration on full data and at every (ratio, metric), in parallel on Ray.

    ``ratio_schedule``: constant by default (``dynamic`` is the paper's, as in its Table 5, and ranked
    worse in bench/baselines.py); ``selection`` holds
    selection settings (rule, floor, ...) applied to every proxy cell."""
    from ray import tune


    quiet_ray_logs(verbose)
    ensure_ray(address)
    check_resources(cpus_per_trial, gpus_per_trial)
    check_shared_storage(storage_path)
    configs = space.grid_configs()
    if max_configs is not None:
        configs = configs[:max_configs]
    cells = ["1.0:none"] + [f"{r}:{m}" for r in ratios for m in metrics]
    epochs = int(space.fixed.get("epochs", TrainConfig.epochs))
    run = {**(selection or {}), "ratio_schedule": ratio_schedule, "seed": seed, "device": device, "epochs": epochs}
    space.train_config(configs[0], **run, ratio=min(ratios), metric=metrics[0])  # validate early
    from asp_tune.datasets import read_dataset

    probe = space.train_config(configs[0], **run, ratio=1.0, metric="none")
    arrays = read_dataset(probe.dataset, probe.data_dir, download=probe.download)  # once, shared by all cells
    from asp_tune.imports import search_paths, user_modules
    from asp_tune.registry import extensions

    added = extensions()
    paths = search_paths(user_modules([probe.model, probe.dataset, *metrics,
                                       *(e for entries in added.values() for e in entries.values())]))
    trainable = tune.with_resources(
        tune.with_parameters(_cell_trial, space=space, run=run, threads=max(1, int(cpus_per_trial)), arrays=arrays,
                             extensions=added, search_paths=paths),
        {"cpu": cpus_per_trial, "gpu": gpus_per_trial})
    start = time.perf_counter()
    name = f"asp-correlate-{space.name}-{time.strftime('%Y%m%d-%H%M%S')}"
    storage = storage_root(storage_path)
    param_space = {"cfg": tune.grid_search(list(range(len(configs)))), "cell": tune.grid_search(cells),
                   **{p.name: tune.sample_from(lambda spec, n=p.name: configs[spec.config["cfg"]][n])
                      for p in space.params}}
    tuner = make_tuner(trainable, param_space, name=name, storage=storage, num_samples=1,
                       max_concurrent=max_concurrent, verbose=verbose, max_failures=0,
                       progress=(len(configs) * len(cells), "correlate"))
    grid = fit_interruptibly(tuner, join(storage, name))
    errors = [result.error for result in grid if result.error]
    if errors and len(errors) == len(grid):
        raise RunFailed(f"all {len(errors)} trials failed; the first: {error_line(errors[0])} "
                        f"(tracebacks under {grid.experiment_path})")
    rows = []
    for result in grid:
        if not result.config:  # its worker never started: only the error is known (counted above)
            continue
        last = last_values(result.metrics_dataframe)
        ratio, metric = result.config["cell"].split(":")
        rows.append({"config": result.config["cfg"], "ratio": float(ratio), "metric": metric,
                     **{p.name: configs[result.config["cfg"]][p.name] for p in space.params},
                     "val_accuracy": last["final_val_accuracy"] if last else math.nan,
                     "data_passes": last["data_passes"] if last else math.nan,
                     "seconds": last["seconds"] if last else math.nan,
                     "proxy_seconds": last["proxy_seconds"] if last else 0.0,
                     "proxy_key": last["proxy_key"] if last else "",
                     "proxy_computed": bool(last and last["proxy_computed"]),
                     "status": "ERROR" if result.error else "TERMINATED"})
    scores = pd.DataFrame(rows).sort_values(["ratio", "metric", "config"]).reset_index(drop=True)
    full = scores[scores["metric"] == "none"].set_index("config")["val_accuracy"]
    full_seconds = scores[scores["metric"] == "none"].set_index("config")["seconds"]
    cells_out = []
    for (r, m), part in scores[scores["metric"] != "none"].groupby(["ratio", "metric"]):
        part = part.set_index("config")
        common = part.index.intersection(full.index)
        proxy_seconds = proxy_model_seconds(part.loc[common])  # a static proxy's scoring model, once per cell
        quality = proxy_quality(part.loc[common, "val_accuracy"].values, full.loc[common].values,
                                float(part.loc[common, "seconds"].sum()) + proxy_seconds,
                                float(full_seconds.loc[common].sum()))
        cells_out.append({"ratio": r, "metric": m, "kind": metric_kind(m), **quality,
                          "proxy_model_seconds": proxy_seconds, "data_passes_mean": float(part["data_passes"].mean())})
    correlations = pd.DataFrame(cells_out)
    if len(correlations):
        correlations["cost_adjusted_r2"] = cost_adjusted_r2(correlations["r2"], correlations["relative_cost"])
    return {"scores": scores, "correlations": correlations,
            "wall_time_s": time.perf_counter() - start, "num_configs": len(configs),
            "experiment_path": grid.experiment_path}


def metric_kind(metric: str) -> str:
    """``static`` for a baseline chosen once, ``ASP`` for a strategy chosen anew each epoch."""
    from asp_tune.strategies import make_strategy

    return "static" if make_strategy(metric, TrainConfig(ratio=0.5)).kind == "static" else "ASP"


def correlation_markdown(corr: pd.DataFrame, title: str) -> str:
    """Rows: metrics; columns: ratios; cells 'tau / rho / s' as in the ASP paper's Table 5."""
    ratios = sorted(corr["ratio"].unique())
    lines = [f"# {title}", "", "Each cell: Kendall tau / Pearson / Spearman between full-data and proxy "
             "validation accuracy over the grid's configurations, then r² / top-1 regret (points) / relative "
             "cost (training seconds, plus a static proxy's scoring model once, against full data), as in "
             "asp_tune/quality.py. ASP metrics re-choose the subset every epoch; static baselines fix it once.", "",
             "| metric | kind | " + " | ".join(f"r = {r}" for r in ratios) + " |",
             "|---|---|" + "---|" * len(ratios)]
    for m, part in corr.groupby("metric", sort=False):
        cells = []
        for r in ratios:
            row = part[part["ratio"] == r]
            cells.append("-" if row.empty else
                         f"{row['kendall_tau'].iloc[0]:.3f} / {row['pearson'].iloc[0]:.3f} / {row['spearman'].iloc[0]:.3f}"
                         f"; {row['r2'].iloc[0]:.2f} / {100 * row['top1_regret'].iloc[0]:.1f} / "
                         f"{row['relative_cost'].iloc[0]:.2f}")
        lines.append(f"| {m} | {metric_kind(m)} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def plot_correlation_scatter(scores: pd.DataFrame, path) -> None:
    from asp_tune.plots import agreement_scatter, pyplot, save_figure

    plt = pyplot()
    full = scores[scores["metric"] == "none"].set_index("config")["val_accuracy"]
    proxy = scores[scores["metric"] != "none"]
    ratios = sorted(proxy["ratio"].unique())
    metrics = list(dict.fromkeys(proxy["metric"]))
    fig, axes = plt.subplots(len(metrics), len(ratios), figsize=(3 * len(ratios), 2.6 * len(metrics)),
                             squeeze=False, sharex=True)
    for i, m in enumerate(metrics):
        for j, r in enumerate(ratios):
            ax = axes[i][j]
            part = proxy[(proxy["metric"] == m) & (proxy["ratio"] == r)].set_index("config")
            common = part.index.intersection(full.index)
            tau = agreement_scatter(ax, full.loc[common], part.loc[common, "val_accuracy"], s=10)
            ax.set_title(f"{m}, r={r}: tau {tau:.2f}", fontsize=9)
            if j == 0:
                ax.set_ylabel("proxy val acc")
            if i == len(metrics) - 1:
                ax.set_xlabel("full-data val acc")
    save_figure(fig, path)
