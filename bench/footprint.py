"""What `--pack auto` reckons one configuration's training holds in memory, against what one training step takes.

For each network, in a fresh process: the footprint `auto` measures (:func:`asp_tune.footprint.measure_footprint`:
weights, gradients, momentum, and the activations autograd saves, measured on 8 samples and scaled to the
batch), the estimate it used before (4 x the weights, plus 16 x the batch's input), and the memory one training
step (forward, backward, SGD step) really took: on a CPU the growth of the process's peak resident memory, on a
GPU the growth of the allocator's peak (after a first forward and backward on 2 samples, which the libraries'
first calls would otherwise dominate). `auto` lets footprints fill 0.3 of the free memory
(``asp_tune.pack.AUTO_MEMORY_SHARE``), so a ratio measured / footprint under 3.3 is a pack that fits.

    python bench/footprint.py            # about 30 s on 2 CPU cores
    python bench/footprint.py --device cuda
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import publish  # noqa: E402

CASES = [  # network, input shape, batch, members (1: one network alone; K: a pack of K, as a pack trains them)
    ("digits MLP", (64,), 64, 1), ("digits MLP", (64,), 64, 16), ("digits MLP", (64,), 4096, 1),
    ("ResNet-8 (CIFAR-10)", (3, 32, 32), 128, 1), ("ResNet-8 (CIFAR-10)", (3, 32, 32), 128, 4),
    ("ResNet-8 (CIFAR-10)", (3, 32, 32), 512, 1), ("torchvision ResNet-18 (224 px)", (3, 224, 224), 32, 1),
]

ONE = r"""
import json, resource, sys, torch, torchvision
from asp_tune.config import TrainConfig
from asp_tune.device import autocast
from asp_tune.footprint import measure_footprint
from asp_tune.models import mlp, resnet8
from asp_tune.pack import StackedOptimizer
from asp_tune.stacked import StackedNetwork, stack_parameters
name, device, batch, members, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), tuple(json.loads(sys.argv[5]))
def build():
    if name.startswith("digits"): return mlp(shape, 10)
    if name.startswith("ResNet-8"): return resnet8(shape, 10)
    return torchvision.models.resnet18(num_classes=10)
models = [build().to(device) for _ in range(members)]
amp = device == "cuda"  # runs train under bf16 autocast on a GPU
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
def sync():
    if device == "cuda": torch.cuda.synchronize()
if members == 1:
    x = torch.randn(batch, *shape, device=device)
    optimizer = torch.optim.SGD(models[0].parameters(), lr=0.01, momentum=0.9)
    def forward(x):
        with autocast(torch.device(device), amp):
            return models[0](x).float().logsumexp(1).mean()
else:
    params, buffers = stack_parameters(models)
    net = StackedNetwork(models[0]).train()
    x = torch.randn(members, batch, *shape, device=device)
    optimizer = StackedOptimizer([TrainConfig(lr=0.01, momentum=0.9)] * members, params)
    def forward(x):
        with autocast(torch.device(device), amp):
            return net(params, buffers, x)[0].float().logsumexp(2).mean(1).sum()
def step():
    forward(x).backward()
    optimizer.step(*(() if members == 1 else (params,)))
full = x
x = x[:2] if members == 1 else x[:, :2]  # a first forward and backward on 2 samples: the libraries' first calls
forward(x).backward()
for model in models:
    model.zero_grad(set_to_none=True)
if members > 1:
    for p in params.values(): p.grad = None
x = full
sync()
if device == "cuda":
    torch.cuda.reset_peak_memory_stats(); start = torch.cuda.memory_allocated()
else:
    start = max(resident(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
step()
sync()
peak = torch.cuda.max_memory_allocated() if device == "cuda" else resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
weights = sum(p.numel() * p.element_size() for p in models[0].parameters())
footprint = measure_footprint(models[0], torch.randn(8, *shape, device=device), batch, "sgd", amp)  # after the step
old = weights * 4 + batch * torch.Size(shape).numel() * 4 * 16  # the guess: 4x the weights, 16x the batch's input
print(json.dumps({"footprint": footprint.total, "activations": footprint.activations, "old_estimate": old,
                  "measured": (peak - start) / members + weights}))
"""


def measure(case: tuple, device: str, quick: bool) -> dict:
    name, shape, batch, members = case
    batch = max(8, batch // 4) if quick else batch
    done = subprocess.run([sys.executable, "-c", ONE, name, device, str(batch), str(members), json.dumps(shape)],
                          capture_output=True, text=True, check=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"network": name, "batch": batch, "members": members, **row,
            "measured_over_footprint": row["measured"] / row["footprint"],
            "measured_over_old": row["measured"] / row["old_estimate"]}


def markdown(rows: list[dict], device: str) -> str:
    mb = lambda b: f"{b / 2 ** 20:.1f}"  # noqa: E731
    lines = [f"| network | batch | trained | footprint MB (activations) | old estimate MB | one step took MB a member "
             f"({device}) | took / footprint | took / old estimate |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        trained = "alone" if r["members"] == 1 else f"pack of {r['members']}"
        lines.append(f"| {r['network']} | {r['batch']} | {trained} | {mb(r['footprint'])} ({mb(r['activations'])}) | "
                     f"{mb(r['old_estimate'])} | {mb(r['measured'])} | {r['measured_over_footprint']:.2f} | "
                     f"{r['measured_over_old']:.2f} |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu", help="cpu or cuda (default cpu)")
    parser.add_argument("--quick", action="store_true", help="batches a quarter the size")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args()
    rows = [measure(case, args.device, args.quick) for case in CASES]
    publish(f"footprint-{'quick' if args.quick else 'full'}-{args.device}", rows, markdown(rows, args.device), args.out)


if __name__ == "__main__":
    main()
