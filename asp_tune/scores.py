"""A scoring (proxy) model's per-sample scores: what a static strategy that needs one reads.

Data only; :mod:`asp_tune.proxy_scores` trains the model, computes them and caches them.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

import torch

from asp_tune.errors import ConfigError

SCORES = ("loss", "entropy", "least_confidence", "forgetting")


@dataclass
class ProxyScores:
    """Per-sample scores of the training split by a proxy model, and what computing them cost."""

    loss: torch.Tensor
    entropy: torch.Tensor
    least_confidence: torch.Tensor  # 1 - max softmax probability
    forgetting: torch.Tensor  # forgetting events while training; never learned: max + 1
    features: torch.Tensor  # (N, d) penultimate features, float32
    seconds: float  # proxy training + scoring, wall time
    model: str
    epochs: int
    val_accuracy: float
    key: str = ""
    computed_here: bool = False  # this process trained the proxy (False: loaded from the cache)

    def score(self, name: str) -> torch.Tensor:
        if name not in SCORES:
            raise ConfigError("score", name, SCORES)
        return getattr(self, name)

    def to_state(self) -> dict[str, Any]:
        state = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        state.pop("computed_here")
        return state

    @classmethod
    def from_state(cls, state: dict[str, Any]) -> "ProxyScores":
        return cls(**state)

    def mismatch(self, key: str, num_samples: int) -> str | None:
        """Why these scores cannot be the ones asked for (None when they can): another key, or tensors of
        another length or shape than ``num_samples`` training samples."""
        if self.key != key:
            return f"it was made for key {self.key!r}, not {key!r}"
        for name in ("loss", "entropy", "least_confidence", "forgetting", "features"):
            value = getattr(self, name)
            if not isinstance(value, torch.Tensor) or value.shape[:1] != (num_samples,):
                return f"its {name} holds {tuple(getattr(value, 'shape', ()))} values for {num_samples} samples"
            if name != "features" and value.dim() != 1:
                return f"its {name} has shape {tuple(value.shape)}, not ({num_samples},)"
            if not bool(torch.isfinite(value.float()).all()):
                return f"its {name} holds NaN or infinite values"
        for name, kind in (("seconds", (int, float)), ("epochs", int), ("model", str), ("val_accuracy", (int, float))):
            if not isinstance(getattr(self, name), kind) or isinstance(getattr(self, name), bool):
                return f"its {name} is {getattr(self, name)!r}"
        if not (0 <= self.seconds < float("inf") and self.epochs >= 1):
            return f"its seconds ({self.seconds}) or epochs ({self.epochs}) are out of range"
        return None

    def describe(self) -> dict[str, Any]:
        """What a summary reports about the proxy."""
        return {"proxy_model": self.model, "proxy_epochs": self.epochs, "proxy_seconds": self.seconds,
                "proxy_data_passes": self.epochs + 1,  # its training, then one pass scoring every sample
                "proxy_val_accuracy": self.val_accuracy, "proxy_key": self.key, "proxy_computed": self.computed_here}
