"""Proxy against full data: the same search at several ratios, each pick retrained on full data.

One comparison for every trainable: :func:`run_comparison` runs one :class:`~asp_tune.tune.run.SearchJob`
per ratio through :func:`~asp_tune.tune.run.run_search`, retrains each pick on full data with the
``retrain`` it is handed (asp_tune's own trainer for ``asp-tune compare``, the user's trainable at
ratio 1 for :func:`asp_tune.tune.compare_trainable`), and measures how each proxy search ranked the
configurations both evaluated against the full-data search; :func:`write_comparison` writes
``comparison.csv``, ``retrained.csv``, the trials of every ratio, ``report.md`` and ``comparison.png``.
"""

from __future__ import annotations

import json
import math
import sys
from typing import Any, Callable, Sequence

import numpy as np
import pandas as pd

from asp_tune.flags import both_spellings
from asp_tune.quality import cost_adjusted_r2, proxy_quality, relative_cost, seed_spread
from asp_tune.tune.run import SearchJob, SearchResult, run_search

#: Earlier names of comparison columns, kept beside the current ones (deprecated; read the new ones).
DEPRECATED_COLUMNS = {"corr_kendall_tau": "kendall_tau", "corr_pearson": "pearson", "corr_spearman": "spearman",
                      "corr_n": "pairs", "retrained_test_mean": "retrained_mean", "retrained_test_std": "retrained_std",
                      "retrained_score": "retrained_mean", "data_passes": "data_passes_total"}
#: ``retrain(pick, seeds)``: the pick trained on all data once per seed; a dict per seed with ``seed`` and
#: ``score`` (and whatever else the trainable measured: test accuracy, seconds).
Retrain = Callable[[dict[str, Any], list[int]], list[dict[str, Any]]]


def config_key(row: pd.Series | dict[str, Any], names: list[str]) -> tuple:
    """A configuration's identity across the runs: its values, floats to 12 significant digits (a CSV round trip
    keeps them; decimal places would make every learning rate below 5e-7 one configuration)."""
    def norm(v: Any) -> Any:
        return float(f"{float(v):.12g}") if isinstance(v, (float, np.floating)) else v
    return tuple(norm(row[f"config/{n}"]) for n in names)


def rung_trust(trust: dict | None) -> dict:
    """The lowest rung agreement a search measured (with its pairs) and whether its pick is trusted."""
    measured = [p for p in (trust or {}).get("pairs", []) if p["trusted"] is not None]
    worst = min(measured, key=lambda p: p["kendall_tau"]) if measured else None
    return {"rung_tau_min": math.nan if worst is None else worst["kendall_tau"],
            "rung_pairs": "" if worst is None else f"{worst['low']}->{worst['high']} ({worst['pairs']})",
            "pick_trusted": (trust or {}).get("trusted")}


#: The figures a comparison over several seeds gives as mean and sample std (paired: each seed's own row).
OVER_SEEDS = ("wall_time_s", "speedup_wall", "data_passes_total", "speedup_data_passes", "retrained_mean", "regret",
              "kendall_tau", "gain_over_control", "control_kendall_tau")


def run_comparison(jobs: dict[float, Callable[[int | None], SearchJob]], retrain: Retrain, seeds: int = 1,
                   say: Callable[[str], None] = print,
                   control: Callable[[float, str, int | None], SearchJob] | None = None,
                   search_seeds: Sequence[int | None] = (None,)) -> dict[str, Any]:
    """Each ratio's search (ratio 1.0 is the full-data baseline; ``jobs[ratio](seed)``, None: the job's own seed),
    each pick retrained on full data ``seeds`` times (seeds ``s * seeds`` on for search seed ``s``, the same for every
    pick: paired; another search seed, other retrains),
    and the comparison table (:func:`compare_runs`). ``control(ratio, strategy, seed)``: the same search as the
    ratio's on a uniformly random subset of the same size (``strategy``, :func:`asp_tune.strategies.uniform_control`
    of the strategy the ratio's search resolved to; none where that is uniform already): a proxy is worth its cost
    only against it. ``search_seeds``: the whole comparison once per seed; ``table`` holds every seed's rows
    (``search_seed``), ``over_seeds`` each figure's mean and sample std over them (:func:`over_seeds`)."""
    parts = []
    for seed in search_seeds:
        if len(search_seeds) > 1:
            say(f"[asp-tune compare] seed {seed} ({len(parts) + 1} of {len(search_seeds)})")
        parts.append(_compare_once(jobs, retrain, seeds, say, control, seed))
    table = pd.concat([part["table"] for part in parts], ignore_index=True)
    expected = len(parts)
    scatter: dict[float, list[tuple[float, float]]] = {}
    for part in parts:  # every seed's pairs, pooled
        for ratio, pairs in part["scatter"].items():
            scatter.setdefault(ratio, []).extend(pairs)
    return {"table": table, "over_seeds": over_seeds(table, expected), "runs": parts[0]["runs"],
            "controls": parts[0]["controls"], "scatter": scatter, "by_seed": parts}


