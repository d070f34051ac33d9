"""Does a search's pick hold up on full data, and what does checking it cost?

Six problems, three seeds each. Per problem and seed, K configurations drawn from the space are each
trained once in four ways and cached (``bench/results/trust-cache/``): on today's proxy (the
early-stopping default: ratio r, never-seen samples first, no full first epoch), on the new default's
schedule (the first rung lengthened to 16 optimiser steps, the top rung on all the data), on full data
(every configuration's full-data final score: its test score, the truth every pick is judged by), and
on one fixed uniform subset of the same ratio. The searches are then replayed on these curves, trial
after trial, with the product's own pieces (its rungs, ASHA's cut-off rule, the audit's size and draw,
the agreement with its interval, the warnings):

- proxy: today's search, the best proxy score picks (``--decide proxy``), its rung-agreement warning;
- full decides: the new default (``--decide full``): full-data top rung, the audit, the pick on full data;
- random subset: the same search on one fixed uniform subset of the same ratio;
- full data, fewer epochs: ASHA on full data with as many epochs as fit the new search's cost;
- one-epoch top-3: every configuration one epoch on full data, the best three trained to the end;
- SoTL: the proxy curves ranked by their sum of training losses.

Cost is the replayed training and validation seconds of the epochs each search runs (a sequential
search; Ray's start-up per trial is not in it) and the data passes; ``bench/hpo_speedup.py`` measures
the same two defaults as real Ray searches. The live correction (raising the ratio of trials not yet
started) depends on the order trials arrive and is not replayed.

The curves are cached under a key that holds the problem, seed, ratio, configuration index and arm, and a
hash of what trains a curve: the sources of the asp_tune package and of this script, the configuration's
values and the run's settings. A cache written by other code or settings is not read; the results file
records the code hash and how many curves came from the cache (``--no-cache`` trains every curve).

    python bench/trust.py --quick         # about 16 minutes on 2 (busy) CPU cores without a cache
    python bench/trust.py --render bench/results/trust-quick.json   # its tables again from its rows
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, chosen_problems, default_cifar10, machine, mean_std, spread, write_results  # noqa: E402

from asp_tune.tune.fulldata import (FullDataAgreement, audit_size, choose_audit, expected_top,  # noqa: E402
                                    verdict_lines)
from asp_tune.tune.settings import HpoSettings  # noqa: E402
from asp_tune.tune.space import parse_space  # noqa: E402
from asp_tune.tune.trust import RungRecord  # noqa: E402

CACHE = REPO / "bench" / "results" / "trust-cache"


def code_hash() -> str:
    """A hash of the code that trains a curve: every source file of the asp_tune package, this script and
    bench/_common.py."""
    h = hashlib.sha256()
    here = Path(__file__).resolve()
    files = sorted((REPO / "asp_tune").rglob("*.py")) + [here, here.parent / "_common.py"]
    for f in files:
        h.update(str(f.relative_to(REPO)).encode())
        h.update(f.read_bytes())
    return h.hexdigest()[:16]


def settings_hash(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:12]


def curve_key(tag: str, index: int, arm: str, code: str, fixed: Any, config: Any, run: Any) -> str:
    """The cache file name of one curve: where it belongs, the code that trains it and its settings."""
    return f"{tag}-c{index}-{arm.replace(' ', '_')}-{code}-{settings_hash(fixed, config, run)}"
TOP_K = 3


# ----------------------------------------------------------------------------- the problems' own data and models


def synthetic_images(seed: int = 0) -> dict[str, Any]:
    """1,200 images of 3x16x16 in 4 classes: a faint class pattern under strong noise (a small CNN learns it
    in a few hundred steps; a few dozen leave it at chance)."""
    g = torch.Generator().manual_seed(1234)
    patterns = torch.randn(4, 3, 16, 16, generator=g)
    y = torch.arange(1500) % 4
    x = 0.35 * patterns[y] + torch.randn(1500, 3, 16, 16, generator=g)
    return {"train": (x[:1200].numpy(), y[:1200].numpy()), "test": (x[1200:].numpy(), y[1200:].numpy())}


def tabular(seed: int = 0) -> dict[str, Any]:
    from sklearn.datasets import make_classification

    x, y = make_classification(n_samples=6000, n_features=40, n_informative=16, n_classes=4, random_state=0)
    x = ((x - x.mean(0)) / x.std(0)).astype(np.float32)
    return {"train": (x[:5000], y[:5000]), "test": (x[5000:], y[5000:])}


def small_cnn(input_shape, num_classes: int, width: int = 16) -> nn.Module:
    return nn.Sequential(nn.Conv2d(input_shape[0], width, 3, padding=1), nn.BatchNorm2d(width), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Conv2d(width, 2 * width, 3, padding=1), nn.BatchNorm2d(2 * width),
                         nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes))


MLP_PARAMS = {"lr": {"type": "loguniform", "low": 0.003, "high": 1.0},
              "momentum": {"type": "uniform", "low": 0.0, "high": 0.95},
              "weight_decay": {"type": "loguniform", "low": 1e-5, "high": 1e-2}}
PROBLEMS: dict[str, dict[str, Any]] = {
    "digits": {"fixed": {"dataset": "digits", "model": "mlp", "epochs": 12, "batch_size": 64,
                         "lr_schedule": "cosine"}, "params": MLP_PARAMS},
    "short-schedule": {"fixed": {"dataset": "digits", "model": "mlp", "epochs": 3, "batch_size": 64,
                                 "lr_schedule": "cosine"}, "params": MLP_PARAMS},
    "small-cnn": {"fixed": {"dataset": "trust:synthetic_images", "model": "trust:small_cnn", "epochs": 4,
                            "batch_size": 32},
                  "params": {"lr": {"type": "loguniform", "low": 0.003, "high": 0.3},
                             "weight_decay": {"type": "loguniform", "low": 1e-5, "high": 1e-2}}},
    "lr-sensitive": {"fixed": {"dataset": "trust:tabular", "model": "mlp", "model_args": {"hidden": 64}, "epochs": 6,
                               "batch_size": 128},
                     "params": {"lr": {"type": "loguniform", "low": 1e-4, "high": 3.0}}},
    "tabular": {"fixed": {"dataset": "trust:tabular", "model": "mlp", "model_args": {"hidden": 128}, "epochs": 8,
                          "batch_size": 128, "optimizer": "adamw"},
                "params": {"lr": {"type": "loguniform", "low": 1e-4, "high": 3e-2},
                           "weight_decay": {"type": "loguniform", "low": 1e-4, "high": 1e-1}}},
    "cifar10-resnet8": {"fixed": {"dataset": "cifar10", "model": "resnet8", "epochs": 6, "batch_size": 128,
                                  "subset": 2000, "test_subset": 1000},
                        "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.5},
                                   "weight_decay": {"type": "loguniform", "low": 5e-5, "high": 5e-3}}},
}
QUICK = {"cifar10-resnet8": {"subset": 1000, "test_subset": 500, "epochs": 4}}


def space_of(problem: str, quick: bool) -> Any:
    spec = PROBLEMS[problem]
    fixed = {**spec["fixed"], **(QUICK.get(problem, {}) if quick else {})}
    if fixed["dataset"] == "cifar10":
        fixed["data_dir"] = default_cifar10()
    return parse_space({"name": problem, "fixed": fixed, "params": spec["params"]})


def settings_pair(space, ratio: float, train_samples: int) -> tuple[HpoSettings, HpoSettings, dict | None]:
    """Today's search (the proxy picks, the first rung as given) and the new default (the first rung
    lengthened, the top rung on full data), with what the new one lengthened."""
    today = HpoSettings(space=space, algo="asha", ratio=ratio, decide="proxy", min_first_rung_steps=0,
                        device="cpu").validate()
    new = HpoSettings(space=space, algo="asha", ratio=ratio, device="cpu").validate()
    change = new.fit_first_rung(train_samples)
    new.end_on_full_data()
    return today, new, change


# ----------------------------------------------------------------------------- training once, cached


def train_curve(task: tuple) -> dict[str, Any]:
    """One configuration trained for all its epochs under ``run``: per epoch its validation score, training
    loss, seconds (training, validation) and data passes; its final test score."""
    problem, quick, params, run, key, cache_dir, read_cache = task
    path = Path(cache_dir) / f"{key}.json"
    if read_cache and path.is_file():
        return {**json.loads(path.read_text()), "cached": True}
    from asp_tune.build import build_trainer
    from asp_tune.imports import add_search_paths

    add_search_paths([str(Path(__file__).resolve().parent)])
    torch.set_num_threads(1)
    cfg = space_of(problem, quick).train_config(params, **run)
    trainer = build_trainer(cfg)
    rows = []
    while not trainer.done:
        r = trainer.train_epoch()
        rows.append({"val": r["val_score"], "loss": r["train_loss"], "train_s": r["epoch_seconds"],
                     "passes": r["data_passes"]})
    val_seconds = trainer.val_seconds / max(1, len(rows))
    for row in rows:
        row["val_s"] = val_seconds
    out = {"epochs": rows, "test": trainer.evaluate("test")[0], "constant": trainer.constant_score("val")}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(out))
    return {**out, "cached": False}


def curves(problem: str, seed: int, k: int, ratio: float, quick: bool, pool, cache: dict[str, Any]) -> dict[str, Any]:
    """The K configurations of one problem and seed, and their four curves each."""
    from asp_tune.build import build_trainer
    from asp_tune.imports import add_search_paths

    add_search_paths([str(Path(__file__).resolve().parent)])
    space = space_of(problem, quick)
    configs = [dict(c) for c in space.to_configspace(seed).sample_configuration(k)]
    probe = build_trainer(space.train_config(configs[0], ratio=1.0, metric="none", seed=seed, device="cpu"))
    n = probe.selector.num_samples
    today, new, change = settings_pair(space, ratio, n)
    runs = {"proxy": {**today.run_fields(), "seed": seed},
            "new": {**new.run_fields(), "seed": seed},
            "full": {"ratio": 1.0, "metric": "none", "ratio_schedule": "constant", "seed": seed, "device": "cpu",
                     "epochs": today.epochs},
            "random subset": {**today.run_fields(), "metric": "fixed_random", "seed": seed,
                              "first_epoch_full": False}}
    tag = f"{problem}{'-quick' if quick else ''}-s{seed}-r{ratio}"
    fixed = space_of(problem, quick).fixed
    tasks = [(problem, quick, c, run, curve_key(tag, i, name, cache["code_hash"], fixed, c, run), cache["dir"],
              cache["read"])
             for name, run in runs.items() for i, c in enumerate(configs)]
    done = list(pool.map(train_curve, tasks))
    hits = sum(d.pop("cached") for d in done)
    cache["hits"] += hits
    cache["misses"] += len(done) - hits
    by_kind = {name: done[j * k:(j + 1) * k] for j, name in enumerate(runs)}
    return {"configs": configs, "curves": by_kind, "today": today, "new": new, "change": change,
            "train_samples": n}


# ----------------------------------------------------------------------------- replaying the searches


def asha(curve_list: list[dict], rungs: tuple[int, ...], eta: int, cost_epochs: int | None = None) -> dict[str, Any]:
    """ASHA replayed trial after trial (Ray's rule: at a rung, a trial below the (1 - 1/eta) quantile of the
    scores recorded there so far stops). Each trial's epochs run and its scores."""
    recorded: dict[int, list[float]] = {r: [] for r in rungs}
    ran = []
    for c in curve_list:
        scores = [e["val"] for e in c["epochs"]]
        stop_at = rungs[-1]
        for rung in rungs[:-1]:
            score = scores[rung - 1]
            seen = recorded[rung]
            cut = np.nanpercentile(seen, (1 - 1 / eta) * 100) if seen else None
            seen.append(score)
            if cut is not None and score < cut:
                stop_at = rung
                break
        ran.append(stop_at)
    return {"epochs": ran}


