"""Anytime quality against wall time: Hyper-Tune, ASHA, BOHB and random search on full data and on proxy
fidelities, each search given the same wall time.

    python bench/hypertune.py --quick                  # 2 spaces x 3 seeds x 9 searches, 2 CPU cores (~35 min)
    python bench/hypertune.py --budget-s 300 --seeds 5 # longer searches (a GPU: --device cuda --gpus-per-trial 0.25)

Both spaces are finite grids on scikit-learn's digits (an MLP, 9 epochs, rungs 1, 3, 9), so the quality
of any configuration is known: each grid point is trained once per truth seed on all data and its test
accuracy averaged first. ``digits``: learning rate, momentum and weight decay of SGD. ``misrank``: SGD
or Adam at six learning rates, where the low fidelity is known to misrank (Adam at a large learning rate
is among the worst after 1 and 3 epochs and among the best after 9).

Every search runs until its wall-time budget (the same for all: a proxy search is given ``budget / r``
nominal seconds, which asp_tune rescales by r). At each moment the search's incumbent is the
configuration with the best validation accuracy among the reports at the highest epoch reached so far;
the table gives that incumbent's full-data test accuracy at a third, two thirds and all of the budget
(mean +- std over seeds, paired by seed), with the agreement the search measured between its rungs,
whether it warned, and Hyper-Tune's final bracket probabilities.
"""

from __future__ import annotations

import argparse
import dataclasses
import itertools
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, machine, mean_std, spread, write_results  # noqa: E402

from asp_tune.build import build_trainer  # noqa: E402
from asp_tune.tune.builtin import run_hpo  # noqa: E402
from asp_tune.tune.collect import proxy_trust  # noqa: E402
from asp_tune.tune.session import ensure_ray  # noqa: E402
from asp_tune.tune.settings import HpoSettings  # noqa: E402
from asp_tune.tune.space import parse_space  # noqa: E402

EPOCHS = 9
FIXED = {"dataset": "digits", "model": "mlp", "epochs": EPOCHS, "batch_size": 64}
SPACES = {
    "digits": {"lr": [0.003, 0.01, 0.03, 0.1, 0.3, 1.0], "momentum": [0.0, 0.9], "weight_decay": [1e-5, 1e-3]},
    "misrank": {"optimizer": ["sgd", "adam"], "lr": [0.001, 0.003, 0.01, 0.03, 0.1, 0.3],
                "weight_decay": [1e-5, 1e-3]},
}
#: (label, algo, ratio, rung ratios); ratio 1.0 is full data (metric none).
VARIANTS = [("random", "random", 1.0, None), ("asha", "asha", 1.0, None), ("bohb", "bohb", 1.0, None),
            ("hypertune", "hypertune", 1.0, None),
            ("random r=0.3", "random", 0.3, None), ("asha r=0.3", "asha", 0.3, None),
            ("bohb r=0.3", "bohb", 0.3, None), ("hypertune r=0.3", "hypertune", 0.3, None),
            ("hypertune rungs 0.3,0.6,1", "hypertune", 0.3, "0.3,0.6,1")]


def space_of(name: str):
    params = {k: {"type": "choice", "values": v} for k, v in SPACES[name].items()}
    return parse_space({"name": f"bench-{name}", "fixed": FIXED, "params": params})


def grid(name: str) -> list[dict]:
    keys = list(SPACES[name])
    return [dict(zip(keys, values)) for values in itertools.product(*(SPACES[name][k] for k in keys))]


def key(config: dict) -> tuple:
    return tuple(sorted((k, float(v) if isinstance(v, (int, float)) else v) for k, v in config.items()))


def truth(name: str, seeds: int) -> dict[tuple, float]:
    """Full-data test accuracy of every grid point, averaged over ``seeds`` trainings."""
    import torch

    torch.set_num_threads(1)
    space, out = space_of(name), {}
    for config in grid(name):
        accs = [build_trainer(space.train_config(config, ratio=1.0, metric="none", ratio_schedule="constant",
                                                 seed=seed, device="cpu")).fit()["final_test_accuracy"]
                for seed in range(seeds)]
        out[key(config)] = float(np.mean(accs))
    return out


def incumbent_curve(result, names: list[str], started: float, times: np.ndarray, quality: dict) -> list[float]:
    """The full-data test accuracy of the search's incumbent at each of ``times`` (seconds from its start)."""
    configs = {row["trial_id"]: {n: row[f"config/{n}"] for n in names} for _, row in result.trials.iterrows()}
    rows = [(float(r["reported_at"]) - started, int(r["epoch"]), float(r["val_accuracy"]), trial)
            for trial, hist in result.histories.items() if "reported_at" in hist
            for _, r in hist.dropna(subset=["val_accuracy"]).iterrows()]
    rows.sort()
    curve, seen = [], []
    for t in times:
        seen = [r for r in rows if r[0] <= t]
        if not seen:
            curve.append(float("nan"))
            continue
        top = max(r[1] for r in seen)
        best = max((r for r in seen if r[1] == top), key=lambda r: r[2])
        curve.append(quality[key(configs[best[3]])])
    return curve


