"""Per-epoch checkpoints of a NAS run (search or retrain), tied to the settings that made them."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Callable, NamedTuple

from asp_tune.errors import AspTuneError
from asp_tune.flags import both_spellings
from asp_tune.trainer import Trainer, load_state, save_state


def save_run(path: Path, settings: dict[str, Any], trainer: Trainer, seconds: float,
             checkpoint_seconds: float = 0.0) -> None:
    save_state({"settings": settings, "trainer": trainer.state_dict(), "seconds": seconds,
                "checkpoint_seconds": checkpoint_seconds}, path)


def resume_run(path: Path, settings: dict[str, Any], trainer: Trainer) -> tuple[float, float]:
    """Load ``path`` into ``trainer``; returns the wall seconds already spent, and of them those spent
    writing checkpoints (the ones before this file's). A checkpoint that is
    unreadable or written by other ``settings`` (any of their keys differing) is one clear error."""
    state = load_state(path, "trainer", "an asp_tune NAS checkpoint", " (delete it or pass --restart)")
    old = state.get("settings") or {}
    differing = _differing(old, settings)  # what it stored beside these (an older version's keys) is not asked
    if differing:
        changed = "; ".join(f"{both_spellings(name.rpartition('.')[2], before)} (this one's: {now!r})"
                            if isinstance(now, (int, float, str)) else f"{name} differs"
                            for name, before, now in differing)
        raise AspTuneError(f"checkpoint {path} belongs to a run with other settings (give the ones it was started "
                           f"with: {changed}); pass --restart to start over or use another --out")
    trainer.load_state_dict(state["trainer"])
    return float(state["seconds"]), float(state.get("checkpoint_seconds", 0.0))


def _differing(old: dict[str, Any], new: dict[str, Any], prefix: str = "") -> list[tuple[str, Any, Any]]:
    """The keys of ``new`` whose values ``old`` holds otherwise, by their dotted names (``train.lr``), with
    the old value and the new."""
    changed: list[tuple[str, Any, Any]] = []
    for key in sorted(new):
        before, now = old.get(key), new[key]
        if before == now:
            continue
        if isinstance(before, dict) and isinstance(now, dict):
            changed += _differing(before, now, f"{prefix}{key}.")
        else:
            changed.append((f"{prefix}{key}", before, now))
    return changed


class TrainedRun(NamedTuple):
    seconds: float  # wall seconds of the whole run, the parts before a resume included
    resumed_from_epoch: int  # the checkpoint's epoch this part started from (0: from the start)
    checkpoint_seconds: float = 0.0  # of ``seconds``, those spent writing checkpoints


def train_resumably(trainer: Trainer, settings: dict[str, Any], checkpoint: str | Path | None = None,
                    on_epoch: Callable[[dict[str, Any]], None] | None = None) -> TrainedRun:
    """Train ``trainer`` to its last epoch: resume from ``checkpoint`` when it exists, save it after
    every epoch. Each epoch record gets ``elapsed_s`` (wall seconds of the whole run so far)."""
    checkpoint = Path(checkpoint) if checkpoint else None
    spent = saving = 0.0
    if checkpoint is not None and checkpoint.exists():
        spent, saving = resume_run(checkpoint, settings, trainer)
    resumed_from = trainer.epoch
    start = time.perf_counter()
    while not trainer.done:
        record = trainer.train_epoch()
        record["elapsed_s"] = spent + time.perf_counter() - start
        if on_epoch is not None:
            on_epoch(record)
        if checkpoint is not None:
            save_start = time.perf_counter()
            save_run(checkpoint, settings, trainer, spent + save_start - start, saving)
            saving += time.perf_counter() - save_start
    return TrainedRun(spent + time.perf_counter() - start, resumed_from, saving)
