"""Data-layer cost model: does an epoch at ratio r cost about r of a full epoch?

In one process, on the same model and data, epochs at ratio 1.0 (no selection) and at constant
ratios 0.5 / 0.3 / 0.1 with the mixture metric are timed round-robin, so drift hits all alike.
Also: memory update + selection as a share of a full epoch, and one 10% selection from
N = 50,000 and N = 1,281,167 on the CPU (and on the GPU when present).

    python bench/overhead.py --quick            # ResNet-8, 5k CIFAR-10 images, < 3 min on 2 cores
    python bench/overhead.py --device cuda --model resnet18 --subset 0
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_cifar10, machine, write_results  # noqa: E402

from asp_tune import ProxySelector, TrainConfig, Trainer, load_dataset  # noqa: E402
from asp_tune.selection import SelectionRule, select_subset  # noqa: E402
from asp_tune.device import resolve_device, synchronize  # noqa: E402

TARGETS = {"time_ratio_0.1": 0.15, "selection_overhead_pct": 2.0, "select_1.28M_ms": 100.0}


def time_call(fn, repeats: int, device: torch.device) -> float:
    """Median wall seconds of ``fn`` over ``repeats`` calls, after one warm-up."""
    fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - t)
    return statistics.median(times)


RUNS = {  # name -> (ratio, metric)
    "1.0": (1.0, "none"),
    "1.0+memory": (1.0, "mixture"),  # all samples, memory updated every batch: the in-loop cost
    "0.5": (0.5, "mixture"),
    "0.3": (0.3, "mixture"),
    "0.1": (0.1, "mixture"),
}


def epoch_times(args, data, device) -> dict[str, float]:
    trainers = {}
    for name, (r, metric) in RUNS.items():
        cfg = TrainConfig(dataset="cifar10", model=args.model, epochs=1000, batch_size=args.batch_size,
                          ratio=r, metric=metric, first_epoch_full=False, device=str(device), seed=0)
        trainers[name] = Trainer(cfg, data=data)
    times: dict[str, list[float]] = {name: [] for name in RUNS}
    for rep in range(args.warmup + args.repeats):
        for name, trainer in trainers.items():  # round-robin: the same conditions for every run
            rec = trainer.train_epoch()
            if rep >= args.warmup:
                times[name].append(rec["epoch_seconds"])
            print(f"  rep {rep} {name:<10} {rec['epoch_seconds']:.3f}s  metric={rec['metric_used']:<10} "
                  f"selected={rec['selected']}", file=sys.stderr)
    return {name: statistics.median(ts) for name, ts in times.items()}


def selection_overhead(n: int, num_classes: int, batch_size: int, device: torch.device) -> dict[str, float]:
    """Seconds per epoch for memory updates over all n samples and one 10% plan()."""
    sel = ProxySelector(n, epochs=100, ratio=0.1, metric="loss", first_epoch_full=False, device=device,
                        labels=torch.randint(0, num_classes, (n,), device=device), unseen_first=False)
    logits = torch.randn(batch_size, num_classes, device=device)
    targets = torch.randint(0, num_classes, (batch_size,), device=device)
    batches = [torch.arange(s, min(s + batch_size, n), device=device) for s in range(0, n, batch_size)]

    def update_all():
        for idx in batches:
            sel.observe(idx, logits[: idx.numel()], targets[: idx.numel()])

    update_s = time_call(update_all, 3, device)
    plan_s = time_call(lambda: sel.plan(1), 5, device)
    return {"memory_update_s": update_s, "plan_s": plan_s}


def selection_speed(device: torch.device) -> dict[str, float]:
    """One 10% selection with the default rule (class balance over 1,000 classes at 1.28M)."""
    out = {}
    rule = SelectionRule.from_settings(TrainConfig())
    for n, classes in ((50_000, 10), (1_281_167, 1000)):
        g = torch.Generator(device=device).manual_seed(0)
        v = torch.randn(n, device=device)
        labels = torch.randint(0, classes, (n,), device=device)
        out[f"select_{n}_ms"] = 1000 * time_call(lambda: select_subset(v, n // 10, rule, g, labels), 7, device)
    return out


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="ResNet-8 on a 5k-image subset")
    p.add_argument("--data-dir", default=default_cifar10())
    p.add_argument("--model", default="resnet8")
    p.add_argument("--subset", type=int, default=None, help="training images (0 = all 50k)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=None)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="auto")
    p.add_argument("--out-dir", default=None)
    args = p.parse_args()
    subset = args.subset if args.subset is not None else (5000 if args.quick else 0)
    args.repeats = args.repeats or (2 if args.quick else 3)
    device = resolve_device(args.device)

    data = load_dataset("cifar10", args.data_dir, subset=subset or None, test_subset=1000, val_fraction=0.02)
    n = len(data.train)
    print(f"{data.describe()} | {args.model} | {device} | {machine()}", file=sys.stderr)
    per_epoch = epoch_times(args, data, device)
    full = per_epoch["1.0"]
    over = selection_overhead(n, data.num_classes, args.batch_size, device)
    speed_cpu = selection_speed(torch.device("cpu"))
    speed_dev = selection_speed(device) if device.type == "cuda" else {}

    print(f"\nEpoch time vs ratio ({args.model}, N={n}, {device}; median of {args.repeats})")
    print(f"{'run':>10} {'epoch s':>9} {'time(r)/time(1)':>16} {'ideal':>7}")
    for name, t in per_epoch.items():
        print(f"{name:>10} {t:>9.3f} {t / full:>16.3f} {RUNS[name][0]:>7.2f}")
    isolated_pct = 100 * (over["memory_update_s"] + over["plan_s"]) / full
    in_loop_pct = 100 * (per_epoch["1.0+memory"] - full + over["plan_s"]) / full
    print(f"\nisolated: memory update over N {1000 * over['memory_update_s']:.1f} ms + plan (select 10% + "
          f"shuffle) {1000 * over['plan_s']:.1f} ms = {isolated_pct:.2f}% of a full epoch")
    print(f"in the training loop: full epoch with memory updates vs without, plus one plan: {in_loop_pct:.2f}%")
    for k, v in speed_cpu.items():
        print(f"CPU {k}: {v:.1f}")
    for k, v in speed_dev.items():
        print(f"{device} {k}: {v:.2f}")
    results = {
        "model": args.model, "num_samples": n, "device": str(device), "batch_size": args.batch_size,
        "quick": args.quick, "machine": machine(),
        "epoch_seconds": per_epoch,
        "time_ratio": {name: t / full for name, t in per_epoch.items()},
        "memory_update_ms": 1000 * over["memory_update_s"], "plan_ms": 1000 * over["plan_s"],
        "selection_overhead_isolated_pct": isolated_pct,
        "selection_overhead_in_loop_pct": in_loop_pct,
        "cpu_selection_ms": speed_cpu, "device_selection_ms": speed_dev,
    }
    checks = {
        "time_ratio_0.1": per_epoch["0.1"] / full,
        "selection_overhead_pct": isolated_pct,
        "select_1.28M_ms": speed_cpu["select_1281167_ms"],
    }
    results["targets"] = {k: {"value": v, "target": TARGETS[k], "met": v <= TARGETS[k]} for k, v in checks.items()}
    print("\nTargets:")
    for k, v in results["targets"].items():
        print(f"  {k:<24} {v['value']:.3f} (target <= {v['target']}) {'met' if v['met'] else 'NOT met'}")
    name = f"overhead-{args.model}-{device.type}{'-quick' if args.quick else ''}"
    print(f"\nwrote {write_results(name, results, args.out_dir)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
