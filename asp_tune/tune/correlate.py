"""The ASP paper's Table 5 for any trainable: every configuration trained to the end on full data and in
every (ratio, strategy) cell, in one Ray experiment, with the rank correlations of each cell against full data.

The experiment is one grid search (:func:`cell_space`: configuration x cell) run by
:func:`~asp_tune.tune.run.run_search`; the trainable reads its cell from ``config["cell"]`` (``"RATIO:STRATEGY"``,
``"1.0:none"`` for full data). :func:`correlations` turns the trials into the table.
"""

from __future__ import annotations

import itertools
import sys
import time
from typing import Any

import numpy as np
import pandas as pd

from asp_tune.config import TrainConfig
from asp_tune.quality import cost_adjusted_r2, proxy_quality
from asp_tune.strategies import UNIFORM_CONTROLS
from asp_tune.tune.collect import proxy_model_seconds, proxy_model_total
from asp_tune.tune.run import SearchJob, run_search

from asp_tune.tune.cells import FULL_CELL, cell_of, cells  # noqa: F401 - part of this module's API


def grid_configs(param_space: dict[str, Any], num_samples: int = 1, seed: int = 0) -> list[dict[str, Any]]:
    """The configurations of a Ray Tune ``param_space``: every combination of its ``grid_search`` values,
    each with its other domains sampled (``num_samples`` times, seeded) and its constants."""
    from ray.tune.search.sample import Domain

    rng = np.random.RandomState(seed)
    grids = {k: v["grid_search"] for k, v in param_space.items() if isinstance(v, dict) and "grid_search" in v}
    out = []
    for _ in range(num_samples):
        for combo in itertools.product(*grids.values()) if grids else [()]:
            config = dict(zip(grids, combo))
            for key, value in param_space.items():
                if key not in grids:
                    config[key] = value.sample(random_state=rng) if isinstance(value, Domain) else value
            out.append(config)
    return out


def cell_space(configs: list[dict[str, Any]], cell_names: list[str]) -> dict[str, Any]:
    """The experiment's space: every (configuration, cell), each trial's parameters looked up by index."""
    from ray import tune

    names = list(configs[0]) if configs else []
    return {"cfg": tune.grid_search(list(range(len(configs)))), "cell": tune.grid_search(cell_names),
            **{n: tune.sample_from(lambda spec, n=n: configs[spec.config["cfg"]][n]) for n in names}}


def run_correlation(job: SearchJob, configs: list[dict[str, Any]]) -> dict[str, Any]:
    """Run the configuration x cell experiment ``job`` and tabulate it: ``scores`` (one row per trial) and
    ``correlations`` (one row per cell, against the full-data cell)."""
    start = time.perf_counter()
    result = run_search(job)
    scores = cell_scores(result.trials, configs, list(job.built.param_space["cell"]["grid_search"]), job.metric)
    return {"scores": scores, "correlations": correlations(scores, job.mode), "wall_time_s": time.perf_counter() - start,
            "num_configs": len(configs), "experiment_path": result.summary["experiment_path"], "result": result}


def cell_scores(trials: pd.DataFrame, configs: list[dict[str, Any]], cell_names: list[str],
                metric: str = "val_accuracy") -> pd.DataFrame:
    """One row per trial: its configuration and cell (in the order the cells were given), score (as ``score`` and
    under the ``metric`` it is) and cost."""
    rows = []
    for _, t in trials.iterrows():
        if t.get("config/cell") is None or t.get("config/cfg") is None:  # its worker never started
            continue
        ratio, strategy = cell_of({"cell": t["config/cell"]})
        index = int(t["config/cfg"])
        rows.append({"config": index, "cell": cell_names.index(t["config/cell"]), "ratio": ratio, "metric": strategy,
                     **configs[index],
                     metric: t["final_score"], "score": t["final_score"], "data_passes": t["data_passes"],
                     "seconds": t["seconds"], "selection_seconds": t.get("selection_seconds", 0.0),
                     "proxy_seconds": t["proxy_seconds"],
                     "proxy_data_passes": t.get("proxy_data_passes", 0.0), "proxy_key": t["proxy_key"],
                     "proxy_computed": bool(t["proxy_computed"]), "status": t["status"],
                     "error": t.get("error") if t["status"] == "ERROR" else None})
    return pd.DataFrame(rows).sort_values(["cell", "config"]).reset_index(drop=True)


def correlations(scores: pd.DataFrame, mode: str = "max") -> pd.DataFrame:
    """One row per proxy cell: the rank correlations of its scores with the full-data cell's over the
    configurations full data finished (one that failed in the cell is ranked last, ``failed`` counts them:
    :mod:`asp_tune.quality`), its cost (training seconds, plus a static proxy's scoring model once and each
    trial's choosing of its subset, k-centers' seconds) against
    full data's, and its data passes (with a static proxy's scoring model, once; per trial, ``data_passes_mean``:
    cells of one ratio can differ, a full first epoch or a static subset)."""
    full = scores[scores["metric"] == "none"].set_index("config")
    rows = []
    for (ratio, strategy), part in scores[scores["metric"] != "none"].groupby(["ratio", "metric"], sort=False):
        part = part.set_index("config")
        common = part.index.intersection(full.index)
        proxy_seconds = proxy_model_seconds(part.loc[common])  # a static proxy's scoring model, once per cell
        selection = float(part.loc[common, "selection_seconds"].sum()) if "selection_seconds" in part else 0.0
        quality = proxy_quality(part.loc[common, "score"].values, full.loc[common, "score"].values,
                                float(part.loc[common, "seconds"].sum()) + proxy_seconds + selection,
                                float(full.loc[common, "seconds"].sum()), mode=mode)
        proxy_passes = proxy_model_total(part, "proxy_data_passes")  # its training and scoring pass, once
        passes = float(part["data_passes"].sum()) + proxy_passes
        rows.append({"ratio": ratio, "metric": strategy, "strategy": strategy, "asked": strategy,
                     "kind": metric_kind(strategy),
                     **quality, "pairs": quality["n"], "proxy_model_seconds": proxy_seconds,
                     "selection_seconds": selection,
                     "proxy_model_data_passes": proxy_passes, "data_passes": passes,
                     "data_passes_mean": passes / len(part)})
    table = pd.DataFrame(rows)
    if len(table):
        table["cost_adjusted_r2"] = cost_adjusted_r2(table["r2"], table["relative_cost"])
    return table


