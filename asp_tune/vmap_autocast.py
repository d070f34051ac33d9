"""Autocast's casts for the functions that :func:`torch.func.vmap` runs without them, and a record of the
dtypes a forward computes in, to check a pack against its network alone.

Under ``vmap``, autocast does not reach every function it casts when the same network runs alone. With CPU
autocast (bf16) in torch 2.14, a network run through ``vmap`` computes its convolutions, Linear layers with a
bias, PReLUs and ``addmm``/``baddbmm`` in float32 where alone they run in bf16, and a batch norm given a bf16
input fails ("expected scalar type BFloat16 but found Float") where alone it normalises in float32 and returns
bf16. :class:`AutocastUnderVmap` applies those casts itself (the same ones: nothing changes where vmap already
keeps them). What it cannot mend (a layer or group norm, whose precision under autocast differs between CPU and
CUDA; a function such as ``multi_head_attention_forward`` whose inner calls no mode sees) a pack finds before it
trains: :class:`DtypeRecorder` notes the dtype of every function's result in a forward, alone and in a pack, and
:func:`dtype_differences` compares them (:func:`~asp_tune.pack.precision_differences`).
"""

from __future__ import annotations

from collections import defaultdict

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

#: Functions autocast runs in its lower precision (its float32, float16 and bf16 inputs cast to it) that vmap
#: leaves as given.
LOWER_PRECISION = frozenset({F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                             F.conv_transpose3d, F.prelu, torch.addmm, torch.baddbmm, torch.addbmm,
                             F.scaled_dot_product_attention})
#: Normalisations that, alone, take a lower-precision input beside float32 weights and statistics (computed in
#: float32, returned in the input's precision) and under vmap refuse the mix.
NORMALISATIONS = frozenset({F.batch_norm, F.instance_norm, torch.batch_norm, torch.instance_norm})
_CASTABLE = (torch.float32, torch.float16, torch.bfloat16)  # autocast never casts float64


class AutocastUnderVmap(TorchFunctionMode):
    """While active (around a ``vmap``), and wherever autocast is on for ``device_type`` (a ``forward`` may turn
    it off), casts the inputs of :data:`LOWER_PRECISION` functions to autocast's dtype, and runs
    :data:`NORMALISATIONS` of a lower-precision input in their weights' precision, returning the input's."""

    def __init__(self, device_type: str):
        super().__init__()
        self.device_type = device_type

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if not torch.is_autocast_enabled(self.device_type):
            return func(*args, **kwargs)
        if func in LOWER_PRECISION:
            dtype = torch.get_autocast_dtype(self.device_type)
            args, kwargs = tree_map(lambda v: v.to(dtype) if isinstance(v, torch.Tensor) and v.dtype in _CASTABLE
                                    else v, (args, kwargs))
        elif func in NORMALISATIONS and args:
            wider = [t.dtype for t in (*args[1:], *kwargs.values())
                     if isinstance(t, torch.Tensor) and t.is_floating_point()]
            x = args[0]
            if wider and x.dtype != wider[0] and x.dtype.itemsize < wider[0].itemsize:
                return func(x.to(wider[0]), *args[1:], **kwargs).to(x.dtype)
        return func(*args, **kwargs)


def autocast_under_vmap(device_type: str) -> AutocastUnderVmap | None:
    """:class:`AutocastUnderVmap` when autocast is on for ``device_type``; else None (nothing to do)."""
    return AutocastUnderVmap(device_type) if torch.is_autocast_enabled(device_type) else None


class DtypeRecorder(TorchFunctionMode):
    """While active, notes each torch function called (outside the handlers of modes entered later) and the
    dtype of its result (a tensor, or a tuple's first): ``calls``, in order, as (name, dtype)."""

    def __init__(self):
        super().__init__()
        self.calls: list[tuple[str, torch.dtype]] = []

    def __torch_function__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        first = out[0] if isinstance(out, (tuple, list)) and out else out
        if isinstance(first, torch.Tensor):
            self.calls.append((getattr(func, "__name__", str(func)), first.dtype))
        return out


def dtype_differences(alone: list[tuple[str, torch.dtype]], packed: list[tuple[str, torch.dtype]]) -> list[str]:
    """Where ``packed`` (a :class:`DtypeRecorder`'s calls) computed in another dtype than ``alone``: the n-th call
    of each function against its n-th call alone (a pack may call others besides), as ``"conv2d in float32,
    alone in bfloat16"``, in the order of ``alone``."""
    theirs: dict[str, list[torch.dtype]] = defaultdict(list)
    for name, dtype in packed:
        theirs[name].append(dtype)
    seen: dict[str, int] = defaultdict(int)
    found = []
    for name, dtype in alone:
        n, seen[name] = seen[name], seen[name] + 1
        if n < len(theirs[name]) and theirs[name][n] != dtype:
            found.append(f"{name} in {_short(theirs[name][n])}, alone in {_short(dtype)}")
    return found


def _short(dtype: torch.dtype) -> str:
    return str(dtype).removeprefix("torch.")
