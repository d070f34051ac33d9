"""The importance of a few tracked samples after every epoch (ASP appendix D's trajectories).

Kept as tensors on the trainer's device, one per epoch and column, and checkpointed as one stacked
tensor per column: a checkpoint's cost no longer grows by a Python object per sample and value every
epoch (at 400 epochs those were 140,000 objects, a quarter of a second to pickle per checkpoint), and
recording an epoch never waits for the device.
"""

from __future__ import annotations

from typing import Any

import torch

#: what each row names besides the memory's columns
ROW_FIELDS = ("epoch", "sample", "label", "selected", "metric_used")


class Trajectories:
    """Per-epoch memory values of the samples at ``samples`` (their ``labels``), and whether the
    epoch selected them."""

    def __init__(self, samples: torch.Tensor, labels: torch.Tensor):
        self.samples = samples
        self.labels = labels.cpu()
        self.epochs: list[int] = []
        self.metrics_used: list[str] = []
        self.selected: list[torch.Tensor] = []
        self.values: dict[str, list[torch.Tensor]] = {}

    def record(self, epoch: int, metric_used: str, selected: torch.Tensor, memory: Any) -> None:
        """After ``epoch``: ``selected`` (a mask over every sample) and the ``memory``'s columns, gathered
        for the tracked samples on the device."""
        self.epochs.append(epoch)
        self.metrics_used.append(metric_used)
        self.selected.append(selected[self.samples])
        for name in memory.columns:
            self.values.setdefault(name, []).append(memory[name][self.samples])

    def rows(self) -> list[dict[str, Any]]:
        """One dict per tracked sample and epoch, in the order they were recorded (``trajectories.csv``)."""
        if not self.epochs:
            return []
        samples, labels = self.samples.tolist(), self.labels.tolist()
        selected = torch.stack(self.selected).tolist()
        values = {name: torch.stack(v).tolist() for name, v in self.values.items()}
        return [{"epoch": epoch, "sample": sample, "label": labels[i], "selected": selected[e][i],
                 "metric_used": self.metrics_used[e], **{name: v[e][i] for name, v in values.items()}}
                for e, epoch in enumerate(self.epochs) for i, sample in enumerate(samples)]

    def state_dict(self) -> dict[str, Any]:
        """Stacked (epochs, samples) tensors on the CPU, with the epochs and the metric each used."""
        stack = (lambda v: torch.stack(v).cpu()) if self.epochs else (lambda v: torch.empty(0))
        return {"epochs": list(self.epochs), "metrics_used": list(self.metrics_used),
                "selected": stack(self.selected), "values": {name: stack(v) for name, v in self.values.items()}}

    def load_state_dict(self, state: dict[str, Any] | list[dict[str, Any]]) -> None:
        """Restore :meth:`state_dict`'s, or the list of rows a checkpoint written before it held."""
        if isinstance(state, list):
            state = _from_rows(state, self.samples.tolist())
        device = self.samples.device
        self.epochs, self.metrics_used = list(state["epochs"]), list(state["metrics_used"])
        self.selected = [row.to(device) for row in state["selected"]]
        self.values = {name: [row.to(device) for row in v] for name, v in state["values"].items()}


def _from_rows(rows: list[dict[str, Any]], samples: list[int]) -> dict[str, Any]:
    """The stacked state of rows as :meth:`Trajectories.rows` writes them."""
    epochs = list(dict.fromkeys(row["epoch"] for row in rows))
    by_key = {(row["epoch"], row["sample"]): row for row in rows}
    table = [[by_key[(epoch, sample)] for sample in samples] for epoch in epochs]
    names = [k for k in rows[0] if k not in ROW_FIELDS] if rows else []
    return {"epochs": epochs, "metrics_used": [line[0]["metric_used"] for line in table],
            "selected": torch.tensor([[row["selected"] for row in line] for line in table], dtype=torch.bool),
            "values": {name: torch.tensor([[float(row[name]) for row in line] for line in table])
                       for name in names}}
