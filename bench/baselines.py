"""ASP against the proxy-data literature's baselines, measured the same way, side by side.

    python bench/baselines.py --quick              # 2 CPU cores: about 45 minutes
    python bench/baselines.py --quick --part coreset,active,kcenters
    python bench/baselines.py --device cuda        # full mode, for a GPU

**Ranking** (``ranking``). A grid of 12 configurations of ResNet-8 on a CIFAR-10 subset (learning
rate x weight decay), each trained on full data and with every strategy at the same ratio r:
ASP (the default metric and selection, the dynamic schedule), ASP's per-epoch uniform subset
(``random``), and the static baselines: a fixed random subset, the easiest and hardest samples by
a proxy model's loss, half of the classes, fewer epochs on all data, and SVP core-sets (k-centers
and forgetting events). The proxy model is the target network trained for a quarter of the epochs,
once per seed and shared by every configuration (its seconds count once in each cell's cost). Per
seed, each strategy's scores are compared with the mean full-data score over the seeds: Kendall
tau, r^2, top-1 regret; mean +- std over seeds, and the difference to ``fixed_random`` (a uniform
subset of the same cost) paired by seed. Cost: seconds per run and the cell's total seconds
(with the proxy model) relative to full data.

**Core-set** (``coreset``). ``asp-tune coreset``'s workflow at fraction 0.5: forgetting events
(SVP) and a random half against full data; test accuracy and end-to-end seconds, per seed.

**Active learning** (``active``). Least confidence and k-centers against random labelling, from the
same initial pool per seed; the error of each round's model and the final target, the selection
seconds per round.

**k-centers cost** (``kcenters``). Seconds of greedy k-centers picking N/2 of N points (64-d
features) as N grows, on the chosen device.

Every run is an ordinary :class:`~asp_tune.trainer.Trainer` (no Ray: this measures the data
strategies, not the service), spread over ``--workers`` processes of one thread each. Results go
to bench/results/baselines[_quick].json and .md.
"""

from __future__ import annotations

import argparse
import itertools
import os
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from pathlib import Path
from typing import Any, Callable

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_cifar10, machine, mean_std, write_results  # noqa: E402

GRID = {"lr": (0.01, 0.04, 0.15, 0.5), "weight_decay": (5e-5, 5e-4, 5e-3)}
#: Strategy -> TrainConfig settings. ``asp`` is the product's default (metric loss, calibrated rule).
STRATEGIES: dict[str, dict[str, Any]] = {
    "asp": {"metric": "loss", "ratio_schedule": "dynamic"},
    "random": {"metric": "random", "class_balance": False, "reweight": False, "ratio_schedule": "dynamic"},
    "asp/constant": {"metric": "loss", "ratio_schedule": "constant"},
    "random/constant": {"metric": "random", "class_balance": False, "reweight": False, "ratio_schedule": "constant"},
    "asp/constant/no-full-first": {"metric": "loss", "ratio_schedule": "constant", "first_epoch_full": False},
    # what hpo now runs under early stopping (--metric auto): uniform, never-seen samples first, no full pass
    "random/constant/no-full-first": {"metric": "random", "class_balance": False, "reweight": False,
                                      "ratio_schedule": "constant", "first_epoch_full": False},
    "fixed_random": {"metric": "fixed_random"},
    "easiest": {"metric": "easiest"},
    "hardest": {"metric": "hardest"},
    "half_classes": {"metric": "half_classes"},
    "fewer_epochs": {"metric": "fewer_epochs"},
    "kcenters": {"metric": "kcenters", "class_balance": False},
    "forgetting": {"metric": "forgetting"},
}
REFERENCE = "fixed_random"


def _threads(n: int = 1) -> None:
    import torch

    torch.set_num_threads(n)


# ----------------------------------------------------------------------------------- tasks (workers)


