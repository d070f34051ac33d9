"""What every example prints: the proxy loop beside the same loop on full data."""

from __future__ import annotations

import time
from typing import Callable


def compare(name: str, train: Callable[..., tuple[float, float]], ratio: float = 0.3,
            score: str = "accuracy") -> None:
    """Run ``train(ratio)`` (the proxy), ``train(ratio, "random")`` (a uniformly random subset of the same
    size each epoch: the same cost, the simplest alternative) and ``train(1.0)`` (full data); each returns
    (score, data fraction used). Prints the three with their wall times. One untimed proxy run comes first:
    the first run in a process pays for PyTorch's lazily loaded parts (``torch._dynamo`` on the first
    optimiser, about 2 s, and the first call of each kernel), which would otherwise be counted against
    whichever loop ran first."""
    train(ratio)

    rows = []
    for label, args in ((f"proxy r={ratio}", (ratio,)), (f"random r={ratio}", (ratio, "random")),
                        ("full data", (1.0,))):
        start = time.perf_counter()
        value, fraction = train(*args)
        rows.append((label, value, fraction, time.perf_counter() - start))
    print(f"{name}")
    for label, value, fraction, seconds in rows:
        print(f"  {label:<15} {score} {value:.4f}  data fraction {fraction:.3f}  wall {seconds:.1f}s")
    proxy, random, full = rows
    print(f"  proxy - random {proxy[1] - random[1]:+.4f} {score} at the same cost; "
          f"speed-up {full[3] / proxy[3]:.2f}x wall, {full[2] / proxy[2]:.2f}x data")
