"""DARTS search on ASP proxy data: weights and architecture weights on two halves of each epoch's subset.

Every step first updates the architecture weights on a batch of the architecture half, then the
network weights on a batch of the weight half. A full-data search (strategy ``none``) splits the
training set once, seeded, into a weight part and an architecture part and keeps that partition
for every epoch, as DARTS does with its fixed train/validation halves, so no sample serves both
kinds of step. A proxy search follows the ASP paper ("we adopt the ASP to select the proxy subset
and then split it into training and valid sets"): the :class:`~asp_tune.proxy.ProxySelector`
picks each epoch's subset from the whole training set and its (shuffled) indices are split in two
halves, so a sample may serve weight steps in one epoch and architecture steps in another. A fixed
partition there would bias the selection: architecture-part samples, never trained on, would look
harder and crowd the subset. The proxy memory learns from the logits of both halves, so no extra
forward pass is spent on importance.

First order (default) uses the architecture gradient at the current weights. Second order uses
the unrolled objective ``L_val(w - xi * dL_train/dw, alpha)`` whose gradient needs a
Hessian-vector product, approximated by finite differences as in the DARTS paper.
"""

from __future__ import annotations

import itertools
from typing import Any, Callable, Hashable, Iterator, Sequence

import pandas as pd
import torch
import torch.nn.functional as F
from torch import nn

from asp_tune.config import TrainConfig
from asp_tune.datasets import DataBundle
from asp_tune.device import autocast
from asp_tune.proxy import EpochPlan
from asp_tune.build import scores_factory
from asp_tune.trainer import ModelFactory, Observed, StepOutput, Trainer
from nas.settings import NasSettings
from nas.spaces import NasSpace, require_images


def _set(params: Sequence[nn.Parameter], values: Sequence[torch.Tensor]) -> None:
    with torch.no_grad():
        for p, v in zip(params, values):
            p.copy_(v)


def unrolled_hypergradient(weights: Sequence[nn.Parameter], arch: Sequence[nn.Parameter],
                           train_loss: Callable[[], torch.Tensor], val_loss: Callable[[], torch.Tensor],
                           xi: float, momentum: float = 0.0, weight_decay: float = 0.0,
                           momentum_buffers: Sequence[torch.Tensor | None] | None = None,
                           epsilon: float = 0.01) -> list[torch.Tensor]:
    """Gradient of ``L_val(w', alpha)`` w.r.t. ``alpha`` where ``w'`` is one SGD step on ``L_train``.

    ``d/dalpha = dL_val/dalpha(w') - xi * d2L_train/(dalpha dw) . dL_val/dw'(w')``; the second term
    is the finite difference ``(dL_train/dalpha(w + eps v) - dL_train/dalpha(w - eps v)) / 2 eps``
    with ``v = dL_val/dw'`` and ``eps = epsilon / |v|``. The weights are restored on return.
    """
    weights, arch = list(weights), list(arch)
    original = [w.detach().clone() for w in weights]
    grads = torch.autograd.grad(train_loss(), weights, allow_unused=True)
    buffers = momentum_buffers or [None] * len(weights)
    step = []
    for w, g, buf in zip(original, grads, buffers):
        d = (torch.zeros_like(w) if g is None else g) + weight_decay * w
        if buf is not None and momentum:
            d = d + momentum * buf
        step.append(w - xi * d)
    try:
        _set(weights, step)
        loss = val_loss()
        found = torch.autograd.grad(loss, arch + weights, allow_unused=True)
        d_arch = [torch.zeros_like(a) if g is None else g for a, g in zip(arch, found[:len(arch)])]
        v = [torch.zeros_like(w) if g is None else g for w, g in zip(weights, found[len(arch):])]
        norm = torch.sqrt(sum((x.double() ** 2).sum() for x in v))
        eps = epsilon / float(norm) if float(norm) > 0 else 0.0
        if eps == 0.0:
            return d_arch
        _set(weights, [w + eps * x for w, x in zip(original, v)])
        plus = torch.autograd.grad(train_loss(), arch, allow_unused=True)
        _set(weights, [w - eps * x for w, x in zip(original, v)])
        minus = torch.autograd.grad(train_loss(), arch, allow_unused=True)
        hvp = [torch.zeros_like(a) if p is None else (p - m) / (2 * eps) for a, p, m in zip(arch, plus, minus)]
        return [d - xi * h for d, h in zip(d_arch, hvp)]
    finally:
        _set(weights, original)


