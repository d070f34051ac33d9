"""Training configuration, validated once at the edge with errors that name the field."""

from __future__ import annotations

import dataclasses
import numbers
from dataclasses import dataclass
from typing import Any

from asp_tune.constraints import Boolean, Check, Interval, OneOf, check_fields
from asp_tune.errors import ConfigError
from asp_tune.flags import option
from asp_tune.imports import check_name
from asp_tune.proxy_settings import ProxySettings, check_steps_within, proxy_field_names
from asp_tune.registry import DATASETS, MODELS, TASKS

LR_SCHEDULES = ("cosine", "multistep", "constant")
MAX_SEED = 2**63 - 1  # what torch's generators take
#: Beyond this a learning rate or weight decay is no longer a number an optimiser computes with (1e308
#: overflows its float arithmetic).
MAX_LR = 1e12
OPTIMIZERS = ("sgd", "adam", "adamw")
DEVICES = ("auto", "cpu", "cuda")
STORAGES = ("device", "stream")
#: How a proxy subset is chosen beyond the ratio and the strategy: set per command (flags) or in a
#: space's ``fixed``.
SELECTION_FIELDS = tuple(n for n in proxy_field_names() if n not in ("ratio", "ratio_schedule", "metric"))


def _task_names() -> tuple[str, ...]:
    return ("auto", *TASKS)


def _check_task(name: str, value: Any) -> None:
    if value != "auto":
        check_name(TASKS, value, name)


def _check_model_args(name: str, value: Any) -> None:
    if not (isinstance(value, dict) and all(isinstance(k, str) for k in value)):
        raise ConfigError(name, value, "a mapping of keyword argument names to values")


def _check_betas(name: str, value: Any) -> None:
    if not (isinstance(value, (tuple, list)) and len(value) == 2
            and all(Interval(0.0, 1.0, "left").contains(b) for b in value)):
        raise ConfigError(name, value, "two numbers in [0, 1)")


def _check_milestones(name: str, value: Any) -> None:
    if not (isinstance(value, (tuple, list)) and all(Interval(0.0, 1.0, "neither").contains(m) for m in value)):
        raise ConfigError(name, value, "fractions of the run in (0, 1)")


#: Settings that say where and how fast a run trains, not what it learns: a checkpoint resumes under others.
def check_pack(name: str, value: Any) -> None:
    """A pack size: a whole number of configurations at least 1 (an integer, or its plain decimal digits as a
    command line gives it), or ``auto``."""
    if value == "auto":
        return
    if isinstance(value, str) and value.isascii() and value.isdigit():
        value_ok = int(value) >= 1
    else:
        value_ok = isinstance(value, numbers.Integral) and not isinstance(value, bool) and value >= 1
    if not value_ok:
        raise ConfigError(name, value, "a whole number of configurations per pack, at least 1 (1: one trial per "
                                       "process), or auto")


#: How much faster than its members one after another a pack's timed step must be for ``--pack auto`` to
#: pack (:func:`asp_tune.pack.choose_pack_size`): a smaller lead is within the short timing's noise (a pack
#: timed 1.07x faster ran its epochs 0.83x).
AUTO_MIN_SPEEDUP = 1.15
SETTINGS_FREE_ON_RESUME = frozenset({"device", "amp", "channels_last", "storage", "num_workers", "eval_batch_size",
                                     "download"})
