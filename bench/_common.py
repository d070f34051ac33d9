"""Helpers shared by the benchmarks: locating data and writing quotable results."""

from __future__ import annotations

import json
import os
import platform
import sys
import threading
from pathlib import Path
from typing import Any, Iterable

import torch

REPO = Path(__file__).resolve().parents[1]


def shared_data_dir() -> Path:
    """``$ASP_TUNE_SHARED_DATA`` or ``../shared/data`` beside the checkout."""
    return Path(os.environ.get("ASP_TUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


def default_cifar10() -> str:
    return str(shared_data_dir() / "cifar10-jpg.tar.gz")


def chosen_problems(parser: Any, asked: str | list[str] | None, known: Iterable[str], cifar: str = "cifar10-resnet8"
                    ) -> list[str]:
    """The problems a benchmark runs: ``asked`` (comma-separated or a list; each must be ``known``, and CIFAR-10's
    archive must exist for ``cifar``: else ``parser.error``), or by default every known one, CIFAR-10's left out
    with a message where its archive is missing."""
    known = list(known)
    have_cifar = Path(default_cifar10()).is_file()
    if asked is None:
        if not have_cifar:
            print(f"{cifar}: left out ({default_cifar10()} not found)", file=sys.stderr)
        return [n for n in known if n != cifar or have_cifar]
    problems = [n for n in (asked.split(",") if isinstance(asked, str) else asked) if n]
    for name in problems:
        if name not in known:
            parser.error(f"unknown problem {name!r}; known: {', '.join(known)}")
        if name == cifar and not have_cifar:
            parser.error(f"{name} was asked for but {default_cifar10()} was not found (set ASP_TUNE_SHARED_DATA)")
    return problems


def mean_std(values: Iterable[float], digits: int = 3, scale: float = 1.0, signed: bool = False) -> str:
    """The one way every benchmark writes a mean over seeds (or repeats) and its spread: ``mean ± std`` with the
    sample standard deviation (ddof 1, :func:`asp_tune.quality.seed_spread`, as every asp_tune command reports it).
    NaNs are left out; one value is written ``x (n=1)`` (one value measures no spread, never ``± 0``), none ``-``.
    ``scale`` multiplies the values first (100 for points), ``signed`` writes the mean with its sign."""
    from asp_tune.quality import seed_spread

    kept = [float(v) * scale for v in values if v is not None and v == v]
    if not kept:
        return "-"
    mean = sum(kept) / len(kept)
    head = f"{mean:+.{digits}f}" if signed else f"{mean:.{digits}f}"
    if len(kept) == 1:
        return f"{head} (n=1)"
    return f"{head} ± {seed_spread(kept):.{digits}f}"


def spread(values: Iterable[float]) -> float:
    """The sample standard deviation of the finite ``values`` (ddof 1; NaN for fewer than two): what
    :func:`mean_std` prints, for results files."""
    from asp_tune.quality import seed_spread

    return seed_spread([float(v) for v in values if v is not None and v == v])


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
