"""What a trial reports each epoch and where it checkpoints: shared by asp_tune's trainables (one trial per
process, :mod:`asp_tune.tune.trainable`; a trial of a pack, :mod:`asp_tune.tune.pack_ray`). Without torch: a
trial of a pack imports only this.
"""

from __future__ import annotations

from typing import Any

CHECKPOINT_FILE = "trainer.pt"
#: Beside it: the ratio the trial started on (a search may raise the ratio of trials started later).
START_FILE = "start.json"

#: Columns of every report, besides Ray's own and the scores (``train_*``, ``val_*``: the task's).
REPORTED = ("epoch", "proxy_ratio", "target_ratio", "selected", "samples_seen", "data_passes", "metric_used",
            "epoch_seconds", "train_seconds_total", "val_seconds_total", "coverage", "lr", "top10_mass")


def trial_metrics(record: dict[str, Any]) -> dict[str, Any]:
    """The reported columns of an epoch record; validation metrics only when that epoch validated."""
    metrics = {k: v for k, v in record.items() if k in REPORTED or k.startswith(("train_", "val_"))}
    metrics["proxy_ratio"] = record["ratio"]
    if record.get("val_loss") != record.get("val_loss"):  # NaN: not validated this epoch
        for key in [k for k in metrics if k.startswith("val_") and k != "val_seconds_total"]:
            metrics.pop(key)
    return metrics


def checkpoint_due(epoch: int, last: bool, epochs: tuple[int, ...] | None, since_s: float, every_s: float) -> bool:
    """Whether the report after ``epoch`` (1-based) carries a checkpoint."""
    return epochs is None or last or epoch in epochs or (every_s > 0 and since_s >= every_s)