#: ... and where the data is read from and how much of the test split scores: trials that differ in these alone
#: are comparable (an Optuna study resumed on another machine or from another folder).
SETTINGS_FREE_IN_A_STUDY = SETTINGS_FREE_ON_RESUME | {"data_dir", "test_subset"}


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
                                    "Dataset with labels or a DataBundle", "data", lambda: tuple(sorted(DATASETS)),
                        check=Check(lambda name, value: check_name(DATASETS, value, name), ("no-such-data", 3)),
                        imports=True)
    data_dir: str | None = option(None, "image folder (train/<class>/*.jpg [test/...]), .tar.gz archive "
                                        "or torchvision root", "data")
    image_size: int | None = option(None, "resize every image of an image folder to this square size (its images "
                                          "differ in size; none: keep their size)", "data",
                                    check=Interval(4, 4096, integer=True, optional=True))
    download: bool = option(False, "let torchvision download CIFAR", "data", check=Boolean())
    subset: int | None = option(None, "use this many samples of the training data, the validation samples "
                                      "(val_fraction of them) included (stratified; none: all)", "data",
                                check=Interval(20, None, integer=True, optional=True))
    test_subset: int | None = option(None, "use this many test samples (none: all)", "data",
                                     check=Interval(20, None, integer=True, optional=True))
    val_fraction: float = option(0.1, "fraction of the training samples held out for validation (0: none, only "
                                      "where nothing validates: nas-retrain)", "data",
                                 check=Interval(0.0, 1.0, "left"))
    storage: str = option("device", "device: tensors on the training device; stream: a DataLoader with a "
                                    "selected-index sampler", "data", STORAGES, check=OneOf(lambda: STORAGES))
    num_workers: int = option(0, "DataLoader workers (stream storage)", "data", check=Interval(0, None, integer=True))
    crop_padding: int | None = option(None, "random-crop padding in pixels (none: the data set's default)", "data",
                                      check=Interval(0, None, integer=True, optional=True))
    flip_p: float | None = option(None, "horizontal flip probability (none: the data set's default)", "data",
                                  check=Interval(0.0, 1.0, optional=True))
    cutout: int = option(0, "side of the square zeroed in each training image (0: off)", "data",
                         check=Interval(0, None, integer=True))
    task: str = option("auto", "what the network learns: classification, regression, a registered task or an "
                               "import path (auto: classification for integer labels, regression for float targets)",
                       "data", _task_names, check=Check(_check_task, ("no-such-task", 3)), imports=True)
    # model and optimisation
    model: str = option("mlp", "network: a registered one, or an import path package.module:builder (called "
                               "builder(input_shape, num_classes, **model_args))", "model and optimisation",
                        lambda: tuple(MODELS),
                        check=Check(lambda name, value: check_name(MODELS, value, name), ("no-such-model", 3)),
                        imports=True)
    model_args: dict[str, Any] = option(help="keyword arguments of the network's builder, as JSON "
                                             "(e.g. '{\"hidden\": 64}'; a space may search them as model_args.NAME)",
                                        group="model and optimisation", default_factory=dict,
                                        check=Check(_check_model_args, ([1], {3: 4})))
    optimizer: str = option("sgd", "optimiser: sgd (momentum, nesterov, weight decay), adam or adamw (betas, "
                                   "weight decay)", "model and optimisation", OPTIMIZERS,
                          check=OneOf(lambda: OPTIMIZERS))
    betas: tuple[float, ...] = option((0.9, 0.999), "adam/adamw: the two betas, e.g. 0.9,0.999",
                                      "model and optimisation", check=Check(_check_betas, ((0.9,), (0.9, 1.0))))
    epochs: int = option(10, "training epochs", "model and optimisation", check=Interval(1, None, integer=True))
    batch_size: int = option(128, "training batch size", "model and optimisation", check=Interval(1, None, integer=True))
    eval_batch_size: int = option(1024, "evaluation batch size", "model and optimisation",
                                  check=Interval(1, None, integer=True))
    lr: float = option(0.1, "learning rate", "model and optimisation", check=Interval(0.0, MAX_LR, "right"))
    momentum: float = option(0.9, "SGD momentum", "model and optimisation", check=Interval(0.0, 1.0, "left"))
    nesterov: bool = option(False, "Nesterov momentum", "model and optimisation", check=Boolean())
    weight_decay: float = option(5e-4, "weight decay", "model and optimisation", check=Interval(0.0, MAX_LR))
    label_smoothing: float = option(0.0, "label smoothing", "model and optimisation", check=Interval(0.0, 1.0, "left"))
    lr_schedule: str = option("cosine", "learning-rate schedule, stepped per epoch", "model and optimisation",
                              LR_SCHEDULES, check=OneOf(lambda: LR_SCHEDULES))
    lr_min: float = option(0.0, "final learning rate of the cosine schedule (at most lr)", "model and optimisation",
                           check=Interval(0.0, MAX_LR))
    milestones: tuple[float, ...] = option((0.5, 0.75), "multistep milestones as fractions of the run, "
                                                        "e.g. 0.5,0.75", "model and optimisation",
                                           check=Check(_check_milestones, ((0.0,), (0.5, 1.5), "x")))
    lr_gamma: float = option(0.1, "multistep decay factor", "model and optimisation", check=Interval(0.0, 1.0, "right"))
    # run
    seed: int = option(0, "seed of everything (data split, model, selection)", "run",
                       check=Interval(0, MAX_SEED, integer=True))
    device: str = option("auto", "auto (cuda when there is one), cpu or cuda", "run", DEVICES,
                         check=OneOf(lambda: DEVICES))
    amp: bool = option(True, "bf16 autocast on CUDA", "run", check=Boolean())
    channels_last: bool = option(True, "channels-last memory format for convolutional models on CUDA", "run",
                                 check=Boolean())

    def validate(self) -> "TrainConfig":
        """Raise :class:`ConfigError` naming the first bad field (every declared constraint, then the
        rules between fields); return self."""
        check_fields(self)
        if self.lr_min > self.lr:
            raise ConfigError("lr_min", self.lr_min, f"a number in [0, lr={self.lr}]: the cosine schedule decays to it")
        if self.num_workers and self.storage != "stream":
            raise ConfigError("num_workers", self.num_workers, f"0 with storage {self.storage!r} (DataLoader "
                                                               "workers serve --storage stream only)")
        self.check_proxy()
        check_steps_within(self.ratio_schedule, self.epochs)
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

    return {"dataset": DATASETS, "model": MODELS, "proxy_model": MODELS, "metric": metric_choices(),
            "task": _task_names()}


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
