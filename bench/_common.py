"""Helpers shared by the benchmarks: locating data and writing quotable results."""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Any

import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$ASP_TUNE_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("ASP_TUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


def default_cifar10() -> str:
    return str(shared_data_dir() / "cifar10-jpg.tar.gz")


def machine() -> dict[str, Any]:
    info = {"python": platform.python_version(), "torch": torch.__version__,
            "cpu_threads": torch.get_num_threads(), "platform": platform.platform()}
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def write_results(name: str, data: dict[str, Any], out_dir: str | Path | None = None) -> Path:
    out = Path(out_dir) if out_dir else REPO / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    path.write_text(json.dumps(data, indent=2) + "\n")
    return path


def publish(name: str, rows: list[dict[str, Any]], table: str, out_dir: str | Path | None = None) -> Path:
    """Print ``table`` (markdown) and write ``name``.json (the machine, ``rows``, the command) and ``name``.md."""
    print(table)
    path = write_results(name, {"machine": machine(), "rows": rows, "command": " ".join(sys.argv)}, out_dir)
    path.with_suffix(".md").write_text(table)
    print(f"written {path} and {path.with_suffix('.md').name}")
    return path


class DeviceBusy:
    """The GPU's mean utilisation (percent of time a kernel ran, as ``nvidia-smi`` reports it) over a
    ``with`` block, sampled every ``period_s`` through NVML (``torch.cuda.utilization``); ``percent`` is
    None on a CPU or where NVML cannot be read."""

    def __init__(self, device: str, period_s: float = 0.05):
        self.device, self.period_s = device, period_s
        self.samples: list[int] = []
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def __enter__(self) -> "DeviceBusy":
        if self.device.startswith("cuda") and torch.cuda.is_available():
            try:
                torch.cuda.utilization(self.device)
            except Exception:  # noqa: BLE001 - no NVML (pynvml missing, or a driver that does not answer)
                return self
            self._thread = threading.Thread(target=self._sample, daemon=True)
            self._thread.start()
        return self

    def _sample(self) -> None:
        while not self._stop.wait(self.period_s):
            self.samples.append(torch.cuda.utilization(self.device))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    @property
    def percent(self) -> float | None:
        return sum(self.samples) / len(self.samples) if self.samples else None
