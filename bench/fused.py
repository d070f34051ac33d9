"""Configurations in packs against one at a time: the same successive halving, the same seeds, in one process.

For each problem, N configurations (learning rate, weight decay and momentum drawn per configuration) go
through synchronous successive halving (rungs 1, 3, 9 epochs, eta 3) on proxy data (r = 0.3), twice in one
process: one configuration at a time (``pack_size=1``) and in packs (``--pack``, default ``auto``: the size
the device holds, or 1 where a measurement of the first steps shows fusion losing). Both share one copy of
the data and build each configuration's trainer the same way, so what differs is only fusion. Reported:
wall time with its breakdown (building the trainers, training, validation), the ratio of summed training
seconds and of wall, and whether the stopped configurations and the pick are the same.

What this does not measure: one Ray trial per process (each trial's start-up, ~0.3-2 s on 2 cores, is what a
pack also saves; ``bench/hpo_speedup.py`` measures it). With ``--device cuda`` it also reports configurations
per GPU-hour and how busy the GPU was in each arm (NVML, sampled every 50 ms); ``bench/gpu_packs.sh`` runs it
there with the other GPU measurements of packs in one call.

The two arms take turns at going first: with ``--repeats R`` each repeat runs both, one at a time first where
seed + repeat is even and packs first where it is odd (so the default seed 0 and one repeat runs one at a time
first, seed 1 packs first), each repeat a row of its own. A problem asked for by name (``--problems``) that
cannot run (CIFAR-10's archive missing) is an error; the default list leaves it out with a message.

    python bench/fused.py --quick          # about 4 minutes on 2 CPU cores
    python bench/fused.py --problems digits-mlp,tabular-mlp --repeats 4   # arms alternating first
"""

from __future__ import annotations

import argparse
import dataclasses
import random
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import DeviceBusy, chosen_problems, default_cifar10, publish  # noqa: E402

from asp_tune.config import TrainConfig  # noqa: E402
from asp_tune.tune.fused import successive_halving  # noqa: E402

PROBLEMS = {
    "digits-mlp": ({"dataset": "digits", "model": "mlp", "batch_size": 64}, 64, 27),
    "tabular-mlp": ({"dataset": "trust:tabular", "model": "mlp", "model_args": {"hidden": 128}, "batch_size": 128},
                    64, 27),
    "cifar10-resnet8": ({"dataset": "cifar10", "model": "resnet8", "batch_size": 128, "subset": 5000,
                         "test_subset": 1000, "storage": "device"}, 32, 16),
}


def draw(base: TrainConfig, count: int, seed: int) -> list[TrainConfig]:
    rng = random.Random(seed)
    return [dataclasses.replace(base, lr=10 ** rng.uniform(-2.5, -0.5), weight_decay=10 ** rng.uniform(-5, -2.5),
                                momentum=rng.uniform(0.5, 0.95)) for _ in range(count)]


def run_problem(name: str, quick: bool, pack: str, device: str, seed: int, repeat: int = 0) -> dict:
    fixed, count, quick_count = PROBLEMS[name]
    fixed = dict(fixed)
    if name == "cifar10-resnet8":
        fixed["data_dir"] = default_cifar10()
        if quick:
            fixed.update(subset=2000, test_subset=500)
    base = TrainConfig(**fixed, epochs=9, ratio=0.3, metric="loss", first_epoch_full=False, device=device, seed=seed)
    configs = draw(base, quick_count if quick else count, seed)
    successive_halving(configs[:2], [1], 3, 2)  # untimed: the data set's loading and the first calls' set-up
    arms = {}
    order = [("one at a time", 1), (f"packs ({pack})", pack)]
    if (seed + repeat) % 2:  # the arms take turns at going first
        order.reverse()
    for label, size in order:
        with DeviceBusy(device) as busy:
            result = successive_halving(configs, [1, 3, 9], 3, size)
        arms[label] = {"wall_s": result.wall_time_s, **result.breakdown, "pack": result.pack.size,
                       "configurations_per_hour": 3600 * len(configs) / result.wall_time_s,
                       "device_busy_pct": busy.percent,
                       "pack_reason": result.notes, "best": result.best,
                       "stopped": sorted(result.trials[result.trials["status"] == "STOPPED"]["config"].tolist()),
                       "best_val_score": float(result.trials.set_index("config").loc[result.best, "final_val_score"])
                       if result.best is not None else None}
    one, packed = arms["one at a time"], arms[f"packs ({pack})"]
    return {"problem": name, "configurations": len(configs), "arms": arms, "repeat": repeat,
            "first": order[0][0],
            "train_ratio": one["train_s"] / packed["train_s"] if packed["train_s"] else None,
            "wall_ratio": one["wall_s"] / packed["wall_s"] if packed["wall_s"] else None,
            "same_pick": one["best"] == packed["best"], "same_stopped": one["stopped"] == packed["stopped"]}


def markdown(rows: list[dict]) -> str:
    lines = ["| problem | configurations | pack | one at a time: wall s (build / train / validate) | packs: wall s "
             "(build / train / validate) | training x | wall x | same stopped, same pick |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        one, packed = r["arms"]["one at a time"], next(v for k, v in r["arms"].items() if k != "one at a time")
        cell = lambda a: (f"{a['wall_s']:.1f} ({a['startup_s']:.1f} / {a['train_s']:.1f} / "  # noqa: E731
                          f"{a['validation_s']:.1f})")
        lines.append(f"| {r['problem']} | {r['configurations']} | {packed['pack']} | {cell(one)} | {cell(packed)} | "
                     f"{r['train_ratio']:.2f} | {r['wall_ratio']:.2f} | {r['same_stopped']}, {r['same_pick']} |")
    busy = [r for r in rows if any(a.get("device_busy_pct") is not None for a in r["arms"].values())]
    if busy:  # on a GPU: what one device does in an hour, and how busy it was
        lines += ["", "| problem | one at a time: configurations per GPU-hour / GPU busy % | packs: configurations "
                      "per GPU-hour / GPU busy % | configurations per GPU-hour x |", "|---|---|---|---|"]
        for r in busy:
            one, packed = r["arms"]["one at a time"], next(v for k, v in r["arms"].items() if k != "one at a time")
            cell = lambda a: f"{a['configurations_per_hour']:.0f} / {a['device_busy_pct'] or 0:.0f}"  # noqa: E731
            lines.append(f"| {r['problem']} | {cell(one)} | {cell(packed)} | "
                         f"{packed['configurations_per_hour'] / one['configurations_per_hour']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer configurations and a smaller CIFAR-10 subset")
    parser.add_argument("--pack", default="auto", help="configurations per pack, or auto")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--problems", default=None, help=f"default: {','.join(PROBLEMS)} (CIFAR-10's left out, with "
                        "a message, where its archive is missing)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--repeats", type=int, default=1, help="runs of both arms per problem, alternating first")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args()
    torch.set_num_threads(max(1, torch.get_num_threads()))
    problems = chosen_problems(parser, args.problems, PROBLEMS)
    rows = []
    for name in problems:
        for repeat in range(args.repeats):
            start = time.perf_counter()
            rows.append(run_problem(name, args.quick, args.pack, args.device, args.seed, repeat))
            print(f"{name} (repeat {repeat}, {rows[-1]['first']} first): done in {time.perf_counter() - start:.0f} s",
                  flush=True)
    table = markdown(rows)
    publish(f"fused-{'quick' if args.quick else 'full'}-{args.device}", rows, table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
