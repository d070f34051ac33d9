"""Proxy memory (PMM): one importance value per training sample, kept on the training device.

Values are updated in place from the logits of the training forward pass, so computing them
costs no extra forward pass; samples that are not trained in an epoch keep their old values,
which is what lets a deactivated sample come back later (ASP paper section 3.4).
"""

from __future__ import annotations

import hashlib
import os
from typing import Callable

import torch
import torch.nn.functional as F

#: Metrics stored in memory (``random`` needs no memory).
MEMORY_METRICS: tuple[str, ...] = ("loss", "entropy", "gradient", "logit_gradient", "prediction")


class ProxyMemory:
    """Per-sample importance values for ``num_samples`` training samples.

    - ``loss``: latest per-sample cross-entropy (without label smoothing).
    - ``entropy``: latest entropy of the softmax prediction.
    - ``gradient``: latest norm of the per-sample loss gradient with respect to the last linear
      layer's weight and bias, ``||softmax(z) - onehot(y)|| * sqrt(||h||^2 + 1)`` with ``h`` the
      penultimate features that layer received in the same forward pass (the standard cheap
      estimate of the per-sample gradient norm). Without features it falls back to
      ``logit_gradient``.
    - ``logit_gradient``: latest ``||softmax(z) - onehot(y)||_2``, the loss gradient with respect
      to the logits. It ranks samples almost exactly like ``loss``.
    - ``prediction``: cumulative score of eq. 1: +1 each time the sample is trained and predicted
      wrong, -1 when predicted right, unchanged when not trained.

    All values start at zero (Algorithm 1). ``times_trained`` counts how often each sample was
    trained, so coverage of the data set can be reported.
    """

    def __init__(self, num_samples: int, device: torch.device | str = "cpu"):
        self.num_samples = int(num_samples)
        self.device = torch.device(device)
        # latest values (loss, entropy, gradient, logit gradient) and running sums (prediction,
        # times trained): two tables so a batch costs one index_put and one index_add.
        self._latest = torch.zeros(self.num_samples, 4, dtype=torch.float32, device=self.device)
        self._counts = torch.zeros(self.num_samples, 2, dtype=torch.float32, device=self.device)
        self.values: dict[str, torch.Tensor] = {
            "loss": self._latest[:, 0], "entropy": self._latest[:, 1], "gradient": self._latest[:, 2],
            "logit_gradient": self._latest[:, 3], "prediction": self._counts[:, 0],
        }

    @property
    def times_trained(self) -> torch.Tensor:
        return self._counts[:, 1].to(torch.int32)

    def __getitem__(self, metric: str) -> torch.Tensor:
        return self.values[metric]

    @torch.no_grad()
    def update(self, indices: torch.Tensor, logits: torch.Tensor, targets: torch.Tensor,
               feature_norms: torch.Tensor | None = None) -> None:
        """Record the metrics of one trained batch (vectorised, no host synchronisation).

        ``feature_norms``: ``||h||`` of each sample's input to the last linear layer, from the same
        forward pass; without it ``gradient`` equals ``logit_gradient``.
        """
        indices = indices.to(self.device, non_blocking=True)
        targets = targets.to(self.device, non_blocking=True)
        if feature_norms is None:
            feature_norms = torch.zeros(targets.shape[0], device=self.device)
        stats = _stats_fn(self.device)(logits.detach().to(self.device), targets,
                                       feature_norms.detach().to(self.device, torch.float32))
        self._latest[indices] = stats[:, :4]
        self._counts.index_add_(0, indices, stats[:, 4:])

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {"latest": self._latest.cpu().clone(), "counts": self._counts.cpu().clone()}

    @staticmethod
    def fingerprint(state: dict[str, torch.Tensor]) -> str:
        """A short hash of a memory state (``state_dict()``): equal states, equal fingerprints.
        Fault-tolerance records use it to show that a restored trial's memory is the checkpoint's."""
        digest = hashlib.sha256()
        for name in ("latest", "counts"):
            digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, table in (("latest", self._latest), ("counts", self._counts)):
            if tuple(state[name].shape) != tuple(table.shape):
                raise ValueError(f"proxy memory '{name}' has shape {tuple(state[name].shape)}, "
                                 f"expected {tuple(table.shape)} for {self.num_samples} samples")
            table.copy_(state[name])


