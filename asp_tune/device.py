"""Device placement and the mixed-precision / memory-format choices that go with it."""

from __future__ import annotations

import contextlib

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


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
