"""Models by name: the CIFAR ResNets of the ASP paper's Table 7, a ResNet-8 for CPU tests, an MLP."""

from __future__ import annotations

import math
from typing import Any, Callable, Sequence

import torch
from torch import nn

from asp_tune.errors import ConfigError, UserCodeError
from asp_tune.imports import resolve
from asp_tune.registry import MODELS


class BasicBlock(nn.Module):
    """Two 3x3 convolutions with batch norm and an identity (or 1x1 projection) shortcut."""

    def __init__(self, c_in: int, c_out: int, stride: int = 1):
        super().__init__()
        self.conv1 = nn.Conv2d(c_in, c_out, 3, stride, 1, bias=False)
        self.bn1 = nn.BatchNorm2d(c_out)
        self.conv2 = nn.Conv2d(c_out, c_out, 3, 1, 1, bias=False)
        self.bn2 = nn.BatchNorm2d(c_out)
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or c_in != c_out:
            self.shortcut = nn.Sequential(nn.Conv2d(c_in, c_out, 1, stride, bias=False), nn.BatchNorm2d(c_out))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return torch.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet for small images: 3x3 stem at stride 1, one stage per width, stride 2 between."""

    def __init__(self, blocks: list[int], widths: list[int], in_channels: int, num_classes: int):
        super().__init__()
        self.stem = nn.Sequential(nn.Conv2d(in_channels, widths[0], 3, 1, 1, bias=False),
                                  nn.BatchNorm2d(widths[0]), nn.ReLU(inplace=True))
        layers: list[nn.Module] = []
        c = widths[0]
        for stage, (n, w) in enumerate(zip(blocks, widths)):
            for i in range(n):
                layers.append(BasicBlock(c, w, stride=2 if (stage > 0 and i == 0) else 1))
                c = w
        self.layers = nn.Sequential(*layers)
        self.head = nn.Linear(c, num_classes)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.layers(self.stem(x))
        return self.head(x.mean(dim=(2, 3)))  # global average pooling (vectorises over a pack's members)


class MLP(nn.Module):
    """Flatten, two hidden ReLU layers with batch norm, linear head (the digits default)."""

    def __init__(self, in_features: int, num_classes: int, hidden: int = 256):
        super().__init__()
        self.net = nn.Sequential(
            nn.Flatten(), nn.Linear(in_features, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, hidden), nn.BatchNorm1d(hidden), nn.ReLU(inplace=True),
            nn.Linear(hidden, num_classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(x)


def mlp(input_shape: Sequence[int], num_classes: int, hidden: int = 256) -> nn.Module:
    return MLP(math.prod(input_shape), num_classes, hidden)


def resnet8(input_shape: Sequence[int], num_classes: int) -> nn.Module:
    return CifarResNet([1, 1, 1], [16, 32, 64], input_shape[0], num_classes)


def _thin(depth: int) -> Callable[..., nn.Module]:
    n = (depth - 2) // 6
    return lambda input_shape, num_classes: CifarResNet([n, n, n], [16, 32, 64], input_shape[0], num_classes)


def _wide(blocks: list[int]) -> Callable[..., nn.Module]:
    return lambda input_shape, num_classes: CifarResNet(blocks, [64, 128, 256, 512], input_shape[0], num_classes)


# The builders the registry (asp_tune.registry.MODELS) names: ResNet-6n+2 of He et al. for CIFAR,
# and ResNet-18/34 with a CIFAR stem.
resnet20, resnet32, resnet44, resnet56 = _thin(20), _thin(32), _thin(44), _thin(56)
resnet18, resnet34 = _wide([2, 2, 2, 2]), _wide([3, 4, 6, 3])


def build_model(name: str, input_shape: Sequence[int], num_classes: int, **model_args: Any) -> nn.Module:
    """The network ``name`` (a registered builder or an import path ``package.module:builder``) for
    samples of ``input_shape`` and ``num_classes`` classes, with the builder's keyword arguments."""
    builder = resolve(MODELS, name, "model")
    _check_signature(name, builder, model_args)
    try:
        model = builder(tuple(input_shape), num_classes, **model_args)
    except Exception as exc:  # noqa: BLE001 - whatever the builder raised is named below
        if not _ours(builder):
            raise UserCodeError(name, "building the network", exc) from exc
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError("model_args", model_args, f"arguments '{name}' can build a network with ({first})") from None
    if not isinstance(model, nn.Module):
        raise ConfigError("model", name, f"a builder that returns a torch.nn.Module (it returned {type(model).__name__})")
    _materialise_lazy(model, name, tuple(input_shape))
    if not any(p.numel() for p in model.parameters()) or any(p.numel() == 0 for p in model.parameters()):
        raise ConfigError("model_args" if model_args else "model", model_args or name,
                          "a network whose every layer has at least one unit to train (it has a layer of size 0, or "
                          "no parameters at all)")
    return model


