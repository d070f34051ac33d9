"""Many configurations of one network trained at once in one process: a pack.

Each member is an ordinary :class:`~asp_tune.trainer.Trainer`, built as it would be alone (its seed, its
initial weights, its proxy selector and memory, its batches); the members share one copy of the data. The
pack stacks their parameters, buffers and optimiser states along a new first dimension and runs every step
as one vectorised forward and backward (:class:`~asp_tune.stacked.StackedNetwork`: batched layers for a
chain of known layers, :func:`torch.func.vmap` over :func:`torch.func.functional_call` for any other),
with each member's own learning rate and schedule, weight decay, momentum or betas and label smoothing
(:class:`StackedOptimizer`). A member therefore follows the trajectory it follows alone, up to the
summation order of batched kernels. BatchNorm keeps running statistics per member; dropout draws a mask
per member, all K in one draw from the global generator, so a member's masks depend on which members share
its pack (and are not its masks alone).

A member whose loss stops being finite leaves the pack at the end of its epoch (its error recorded); the
others go on, untouched: no value crosses members (dropout's draws aside). :meth:`Pack.remove` takes
members out (a search's early stopping) and compacts the stacks; :meth:`Pack.sync` writes every member's
weights and optimiser state back into its trainer, so a member's ``state_dict`` (a checkpoint),
``save_model`` and its test evaluation are those of a trainer that trained alone, and a pack can be rebuilt
from its members' checkpoints; :meth:`Pack.close` ends a pack (its members' memories, rows of one table
while they train together, get tables of their own again).

    pack = Pack([build_trainer(config, data=data) for config in configs])
    while pack.members:
        for trainer, record in pack.train_epoch().items(): ...
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import itertools
import math
import time
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Sequence

import torch
from torch import nn
from torch.func import vmap

from asp_tune.assembly import build_network
from asp_tune.config import AUTO_MIN_SPEEDUP, TrainConfig, check_pack
from asp_tune.device import autocast, host_values, synchronize
from asp_tune.errors import AspTuneError
from asp_tune.feeding import DeviceFeeder
from asp_tune.footprint import Footprint, measure_footprint, readable_bytes
from asp_tune.memory import FeatureNormTap, MemoryStack
from asp_tune.proxy import ProxySelector
from asp_tune.sizes import free_bytes
from asp_tune.stacked import StackedNetwork, shares_tensors, stack_parameters, take_members
from asp_tune.trainer import Trainer, TrainingDiverged
from asp_tune.vmap_autocast import DtypeRecorder, dtype_differences

#: What members of one pack may differ in (everything else of their configs is equal): the optimiser's
#: hyper-parameters and schedule, and the label smoothing.
PER_MEMBER = ("lr", "momentum", "nesterov", "weight_decay", "betas", "label_smoothing", "lr_schedule", "lr_min",
              "milestones", "lr_gamma")


class CannotFuse(AspTuneError):
    """These configurations or this network cannot train in one pack (the reason says why)."""


class PackTooLarge(CannotFuse):
    """The pack ran out of the device's memory: fewer members may fit (the network itself may fuse)."""


#: The :class:`Trainer` methods a pack never calls on its members (it steps, computes the losses, feeds the
#: memories and validates for them all): a trainer class that overrides one is refused, its override would be
#: ignored. The pack calls ``epoch_batches``, ``observe_stacked`` (and ``_memory_inputs``) and ``close_epoch``.
BYPASSED = ("train_epoch", "train_step", "optimizer_step", "training_loss", "forward_eval", "evaluate", "observe")


def pack_key(config: TrainConfig) -> tuple:
    """Configurations with equal keys can share a pack: the same network, data, batches and selection."""
    fields = config.to_dict()
    return tuple(sorted((k, repr(v)) for k, v in fields.items() if k not in PER_MEMBER))


def group_into_packs(configs: Sequence[TrainConfig], size: int) -> list[list[int]]:
    """Indices of ``configs`` in packs of at most ``size``, one key per pack, in the order given."""
    groups: dict[tuple, list[int]] = {}
    for i, config in enumerate(configs):
        groups.setdefault(pack_key(config), []).append(i)
    return [members[start:start + size] for members in groups.values() for start in range(0, len(members), size)]


#: Per-member columns a :class:`StackedOptimizer` keeps on the device before it starts afresh.
COLUMNS_KEPT = 256