def ranking_task(spec: dict[str, Any]) -> dict[str, Any]:
    """One configuration, one strategy, one seed: validation accuracy, seconds after set-up, proxy cost."""
    _threads()
    from asp_tune import TrainConfig
    from asp_tune.build import build_trainer

    trainer = build_trainer(TrainConfig.from_dict(spec["config"]))  # a static proxy's model is trained (or read) here
    start = time.perf_counter()
    trainer.validate_each_epoch = False
    while not trainer.done:
        trainer.train_epoch()
    acc, _ = trainer.evaluate("val")
    proxy = trainer.proxy_summary()
    return {**spec["key"], "val_accuracy": acc, "seconds": time.perf_counter() - start,
            "data_passes": trainer.samples_seen / trainer.selector.num_samples,
            "proxy_seconds": proxy.get("proxy_seconds", 0.0), "proxy_key": proxy.get("proxy_key", ""),
            "proxy_data_passes": proxy.get("proxy_data_passes", 0),
            "subset_selection_seconds": proxy.get("subset_selection_seconds", 0.0)}


def coreset_task(spec: dict[str, Any]) -> dict[str, Any]:
    _threads()
    from asp_tune import TrainConfig
    from asp_tune.svp import run_coreset
    from asp_tune.svp_settings import CoresetSettings

    config = TrainConfig.from_dict(spec["config"])
    settings = CoresetSettings(strategy=spec["strategy"], fraction=spec["fraction"], target_model=config.model,
                               baseline=spec["baseline"])
    s = run_coreset(config, settings)["summary"]
    rows = []
    for run, summary in s["runs"].items():
        rows.append({"seed": config.seed, "strategy": "full data" if run == "full" else spec["strategy"],
                     "test_accuracy": summary["final_test_accuracy"], "end_to_end_seconds": summary["end_to_end_seconds"],
                     "proxy_seconds": summary.get("proxy_seconds", 0.0),
                     "proxy_data_passes": summary.get("proxy_data_passes", 0),
                     "selection_seconds": summary.get("subset_selection_seconds", 0.0),
                     "train_seconds": summary["train_seconds"], "data_passes": summary["data_passes"]})
    return {"rows": rows}


def active_task(spec: dict[str, Any]) -> dict[str, Any]:
    _threads()
    import dataclasses

    from asp_tune import TrainConfig
    from asp_tune.svp import ActiveLearner, active_learning_config, load_data
    from asp_tune.svp_settings import ActiveLearningSettings

    config = TrainConfig.from_dict(spec["config"])
    settings = ActiveLearningSettings(strategy=spec["strategy"], rounds=spec["rounds"], budget=spec["budget"],
                                      initial=spec["initial"], target_model=config.model, baseline=False)
    config = active_learning_config(config, settings)  # the pool asp-tune active-learn has: the whole split
    learner = ActiveLearner(config, settings, load_data(config), seed=config.seed)
    results = [learner.step() for _ in range(settings.rounds)]
    rounds = [dataclasses.asdict(r) | {"seed": config.seed, "selection_seconds": r.selection_seconds} for r in results]
    return {"rounds": rounds, "final": learner.final_target() | {"seed": config.seed}}