def _materialise_lazy(model: nn.Module, name: str, input_shape: tuple[int, ...]) -> None:
    """Give a network with lazy modules (``nn.LazyLinear``...) its parameters' shapes: one forward of two zero
    samples of ``input_shape`` (float, or token ids where a float input fails), in evaluation mode and without
    gradients, so nothing it keeps (running statistics) changes."""
    from torch.nn.parameter import UninitializedParameter

    if not any(isinstance(p, UninitializedParameter) for p in model.parameters()):
        return
    try:
        zero_forward(model, input_shape)
    except Exception as exc:  # noqa: BLE001 - the user's network, named
        raise UserCodeError(name, "giving its lazy modules their shapes (a forward of two zero samples)", exc)


def zero_forward(model: nn.Module, input_shape: tuple[int, ...]) -> torch.Tensor:
    """The output of one forward of two zero samples of ``input_shape`` (float, or token ids where a float
    input fails), in evaluation mode and without gradients, so nothing the network keeps (running statistics)
    changes; raises the last input's error where both fail."""
    training = model.training
    model.eval()
    failure: Exception | None = None
    try:
        for dtype in (torch.float32, torch.long):
            try:
                with torch.no_grad():
                    return model(torch.zeros(2, *input_shape, dtype=dtype))
            except Exception as exc:  # noqa: BLE001 - the user's network: tried with the other input
                failure = exc
        raise failure
    finally:
        model.train(training)


#: What every network builder is called with.
BUILDER_SIGNATURE = "builder(input_shape, num_classes, **model_args) -> torch.nn.Module"


def check_model_args(name: str, model_args: dict[str, Any]) -> None:
    """Whether the builder ``name`` takes ``model_args`` (a misspelled keyword refused by name before anything
    trains); a builder this process cannot import is left to the run that builds it."""
    try:
        builder = resolve(MODELS, name, "model")
    except ConfigError:
        return
    _check_signature(name, builder, model_args)


def _ours(builder: Any) -> bool:
    return str(getattr(builder, "__module__", "")).startswith("asp_tune.")


def _check_signature(name: str, builder: Any, model_args: dict[str, Any]) -> None:
    """A builder that cannot take ``(input_shape, num_classes, **model_args)`` is refused by name, saying
    what the signature is (a class, a function of the old signature, a number under that name)."""
    import inspect

    if not callable(builder):
        raise ConfigError("model", name, f"a callable {BUILDER_SIGNATURE} (it names a {type(builder).__name__})")
    if isinstance(builder, type) and issubclass(builder, nn.Module):
        raise ConfigError("model", name, f"a builder function {BUILDER_SIGNATURE}, not the network's class: e.g. "
                                         f"def build(input_shape, num_classes): return {builder.__name__}(...)")
    try:
        inspect.signature(builder).bind((1,), 2, **model_args)
    except TypeError as exc:
        raise ConfigError("model_args" if model_args else "model", model_args or name,
                          f"arguments a builder {BUILDER_SIGNATURE} takes: '{name}' cannot be called so ({exc})") from None
    except ValueError:  # no signature to read (a builtin): its call says the rest
        pass


def is_convolutional(model: nn.Module) -> bool:
    return any(isinstance(m, nn.Conv2d) for m in model.modules())


def count_parameters(model: nn.Module, exclude: Sequence[str] = ()) -> int:
    """Weights of ``model``: its ``weight_parameters()`` when it has them (a supernet's architecture
    weights left out), except parameters whose names start with one of ``exclude``."""
    weights = {id(p) for p in getattr(model, "weight_parameters", model.parameters)()}
    return sum(p.numel() for n, p in model.named_parameters()
               if id(p) in weights and not n.startswith(tuple(exclude)))