def batch_stats(logits: torch.Tensor, targets: torch.Tensor, feature_norms: torch.Tensor) -> torch.Tensor:
    """Per-sample ``(loss, entropy, gradient, logit gradient, prediction step, 1)``, ``(B, 6)`` float.

    The last layer ``z = W h + b`` has per-sample gradients ``dW = (p - e_y) h^T`` and
    ``db = p - e_y``, so their joint norm is ``||p - e_y|| * sqrt(||h||^2 + 1)``. A zero
    ``feature_norms`` (no features observed) leaves ``gradient`` equal to the logit gradient.
    """
    log_p = F.log_softmax(logits.float(), dim=1)
    p = log_p.exp()
    log_p_true = log_p.gather(1, targets[:, None]).squeeze(1)
    entropy = -(p * log_p).sum(dim=1)
    # ||p - e_y||^2 = sum(p^2) - 2 p_y + 1
    logit_gradient = ((p * p).sum(dim=1) - 2.0 * log_p_true.exp() + 1.0).clamp_min(0).sqrt()
    gradient = logit_gradient * (feature_norms * feature_norms + 1.0).sqrt()
    step = 2.0 * (logits.argmax(dim=1) != targets).float() - 1.0  # eq. 1: +1 wrong, -1 right
    return torch.stack([-log_p_true, entropy, gradient, logit_gradient, step, torch.ones_like(step)], dim=1)


StatsFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]
_COMPILED: dict[str, StatsFn] = {}


def _stats_fn(device: torch.device) -> StatsFn:
    """:func:`batch_stats`, fused into one kernel by ``torch.compile`` on CUDA.

    Eager mode launches ~20 small kernels per batch, which shows on a fast GPU; set
    ``ASP_TUNE_COMPILE=0`` to stay eager. On the CPU eager is already cheap.
    """
    if device.type != "cuda" or os.environ.get("ASP_TUNE_COMPILE", "1") == "0":
        return batch_stats
    if "cuda" not in _COMPILED:
        try:
            _COMPILED["cuda"] = torch.compile(batch_stats, dynamic=True)
        except Exception:  # noqa: BLE001 - no compiler available: eager is correct, only slower
            _COMPILED["cuda"] = batch_stats
    return _COMPILED["cuda"]


class FeatureNormTap:
    """Records ``||h||`` per sample of the input to a model's last linear layer on every forward.

    A forward pre-hook on that layer: the features come from the forward pass training already
    does, so the last-layer gradient norm costs one vector norm per batch and no extra pass.
    """

    def __init__(self, model: torch.nn.Module):
        self.layer = output_layer(model)
        self.norms: torch.Tensor | None = None
        self.handle = None if self.layer is None else self.layer.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: tuple) -> None:
        self.norms = inputs[0].detach().float().flatten(1).norm(dim=1)

    def take(self, batch: int) -> torch.Tensor | None:
        """The norms of the last forward when it had ``batch`` samples (else None)."""
        norms, self.norms = self.norms, None
        return norms if norms is not None and norms.shape[0] == batch else None


def output_layer(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The layer that produces the logits: ``model.output_layer()`` if defined, else the
    registered ``classifier`` or ``head`` Linear, else the last Linear module."""
    if hasattr(model, "output_layer"):
        return model.output_layer()
    for name in ("classifier", "head"):
        layer = getattr(model, name, None)
        if isinstance(layer, torch.nn.Linear):
            return layer
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1] if linears else None
