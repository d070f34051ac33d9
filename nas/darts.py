"""DARTS search on ASP proxy data: network weights and architecture weights trained on two fixed parts.

Every step first updates the architecture weights on a batch of the architecture part, then the
network weights on a batch of the weight part. Every search, full data or proxy, splits the training
set once, seeded, into a weight part and an architecture part (DARTS's fixed train/validation halves),
so no sample ever serves both kinds of step. Each part has its own
:class:`~asp_tune.proxy.ProxySelector` (:class:`PartitionedSelector`): the proxy picks ``ratio`` of
each part every epoch, ranking a part's samples only against each other (architecture-part samples,
never trained on, look harder than weight-part ones and would crowd a subset chosen over both). This
is the ASP paper's "select the proxy subset and then split it into training and valid sets" with the
split fixed. The proxy memory learns from the logits of both parts' batches, so no extra forward pass
is spent on importance.

First order (default) uses the architecture gradient at the current weights. Second order uses
the unrolled objective ``L_val(w - xi * dL_train/dw, alpha)`` whose gradient needs a
Hessian-vector product, approximated by finite differences as in the DARTS paper.
"""

from __future__ import annotations

import copy
import dataclasses
import itertools
from typing import Any, Callable, Hashable, Iterator, Sequence

import pandas as pd
import torch
from torch import nn

from asp_tune.config import TrainConfig
from asp_tune.datasets import DataBundle
from asp_tune.device import autocast
from asp_tune.errors import AspTuneError
from asp_tune.assembly import Parts
from asp_tune.proxy import ProxySelector
from asp_tune.strategies import EpochPlan
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


#: what the summary says of the data protocol every DARTS search follows
PROTOCOL = ("fixed seeded partition into a weight part and an architecture part; each epoch the proxy selects "
            "ratio of each part apart (all of both at ratio 1)")


class PartitionedSelector:
    """One :class:`~asp_tune.proxy.ProxySelector` per part of the training samples (``parts``: each part's
    sample indices), seen by the trainer as one selector over all of them: a plan is the parts' plans
    together, a batch's statistics go to the selectors of the parts its samples belong to."""

    def __init__(self, selectors: list[ProxySelector], parts: list[torch.Tensor], num_samples: int):
        self.selectors, self.parts, self.num_samples = selectors, parts, num_samples
        self.device = selectors[0].device
        self.part_of = torch.empty(num_samples, dtype=torch.long, device=self.device)
        self.local = torch.empty(num_samples, dtype=torch.long, device=self.device)
        for k, ids in enumerate(parts):
            self.part_of[ids] = k
            self.local[ids] = torch.arange(ids.numel(), device=self.device)

    first = property(lambda self: self.selectors[0])
    metric = property(lambda self: self.first.metric)
    strategy = property(lambda self: self.first.strategy)
    settings = property(lambda self: self.first.settings)
    tracks_importance = property(lambda self: self.first.tracks_importance)
    required_inputs = property(lambda self: self.first.required_inputs)

    @property
    def selection_seconds(self) -> float:
        return sum(s.selection_seconds for s in self.selectors)

    def epoch_size(self, epoch: int) -> int | None:
        sizes = [s.epoch_size(epoch) for s in self.selectors]
        return None if None in sizes else sum(sizes)

    def _joined(self, values: list[torch.Tensor]) -> torch.Tensor:
        """Per-part tensors (by local index) as one over every sample."""
        out = torch.empty((self.num_samples, *values[0].shape[1:]), dtype=values[0].dtype, device=self.device)
        for ids, v in zip(self.parts, values):
            out[ids] = v.to(self.device)
        return out

    def plan(self, epoch: int) -> EpochPlan:
        """The parts' plans together; the architecture part's holds no more samples than the weight part's (one
        architecture batch beside each weight batch: a memory-driven strategy such as infobatch may pick more
        of it, and those are left unpicked, neither trained nor counted)."""
        weights_plan = self.selectors[0].plan(epoch)
        plans = [weights_plan] + [s.plan(epoch, most=weights_plan.count) for s in self.selectors[1:]]
        weights = None
        if any(p.weights is not None for p in plans):
            weights = self._joined([p.weights if p.weights is not None else torch.ones(ids.numel(), device=self.device)
                                    for p, ids in zip(plans, self.parts)])
        first = plans[0]
        return dataclasses.replace(first, indices=torch.cat([ids[p.indices] for ids, p in zip(self.parts, plans)]),
                                   weights=weights)

    def observe(self, indices: torch.Tensor, **inputs: torch.Tensor | None) -> None:
        part = self.part_of[indices]
        for k, selector in enumerate(self.selectors):
            mine = part == k
            if bool(mine.any()):
                selector.observe(self.local[indices[mine]], **{n: None if v is None else v[mine]
                                                                for n, v in inputs.items()})

    def check_inputs(self, *args: Any) -> None:
        self.first.check_inputs(*args)

    @property
    def seen(self) -> torch.Tensor:
        return self._joined([s.seen for s in self.selectors])

    @property
    def times_selected(self) -> torch.Tensor:
        return self._joined([s.times_selected for s in self.selectors])

    @property
    def memory(self) -> "_JoinedMemory":
        return _JoinedMemory(self)

    def describe(self) -> dict[str, Any]:
        return self.first.describe()

    def state_dict(self) -> dict:
        return {"parts": [s.state_dict() for s in self.selectors]}

    def load_state_dict(self, state: dict) -> None:
        if len(state.get("parts", ())) != len(self.selectors):
            raise AspTuneError("this checkpoint holds no partitioned DARTS selector (a search of an older asp_tune): "
                               "pass --restart to start over")
        for s, part in zip(self.selectors, state["parts"]):
            s.load_state_dict(part)