def run_one(name: str, variant: tuple, seed: int, budget_s: float, max_concurrent: int, storage: str,
            quality: dict, times: np.ndarray) -> dict:
    label, algo, ratio, rungs = variant
    settings = HpoSettings(space=space_of(name), algo=algo, ratio=ratio, metric="none" if ratio == 1.0 else "auto",
                           rung_ratios=rungs, num_samples=500, max_concurrent=max_concurrent, seed=seed,
                           device="cpu", verbose=0, storage_path=storage).validate()
    settings = dataclasses.replace(settings, time_budget_s=budget_s / settings.data_scale())
    started = time.time()
    result = run_hpo(settings)
    wall = time.time() - started
    names = list(SPACES[name])
    timed = time.perf_counter()
    trust = proxy_trust(settings.rungs(), result.histories)
    trust_seconds = time.perf_counter() - timed
    curve = incumbent_curve(result, names, started, times, quality)
    s = result.summary
    ran = result.trials[result.trials["epochs"] > 0]
    busy = sum(s["trial_seconds"][k] for k in ("startup", "training", "validation"))
    return {"space": name, "variant": label, "seed": seed, "wall_s": wall, "curve": curve,
            "pick_test_accuracy": curve[-1], "num_trials": int(len(ran)), "data_passes": s["data_passes_total"],
            "full_runs": int((ran["epochs"] >= EPOCHS).sum()),
            "worker_use": busy / (wall * max_concurrent),  # share of the workers' time spent in trials
            "trial_seconds": s["trial_seconds"], "trust_seconds": trust_seconds,
            "trust": s["proxy_trust"], "warned": bool(trust is not None and trust.warning()),
            "hypertune": s.get("hypertune")}


def table(runs: pd.DataFrame, best: dict[str, float]) -> pd.DataFrame:
    rows = []
    for (space, variant), group in runs.groupby(["space", "variant"], sort=False):
        curves = np.array(group["curve"].tolist())
        thirds = [curves[:, int(round(f * (curves.shape[1] - 1)))] for f in (1 / 3, 2 / 3, 1.0)]
        taus = [p["kendall_tau"] for t in group["trust"] if t for p in t["pairs"]
                if p["pairs"] >= 2 and p["kendall_tau"] == p["kendall_tau"]]
        rows.append({"space": space, "variant": variant,
                     **{f"test_acc@{lbl}": mean_std(v, 1, scale=100)
                        for lbl, v in zip(("1/3", "2/3", "end"), thirds)},
                     "regret@end": f"{(best[space] - np.nanmean(thirds[-1])) * 100:.1f}",
                     "trials": f"{group['num_trials'].mean():.0f}", "full_runs": f"{group['full_runs'].mean():.1f}",
                     "data_passes": f"{group['data_passes'].mean():.0f}",
                     "worker_use": f"{group['worker_use'].mean():.2f}",
                     "rung_tau": "-" if not taus else f"{np.mean(taus):+.2f}",
                     "warned": f"{int(group['warned'].sum())}/{len(group)}"})
    return pd.DataFrame(rows)


def paired(runs: pd.DataFrame, a: str, b: str) -> dict[str, dict[str, float]]:
    out = {}
    for space, group in runs.groupby("space"):
        x = group[group["variant"] == a].set_index("seed")["pick_test_accuracy"]
        y = group[group["variant"] == b].set_index("seed")["pick_test_accuracy"]
        d = (x - y).dropna() * 100
        out[space] = {"mean": float(d.mean()), "std": spread(list(d)), "seeds": int(len(d)), "per_seed": list(d)}
    return out


COMPARISONS = (("hypertune", "asha"), ("hypertune", "bohb"), ("hypertune r=0.3", "asha r=0.3"),
               ("hypertune r=0.3", "bohb r=0.3"), ("hypertune rungs 0.3,0.6,1", "asha r=0.3"),
               ("hypertune r=0.3", "hypertune"), ("asha r=0.3", "asha"))


def print_paired(comparisons: dict) -> None:
    print("\npaired differences of the final pick's test accuracy (points, mean ± sample std over seeds):")
    for label, by_space in comparisons.items():
        print(f"  {label:<40} " + "  ".join(f"{s}: {mean_std(v['per_seed'], 1, signed=True)}"
                                            for s, v in by_space.items()))


def render(path: Path) -> int:
    """``--render``: the table (.csv and the JSON's) and the paired differences computed again from the file's
    runs (the plot is left as it is), running nothing."""
    import json

    data = json.loads(path.read_text())
    runs = pd.DataFrame(data["runs"])
    summary = table(runs, data["best_test_accuracy"])
    print(summary.to_string(index=False))
    data["table"] = summary.to_dict(orient="records")
    data["paired"] = {f"{a} - {b}": paired(runs, a, b) for a, b in COMPARISONS}
    print_paired(data["paired"])
    data["rendered_by"] = " ".join(sys.argv)
    path.write_text(json.dumps(data, indent=2) + "\n")
    summary.to_csv(path.with_suffix(".csv"), index=False)
    return 0