def _expand(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """Per-member ``values`` (K,) shaped to broadcast over a stacked tensor ``like`` (K, ...)."""
    return values.view(-1, *([1] * (like.dim() - 1)))


class StackedOptimizer:
    """SGD (momentum, Nesterov, weight decay), Adam or AdamW over stacked parameters (K, ...), each member
    with its own hyper-parameters, in the arithmetic of :mod:`torch.optim`'s single-tensor implementations:
    a hyper-parameter the members share is applied as the Python number torch.optim applies (bitwise the
    same step); one that differs is applied per member as a float32 column (one rounding apart at most). The
    step adds weight decay and Nesterov's term to the gradients in place (the pack's own, set by each backward)."""

    HYPER = ("lr", "weight_decay", "momentum", "nesterov", "beta1", "beta2", "steps")

    def __init__(self, configs: Sequence[TrainConfig], params: dict[str, torch.Tensor],
                 trained: Sequence[str] | None = None):
        kinds = {c.optimizer for c in configs}
        if len(kinds) != 1:
            raise CannotFuse(f"members use different optimisers ({sorted(kinds)})")
        self.kind = kinds.pop()
        self.device = next(iter(params.values())).device
        self.lr = [c.lr for c in configs]
        self.weight_decay = [c.weight_decay for c in configs]
        self.momentum = [c.momentum for c in configs]
        self.nesterov = [bool(c.nesterov and c.momentum > 0) for c in configs]
        self.beta1 = [c.betas[0] for c in configs]
        self.beta2 = [c.betas[1] for c in configs]
        self.steps = [0] * len(configs)
        #: the parameters it steps (default: all; a network's ``weight_parameters()`` alone, as its trainer's)
        self.trained = list(params) if trained is None else list(trained)
        self.state: dict[str, dict[str, torch.Tensor]] = {}
        self._columns: dict[tuple, torch.Tensor] = {}  # per-member values already on the device

    def select(self, keep: list[int]) -> None:
        """Keep only the members at ``keep`` (their hyper-parameters and state)."""
        for name in self.HYPER:
            setattr(self, name, [getattr(self, name)[k] for k in keep])
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        self.state = {p: {k: take_members(v, index) for k, v in s.items()} for p, s in self.state.items()}
        self._columns.clear()

    def _each(self, values: list[float], like: torch.Tensor) -> float | torch.Tensor:
        """``values`` as one number when the members share it, else a column shaped to broadcast over ``like``
        (copied to the device once for as long as the values stay, without waiting for the device)."""
        if all(v == values[0] for v in values):
            return values[0]
        return _column(self._columns, values, like)

    @staticmethod
    def _add(x: torch.Tensor, scale: float | torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        """``x += scale * y``, rounded as ``torch.add(x, y, alpha=scale)``: in place, so only on a gradient the
        step owns (the pack's, set anew by every backward pass; a new tensor of that size each step costs more
        than the arithmetic on a CPU)."""
        return x.add_(y, alpha=scale) if isinstance(scale, float) else x.addcmul_(scale, y)

    @torch.no_grad()
    def step(self, params: dict[str, torch.Tensor]) -> None:
        self.steps = [s + 1 for s in self.steps]
        if len(self._columns) > COLUMNS_KEPT:  # Adam's bias corrections change every step
            self._columns.clear()
        for name in self.trained:
            p = params[name]
            if p.grad is not None:
                self._step(p, p.grad, self.state.setdefault(name, {}))

    def _step(self, p: torch.Tensor, g: torch.Tensor, state: dict[str, torch.Tensor]) -> None:
        neg_lr = self._each([-lr for lr in self.lr], p)
        if self.kind == "sgd":
            if any(self.weight_decay):
                g = self._add(g, self._each(self.weight_decay, p), p)
            if any(self.momentum):
                buf = state.get("momentum_buffer")
                if buf is None:
                    buf = state["momentum_buffer"] = g.detach().clone()
                else:
                    momentum = self._each(self.momentum, p)
                    buf.mul_(momentum).add_(g)
                if any(self.nesterov):
                    nesterov = self._add(g, self._each(self.momentum, p), buf)
                    g = _pick(self.nesterov, nesterov, buf, self._columns)
                else:
                    g = buf
            if isinstance(neg_lr, float):
                p.add_(g, alpha=neg_lr)
            else:
                p.addcmul_(neg_lr, g)
            return
        if any(self.weight_decay):
            if self.kind == "adamw":
                p.mul_(self._each([1 - lr * wd for lr, wd in zip(self.lr, self.weight_decay)], p))
            else:
                g = self._add(g, self._each(self.weight_decay, p), p)
        for key in ("exp_avg", "exp_avg_sq"):  # made once (setdefault's default would be made at every step)
            if key not in state:
                state[key] = torch.zeros_like(p)
        m, v = state["exp_avg"], state["exp_avg_sq"]
        m.lerp_(g, self._each([1 - b for b in self.beta1], p))
        one_minus_b2 = self._each([1 - b for b in self.beta2], p)
        v.mul_(self._each(self.beta2, p))
        if isinstance(one_minus_b2, float):
            v.addcmul_(g, g, value=one_minus_b2)
        else:
            v.addcmul_(one_minus_b2 * g, g)
        neg_step = self._each([-lr / (1 - b1 ** s) for lr, b1, s in zip(self.lr, self.beta1, self.steps)], p)
        root = self._each([(1 - b2 ** s) ** 0.5 for b2, s in zip(self.beta2, self.steps)], p)
        denom = v.sqrt().div_(root).add_(1e-8)
        if isinstance(neg_step, float):
            p.addcdiv_(m, denom, value=neg_step)
        else:
            p.addcdiv_(neg_step * m, denom)

    def member_state(self, k: int, name: str, like: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
        """Member ``k``'s state of parameter ``name`` in :mod:`torch.optim`'s form (laid out as ``like``, the
        member's own parameter, when given: torch.optim's fast paths want the two alike)."""
        state = {key: value[k].clone() if like is None else torch.empty_like(like).copy_(value[k])
                 for key, value in self.state.get(name, {}).items()}
        if self.kind != "sgd" and state:
            state["step"] = torch.tensor(float(self.steps[k]))
        return state

    def load_member(self, k: int, name: str, state: dict[str, Any], like: torch.Tensor) -> None:
        """Set member ``k``'s state of parameter ``name`` from :mod:`torch.optim`'s form (absent: fresh)."""
        keys = ("momentum_buffer",) if self.kind == "sgd" else ("exp_avg", "exp_avg_sq")
        for key in keys:
            if state.get(key) is not None:
                self.state.setdefault(name, {}).setdefault(key, torch.zeros_like(like))[k] = state[key]
        if "step" in state:
            self.steps[k] = int(float(state["step"]))


def _pick(choose: list[bool], yes: torch.Tensor, no: torch.Tensor, columns: dict[tuple, torch.Tensor]) -> torch.Tensor:
    """Per member: ``yes`` where ``choose`` is true, else ``no``."""
    if all(choose):
        return yes
    return torch.where(_column(columns, choose, yes, torch.bool), yes, no)


def _column(columns: dict[tuple, torch.Tensor], values: list, like: torch.Tensor,
            dtype: torch.dtype | None = None) -> torch.Tensor:
    """Per-member ``values`` (K,) on ``like``'s device, shaped to broadcast over ``like`` (K, ...); made once and
    kept in ``columns`` (a copy to a GPU each step, for each parameter, would wait for the GPU each time)."""
    dtype = like.dtype if dtype is None else dtype
    key = (tuple(values), dtype, like.device, like.dim())
    if key not in columns:
        columns[key] = _expand(host_values(list(values), dtype, like.device), like)
    return columns[key]


@dataclass
class Member:
    """A trainer in a pack: its place in the stacks."""

    trainer: Trainer
    index: int


class Pack:
    """``trainers`` (built alone, sharing one data set; see :func:`pack_key`) trained as one vectorised
    network. Raises :class:`CannotFuse` when their configurations or the network do not allow it, found on copies
    (:func:`check_vectorizable`) before the members change; ``checked``: it was found so already. The pack
    copies the network when it is built: a hook added to a member's network later does not reach it."""

    def __init__(self, trainers: Sequence[Trainer], checked: bool = False):
        if not trainers:
            raise CannotFuse("a pack needs at least one configuration")
        keys = {pack_key(t.config) for t in trainers}
        if len(keys) != 1:
            raise CannotFuse("members differ in more than " + ", ".join(PER_MEMBER))
        classes = list(dict.fromkeys(type(t) for t in trainers))
        if len(classes) > 1:
            raise CannotFuse(f"members are trainers of different classes ({', '.join(c.__name__ for c in classes)})")
        own = [name for name in BYPASSED if getattr(classes[0], name) is not getattr(Trainer, name)]
        if own:
            raise CannotFuse(f"{classes[0].__name__} overrides Trainer.{own[0]}, which a pack does not call")
        first = trainers[0]
        self.task, self.device, self.config = first.task, first.device, first.config
        models = [t.model.train() for t in trainers]  # a trainer that validated last left its network in eval mode
        if checked:
            _check_fusable(first.model)
        else:  # before any member draws its epoch: a network refused later would leave them changed
            check_vectorizable(first)
        try:
            self.params, self.buffers = stack_parameters(models)
            self.net = StackedNetwork(first.model)
        except torch.OutOfMemoryError as exc:
            raise PackTooLarge(f"a pack of {len(trainers)} ran out of memory stacking its weights "
                               f"({_first_line(exc)})") from exc
        except (RuntimeError, ValueError) as exc:  # e.g. a network that cannot be copied
            raise CannotFuse(f"the network cannot be stacked ({_first_line(exc)})") from exc
        self.grad_clip = [t.grad_clip for t in trainers]
        weights = {id(p) for p in first.weights}  # what the optimiser steps (a network's weight_parameters())
        self.optimizer = StackedOptimizer([t.config for t in trainers], self.params,
                                          [n for n, p in first.model.named_parameters() if id(p) in weights])
        for k, trainer in enumerate(trainers):
            for name, param in trainer.model.named_parameters():
                self.optimizer.load_member(k, name, trainer.optimizer.state.get(param, {}), self.params[name])
        for trainer in trainers:  # the pack steps their weights: their schedules step after an optimiser step
            trainer.optimizer._opt_called = True  # noqa: SLF001 - what torch's scheduler checks
        self.members = [Member(t, k) for k, t in enumerate(trainers)]
        self.memories: MemoryStack | None = None
        if first.selector.tracks_importance:  # the members' memories record each step with one write
            with contextlib.suppress(ValueError):  # memories with other columns record one by one
                self.memories = MemoryStack([t.selector.memory for t in trainers])
        self.failed: dict[Trainer, BaseException] = {}
        self._stepped = False

    # ------------------------------------------------------------------ the vectorised network

    def _losses(self, x: torch.Tensor, y: torch.Tensor, weights: torch.Tensor,
                smoothing: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """Each member's weighted mean loss on its batch (K,), its outputs (K, B, ...) and the feature norms
        into its output layer (K, B; None without one). ``smoothing``: the members' label smoothing as
        :meth:`_smoothing` gives it. A task's loss is per sample, so all K batches' losses are one call (one per
        smoothing value for a task whose loss takes one number)."""
        out, norms = self.net(self.params, self.buffers, x)
        members, batch = y.shape[:2]
        if isinstance(smoothing, list):
            parts = [self.task.loss(out[rows].flatten(0, 1), y[rows].flatten(0, 1), value).view(len(rows), batch)
                     for value, rows in smoothing]
            order = torch.cat([rows for _, rows in smoothing])
            losses = torch.cat(parts)[torch.argsort(order)]
        else:
            if isinstance(smoothing, torch.Tensor):
                smoothing = smoothing.repeat_interleave(batch)
            losses = self.task.loss(out.flatten(0, 1), y.flatten(0, 1), smoothing).view(members, batch)
        return (losses * weights).mean(dim=1), out, norms

    # ------------------------------------------------------------------ training

    def train_epoch(self) -> dict[Trainer, dict[str, Any]]:
        """One epoch of every member: each selects its subset and trains on its own batches, in lockstep;
        returns each member's record. A member that diverged is in :attr:`failed` and out of the pack. A pack
        refused (:class:`CannotFuse`) before its epoch's first step leaves its members as they were before the
        epoch (their weights and optimiser states written back from the pack, :meth:`sync`), so that they train it
        alone as they would have."""
        start = time.perf_counter()
        members = [m.trainer for m in self.members]
        self.optimizer.lr = [t.optimizer.param_groups[0]["lr"] for t in members]
        smoothing = self._smoothing()
        self.net.train()
        with _undone_if_refused(members, self.sync):
            plans = ProxySelector.plan_together([t.selector for t in members], [t.epoch for t in members])
            for t, plan in zip(members, plans):
                t.sample_weights = plan.weights
            counts = {plan.count for plan in plans}
            if len(counts) != 1:
                raise CannotFuse(f"members' epochs select different numbers of samples ({sorted(counts)})")
            batches = _stacked_batches(members, plans)
            first = next(batches, None)
            outputs = None if first is None else self._first_step(*first, smoothing)
        sums = vmap(self.task.batch_sums)
        loss_sum = torch.zeros(len(members), device=self.device)
        total: torch.Tensor | int = 0
        trained = 0
        for x, y, idx in itertools.chain([first] if first is not None else [], batches):
            losses, logits, norms = outputs if outputs is not None else self._forward(x, y, idx, smoothing)
            outputs = None
            for p in self.params.values():
                p.grad = None
            losses.sum().backward()
            if any(self.grad_clip):
                self._clip_gradients()
            self.optimizer.step(self.params)
            logits = logits.detach()
            members[0].observe_stacked(members[1:], logits, y, idx, norms)
            loss_sum += losses.detach() * y.shape[1]
            total = total + sums(logits, y)
            trained += y.shape[1]
        synchronize(self.device)
        seconds = (time.perf_counter() - start) / len(members)
        validation = self._validate(len(members))
        records: dict[Trainer, dict[str, Any]] = {}
        losses = loss_sum.tolist()
        for k, t in enumerate(members):
            try:
                records[t] = t.close_epoch(plans[k], losses[k], total[k] if trained else 0, trained, seconds,
                                           validation[k])
            except TrainingDiverged as exc:
                self.failed[t] = exc
        if self.failed:
            self.remove([t for t in members if t in self.failed])
        return records

    def _smoothing(self) -> float | torch.Tensor | list[tuple[float, torch.Tensor]]:
        """The members' label smoothing as :meth:`_losses` takes it: one number where they share it; else per
        member (K,) for a task whose class declares ``smoothing_per_sample`` (its loss takes a tensor), or
        (value, the members with it) for any other (its loss is called once per value)."""
        values = [m.trainer.config.label_smoothing for m in self.members]
        if len(set(values)) == 1:
            return float(values[0])
        if getattr(type(self.task), "smoothing_per_sample", False):  # declared by its class, not delegated
            return host_values(values, torch.float32, self.device)
        return [(float(v), torch.tensor([k for k, w in enumerate(values) if w == v], device=self.device))
                for v in sorted(set(values))]

    def _forward(self, x: torch.Tensor, y: torch.Tensor, idx: list[torch.Tensor],
                 smoothing: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """One step's :meth:`_losses`, each sample weighted by its member's epoch plan."""
        members = [m.trainer for m in self.members]
        weights = (torch.ones(y.shape[:2], device=self.device) if all(t.sample_weights is None for t in members)
                   else torch.stack([t.sample_weights[i] if t.sample_weights is not None
                                     else torch.ones(i.shape[0], device=self.device) for t, i in zip(members, idx)]))
        with autocast(self.device, self.config.amp):
            return self._losses(x, y, weights, smoothing)

    @torch.no_grad()
    def _clip_gradients(self) -> None:
        """Each member's gradients clipped to its trainer's ``grad_clip`` (0: not clipped) as
        :func:`torch.nn.utils.clip_grad_norm_` clips them: by the norm of all its parameters' gradients."""
        grads = [g for g in (self.params[n].grad for n in self.optimizer.trained) if g is not None]
        norms = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(g.flatten(1), dim=1) for g in grads]),
                                         dim=0)
        limits = _column(self.optimizer._columns, [c or math.inf for c in self.grad_clip], norms)  # noqa: SLF001
        scale = (limits / (norms + 1e-6)).clamp(max=1.0)
        if not all(self.grad_clip):  # a member that does not clip stays as alone (inf / an overflowed norm: NaN)
            scale = _pick([not c for c in self.grad_clip], torch.ones_like(scale), scale,
                          self.optimizer._columns)  # noqa: SLF001
        for g in grads:
            g.mul_(_expand(scale, g).to(g.dtype))

    def _first_step(self, x: torch.Tensor, y: torch.Tensor, idx: list[torch.Tensor],
                    smoothing: Any) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        """The epoch's first :meth:`_forward`; the pack's first one also runs the task's sums vectorised, and
        any error of either (the network or the task's functions cannot run vectorised over configurations)
        is a :class:`CannotFuse`, raised before anything changed."""
        if self._stepped:
            return self._forward(x, y, idx, smoothing)
        buffers = {name: b.clone() for name, b in self.buffers.items()}  # a forward updates running statistics
        try:
            out = self._forward(x, y, idx, smoothing)
            vmap(self.task.batch_sums)(out[1].detach(), y)
        except torch.OutOfMemoryError as exc:
            self.buffers = buffers  # what close() writes back into the members
            raise PackTooLarge(f"a pack of {len(self.members)} ran out of memory at its first step "
                               f"({_first_line(exc)})") from exc
        except (RuntimeError, NotImplementedError, ValueError, TypeError) as exc:
            self.buffers = buffers
            raise CannotFuse("the network or the task cannot run vectorised over configurations: "
                             f"{_first_line(exc)}") from exc
        self._stepped = True
        return out

    @torch.inference_mode()
    def _validate(self, count: int) -> list[tuple[float, float, float] | None]:
        """Every member's (score, loss, seconds) on the shared validation split (None: not validated)."""
        first = self.members[0].trainer
        if not first.validate_each_epoch:
            return [(math.nan, math.nan, 0.0)] * count
        start = time.perf_counter()
        feeder = first.eval_feeders["val"]
        if feeder.num_samples == 0:
            return [(math.nan, math.nan, 0.0)] * count
        self.net.train(False)
        sums = vmap(self.task.batch_sums, in_dims=(0, None))
        total: torch.Tensor | int = 0
        for x, y, _ in feeder.batches(None, first.config.eval_batch_size):
            with autocast(self.device, self.config.amp):
                total = total + sums(self.net(self.params, self.buffers, x, shared_input=True)[0], y)
        seconds = (time.perf_counter() - start) / count
        return [(*self.task.finish(total[k], feeder.num_samples), seconds) for k in range(count)]

    # ------------------------------------------------------------------ members

    def remove(self, trainers: Sequence[Trainer]) -> None:
        """Take ``trainers`` out of the pack (their weights and optimiser state written back first)."""
        leaving = set(trainers)
        if not leaving:
            return
        self.sync([m for m in self.members if m.trainer in leaving])
        if self.memories is not None:
            self.memories.release([t.selector.memory for t in leaving])
        stay = [m for m in self.members if m.trainer not in leaving]
        keep = [m.index for m in stay]
        index = torch.tensor(keep, dtype=torch.long, device=self.device)
        with torch.no_grad():
            self.params = {n: take_members(p.detach(), index).requires_grad_(p.requires_grad)
                           for n, p in self.params.items()}
            self.buffers = {n: take_members(b, index) for n, b in self.buffers.items()}
        self.optimizer.select(keep)
        self.grad_clip = [self.grad_clip[k] for k in keep]
        self.members = [Member(m.trainer, k) for k, m in enumerate(stay)]

    @torch.no_grad()
    def sync(self, members: Sequence[Member] | None = None) -> None:
        """Write ``members``' (all: every member's) stacked weights, buffers and optimiser state back into
        their trainers, in :mod:`torch.optim`'s form."""
        for m in self.members if members is None else members:
            model, k = m.trainer.model, m.index
            for name, param in model.named_parameters():
                param.copy_(self.params[name][k])
                state = self.optimizer.member_state(k, name, param)
                if state:
                    m.trainer.optimizer.state[param] = state
            for name, buffer in model.named_buffers():
                if name in self.buffers:
                    buffer.copy_(self.buffers[name][k])

    def close(self) -> None:
        """The pack is done: every member's state written back (:meth:`sync`) and its memory given a table of its
        own again, so that no member keeps the pack's tables alive."""
        self.sync()
        if self.memories is not None:
            self.memories.release([m.trainer.selector.memory for m in self.members])

    @property
    def trainers(self) -> list[Trainer]:
        return [m.trainer for m in self.members]


@contextlib.contextmanager
def _undone_if_refused(members: Sequence[Trainer], write_back: Callable[[], None]) -> Iterator[None]:
    """Planning an epoch and drawing its first batches change the members' selectors, batch weights, feeders and
    the random state: a :class:`CannotFuse` inside puts them back and writes the pack's weights and optimiser
    states into the members (``write_back``), so that each member then trains the epoch alone as it would have
    without the pack."""
    saved = [(t.selector.planning_state(), t.train_feeder.state_dict(), t.sample_weights) for t in members]
    rng = torch.random.get_rng_state()
    cuda = [d for d in {t.device for t in members} if d.type == "cuda"]
    cuda_rng = [torch.cuda.get_rng_state(d) for d in cuda]
    try:
        yield
    except CannotFuse:
        for t, (planning, feeder, weights) in zip(members, saved):
            t.selector.restore_planning(planning)
            t.train_feeder.load_state_dict(feeder)
            t.sample_weights = weights
        torch.random.set_rng_state(rng)
        for d, state in zip(cuda, cuda_rng):
            torch.cuda.set_rng_state(state, d)
        write_back()
        raise


def _stacked_batches(members: Sequence[Trainer], plans: Sequence[Any]) -> Iterator[tuple[torch.Tensor, torch.Tensor,
                                                                                           list[torch.Tensor]]]:
    """Each step's batches of ``members`` (one epoch each, ``plans``), stacked: ``(x (K, B, ...), y (K, B, ...),
    [idx_k])``. Made at once where their feeders hold one copy of the data on the device
    (:meth:`~asp_tune.feeding.DeviceFeeder.stacked_batches`), else batch by batch, member by member."""
    feeders = [t.train_feeder for t in members]
    if all(type(t).epoch_batches is Trainer.epoch_batches for t in members) and isinstance(feeders[0], DeviceFeeder):
        try:
            return feeders[0].stacked_batches(feeders[1:], [plan.indices for plan in plans],
                                              members[0].config.batch_size)
        except ValueError:  # feeders on other arrays or with other augmentation: their batches one by one
            pass
    feeds = [t.epoch_batches(plan) for t, plan in zip(members, plans)]
    return ((torch.stack([b[0] for b in batches]), torch.stack([b[1] for b in batches]), [b[2] for b in batches])
            for batches in zip(*feeds))


def _check_fusable(model: nn.Module) -> None:
    """Refuse a network whose parameters are not all materialised (lazy modules), or that holds one parameter
    under two names (tied weights: stacked, they would be two)."""
    from torch.nn.parameter import UninitializedParameter

    if any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        raise CannotFuse("the network has lazy modules whose shapes are set by the first batch")
    if shares_tensors(model):
        raise CannotFuse("the network shares a parameter or buffer between layers (tied weights)")
    if any(p._backward_hooks or getattr(p, "_post_accumulate_grad_hooks", None)  # noqa: SLF001
           for p in model.parameters()):
        raise CannotFuse("the network's parameters have gradient hooks, which its stacked copies would not run")


@dataclass
class PackChoice:
    """How many configurations a pack holds, and why."""

    size: int
    reason: str
    alone_step_s: float | None = None
    pack_step_s: float | None = None
    memory: str | None = None  # auto: what one configuration's training holds, and the memory free for packs

    def summary(self) -> dict[str, Any]:
        return {"size": self.size, "reason": self.reason, "alone_step_s": self.alone_step_s,
                "pack_step_s": self.pack_step_s, "memory": self.memory}


#: The most members ``auto`` puts in one pack on a CPU: ``bench/fused.py``'s MLPs trained 2.2x and 2.6x faster
#: than one configuration at a time in packs of 16, 2.3x and 2.9x in packs of 32, and no faster in packs of 64.
AUTO_MAX_CPU = 32
#: ``auto`` times this many members (at most), on the run's batches: a short measurement. A footprint and the
#: vectorisation check (:func:`check_vectorizable`) run on batches of at most ``AUTO_MEASURED_BATCH`` samples.
AUTO_MEASURED_MEMBERS, AUTO_MEASURED_BATCH = 4, 32
#: Of the device's free memory, the share ``auto`` lets a pack's members' footprints fill (weights, gradients,
#: optimiser states, memories and saved activations: :func:`~asp_tune.footprint.measure_footprint`). The rest is
#: for what a step holds for a moment (the backward pass's gradients, kernels' workspaces, the allocator's slack):
#: a training step took up to 2.4x its members' footprints on a CPU (``bench/footprint.py``), at this share 72% of
#: the free memory.
AUTO_MEMORY_SHARE = 0.3


def measure_fusion(model: nn.Module, inputs: torch.Tensor, members: int, steps: int = 2,
                   batched_layers: bool = True, rounds: int = 3, amp: bool = False,
                   config: TrainConfig | None = None) -> tuple[float, float]:
    """Seconds per training step (forward, backward, optimiser step) of ``members`` copies of ``model`` on batches
    like ``inputs``: one after another, and as one pack (run as a pack runs it, :class:`StackedNetwork`; vmap only,
    when ``batched_layers`` is False); the fastest of ``rounds`` rounds of ``steps`` steps, timed in turn; with
    ``amp``, forwards under the autocast a run with ``amp`` uses (bf16 on CUDA). The step: ``config``'s optimiser,
    alone as its trainer makes it (:func:`~asp_tune.trainer.make_optimizer`) and in the pack a
    :class:`StackedOptimizer` whose members' learning rates differ, as a search's do (None: a plain SGD update on
    both sides). Random data: the weights handed in are not touched."""
    from asp_tune.trainer import make_optimizer

    models = [copy.deepcopy(model).train() for _ in range(members)]
    device = inputs.device
    configs = None if config is None else [dataclasses.replace(config, lr=config.lr * (1 + k / members))
                                           for k in range(members)]
    optimizers = None if configs is None else [make_optimizer(c, list(m.parameters())) for c, m in zip(configs, models)]

    def alone() -> None:
        for k, m in enumerate(models):
            m.zero_grad(set_to_none=True)
            with autocast(device, amp):
                out = m(inputs)
            out.float().square().mean().mul(1e-6).backward()
            if optimizers is not None:
                optimizers[k].step()
                continue
            with torch.no_grad():
                for p in m.parameters():
                    if p.grad is not None:
                        p.sub_(1e-6 * p.grad)

    params, buffers = stack_parameters(models)
    net = StackedNetwork(model, batched_layers).train()
    batch = inputs.unsqueeze(0).expand(members, *inputs.shape).contiguous()
    stacked = None if configs is None else StackedOptimizer(configs, params)

    def fused() -> None:
        for p in params.values():
            p.grad = None
        with autocast(device, amp):
            out = net(params, buffers, batch)[0]
        out = out.float()
        out.square().mean(dim=tuple(range(1, out.dim()))).sum().mul(1e-6).backward()
        if stacked is not None:
            stacked.step(params)
            return
        with torch.no_grad():
            for p in params.values():
                if p.grad is not None:
                    p.sub_(1e-6 * p.grad)

    runs, timings = (alone, fused), [math.inf, math.inf]
    for run in runs:
        run()  # warm-up (first-call allocations, kernel selection)
    for _ in range(rounds):  # the two in turn, the fastest round of each: a process's first calls run slow
        for i, run in enumerate(runs):
            synchronize(device)
            start = time.perf_counter()
            for _ in range(steps):
                run()
            synchronize(device)
            timings[i] = min(timings[i], (time.perf_counter() - start) / steps)
    return timings[0], timings[1]


def choose_pack_size(requested: int | str, configurations: int, trainer: Trainer,
                     device_share: float = 1.0, others: Sequence[TrainConfig] | Callable[..., Sequence[TrainConfig]]
                     = ()) -> PackChoice:
    """The pack size for ``configurations`` like ``trainer``'s: ``requested`` as given (at most ``configurations``,
    said in the reason where that cut it), or for ``auto`` the most
    that :data:`AUTO_MEMORY_SHARE` of ``device_share`` of the device's free memory holds (each member's footprint
    measured, activations included; at most :data:`AUTO_MAX_CPU` on a CPU), and 1 when a short measurement of
    training steps at the run's batch size shows the pack less than :data:`AUTO_MIN_SPEEDUP` faster than its members
    one after another, there and, where ``others`` hold a kind with a larger footprint, on that kind too.
    ``device_share``: the part of the device this pack may use (several packs sharing one). ``others``:
    configurations of the same search on the same data whose packs are of other kinds (a searched width or batch
    size), or a function that makes them given a measure (a configuration's footprint in bytes, None where
    unknown): the largest footprint of them all sizes every pack."""
    check_pack("pack_size", requested)
    if requested != "auto":
        asked = int(requested)
        size = max(1, min(asked, configurations))
        how = f"packs of {size}" if size > 1 else "one configuration at a time"
        return PackChoice(size, f"{how} (as asked)" if size >= asked else
                          f"{how} (asked {asked}; the search has {configurations} configuration"
                          f"{'s' if configurations != 1 else ''})")
    if configurations < 2:
        return PackChoice(1, "one configuration")
    model = trainer.model
    try:
        _check_fusable(model)
    except CannotFuse as exc:
        return PackChoice(1, f"not fused: {exc}")
    device, config = trainer.device, trainer.config
    rows = min(config.batch_size, AUTO_MEASURED_BATCH, len(trainer.data.train))
    try:
        with _untouched(trainer):
            footprint = measure_footprint(model, _first_rows(trainer, rows), config.batch_size, config.optimizer,
                                          config.amp, extra_state=trainer.selector.memory.nbytes)
    except (RuntimeError, NotImplementedError, ValueError) as exc:
        return PackChoice(1, f"not fused: its memory could not be measured ({_first_line(exc)})")
    measured: dict[tuple, Footprint | str] = {pack_key(config): footprint}
    kind_configs: dict[tuple, TrainConfig] = {pack_key(config): config}

    def measure(other: TrainConfig) -> Footprint | str:
        key = pack_key(other)
        if key not in measured:
            measured[key] = _footprint_of(trainer, other)
            kind_configs[key] = other
        return measured[key]

    for other in (others(lambda c: getattr(measure(c), "total", None)) if callable(others) else others):
        measure(other)
    footprints = {k: f for k, f in measured.items() if isinstance(f, Footprint)}
    kinds = list(footprints.values())
    unmeasured = [f for f in measured.values() if isinstance(f, str)]
    footprint = max(kinds, key=lambda f: f.total)
    if device.type == "cuda":
        torch.cuda.empty_cache()  # what the measurements left in the allocator's cache is free for packs
    free = free_bytes(device)
    budget = None if free is None else int(AUTO_MEMORY_SHARE * device_share * free)
    held = configurations if budget is None else budget // max(footprint.total, 1)
    limit = min(configurations, AUTO_MAX_CPU if device.type != "cuda" else configurations)
    size = max(1, min(held, limit))
    memory = (footprint.describe() + (f" (the largest of {len(kinds)} kinds of configuration measured)"
                                      if len(kinds) > 1 else "")
              + (f"; {len(unmeasured)} kind{'s' if len(unmeasured) > 1 else ''} could not be measured, their "
                 f"trials will say why if they fail ({unmeasured[0]})" if unmeasured else "")
              + ("" if budget is None else f"; {readable_bytes(budget)} of the {readable_bytes(free)} free for packs"))
    if held < limit:
        bound = f"; the memory holds {size} ({memory})"
    else:
        bound = f"; at most {AUTO_MAX_CPU} on a CPU" if size == AUTO_MAX_CPU < configurations else ""
    if size < 2:
        return PackChoice(1, f"the device's memory holds one configuration's training at a time ({memory})",
                          memory=memory)
    measured = min(size, AUTO_MEASURED_MEMBERS)
    batch = min(config.batch_size, len(trainer.data.train))  # the run's: a pack that saves calls on small batches
    try:  # can lose to its members one after another on large ones; the memory holds `size` members at this batch
        alone_s, pack_s = _measure(trainer, measured, batch, steps=2)
    except CannotFuse as exc:
        return PackChoice(1, f"not fused: {exc}", memory=memory)
    how = f"timed with {measured} configurations on the run's batches of {batch}, on {device.type}"
    if pack_s * AUTO_MIN_SPEEDUP > alone_s:
        return PackChoice(1, f"not fused: a pack's step took {pack_s * 1e3:.1f} ms against {alone_s * 1e3:.1f} ms one "
                             f"after another ({how}; packs need {AUTO_MIN_SPEEDUP:g}x)", alone_s, pack_s, memory)
    widest = max(footprints, key=lambda k: footprints[k].total)
    if widest != pack_key(config):  # a searched width: the kind that costs most is timed too, and must win as well
        other = kind_configs[widest]
        rows = min(other.batch_size, len(trainer.data.train))
        try:
            other_alone_s, other_pack_s = _measure(trainer, measured, rows, steps=2, config=other)
        except CannotFuse as exc:
            return PackChoice(1, f"not fused: the largest kind of configuration ({_kind_of(other)}): {exc}",
                              memory=memory)
        if other_pack_s * AUTO_MIN_SPEEDUP > other_alone_s:
            return PackChoice(1, f"not fused: for the largest kind of configuration ({_kind_of(other)}) a pack's step "
                                 f"took {other_pack_s * 1e3:.1f} ms against {other_alone_s * 1e3:.1f} ms one after "
                                 f"another (the first kind's {pack_s * 1e3:.1f} against {alone_s * 1e3:.1f} ms; {how})",
                              alone_s, pack_s, memory)
        how += (f"; the largest kind ({_kind_of(other)}) {other_alone_s / other_pack_s:.2f}x "
                f"({other_pack_s * 1e3:.1f} against {other_alone_s * 1e3:.1f} ms)")
    return PackChoice(size, f"packs of {size}: a pack's step {alone_s / pack_s:.2f}x faster than one after another "
                            f"({pack_s * 1e3:.1f} against {alone_s * 1e3:.1f} ms; {how}){bound}", alone_s, pack_s,
                      memory)


def _footprint_of(trainer: Trainer, config: TrainConfig) -> Footprint | str:
    """The footprint of training ``config``'s network on ``trainer``'s data and device, or why it could not be
    built or measured (its trials then fail on their own and say why, or train alone)."""
    rows = min(config.batch_size, AUTO_MEASURED_BATCH, len(trainer.data.train))
    try:
        with _untouched(trainer):
            network = build_network(config.validate(), trainer.data, trainer.device)[0].to(trainer.device)
            return measure_footprint(network, _first_rows(trainer, rows), config.batch_size, config.optimizer,
                                     config.amp, extra_state=trainer.selector.memory.nbytes)
    except Exception as exc:  # noqa: BLE001 - the user's network, whatever it raises: its trials say it
        return f"{type(exc).__name__}: {_first_line(exc)}"


@contextlib.contextmanager
def _untouched(trainer: Trainer) -> Iterator[None]:
    """Measurements on ``trainer``'s network and batches that leave its batches and the random state as they
    were."""
    device = trainer.device
    feeder = trainer.train_feeder.state_dict()
    try:
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            yield
    finally:
        trainer.train_feeder.load_state_dict(feeder)


def _first_rows(trainer: Trainer, rows: int) -> torch.Tensor:
    """The inputs of ``trainer``'s first ``rows`` training samples, as its batches give them."""
    return next(iter(trainer.train_feeder.batches(torch.arange(rows), rows)))[0]


def _measure(trainer: Trainer, members: int, rows: int, steps: int, rounds: int = 3,
             evaluate: bool = False, config: TrainConfig | None = None) -> tuple[float, float]:
    """:func:`measure_fusion` of ``trainer``'s network (or of ``config``'s, built on the trainer's data) with its
    optimiser on its first ``rows`` training samples (and with ``evaluate`` first a check that its training forward
    replaces no parameter or buffer, :func:`replaced_in_forward`, and after one forward in evaluation mode, as a
    pack validates); the trainer's batches and random state stay as they were. :class:`CannotFuse` when the
    network cannot run vectorised."""
    device = trainer.device
    try:
        with _untouched(trainer):
            x = _first_rows(trainer, rows)
            replaced = replaced_in_forward(trainer.model, x) if evaluate else []
            if replaced:  # before any vectorised step, which such a forward may fail in another way
                short = replaced[0].rsplit(".", 1)[-1]
                raise CannotFuse(f"its forward replaces {', '.join(replaced)} (self.{short} = ...) where a pack "
                                 f"needs an in-place update (self.{short}.mul_(...).add_(...)): a pack would lose "
                                 "the new value")
            model = trainer.model if config is None else \
                build_network(config.validate(), trainer.data, device)[0].to(device)
            config = trainer.config if config is None else config
            timings = measure_fusion(model, x, members, steps, rounds=rounds, amp=config.amp, config=config)
            if evaluate:
                net = StackedNetwork(trainer.model).train(False)
                params, buffers = stack_parameters([copy.deepcopy(trainer.model) for _ in range(members)])
                with torch.inference_mode(), autocast(device, trainer.config.amp):
                    net(params, buffers, x, shared_input=True)
                differences = precision_differences(trainer.model, x, trainer.config.amp)
                if differences:
                    raise CannotFuse(f"under autocast a pack would compute {differences[0]}"
                                     + (f" (and {len(differences) - 1} more)" if len(differences) > 1 else ""))
            return timings
    except torch.OutOfMemoryError as exc:
        raise PackTooLarge(f"a pack of {members} ran out of memory ({_first_line(exc)})") from exc
    except CannotFuse:
        raise
    except Exception as exc:  # noqa: BLE001 - the user's network under vmap, whatever it raises (a TypeError too)
        raise CannotFuse(f"the network cannot run vectorised over configurations: {_first_line(exc)}") from exc


def replaced_in_forward(model: nn.Module, x: torch.Tensor) -> list[str]:
    """The parameters and buffers a training forward of a copy of ``model`` on ``x`` replaces (``self.running =
    0.9 * self.running + ...``) rather than updates in place: a pack keeps them stacked and would lose the new
    value (vmap's forward sets it on a module it then puts back)."""
    single = copy.deepcopy(model).train(True)
    before = {**dict(single.named_parameters()), **dict(single.named_buffers())}
    with torch.no_grad():
        single(x)
    after = {**dict(single.named_parameters()), **dict(single.named_buffers())}
    return sorted(name for name, tensor in before.items() if after.get(name) is not tensor)


def precision_differences(model: nn.Module, x: torch.Tensor, amp: bool) -> list[str]:
    """Where a pack of ``model`` would compute in another dtype than the network alone, under the autocast of a
    run with ``amp`` on ``x``'s device: one training and one evaluation forward of copies on ``x``, every torch
    function's result compared (:func:`~asp_tune.vmap_autocast.dtype_differences`). Empty where that autocast is
    off, or where the pack runs batched layers, which run outside vmap: autocast reaches all their functions."""
    device = x.device
    with autocast(device, amp), torch.no_grad():
        if not torch.is_autocast_enabled(device.type):
            return []
        net = StackedNetwork(model)
        if net.how != "vmap":
            return []
        net.tap.remove()  # the trainers' own tap: not the network's arithmetic, and alone it may be absent
        found: list[str] = []
        for training in (True, False):
            net.train(training)
            single = copy.deepcopy(model).train(training)
            for module in single.modules():
                for key, hook in list(module._forward_pre_hooks.items()):  # noqa: SLF001
                    if isinstance(getattr(hook, "__self__", None), FeatureNormTap):
                        del module._forward_pre_hooks[key]  # noqa: SLF001
            with DtypeRecorder() as alone:
                single(x)
            params, buffers = stack_parameters([copy.deepcopy(model) for _ in range(2)])
            net.recorder = DtypeRecorder()
            net(params, buffers, x.unsqueeze(0).expand(2, *x.shape))
            found += [d + ("" if training else " (evaluating)")
                      for d in dtype_differences(alone.calls, net.recorder.calls)]
    return found


#: What vmap's errors mean to a user, by a phrase of their message (vmap's own asks to file an issue with PyTorch).
VMAP_REASONS = {"data-dependent control flow": "it branches on its data (data-dependent control flow)",
                ".item()": "it reads a number out of a tensor (.item(), float() or int() of one)"}


def _first_line(exc: BaseException) -> str:
    """``exc`` in one line: its first, or for a known vmap error what it means (:data:`VMAP_REASONS`)."""
    text = str(exc).strip()
    if text.startswith("vmap"):
        for phrase, reason in VMAP_REASONS.items():
            if phrase in text:
                return reason
    return text.splitlines()[0] if text else type(exc).__name__


def check_vectorizable(trainer: Trainer) -> None:
    """Raise :class:`CannotFuse` unless ``trainer``'s network trains and evaluates vectorised over configurations
    (lazy modules, tied weights, or control flow that reads the data, refuse): one short training step and one
    evaluation forward on copies of it, on its own data."""
    _check_fusable(trainer.model)
    _measure(trainer, 2, min(trainer.config.batch_size, AUTO_MEASURED_BATCH, len(trainer.data.train)), steps=1,
             rounds=1, evaluate=True)


def kind_name(trainer: Trainer) -> str:
    """``trainer``'s kind of pack (:func:`pack_key`) as a note names it: its network's class, arguments and batch
    size."""
    return _kind_of(trainer.config, type(trainer.model).__name__)


def _kind_of(config: TrainConfig, network: str | None = None) -> str:
    args = f" {config.model_args}" if config.model_args else ""
    return f"{network or config.model}{args} at batch size {config.batch_size}"


class PackKinds:
    """Whether each kind of pack (:func:`pack_key`) trains fused, and in packs of how many, decided per kind: a
    kind is checked (:func:`check_vectorizable`: a training step, an evaluation forward and autocast's dtypes) on
    its first trainer before any pack of it trains. A refusal holds for its kind only; a pack that ran out of
    memory (:class:`PackTooLarge`) halves its kind's packs, down to one configuration at a time. ``notes``: why a
    kind trains otherwise than asked, once per kind and reason."""

    def __init__(self) -> None:
        self.checked: set[tuple] = set()
        self.refused: dict[tuple, str] = {}
        self.limits: dict[tuple, int] = {}  # the most members a kind's pack may hold (after running out of memory)
        self.notes: list[str] = []

    def size(self, trainer: Trainer, asked: int) -> int:
        """How many members a pack of ``trainer``'s kind holds: ``asked`` (at most its limit), or 1 where the kind
        is refused; a kind met for the first time is checked first (on copies: ``trainer`` stays as it was)."""
        key = pack_key(trainer.config)
        if asked > 1 and key not in self.checked:
            self.checked.add(key)
            try:
                check_vectorizable(trainer)
            except CannotFuse as exc:
                self.refuse(trainer, exc, 2)
        return 1 if key in self.refused else min(asked, self.limits.get(key, asked))

    def refuse(self, trainer: Trainer, exc: CannotFuse, members: int) -> None:
        """A pack of ``members`` configurations of ``trainer``'s kind was refused with ``exc``: out of memory, its
        kind's packs hold half as many (alone below two); for any other reason its kind trains alone. Said in
        :attr:`notes`."""
        key = pack_key(trainer.config)
        if isinstance(exc, PackTooLarge) and members // 2 >= 2:
            self.limits[key] = members // 2
            note = (f"packs of {kind_name(trainer)} hold at most {members // 2}: {exc} (memory, not a network "
                    "that cannot be fused)")
        else:
            self.refused[key] = str(exc)
            why = " (memory, not a network that cannot be fused)" if isinstance(exc, PackTooLarge) else ""
            note = f"not fused: {exc}{why}; each configuration of {kind_name(trainer)} trains alone"
        if note not in self.notes:
            self.notes.append(note)
