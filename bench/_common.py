"""Helpers shared by the benchmarks: locating data and writing quotable results."""

from __future__ import annotations

import json
import os
import platform
import sys
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
