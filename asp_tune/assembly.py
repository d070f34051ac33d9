"""The parts of one training run, built once from its config: data, task, device, network, strategy, feeders.

:func:`build_parts` is what the trainer is handed (:func:`asp_tune.build.build_trainer`), or what it
builds for itself when constructed directly (``Trainer(config, data, model)``). Torch, Python and NumPy
are seeded first, so the network a config names (or a factory ``model(data)``) starts from the same
weights every run; a network *instance* handed in was made before, by its owner.
"""

from __future__ import annotations

import dataclasses
import random
from dataclasses import dataclass
from typing import Any, Callable, Union

import numpy as np
import torch
from torch import nn

from asp_tune.config import TrainConfig
from asp_tune.datasets import DataBundle, ImageArrays, load_dataset_for
from asp_tune.device import resolve_device
from asp_tune.errors import ConfigError
from asp_tune.feeding import ArrayImageDataset, DeviceFeeder, Feeder, StreamFeeder
from asp_tune.models import build_model, is_convolutional
from asp_tune.proxy_settings import ProxySettings
from asp_tune.registry import STATISTICS
from asp_tune.sizes import check_fits
from asp_tune.strategies import SubsetStrategy, make_strategy
from asp_tune.tasks import Task, task_for

#: Builds the network from the loaded data (its input shape and outputs), after torch was seeded.
ModelFactory = Callable[[DataBundle], nn.Module]


@dataclass
class Parts:
    """Everything a trainer trains with, built from one config."""

    data: DataBundle
    task: Task
    device: torch.device
    model: nn.Module
    model_builder: dict[str, Any]  # how a model file rebuilds the network
    strategy: SubsetStrategy
    proxy: ProxySettings  # the selection settings the strategy was made with
    train_feeder: Feeder
    eval_feeders: dict[str, Feeder]
    channels_last: bool


def seed_everything(seed: int) -> None:
    torch.manual_seed(seed)
    random.seed(seed)
    np.random.seed(seed % 2**32)


def make_feeder(arrays: ImageArrays, data: DataBundle, config: TrainConfig, device: torch.device,
                augment: bool, channels_last: bool, seed: int) -> Feeder:
    pad = data.crop_padding if config.crop_padding is None else config.crop_padding
    flip = data.flip_p if config.flip_p is None else config.flip_p
    if config.storage == "device":
        return DeviceFeeder(arrays, device, data.mean, data.std, pad, flip, augment, channels_last, seed,
                            cutout=config.cutout if augment else 0)
    dataset = ArrayImageDataset(arrays, data.mean, data.std, pad, flip, augment)
    return StreamFeeder(dataset, device, config.num_workers, channels_last, seed,
                        cutout=config.cutout if augment else 0)


def check_augmentation(config: TrainConfig, data: DataBundle) -> None:
    """Augmentation only on images, and no crop or cutout larger than an image."""
    c, h, w = data.image_shape
    if data.kind != "image":  # augmentation would destroy rows of features or sequences
        for name in ("crop_padding", "flip_p", "cutout"):
            if getattr(config, name):
                raise ConfigError(name, getattr(config, name), f"0 or none: '{data.name}' holds {data.kind}, not "
                                                               "images")
    for name in ("crop_padding", "cutout"):  # larger than the image: training sees only blanks
        value = getattr(config, name)
        if value is not None and value > min(h, w):
            raise ConfigError(name, value, f"at most {min(h, w)} for {h}x{w} images of '{data.name}'")


