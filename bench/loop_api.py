"""The loop API (asp_tune.ProxyData) in a plain PyTorch loop: its overhead, and what it buys.

Part ``overhead`` (ResNet-8 on CIFAR-10 images, a user's own loop): epochs of the same loop without
the API, through it at r = 1 (``none``: no selection), at r = 1 with the memory learning from every
batch (``loss`` at r = 1 trains on all data but pays the memory), and at r = 0.5, 0.3, 0.1
(``loss``, no full first epoch, so every epoch costs r), timed round-robin in one process,
median of the repeats. Target: at r = 1 the API costs <= 1% of an epoch, and an epoch at r costs
about r.

Part ``quality`` (the tabular and text examples of ``examples/``): at r = 0.3 the API's default
strategy (``auto``) against a uniformly random subset of the same cost (``random`` with the same
ratio schedule and full first epoch: equal data passes) and full data, seeds 0, 1, 2: final test
accuracy and wall time, mean +- std, differences paired by seed.

Part ``update``: ``proxy.update``'s per-batch cost for ``loss`` with logits and targets passed (as the docs show),
with the loss alone, and the batch's cross-entropy beside them, at 10, 100 and 1,000 classes, after a warm-up round that is not timed.

    python bench/loop_api.py --quick          # every part, about 5 minutes on 2 CPU cores
    python bench/loop_api.py --part update --quick   # proxy.update's per-batch cost, seconds
    python bench/loop_api.py --part overhead --subset 0 --repeats 5
"""

from __future__ import annotations

import argparse
import importlib
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "examples"))
from _common import default_cifar10, machine, mean_std, spread, write_results  # noqa: E402

import asp_tune  # noqa: E402
from asp_tune import build_model, load_dataset  # noqa: E402

OVERHEAD_RUNS = {  # name -> (ratio, strategy) through the API; "plain" is the loop without it
    "plain": None, "api 1.0": (1.0, "none"), "api 1.0+memory": (1.0, "loss"),
    "api 0.5": (0.5, "loss"), "api 0.3": (0.3, "loss"), "api 0.1": (0.1, "loss"),
}


class LoopRun:
    """One model and its loop; ``epoch()`` trains one epoch and returns its seconds."""

    def __init__(self, spec, data: TensorDataset, shape, classes: int, batch_size: int, epochs: int):
        torch.manual_seed(0)
        self.model = build_model("resnet8", shape, classes)
        self.optimizer = torch.optim.SGD(self.model.parameters(), lr=0.05, momentum=0.9)
        self.proxy = None
        if spec is None:
            self.loader = DataLoader(data, batch_size=batch_size, shuffle=True)
        else:
            ratio, strategy = spec
            self.proxy = asp_tune.ProxyData(data, epochs=epochs, ratio=ratio, strategy=strategy,
                                            first_epoch_full=False)
            self.loader = self.proxy.loader(batch_size=batch_size)
        self.next_epoch = 0

    def epoch(self) -> tuple[float, int]:
        start = time.perf_counter()
        seen = 0
        if self.proxy is not None:
            self.proxy.set_epoch(self.next_epoch)
        self.next_epoch += 1
        self.model.train()
        for batch in self.loader:
            if self.proxy is None:
                x, y = batch
                loss = F.cross_entropy(self.model(x), y)
            else:
                idx, (x, y) = batch
                logits = self.model(x)
                loss = self.proxy.update(idx, F.cross_entropy(logits, y, reduction="none"), logits=logits, targets=y)
            self.optimizer.zero_grad()
            loss.backward()
            self.optimizer.step()
            seen += len(y)
        return time.perf_counter() - start, seen