def _compare_once(jobs: dict[float, Callable[[int | None], SearchJob]], retrain: Retrain, seeds: int,
                  say: Callable[[str], None], control: Callable[[float, str, int | None], SearchJob] | None,
                  seed: int | None) -> dict[str, Any]:
    from asp_tune.strategies import uniform_control

    runs: dict[float, SearchResult] = {}
    controls: dict[float, SearchResult] = {}
    for ratio in sorted(jobs, reverse=True):
        job = jobs[ratio](seed)
        metric = job.summary.get("metric")
        say(f"[asp-tune compare] search at ratio {ratio} ({metric})")
        runs[ratio] = run_search(job)
        uniform = None if ratio == 1.0 or control is None else uniform_control(str(metric))
        if uniform is not None:
            say(f"[asp-tune compare] control at ratio {ratio} ({uniform}: a uniformly random subset of the same size)")
            controls[ratio] = run_search(control(ratio, uniform, seed))
    retrained: dict[float, list[dict[str, Any]]] = {}
    retrained_controls: dict[float, list[dict[str, Any]]] = {}
    first = int(runs[1.0].summary.get("seed") or 0)  # a block of retrain seeds per search seed: none shared
    for arm, done, into in (("", runs, retrained), (" control", controls, retrained_controls)):
        for ratio, result in done.items():
            say(f"[asp-tune compare] retraining ratio-{ratio}{arm} pick on full data x{seeds}")
            into[ratio] = retrain(result.summary["best_config"], [first * seeds + i for i in range(seeds)])
    param_names = list(next(iter(runs.values())).summary["best_config"])
    table, scatter = compare_runs(runs, retrained, param_names, controls, retrained_controls)
    table.insert(0, "search_seed", first)
    return {"table": table, "runs": runs, "controls": controls, "scatter": scatter, "seed": first}


def over_seeds(table: pd.DataFrame, seeds: int | None = None) -> pd.DataFrame:
    """One row per (ratio, arm): how many seeds (``seeds``: the comparison's; a search a seed lacks is then counted
    in each figure's ``_n``), and each :data:`OVER_SEEDS` figure's mean and sample std over the seeds' rows (each
    already paired within its seed: a regret is a seed's full-data pick against its own pick)."""
    rows = []
    for (ratio, arm), part in table.groupby(["ratio", "arm"], sort=False):
        row: dict[str, Any] = {"ratio": ratio, "arm": arm, "metric": part["metric"].iloc[0],
                               "seeds": len(part) if seeds is None else seeds,
                               "ratio_run": part["ratio_run"].iloc[0]}
        for name in OVER_SEEDS:
            values = [float(v) for v in part[name] if v == v] if name in part else []
            row[f"{name}_mean"] = float(np.mean(values)) if values else math.nan
            row[f"{name}_std"] = seed_spread(values)
            row[f"{name}_n"] = len(values)
        rows.append(row)
    return pd.DataFrame(rows)


def full_data_finals(runs: dict[float, SearchResult], param_names: list[str], epochs: int | None,
                     more: list[SearchResult] = ()) -> dict[tuple, float]:
    """Every configuration's full-data *final* score the comparison has, one per configuration and shared by
    every row: the full-data search's where its trial ran to the end (never one early stopping cut: all its
    epochs on all the data), else the first proxy search's (then a control's, ``more``) full-data top rung or
    audit (its proxy epochs, then all the data). Shared, so a proxy and its control are judged against the same
    scores; pooled, so each row pairs every configuration any search trained on full data."""
    finals: dict[tuple, float] = {}
    for _, row in runs[1.0].trials.iterrows():
        if row["status"] == "TERMINATED" and (epochs is None or row["epochs"] >= epochs) \
                and row["final_score"] == row["final_score"]:
            finals[config_key(row, param_names)] = float(row["final_score"])
    for result in [r for ratio, r in runs.items() if ratio != 1.0] + list(more):
        if "full_data_score" in result.trials:
            for _, row in result.trials[result.trials["full_data_score"].notna()].iterrows():
                finals.setdefault(config_key(row, param_names), float(row["full_data_score"]))
    return finals


