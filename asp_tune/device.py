"""Device placement and the mixed-precision / memory-format choices that go with it."""

from __future__ import annotations

import contextlib
import hashlib
import warnings

import torch

from asp_tune.errors import ConfigError


def resolve_device(name: str = "auto") -> torch.device:
    """``auto`` -> CUDA when present, else CPU; asking for CUDA without one is an error."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ConfigError("device", name, "'auto' or 'cpu' (no CUDA device is available here)")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ConfigError("device", name, "'auto', 'cpu', 'cuda' or 'cuda:N'")
    return torch.device(name)


def autocast(device: torch.device, enabled: bool = True) -> contextlib.AbstractContextManager:
    """bf16 autocast on CUDA; a no-op on CPU, where bf16 convolutions are slower than fp32."""
    if enabled and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def host_values(values: list, dtype: torch.dtype, device: torch.device) -> torch.Tensor:
    """A tensor of Python ``values`` on ``device`` without waiting for the device: on CUDA through pinned
    memory and a non-blocking copy (``torch.tensor(values, device="cuda")`` waits for the stream to drain)."""
    column = torch.tensor(values, dtype=dtype)
    if device.type != "cuda":
        return column.to(device)
    return column.pin_memory().to(device, non_blocking=True)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def restore_generator(generator: torch.Generator, state: torch.Tensor) -> None:
    """Put a saved random-generator state back into ``generator``.

    A state saved on another kind of device (a GPU checkpoint resumed on a CPU, or the reverse)
    cannot be set: CPU and CUDA generators keep different states. The generator is then seeded
    from the saved state's bytes, so the resumed run stays reproducible, though its draws differ
    from the ones the original device would have made (its kernels differ too).
    """
    state = state.cpu()
    try:
        generator.set_state(state)
    except RuntimeError:
        seed = int.from_bytes(hashlib.sha256(state.numpy().tobytes()).digest()[:8], "little")
        generator.manual_seed(seed)
        warnings.warn(f"random state saved on another device type; reseeded the {generator.device} generator "
                      "deterministically (the resumed draws differ from the original device's)", stacklevel=2)