def overhead(args) -> dict:
    data = load_dataset("cifar10", args.data_dir, subset=args.subset or None, val_fraction=0.02)
    x = (data.train.images.float() / 255 - torch.tensor(data.mean).view(1, 3, 1, 1)) / torch.tensor(data.std).view(1, 3, 1, 1)
    train = TensorDataset(x, data.train.labels)
    epochs = args.warmup + args.repeats
    runs = {name: LoopRun(spec, train, data.image_shape, data.num_classes, args.batch_size, epochs)
            for name, spec in OVERHEAD_RUNS.items()}
    times: dict[str, list[float]] = {name: [] for name in runs}
    for rep in range(epochs):
        for name, run in runs.items():  # round-robin: every run under the same conditions
            seconds, seen = run.epoch()
            if rep >= args.warmup:
                times[name].append(seconds)
            print(f"  rep {rep} {name:<15} {seconds:6.2f}s  samples {seen}", file=sys.stderr)
    median = {name: statistics.median(ts) for name, ts in times.items()}
    plain = median["plain"]
    table = {name: {"epoch_s": s, "ratio_to_plain": s / plain} for name, s in median.items()}
    result = {"samples": len(train), "batch_size": args.batch_size, "repeats": args.repeats, "epochs": table,
              "api_overhead_pct": 100 * (median["api 1.0"] / plain - 1),
              "memory_overhead_pct": 100 * (median["api 1.0+memory"] / plain - 1)}
    print(f"\nResNet-8, {len(train)} CIFAR-10 images, batch {args.batch_size}, median of {args.repeats} epochs")
    print(f"{'loop':<16}{'epoch s':>9}{'/ plain':>9}")
    for name, row in table.items():
        print(f"{name:<16}{row['epoch_s']:9.2f}{row['ratio_to_plain']:9.3f}")
    print(f"API overhead at r = 1: {result['api_overhead_pct']:+.1f}% (target <= 1%); with the memory learning "
          f"from every batch: {result['memory_overhead_pct']:+.1f}%")
    return result


QUALITY_RUNS = {"full data": (1.0, "none"), "auto": (0.3, "auto"), "random (same cost)": (0.3, "random")}


def quality(args) -> dict:
    import tabular_mlp
    import text_classifier

    out = {}
    for example, module in (("tabular", tabular_mlp), ("text", text_classifier)):
        rows = {name: [] for name in QUALITY_RUNS}
        for seed in args.seeds:
            for name, (ratio, strategy) in QUALITY_RUNS.items():
                start = time.perf_counter()
                accuracy, fraction = module.train(ratio, strategy, seed)
                rows[name].append({"seed": seed, "accuracy": accuracy, "fraction": fraction,
                                   "seconds": time.perf_counter() - start})
                print(f"  {example} seed {seed} {name:<20} acc {accuracy:.4f} fraction {fraction:.3f} "
                      f"{rows[name][-1]['seconds']:.1f}s", file=sys.stderr)
        out[example] = summarise(rows)
        print_quality(example, out[example], args.seeds)
    return out


def summarise(rows: dict[str, list[dict]]) -> dict:
    """Per run: mean and sample std (ddof 1) over seeds of accuracy and seconds; auto - random paired by seed."""
    summary = {}
    for name, part in rows.items():
        acc = [r["accuracy"] for r in part]
        sec = [r["seconds"] for r in part]
        summary[name] = {"accuracy_mean": float(np.mean(acc)), "accuracy_std": spread(acc),
                         "seconds_mean": float(np.mean(sec)), "seconds_std": spread(sec),
                         "data_fraction": float(np.mean([r["fraction"] for r in part])), "runs": part}
    by_seed = {r["seed"]: r["accuracy"] for r in rows["random (same cost)"]}
    delta = [r["accuracy"] - by_seed[r["seed"]] for r in rows["auto"] if r["seed"] in by_seed]
    summary["auto - random, paired"] = {"mean": float(np.mean(delta)), "std": spread(delta), "per_seed": delta}
    return summary


def print_quality(example: str, summary: dict, seeds) -> None:
    print(f"\n{example}: r = 0.3, seeds {seeds}")
    print(f"{'run':<22}{'test accuracy':>20}{'wall s':>16}{'data fraction':>15}")
    for name in QUALITY_RUNS:
        s = summary[name]
        acc, sec = [r["accuracy"] for r in s["runs"]], [r["seconds"] for r in s["runs"]]
        print(f"{name:<22}{mean_std(acc, 4):>20}{mean_std(sec, 2):>16}{s['data_fraction']:>15.3f}")
    print(f"auto - random (paired by seed): {mean_std(summary['auto - random, paired']['per_seed'], 4, signed=True)}")