def build_network(config: TrainConfig, data: DataBundle, device: torch.device,
                  model: Union[nn.Module, ModelFactory, None] = None,
                  size_field: tuple[str, Any] = ("model", "the network given")) -> tuple[nn.Module, dict[str, Any]]:
    """The network (``config.model`` with its arguments, a factory called with the data, or a module as
    it is), refused by name before it is allocated when it cannot fit the device; and how a model file
    rebuilds it (the builder and its arguments, or the class of a network handed in)."""
    if model is None:
        def build() -> nn.Module:
            return build_model(config.model, data.input_shape, data.num_classes, **config.model_args)

        check_fits(build, device, *(("model_args", dict(config.model_args)) if config.model_args
                                    else ("model", config.model)))
        return build(), {"builder": config.model, "model_args": dict(config.model_args)}
    if not isinstance(model, nn.Module):
        factory = model
        check_fits(lambda: factory(data), device, *size_field)
        model = factory(data)
    return model, {"builder": None, "class": f"{type(model).__module__}:{type(model).__qualname__}"}


def needs_classes(strategy: SubsetStrategy) -> bool:
    """Whether a strategy reads classes: labels, a scoring model's scores or statistics of the logits."""
    reads = {need for name in strategy.statistics() for need in STATISTICS[name].needs}
    return bool(strategy.needs_labels or strategy.needs_scores or reads - {"loss"})


def classless_strategies(proxy: ProxySettings, among: tuple[str, ...] | None = None) -> tuple[str, ...]:
    """The strategies (of ``among``, default every ``metric`` choice) that need no classes: what a regression task
    may take (``auto`` always resolves to one of them)."""
    from asp_tune.proxy_settings import metric_choices

    proxy = dataclasses.replace(proxy, class_balance=False, ratio=1.0)  # a ratio every strategy takes
    names = metric_choices() if among is None else among
    return tuple(n for n in names if n == "auto" or not needs_classes(make_strategy(n, dataclasses.replace(proxy, metric=n))))


def strategy_for_task(config: TrainConfig, task: Task) -> tuple[ProxySettings, SubsetStrategy]:
    """``config``'s proxy settings for ``task`` (no class balance without classes) and its strategy; one that
    reads classes (labels, a scoring model's scores, logits' statistics) is refused by name on a task without
    them (regression)."""
    proxy = config.proxy_settings()
    if not task.has_classes:  # nothing to balance by
        proxy = dataclasses.replace(proxy, class_balance=False)
    strategy = make_strategy(proxy.metric, proxy)
    if not task.has_classes and needs_classes(strategy):
        raise ConfigError("metric", config.metric, f"a strategy that needs no classes for the {task.name} task "
                                                   f"({', '.join(classless_strategies(proxy))})")
    return proxy, strategy


def build_parts(config: TrainConfig, data: DataBundle | None = None, model: Union[nn.Module, ModelFactory, None] = None,
                arrays: dict | None = None, size_field: tuple[str, Any] = ("model", "the network given")) -> Parts:
    """The parts of ``config``'s run (validated here): seeded, with its data (``data``, or loaded once from
    ``arrays`` or the source), its task, network, strategy and feeders."""
    config = config.validate()
    device = resolve_device(config.device)
    seed_everything(config.seed)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    data = data if data is not None else load_dataset_for(config, arrays=arrays)
    task = task_for(config.task, data.train.labels)
    check_augmentation(config, data)
    network, builder = build_network(config, data, device, model, size_field)
    if config.batch_size < 2 and any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in network.modules()):
        raise ConfigError("batch_size", config.batch_size, "at least 2 for a network with batch norm (it cannot "
                                                           "train on one sample at a time)")
    # on CUDA only, where tensor cores want it: on a CPU a DARTS cell of 4 channels crashed in backward with it
    channels_last = (config.channels_last and device.type == "cuda" and is_convolutional(network)
                     and data.kind == "image")
    network.to(device)
    if channels_last:
        network.to(memory_format=torch.channels_last)
    proxy, strategy = strategy_for_task(config, task)
    return Parts(data, task, device, network, builder, strategy, proxy,
                 make_feeder(data.train, data, config, device, True, channels_last, config.seed + 1),
                 {split: make_feeder(getattr(data, split), data, config, device, False, channels_last, 0)
                  for split in ("val", "test")}, channels_last)