def plot(runs: pd.DataFrame, times: np.ndarray, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    spaces = list(dict.fromkeys(runs["space"]))
    fig, axes = plt.subplots(1, len(spaces), figsize=(6 * len(spaces), 4.2), squeeze=False)
    for ax, space in zip(axes[0], spaces):
        for variant, group in runs[runs["space"] == space].groupby("variant", sort=False):
            mean = np.nanmean(np.array(group["curve"].tolist()), axis=0) * 100
            ax.plot(times, mean, label=variant, linestyle="-" if "r=" not in variant and "rungs" not in variant
                    else "--", linewidth=2 if "hypertune" in variant else 1)
        ax.set_title(f"{space}: full-data test accuracy of the incumbent")
        ax.set_xlabel("wall time of the search (s)")
        ax.set_ylabel("test accuracy (%)")
        ax.grid(alpha=0.3)
    axes[0][-1].legend(fontsize=7, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="3 seeds, 30 s searches, 2 truth seeds")
    p.add_argument("--budget-s", type=float, default=None, help="wall time of every search [quick: 30]")
    p.add_argument("--seeds", type=int, default=None, help="[quick: 3]")
    p.add_argument("--truth-seeds", type=int, default=None, help="[quick: 2]")
    p.add_argument("--spaces", default="digits,misrank")
    p.add_argument("--max-concurrent", type=int, default=2)
    p.add_argument("--name", default=None, help="results file name [hypertune-quick or hypertune]")
    p.add_argument("--render", default=None, metavar="JSON",
                   help="write a results file's table and paired differences again from its runs, running nothing")
    args = p.parse_args()
    if args.render:
        return render(Path(args.render))
    budget = args.budget_s or (30.0 if args.quick else 120.0)
    seeds = args.seeds or 3
    truth_seeds = args.truth_seeds or (2 if args.quick else 3)
    spaces = args.spaces.split(",")
    name = args.name or ("hypertune-quick" if args.quick else "hypertune")
    times = np.linspace(0, budget, 31)

    started = time.time()
    quality = {}
    for space in spaces:
        t = time.time()
        quality[space] = truth(space, truth_seeds)
        values = np.array(list(quality[space].values()))
        print(f"[truth] {space}: {len(values)} configurations, test accuracy {values.min():.3f}..{values.max():.3f} "
              f"({time.time() - t:.0f}s)", flush=True)
    ensure_ray(num_cpus=args.max_concurrent)
    records = []
    with tempfile.TemporaryDirectory() as storage:
        for seed in range(seeds):
            order = VARIANTS[seed % len(VARIANTS):] + VARIANTS[:seed % len(VARIANTS)]  # rotate: no fixed order
            for space in spaces:
                for variant in order:
                    rec = run_one(space, variant, seed, budget, args.max_concurrent, storage, quality[space], times)
                    records.append(rec)
                    print(f"[{space} seed {seed}] {variant[0]:<26} pick {rec['pick_test_accuracy'] * 100:5.1f}  "
                          f"{rec['num_trials']:3d} trials ({rec['full_runs']} to the end)  {rec['data_passes']:6.1f} "
                          f"passes  {rec['wall_s']:5.1f}s  workers busy {rec['worker_use']:.2f}"
                          f"{'  WARNED' if rec['warned'] else ''}", flush=True)
    runs = pd.DataFrame(records)
    best = {s: max(q.values()) for s, q in quality.items()}
    summary = table(runs, best)
    print()
    print(summary.to_string(index=False))
    comparisons = {f"{a} - {b}": paired(runs, a, b) for a, b in COMPARISONS}
    print_paired(comparisons)
    trust_ms = runs["trust_seconds"].max() * 1000
    print(f"\nthe trust measurement took at most {trust_ms:.1f} ms per search (of {budget:.0f} s)")
    out = REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    plot(runs, times, out / f"{name}.png")
    summary.to_csv(out / f"{name}.csv", index=False)
    write_results(name, {
        "command": " ".join(sys.argv), "machine": machine(), "budget_s": budget, "seeds": seeds,
        "truth_seeds": truth_seeds, "spaces": {s: SPACES[s] for s in spaces}, "fixed": FIXED,
        "best_test_accuracy": best, "table": summary.to_dict(orient="records"), "paired": comparisons,
        "trust_ms_max": trust_ms, "times_s": times.tolist(),
        "runs": [{k: v for k, v in r.items()} for r in records], "total_s": time.time() - started,
        "truth": {s: {str(k): v for k, v in q.items()} for s, q in quality.items()},
    })
    print(f"\nwrote bench/results/{name}.json, .csv and .png ({(time.time() - started) / 60:.1f} min)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
