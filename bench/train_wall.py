"""What a user waits for: one training run end to end at r = 1 and at proxy ratios, side by side.

Each run is timed from nothing to its test accuracy, broken into start-up (model, optimiser,
data to the device), training, validation and the final test pass; the data set is decoded
once beforehand (its time is printed apart, as a search pays it once). Runs alternate in order
over the repeats, so drift hits every ratio alike.

    python bench/train_wall.py --quick                      # ResNet-8, 5k CIFAR-10 images, 2 CPU cores
    python bench/train_wall.py --device cuda --subset 0     # all 50k images on a GPU
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import default_cifar10, machine, write_results  # noqa: E402

from asp_tune import TrainConfig, Trainer, load_dataset  # noqa: E402
from asp_tune.device import resolve_device, synchronize  # noqa: E402

PARTS = ("startup_s", "train_s", "val_s", "test_s", "wall_s")


def one_run(data, device, args, ratio: float) -> dict[str, float]:
    cfg = TrainConfig(dataset="cifar10", model=args.model, epochs=args.epochs, batch_size=args.batch_size,
                      ratio=ratio, metric="none" if ratio == 1.0 else "loss", device=str(device), seed=0)
    start = time.perf_counter()
    trainer = Trainer(cfg, data=data)
    synchronize(device)
    startup = time.perf_counter() - start
    while not trainer.done:
        trainer.train_epoch()
    test_start = time.perf_counter()
    accuracy, _ = trainer.evaluate("test")
    synchronize(device)
    end = time.perf_counter()
    return {"startup_s": startup, "train_s": trainer.train_seconds, "val_s": trainer.val_seconds,
            "test_s": end - test_start, "wall_s": end - start, "test_accuracy": accuracy,
            "data_passes": trainer.samples_seen / len(data.train)}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--quick", action="store_true", help="ResNet-8 on a 5k-image subset, 2 repeats")
    p.add_argument("--data-dir", default=default_cifar10())
    p.add_argument("--model", default="resnet8")
    p.add_argument("--subset", type=int, default=None, help="training images (0 = all 50k)")
    p.add_argument("--epochs", type=int, default=10)
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--ratios", default="1.0,0.3,0.1")
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--device", default="auto")
    p.add_argument("--name", default=None, help="results file name (default: train_wall-<model>-<device>)")
    p.add_argument("--out-dir", default=None, help="where the JSON goes (default: bench/results)")
    args = p.parse_args()
    subset = args.subset if args.subset is not None else (5000 if args.quick else 0)
    ratios = [float(r) for r in args.ratios.split(",")]
    device = resolve_device(args.device)

    t = time.perf_counter()
    data = load_dataset("cifar10", args.data_dir, subset=subset or None, val_fraction=0.02)
    load_s = time.perf_counter() - t
    print(f"{data.describe()} | {args.model} | {device} | load {load_s:.1f}s | {machine()}", file=sys.stderr)
    one_run(data, device, with_changes(args, epochs=1), 1.0)  # warm-up: cuDNN autotuning, allocator

    runs: dict[float, list[dict[str, float]]] = {r: [] for r in ratios}
    for rep in range(args.repeats):
        for r in (ratios if rep % 2 == 0 else ratios[::-1]):
            runs[r].append(one_run(data, device, args, r))
            print(f"  rep {rep} r={r}: {runs[r][-1]['wall_s']:.1f}s", file=sys.stderr)

    med = {r: {k: statistics.median(x[k] for x in rs) for k in rs[0]} for r, rs in runs.items()}
    full = med[1.0] if 1.0 in med else med[max(ratios)]
    print(f"\n{args.epochs} epochs, {args.model}, N={len(data.train)}, {device}; median of {args.repeats} "
          f"(data set decoded once: {load_s:.1f}s)")
    # the spread beside the median: each repeat's wall s, and its wall ratio against the same repeat's r = 1
    ref = 1.0 if 1.0 in runs else max(ratios)
    walls = {r: [x["wall_s"] for x in rs] for r, rs in runs.items()}
    paired = {r: [w / f for w, f in zip(walls[r], walls[ref])] for r in runs}
    print(f"{'r':>5} {'start-up':>9} {'train':>8} {'val':>7} {'test':>7} {'wall s':>8} {'[min, max]':>16} "
          f"{'wall ratio':>11} {'[min, max]':>16} {'passes':>7} {'test acc':>9}")
    for r, m in med.items():
        print(f"{r:>5} {m['startup_s']:>9.2f} {m['train_s']:>8.2f} {m['val_s']:>7.2f} {m['test_s']:>7.2f} "
              f"{m['wall_s']:>8.2f} {f'[{min(walls[r]):.2f}, {max(walls[r]):.2f}]':>16} "
              f"{m['wall_s'] / full['wall_s']:>11.3f} {f'[{min(paired[r]):.3f}, {max(paired[r]):.3f}]':>16} "
              f"{m['data_passes']:>7.2f} {m['test_accuracy']:>9.4f}")
    name = args.name or f"train_wall-{args.model}-{device.type}{'-quick' if args.quick else ''}"
    path = write_results(name, {"model": args.model, "num_samples": len(data.train), "device": str(device),
                                "epochs": args.epochs, "decode_s": load_s, "machine": machine(),
                                "median": {str(r): m for r, m in med.items()},
                                "wall_s_min_max": {str(r): [min(w), max(w)] for r, w in walls.items()},
                                "wall_ratio_per_repeat": {str(r): v for r, v in paired.items()},
                                "runs": {str(r): rs for r, rs in runs.items()}}, args.out_dir)
    print(f"results: {path}")
    return 0


def with_changes(args: argparse.Namespace, **changes) -> argparse.Namespace:
    return argparse.Namespace(**{**vars(args), **changes})


if __name__ == "__main__":
    sys.exit(main())