class DartsTrainer(Trainer):
    """A :class:`Trainer` whose steps alternate architecture and weight updates (DARTS).

    ``model`` must expose ``weight_parameters()`` and ``arch_parameters()``. Architecture weights
    use Adam (``arch_lr``, betas 0.5/0.999, ``arch_weight_decay``); network weights the trainer's
    SGD with gradient clipping at ``grad_clip``; the defaults are :class:`~nas.settings.NasSettings`'.
    """

    def __init__(self, config: TrainConfig, data: DataBundle | None, model: nn.Module | ModelFactory,
                 order: int = NasSettings.order, arch_lr: float = NasSettings.arch_lr,
                 arch_weight_decay: float = NasSettings.arch_weight_decay, grad_clip: float = NasSettings.grad_clip,
                 **kwargs):
        super().__init__(config, data, model, grad_clip=grad_clip, **kwargs)
        self.order = order
        self.arch_optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999),
                                               weight_decay=arch_weight_decay)
        self._arch_part: torch.Tensor | None = None  # the full-data partition, drawn on first use

    def arch_part(self) -> torch.Tensor:
        """The full-data search's fixed partition: True for the architecture part, a seeded half of
        the training samples (the weight part keeps the odd one); the same for every epoch and after
        a resume, since it depends only on the seed and the number of samples."""
        if self._arch_part is None:
            n = self.selector.num_samples
            g = torch.Generator().manual_seed(self.config.seed * 15485863 + 11)
            part = torch.zeros(n, dtype=torch.bool)
            part[torch.randperm(n, generator=g)[(n + 1) // 2:]] = True
            self._arch_part = part.to(self.selector.device)
        return self._arch_part

    def epoch_batches(self, plan: EpochPlan) -> Iterator[Any]:
        """Pairs (weight batch, architecture batch): the full-data search's fixed parts, a proxy
        search's shuffled subset cut in two halves (the module's docstring says why)."""
        if self.selector.metric == "none":
            in_arch = self.arch_part()[plan.indices]
            weight_half, arch_half = plan.indices[~in_arch], plan.indices[in_arch]
        else:
            half = (plan.count + 1) // 2
            weight_half, arch_half = plan.indices[:half], plan.indices[half:]
        size = self.config.batch_size
        return itertools.zip_longest(self.train_feeder.batches(weight_half, size),
                                     self.train_feeder.batches(arch_half, size))

    def arch_step(self, weight_batch: Any, arch_batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One architecture update on ``arch_batch``; returns the logits of that batch's forward pass
        (at the unrolled weights for second order) and its last-layer feature norms, which the proxy
        memory learns from."""
        arch = self.model.arch_parameters()
        x, y, _ = arch_batch
        if self.order == 1:
            with autocast(self.device, self.config.amp):
                logits = self.model(x)
            norms = self.feature_tap.take(y.shape[0])
            grads = torch.autograd.grad(F.cross_entropy(logits.float(), y), arch)
        else:  # fp32: finite differences need the precision
            seen: list[torch.Tensor] = []
            seen_norms: list[torch.Tensor | None] = []

            def arch_loss() -> torch.Tensor:
                seen.append(self.model(x))
                seen_norms.append(self.feature_tap.take(y.shape[0]))
                return F.cross_entropy(seen[-1], y)

            wx, wy, _ = weight_batch
            weights = self.model.weight_parameters()
            group = self.optimizer.param_groups[0]
            buffers = [self.optimizer.state.get(w, {}).get("momentum_buffer") for w in weights]
            grads = unrolled_hypergradient(
                weights, arch, lambda: F.cross_entropy(self.model(wx), wy), arch_loss,
                xi=group["lr"], momentum=group["momentum"], weight_decay=group["weight_decay"],
                momentum_buffers=buffers)
            logits, norms = seen[0].detach(), seen_norms[0]
        self.arch_optimizer.zero_grad(set_to_none=True)
        for a, g in zip(arch, grads):
            a.grad = g.detach()
        self.arch_optimizer.step()
        return logits, norms

    def train_step(self, batch: Any) -> StepOutput:
        weight_batch, arch_batch = batch  # the weight half is never the shorter one
        also_seen: tuple[Observed, ...] = ()
        if arch_batch is not None:
            logits, norms = self.arch_step(weight_batch, arch_batch)
            also_seen = (Observed(logits.detach(), arch_batch[1], arch_batch[2], norms),)
        x, y, idx = weight_batch
        with autocast(self.device, self.config.amp):
            logits = self.model(x)
        loss = self.training_loss(logits, y, idx)
        self.optimizer_step(loss)  # the architecture step sets its own gradients: stale ones are never used
        return StepOutput(Observed(logits, y, idx, self.feature_tap.take(y.shape[0])), loss, also_seen)

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["arch_optimizer"] = self.arch_optimizer.state_dict()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.arch_optimizer.load_state_dict(state["arch_optimizer"])


class DartsSearch:
    """The DARTS searcher: the space's continuous network, architecture and weight steps alternating,
    then the architecture its weights point to."""

    def trainer(self, settings: NasSettings, space: NasSpace) -> DartsTrainer:
        def network(data: DataBundle) -> nn.Module:
            require_images(data)
            return space.continuous_network(settings.channels, settings.num_cells, data.num_classes,
                                            data.image_shape[0])

        return DartsTrainer(settings.train, None, network, order=settings.order, arch_lr=settings.arch_lr,
                            arch_weight_decay=settings.arch_weight_decay, grad_clip=settings.grad_clip,
                            scores=scores_factory(settings.train),
                            size_field=("channels", settings.channels))

    def select(self, trainer: DartsTrainer, settings: NasSettings, space: NasSpace,
               on_score: Callable[[dict[str, Any]], None] | None = None
               ) -> tuple[Hashable, dict[str, Any], pd.DataFrame]:
        weights = [a.detach().cpu().tolist() for a in trainer.model.arch_parameters()]
        return trainer.model.derive(), {"arch_weights": weights}, pd.DataFrame(columns=["arch", "score", "phase",
                                                                                       "generation"])