class _JoinedMemory:
    """The parts' proxy memories read as one (``columns``, ``memory[name]``), for trajectories and tables."""

    def __init__(self, selector: PartitionedSelector):
        self.selector, self.num_samples = selector, selector.num_samples
        self.columns = selector.first.memory.columns

    def __getitem__(self, name: str) -> torch.Tensor:
        return self.selector._joined([s.memory[name] for s in self.selector.selectors])


class DartsTrainer(Trainer):
    """A :class:`Trainer` whose steps alternate architecture and weight updates (DARTS).

    ``model`` must expose ``weight_parameters()`` and ``arch_parameters()``. Architecture weights
    use Adam (``arch_lr``, betas 0.5/0.999, ``arch_weight_decay``); network weights the trainer's
    SGD with gradient clipping at ``grad_clip``; the defaults are :class:`~nas.settings.NasSettings`'.
    """

    free_on_resume = Trainer.free_on_resume | {"test_subset"}  # a search never reads the test split

    def __init__(self, config: TrainConfig, data: DataBundle | None, model: nn.Module | ModelFactory,
                 order: int = NasSettings.order, arch_lr: float = NasSettings.arch_lr,
                 arch_weight_decay: float = NasSettings.arch_weight_decay, grad_clip: float = NasSettings.grad_clip,
                 **kwargs):
        super().__init__(config, data, model, grad_clip=grad_clip, **kwargs)
        self.order = order
        self.arch_optimizer = torch.optim.Adam(self.model.arch_parameters(), lr=arch_lr, betas=(0.5, 0.999),
                                               weight_decay=arch_weight_decay)

    def make_selector(self, parts: Parts) -> PartitionedSelector:
        """A selector per part of the fixed partition (:meth:`partition`), each bound to its own copy of the
        strategy with the same seed (a mixture draws the same statistic for both parts each epoch)."""
        n = len(self.data.train)
        labels = self.data.train.labels if self.task.has_classes else None
        ids = self.partition(n, self.config.seed, self.device)
        selectors = [ProxySelector(int(i.numel()), self.config.epochs, copy.deepcopy(parts.strategy),
                                   seed=self.config.seed, device=self.device,
                                   labels=None if labels is None else labels[i.cpu()],
                                   proxy_scores=_scores_of(self.proxy_scores, i.cpu()), **vars(parts.proxy))
                     for i in ids]
        for k, selector in enumerate(selectors[1:], 1):  # its own draws (picking the same places as the weight
            selector.generator.manual_seed(self.config.seed * 1_000_003 + k)  # part's otherwise); one seed schedules
        return PartitionedSelector(selectors, ids, n)

    @staticmethod
    def partition(n: int, seed: int, device: torch.device | str = "cpu") -> list[torch.Tensor]:
        """The fixed, seeded partition of ``n`` training samples: (weight part, architecture part), sorted
        indices; the weight part keeps the odd one. It depends only on the seed and ``n``, so it is the same
        for every ratio and strategy, every epoch and after a resume."""
        g = torch.Generator().manual_seed(seed * 15485863 + 11)
        order = torch.randperm(n, generator=g)
        return [order[:(n + 1) // 2].sort().values.to(device), order[(n + 1) // 2:].sort().values.to(device)]

    def epoch_batches(self, plan: EpochPlan) -> Iterator[Any]:
        """Pairs (weight batch, architecture batch) from the epoch's picks of each part; the architecture part's
        picks are never more than the weight part's (:meth:`PartitionedSelector.plan`)."""
        in_arch = self.selector.part_of[plan.indices] == 1
        weight_half, arch_half = plan.indices[~in_arch], plan.indices[in_arch]
        size = self.config.batch_size
        return itertools.zip_longest(self.train_feeder.batches(weight_half, size),
                                     self.train_feeder.batches(arch_half, size))

    def arch_step(self, weight_batch: Any, arch_batch: Any) -> tuple[torch.Tensor, torch.Tensor | None]:
        """One architecture update on ``arch_batch``; returns the logits of that batch's forward pass
        (at the unrolled weights for second order) and its last-layer feature norms, which the proxy
        memory learns from. The architecture's loss is the weight step's (each sample weighted by its selection
        weight: an estimate of its whole part's loss, not one tilted to the samples the proxy picked) without label
        smoothing, DARTS's validation loss."""
        arch = self.model.arch_parameters()
        x, y, idx = arch_batch
        if self.order == 1:
            with autocast(self.device, self.config.amp):
                logits = self.model(x)
            norms = self.feature_tap.take(y.shape[0])
            grads = torch.autograd.grad(self.training_loss(logits.float(), y, idx, label_smoothing=0.0), arch)
        else:  # fp32: finite differences need the precision
            seen: list[torch.Tensor] = []
            seen_norms: list[torch.Tensor | None] = []

            def arch_loss() -> torch.Tensor:
                seen.append(self.model(x))
                seen_norms.append(self.feature_tap.take(y.shape[0]))
                return self.training_loss(seen[-1], y, idx, label_smoothing=0.0)

            wx, wy, widx = weight_batch
            weights = self.model.weight_parameters()
            group = self.optimizer.param_groups[0]
            buffers = [self.optimizer.state.get(w, {}).get("momentum_buffer") for w in weights]
            grads = unrolled_hypergradient(
                weights, arch, lambda: self.training_loss(self.model(wx), wy, widx), arch_loss,
                xi=group["lr"], momentum=group["momentum"], weight_decay=group["weight_decay"],
                momentum_buffers=buffers)
            logits, norms = seen[0].detach(), seen_norms[0]
        self.arch_optimizer.zero_grad(set_to_none=True)
        for a, g in zip(arch, grads):
            a.grad = g.detach()
        self.arch_optimizer.step()
        return logits, norms

    def train_step(self, batch: Any) -> StepOutput:
        weight_batch, arch_batch = batch
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


def _scores_of(scores: Any, ids: torch.Tensor) -> Any:
    """A static proxy's per-sample scores (:class:`~asp_tune.scores.ProxyScores`) of the samples ``ids``."""
    if scores is None:
        return None
    per_sample = {f.name: getattr(scores, f.name)[ids] for f in dataclasses.fields(scores)
                  if isinstance(getattr(scores, f.name), torch.Tensor)}
    return dataclasses.replace(scores, **per_sample)


class DartsSearch:
    """The DARTS searcher: the space's continuous network, architecture and weight steps alternating,
    then the architecture its weights point to."""

    #: NasSettings fields only this searcher reads (another searcher refuses them)
    own_settings = ("order", "arch_lr", "arch_weight_decay", "grad_clip")
    #: it scores no single architectures: no candidates, no rank agreement with a ground truth
    scores_candidates = False

    def trainer(self, settings: NasSettings, space: NasSpace) -> DartsTrainer:
        def network(data: DataBundle) -> nn.Module:
            require_images(data)
            return space.continuous_network(settings.channels, settings.num_cells, data.num_classes,
                                            data.image_shape[0])

        train = settings.train_config()
        return DartsTrainer(train, None, network, order=settings.order, arch_lr=settings.arch_lr,
                            arch_weight_decay=settings.arch_weight_decay, grad_clip=settings.grad_clip,
                            scores=scores_factory(train),
                            size_field=("channels", settings.channels))

    def select(self, trainer: DartsTrainer, settings: NasSettings, space: NasSpace,
               on_score: Callable[[dict[str, Any]], None] | None = None
               ) -> tuple[Hashable, dict[str, Any], pd.DataFrame]:
        weights = [a.detach().cpu().tolist() for a in trainer.model.arch_parameters()]
        found = {"arch_weights": weights, "darts_protocol": PROTOCOL,
                 "darts_parts": [int(p.numel()) for p in trainer.selector.parts]}
        return trainer.model.derive(), found, pd.DataFrame(columns=["arch", "score", "phase",
                                                                                       "generation"])
