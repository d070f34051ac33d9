"""Networks too large for the machine, refused before a byte of them is allocated.

The network is first built on PyTorch's ``meta`` device, which records shapes and allocates nothing;
its parameters and buffers, with a gradient and one optimiser state per parameter (the least SGD
with momentum keeps), are a lower bound of what training needs. Above the memory free on the
training device (or, for a GPU, above what the host can hold while the network is built there
first), the run is one named error instead of a machine swapping or killed for memory.
"""

from __future__ import annotations

from typing import Any, Callable

import torch
from torch import nn

from asp_tune.errors import ConfigError

#: Copies of the parameters training holds at least: the weights, their gradients, one optimiser state.
TRAINING_COPIES = 3
GIB = 2 ** 30


def network_size(build: Callable[[], nn.Module]) -> tuple[int, int] | None:
    """(parameters, bytes of parameters and buffers) of the network ``build()`` makes; None when it cannot
    be built on the meta device (a network of one's own that moves tensors itself): not estimated."""
    try:
        with torch.device("meta"):
            net = build()
    except Exception:  # noqa: BLE001 - any builder; the real build then reports its own errors
        return None
    if not isinstance(net, nn.Module):
        return None
    tensors = [*net.parameters(), *net.buffers()]
    if any(isinstance(t, nn.parameter.UninitializedTensorMixin) for t in tensors):
        return None  # lazy modules: their sizes are known only after a first batch
    return sum(p.numel() for p in net.parameters()), sum(t.numel() * t.element_size() for t in tensors)


def free_bytes(device: torch.device) -> int | None:
    """Memory free for a new allocation on ``device`` (None when unknown)."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    import psutil

    return int(psutil.virtual_memory().available)


def check_fits(build: Callable[[], nn.Module], device: torch.device, field: str, value: Any) -> None:
    """Refuse, naming ``field``, a network whose training copies cannot fit in ``device``'s free memory
    (built on the CPU first, it must also fit there once)."""
    measured = network_size(build)
    if not measured:
        return
    parameters, size = measured
    need = TRAINING_COPIES * size
    places = [(device, need)] + ([(torch.device("cpu"), size)] if device.type != "cpu" else [])
    for place, bytes_needed in places:
        free = free_bytes(place)
        if free is not None and bytes_needed > free:
            raise ConfigError(field, value, f"a network that fits in memory: its {parameters / 1e6:,.0f} M parameters "
                                            f"need at least {bytes_needed / GIB:,.1f} GiB to train "
                                            f"(weights, gradients, optimiser state), and {place} has "
                                            f"{free / GIB:,.1f} GiB free")


def check_memory(nbytes: int, what: str, field: str, value: Any, share: float = 0.5) -> None:
    """Refuse, naming ``field``, something that would take more than ``share`` of the host's free memory
    (``nbytes``): one named error instead of a machine swapping or killed for memory."""
    free = free_bytes(torch.device("cpu"))
    if free is not None and nbytes > share * free:
        raise ConfigError(field, value, f"data that fits in memory: {what} needs {nbytes / GIB:,.1f} GiB, and the "
                                        f"host has {free / GIB:,.1f} GiB free")
