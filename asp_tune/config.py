"""Training configuration, validated once at the edge with errors that name the field."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from asp_tune.errors import ConfigError
from asp_tune.flags import option
from asp_tune.registry import DATASETS, MODELS, SELECTION_RULES
from asp_tune.schedules import METRIC_CHOICES, MIXTURE_ORDERS, RATIO_SCHEDULES

LR_SCHEDULES = ("cosine", "multistep", "constant")
DEVICES = ("auto", "cpu", "cuda")
STORAGES = ("device", "stream")



# The selection defaults (calibrated rule, 0.2 of the mass on the top 10%, a 0.3 uniform floor,
# class balance, unbiased reweighting) and the proxy metric below are the best measured in
# bench/proxy_quality.py (README, "Proxy quality"): with a full first epoch, loss under this rule
# ranked configurations better than a random subset of the same cost at r = 0.3 and with a lower
# regret at r = 0.1; the first design (zscore, T = 1) and the paper's raw softmax lost to random by
# about 0.2 in Kendall tau. When trials start at r (early-stopping HPO), a uniform pick of never-seen
# samples ranked best (a plain one: class-balanced random ranked worse), so that is the default there.
PROXY_METRIC = "loss"
EARLY_STOPPING_PROXY = {"metric": "random", "class_balance": False}
#: How a proxy subset is chosen beyond the metric: set per command (flags) or in a space's ``fixed``.
SELECTION_FIELDS = ("selection_rule", "temperature", "top10_mass", "uniform_floor", "class_balance", "reweight",
                    "mixture_order", "mixture_width", "infobatch_prune", "infobatch_anneal", "first_epoch_full",
                    "unseen_first", "proxy_model", "proxy_epochs")


@dataclass
class TrainConfig:
    """Everything one proxy-data training run needs. ``ratio=1, metric='none'`` is the baseline.

    Each field's default, help and allowed values live here, once; every command's flags are
    generated from these fields (:func:`asp_tune.flags.add_arguments`).
    """

    # data
    dataset: str = option("digits", "data set (digits ships with scikit-learn: offline)", "data",
                          lambda: tuple(sorted(DATASETS)))
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
    model: str = option("mlp", "network", "model and optimisation", lambda: tuple(MODELS))
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
    # proxy data
    ratio: float = option(1.0, "sampling ratio r in (0, 1]", "proxy data (ASP)")
    ratio_schedule: str = option("constant", "constant r, or dynamic (the paper's Algorithm 2)",
                                 "proxy data (ASP)", RATIO_SCHEDULES)
    metric: str = option("none", "importance metric; mixture: one drawn per epoch; infobatch: soft pruning; "
                                 "none: full data", "proxy data (ASP)", METRIC_CHOICES)
    mixture_order: str = option("g012", "order of the mixture's metric groups over the run", "proxy data (ASP)",
                                MIXTURE_ORDERS)
    mixture_width: float = option(0.125, "std of each metric's Gaussian, as a fraction of the run",
                                  "proxy data (ASP)")
    selection_rule: str = option("calibrated", "how values become probabilities: zscore softmax(z/T), paper "
                                           "softmax(v/T), calibrated (--top10-mass)", "proxy data (ASP)",
                                 SELECTION_RULES)
    temperature: float = option(1.0, "selection temperature for zscore and paper; 0 = deterministic top-m",
                                "proxy data (ASP)")
    top10_mass: float = option(0.2, "calibrated rule: share of the probability on the top 10% of samples "
                                    "(0.1 = uniform)", "proxy data (ASP)")
    uniform_floor: float = option(0.3, "fraction of the probability spread uniformly, so no sample starves",
                                  "proxy data (ASP)")
    class_balance: bool = option(True, "pick within each class in proportion to its size", "proxy data (ASP)")
    reweight: bool = option(True, "weight selected losses by m/(N pi): an unbiased full-data gradient",
                            "proxy data (ASP)")
    infobatch_prune: float = option(0.5, "infobatch: chance of dropping a below-mean-loss sample",
                                    "proxy data (ASP)")
    infobatch_anneal: float = option(0.125, "infobatch: final fraction of the epochs on all data",
                                     "proxy data (ASP)")
    first_epoch_full: bool = option(True, "train the first epoch on all data (the paper's Algorithm 1)",
                                    "proxy data (ASP)")
    unseen_first: bool = option(True, "pick never-trained samples before all others until each was seen once "
                                      "(matters without a full first epoch)", "proxy data (ASP)")
    # static proxies (baselines; also chosen with --metric)
    proxy_model: str | None = option(None, "network that scores samples for the static proxies that need one "
                                           "(none: the target network)", "static proxies (baselines)",
                                     lambda: tuple(MODELS))
    proxy_epochs: int | None = option(None, "epochs of the proxy model, trained once and cached (none: a quarter "
                                            "of --epochs)", "static proxies (baselines)")
    # run
    seed: int = option(0, "seed of everything (data split, model, selection)", "run")
    device: str = option("auto", "auto, cpu, cuda or cuda:N", "run", DEVICES)
    amp: bool = option(True, "bf16 autocast on CUDA", "run")
    channels_last: bool = option(True, "channels-last memory format for convolutional models", "run")

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
        _choice("selection_rule", self.selection_rule, SELECTION_RULES)
        _number("top10_mass", self.top10_mass, 0.0, 1.0, low_open=True, high_open=True)
        _number("uniform_floor", self.uniform_floor, 0.0, 1.0)
        _number("infobatch_prune", self.infobatch_prune, 0.0, 1.0, high_open=True)
        _number("infobatch_anneal", self.infobatch_anneal, 0.0, 1.0)
        for name in ("class_balance", "reweight", "unseen_first", "download", "nesterov", "first_epoch_full", "amp",
                     "channels_last"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(name, getattr(self, name), "true or false")
        _number("mixture_width", self.mixture_width, 0.0, None, low_open=True)
        if self.flip_p is not None:
            _number("flip_p", self.flip_p, 0.0, 1.0)
        for name in ("epochs", "batch_size", "eval_batch_size"):
            _integer(name, getattr(self, name), 1)
        _integer("num_workers", self.num_workers, 0)
        _integer("cutout", self.cutout, 0)
        _integer("seed", self.seed, 0)
        if self.proxy_model is not None:
            _choice("proxy_model", self.proxy_model, sorted(MODELS))
        if self.proxy_epochs is not None:
            _integer("proxy_epochs", self.proxy_epochs, 1)
        if self.crop_padding is not None:
            _integer("crop_padding", self.crop_padding, 0)
        for name in ("subset", "test_subset"):
            if getattr(self, name) is not None:
                _integer(name, getattr(self, name), 20)
        if any(not (0.0 < m < 1.0) for m in self.milestones):
            raise ConfigError("milestones", self.milestones, "fractions of the run in (0, 1)")
        if self.metric == "infobatch" and self.ratio != 1.0:
            raise ConfigError("ratio", self.ratio, "1.0 with metric 'infobatch' (its cost is set by infobatch_prune)")
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

    def selection(self):
        """The :class:`~asp_tune.selection.SelectionRule` these settings describe."""
        from asp_tune.selection import SelectionRule

        return SelectionRule(self.selection_rule, self.temperature, self.top10_mass, self.uniform_floor,
                             self.class_balance, self.reweight)


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
