"""One training step of K configurations: one after another against one pack, per network, thread count and K.

What a pack can save at most: a pack trains K configurations in one vectorised step, so it saves the per-step
overhead of K - 1 separate forward and backward passes (Python, dispatch, small-kernel launches), never their
arithmetic. Where one configuration's step is already bound by arithmetic (a CPU core doing matrix products),
there is little to save; where it is bound by overhead (a GPU running a small network), most of it. The step is
:func:`asp_tune.pack.measure_fusion` (what ``--pack auto`` measures): forward, backward and an SGD update on
the problem's batch size, under the autocast runs use (bf16 on a GPU, none on a CPU), without the data
gathering and importance memories around it.

A problem asked for by name (``--problems``) that cannot run (CIFAR-10's archive missing) is an error; the
default list leaves it out with a message.

    python bench/pack_step.py --quick      # about a minute on 2 CPU cores
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import chosen_problems, default_cifar10, publish  # noqa: E402
from fused import PROBLEMS  # noqa: E402

from asp_tune.build import build_trainer  # noqa: E402
from asp_tune.config import TrainConfig  # noqa: E402
from asp_tune.pack import measure_fusion  # noqa: E402
from asp_tune.stacked import StackedNetwork  # noqa: E402


def without_vmap_casts(measure):
    """``measure()`` with a vmap pack left to vmap's own precision (:mod:`asp_tune.vmap_autocast` off)."""
    import asp_tune.stacked as stacked

    casts = stacked.autocast_under_vmap
    stacked.autocast_under_vmap = lambda device_type: None
    try:
        return measure()
    finally:
        stacked.autocast_under_vmap = casts


def network(name: str, device: str):
    """The problem's network and one training batch of its size."""
    fixed = dict(PROBLEMS[name][0])
    if name == "cifar10-resnet8":
        fixed.update(data_dir=default_cifar10(), subset=512, test_subset=128)
    trainer = build_trainer(TrainConfig(**fixed, epochs=1, device=device, seed=0))
    rows = min(trainer.config.batch_size, len(trainer.data.train))
    x, _, _ = next(iter(trainer.train_feeder.batches(torch.arange(rows), rows)))
    return trainer.model, x


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer steps timed")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--problems", default=None, help=f"default: {','.join(PROBLEMS)} (CIFAR-10's left out, with "
                        "a message, where its archive is missing)")
    parser.add_argument("--sizes", default="4,16", help="members per pack, comma-separated")
    parser.add_argument("--threads", default="1,2", help="CPU threads, comma-separated (ignored on a GPU)")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args()
    steps = 3 if args.quick else 10
    threads = [int(t) for t in args.threads.split(",")] if args.device == "cpu" else [torch.get_num_threads()]
    problems = chosen_problems(parser, args.problems, PROBLEMS)
    rows = []
    for name in problems:
        model, x = network(name, args.device)
        how = StackedNetwork(model).how
        for count in threads:
            torch.set_num_threads(count)
            for size in (int(k) for k in args.sizes.split(",")):
                alone, packed = measure_fusion(model, x, size, steps, rounds=1, amp=True)
                # the same pack through vmap, where the pack runs batched layers: what they save
                vmapped = (None if how == "vmap" else
                           measure_fusion(model, x, size, steps, batched_layers=False, rounds=1, amp=True)[1])
                # a vmap pack under autocast (a GPU's bf16) without the casts vmap skips: what they cost or save
                uncast = (without_vmap_casts(lambda: measure_fusion(model, x, size, steps, rounds=1, amp=True)[1])
                          if how == "vmap" and x.device.type == "cuda" else None)
                rows.append({"problem": name, "threads": count, "members": size, "batch": x.shape[0], "how": how,
                             "alone_ms": alone * 1e3, "pack_ms": packed * 1e3, "ratio": alone / packed,
                             "vmap_pack_ms": None if vmapped is None else vmapped * 1e3,
                             "uncast_pack_ms": None if uncast is None else uncast * 1e3})
                print(f"{name}, {count} thread(s), {size} members: one after another {alone * 1e3:.1f} ms, "
                      f"pack ({how}) {packed * 1e3:.1f} ms ({alone / packed:.2f}x)"
                      + ("" if vmapped is None else f", vmap {vmapped * 1e3:.1f} ms")
                      + ("" if uncast is None else f", without the casts {uncast * 1e3:.1f} ms"), flush=True)
    lines = ["| network | threads | members | batch | one after another ms | pack ms (how) | pack x | "
             "pack through vmap ms | vmap pack without autocast's casts ms |", "|---|---|---|---|---|---|---|---|---|"]
    lines += [f"| {r['problem']} | {r['threads']} | {r['members']} | {r['batch']} | {r['alone_ms']:.1f} | "
              f"{r['pack_ms']:.1f} ({r['how']}) | {r['ratio']:.2f} | "
              f"{'' if r['vmap_pack_ms'] is None else format(r['vmap_pack_ms'], '.1f')} | "
              f"{'' if r['uncast_pack_ms'] is None else format(r['uncast_pack_ms'], '.1f')} |" for r in rows]
    table = "\n".join(lines) + "\n"
    publish(f"pack-step-{'quick' if args.quick else 'full'}-{args.device}", rows, table, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
