"""A pack's members choosing their subsets: one at a time against together, in one run.

K digits MLP trainers (one data set, learning rates apart, the same seed and strategy, as in a pack) train a
few epochs each so that their memories differ; then one epoch's plans are timed both ways from the same
state: each member's ``ProxySelector.plan`` in turn (what a pack did before), and
``ProxySelector.plan_together`` (what a pack does now: one vectorised pass). Both must give every member the
same plan (indices and loss weights), checked here. The epoch is past the unseen-first epochs, so each member
draws by the calibrated rule (calibration, class-balanced inclusion probabilities, systematic sampling).
Then a pack of the K trains on, its epochs taking turns: with its plans drawn together, and with them drawn one
at a time (``plan_together`` replaced by a loop over ``plan``); the median epoch of each is reported
(``statistics.median``). In both parts the two arms alternate which goes first from repeat to repeat.

    python bench/pack_selection.py          # about 10 s on 2 CPU cores
    python bench/pack_selection.py --device cuda
"""

from __future__ import annotations

import argparse
import dataclasses
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import publish  # noqa: E402

from asp_tune.build import build_trainer  # noqa: E402
from asp_tune.config import TrainConfig  # noqa: E402
from asp_tune.device import synchronize  # noqa: E402
from asp_tune.pack import Pack  # noqa: E402
from asp_tune.proxy import ProxySelector  # noqa: E402


def measure(members: int, epochs_before: int, repeats: int, device: str) -> dict:
    config = TrainConfig(dataset="digits", model="mlp", batch_size=64, epochs=epochs_before + 200, ratio=0.3,
                         metric="loss", first_epoch_full=False, seed=0, device=device)
    first = build_trainer(config)
    trainers = [first] + [build_trainer(dataclasses.replace(config, lr=0.01 * (k + 2)), data=first.data)
                          for k in range(members - 1)]
    for trainer in trainers:
        for _ in range(epochs_before):
            trainer.train_epoch()
    selectors = [t.selector for t in trainers]
    epoch = epochs_before
    saved = [(s.generator.get_state(), s.seen.clone(), s.times_selected.clone()) for s in selectors]

    def restore() -> None:
        for s, (state, seen, times) in zip(selectors, saved):
            s.generator.set_state(state)
            s.seen.copy_(seen)
            s.times_selected.copy_(times)

    def one_at_a_time():
        return [s.plan(epoch) for s in selectors]

    def together():
        return ProxySelector.plan_together(selectors, [epoch] * members)

    restore()
    alone = one_at_a_time()
    restore()
    joint = together()
    same = all(torch.equal(a.indices, b.indices) and (a.weights is None) == (b.weights is None)
               and (a.weights is None or torch.equal(a.weights, b.weights)) for a, b in zip(alone, joint))
    times = {"one at a time": [], "together": []}
    arms = [("one at a time", one_at_a_time), ("together", together)]
    for i in range(repeats):  # interleaved, so that a slow moment of the machine hits both; who goes first alternates
        for label, plan in (arms if i % 2 == 0 else arms[::-1]):
            restore()
            synchronize(first.device)
            start = time.perf_counter()
            plan()
            synchronize(first.device)
            times[label].append(time.perf_counter() - start)
    best = {k: min(v) * 1e3 for k, v in times.items()}
    median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    restore()
    epochs = pack_epochs(trainers, repeats=max(4, repeats // 5))
    return {"members": members, "samples": first.selector.num_samples, "selected": alone[0].count,
            "one_at_a_time_ms": median["one at a time"], "together_ms": median["together"],
            "best_one_at_a_time_ms": best["one at a time"], "best_together_ms": best["together"],
            "ratio": median["one at a time"] / median["together"], "same_plans": same, **epochs}


def pack_epochs(trainers: list, repeats: int) -> dict:
    """Median pack epoch (ms) with the members' plans drawn together and one at a time, epochs taking turns."""
    pack = Pack(trainers)
    together = ProxySelector.plan_together
    alone = staticmethod(lambda selectors, epochs: [s.plan(e) for s, e in zip(selectors, epochs)])
    times = {"together": [], "one at a time": []}
    try:
        planners = [("together", staticmethod(together)), ("one at a time", alone)]
        for i in range(repeats):  # taking turns, and who goes first alternates
            for label, planner in (planners if i % 2 == 0 else planners[::-1]):
                ProxySelector.plan_together = planner
                synchronize(pack.device)
                start = time.perf_counter()
                pack.train_epoch()
                synchronize(pack.device)
                times[label].append(time.perf_counter() - start)
    finally:
        ProxySelector.plan_together = staticmethod(together)
    median = {k: statistics.median(v) * 1e3 for k, v in times.items()}
    return {"epoch_plans_one_at_a_time_ms": median["one at a time"], "epoch_plans_together_ms": median["together"]}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--members", default="7,32", help="pack sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=50)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args()
    rows = [measure(int(k), 5, args.repeats, args.device) for k in args.members.split(",")]
    lines = ["| members | samples (selected) | plans one at a time ms | plans together ms | x | same plans "
             "| pack epoch ms, plans one at a time | pack epoch ms, plans together |",
             "|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['members']} | {r['samples']} ({r['selected']}) | {r['one_at_a_time_ms']:.1f} | "
              f"{r['together_ms']:.1f} | {r['ratio']:.1f} | {r['same_plans']} | "
              f"{r['epoch_plans_one_at_a_time_ms']:.1f} | {r['epoch_plans_together_ms']:.1f} |" for r in rows]
    publish(f"pack-selection-{args.device.split(':')[0]}", rows, "\n".join(lines) + "\n", args.out)
    if not all(r["same_plans"] for r in rows):
        sys.exit("the plans differ")


if __name__ == "__main__":
    main()
