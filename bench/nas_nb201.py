"""SPOS on NAS-Bench-201: full-data supernet training against SPOS + ASP, side by side, several seeds.

    python bench/nas_nb201.py --quick     # CIFAR-10 subset, reduced supernet, 2 CPU cores (~10 min)
    python bench/nas_nb201.py --device cuda --subset 0 --channels 16 --cells 5 --epochs 50

For each seed both variants run one after the other in this process (same data, same selection
budget). Prints the search-time ratio (ASP / full), the data-pass ratio, the found architecture's
NAS-Bench-201 CIFAR-10 test accuracy (mean +- std) and the supernet's Kendall tau over the
scored candidates, and writes bench/results/nas_nb201[_quick].json and .txt.
Paper (ASP, GPU, full supernet): SPOS 92.47, SPOS + mixture 93.79 at half the search time.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import REPO, default_cifar10, machine, shared_data_dir, write_results  # noqa: E402

from asp_tune.config import TrainConfig  # noqa: E402
from nas.nb201 import GroundTruth  # noqa: E402
from nas.search import run_search  # noqa: E402
from nas.settings import EvolutionSettings, NasSettings  # noqa: E402


def _pm(values: list[float], fmt: str = ".2f") -> str:
    return f"{np.mean(values):{fmt}} +- {np.std(values):{fmt}}"


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
    train = TrainConfig(dataset="cifar10", data_dir=args.data_dir, subset=subset, test_subset=100,
                        val_fraction=0.2 if quick else 0.1, epochs=pick(args.epochs, 20, 50),
                        batch_size=pick(args.batch_size, 64, 64), lr=0.025, lr_min=0.001, weight_decay=3e-4,
                        device=args.device)
    generations = pick(args.generations, 5, 10)
    evolution = EvolutionSettings(candidates=pick(args.candidates, 30, 50), population=10 if quick else 20,
                                  generations=generations, parents=5 if quick else 10,
                                  mutations=5 if quick else 10, crossovers=5 if quick else 10)
    base = NasSettings(space="nb201", searcher="spos", train=train, channels=pick(args.channels, 8, 16),
                       cells=pick(args.cells, 1, 5), evolution=evolution, monitor=False)
    variants = {
        "full": base,
        "asp": NasSettings(**{**base.__dict__, "train": train.replace(
            ratio=args.ratio, metric=args.metric, ratio_schedule=args.ratio_schedule)}),
    }
    table = GroundTruth.load(args.table)
    seeds = [int(s) for s in args.seeds.split(",")]
    runs: dict[str, list[dict]] = {name: [] for name in variants}
    for seed in seeds:
        for name, settings in variants.items():
            s = run_search(settings.with_seed(seed), table=table).summary
            s.pop("settings")
            runs[name].append(s)
            print(f"seed {seed} {name:4s}: {s['search_time_s']:7.1f} s (supernet {s['supernet_train_s']:.1f} s), "
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
        "search_time_ratio": mean("asp", "search_time_s") / mean("full", "search_time_s"),
        "supernet_time_ratio": mean("asp", "supernet_train_s") / mean("full", "supernet_train_s"),
        "data_pass_ratio": mean("asp", "data_passes") / mean("full", "data_passes"),
        "best_possible_cifar10": runs["full"][0]["nb201_best_possible"],
        "runs": runs,
    }
    for name in variants:
        for key in ("search_time_s", "supernet_train_s", "data_passes", "nb201_cifar10_test", "nb201_cifar100_test",
                    "nb201_imagenet16_120_test", "kendall_tau", "supernet_val_accuracy"):
            values = [r[key] for r in runs[name]]
            result[f"{name}_{key}_mean"], result[f"{name}_{key}_std"] = float(np.mean(values)), float(np.std(values))
    lines = [
        f"SPOS on NAS-Bench-201, {result['setup']['data']}, C={base.channels} N={base.num_cells}, "
        f"{train.epochs} epochs, seeds {seeds}, device {result['setup']['device']}",
        f"{'':22s}{'full data':>22s}{f'ASP {args.metric} r={args.ratio}':>26s}",
    ]
    for key, label, fmt in (("search_time_s", "search time (s)", ".1f"), ("supernet_train_s", "supernet training (s)", ".1f"),
                            ("data_passes", "data passes", ".2f"), ("nb201_cifar10_test", "NB201 CIFAR-10 test %", ".2f"),
                            ("nb201_cifar100_test", "NB201 CIFAR-100 test %", ".2f"),
                            ("nb201_imagenet16_120_test", "NB201 IN16-120 test %", ".2f"),
                            ("kendall_tau", "supernet Kendall tau", ".3f")):
        lines.append(f"{label:22s}{_pm([r[key] for r in runs['full']], fmt):>22s}"
                     f"{_pm([r[key] for r in runs['asp']], fmt):>26s}")
    lines.append(f"ratios ASP/full: search time {result['search_time_ratio']:.3f}, supernet training "
                 f"{result['supernet_time_ratio']:.3f}, data passes {result['data_pass_ratio']:.3f}; "
                 f"best possible C10 {result['best_possible_cifar10']:.2f}")
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