def compare_runs(runs: dict[float, SearchResult], retrained: dict[float, list[dict[str, Any]]],
                 param_names: list[str], controls: dict[float, SearchResult] | None = None,
                 retrained_controls: dict[float, list[dict[str, Any]]] | None = None,
                 ) -> tuple[pd.DataFrame, dict[float, list[tuple[float, float]]]]:
    """One row per search (``arm``: ``full data`` at ratio 1.0, ``proxy``, and ``control``, a ratio's uniformly
    random subset of the same size): its cost and speed-ups against the full-data run, its pick's retrained
    score and its regret (per seed, the full-data pick's retrained score less its own: mean and sample std), and
    how its proxy scores rank the configurations against their full-data final scores (:func:`full_data_finals`;
    a configuration whose proxy run failed is ranked last): Kendall tau with its interval and the other
    correlations (:func:`asp_tune.quality.proxy_quality`); its ``warning`` in the search's own words
    (:func:`asp_tune.tune.fulldata.verdict_lines`); a proxy row beside a control also its gain over it (paired by
    seed) and the control's tau; and the (full, proxy) score pairs of each proxy ratio."""
    from asp_tune.tune.fulldata import FullDataAgreement, regret_allowed, verdict_lines

    controls, retrained_controls = controls or {}, retrained_controls or {}
    full = runs[1.0]
    mode = full.summary.get("mode", "max")
    sign = 1.0 if mode == "max" else -1.0
    finals = full_data_finals(runs, param_names, full.summary.get("budget", {}).get("max_epochs_per_trial"),
                              list(controls.values()))

    def seeded(given: list[dict[str, Any]] | None) -> dict[int, float]:
        return {x["seed"]: float(x["score"]) for x in given or []}

    def paired(a: dict[int, float], b: dict[int, float]) -> list[float]:
        """Per seed, a's retrained score less b's (signed so that more is better)."""
        return [sign * (a[seed] - b[seed]) for seed in a if seed in b and math.isfinite(a[seed]) and math.isfinite(b[seed])]

    def passes(summary: dict[str, Any]) -> float:
        """The search's data passes, a static proxy's scoring model's (its training and scoring pass) included."""
        return float(summary["data_passes_total"]) + float(summary.get("proxy_model_data_passes") or 0.0)

    full_seeds = seeded(retrained.get(1.0))
    best = _finite_mean(list(full_seeds.values()))
    rows, scatter = [], {}
    searches = [(r, result, "full data" if r == 1.0 else "proxy", seeded(retrained.get(r))) for r, result in runs.items()]
    searches += [(r, result, "control", seeded(retrained_controls.get(r))) for r, result in controls.items()]
    for ratio, result, arm, by_seed in searches:
        s = result.summary
        what = f"the ratio-{ratio}{' control' if arm == 'control' else ''}"
        agreement = FullDataAgreement(mode)
        column = "proxy_score" if "proxy_score" in result.trials else "best_score"
        pairs = []  # (full-data final, proxy) of every configuration with a full-data final: a failed proxy is NaN
        for _, row in result.trials.iterrows():
            key = config_key(row, param_names)
            if key not in finals or row.get("full_data_from") == "all the data":  # started on all the data: no proxy
                continue
            proxy = math.nan if row["status"] == "ERROR" else float(row[column] if ratio != 1.0 else row["final_score"])
            if math.isfinite(proxy):
                agreement.add(str(key), proxy, finals[key], "")
            elif row["status"] == "ERROR" or not math.isfinite(float(row["best_score"])):
                agreement.add_failed(str(key), finals[key], "")  # it failed or diverged: ranked last, never left out
            else:  # a score, but none at the rung the proxy is read at: nothing to pair
                continue
            pairs.append((finals[key], proxy))
        quality = proxy_quality([b for _, b in pairs], [a for a, _ in pairs], s["wall_time_s"],
                                full.summary["wall_time_s"], mode=mode)
        differences = paired(full_seeds, by_seed)  # paired by seed: the full-data pick's retrain less this pick's
        regret = _finite_mean(differences)
        low, high = agreement.interval() if agreement.measured else (math.nan, math.nan)
        warnings = [] if ratio == 1.0 else verdict_lines(agreement, regret, f"{what} pick", best=best)
        lost = [seed for seed, score in by_seed.items() if not math.isfinite(score)]
        if lost:
            warnings.append(f"{what} pick's retrain gave no score with seed{'s' if len(lost) > 1 else ''} "
                            f"{', '.join(map(str, lost))} (it diverged or failed): its mean and regret leave "
                            f"{'them' if len(lost) > 1 else 'it'} out")
        if ratio == 1.0:
            warnings += _tied_pick(result, param_names)
        if arm == "proxy":
            scatter[ratio] = [(a, b) for a, b in pairs if math.isfinite(b)]
        ran_at = float(s.get("ratio") or ratio)  # a first rung lengthened to its minimum steps may raise it
        if ratio != 1.0 and ran_at != ratio:
            change = s.get("first_rung_change") or {}
            steps = change.get("steps") or ["?", "?"]
            warnings.append(f"{what} search ran at ratio {ran_at:g}: its first rung took {steps[0]} "
                            f"optimiser steps, {change.get('minimum', '?')} are needed "
                            f"({both_spellings('min_first_rung_steps', 0)} keeps the ratio)"
                            + ("; it is a full-data search, not a proxy" if ran_at >= 1.0 else ""))
        beside: dict[str, Any] = {}
        if arm == "proxy" and ratio in controls:
            gains = paired(by_seed, seeded(retrained_controls.get(ratio)))
            beside = {"control_metric": controls[ratio].summary["metric"], "gain_over_control": _finite_mean(gains),
                      "gain_over_control_std": seed_spread(gains)}
            allowed = regret_allowed(best, mode)
            if beside["gain_over_control"] < -allowed:
                warnings.append(f"{what} pick ({s['metric']}) retrained {-beside['gain_over_control']:.4f} below "
                                f"the pick of a uniformly random subset of the same size ({beside['control_metric']}): "
                                "at this ratio the proxy costs quality a random subset keeps")
        rows.append({
            "ratio": ratio, "arm": arm, "ratio_run": ran_at, "metric": s["metric"], "algo": s["algo"],
            "num_trials": s["num_trials"], "num_failed": s["num_failed"], "wall_time_s": s["wall_time_s"],
            **{f"{part}_s": float((s.get("trial_seconds") or {}).get(part, math.nan))
               for part in ("startup", "training", "validation")},
            "full_data_wall_s": (math.nan if ratio == 1.0 else  # the full-data search is all full data
                                 float(((s.get("full_data") or {}).get("cost") or {}).get("wall_time_s", 0.0))),
            "speedup_wall": full.summary["wall_time_s"] / s["wall_time_s"] if s["wall_time_s"] else math.nan,
            "data_passes_total": passes(s), "proxy_model_data_passes": float(s.get("proxy_model_data_passes") or 0.0),
            "speedup_data_passes": passes(full.summary) / passes(s) if passes(s) else math.nan,
            "best_score": s["best_score"], "best_val_accuracy": s.get("best_val_accuracy"),
            "decided_by": s.get("decided_by", ""),
            "retrained_mean": _finite_mean(list(by_seed.values())),
            "retrained_std": seed_spread([v for v in by_seed.values() if math.isfinite(v)]),
            "retrained": (retrained if arm != "control" else retrained_controls).get(ratio, []),  # every seed's
            "regret": regret, "regret_std": seed_spread(differences) if ratio != 1.0 else math.nan,
            "pairs": 0 if ratio == 1.0 else quality["n"], "failed_proxy": 0 if ratio == 1.0 else quality["failed"],
            **{k: quality[k] for k in ("kendall_tau", "pearson", "spearman", "r2", "good_spearman", "relative_cost")},
            "tau_low": low, "tau_high": high, "measured": agreement.measured,
            "control_metric": "", "gain_over_control": math.nan, "gain_over_control_std": math.nan, **beside,
            "warning": " | ".join(warnings),
            "relative_data_passes": relative_cost(passes(s), passes(full.summary)),
            "best_config": s["best_config"], "experiment_path": s["experiment_path"],
            **rung_trust(s.get("proxy_trust")),
        })
        for line in warnings:
            print(f"[asp-tune compare] warning: {line}", file=sys.stderr)
    table = pd.DataFrame(rows)
    itself = table["ratio"] == 1.0  # full data against its own scores: nothing to correlate
    table.loc[itself, "measured"] = False
    # too few configurations with both scores (and full data against itself): no correlation is reported
    table.loc[~table["measured"].astype(bool), ["kendall_tau", "pearson", "spearman", "r2", "good_spearman",
                                                 "tau_low", "tau_high"]] = math.nan
    proxies = table.set_index(["ratio", "arm"])
    table["control_kendall_tau"] = [proxies["kendall_tau"].get((r, "control"), math.nan) if a == "proxy" else math.nan
                                    for r, a in zip(table["ratio"], table["arm"])]
    table["cost_adjusted_r2"] = cost_adjusted_r2(table["r2"], table["relative_cost"])
    for old, new in DEPRECATED_COLUMNS.items():
        table[old] = table[new]
    return table, scatter