def render(path: Path) -> int:
    """``--render``: the quality part's summaries computed again from the file's runs (ddof 1), written back."""
    import json

    result = json.loads(path.read_text())
    for example, summary in result.get("quality", {}).items():
        rows = {name: summary[name]["runs"] for name in QUALITY_RUNS}
        result["quality"][example] = summarise(rows)
        print_quality(example, result["quality"][example], sorted({r["seed"] for r in rows["auto"]}))
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"\nwrote {path} (summaries written again from its runs)")
    return 0


def update_cost(args) -> dict:
    """Part ``update``: the per-batch cost of ``proxy.update`` for ``loss`` (it reads the loss alone) given logits
    and targets as the docs show, against the loss alone and against the batch's cross-entropy itself, at 10, 100
    and 1,000 classes (batch 256, one thread, medians of round-robin repeats): what the memory costs a step."""
    from asp_tune import ProxyData

    torch.set_num_threads(1)
    rows = {}
    for classes in (10, 100, 1000):
        data = TensorDataset(torch.randn(20000, 2), torch.randint(0, classes, (20000,)))
        proxy = ProxyData(data, 3, ratio=0.3, strategy="loss")
        proxy.set_epoch(0)
        idx, logits = torch.arange(256), torch.randn(256, classes)
        targets = torch.randint(0, classes, (256,))
        losses = F.cross_entropy(logits, targets, reduction="none")
        calls = {"update_with_logits": lambda: proxy.update(idx, losses, logits=logits, targets=targets),
                 "update_loss_only": lambda: proxy.update(idx, losses),
                 "cross_entropy": lambda: F.cross_entropy(logits, targets, reduction="none")}
        times: dict[str, list[float]] = {k: [] for k in calls}
        for call in calls.values():  # a warm-up round, not timed: the first calls at a new size allocate and
            for _ in range(50):      # dispatch cold (the first cross-entropy timed 43 us at 10 classes, 21 at 100)
                call()
        for _ in range(args.repeats * 4):
            for name, call in calls.items():
                start = time.perf_counter()
                for _ in range(50):
                    call()
                times[name].append((time.perf_counter() - start) / 50 * 1e6)
        rows[classes] = {k: statistics.median(v) for k, v in times.items()}
        print(f"{classes:5d} classes: update with logits {rows[classes]['update_with_logits']:7.0f} us, loss only "
              f"{rows[classes]['update_loss_only']:6.0f} us, the batch's cross-entropy "
              f"{rows[classes]['cross_entropy']:6.0f} us per batch of 256")
    return rows


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--quick", action="store_true", help="3,000 images, 3 repeats")
    p.add_argument("--part", choices=("overhead", "quality", "update", "all"), default="all")
    p.add_argument("--data-dir", default=default_cifar10())
    p.add_argument("--subset", type=int, default=10000, help="training images (0: all)")
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--seeds", type=lambda s: [int(v) for v in s.split(",")], default=[0, 1, 2])
    p.add_argument("--name", default=None)
    p.add_argument("--render", default=None, metavar="JSON",
                   help="write a results file's quality summaries again from its runs (today's statistics), "
                        "running nothing")
    args = p.parse_args(argv)
    if args.render:
        return render(Path(args.render))
    if args.quick:
        args.subset, args.repeats = 3000, 3
    importlib.import_module("torch._dynamo")  # imported by torch.optim on first use: not a loop's cost
    result = {"machine": machine(), "args": {k: v for k, v in vars(args).items()}}
    if args.part in ("overhead", "all"):
        result["overhead"] = overhead(args)
    if args.part in ("quality", "all"):
        result["quality"] = quality(args)
    if args.part in ("update", "all"):
        result["update"] = update_cost(args)
    name = args.name or f"loop_api-{'quick' if args.quick else 'full'}"
    print(f"\nwrote {write_results(name, result)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