def cost(curve_list: list[dict], epochs: list[int]) -> tuple[float, float]:
    """Seconds (training and validation) and data passes of running each curve for its epochs."""
    seconds = sum(sum(e["train_s"] + e["val_s"] for e in c["epochs"][:n]) for c, n in zip(curve_list, epochs))
    passes = sum(c["epochs"][n - 1]["passes"] for c, n in zip(curve_list, epochs) if n)
    return seconds, passes


def tau_interval(scores: list[float], truth: list[float]) -> dict[str, Any]:
    agreement = FullDataAgreement()
    for i, (s, t) in enumerate(zip(scores, truth)):
        agreement.add(str(i), s, t, "")
    low, high = agreement.interval() if agreement.measured else (math.nan, math.nan)
    return {"tau": agreement.kendall_tau(), "tau_low": low, "tau_high": high}


def replay(data: dict[str, Any]) -> list[dict[str, Any]]:
    """Every method's pick, regret, warning, agreement and cost on one problem and seed."""
    today, new = data["today"], data["new"]
    c = data["curves"]
    k, epochs, eta = len(data["configs"]), today.epochs, today.reduction_factor
    truth = [x["test"] for x in c["full"]]
    best = max(truth)
    rows = []

    def add(method: str, pick: int, seconds: float, passes: float, warned: bool, agreement: dict, **extra):
        rows.append({"method": method, "pick": pick, "pick_score": truth[pick], "regret": best - truth[pick],
                     "warned": warned, **agreement, "seconds": seconds, "passes": passes, **extra})

    def searched(curve_list, rungs):
        ran = asha(curve_list, rungs, eta)["epochs"]
        best_scores = [max(e["val"] for e in cur["epochs"][:n]) for cur, n in zip(curve_list, ran)]
        return ran, best_scores

    # the full-data search (the baseline the others are priced against)
    full_rungs = today.rungs()
    ran, scores = searched(c["full"], full_rungs)
    full_seconds, full_passes = cost(c["full"], ran)
    add("full data", int(np.argmax(scores)), full_seconds, full_passes, False, tau_interval(scores, truth))

    # today's proxy search
    ran, scores = searched(c["proxy"], full_rungs)
    record = RungRecord(full_rungs)
    for i, (cur, n) in enumerate(zip(c["proxy"], ran)):
        record.add_history(str(i), range(1, n + 1), [e["val"] for e in cur["epochs"][:n]])
    add("proxy", int(np.argmax(scores)), *cost(c["proxy"], ran), record.warning() is not None,
        tau_interval(scores, truth))

    # the random-subset search
    ran, scores = searched(c["random subset"], full_rungs)
    add("random subset", int(np.argmax(scores)), *cost(c["random subset"], ran), False, tau_interval(scores, truth))

    # the new default: full-data top rung, the audit, the pick on full data
    rungs = new.rungs()
    ran, _ = searched(c["new"], rungs)
    seconds, passes = cost(c["new"], ran)
    first = [cur["epochs"][rungs[0] - 1]["val"] for cur in c["new"]]
    full_scores = {i: c["new"][i]["epochs"][-1]["val"] for i in range(k) if ran[i] == epochs}
    top_seconds = sum(sum(e["train_s"] + e["val_s"] for e in c["new"][i]["epochs"][rungs[-2]:]) for i in full_scores)
    count = audit_size(None, k, expected_top(k, rungs))
    import pandas as pd

    candidates = pd.DataFrame({"trial_id": [str(i) for i in range(k) if i not in full_scores],
                               "proxy_score": [first[i] for i in range(k) if i not in full_scores]})
    audited = [int(t) for t in choose_audit(candidates, count, "max", seed=today.seed, score="proxy_score")]
    audit_seconds, audit_passes = cost([c["full"][i] for i in audited], [epochs] * len(audited))
    for i in audited:
        full_scores[i] = c["full"][i]["epochs"][-1]["val"]
    agreement = FullDataAgreement()
    for i, score in full_scores.items():
        agreement.add(str(i), first[i], score, "")
    pick = max(full_scores, key=full_scores.get)
    low, high = agreement.interval() if agreement.measured else (math.nan, math.nan)
    total = seconds + audit_seconds
    add("full decides", pick, total, passes + audit_passes, bool(verdict_lines(agreement, None)),
        {"tau": agreement.kendall_tau(), "tau_low": low, "tau_high": high},
        full_share=(top_seconds + audit_seconds) / total, pairs=len(agreement.pairs), audited=len(audited),
        measured=agreement.measured, ratio_used=new.ratio, grace_used=new.grace_period)

    # today's proxy search, then its best three (by proxy score) trained on full data: the pick is the best there
    ran, scores = searched(c["proxy"], full_rungs)
    proxy_seconds, proxy_passes = cost(c["proxy"], ran)
    top_proxy = [int(i) for i in np.argsort(scores)[::-1][:TOP_K]]
    audit_seconds, audit_passes = cost([c["full"][i] for i in top_proxy], [epochs] * len(top_proxy))
    finals = {i: c["full"][i]["epochs"][-1]["val"] for i in top_proxy}
    add("proxy, top-3 on full data", int(max(finals, key=finals.get)), proxy_seconds + audit_seconds,
        proxy_passes + audit_passes, False, tau_interval([scores[i] for i in top_proxy], [truth[i] for i in top_proxy]),
        full_share=audit_seconds / (proxy_seconds + audit_seconds))

    # full data with fewer epochs, as many as fit the new search's cost
    fewer = None
    for e in range(1, epochs + 1):
        r = tuple(x for x in full_rungs if x < e) + (e,)
        ran_e = asha(c["full"], r, eta)["epochs"]
        if cost(c["full"], ran_e)[0] <= total:
            fewer = (e, r, ran_e)
    if fewer is not None:
        e, r, ran_e = fewer
        scores = [max(x["val"] for x in cur["epochs"][:n]) for cur, n in zip(c["full"], ran_e)]
        add("full data, fewer epochs", int(np.argmax(scores)), *cost(c["full"], ran_e), False,
            tau_interval(scores, truth), epochs_used=e)

    # one epoch of each on full data, the best three to the end
    one = [cur["epochs"][0]["val"] for cur in c["full"]]
    top = list(np.argsort(one)[::-1][:TOP_K])
    finals = {i: c["full"][i]["epochs"][-1]["val"] for i in top}
    s1, p1 = cost(c["full"], [1] * k)
    s2, p2 = cost([c["full"][i] for i in top], [epochs] * len(top))
    add("one-epoch top-3", int(max(finals, key=finals.get)), s1 + s2 - cost([c["full"][i] for i in top], [1] * len(top))[0],
        p1 + p2 - len(top) * c["full"][0]["epochs"][0]["passes"], False, tau_interval(one, truth))

    # the sum of training losses of the proxy curves (lower is better)
    sotl = [-sum(e["loss"] for e in cur["epochs"]) for cur in c["proxy"]]
    add("SoTL", int(np.argmax(sotl)), *cost(c["proxy"], [epochs] * k), False, tau_interval(sotl, truth))
    full_cost = rows[0]["seconds"]
    for row in rows:
        row["cost_vs_full"] = row["seconds"] / full_cost if full_cost else math.nan
    return rows