def metric_kind(metric: str) -> str:
    """``static`` for a baseline chosen once, ``ASP`` for a strategy chosen anew each epoch, with ``control``
    for a uniform random one."""
    from asp_tune.strategies import make_strategy

    kind = "static" if make_strategy(metric, TrainConfig(ratio=0.5)).kind == "static" else "ASP"
    return f"{kind} control" if metric in UNIFORM_CONTROLS else kind


def correlation_markdown(corr: pd.DataFrame, title: str) -> str:
    """Rows: metrics; columns: ratios; cells 'tau / rho / s' as in the ASP paper's Table 5, then what the cell
    cost and over how many configurations it was measured."""
    ratios = sorted(corr["ratio"].unique())
    lines = [f"# {title}", "", "Each cell: Kendall tau / Pearson / Spearman between full-data and proxy "
             "scores over the grid's configurations, then r² / top-1 regret (x 100) / relative "
             "cost (training seconds, plus a static proxy's scoring model once, against full data), as in "
             "asp_tune/quality.py; then each trial's data passes and n, the configurations with both scores (a "
             "configuration that failed in the cell is ranked last: '1 failed'). ASP metrics re-choose the subset "
             "every epoch; static baselines fix it once; a control picks uniformly at random. Cells of one ratio "
             "can differ in data passes (a full first epoch, a static subset): compare a strategy with the control "
             "of its own cost.", "",
             "| metric | kind | " + " | ".join(f"r = {r}" for r in ratios) + " |",
             "|---|---|" + "---|" * len(ratios)]
    for m, part in corr.groupby("metric", sort=False):
        row = []
        for r in ratios:
            cell = part[part["ratio"] == r]
            if cell.empty:
                row.append("-")
                continue
            c = cell.iloc[0]
            failed = int(c.get("failed", 0) or 0)
            row.append(f"{c['kendall_tau']:.3f} / {c['pearson']:.3f} / {c['spearman']:.3f}; {c['r2']:.2f} / "
                       f"{100 * c['top1_regret']:.1f} / {c['relative_cost']:.2f}; "
                       f"{c['data_passes_mean']:.2f} passes, n {int(c['pairs'])}"
                       + (f" ({failed} failed)" if failed else ""))
        lines.append(f"| {m} | {metric_kind(m)} | " + " | ".join(row) + " |")
    if not set(UNIFORM_CONTROLS) & set(corr["metric"]):
        lines += ["", "No uniform random control ran (`random` or `fixed_random` in the metrics): nothing here says "
                      "whether these strategies beat a random subset of the same cost."]
    return "\n".join(lines) + "\n"


def plot_correlation_scatter(scores: pd.DataFrame, path) -> None:
    from asp_tune.plots import agreement_scatter, pyplot, save_figure

    plt = pyplot()
    full = scores[scores["metric"] == "none"].set_index("config")["score"]
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
            tau = agreement_scatter(ax, full.loc[common], part.loc[common, "score"], s=10)
            ax.set_title(f"{m}, r={r}: tau {tau:.2f}", fontsize=9)
            if j == 0:
                ax.set_ylabel("proxy score")
            if i == len(metrics) - 1:
                ax.set_xlabel("full-data score")
    save_figure(fig, path)


def write_correlation(folder, run: dict[str, Any], title: str, extra: dict[str, Any]) -> dict[str, Any]:
    """The experiment's files in an open results folder; returns its summary (``summary.json``)."""
    import json

    folder.write_table("scores.csv", run["scores"])
    folder.write_table("correlation.csv", run["correlations"])
    markdown = correlation_markdown(run["correlations"], title)
    folder.file("table.md").write_text(markdown)
    plot_correlation_scatter(run["scores"], folder.file("scatter.png"))
    print("\n" + markdown)
    failed = run["scores"][run["scores"]["status"] == "ERROR"]
    if len(failed):
        print(f"[asp-tune] warning: {len(failed)} of {len(run['scores'])} trials failed (the first: configuration "
              f"{int(failed['config'].iloc[0])} in cell {failed['ratio'].iloc[0]:g}/{failed['metric'].iloc[0]}: "
              f"{failed['error'].iloc[0]}); a configuration that failed in a cell is ranked last there, one that "
              f"failed on full data is left out (NaN below 3 pairs); scores.csv has every error", file=sys.stderr)
    searched = getattr(run.get("result"), "summary", None) or {}
    packing = {k: searched[k] for k in ("pack", "packs") if searched.get(k) is not None}  # what --pack chose, and why
    return {**extra, **packing, "num_configs": run["num_configs"], "wall_time_s": run["wall_time_s"],
            "num_trials": len(run["scores"]), "num_failed": len(failed),
            "first_error": None if not len(failed) else failed["error"].iloc[0],
            "experiment_path": run["experiment_path"],
            "correlations": json.loads(run["correlations"].to_json(orient="records"))}

