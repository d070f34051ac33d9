"""Does importance selection rank candidates better than a random subset of the same size?

    python bench/proxy_quality.py --quick          # 2 CPU cores, ~40 min: HPO and NAS parts
    python bench/proxy_quality.py --quick --part hpo
    python bench/proxy_quality.py --device cuda     # full mode, for a GPU

**HPO part.** A grid of 12 configurations of ResNet-8 on a CIFAR-10 subset (learning rate x weight
decay: well-separated and close configurations). Every configuration is trained on full data and,
for every strategy, at r = 0.1 and 0.3 (the paper's dynamic ratio schedule), each with 3 seeds.
The reference is each configuration's full-data validation accuracy averaged over the seeds.
Per seed, a strategy's Kendall tau and Spearman rho against the reference and its top-1 regret
(the reference accuracy lost by taking the strategy's best configuration) are computed; the
table shows mean +- std over seeds and the difference to ``random`` paired by seed. The full-data
runs' own seed-to-seed tau (each seed against the mean of the others) is the noise ceiling.

**NAS part.** SPOS on NAS-Bench-201 with one fixed candidate set (no evolution) for every variant,
at equal data passes: full data for E epochs against r = 0.5 for 2E epochs (random half, and
importance variants), scored on the same held-out images; Kendall tau against the ground truth and
the ground-truth accuracy of the best-scored candidate, mean +- std over seeds.

Every run is an ordinary :class:`~asp_tune.trainer.Trainer` (no Ray: this measures ranking quality,
not the service), spread over ``--workers`` processes of one thread each. Results go to
bench/results/proxy_quality[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, default_cifar10, machine, mean_std, shared_data_dir, spread, write_results  # noqa: E402

#: Strategy name -> TrainConfig settings (the metric and how values become a subset).
STRATEGIES: dict[str, dict[str, Any]] = {
    "random": {"metric": "random", "class_balance": False, "reweight": False},  # a plain uniform subset
    "mixture/zscore": {"metric": "mixture", "selection_rule": "zscore"},
    "mixture/paper": {"metric": "mixture", "selection_rule": "paper"},
    "mixture/calibrated": {"metric": "mixture", "selection_rule": "calibrated", "top10_mass": 0.3,
                           "uniform_floor": 0.1, "class_balance": True},
    "mixture/calibrated+reweight": {"metric": "mixture", "selection_rule": "calibrated", "top10_mass": 0.3,
                                    "uniform_floor": 0.1, "class_balance": True, "reweight": True},
    "gradient/calibrated+reweight": {"metric": "gradient", "selection_rule": "calibrated", "top10_mass": 0.3,
                                     "uniform_floor": 0.1, "class_balance": True, "reweight": True},
    # gentler: less mass on the top 10% and a larger uniform floor
    "gradient/gentle+reweight": {"metric": "gradient", "selection_rule": "calibrated", "top10_mass": 0.2,
                                 "uniform_floor": 0.3, "class_balance": True, "reweight": True},
    "loss/gentle+reweight": {"metric": "loss", "selection_rule": "calibrated", "top10_mass": 0.2,
                             "uniform_floor": 0.3, "class_balance": True, "reweight": True},
    "loss/gentle": {"metric": "loss", "selection_rule": "calibrated", "top10_mass": 0.2, "uniform_floor": 0.3,
                    "class_balance": True, "reweight": False},  # the default without reweighting
    "mixture/gentle+reweight": {"metric": "mixture", "selection_rule": "calibrated", "top10_mass": 0.2,
                                "uniform_floor": 0.3, "class_balance": True, "reweight": True},
}
#: Not at a ratio: InfoBatch's cost is set by its prune probability.
EXTRA = {"infobatch": {"metric": "infobatch", "ratio": 1.0}}

GRID = {"lr": (0.01, 0.04, 0.15, 0.5), "weight_decay": (5e-5, 5e-4, 5e-3)}

NAS_VARIANTS: dict[str, dict[str, Any]] = {
    "full data": {"ratio": 1.0, "metric": "none"},
    "random half": {"ratio": 0.5, "metric": "random"},
    "mixture/zscore half": {"ratio": 0.5, "metric": "mixture", "selection_rule": "zscore"},
    "mixture/calibrated half": {"ratio": 0.5, "metric": "mixture", "selection_rule": "calibrated",
                                "top10_mass": 0.3, "uniform_floor": 0.1, "class_balance": True, "reweight": True},
    "loss/gentle half": {"ratio": 0.5, "metric": "loss", "selection_rule": "calibrated", "top10_mass": 0.2,
                         "uniform_floor": 0.3, "class_balance": True, "reweight": True},
}


# ----------------------------------------------------------------------------------- tasks (workers)


def _threads() -> None:
    import torch

    torch.set_num_threads(1)


def hpo_task(spec: dict[str, Any]) -> dict[str, Any]:
    """Train one configuration with one strategy and seed; return its validation accuracy and cost."""
    _threads()
    from asp_tune import TrainConfig, Trainer

    start = time.perf_counter()
    trainer = Trainer(TrainConfig.from_dict(spec["config"]))
    trainer.validate_each_epoch = False
    while not trainer.done:
        trainer.train_epoch()
    acc, _ = trainer.evaluate("val")
    return {**spec["key"], "val_accuracy": acc, "data_passes": trainer.samples_seen / trainer.selector.num_samples,
            "seconds": time.perf_counter() - start}


def nas_task(spec: dict[str, Any]) -> dict[str, Any]:
    """One SPOS supernet trained with one variant and seed, scored on the fixed candidate set."""
    _threads()
    from asp_tune import TrainConfig
    from nas.nb201 import Arch, GroundTruth
    from nas.search import supernet_trainer
    from nas.settings import NasSettings

    start = time.perf_counter()
    settings = NasSettings(space="nb201", searcher="spos", train=TrainConfig.from_dict(spec["config"]),
                           channels=spec["channels"], cells=spec["cells"], monitor=False).validate()
    trainer = supernet_trainer(settings)
    trainer.validate_each_epoch = False
    while not trainer.done:
        trainer.train_epoch()
    train_s = time.perf_counter() - start
    archs = [Arch.parse(a) for a in spec["candidates"]]
    scores = [trainer.score(a) for a in archs]
    table = GroundTruth.load(spec["table"])
    truth = [table.accuracy(a, "cifar10") for a in archs]
    from asp_tune.ranking import rank_correlation

    corr = rank_correlation(scores, truth)
    best = int(np.argmax(scores))
    return {**spec["key"], "kendall_tau": corr["kendall_tau"], "spearman": corr["spearman"],
            "found_accuracy": truth[best], "found_arch": str(archs[best]),
            "data_passes": trainer.samples_seen / trainer.selector.num_samples, "train_seconds": train_s,
            "seconds": time.perf_counter() - start}


# ----------------------------------------------------------------------------------- analysis


def kendall(a, b) -> float:
    from asp_tune.ranking import rank_correlation

    return rank_correlation(a, b)["kendall_tau"]


def hpo_table(rows: list[dict[str, Any]], seeds: list[int], num_configs: int) -> list[dict[str, Any]]:
    from asp_tune.ranking import rank_correlation

    def scores(strategy: str, ratio: float, seed: int) -> np.ndarray:
        found = {r["config"]: r["val_accuracy"] for r in rows
                 if r["strategy"] == strategy and r["ratio"] == ratio and r["seed"] == seed}
        return np.asarray([found.get(c, np.nan) for c in range(num_configs)])

    full = np.stack([scores("full data", 1.0, s) for s in seeds])
    reference = full.mean(axis=0)
    cells = sorted({(r["strategy"], r["ratio"]) for r in rows}, key=lambda c: (-c[1], c[0]))
    per_cell: dict[tuple[str, float], dict[str, list[float]]] = {}
    for strategy, ratio in cells:
        taus, rhos, regrets, passes, secs = [], [], [], [], []
        for i, seed in enumerate(seeds):
            if strategy == "full data":  # noise ceiling: this seed against the mean of the others, for tau
                ref = np.delete(full, i, axis=0).mean(axis=0)  # and for regret (leave-one-out, as baselines.py)
                got = full[i]
            else:
                ref, got = reference, scores(strategy, ratio, seed)
            corr = rank_correlation(got, ref)
            taus.append(corr["kendall_tau"])
            rhos.append(corr["spearman"])
            regrets.append(100 * (float(np.nanmax(ref)) - ref[int(np.nanargmax(got))]))
            cell_rows = [r for r in rows if r["strategy"] == strategy and r["ratio"] == ratio and r["seed"] == seed]
            passes.append(float(np.mean([r["data_passes"] for r in cell_rows])))
            secs.append(float(np.mean([r["seconds"] for r in cell_rows])))
        per_cell[(strategy, ratio)] = {"tau": taus, "rho": rhos, "regret": regrets, "passes": passes, "secs": secs}
    out = []
    for (strategy, ratio), v in per_cell.items():
        base = per_cell.get(("random", ratio))
        d_tau = [a - b for a, b in zip(v["tau"], base["tau"])] if base and strategy != "random" else []
        d_regret = [a - b for a, b in zip(v["regret"], base["regret"])] if base and strategy != "random" else []
        out.append({"strategy": strategy, "ratio": ratio,
                    **{f"{k}_mean": float(np.mean(x)) for k, x in v.items()},
                    **{f"{k}_std": spread(x) for k, x in v.items()},
                    **{f"{k}_per_seed": x for k, x in v.items()},
                    "tau_minus_random_per_seed": d_tau, "regret_minus_random_per_seed": d_regret,
                    "tau_minus_random_mean": float(np.mean(d_tau)) if d_tau else None,
                    "tau_minus_random_std": spread(d_tau) if d_tau else None,
                    "regret_minus_random_mean": float(np.mean(d_regret)) if d_regret else None})
    return out


def nas_table(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    random_tau = {r["seed"]: r["kendall_tau"] for r in rows if r["variant"] == "random half"}
    for variant in NAS_VARIANTS:
        part = [r for r in rows if r["variant"] == variant]
        if not part:
            continue
        d = [r["kendall_tau"] - random_tau[r["seed"]] for r in part if r["seed"] in random_tau]
        out.append({"variant": variant, "n": len(part),
                    **{f"{k}_mean": float(np.mean([r[k] for r in part])) for k in
                       ("kendall_tau", "found_accuracy", "data_passes", "seconds")},
                    **{f"{k}_std": spread([r[k] for r in part]) for k in
                       ("kendall_tau", "found_accuracy", "data_passes", "seconds")},
                    **{f"{k}_per_seed": [r[k] for r in part] for k in ("kendall_tau", "found_accuracy")},
                    "tau_minus_random_per_seed": d if variant != "random half" else [],
                    "tau_minus_random_mean": float(np.mean(d)) if variant != "random half" else None})
    return out


def markdown(hpo: list[dict[str, Any]], nas: list[dict[str, Any]], setup: dict[str, Any]) -> str:
    lines = [f"# Proxy quality ({'quick' if setup['quick'] else 'full'} mode)", ""]
    if hpo:
        lines += [f"HPO: {setup['hpo']['num_configs']} configurations of {setup['hpo']['model']} on "
                  f"{setup['hpo']['data']}, {setup['hpo']['epochs']} epochs, seeds {setup['seeds']}, "
                  f"{setup['hpo']['ratio_schedule']} ratio schedule, first epoch on all data: "
                  f"{setup.get('first_epoch_full', True)}. Mean +- std over seeds; "
                  "Δ vs random is paired by seed.", "",
                  "| strategy | r | Kendall tau | Δ tau vs random | Spearman | top-1 regret (points) | "
                  "data passes / run | seconds / run |", "|---|---|---|---|---|---|---|---|"]
        for r in hpo:
            d = "" if r["tau_minus_random_mean"] is None else mean_std(r["tau_minus_random_per_seed"], signed=True)
            lines.append(f"| {r['strategy']} | {r['ratio']} | {mean_std(r['tau_per_seed'])} | {d} | "
                         f"{mean_std(r['rho_per_seed'])} | {mean_std(r['regret_per_seed'], 2)} | "
                         f"{r['passes_mean']:.2f} | {r['secs_mean']:.1f} |")
        lines += ["", "`full data` row: each seed's full-data ranking and top-1 regret against the mean of the other "
                  "seeds (leave-one-out: the noise ceiling of this reference). ± is the sample std over seeds "
                  "(ddof 1).", ""]
    if nas:
        lines += [f"NAS: SPOS on NAS-Bench-201, {setup['nas']['data']}, C={setup['nas']['channels']} "
                  f"N={setup['nas']['cells']}, {setup['nas']['num_candidates']} fixed candidates, full data "
                  f"{setup['nas']['epochs']} epochs vs r = 0.5 for {2 * setup['nas']['epochs']} epochs "
                  f"(equal data passes), seeds {setup['seeds']}.", "",
                  "| variant | Kendall tau | Δ tau vs random half | found arch (CIFAR-10 test %) | data passes | "
                  "seconds |", "|---|---|---|---|---|---|"]
        for r in nas:
            d = "" if r["tau_minus_random_mean"] is None else mean_std(r["tau_minus_random_per_seed"], signed=True)
            lines.append(f"| {r['variant']} | {mean_std(r['kendall_tau_per_seed'])} | {d} | "
                         f"{mean_std(r['found_accuracy_per_seed'], 2)} | "
                         f"{r['data_passes_mean']:.2f} | {r['seconds_mean']:.0f} |")
    return "\n".join(lines) + "\n"


# ----------------------------------------------------------------------------------- main


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU-sized: ~40 minutes on 2 cores")
    p.add_argument("--part", choices=["hpo", "nas", "both"], default="both")
    p.add_argument("--data-dir", default=default_cifar10())
    p.add_argument("--table", default=str(shared_data_dir() / "nb201" / "nb201_test_accuracy.csv"))
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--strategies", default=",".join(list(STRATEGIES) + list(EXTRA)))
    p.add_argument("--ratios", default="0.1,0.3")
    p.add_argument("--nas-variants", default=",".join(NAS_VARIANTS))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reuse-full", default=None, metavar="JSON",
                   help="take the full-data HPO runs from an earlier results file of the same setup")
    p.add_argument("--first-epoch-full", choices=["true", "false"], default="true",
                   help="false: the proxy runs start at r, never-seen samples first (the HPO default under "
                        "early stopping)")
    p.add_argument("--name", default=None, help="results file name (default from the mode and part)")
    p.add_argument("--out-dir", default=None)
    p.add_argument("--render", default=None, metavar="JSON",
                   help="write a results file's tables (its .json summaries and .md) again from the runs it holds, "
                        "with today's statistics, running nothing")
    args = p.parse_args()
    if args.render:
        return render(Path(args.render))
    quick = args.quick
    seeds = [int(s) for s in args.seeds.split(",")]
    ratios = [float(r) for r in args.ratios.split(",")]
    strategies = [s for s in args.strategies.split(",") if s]
    for s in strategies:
        if s not in STRATEGIES and s not in EXTRA:
            p.error(f"unknown strategy {s!r}; known: {', '.join(list(STRATEGIES) + list(EXTRA))}")
    hpo_base = {"dataset": "cifar10", "data_dir": args.data_dir, "subset": 2500 if quick else 20000,
                "val_fraction": 0.2 if quick else 0.1, "test_subset": 100, "model": "resnet8",
                "epochs": 8 if quick else 30, "batch_size": 128, "ratio_schedule": "dynamic", "device": args.device}
    configs = [dict(zip(GRID, values)) for values in itertools.product(*GRID.values())]
    nas_epochs = 30 if quick else 50
    nas_base = {"dataset": "cifar10", "data_dir": args.data_dir, "subset": 3000 if quick else 0,
                "val_fraction": 1 / 6 if quick else 0.1, "test_subset": 100, "epochs": nas_epochs,
                "batch_size": 64, "lr": 0.025, "lr_min": 0.001, "weight_decay": 3e-4, "first_epoch_full": False,
                "device": args.device}
    channels, cells = (8, 1) if quick else (16, 5)
    import random

    from nas.nb201 import random_arch

    rng = random.Random(0)
    candidates: list[str] = []
    while len(candidates) < (100 if quick else 200):
        a = str(random_arch(rng))
        if a not in candidates:
            candidates.append(a)

    tasks: list[tuple[Any, dict[str, Any]]] = []
    reused: list[dict[str, Any]] = []
    if args.reuse_full:
        earlier = json.loads(Path(args.reuse_full).read_text())
        reused = [r for r in earlier["hpo_runs"] if r["strategy"] == "full data" and r["seed"] in seeds]
        if earlier["setup"]["hpo"]["grid"] != {k: list(v) for k, v in GRID.items()} or \
                len(reused) != len(seeds) * len(configs):
            p.error(f"{args.reuse_full} has other full-data runs than this setup")
    hpo_base["first_epoch_full"] = args.first_epoch_full == "true"
    if args.part in ("hpo", "both"):
        for seed, (c, cfg) in itertools.product(seeds, enumerate(configs)):
            if not reused:
                tasks.append((hpo_task, {"key": {"strategy": "full data", "ratio": 1.0, "config": c, "seed": seed},
                                         "config": {**hpo_base, **cfg, "ratio": 1.0, "metric": "none", "seed": seed,
                                                    "ratio_schedule": "constant"}}))
            for name in strategies:
                for ratio in ([1.0] if name in EXTRA else ratios):
                    overrides = {**STRATEGIES.get(name, {}), **EXTRA.get(name, {})}
                    tasks.append((hpo_task, {"key": {"strategy": name, "ratio": ratio, "config": c, "seed": seed},
                                             "config": {**hpo_base, **cfg, "ratio": ratio, "seed": seed,
                                                        **overrides}}))
    if args.part in ("nas", "both"):
        chosen = [v for v in args.nas_variants.split(",") if v]
        for v in chosen:
            if v not in NAS_VARIANTS:
                p.error(f"unknown NAS variant {v!r}; known: {', '.join(NAS_VARIANTS)}")
        for seed, name in itertools.product(seeds, chosen):
            variant = NAS_VARIANTS[name]
            epochs = nas_epochs if variant["ratio"] == 1.0 else 2 * nas_epochs
            tasks.append((nas_task, {"key": {"variant": name, "seed": seed}, "channels": channels, "cells": cells,
                                     "candidates": candidates, "table": args.table,
                                     "config": {**nas_base, **variant, "epochs": epochs, "seed": seed}}))
    # the longest first, so the pool ends together
    tasks.sort(key=lambda t: (t[0] is not nas_task, -t[1]["config"].get("ratio", 1.0)))
    print(f"{len(tasks)} runs on {args.workers} workers", file=sys.stderr)
    from tqdm.auto import tqdm

    hpo_rows, nas_rows = list(reused), []
    start = time.perf_counter()
    with ProcessPoolExecutor(args.workers) as pool:
        futures = {pool.submit(fn, spec): fn for fn, spec in tasks}
        for future in tqdm(as_completed(futures), total=len(futures), desc="runs", file=sys.stderr):
            (nas_rows if futures[future] is nas_task else hpo_rows).append(future.result())
    wall = time.perf_counter() - start
    setup = {"quick": quick, "seeds": seeds, "wall_seconds": wall, "first_epoch_full": hpo_base["first_epoch_full"],
             "full_data_runs_from": args.reuse_full,
             "hpo": {"data": f"CIFAR-10 subset of {hpo_base['subset']} ({1 - hpo_base['val_fraction']:.0%} train)",
                     "model": "ResNet-8", "epochs": hpo_base["epochs"], "num_configs": len(configs), "grid": GRID,
                     "ratio_schedule": "dynamic", "strategies": {s: {**STRATEGIES.get(s, {}), **EXTRA.get(s, {})}
                                                                 for s in strategies}, "ratios": ratios},
             "nas": {"data": f"CIFAR-10 subset of {nas_base['subset'] or 50000}", "channels": channels,
                     "cells": cells, "epochs": nas_epochs, "num_candidates": len(candidates),
                     "variants": NAS_VARIANTS}}
    hpo = hpo_table(hpo_rows, seeds, len(configs)) if hpo_rows else []
    nas = nas_table(nas_rows) if nas_rows else []
    text = markdown(hpo, nas, setup)
    print(text)
    name = args.name or "proxy_quality" + ("_quick" if quick else "") + ("" if args.part == "both" else f"_{args.part}")
    path = write_results(name, {"setup": setup, "machine": machine(), "hpo": hpo, "nas": nas,
                                "hpo_runs": hpo_rows, "nas_runs": nas_rows}, args.out_dir)
    path.with_suffix(".md").write_text(text)
    print(f"-> {path.relative_to(REPO) if path.is_relative_to(REPO) else path}  ({wall / 60:.1f} min)")
    return 0


def render(path: Path) -> int:
    """``--render``: the HPO and NAS tables computed again from the file's per-run rows and written back."""
    results = json.loads(path.read_text())
    setup = results["setup"]
    hpo_rows, nas_rows = results.get("hpo_runs", []), results.get("nas_runs", [])
    results["hpo"] = hpo_table(hpo_rows, setup["seeds"], setup["hpo"]["num_configs"]) if hpo_rows else []
    results["nas"] = nas_table(nas_rows) if nas_rows else []
    results["rendered_by"] = " ".join(sys.argv)
    text = markdown(results["hpo"], results["nas"], setup)
    path.write_text(json.dumps(results, indent=2) + "\n")
    path.with_suffix(".md").write_text(text)
    print(text)
    print(f"-> {path} (tables written again from its runs)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