# ----------------------------------------------------------------------------- the run


def summarise(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per problem and method: mean ± std over seeds of regret (points), tau, cost; warnings and misses."""
    import pandas as pd

    frame = pd.DataFrame(rows)
    out = []
    for (problem, method), part in frame.groupby(["problem", "method"], sort=False):
        regret = list(100 * part["regret"])
        out.append({"problem": problem, "method": method, "seeds": len(part),
                    "regret_mean": float(np.mean(regret)), "regret_std": spread(regret), "regret_per_seed": regret,
                    "seed_list": list(part["seed"]),
                    "tau_mean": part["tau"].mean(), "warned": int(part["warned"].sum()),
                    "silent_misses": int(((part["regret"] > 0.01) & ~part["warned"]).sum()),
                    "cost_vs_full_mean": part["cost_vs_full"].mean(),
                    "full_share_mean": part["full_share"].mean() if "full_share" in part else math.nan})
    return out


def paired(rows: list[dict[str, Any]]) -> list[str]:
    """The random subset against the proxy search and against full decides, regret paired by seed."""
    lines = ["", "A fixed uniform subset of the same ratio against the two proxy searches, top-1 regret (points) per "
             "seed and the difference paired by seed (negative: the random subset's pick is better):", "",
             "| problem | seeds | random subset | proxy | full decides | random − proxy | random − full decides | "
             "cost vs full-data search: random / proxy / full decides |", "|---|---|---|---|---|---|---|---|"]
    problems = list(dict.fromkeys(r["problem"] for r in rows))
    for problem in problems:
        by = {m: {r["seed"]: r for r in rows if r["problem"] == problem and r["method"] == m}
              for m in ("random subset", "proxy", "full decides")}
        seeds = sorted(set(by["random subset"]) & set(by["proxy"]) & set(by["full decides"]))
        if not seeds:
            continue
        per = {m: [100 * by[m][s]["regret"] for s in seeds] for m in by}
        cost = {m: float(np.mean([by[m][s]["cost_vs_full"] for s in seeds])) for m in by}
        show = lambda v: " / ".join(f"{x:.2f}" for x in v)  # noqa: E731
        d1 = [a - b for a, b in zip(per["random subset"], per["proxy"])]
        d2 = [a - b for a, b in zip(per["random subset"], per["full decides"])]
        lines.append(f"| {problem} | {', '.join(map(str, seeds))} | {show(per['random subset'])} | {show(per['proxy'])} "
                     f"| {show(per['full decides'])} | {mean_std(d1, 2, signed=True)} | {mean_std(d2, 2, signed=True)} "
                     f"| {cost['random subset']:.2f} / {cost['proxy']:.2f} / {cost['full decides']:.2f} |")
    return lines


def markdown(summary: list[dict[str, Any]], cost_rows: list[dict[str, Any]], rows: list[dict[str, Any]] = ()) -> str:
    lines = ["| problem | method | regret (points, mean ± std) | Kendall tau | warned | regret > 1 point, no warning |"
             " cost vs full-data search | full-data share of the cost |", "|---|---|---|---|---|---|---|---|"]
    for s in summary:
        share = "" if s["full_share_mean"] != s["full_share_mean"] else f"{100 * s['full_share_mean']:.0f}%"
        lines.append(f"| {s['problem']} | {s['method']} | {mean_std(s['regret_per_seed'], 2)} | "
                     f"{s['tau_mean']:+.2f} | {s['warned']}/{s['seeds']} | {s['silent_misses']}/{s['seeds']} | "
                     f"{s['cost_vs_full_mean']:.2f} | {share} |")
    if rows:
        lines += paired(list(rows))
    lines += ["", "Regret: mean ± sample std over seeds (ddof 1; `x (n=1)` for one seed). Costs are replayed "
              "training and validation seconds summed over a sequential search's trials (not a Ray search's wall "
              "time) over the full-data search's."]
    if cost_rows:
        lines += ["", "27 configurations at r = 0.1 (digits): the new default's full-data share of its cost, per seed: "
                  + ", ".join(f"{100 * r['full_share']:.0f}% (ratio used {r['ratio_used']:g}, grace {r['grace_used']})"
                              for r in cost_rows)]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="12 configurations per problem, a smaller CIFAR-10 part")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--problems", nargs="+", default=None, choices=list(PROBLEMS),
                        help="default: all (CIFAR-10's is left out, with a message, where its archive is missing)")
    parser.add_argument("--ratio", type=float, default=0.3)
    parser.add_argument("--configs", type=int, default=None, help="configurations per problem (12 quick, 27 else)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default=None)
    parser.add_argument("--cache-dir", default=str(CACHE))
    parser.add_argument("--no-cache", action="store_true", help="train every curve (the cache is still written)")
    parser.add_argument("--render", default=None, metavar="JSON",
                        help="write a results file's tables again from its rows, running nothing")
    args = parser.parse_args()
    if args.render:
        return render(Path(args.render))
    k = args.configs or (12 if args.quick else 27)
    start = time.perf_counter()
    rows, cost_rows = [], []
    problems = chosen_problems(parser, args.problems, PROBLEMS)
    cache = {"dir": args.cache_dir, "read": not args.no_cache, "code_hash": code_hash(), "hits": 0, "misses": 0}
    with ProcessPoolExecutor(args.workers) as pool:
        for problem in problems:
            for seed in args.seeds:
                data = curves(problem, seed, k, args.ratio, args.quick, pool, cache)
                for row in replay(data):
                    rows.append({"problem": problem, "seed": seed, **row})
                print(f"[trust] {problem} seed {seed}: "
                      + "; ".join(f"{r['method']} {100 * r['regret']:.1f}" for r in rows if r["problem"] == problem
                                  and r["seed"] == seed), flush=True)
        for seed in args.seeds:  # the cost target: 27 configurations at r = 0.1
            data = curves("digits", seed, 27, 0.1, args.quick, pool, cache)
            cost_rows += [r for r in replay(data) if r["method"] == "full decides"]
    summary = summarise(rows)
    wall = time.perf_counter() - start
    cache_note = {"code_hash": cache["code_hash"], "curves_from_cache": cache["hits"],
                  "curves_trained": cache["misses"], "read_cache": cache["read"]}
    text = markdown(summary, cost_rows, rows) + (
        f"\nWall {wall:.0f} s; curves trained {cache['misses']}, read from the cache {cache['hits']} "
        f"(code hash {cache['code_hash']}).\n")
    print(text)
    name = args.name or f"trust{'-quick' if args.quick else ''}"
    write_results(name, {"machine": machine(), "args": vars(args), "command": " ".join(sys.argv), "configs": k,
                         "wall_s": wall, "cache": cache_note, "summary": summary, "rows": rows,
                         "cost_27_r0.1": cost_rows})
    (REPO / "bench" / "results" / f"{name}.md").write_text(text)
    return 0


def render(path: Path) -> int:
    """``--render``: the summary and tables computed again from the file's rows and written back."""
    data = json.loads(path.read_text())
    data["summary"] = summarise(data["rows"])
    note = data.get("cache")
    tail = (f"\nWall {data['wall_s']:.0f} s; curves trained {note['curves_trained']}, read from the cache "
            f"{note['curves_from_cache']} (code hash {note['code_hash']}).\n") if note else (
        f"\nWall {data['wall_s']:.0f} s, with curves read from a cache of unrecorded code version (this file predates "
        "the cache's code hash).\n")
    text = markdown(data["summary"], data.get("cost_27_r0.1", []), data["rows"]) + tail
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")
    path.with_suffix(".md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
