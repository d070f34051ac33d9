"""Networks too large for the machine, refused before a byte of them is allocated.

The network is first built on PyTorch's ``meta`` device, which records shapes and allocates nothing;
its parameters and buffers, with a gradient and one optimiser state per parameter (the least SGD
with momentum keeps), are a lower bound of what training needs. Above the memory free on the
training device (or, for a GPU, above what the host can hold while the network is built there
first), the run is one named error instead of a machine swapping or killed for memory. On the host, free
means what the system reports available, or less where this process's cgroup (a container's memory limit)
leaves less.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from asp_tune.errors import ConfigError

#: Copies of the parameters training holds at least: the weights, their gradients, one optimiser state.
TRAINING_COPIES = 3
GIB = 2 ** 30
#: A cgroup limit at or above this is no limit (cgroup v1 writes a page-rounded 2**63 - 1).
NO_LIMIT = 2 ** 60


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
    """Memory free for a new allocation on ``device`` (None when unknown): the GPU's free memory; on the host the
    lesser of what the system reports available and what this process's cgroup (a container's limit) leaves."""
    if device.type == "cuda":
        try:
            return int(torch.cuda.mem_get_info(device)[0])
        except (RuntimeError, AssertionError):
            return None
    import psutil

    available = int(psutil.virtual_memory().available)
    left = cgroup_memory_left()
    return available if left is None else min(available, left)


def cgroup_memory_left(proc: Path = Path("/proc/self/cgroup"), root: Path = Path("/sys/fs/cgroup")) -> int | None:
    """The least that this process's memory cgroup or any cgroup above it still allows (cgroup v2 or v1): its
    limit less what is charged to it and cannot be reclaimed (page cache, but for shared memory, can); None
    where no limit is set or none can be read. ``proc`` and ``root``: where the system keeps them."""
    try:
        lines = proc.read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split(":", 2)
        if len(parts) != 3:
            continue
        _, controllers, path = parts
        if controllers == "":  # cgroup v2: one unified hierarchy
            base, files = root, ("memory.max", "memory.current", "file", "shmem")
        elif "memory" in controllers.split(","):
            base, files = root / "memory", ("memory.limit_in_bytes", "memory.usage_in_bytes", "total_cache",
                                            "total_shmem")
        else:
            continue
        folder = base / path.lstrip("/")
        if not folder.is_dir():  # a path from outside this process's view of the hierarchy
            folder = base
        lefts = []
        while True:
            left = _level_left(folder, *files)
            if left is not None:
                lefts.append(left)
            if folder == base or base not in folder.parents:
                break
            folder = folder.parent
        if lefts:
            return min(lefts)
    return None


def _level_left(folder: Path, limit_file: str, usage_file: str, cache: str, shared: str) -> int | None:
    """What one cgroup's memory limit still allows (None: no limit, or none readable)."""
    try:
        limit_text = (folder / limit_file).read_text().strip()
        if limit_text == "max":
            return None
        limit, usage = int(limit_text), int((folder / usage_file).read_text().strip())
    except (OSError, ValueError):
        return None
    if limit >= NO_LIMIT:
        return None
    stat: dict[str, int] = {}
    try:
        for entry in (folder / "memory.stat").read_text().splitlines():
            key, _, value = entry.partition(" ")
            if value.strip().isdigit():
                stat[key] = int(value)
    except OSError:
        pass
    reclaimable = max(0, stat.get(cache, 0) - stat.get(shared, 0))
    return max(0, limit - max(0, usage - reclaimable))


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
