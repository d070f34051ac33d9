"""One network run for K configurations at once, on its parameters stacked along a new first dimension.

:class:`StackedNetwork` runs a stacked forward in one of two ways, chosen once per network:

- **Batched layers**, for a network that is a chain of layers this module knows how to stack
  (:data:`STACKED_LAYERS`: Linear, BatchNorm1d, Flatten, element-wise activations, dropout): each Linear is one
  batched matrix product over the K members, each BatchNorm1d one batch norm over K x C channels. The chain is
  read from the network with :func:`torch.fx.symbolic_trace`, so a user's own ``nn.Module`` whose ``forward``
  only calls such layers one after another qualifies.
- **vmap** (:func:`torch.func.vmap` over :func:`torch.func.functional_call`) for any other network.

Both give each member the arithmetic of its network alone, up to the summation order of batched kernels. On
2 CPU cores the MLP packs of 16 in ``bench/pack_step.py`` step 1.0-1.5x faster with batched layers than with
vmap, which spends the difference copying activations and gradients between layouts.

A stacked Linear weight (K, out, in) is kept laid out as (K, in, out) in memory (:func:`stack_parameters`): the
batched product reads it and writes its gradient in that layout, so neither is copied at every step.
"""

from __future__ import annotations

import contextlib
import copy
from typing import Any, Callable, Sequence

import torch
from torch import nn
from torch.func import functional_call, stack_module_state, vmap

from asp_tune.memory import FeatureNormTap, output_layer
from asp_tune.vmap_autocast import DtypeRecorder, autocast_under_vmap

Tensors = dict[str, torch.Tensor]
#: ``forward(module, params, buffers, x)``: a layer's output for stacked input ``x`` (K, B, ...), its own
#: parameters and buffers given by their short names (``weight``, ``running_mean``), stacked (K, ...).
StackedForward = Callable[[nn.Module, Tensors, Tensors, torch.Tensor], torch.Tensor]