def kcenters_cost(sizes: list[int], device: str, dim: int = 64) -> list[dict[str, Any]]:
    import torch

    from asp_tune.device import synchronize
    from asp_tune.static_proxies import greedy_k_centers

    _threads(os.cpu_count() or 1)
    out = []
    for n in sizes:
        features = torch.randn(n, dim, generator=torch.Generator().manual_seed(n)).to(device)
        generator = torch.Generator(device=device).manual_seed(0)
        greedy_k_centers(features, min(n // 2, 64), generator=generator)  # warm-up
        synchronize(torch.device(device))
        times = []
        for _ in range(3):  # the median of three: one slow repeat (another process woke) does not count
            start = time.perf_counter()
            greedy_k_centers(features, n // 2, generator=generator)
            synchronize(torch.device(device))
            times.append(time.perf_counter() - start)
        seconds = float(np.median(times))
        out.append({"n": n, "picks": n // 2, "dim": dim, "seconds": seconds, "repeats": times,
                    "ns_per_point_and_pick": 1e9 * seconds / (n * (n // 2))})
    return out


# ----------------------------------------------------------------------------------- analysis


def proxy_passes(row: dict[str, Any], epochs: int) -> float:
    """The data passes of the scoring model a run's strategy trained first (its epochs and one scoring pass): as
    recorded, or for a run recorded before they were, by the library's rule for its epochs."""
    if not row.get("proxy_key") and not row.get("proxy_seconds"):
        return 0.0
    if row.get("proxy_data_passes"):
        return float(row["proxy_data_passes"])
    from asp_tune.config import TrainConfig
    from asp_tune.proxy_scores import proxy_epochs

    metric = STRATEGIES.get(row["strategy"], {}).get("metric", row["strategy"])
    return float(proxy_epochs(TrainConfig(epochs=epochs, metric=metric, ratio=0.5)) + 1)


def ranking_table(rows: list[dict[str, Any]], seeds: list[int], num_configs: int, epochs: int) -> list[dict[str, Any]]:
    from asp_tune.quality import proxy_quality, seed_spread

    def scores(strategy: str, ratio: float, seed: int, key: str = "val_accuracy") -> np.ndarray:
        found = {r["config"]: r[key] for r in rows
                 if r["strategy"] == strategy and r["ratio"] == ratio and r["seed"] == seed}
        return np.asarray([found.get(c, np.nan) for c in range(num_configs)])

    def cell_passes(strategy: str, ratio: float, seed: int) -> float:
        """Data passes per run, the cell's scoring model (trained once for all its runs) shared among them."""
        part = [r for r in rows if r["strategy"] == strategy and r["ratio"] == ratio and r["seed"] == seed]
        proxies = {r["proxy_key"]: proxy_passes(r, epochs) for r in part if r["proxy_key"]}
        return (sum(r["data_passes"] for r in part) + sum(proxies.values())) / len(part) if part else float("nan")

    def cell_seconds(strategy: str, ratio: float, seed: int) -> float:
        part = [r for r in rows if r["strategy"] == strategy and r["ratio"] == ratio and r["seed"] == seed]
        proxies = {r["proxy_key"]: r["proxy_seconds"] for r in part if r["proxy_key"]}
        return sum(r["seconds"] + r["subset_selection_seconds"] for r in part) + sum(proxies.values())

    def invocations(strategy: str, ratio: float, seed: int) -> set:
        """Which invocations of this script timed the cell's runs (None: not recorded)."""
        return {r.get("invocation") for r in rows if r["strategy"] == strategy and r["ratio"] == ratio
                and r["seed"] == seed}

    full = np.stack([scores("full data", 1.0, s) for s in seeds])
    reference = full.mean(axis=0)
    cells = sorted({(r["strategy"], r["ratio"]) for r in rows}, key=lambda c: (-c[1], list(STRATEGIES).index(c[0])
                                                                                if c[0] in STRATEGIES else -1))
    per_cell: dict[tuple[str, float], dict[str, list[float]]] = {}
    crossed: dict[tuple[str, float], list[bool]] = {}
    for strategy, ratio in cells:
        measures: dict[str, list[float]] = {k: [] for k in ("kendall_tau", "r2", "top1_regret", "relative_cost",
                                                             "data_passes", "seconds_per_run")}
        across: list[bool] = []  # per seed: the cell's seconds and full data's were timed in different invocations
        for i, seed in enumerate(seeds):
            if strategy == "full data":  # the noise ceiling: this seed against the mean of the others
                got, ref = full[i], np.delete(full, i, axis=0).mean(axis=0)
            else:
                got, ref = scores(strategy, ratio, seed), reference
            q = proxy_quality(got, ref, cell_seconds(strategy, ratio, seed), cell_seconds("full data", 1.0, seed))
            measures["kendall_tau"].append(q["kendall_tau"])
            measures["r2"].append(q["r2"])
            measures["top1_regret"].append(100 * q["top1_regret"])
            measures["relative_cost"].append(q["relative_cost"])
            across.append(invocations(strategy, ratio, seed) != invocations("full data", 1.0, seed))
            measures["data_passes"].append(cell_passes(strategy, ratio, seed))
            measures["seconds_per_run"].append(float(np.nanmean(scores(strategy, ratio, seed, "seconds"))))
        per_cell[(strategy, ratio)] = measures
        crossed[(strategy, ratio)] = across
    out = []
    for (strategy, ratio), m in per_cell.items():
        base = per_cell.get((REFERENCE, ratio))
        delta = [a - b for a, b in zip(m["kendall_tau"], base["kendall_tau"])] if base and strategy not in (
            REFERENCE, "full data") else []
        out.append({"strategy": strategy, "ratio": ratio, **{f"{k}_per_seed": v for k, v in m.items()},
                    **{f"{k}_mean": float(np.nanmean(v)) for k, v in m.items()},
                    **{f"{k}_std": seed_spread([x for x in v if x == x]) for k, v in m.items()},
                    "tau_minus_fixed_random": delta,
                    "relative_cost_across_invocations": crossed[(strategy, ratio)]})
    return out


def ranking_markdown(table: list[dict[str, Any]], setup: dict[str, Any]) -> list[str]:
    lines = [f"## Ranking {setup['num_configs']} configurations ({setup['model']}, {setup['data']}, "
             f"{setup['epochs']} epochs, seeds {setup['seeds']})", "",
             "Mean ± std over seeds against the mean full-data score; Δ tau is paired by seed against a fixed "
             "random subset of the same r. Relative cost: the cell's seconds (training and validation, subset "
             "choice, and a proxy model once per seed) over full data's; data passes / run include that proxy "
             "model's (its epochs and one scoring pass, shared by the cell's runs).", "",
             "| strategy | r | Kendall tau | Δ tau vs fixed_random | r² | top-1 regret (points) | relative cost | "
             "data passes / run |", "|---|---|---|---|---|---|---|---|"]
    marked = False
    for r in table:
        d = mean_std(r["tau_minus_fixed_random"], signed=True) if r["tau_minus_fixed_random"] else ""
        mark = "†" if any(r.get("relative_cost_across_invocations", [])) else ""
        marked = marked or bool(mark)
        lines.append(f"| {r['strategy']} | {r['ratio']} | {mean_std(r['kendall_tau_per_seed'])} | {d} | "
                     f"{mean_std(r['r2_per_seed'])} | {mean_std(r['top1_regret_per_seed'], 2)} | "
                     f"{r['relative_cost_mean']:.2f}{mark} | {r['data_passes_mean']:.2f} |")
    lines += ["", "`full data` row: each seed's full-data ranking and top-1 regret against the mean of the other seeds "
                  "(the noise ceiling of this reference)."]
    if marked:
        lines += ["", "† relative cost across invocations: this cell's seconds and full data's were timed by different "
                      "invocations of the script (`--reuse`; possibly another machine or day, see the invocations "
                      "below), so the ratio mixes their speeds and is not a side-by-side measurement."]
    return lines + [""]


def coreset_markdown(rows: list[dict[str, Any]], setup: dict[str, Any]) -> list[str]:
    lines = [f"## Core-set at fraction {setup['fraction']} ({setup['model']} target, proxy {setup['model']} for "
             f"{setup['proxy_epochs']} epochs, {setup['data']}, {setup['epochs']} epochs, seeds {setup['seeds']})", "",
             "| run | test accuracy | Δ vs full data (points) | end-to-end seconds | speed-up vs full | proxy s | "
             "selection s | data passes |", "|---|---|---|---|---|---|---|---|"]
    full = {r["seed"]: r for r in rows if r["strategy"] == "full data"}
    for strategy in dict.fromkeys(r["strategy"] for r in rows):
        part = [r for r in rows if r["strategy"] == strategy]
        delta = [100 * (r["test_accuracy"] - full[r["seed"]]["test_accuracy"]) for r in part]
        speed = [full[r["seed"]]["end_to_end_seconds"] / r["end_to_end_seconds"] for r in part]
        lines.append(f"| {strategy} | {mean_std([r['test_accuracy'] for r in part])} | {mean_std(delta)} | "
                     f"{np.mean([r['end_to_end_seconds'] for r in part]):.1f} | {mean_std(speed)} | "
                     f"{np.mean([r['proxy_seconds'] for r in part]):.1f} | "
                     f"{np.mean([r['selection_seconds'] for r in part]):.2f} | "
                     f"{np.mean([r['data_passes'] + proxy_passes(r, setup['epochs']) for r in part]):.2f} |")
    return lines + ["", "Data passes include the scoring model's (its epochs and one scoring pass).", ""]


def active_markdown(rounds: list[dict[str, Any]], finals: list[dict[str, Any]], setup: dict[str, Any]) -> list[str]:
    lines = [f"## Active learning ({setup['model']}, pool {setup['data']}, initial {setup['initial']}, budget "
             f"{setup['budget']} x {setup['rounds']} rounds, proxy epochs {setup['proxy_epochs']}, seeds "
             f"{setup['seeds']})", "",
             "| strategy | " + " | ".join(f"round {k} error (labelled)" for k in range(1, setup["rounds"] + 1))
             + " | final target error | Δ vs random (points) | selection s / round |",
             "|---|" + "---|" * (setup["rounds"] + 3)]
    random_final = {f["seed"]: f["target_test_error"] for f in finals if f["strategy"] == "random"}
    for strategy in dict.fromkeys(r["strategy"] for r in rounds):
        cells = []
        for k in range(1, setup["rounds"] + 1):
            part = [r for r in rounds if r["strategy"] == strategy and r["round"] == k]
            cells.append(f"{mean_std([r['model_test_error'] for r in part])} ({part[0]['labelled']})")
        fin = [f for f in finals if f["strategy"] == strategy]
        delta = [100 * (f["target_test_error"] - random_final[f["seed"]]) for f in fin] if strategy != "random" else []
        sel = np.mean([r["pick_seconds"] if strategy == "random" else r["train_seconds"] + r["scoring_seconds"]
                       + r["pick_seconds"] for r in rounds if r["strategy"] == strategy])  # as RoundResult says
        lines.append(f"| {strategy} | " + " | ".join(cells) + f" | {mean_std([f['target_test_error'] for f in fin])} | "
                     f"{mean_std(delta) if delta else ''} | {sel:.2f} |")
    return lines + [""]


def kcenters_markdown(rows: list[dict[str, Any]], device: str) -> list[str]:
    lines = [f"## Greedy k-centers cost ({device}, 64-d features, N/2 picks, median of 3)", "",
             "| N | picks | seconds | ns per point and pick |", "|---|---|---|---|"]
    lines += [f"| {r['n']} | {r['picks']} | {r['seconds']:.2f} | {r['ns_per_point_and_pick']:.2f} |" for r in rows]
    return lines + ["", "One pick is one distance update over all N points, so the cost grows as N x picks "
                        "(N²/2 here): constant ns per point and pick means it scales as designed.", ""]


# ----------------------------------------------------------------------------------- main


def run_pool(tasks: list[tuple[Callable, dict[str, Any]]], workers: int, desc: str) -> list[dict[str, Any]]:
    from tqdm.auto import tqdm

    with ProcessPoolExecutor(workers) as pool:
        futures = [pool.submit(fn, spec) for fn, spec in tasks]
        return [f.result() for f in tqdm(as_completed(futures), total=len(futures), desc=desc, file=sys.stderr)]


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU-sized (2 cores)")
    p.add_argument("--part", default="ranking,coreset,active,kcenters")
    p.add_argument("--data-dir", default=default_cifar10())
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--ratios", default="0.1,0.3")
    p.add_argument("--strategies", default=",".join(STRATEGIES))
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    p.add_argument("--device", default="cpu")
    p.add_argument("--reuse", default=None, metavar="JSON",
                   help="keep the ranking runs of an earlier results file of the same setup (full data and every "
                        "strategy it has) and run only the missing cells")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="write a results file's tables again from its runs as measured (today's statistics), "
                        "running nothing")
    p.add_argument("--name", default=None)
    p.add_argument("--out-dir", default=None)
    args = p.parse_args()
    if args.render:
        return render(Path(args.render))
    quick, parts = args.quick, set(args.part.split(","))
    seeds = [int(s) for s in args.seeds.split(",")]
    ratios = [float(r) for r in args.ratios.split(",")]
    strategies = [s for s in args.strategies.split(",") if s]
    for s in strategies:
        if s not in STRATEGIES:
            p.error(f"unknown strategy {s!r}; known: {', '.join(STRATEGIES)}")
    import tempfile

    # a fresh cache of our own: every proxy model is trained (and costed) in this run
    os.environ["ASP_TUNE_CACHE"] = tempfile.mkdtemp(prefix="asp-tune-bench-cache-")
    data = {"dataset": "cifar10", "data_dir": args.data_dir, "test_subset": 1000 if quick else None,
            "device": args.device, "batch_size": 128}
    epochs = 8 if quick else 30
    import json

    earlier = json.loads(Path(args.reuse).read_text()) if args.reuse else {}
    # every invocation's machine is kept: rows and parts say which invocation measured them
    runs_by = list(earlier.get("invocations", []))
    if earlier and not runs_by:  # a file written before invocations were recorded: its one machine is all we know
        runs_by = [{"id": 0, "machine": earlier.get("machine"), "command": None,
                    "note": "rows written before invocations were recorded"}]
    this = {"id": len(runs_by), "machine": machine(), "command": " ".join(sys.argv),
            "date": time.strftime("%Y-%m-%d")}
    # the parts not run this time are kept from the earlier file
    results: dict[str, Any] = {**earlier, "machine": this["machine"], "invocations": runs_by + [this],
                               "setup": {"quick": quick, "seeds": seeds}}
    start = time.perf_counter()
    if "ranking" in parts:
        base = {**data, "subset": 2500 if quick else 20000, "val_fraction": 0.2 if quick else 0.1, "model": "resnet8",
                "epochs": epochs}
        configs = [dict(zip(GRID, v)) for v in itertools.product(*GRID.values())]
        tasks = []
        reused: list[dict[str, Any]] = []
        if "ranking" in earlier:
            earlier_ranking = earlier["ranking"]
            if earlier_ranking["setup"]["grid"] != {k: list(v) for k, v in GRID.items()} or \
                    earlier_ranking["setup"]["epochs"] != epochs:
                p.error(f"{args.reuse} holds runs of another setup")
            reused = [{"invocation": 0, **r} for r in earlier_ranking["runs"] if r["seed"] in seeds]
        have = {(r["strategy"], r["ratio"], r["config"], r["seed"]) for r in reused}
        for seed, (c, cfg) in itertools.product(seeds, enumerate(configs)):
            if ("full data", 1.0, c, seed) not in have:
                tasks.append((ranking_task, {"key": {"strategy": "full data", "ratio": 1.0, "config": c,
                                                     "seed": seed}, "config": {**base, **cfg, "seed": seed}}))
            for name, ratio in itertools.product(strategies, ratios):
                if (name, ratio, c, seed) not in have:
                    tasks.append((ranking_task, {"key": {"strategy": name, "ratio": ratio, "config": c, "seed": seed},
                                                 "config": {**base, **cfg, "seed": seed, "ratio": ratio,
                                                            **STRATEGIES[name]}}))
        tasks.sort(key=lambda t: -t[1]["config"].get("ratio", 1.0))  # the longest first
        rows = reused + [{**r, "invocation": this["id"]} for r in run_pool(tasks, args.workers, "ranking runs")]
        setup = {"model": "ResNet-8", "data": f"CIFAR-10 subset of {base['subset']} ({1 - base['val_fraction']:.0%} "
                                             "train)", "epochs": epochs, "seeds": seeds, "num_configs": len(configs),
                 "grid": {k: list(v) for k, v in GRID.items()}, "ratios": ratios, "strategies": STRATEGIES}
        table = ranking_table(rows, seeds, len(configs), epochs)
        results["ranking"] = {"setup": setup, "table": table, "runs": rows}
        print("\n".join(ranking_markdown(table, setup)))
    if "coreset" in parts:
        from asp_tune.config import TrainConfig
        from asp_tune.proxy_scores import proxy_epochs

        base = {**data, "subset": 5000 if quick else None, "model": "resnet8", "epochs": epochs,
                "proxy_epochs": proxy_epochs(TrainConfig(epochs=epochs, metric="forgetting", ratio=0.5))}
        tasks = [(coreset_task, {"config": {**base, "seed": seed}, "strategy": strategy, "fraction": 0.5,
                                 "baseline": strategy == "forgetting"})
                 for seed in seeds for strategy in ("forgetting", "fixed_random")]
        rows = [row for result in run_pool(tasks, args.workers, "core-set runs") for row in result["rows"]]
        setup = {"model": "ResNet-8", "data": f"CIFAR-10 subset of {base['subset'] or 'all'}", "epochs": epochs,
                 "proxy_epochs": base["proxy_epochs"], "fraction": 0.5, "seeds": seeds}
        rows.sort(key=lambda r: ["full data", "forgetting", "fixed_random"].index(r["strategy"]))
        results["coreset"] = {"setup": setup, "runs": rows, "invocation": this["id"]}
        print("\n".join(coreset_markdown(rows, setup)))
    if "active" in parts:
        base = {**data, "subset": 5000 if quick else None, "model": "resnet8", "epochs": epochs,
                "proxy_epochs": epochs // 2}
        sizes = {"initial": 500, "budget": 500, "rounds": 3} if quick else {"initial": 5000, "budget": 5000, "rounds": 4}
        tasks = [(active_task, {"config": {**base, "seed": seed}, "strategy": strategy, **sizes})
                 for seed in seeds for strategy in ("least_confidence", "kcenters", "random")]
        done = run_pool(tasks, args.workers, "active-learning runs")
        rounds = sorted((r for d in done for r in d["rounds"]), key=lambda r: (r["strategy"], r["seed"], r["round"]))
        finals = [d["final"] for d in done]
        setup = {"model": "ResNet-8", "data": f"CIFAR-10 subset of {base['subset'] or 'all'}", "epochs": epochs,
                 "proxy_epochs": base["proxy_epochs"], "seeds": seeds, **sizes}
        results["active"] = {"setup": setup, "rounds": rounds, "finals": finals, "invocation": this["id"]}
        print("\n".join(active_markdown(rounds, finals, setup)))
    if "kcenters" in parts:
        sizes = [1000, 2000, 5000, 10000, 20000] if quick else [5000, 10000, 20000, 45000]
        import multiprocessing

        # in a fresh process: after the pools above the parent timed it up to 15x slower than alone
        with ProcessPoolExecutor(1, mp_context=multiprocessing.get_context("spawn")) as pool:
            rows = pool.submit(kcenters_cost, sizes, args.device).result()
        results["kcenters"] = rows
        results["kcenters_device"] = args.device
        results["kcenters_invocation"] = this["id"]
        print("\n".join(kcenters_markdown(rows, args.device)))
    results["setup"]["wall_seconds"] = time.perf_counter() - start
    name = args.name or ("baselines_quick" if quick else "baselines")
    path = write_results(name, results, args.out_dir)
    kept = f" (parts and cells kept from {args.reuse} are not in it)" if args.reuse else ""
    write_markdown(results, path, kept)
    print(f"-> {path}")
    return 0


def write_markdown(results: dict[str, Any], path: Path, note: str = "") -> None:
    """``path`` with the suffix .md: every part's table of ``results``."""
    md = [f"# ASP against static and SVP baselines ({'quick' if results['setup']['quick'] else 'full'} mode)", ""]
    if "ranking" in results:
        md += ranking_markdown(results["ranking"]["table"], results["ranking"]["setup"])
    if "coreset" in results:
        md += coreset_markdown(results["coreset"]["runs"], results["coreset"]["setup"])
    if "active" in results:
        md += active_markdown(results["active"]["rounds"], results["active"]["finals"], results["active"]["setup"])
    if "kcenters" in results:
        md += kcenters_markdown(results["kcenters"], results.get("kcenters_device", "cpu"))
    runs_by = results.get("invocations") or [{"id": 0, "machine": results["machine"]}]
    md += [f"Wall time of the last invocation: {results['setup']['wall_seconds']:.0f} s{note}.", "",
           "Invocations that measured these rows (a row or part names its `invocation` in the JSON):", ""]
    md += [f"- {i['id']}: {i.get('date') or 'date not recorded'}, {i.get('command') or 'command not recorded'}, "
           f"on {i['machine']}" + (f" ({i['note']})" if i.get("note") else "") for i in runs_by]
    path.with_suffix(".md").write_text("\n".join(md) + "\n")


def render(path: Path) -> int:
    """``--render``: the ranking table computed again from the file's runs, and every table written again."""
    import json

    results = json.loads(path.read_text())
    if "ranking" in results:
        ranking = results["ranking"]
        setup = ranking["setup"]
        ranking["table"] = ranking_table(ranking["runs"], setup["seeds"], setup["num_configs"], setup["epochs"])
    write_results(path.stem, results, path.parent)
    write_markdown(results, path, "; its tables written again from its runs by --render")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