def _finite_mean(values: list[float]) -> float:
    finite = [v for v in values if math.isfinite(v)]
    return float(np.mean(finite)) if finite else math.nan


def _tied_pick(full: SearchResult, param_names: list[str]) -> list[str]:
    """A warning when the full-data search's best score was shared: its pick among them is the first by its
    values (:func:`~asp_tune.tune.collect.best_trial`), so every regret against it is against one of equals
    (within the tied configurations' retrained spread)."""
    best = full.summary.get("best_score")
    trials = full.trials
    if best is None or best != best or "final_score" not in trials:
        return []
    tied = trials[(trials["status"] == "TERMINATED") & np.isclose(trials["final_score"].astype(float), float(best),
                                                                  rtol=0.0, atol=1e-9)]
    configurations = {config_key(row, param_names) for _, row in tied.iterrows()}
    if len(configurations) < 2:
        return []
    return [f"{len(configurations)} configurations tied at the full-data search's best score {float(best):.4g}; its pick is "
            "the first of them by its values, so each regret here is against one of equals"]


def write_comparison(folder, comparison: dict[str, Any], title: str, score_name: str) -> dict[str, Any]:
    """The comparison's files in an open results folder; returns its summary (``summary.json``). Over several seeds
    also ``comparison_over_seeds.csv``, each seed's trials files (``_s<seed>``), and ``report.md`` opens with the
    figures over the seeds."""
    table, runs = comparison["table"], comparison["runs"]
    parts = comparison.get("by_seed") or [{"table": table, "runs": runs, "controls": comparison.get("controls") or {},
                                           "seed": None}]
    several = len(parts) > 1
    folder.write_table("comparison.csv", table.drop(columns=["best_config", "retrained"]).assign(
        best_config=[json.dumps(c) for c in table["best_config"]]))
    folder.write_table("retrained.csv", pd.DataFrame([{"search_seed": row.get("search_seed"), "ratio": row["ratio"],
                                                       "arm": row["arm"], **x}
                                                      for _, row in table.iterrows() for x in row["retrained"]]))
    for part in parts:
        tail = f"_s{part['seed']}" if several else ""
        for ratio, run in part["runs"].items():
            folder.write_table(f"trials_r{ratio}{tail}.csv", run.trials)
        for ratio, run in (part.get("controls") or {}).items():
            folder.write_table(f"trials_r{ratio}_control{tail}.csv", run.trials)
    extra: dict[str, Any] = {}
    if several:
        over = comparison["over_seeds"]
        folder.write_table("comparison_over_seeds.csv", over)
        seeds = [part["seed"] for part in parts]
        markdown = "\n".join([over_seeds_markdown(over, title, score_name, seeds)] + [
            "#" + comparison_markdown(part["table"], f"seed {part['seed']}", score_name, notes=False) for part in parts]
            + [comparison_notes(score_name, len(parts)) + "\n"])
        plot_comparison(_plotted(over), comparison["scatter"], folder.file("comparison.png"), score_name,
                        pooled=len(parts))
        extra = {"search_seeds": seeds, "over_seeds": json.loads(over.to_json(orient="records"))}
    else:
        markdown = comparison_markdown(table, title, score_name)
        plot_comparison(table, comparison["scatter"], folder.file("comparison.png"), score_name)
    folder.file("report.md").write_text(markdown)
    print("\n" + markdown)
    controls = comparison.get("controls") or {}
    if several:  # "runs" and "controls" are the first seed's; every seed's searches are here
        extra["by_seed"] = {str(part["seed"]): {"runs": {str(r): run.summary for r, run in part["runs"].items()},
                                                "controls": {str(r): run.summary for r, run in
                                                             (part.get("controls") or {}).items()}}
                            for part in parts}
    return {"title": title, "ratios": sorted(runs, reverse=True), "score": score_name,
            "rows": json.loads(table.drop(columns=list(DEPRECATED_COLUMNS)).to_json(orient="records")),
            "runs": {str(r): run.summary for r, run in runs.items()},
            "controls": {str(r): run.summary for r, run in controls.items()}, **extra}