def _linear(module: nn.Linear, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
    weight, bias = params["weight"], params.get("bias")
    flat = x.reshape(x.shape[0], -1, x.shape[-1])
    out = torch.bmm(flat, weight.mT) if bias is None else torch.baddbmm(bias.unsqueeze(1), flat, weight.mT)
    return out.reshape(*x.shape[:-1], weight.shape[1])


def _batch_norm(module: nn.BatchNorm1d, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
    """The K members' channels side by side, (B, K x C, ...): one batch norm, each channel's statistics its own
    member's, decided as :class:`torch.nn.BatchNorm1d` decides them (``momentum`` given; see :func:`_fits`)."""
    members, batch, channels = x.shape[:3]
    folded = x.transpose(0, 1).reshape(batch, members * channels, *x.shape[3:])
    has_stats = "running_mean" in buffers  # kept even when track_running_stats is turned off later
    if module.training and module.track_running_stats and "num_batches_tracked" in buffers:
        buffers["num_batches_tracked"].add_(1)
    stats = has_stats and (not module.training or module.track_running_stats)

    def flat(t: torch.Tensor | None) -> torch.Tensor | None:
        return None if t is None else t.reshape(-1)

    out = torch.nn.functional.batch_norm(
        folded, flat(buffers["running_mean"]) if stats else None, flat(buffers["running_var"]) if stats else None,
        flat(params.get("weight")), flat(params.get("bias")), module.training or not has_stats, module.momentum,
        module.eps)
    return out.reshape(batch, members, channels, *x.shape[3:]).transpose(0, 1)


def _flatten(module: nn.Flatten, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
    def shift(dim: int) -> int:
        return dim + 1 if dim >= 0 else dim

    return x.flatten(shift(module.start_dim), shift(module.end_dim))


def _elementwise(module: nn.Module, params: Tensors, buffers: Tensors, x: torch.Tensor) -> torch.Tensor:
    return module(x)


#: The layers a chain may hold, by exact type (a subclass may change ``forward``), with their stacked forward.
STACKED_LAYERS: dict[type, StackedForward] = {
    nn.Linear: _linear, nn.BatchNorm1d: _batch_norm, nn.Flatten: _flatten,
    **{kind: _elementwise for kind in (
        nn.Identity, nn.ReLU, nn.ReLU6, nn.LeakyReLU, nn.ELU, nn.SELU, nn.CELU, nn.GELU, nn.SiLU, nn.Mish, nn.Tanh,
        nn.Sigmoid, nn.Hardtanh, nn.Hardswish, nn.Hardsigmoid, nn.Softplus, nn.Dropout, nn.AlphaDropout)},
}


def _fits(module: nn.Module) -> bool:
    """``module`` stacks as a chain layer. A BatchNorm1d without ``momentum`` (a cumulative average) weighs each
    batch by its member's own count of batches, which one batch norm cannot (nor can vmap: such a network is
    not fused)."""
    if type(module) not in STACKED_LAYERS or "forward" in vars(module):  # a forward patched onto the instance
        return False
    params = dict(module.named_parameters(recurse=False))
    if any(getattr(module, name, None) is not None and name not in params for name in ("weight", "bias")):
        return False  # a weight or bias kept as a buffer: the stacked forward reads parameters
    if type(module) not in (nn.Linear, nn.BatchNorm1d) and (params or list(module.buffers(recurse=False))):
        return False
    return not (isinstance(module, nn.BatchNorm1d) and module.momentum is None)


class _ModeTracer(torch.fx.Tracer):
    """A tracer that also notes whether gradients and autocast were on at every module call: a ``forward`` may
    switch them (``torch.no_grad()``, ``torch.autocast``), which the traced graph does not record."""

    def __init__(self) -> None:
        super().__init__()
        self.modes: set[tuple[bool, ...]] = set()

    def call_module(self, m: nn.Module, forward: Callable, args: tuple, kwargs: dict) -> Any:
        self.modes.add(_modes())
        return super().call_module(m, forward, args, kwargs)


def _modes() -> tuple[bool, ...]:
    return torch.is_grad_enabled(), torch.is_autocast_enabled("cpu"), torch.is_autocast_enabled("cuda")


def _hooked(model: nn.Module) -> bool:
    """Whether any hook runs around ``model``'s layers (a traced graph leaves hooks out), but for the taps of the
    last layer's input that trainers put there (:class:`~asp_tune.memory.FeatureNormTap`)."""
    from torch.nn.modules import module as torch_module

    if any((torch_module._global_forward_hooks, torch_module._global_forward_pre_hooks,  # noqa: SLF001
            torch_module._global_backward_hooks, torch_module._global_backward_pre_hooks)):  # noqa: SLF001
        return True
    return any(getattr(hook, "__func__", None) is not FeatureNormTap._hook  # noqa: SLF001
               for m in model.modules()
               for hooks in (m._forward_hooks, m._forward_pre_hooks, m._backward_hooks,  # noqa: SLF001
                             m._backward_pre_hooks)  # noqa: SLF001
               for hook in hooks.values())


def shares_tensors(model: nn.Module) -> bool:
    """Whether two of ``model``'s names hold one parameter or buffer (tied weights)."""
    return (len(list(model.named_parameters(remove_duplicate=False))) != len(list(model.named_parameters()))
            or len(list(model.named_buffers(remove_duplicate=False))) != len(list(model.named_buffers())))


def layer_chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    """``model``'s layers in the order its ``forward`` calls them, each on the previous one's output, when they
    are all :data:`STACKED_LAYERS`; None for any other network: one whose ``forward`` does more than chain
    layers, switches gradients or autocast, or that has hooks or tied weights. A traced graph records neither
    branches nor modes, so the network is read with :mod:`torch.fx` as a pack runs it (training; evaluation
    without gradients) and under autocast, and every reading must agree."""
    if _hooked(model) or shares_tensors(model):
        return None
    was_training, chains = model.training, []
    readings = [(True, contextlib.nullcontext), (False, torch.no_grad)]
    readings += [(True, lambda kind=kind: torch.autocast(kind)) for kind in ("cpu", "cuda")
                 if kind == "cpu" or torch.cuda.is_available()]
    try:
        for training, context in readings:
            with context():
                chains.append(_traced_chain(model.train(training)))
    finally:
        model.train(was_training)
    if any(chain is None for chain in chains) or len({tuple(n for n, _ in chain) for chain in chains}) != 1:
        return None
    return chains[0]


def _traced_chain(model: nn.Module) -> list[tuple[str, nn.Module]] | None:
    tracer, modes = _ModeTracer(), _modes()
    try:  # on a copy: a forward that assigns to its module (self.running = ...) would keep tracing's proxy there
        graph = tracer.trace(copy.deepcopy(model))
    except Exception:  # noqa: BLE001 - data-dependent control flow, a network that cannot be copied: not a plain chain
        return None
    if tracer.modes - {modes}:
        return None
    modules = dict(model.named_modules())
    chain: list[tuple[str, nn.Module]] = []
    previous = None
    for node in graph.nodes:
        if node.op == "placeholder":
            if previous is not None:
                return None
            previous = node
        elif node.op == "call_module" and node.args == (previous,) and not node.kwargs \
                and _fits(modules[node.target]):
            chain.append((node.target, modules[node.target]))
            previous = node
        elif node.op == "output" and node.args == (previous,) and chain:
            return chain
        else:
            return None
    return None


def _linear_weights(model: nn.Module) -> set[str]:
    return {f"{name}.weight" for name, m in model.named_modules() if isinstance(m, nn.Linear)}


def stack_parameters(models: Sequence[nn.Module]) -> tuple[Tensors, Tensors]:
    """The ``models``' parameters and buffers stacked (K, ...), as :func:`torch.func.stack_module_state`, each
    Linear weight laid out as (K, in, out) in memory, which batched products read and write without a copy."""
    params, buffers = (dict(d) for d in stack_module_state(list(models)))
    for name in _linear_weights(models[0]) & params.keys():
        weight = params[name]
        params[name] = weight.detach().mT.contiguous().mT.requires_grad_(weight.requires_grad)
    return params, buffers


def take_members(stacked: torch.Tensor, index: torch.Tensor) -> torch.Tensor:
    """``stacked[index]`` (some of its members, each once) in ``stacked``'s memory layout."""
    return torch.empty_like(stacked[:index.numel()]).copy_(stacked[index])


class StackedNetwork:
    """``model``'s forward for K stacked members (:func:`stack_parameters`), with batched layers where the network
    is a chain of :data:`STACKED_LAYERS` (unless ``batched_layers`` is False), else vmap. Each call returns the
    outputs (K, B, ...) and the per-sample norms of the features into the output layer (K, B), or None when the
    network has no Linear output layer (the gradient-norm importance metric's input)."""

    def __init__(self, model: nn.Module, batched_layers: bool = True):
        self.base = copy.deepcopy(model).to("meta")
        self.layers = layer_chain(self.base) if batched_layers else None
        self.output = output_layer(self.base)
        self.tap = FeatureNormTap(self.base) if self.layers is None else None
        self.recorder: DtypeRecorder | None = None  # notes what a vmapped forward computes in, where set
        if self.layers is not None:
            # evaluation feeds every member one input, a view that an in-place layer before the first layer
            # that makes a new tensor would write into: such a chain gets a copy of it
            self._copy_shared = False
            for _, module in self.layers:
                if isinstance(module, (nn.Linear, nn.BatchNorm1d)):
                    break
                self._copy_shared |= bool(getattr(module, "inplace", False))
            prefixes = [f"{name}." for name, _ in self.layers]
            self._names = [(prefix, [n for n, _ in module.named_parameters()], [n for n, _ in module.named_buffers()])
                           for prefix, (_, module) in zip(prefixes, self.layers)]

    @property
    def how(self) -> str:
        return "batched layers" if self.layers is not None else "vmap"

    def train(self, mode: bool = True) -> "StackedNetwork":
        self.base.train(mode)
        return self

    def __call__(self, params: Tensors, buffers: Tensors, x: torch.Tensor,
                 shared_input: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Outputs and feature norms for input ``x``: (K, B, ...), or (B, ...) for every member when
        ``shared_input``."""
        if self.layers is None:
            return self._vmapped(params, buffers, x, shared_input)
        members = next(iter(params.values())).shape[0]
        if shared_input:
            x = x.unsqueeze(0).expand(members, *x.shape)
            x = x.contiguous() if self._copy_shared else x
        norms = None
        for (prefix, param_names, buffer_names), (_, module) in zip(self._names, self.layers):
            if module is self.output:
                norms = x.detach().float().flatten(2).norm(dim=2)
            x = STACKED_LAYERS[type(module)](module, {n: params[prefix + n] for n in param_names},
                                             {n: buffers[prefix + n] for n in buffer_names}, x)
        fed = self.output is None or x.dim() != 3 or self.output.out_features == x.shape[-1]  # as FeatureNormTap.feeds
        return x, norms if fed else None

    def _vmapped(self, params: Tensors, buffers: Tensors, x: torch.Tensor,
                 shared_input: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
        def one(p: Tensors, b: Tensors, sample: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
            self.tap.norms = None
            out = functional_call(self.base, (p, b), (sample,))
            norms = self.tap.norms if self.tap.norms is not None else torch.zeros(sample.shape[0],
                                                                                  device=sample.device)
            self.tap.norms = None
            return out, norms

        rules = autocast_under_vmap(x.device.type)
        with (rules if rules is not None else contextlib.nullcontext(),
              self.recorder if self.recorder is not None else contextlib.nullcontext()):
            out, norms = vmap(one, in_dims=(0, 0, None if shared_input else 0), randomness="different")(
                params, buffers, x)
        outputs = out.shape[-1] if out.dim() == 3 else None  # (K, B) regression values: nothing to compare
        return out, (norms if self.tap.layer is not None and (outputs is None or self.tap.feeds(outputs)) else None)
