"""What `--pack auto` reckons one configuration's training holds in memory, against what one training step takes.

For each network, in a fresh process: the footprint `auto` measures (:func:`asp_tune.footprint.measure_footprint`:
weights, gradients, momentum, and the activations autograd saves, measured on 8 samples and scaled to the
batch), the estimate it used before (4 x the weights, plus 16 x the batch's input), and the memory one training
step (forward, backward, SGD step) really took: on a CPU the growth of the process's peak resident memory, on a
GPU the growth of the allocator's peak. `auto` lets footprints fill 0.4 of the free memory
(``asp_tune.pack.AUTO_MEMORY_SHARE``), so a ratio measured / footprint under 2.5 is a pack that fits.

    python bench/footprint.py            # about a minute on 2 CPU cores
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

NETWORKS = {  # name: (input shape, batch)
    "digits MLP": ((64,), 4096),
    "ResNet-8 (CIFAR-10)": ((3, 32, 32), 512),
    "torchvision ResNet-18 (224 px)": ((3, 224, 224), 32),
}

ONE = r"""
import json, resource, sys, torch, torchvision
from asp_tune.footprint import measure_footprint
from asp_tune.models import mlp, resnet8
name, device, batch, shape = sys.argv[1], sys.argv[2], int(sys.argv[3]), tuple(json.loads(sys.argv[4]))
if name.startswith("digits"): model = mlp(shape, 10)
elif name.startswith("ResNet-8"): model = resnet8(shape, 10)
else: model = torchvision.models.resnet18(num_classes=10)
model = model.to(device)
x = torch.randn(batch, *shape, device=device)
footprint = measure_footprint(model, torch.randn(8, *shape, device=device), batch, "sgd")
weights = sum(p.numel() * p.element_size() for p in model.parameters())
old = weights * 4 + batch * x[0].numel() * 4 * 16
optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
def resident():
    return int(open("/proc/self/statm").read().split()[1]) * 4096
if device == "cuda":
    torch.cuda.synchronize(); torch.cuda.reset_peak_memory_stats(); start = torch.cuda.memory_allocated()
else:
    start = max(resident(), resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024)
model(x).logsumexp(1).mean().backward()
optimizer.step()
if device == "cuda":
    torch.cuda.synchronize(); peak = torch.cuda.max_memory_allocated()
else:
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
print(json.dumps({"footprint": footprint.total, "activations": footprint.activations, "old_estimate": old,
                  "measured": peak - start + weights}))
"""


def measure(name: str, device: str, quick: bool) -> dict:
    shape, batch = NETWORKS[name]
    batch = batch // 4 if quick else batch
    done = subprocess.run([sys.executable, "-c", ONE, name, device, str(batch), json.dumps(shape)],
                          capture_output=True, text=True, check=True)
    row = json.loads(done.stdout.strip().splitlines()[-1])
    return {"network": name, "batch": batch, **row, "measured_over_footprint": row["measured"] / row["footprint"],
            "measured_over_old": row["measured"] / row["old_estimate"]}


def markdown(rows: list[dict], device: str) -> str:
    mb = lambda b: f"{b / 2 ** 20:.0f}"  # noqa: E731
    lines = [f"| network | batch | footprint MB (activations) | old estimate MB | one step took MB ({device}) | "
             "took / footprint | took / old estimate |", "|---|---|---|---|---|---|---|"]
    lines += [f"| {r['network']} | {r['batch']} | {mb(r['footprint'])} ({mb(r['activations'])}) | "
              f"{mb(r['old_estimate'])} | {mb(r['measured'])} | {r['measured_over_footprint']:.2f} | "
              f"{r['measured_over_old']:.2f} |" for r in rows]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--quick", action="store_true", help="batches a quarter the size")
    parser.add_argument("--out", default=None, help="results folder (default bench/results)")
    args = parser.parse_args()
    rows = [measure(name, args.device, args.quick) for name in NETWORKS]
    publish(f"footprint-{'quick' if args.quick else 'full'}-{args.device}", rows, markdown(rows, args.device), args.out)


if __name__ == "__main__":
    main()
