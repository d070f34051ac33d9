"""Training configuration, validated once at the edge with errors that name the field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from asp_tune.errors import ConfigError
from asp_tune.flags import option
from asp_tune.imports import check_name
from asp_tune.proxy_settings import ProxySettings, proxy_field_names
from asp_tune.registry import DATASETS, MODELS

LR_SCHEDULES = ("cosine", "multistep", "constant")
MAX_SEED = 2**63 - 1  # what torch's generators take
OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICES = ("auto", "cpu", "cuda")
STORAGES = ("device", "stream")
#: How a proxy subset is chosen beyond the ratio and the strategy: set per command (flags) or in a
#: space's ``fixed``.
SELECTION_FIELDS = tuple(n for n in proxy_field_names() if n not in ("ratio", "ratio_schedule", "metric"))


@dataclass
class TrainConfig(ProxySettings):
    """Everything one proxy-data training run needs: the data, the model and its optimisation, the
    run, and the proxy settings it inherits (:class:`~asp_tune.proxy_settings.ProxySettings`).
    ``ratio=1`` (``metric='auto'`` or ``'none'``) is the full-data baseline.

    Each field's default, help and allowed values live in one declaration; every command's flags
    are generated from these fields (:func:`asp_tune.flags.add_arguments`).
    """

    # data
    dataset: str = option("digits", "data set (digits ships with scikit-learn: offline), or an import path "
                                    "package.module:loader returning (X, y), {'train': (X, y), 'test': (X, y)}, a "
                                    "Dataset with labels or a DataBundle", "data", lambda: tuple(sorted(DATASETS)))
    data_dir: str | None = option(None, "image folder (train/<class>/*.jpg [test/...]), .tar.gz archive "
                                        "or torchvision root", "data")
    download: bool = option(False, "let torchvision download CIFAR", "data")
    subset: int | None = option(None, "use this many training samples (stratified; none: all)", "data")
    test_subset: int | None = option(None, "use this many test samples (none: all)", "data")
    val_fraction: float = option(0.1, "fraction of the training samples held out for validation", "data")
    storage: str = option("device", "device: tensors on the training device; stream: a DataLoader with a "
                                    "selected-index sampler", "data", STORAGES)
    num_workers: int = option(0, "DataLoader workers (stream storage)", "data")
    crop_padding: int | None = option(None, "random-crop padding in pixels (none: the data set's default)", "data")
    flip_p: float | None = option(None, "horizontal flip probability (none: the data set's default)", "data")
    cutout: int = option(0, "side of the square zeroed in each training image (0: off)", "data")
    # model and optimisation
    model: str = option("mlp", "network: a registered one, or an import path package.module:builder (called "
                               "builder(input_shape, num_classes, **model_args))", "model and optimisation",
                        lambda: tuple(MODELS))
    model_args: dict[str, Any] = option(help="keyword arguments of the network's builder, as JSON "
                                             "(e.g. '{\"hidden\": 64}'; a space may search them as model_args.NAME)",
                                        group="model and optimisation", default_factory=dict)
    optimizer: str = option("sgd", "optimiser: sgd (momentum, nesterov, weight decay), adam or adamw (betas, "
                                   "weight decay)", "model and optimisation", OPTIMIZERS)
    betas: tuple[float, ...] = option((0.9, 0.999), "adam/adamw: the two betas, e.g. 0.9,0.999",
                                      "model and optimisation")
    epochs: int = option(10, "training epochs", "model and optimisation")
    batch_size: int = option(128, "training batch size", "model and optimisation")
    eval_batch_size: int = option(1024, "evaluation batch size", "model and optimisation")
    lr: float = option(0.1, "learning rate", "model and optimisation")
    momentum: float = option(0.9, "SGD momentum", "model and optimisation")
    nesterov: bool = option(False, "Nesterov momentum", "model and optimisation")
    weight_decay: float = option(5e-4, "weight decay", "model and optimisation")
    label_smoothing: float = option(0.0, "label smoothing", "model and optimisation")
    lr_schedule: str = option("cosine", "learning-rate schedule, stepped per epoch", "model and optimisation",
                              LR_SCHEDULES)
    lr_min: float = option(0.0, "final learning rate of the cosine schedule", "model and optimisation")
    milestones: tuple[float, ...] = option((0.5, 0.75), "multistep milestones as fractions of the run, "
                                                        "e.g. 0.5,0.75", "model and optimisation")
    lr_gamma: float = option(0.1, "multistep decay factor", "model and optimisation")
    # run
    seed: int = option(0, "seed of everything (data split, model, selection)", "run")
    device: str = option("auto", "auto (cuda when there is one), cpu or cuda", "run", DEVICES)
    amp: bool = option(True, "bf16 autocast on CUDA", "run")
    channels_last: bool = option(True, "channels-last memory format for convolutional models", "run")

    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` naming the first bad field; return self."""
        check_name(DATASETS, self.dataset, "dataset")
        check_name(MODELS, self.model, "model")
        _choice("optimizer", self.optimizer, OPTIMIZERS)
        if not (isinstance(self.model_args, dict) and all(isinstance(k, str) for k in self.model_args)):
            raise ConfigError("model_args", self.model_args, "a mapping of keyword argument names to values")
        if not (len(self.betas) == 2 and all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in self.betas)):
            raise ConfigError("betas", self.betas, "two numbers in [0, 1)")
        _choice("lr_schedule", self.lr_schedule, LR_SCHEDULES)
        _choice("device", self.device, DEVICES)
        _choice("storage", self.storage, STORAGES)
        _number("val_fraction", self.val_fraction, 0.0, 1.0, low_open=True, high_open=True)
        _number("lr", self.lr, 0.0, None, low_open=True)
        _number("lr_min", self.lr_min, 0.0, None)
        if isinstance(self.lr, (int, float)) and self.lr_min > self.lr:
            raise ConfigError("lr_min", self.lr_min, f"a number in [0, lr={self.lr}]: the cosine schedule decays to it")
        _number("momentum", self.momentum, 0.0, 1.0, high_open=True)
        _number("weight_decay", self.weight_decay, 0.0, None)
        _number("label_smoothing", self.label_smoothing, 0.0, 1.0, high_open=True)
        _number("lr_gamma", self.lr_gamma, 0.0, 1.0, low_open=True)
        for name in ("download", "nesterov", "amp", "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "true or false")
        if self.flip_p is not None:
            _number("flip_p", self.flip_p, 0.0, 1.0)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            _integer(name, getattr(self, name), 1)
        _integer("num_workers", self.num_workers, 0)
        if self.num_workers and self.storage != "stream":
            raise ConfigError("num_workers", self.num_workers, f"0 with storage {self.storage!r} (DataLoader "
                                                               "workers serve --storage stream only)")
        _integer("cutout", self.cutout, 0)
        _integer("seed", self.seed, 0)
        if self.seed > MAX_SEED:
            raise ConfigError("seed", self.seed, f"an integer in [0, {MAX_SEED}]")
        if self.crop_padding is not None:
            _integer("crop_padding", self.crop_padding, 0)
        for name in ("subset", "test_subset"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), 20)
        if any(not (0.0 < m < 1.0) for m in self.milestones):
            raise ConfigError("milestones", self.milestones, "fractions of the run in (0, 1)")
        self.check_proxy()
        return self

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["milestones"] = list(self.milestones)
        d["betas"] = list(self.betas)
        return d

    @classmethod
    def from_dict(cls, values: dict[str, Any], validate: bool = True) -> "TrainConfig":
        """Build from a mapping; unknown keys are an error that names them. ``validate=False`` for a
        config read back from a file this package wrote (it was checked then; its modules may be absent)."""
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ConfigError("config key", key, sorted(known))
        values = dict(values)
        for name in ("milestones", "betas"):
            if name in values:
                values[name] = tuple(values[name])
        config = cls(**values)
        return config.validate() if validate else config

    def replace(self, **changes: Any) -> "TrainConfig":
        return dataclasses.replace(self, **changes).validate()


