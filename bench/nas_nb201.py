"""SPOS on NAS-Bench-201: full-data supernet training against a uniformly random subset and SPOS + ASP
at the same ratio, side by side, several seeds.

    python bench/nas_nb201.py --quick     # CIFAR-10 subset, reduced supernet, 2 CPU cores (~10 min)
    python bench/nas_nb201.py --device cuda --subset 0 --channels 16 --cells 5 --epochs 50

For each seed the three variants run one after the other in this process (same seed, same data,
same selection budget, the same held-out scoring images); the order rotates with the seed's place in
--seeds (the i-th seed listed starts at variant i mod 3 of full, random, ASP), so no variant always runs
first, on a cold process. Prints each proxy variant's search-time and
data-pass ratios to full data, the found architecture's NAS-Bench-201 test accuracies (mean +- the
sample standard deviation over seeds, ``asp_tune.quality.seed_spread``) and the supernet's Kendall
tau over the seed's shared uniform rank sample (``kendall_tau``; the committed tables predate it and are
over each run's own candidates), and writes bench/results/nas_nb201[_quick].json and .txt.
Paper (ASP, GPU, full supernet): SPOS 92.47, SPOS + mixture 93.79 at half the search time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, default_cifar10, machine, mean_std, shared_data_dir, write_results  # noqa: E402

from asp_tune.quality import seed_spread  # noqa: E402
from nas.nb201 import GroundTruth  # noqa: E402
from nas.search import run_search  # noqa: E402
from nas.settings import EvolutionSettings, NasSettings, supernet_train_config  # noqa: E402


def _pm(values: list[float], fmt: str = ".2f") -> str:
    return mean_std(values, int(fmt.strip(".f")))  # the shared formatter: sample std, "x (n=1)" for one seed


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="CPU-sized defaults (overridable below)")
    p.add_argument("--data-dir", default=default_cifar10())
    p.add_argument("--table", default=str(shared_data_dir() / "nb201" / "nb201_test_accuracy.csv"))
    p.add_argument("--seeds", default="1,2,3")
    p.add_argument("--subset", type=int, default=None, help="training images (0: all)")
    p.add_argument("--channels", type=int, default=None)
    p.add_argument("--cells", type=int, default=None)
    p.add_argument("--epochs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--ratio", type=float, default=0.5)
    p.add_argument("--metric", default="mixture")
    p.add_argument("--ratio-schedule", default="constant")
    p.add_argument("--candidates", type=int, default=None)
    p.add_argument("--generations", type=int, default=None)
    p.add_argument("--device", default="auto")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--out-dir", default=None)
    args = p.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    quick = args.quick
    pick = lambda value, fast, full: value if value is not None else (fast if quick else full)  # noqa: E731
    subset = pick(args.subset, 5000, 0) or None
    supernet = supernet_train_config()  # lr, weight decay and batch size as NAS-Bench-201 and DARTS set them
    train = supernet.replace(dataset="cifar10", data_dir=args.data_dir, subset=subset, test_subset=100,
                             val_fraction=0.2 if quick else 0.1, epochs=pick(args.epochs, 20, 50),
                             batch_size=args.batch_size or supernet.batch_size, device=args.device)
    generations = pick(args.generations, 5, 10)
    evolution = EvolutionSettings(candidates=pick(args.candidates, 30, 50), population=10 if quick else 20,
                                  generations=generations, parents=5 if quick else 10,
                                  mutations=5 if quick else 10, crossovers=5 if quick else 10)
    base = NasSettings(space="nb201", searcher="spos", train=train, channels=pick(args.channels, 8, 16),
                       cells=pick(args.cells, 1, 5), evolution=evolution, monitor=False)

    def proxy(metric: str) -> NasSettings:
        return NasSettings(**{**base.__dict__, "train": train.replace(
            ratio=args.ratio, metric=metric, ratio_schedule=args.ratio_schedule)})

    variants = {"full": base, "random": proxy("random"), "asp": proxy(args.metric)}
    labels = {"full": "full data", "random": f"random r={args.ratio}", "asp": f"ASP {args.metric} r={args.ratio}"}
    table = GroundTruth.load(args.table)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    names = list(variants)
    for i, seed in enumerate(seeds):
        for name in names[i % len(names):] + names[:i % len(names)]:  # rotate the order with the seed
            settings = variants[name]
            s = run_search(settings.with_seed(seed), table=table).summary
            s.pop("settings")
            runs[name].append(s)
            print(f"seed {seed} {name:6s}: {s['search_time_s']:7.1f} s (supernet {s['supernet_train_s']:.1f} s), "
                  f"{s['data_passes']:.2f} passes, C10 {s['nb201_cifar10_test']:.2f}, "
                  f"tau {s['kendall_tau']:.3f}  {s['arch']}", flush=True)

    def mean(name: str, key: str) -> float:
        return float(np.mean([r[key] for r in runs[name]]))

    result = {
        "setup": {"quick": quick, "seeds": seeds, "train": train.to_dict(), "channels": base.channels,
                  "cells": base.num_cells, "evolution": evolution.__dict__, "ratio": args.ratio,
                  "metric": args.metric, "ratio_schedule": args.ratio_schedule,
                  "data": runs["full"][0]["data"], "device": runs["full"][0]["device"]},
        "machine": machine(),
        "best_possible_cifar10": runs["full"][0]["nb201_best_possible"],
        "runs": runs,
    }
    for name in variants:
        for key in ("search_time_s", "supernet_train_s", "data_passes", "nb201_cifar10_test", "nb201_cifar100_test",
                    "nb201_imagenet16_120_test", "kendall_tau", "supernet_val_accuracy"):
            values = [r[key] for r in runs[name]]
            result[f"{name}_{key}_mean"], result[f"{name}_{key}_std"] = float(np.mean(values)), seed_spread(values)
    ratios = {}
    for name in ("random", "asp"):  # each proxy variant's cost relative to full data
        ratios[name] = {key: mean(name, key) / mean("full", key)
                        for key in ("search_time_s", "supernet_train_s", "data_passes")}
        prefix = "" if name == "asp" else "random_"  # the ASP keys keep the names earlier results used
        result[f"{prefix}search_time_ratio"] = ratios[name]["search_time_s"]
        result[f"{prefix}supernet_time_ratio"] = ratios[name]["supernet_train_s"]
        result[f"{prefix}data_pass_ratio"] = ratios[name]["data_passes"]
    lines = [
        f"SPOS on NAS-Bench-201, {result['setup']['data']}, C={base.channels} N={base.num_cells}, "
        f"{train.epochs} epochs, seeds {seeds}, device {result['setup']['device']}, "
        f"held-out scoring images {runs['full'][0]['score_samples']}; mean +- sample std over seeds",
        f"{'':22s}" + "".join(f"{labels[name]:>24s}" for name in variants),
    ]
    for key, label, fmt in (("search_time_s", "search time (s)", ".1f"), ("supernet_train_s", "supernet training (s)", ".1f"),
                            ("data_passes", "data passes", ".2f"), ("nb201_cifar10_test", "NB201 CIFAR-10 test %", ".2f"),
                            ("nb201_cifar100_test", "NB201 CIFAR-100 test %", ".2f"),
                            ("nb201_imagenet16_120_test", "NB201 IN16-120 test %", ".2f"),
                            ("kendall_tau", "supernet Kendall tau", ".3f")):
        lines.append(f"{label:22s}" + "".join(f"{_pm([r[key] for r in runs[name]], fmt):>24s}" for name in variants))
    for name in ("random", "asp"):
        lines.append(f"ratios {name}/full: search time {ratios[name]['search_time_s']:.3f}, supernet training "
                     f"{ratios[name]['supernet_train_s']:.3f}, data passes {ratios[name]['data_passes']:.3f}")
    lines.append("per seed, CIFAR-10 test % full / random / ASP: " + "; ".join(
        f"{seed}: " + " / ".join(f"{runs[name][i]['nb201_cifar10_test']:.2f}" for name in variants)
        for i, seed in enumerate(seeds)))
    lines.append(f"best possible C10 {result['best_possible_cifar10']:.2f}")
    text = "\n".join(lines)
    print(text)
    name = "nas_nb201_quick" if quick else "nas_nb201"
    if args.device.startswith("cuda") or (args.device == "auto" and torch.cuda.is_available()):
        name += "_cuda"
    path = write_results(name, result, args.out_dir)
    path.with_suffix(".txt").write_text(text + "\n")
    print(f"-> {path.relative_to(REPO) if path.is_relative_to(REPO) else path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
