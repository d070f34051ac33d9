"""What every example prints: the proxy loop beside the same loop on full data."""

from __future__ import annotations

import time
from typing import Callable


def compare(name: str, train: Callable[[float], tuple[float, float]], ratio: float = 0.3,
            score: str = "accuracy") -> None:
    """Run ``train(ratio)`` and ``train(1.0)`` (each returns (score, data fraction used)) and print
    both with their wall times (after PyTorch's lazily imported parts are loaded, which the first
    optimiser would otherwise pay for: about 2 s)."""
    import torch._dynamo  # noqa: F401 - imported by torch.optim on first use

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