def import_fields() -> dict[str, Any]:
    """The fields whose value may be an import path, each with the registry of its names."""
    from asp_tune.proxy_settings import metric_choices

    return {"dataset": DATASETS, "model": MODELS, "proxy_model": MODELS, "metric": metric_choices()}


def check_file_config(values: dict[str, Any], trust: tuple[str, ...], source: str) -> None:
    """Refuse, before anything is imported, a config read from ``source`` (a results folder, a model file)
    whose import paths lead outside the registries and the modules the user trusts
    (:func:`asp_tune.imports.check_trusted`)."""
    from asp_tune.imports import check_trusted

    for name, registry in import_fields().items():
        value = values.get(name)
        if value is not None:
            check_trusted(registry, value, name, trust, source)


#: A searched or picked parameter ``model_args.NAME`` is the keyword argument NAME of the network's builder.
MODEL_ARGS = "model_args."


def with_params(fixed: dict[str, Any], params: dict[str, Any]) -> dict[str, Any]:
    """A space's fixed settings with one configuration's parameters on top; ``model_args.NAME``
    parameters join the builder's keyword arguments."""
    builder_args = {k[len(MODEL_ARGS):]: v for k, v in params.items() if k.startswith(MODEL_ARGS)}
    values = {**fixed, **{k: v for k, v in params.items() if not k.startswith(MODEL_ARGS)}}
    if builder_args:
        values["model_args"] = {**dict(fixed.get("model_args") or {}), **builder_args}
    return values


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