def over_seeds_markdown(over: pd.DataFrame, title: str, score_name: str, seeds: list) -> str:
    """The figures over the seeds (:func:`over_seeds`), mean ± sample std, one row per search."""
    shown = _scale(score_name)
    percent = shown is _percent

    def cell(row: pd.Series, name: str, fmt: Callable[[float], str], unit: str = "") -> str:
        mean, std, n = row[f"{name}_mean"], row[f"{name}_std"], row[f"{name}_n"]
        if mean != mean:
            return "-"
        return f"{fmt(mean)}{unit}{'' if std != std else f' ± {fmt(std)}'}" + ("" if n == row["seeds"] else
                                                                               f" ({n} of {row['seeds']})")

    number = {1: lambda v: f"{v:.1f}", 2: lambda v: f"{v:.2f}", 3: lambda v: f"{v:.3f}"}
    lines = [f"# {title}", "", f"Over {len(seeds)} seeds ({', '.join(map(str, seeds))}), each the whole comparison "
             "(its searches, controls and retrains share the seed): every figure is the mean ± sample std of the "
             "seeds' own (a regret and a gain over the control are paired within their seed); '(n of N)': measured "
             "in n seeds. Each seed's table follows.", "",
             f"| ratio | metric | seeds | wall s | speed-up (wall) | data passes | speed-up (passes) | {score_name} | "
             "regret | Kendall tau | gain over control | control's tau |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in over.iterrows():
        lines.append(f"| {ratio_label(r)} | {r['metric']} | {r['seeds']} | {cell(r, 'wall_time_s', number[1])} | "
                     f"{cell(r, 'speedup_wall', number[2], 'x')} | {cell(r, 'data_passes_total', number[1])} | "
                     f"{cell(r, 'speedup_data_passes', number[2], 'x')} | {cell(r, 'retrained_mean', shown)} | "
                     f"{cell(r, 'regret', shown) if r['ratio'] != 1.0 else '-'} | {cell(r, 'kendall_tau', number[3])} | "
                     f"{cell(r, 'gain_over_control', shown)} | {cell(r, 'control_kendall_tau', number[3])} |")
    lines += ["", f"{score_name[0].upper() + score_name[1:]}, regret and gain over the control: "
              f"{'x 100 (points)' if percent else 'as they are'}; the columns are those of the tables below (their "
              "notes follow them)."]
    return "\n".join(lines) + "\n"


def _plotted(over: pd.DataFrame) -> pd.DataFrame:
    """The figure's view of the figures over the seeds: their means, the retrained scores' spread over the seeds."""
    return pd.DataFrame({"ratio": over["ratio"], "arm": over["arm"], "ratio_run": over["ratio_run"],
                         "wall_time_s": over["wall_time_s_mean"], "retrained_mean": over["retrained_mean_mean"],
                         "retrained_std": over["retrained_mean_std"], "data_passes_total": over["data_passes_total_mean"],
                         "measured": over["kendall_tau_n"] > 0})


def comparison_markdown(table: pd.DataFrame, title: str, score_name: str = "retrained test accuracy",
                        notes: bool = True) -> str:
    """The table of one comparison (one seed), then with ``notes`` what its columns mean and its controls."""
    from asp_tune.tune.fulldata import MIN_PAIRS

    shown = _scale(score_name)
    percent = shown is _percent
    lines = [f"# {title}", "",
             "| ratio | metric | trials | wall s | of it full data s | trials' s: start-up / training / validation | "
             "speed-up (wall) | data passes | speed-up (passes) | best score | "
             f"{score_name} | regret | Kendall tau (90% interval) | Pearson | Spearman | r² | good Spearman | n | "
             "rung tau (min) | warning |",
             "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
    for _, r in table.iterrows():
        rung = "-" if r.get("rung_tau_min") != r.get("rung_tau_min") else f"{r['rung_tau_min']:.2f} ({r['rung_pairs']})"
        warned = "-" if r["ratio"] == 1.0 else ("**yes**" if r["warning"] else
                                                 ("no" if r["measured"] else "no (not measured)"))
        if r["ratio"] == 1.0:  # full data against itself: nothing
            correlations = " - | - | - | - | - | - "
        elif not r["measured"]:
            correlations = f" - (not measured: {r['pairs']} of {MIN_PAIRS} pairs) | - | - | - | - | {r['pairs']} "
        else:
            failed = int(r.get("failed_proxy", 0) or 0)
            correlations = (f" {r['kendall_tau']:.3f} ({r['tau_low']:+.2f} .. {r['tau_high']:+.2f}) | "
                            f"{r['pearson']:.3f} | {r['spearman']:.3f} | {r['r2']:.3f} | "
                            f"{'-' if r['good_spearman'] != r['good_spearman'] else format(r['good_spearman'], '.3f')} | "
                            f"{r['pairs']}{f' ({failed} failed)' if failed else ''} ")
        seeds = len(r["retrained"]) if isinstance(r.get("retrained"), list) else 2
        spread = "" if seeds < 2 else f" ± {shown(r['retrained_std'])}"  # no spread from one retrain
        regret_spread = "" if r["ratio"] == 1.0 or r.get("regret_std") != r.get("regret_std") else \
            f" ± {shown(r['regret_std'])}"
        parts = " / ".join("-" if r.get(f"{p}_s") != r.get(f"{p}_s") else f"{r[f'{p}_s']:.1f}"
                           for p in ("startup", "training", "validation"))
        full_data = r.get("full_data_wall_s", 0.0)
        lines.append(
            f"| {ratio_label(r)} | {r['metric']} | {r['num_trials']} | {r['wall_time_s']:.1f} | "
            f"{'-' if not full_data or full_data != full_data else f'{full_data:.1f}'} | {parts} | "
            f"{r['speedup_wall']:.2f}x | {r['data_passes_total']:.1f} | {r['speedup_data_passes']:.2f}x | "
            f"{r['best_score']:.4f} | {shown(r['retrained_mean'])}{spread} | {shown(r['regret'])}{regret_spread} |{correlations}| "
            f"{rung} | {warned} |")
    if notes:
        lines += ["", comparison_notes(score_name)]
    beside = table[table["arm"] == "proxy"] if "arm" in table else table.iloc[0:0]
    beside = beside[beside["control_metric"].astype(str) != ""] if "control_metric" in beside else beside.iloc[0:0]
    if len(beside):
        lines += ["", "Beside the control (the same search on a uniformly random subset of the same size; the proxy "
                      "pick's retrained score less the control pick's, paired by seed, mean ± sample std; Kendall tau "
                      "of each against full data):", ""]
        for _, r in beside.iterrows():
            gain = r["gain_over_control"]
            spread = "" if r["gain_over_control_std"] != r["gain_over_control_std"] else \
                f" ± {shown(r['gain_over_control_std'])}"
            taus = " against ".join("-" if t != t else f"{t:.2f}" for t in (r["kendall_tau"], r["control_kendall_tau"]))
            lines.append(f"- r = {r['ratio']}: {r['metric']} against {r['control_metric']}: "
                         f"{'+' if gain >= 0 else ''}{shown(gain)}{spread}{' points' if percent else ''}; "
                         f"tau {taus}")
    return "\n".join(lines) + "\n"


def comparison_notes(score_name: str, seeds: int = 1) -> str:
    """What every column of a comparison's table means (said once in a report, whatever its seeds)."""
    from asp_tune.tune.fulldata import MIN_PAIRS

    percent = _scale(score_name) is _percent
    scale = ("shown x 100 (accuracy in percent)" if percent else "shown as it is")
    one_seed = ("One search seed: the spreads are the retrains', not the search's (--seeds 0,1,2 repeats the whole "
                "comparison). " if seeds == 1 else "")
    return ("Metric: the strategy choosing each epoch's subset. Wall s: the search as one waits for it, its "
            "full-data part (top rung and audit) included; trials' seconds are summed over the trials (they run "
            "side by side): start-up (a worker's imports, the data, the network), training and validation. Data "
            "passes: training samples seen over the "
            "training set's size, summed over the trials, a static proxy's scoring model (its training and one "
            "scoring pass) once. Best score: the pick's validation score as the search "
            "decided it (on full data where full data decided). Speed-ups are against the full-data run (ratio "
            "1.0, metric none) of the same search and seed. "
            f"{score_name[0].upper() + score_name[1:]}: each run's best configuration trained from scratch on "
            f"all training data (mean ± sample std over the retrain seeds), {scale}; best score is shown "
            "as it is, and comparison.csv and summary.json keep every score as it is. Regret: the full-data "
            f"pick's retrained score less this pick's with the same seed{', x 100 (points)' if percent else ''}, "
            "mean ± sample std over the seeds (paired; a retrain that gave no score is left out, with a warning). "
            f"{one_seed}A control row: the same search "
            "on a uniformly random subset of the same size (random; fixed_random beside a static proxy: the same ratio, "
            "schedule and first epoch; early stopping may promote other trials, so its data passes are its own), run "
            "beside every proxy ratio whose strategy is not uniform already; a proxy is worth its cost only "
            "against it. Correlations: each "
            "configuration's proxy score against its full-data final score "
            "(one per configuration, the same for every row: the full-data search's where its trial ran to the "
            "end, else a proxy or control search's full-data top rung or audit, so a proxy and its control are "
            "judged against the same scores); never a score early stopping cut. r² of full = beta x proxy on normalised scores; good "
            "Spearman: over the configurations whose proxy score is at least the median; the interval is a "
            f"bootstrap over configurations; all are measured once {MIN_PAIRS} configurations have both scores "
            "(asp_tune/tune/fulldata.py); the full-data row has nothing to correlate; n: the configurations with "
            "both scores (a configuration whose proxy run failed or diverged is ranked last and counted as "
            "failed). Rung tau: the lowest Kendall tau between consecutive rungs of the search's own early "
            "stopping, with those rungs and its pairs (asp_tune/tune/trust.py). Warning: the proxy misranks "
            "against full data (its whole interval below 0.3; an interval across 0.3 is uncertain, not a "
            f"warning), the pick lost more than {'1 point' if percent else '0.01'}, or the search ran at another "
            "ratio than asked (its first rung was too short), or the pick retrained below its control's; the "
            "lines are in comparison.csv and were printed. "
            "The search's own line pairs only its own configurations, so its tau can differ from this table's.")


def ratio_label(row: pd.Series | dict[str, Any]) -> str:
    """A row's ratio (``control`` after it for a ratio's uniformly random control), and the ratio its search ran at
    where that differs (a first rung made long enough)."""
    ran = row.get("ratio_run", row["ratio"])
    label = f"{row['ratio']}{' control' if row.get('arm') == 'control' else ''}"
    return label if ran != ran or ran == row["ratio"] else f"{label} (ran at {ran:g})"


def _scale(score_name: str) -> Callable[[float], str]:
    """How the report shows a retrained score: an accuracy in percent, any other score as it is."""
    return _percent if "accuracy" in score_name else (lambda v: "-" if v != v else f"{v:.4f}")


def _percent(value: float) -> str:
    return "-" if value != value else f"{100 * value:.2f}"


def plot_comparison(table: pd.DataFrame, scatter: dict[float, list[tuple[float, float]]], path,
                    score_name: str = "retrained test accuracy", pooled: int = 1) -> None:
    """Wall time, retrained score and data passes per search, and each proxy's scores against full data's
    (``pooled``: over that many seeds, their pairs pooled; the bars are means over them)."""
    from asp_tune.plots import agreement_scatter, pyplot, save_figure
    from asp_tune.tune.fulldata import MIN_PAIRS

    plt = pyplot()
    fig, axes = plt.subplots(1, 4, figsize=(17, 3.8))
    labels = [f"r={ratio_label(row)}" for _, row in table.iterrows()]
    axes[0].bar(labels, table["wall_time_s"], color="tab:blue")
    axes[0].set_title("search wall time (s)")
    percent = _scale(score_name) is _percent
    scale = 100 if percent else 1
    axes[1].bar(labels, scale * table["retrained_mean"], yerr=scale * table["retrained_std"].fillna(0),
                color="tab:green")
    if percent:
        axes[1].set_ylim(0, 100)  # an honest axis: small gaps look small
    axes[1].set_title(f"{score_name}{' (%)' if percent else ''}")
    axes[2].bar(labels, table["data_passes_total"], color="tab:orange")
    axes[2].set_title("data passes (all trials)")
    taus = []
    rows = {row["ratio"]: row for _, row in table.iterrows() if row.get("arm") != "control"}  # the proxies'
    measured = {r: bool(row["measured"]) for r, row in rows.items()}
    for i, (r, pairs) in enumerate((r, p) for r, p in scatter.items() if r != 1.0 and p):
        style = {"color": f"C{i + 1}"}
        label = f"r={ratio_label(rows[r])}" if r in rows else f"r={r}"
        if measured.get(r):
            tau = agreement_scatter(axes[3], [a for a, _ in pairs], [b for _, b in pairs], label=label, **style)
            taus.append(f"r={r}: tau {tau:.2f}")
        else:  # too few configurations: their points, no fit and no tau
            axes[3].scatter([a for a, _ in pairs], [b for _, b in pairs], s=14, label=label, **style)
            taus.append(f"r={r}: not measured ({len(pairs)} of {MIN_PAIRS} pairs)" if pooled == 1 else
                        f"r={r}: measured in no single seed ({len(pairs)} pairs over {pooled} seeds)")
    axes[3].set_xlabel("full-data final score")
    axes[3].set_ylabel("proxy score (the search's)")
    axes[3].set_title(("same configurations" if pooled == 1 else f"same configurations, {pooled} seeds pooled")
                      + "\n" + "; ".join(taus), fontsize=9)
    if pooled > 1:
        axes[0].set_title(f"search wall time (s), mean of {pooled} seeds")
    if taus:
        axes[3].legend()
    save_figure(fig, path)
