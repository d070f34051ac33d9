"""Training configuration, validated once at the edge with errors that name the field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from asp_tune.datasets import DATASETS
from asp_tune.errors import ConfigError
from asp_tune.models import MODELS
from asp_tune.schedules import METRIC_CHOICES, MIXTURE_ORDERS, RATIO_SCHEDULES

LR_SCHEDULES = ("cosine", "multistep", "constant")
DEVICES = ("auto", "cpu", "cuda")
STORAGES = ("device", "stream")


@dataclass
class TrainConfig:
    """Everything one proxy-data training run needs. ``ratio=1, metric='none'`` is the baseline."""

    # data
    dataset: str = "digits"
    data_dir: str | None = None
    download: bool = False
    subset: int | None = None
    test_subset: int | None = None
    val_fraction: float = 0.1
    storage: str = "device"
    num_workers: int = 0
    crop_padding: int | None = None  # None: the data set's default
    flip_p: float | None = None  # None: the data set's default
    cutout: int = 0  # side of the square zeroed in each training image (0: off)
    # model and optimisation
    model: str = "mlp"
    epochs: int = 10
    batch_size: int = 128
    eval_batch_size: int = 1024
    lr: float = 0.1
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 5e-4
    label_smoothing: float = 0.0
    lr_schedule: str = "cosine"
    lr_min: float = 0.0
    milestones: tuple[float, ...] = (0.5, 0.75)  # fractions of the run (multistep)
    lr_gamma: float = 0.1
    # proxy data
    ratio: float = 1.0
    ratio_schedule: str = "constant"
    metric: str = "none"
    mixture_order: str = "g012"
    mixture_width: float = 0.125
    temperature: float = 1.0
    first_epoch_full: bool = True
    # run
    seed: int = 0
    device: str = "auto"
    amp: bool = True  # bf16 autocast on CUDA
    channels_last: bool = True  # for convolutional models

    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` naming the first bad field; return self."""
        _choice("dataset", self.dataset, sorted(DATASETS))
        _choice("model", self.model, sorted(MODELS))
        _choice("metric", self.metric, METRIC_CHOICES)
        _choice("ratio_schedule", self.ratio_schedule, RATIO_SCHEDULES)
        _choice("mixture_order", self.mixture_order, MIXTURE_ORDERS)
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("device", self.device, DEVICES)
        _choice("storage", self.storage, STORAGES)
        _number("ratio", self.ratio, 0.0, 1.0, low_open=True)
        _number("val_fraction", self.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        _number("lr", self.lr, 0.0, None, low_open=True)
        _number("lr_min", self.lr_min, 0.0, None)
        _number("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _number("weight_decay", self.weight_decay, 0.0, None)
        _number("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _number("lr_gamma", self.lr_gamma, 0.0, 1.0, low_open=True)
        _number("temperature", self.temperature, 0.0, None)
        _number("mixture_width", self.mixture_width, 0.0, None, low_open=True)
        if self.flip_p is not None:
            _number("flip_p", self.flip_p, 0.0, 1.0)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            _integer(name, getattr(self, name), 1)
        _integer("num_workers", self.num_workers, 0)
        _integer("cutout", self.cutout, 0)
        _integer("seed", self.seed, 0)
        if self.crop_padding is not None:
            _integer("crop_padding", self.crop_padding, 0)
        for name in ("subset", "test_subset"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), 20)
        if any(not (0.0 < m < 1.0) for m in self.milestones):
            raise ConfigError("milestones", self.milestones, "fractions of the run in (0, 1)")
        if self.metric == "none" and self.ratio != 1.0:
            raise ConfigError("metric", self.metric,
                              "'none' only with ratio 1.0 (the full-data baseline); "
                              "use 'random' for a uniform proxy subset")
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> "TrainConfig":
        """Build from a mapping; unknown keys are an error that names them."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError("config key", key, sorted(known))
        values = dict(values)
        if "milestones" in values:
            values["milestones"] = tuple(values["milestones"])
        return cls(**values).validate()

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes).validate()


def _choice(name: str, value: Any, allowed: Any) -> None:
    if value not in allowed:
        raise ConfigError(name, value, allowed)


def _number(name: str, value: Any, low: float | None, high: float | None,
            low_open: bool = False, high_open: bool = False) -> None:
    ok = isinstance(value, (int, float)) and not isinstance(value, bool) and value == value
    if ok and low is not None:
        ok = value > low if low_open else value >= low
    if ok and high is not None:
        ok = value < high if high_open else value <= high
    if not ok:
        lo = "-inf" if low is None else f"{low}"
        hi = "inf" if high is None else f"{high}"
        raise ConfigError(name, value, f"a number in {'(' if low_open or low is None else '['}{lo}, "
                                       f"{hi}{')' if high_open or high is None else ']'}")


def _integer(name: str, value: Any, low: int) -> None:
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= low):
        raise ConfigError(name, value, f"an integer >= {low}")
