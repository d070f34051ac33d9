"""What one configuration's training holds in memory, and what the device has free: how many a pack can hold.

A training step holds the network's weights, their gradients and the optimiser's states, and, between the
forward and the backward pass, every activation the backward pass needs. :func:`measure_footprint` counts
the first from the parameters and measures the second: a forward of a copy of the network on a few samples,
and one on half as many, under :func:`torch.autograd.graph.saved_tensors_hooks`, add up the tensors autograd
saves (each storage once and whole, the parameters' own left out); what grows with the samples is scaled to
the run's batch size, what does not is counted once. Activations grow with the batch and the input, not the
parameters: a network of few weights on large images needs far more memory per configuration than its
weights say. What a step holds only for a moment (the backward pass's gradients, kernels' workspaces) is not
counted: :data:`asp_tune.pack.AUTO_MEMORY_SHARE` leaves room for it.

What the device can still give is :func:`asp_tune.sizes.free_bytes`.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from asp_tune.device import autocast

#: Optimiser states per weight, by optimiser (SGD: its momentum buffer).
OPTIMISER_STATES = {"sgd": 1, "adam": 2, "adamw": 2}


@dataclass(frozen=True)
class Footprint:
    """Bytes one configuration's training holds: ``state`` (weights, gradients, optimiser states, the importance
    memory's tables) and ``activations`` (saved for the backward pass at a batch of ``batch_size``)."""

    state: int
    activations: int
    batch_size: int

    @property
    def total(self) -> int:
        return self.state + self.activations

    def describe(self) -> str:
        return (f"{readable_bytes(self.total)} a configuration: {readable_bytes(self.state)} of weights, gradients "
                f"and optimiser state, {readable_bytes(self.activations)} of activations at batch {self.batch_size}")


def readable_bytes(count: int) -> str:
    """``count`` bytes in MB, or in GB from 1 GB on."""
    return f"{count / 2 ** 30:.1f} GB" if count >= 2 ** 30 else f"{count / 2 ** 20:.1f} MB"


def saved_activation_bytes(model: nn.Module, x: torch.Tensor, amp: bool = False) -> int:
    """Bytes autograd keeps for the backward pass of one training forward of ``model`` on ``x`` (a copy of the
    network, in training mode, under the autocast a run with ``amp`` uses; ``x`` copied first, so that it is a
    storage of its own): every saved storage once and whole (a saved view keeps all of it alive), the
    network's parameters and buffers left out."""
    single = copy.deepcopy(model).train()
    own = {t.untyped_storage().data_ptr() for t in (*single.parameters(), *single.buffers())}
    storages: dict[int, int] = {}

    def keep(tensor: torch.Tensor) -> torch.Tensor:
        storage = tensor.untyped_storage()
        if storage.data_ptr() not in own and storage.device.type != "meta":
            storages[storage.data_ptr()] = storage.nbytes()
        return tensor

    with torch.autograd.graph.saved_tensors_hooks(keep, lambda tensor: tensor), autocast(x.device, amp):
        single(x.clone())
    return sum(storages.values())


def measure_footprint(model: nn.Module, x: torch.Tensor, batch_size: int, optimizer: str = "sgd",
                      amp: bool = False, extra_state: int = 0) -> Footprint:
    """The :class:`Footprint` of training ``model`` with ``optimizer`` at ``batch_size``; ``extra_state``: bytes of
    other per-configuration state (the importance memory). Its activations are measured on the batch ``x`` (a
    few samples) and on its first half: what grows with the samples is scaled to ``batch_size``, what does not
    (weights cast for autocast, a batch norm's statistics) is counted once."""
    weights = sum(p.numel() * p.element_size() for p in model.parameters() if p.requires_grad)
    frozen = sum(p.numel() * p.element_size() for p in model.parameters() if not p.requires_grad)
    buffers = sum(b.numel() * b.element_size() for b in model.buffers())
    state = weights * (2 + OPTIMISER_STATES.get(optimizer, 2)) + frozen + buffers + extra_state
    rows = int(x.shape[0])
    full = saved_activation_bytes(model, x, amp)
    if rows < 2:
        return Footprint(state, full * batch_size, batch_size)
    half = rows // 2
    per_row = max(0.0, (full - saved_activation_bytes(model, x[:half], amp)) / (rows - half))
    fixed = max(0.0, full - per_row * rows)
    return Footprint(state, int(fixed + per_row * batch_size), batch_size)
