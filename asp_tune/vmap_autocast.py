"""Autocast's casts for the functions that :func:`torch.func.vmap` runs without them.

Under ``vmap``, autocast does not reach every function it casts when the same network runs alone. With CPU
autocast (bf16) in torch 2.14, a network run through ``vmap`` computes its convolutions and PReLUs in float32
where alone they run in bf16, and a batch norm given a bf16 input fails ("expected scalar type BFloat16 but
found Float") where alone it normalises in float32 and returns bf16. A pack of such a network would train in
another precision than each of its configurations alone. :class:`AutocastUnderVmap` applies those casts itself
(the same ones, so nothing changes where vmap already keeps them); whatever else differs, a pack finds before
it trains (:meth:`~asp_tune.stacked.StackedNetwork.layer_dtypes`, compared in
:func:`~asp_tune.pack.check_vectorizable`).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode
from torch.utils._pytree import tree_map

#: Functions autocast runs in its lower precision (all floating inputs cast to it) that vmap leaves as given.
LOWER_PRECISION = frozenset({F.linear, F.conv1d, F.conv2d, F.conv3d, F.conv_transpose1d, F.conv_transpose2d,
                             F.conv_transpose3d, F.prelu})
#: Normalisations that, alone, take a lower-precision input beside float32 weights and statistics (computed in
#: float32, returned in the input's precision) and under vmap refuse the mix or return float32.
NORMALISATIONS = frozenset({F.batch_norm, F.instance_norm})


class AutocastUnderVmap(TorchFunctionMode):
    """While active (inside ``torch.autocast(device_type)``, around a ``vmap``), casts the inputs of
    :data:`LOWER_PRECISION` functions to autocast's dtype, and runs :data:`NORMALISATIONS` of a lower-precision
    input in their weights' precision, returning the input's."""

    def __init__(self, device_type: str):
        super().__init__()
        self.dtype = torch.get_autocast_dtype(device_type)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in LOWER_PRECISION:
            args, kwargs = tree_map(self._lower, (args, kwargs))
        elif func in NORMALISATIONS and args:
            wider = [t.dtype for t in (*args[1:], *kwargs.values())
                     if isinstance(t, torch.Tensor) and t.is_floating_point()]
            x = args[0]
            if wider and x.dtype != wider[0] and x.dtype.itemsize < wider[0].itemsize:
                return func(x.to(wider[0]), *args[1:], **kwargs).to(x.dtype)
        return func(*args, **kwargs)

    def _lower(self, value):
        return value.to(self.dtype) if isinstance(value, torch.Tensor) and value.is_floating_point() else value


def autocast_under_vmap(device_type: str):
    """:class:`AutocastUnderVmap` when autocast is on for ``device_type``; else None (nothing to do)."""
    return AutocastUnderVmap(device_type) if torch.is_autocast_enabled(device_type) else None
