"""Proxy memory (PMM): one importance value per training sample, kept on the training device.

Values are updated in place from the logits of the training forward pass, so computing them
costs no extra forward pass; samples that are not trained in an epoch keep their old values,
which is what lets a deactivated sample come back later (ASP paper section 3.4).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

#: Metrics stored in memory (``random`` needs no memory).
MEMORY_METRICS: tuple[str, ...] = ("loss", "entropy", "gradient", "prediction")


class ProxyMemory:
    """Per-sample importance values for ``num_samples`` training samples.

    - ``loss``: latest per-sample cross-entropy (without label smoothing).
    - ``entropy``: latest entropy of the softmax prediction.
    - ``gradient``: latest ``||softmax(z) - onehot(y)||_2``, the norm of the loss gradient with
      respect to the logits; it bounds the per-sample parameter-gradient norm up to the
      last layer's Lipschitz constant and costs nothing beyond the logits.
    - ``prediction``: cumulative score of eq. 1: +1 each time the sample is trained and predicted
      wrong, -1 when predicted right, unchanged when not trained.

    All values start at zero (Algorithm 1). ``times_trained`` counts how often each sample was
    trained, so coverage of the data set can be reported.
    """

    def __init__(self, num_samples: int, device: torch.device | str = "cpu"):
        self.num_samples = int(num_samples)
        self.device = torch.device(device)
        self.values: dict[str, torch.Tensor] = {
            name: torch.zeros(self.num_samples, dtype=torch.float32, device=self.device)
            for name in MEMORY_METRICS
        }
        self.times_trained = torch.zeros(self.num_samples, dtype=torch.int32, device=self.device)

    def __getitem__(self, metric: str) -> torch.Tensor:
        return self.values[metric]

    @torch.no_grad()
    def update(self, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor) -> None:
        """Record the metrics of one trained batch (vectorised, no host synchronisation)."""
        indices = indices.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        logits = logits.detach().to(self.device).float()
        log_p = F.log_softmax(logits, dim=1)
        p = log_p.exp()
        log_p_true = log_p.gather(1, targets[:, None]).squeeze(1)
        p_true = log_p_true.exp()
        self.values["loss"][indices] = -log_p_true
        self.values["entropy"][indices] = -(p * log_p).sum(dim=1)
        # ||p - e_y||^2 = sum(p^2) - 2 p_y + 1
        self.values["gradient"][indices] = ((p * p).sum(dim=1) - 2.0 * p_true + 1.0).clamp_min(0).sqrt()
        wrong = (logits.argmax(dim=1) != targets).float()
        self.values["prediction"].index_add_(0, indices, 2.0 * wrong - 1.0)
        self.times_trained.index_add_(0, indices, torch.ones_like(indices, dtype=torch.int32))

    def state_dict(self) -> dict[str, torch.Tensor]:
        state = {name: v.detach().cpu().clone() for name, v in self.values.items()}
        state["times_trained"] = self.times_trained.cpu().clone()
        return state

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in MEMORY_METRICS:
            if state[name].shape != (self.num_samples,):
                raise ValueError(
                    f"proxy memory '{name}' has {tuple(state[name].shape)} values, "
                    f"expected ({self.num_samples},)"
                )
            self.values[name].copy_(state[name])
        self.times_trained.copy_(state["times_trained"])
