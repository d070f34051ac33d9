"""Results directories that only look finished when they are.

Files are written into a hidden staging folder beside the target; ``commit()`` moves it into
place in one rename, after ``summary.json`` (the marker of a finished run) has been written.
A run that fails leaves at most ``.NAME.partial-*`` behind and never touches earlier results.
"""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asp_tune.errors import ConfigError

SUMMARY = "summary.json"


def _jsonable(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, Path):
        return str(value)
    return value


class RunDirectory:
    """A staging folder for one command's outputs, committed atomically to ``target``."""

    def __init__(self, target: str | Path, overwrite: bool = False):
        self.target = Path(target)
        if self.target.exists() and not self.target.is_dir():
            raise ConfigError("out", str(self.target), "a folder path (a file is in the way)")
        if self.target.is_dir() and any(self.target.iterdir()) and not overwrite:
            raise ConfigError("out", str(self.target), "a new or empty folder (pass --overwrite to replace it)")
        self.target.parent.mkdir(parents=True, exist_ok=True)
        self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.partial-", dir=self.target.parent))
        os.chmod(self.path, 0o755)

    def file(self, name: str) -> Path:
        return self.path / name

    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        path = self.file(name)
        frame.to_csv(path, index=False)
        return path

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        path = self.file(name)
        path.write_text(json.dumps(_jsonable(data), indent=2, sort_keys=False) + "\n")
        return path

    def commit(self, summary: dict[str, Any]) -> Path:
        """Write ``summary.json`` and move the folder into place."""
        self.write_json(SUMMARY, summary)
        if self.target.exists():
            old = self.target.with_name(f".{self.target.name}.old")
            shutil.rmtree(old, ignore_errors=True)
            self.target.rename(old)
            self.path.rename(self.target)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.path.rename(self.target)
        self.path = self.target
        return self.target

    def discard(self) -> None:
        if self.path != self.target:
            shutil.rmtree(self.path, ignore_errors=True)

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is not None:
            self.discard()
