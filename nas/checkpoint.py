"""Per-epoch checkpoints of a NAS run (search or retrain), tied to the settings that made them."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from asp_tune.errors import AspTuneError
from asp_tune.trainer import Trainer, load_state, save_state


def save_run(path: Path, settings: dict[str, Any], trainer: Trainer, seconds: float) -> None:
    save_state({"settings": settings, "trainer": trainer.state_dict(), "seconds": seconds}, path)


def resume_run(path: Path, settings: dict[str, Any], trainer: Trainer) -> float:
    """Load ``path`` into ``trainer``; returns the wall seconds already spent. A checkpoint that is
    unreadable or written by other settings is one clear error."""
    state = load_state(path, "trainer", "an asp_tune NAS checkpoint", " (delete it or pass --restart)")
    if state.get("settings") != settings:
        old = state.get("settings") or {}
        changed = sorted(k for k in settings.keys() | old.keys() if old.get(k) != settings.get(k))
        raise AspTuneError(f"checkpoint {path} belongs to a run with other settings ({', '.join(changed)} "
                           "differ); pass --restart to start over or use another --out")
    trainer.load_state_dict(state["trainer"])
    return float(state["seconds"])
