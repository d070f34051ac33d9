"""What every example prints: the proxy loop beside the same loop on full data."""

from __future__ import annotations

import time
from typing import Callable


def compare(name: str, train: Callable[[float], tuple[float, float]], ratio: float = 0.3,
            score: str = "accuracy") -> None:
    """Run ``train(ratio)`` and ``train(1.0)`` (each returns (score, data fraction used)) and print
    both with their wall times. One untimed proxy run comes first: the first run in a process pays
    for PyTorch's lazily loaded parts (``torch._dynamo`` on the first optimiser, about 2 s, and the
    first call of each kernel), which would otherwise be counted against whichever loop ran first."""
    train(ratio)

    rows = []
    for r in (ratio, 1.0):
        start = time.perf_counter()
        value, fraction = train(r)
        rows.append((r, value, fraction, time.perf_counter() - start))
    print(f"{name}")
    for r, value, fraction, seconds in rows:
        label = "full data" if r == 1.0 else f"proxy r={r}"
        print(f"  {label:<12} {score} {value:.4f}  data fraction {fraction:.3f}  wall {seconds:.1f}s")
    proxy, full = rows
    print(f"  speed-up {full[3] / proxy[3]:.2f}x wall, {full[2] / proxy[2]:.2f}x data")
