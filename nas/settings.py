"""Settings of NAS runs (search, evolution, retraining): every default, help text and allowed value
in one place, and the flags of ``asp-tune nas`` / ``nas-retrain`` generated from them. Nothing here
imports torch, so the command line's help answers at once."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from asp_tune.config import TrainConfig
from asp_tune.constraints import Boolean, Check, Interval, OneOf, check_fields, check_seeds
from asp_tune.errors import ConfigError
from asp_tune.flags import option, optional, parse_seeds, reuse
from asp_tune.registry import MODELS, LazyRegistry
from asp_tune.tune.settings import HpoSettings
from nas.genotypes import Genotype
from nas.spaces import NasSpace, get_space, space_names


@dataclass(frozen=True)
class EvolutionSettings:
    """Architecture selection after supernet training (``generations=0``: random search only)."""

    candidates: int = option(50, "random candidates scored first", check=Interval(1, None, integer=True))
    population: int = option(20, "survivors kept each generation", check=Interval(1, None, integer=True))
    generations: int = option(10, "evolution rounds (0: random search only)", check=Interval(0, None, integer=True))
    parents: int = option(10, "best of the population that breed", check=Interval(1, None, integer=True))
    mutations: int = option(10, "children by mutation per generation", check=Interval(0, None, integer=True))
    crossovers: int = option(10, "children by crossover per generation", check=Interval(0, None, integer=True))
    mutation_prob: float = option(0.2, "per-edge chance of a new operation in a mutation",
                                  check=Interval(0, 1, "right"))

    def validate(self, space_size: int | None = None) -> "EvolutionSettings":
        """Check the settings; with ``space_size``, no more candidates than the space holds."""
        check_fields(self)
        for name in ("candidates", "population", "parents"):
            value = getattr(self, name)
            if space_size is not None and value > space_size:
                raise ConfigError(name, value, f"an integer in [1, {space_size}] (the architectures of the space)")
        if self.parents > self.population:
            raise ConfigError("parents", self.parents, f"at most the population ({self.population})")
        return self


#: Searchers by name (a class each, imported on first use): each builds its trainer for a space and
#: selects an architecture afterwards.
SEARCHERS = LazyRegistry("searcher", {"spos": "nas.spos:SposSearch", "darts": "nas.darts:DartsSearch"})


def supernet_train_config() -> TrainConfig:
    """Supernet training as NAS-Bench-201 and DARTS set it: SGD 0.025 -> 0.001 cosine, batch 64."""
    return TrainConfig(lr=0.025, lr_min=0.001, weight_decay=3e-4, batch_size=64, epochs=10)


SEARCH, DARTS = "search", "DARTS searcher"


def _cells_help() -> str:
    return "; ".join(f"{get_space(n).name}: {get_space(n).cells_help} (default {get_space(n).default_cells})"
                     for n in space_names())


#: NasSettings fields that do not change the trained supernet: used only after its training, or only
#: watching it (``monitor`` validates with generators of its own; a test checks the losses stay equal).
NOT_CHANGING_TRAINING = ("evolution", "ground_truth", "score_samples", "monitor", "rank_sample")

#: What ``metric="auto"`` stands for in a search below ratio 1 (at 1: ``none``, full data). Uniform ``random``,
#: not the HPO choice (``loss``/``fixed_random``): on NAS-Bench-201 it ranked architectures better than ``loss``
#: (bench/results/proxy_quality_quick_nas_loss.md: tau -0.106 vs -0.130, found 87.60 vs 82.14) and than
#: ``mixture`` (bench/results/nas_nb201_controls.json).
NAS_AUTO_METRIC = "random"


@dataclass
class NasSettings:
    """A search: the space, the searcher, the supernet's training (``train``) and selection settings.

    Each field's default, help and allowed values live here; ``asp-tune nas`` generates its flags
    from these fields and from :class:`~nas.spos.EvolutionSettings` (:mod:`asp_tune.flags`).
    """

    space: str = option("nb201", "search space (a registered name, see nas.spaces)", SEARCH, space_names,
                        check=OneOf(space_names))
    searcher: str | None = option(None, lambda: "searcher (none: the space's own: " + ", ".join(
        f"{get_space(n).default_searcher} on {n}" for n in space_names()) + ")", SEARCH, lambda: tuple(SEARCHERS),
                                  check=OneOf(lambda: tuple(SEARCHERS), optional=True))
    train: TrainConfig = option(flag=False, default_factory=supernet_train_config)
    channels: int = option(16, "supernet width C (16 in both papers)", SEARCH, check=Interval(1, None, integer=True))
    cells: int | None = option(None, _cells_help, SEARCH, check=Interval(1, None, integer=True, optional=True))
    evolution: EvolutionSettings = option(flag=False, default_factory=EvolutionSettings)
    order: int = option(1, "1 first order, 2 second order (unrolled)", DARTS, (1, 2), check=OneOf(lambda: (1, 2)))
    arch_lr: float = option(3e-4, "architecture learning rate (Adam)", DARTS, check=Interval(0, None))
    arch_weight_decay: float = option(1e-3, "architecture weight decay", DARTS, check=Interval(0, None))
    grad_clip: float = option(5.0, "gradient-norm clip of the network weights (0: off)", DARTS, check=Interval(0, None))
    ground_truth: str | None = option(None, "a table of known accuracies for spaces that have one: for nb201 the "
                                            "NAS-Bench-201 CSV (arch, cifar10_test, cifar100_test, "
                                            "imagenet16_120_test)", SEARCH, aliases=("--nb201-table",))
    monitor: bool = option(True, "validate the supernet after each epoch (SPOS: a fresh random path per batch; "
                                 "costs one pass over the val split)", SEARCH, check=Boolean())
    score_samples: int | None = option(None, "SPOS: held-out images each candidate is scored on (the same seeded "
                                             "subset for all); auto: sized so scoring takes about 10% of a full-data "
                                             "search, the same for every ratio and metric",
                                       SEARCH, kind=optional(int, ("auto", "none", "")),
                                       check=Interval(32, None, integer=True, optional=True))
    rank_sample: int = option(50, "architectures drawn uniformly (seeded by the seed alone: the same for every "
                                  "ratio, metric and schedule) whose supernet scores are ranked against the ground "
                                  "truth for kendall_tau (0: none; searchers that score candidates, with "
                                  "--ground-truth)", SEARCH, check=Interval(0, None, integer=True))

    def validate(self) -> "NasSettings":
        if isinstance(self.train, Mapping):  # from Python or YAML: the fields of a TrainConfig
            self.train = TrainConfig.from_dict(dict(self.train))
        if isinstance(self.evolution, Mapping):
            known = {f.name for f in dataclasses.fields(EvolutionSettings)}
            unknown = sorted(set(self.evolution) - known)
            if unknown:
                raise ConfigError(f"evolution.{unknown[0]}", self.evolution[unknown[0]], sorted(known))
            self.evolution = EvolutionSettings(**self.evolution)
        for name, kind, allowed in (("train", TrainConfig, "a TrainConfig or a mapping of its fields"),
                                    ("evolution", EvolutionSettings, "an EvolutionSettings or a mapping of its "
                                                                     "fields")):
            if not isinstance(getattr(self, name), kind):
                raise ConfigError(name, type(getattr(self, name)).__name__, allowed)
        if self.ground_truth is not None and not isinstance(self.ground_truth, (str, Path)):
            raise ConfigError("ground_truth", self.ground_truth, "None or the path of a CSV table")
        if not isinstance(self.space, str):
            raise ConfigError("space", self.space, "the name of a registered space")
        space = self.search_space  # an unknown space is an error naming the registered ones
        if self.searcher is None:
            self.searcher = space.default_searcher
        check_fields(self)
        if self.cells is not None and self.cells < space.min_cells:
            raise ConfigError("cells", self.cells, f"an integer >= {space.min_cells} for the {space.name} space "
                                                   f"({space.cells_help})")
        if self.ground_truth is not None and not space.has_ground_truth:
            raise ConfigError("ground_truth", self.ground_truth, f"no table: the {space.name} space has none")
        self.train.validate()
        if self.train.val_fraction == 0:
            raise ConfigError("val_fraction", 0.0, "a fraction in (0, 1): a search scores or watches its supernet on "
                                                   "the validation split (0, no split, is for nas-retrain)")
        from asp_tune.strategies import make_strategy

        if make_strategy(self.train_config().metric, self.train).needs_scores and self.train.proxy_model is None:  # the supernet cannot score samples on its own
            raise ConfigError("proxy_model", None, f"a network that scores samples for '{self.train_config().metric}' in a "
                                                   f"NAS search: one of {', '.join(MODELS)}")
        self.evolution.validate(space.size)
        self._check_searcher_fields()
        return self

    def _check_searcher_fields(self) -> None:
        """Refuse, by name, a setting only another searcher reads (it would be ignored), and for a searcher
        that scores candidates on a batch-statistics supernet an evaluation batch too small to score on."""
        searcher = SEARCHERS[self.searcher]
        default = NasSettings(space=self.space, searcher=self.searcher)
        for name, other in _others_fields(self.searcher):
            if name == "evolution":
                changed = [(f.name, getattr(self.evolution, f.name), f.default)
                           for f in dataclasses.fields(EvolutionSettings)
                           if getattr(self.evolution, f.name) != f.default]
            else:
                changed = [(name, getattr(self, name), getattr(default, name))] \
                    if getattr(self, name) != getattr(default, name) else []
            for field, value, was in changed:
                raise ConfigError(field, value, f"its default {was!r}: --{field.replace('_', '-')} acts only on "
                                                f"--searcher {other}, not {self.searcher}")
        if self.searcher == "darts" and self.order == 2 and (self.train.optimizer != "sgd" or self.train.nesterov):
            field, value = ("optimizer", self.train.optimizer) if self.train.optimizer != "sgd" else ("nesterov", True)
            raise ConfigError(field, value, "sgd without Nesterov for --order 2: the second-order step unrolls the "
                                            "weights' next step as plain SGD with momentum (--order 1 takes any)")
        least = getattr(searcher, "min_eval_batch", 0)
        if self.train.eval_batch_size < least:
            raise ConfigError("eval_batch_size", self.train.eval_batch_size,
                              f"at least {least}: the {self.searcher} supernet normalises with the batch's "
                              "statistics, so candidates scored in smaller batches rank otherwise")

    def train_config(self) -> TrainConfig:
        """``train`` with ``metric="auto"`` made concrete for a search (:data:`NAS_AUTO_METRIC`)."""
        return self.train.replace(metric=nas_auto_metric(self.train.ratio, self.train.ratio_schedule)) \
            if self.train.metric == "auto" \
            else self.train

    @property
    def search_space(self) -> NasSpace:
        return get_space(self.space)

    @property
    def num_cells(self) -> int:
        return self.cells if self.cells is not None else self.search_space.default_cells

    def to_dict(self) -> dict[str, Any]:
        d = dataclasses.asdict(self)
        d["train"] = self.train.to_dict()
        d["cells"] = self.num_cells
        return d

    def training_dict(self) -> dict[str, Any]:
        """:meth:`to_dict` without what does not change the trained supernet (selection, ground truth,
        monitoring, the settings of other searchers, the test split no search reads): what a supernet
        checkpoint must match to be resumed."""
        unused = {name for name, _ in _others_fields(self.searcher)}
        d = {k: v for k, v in self.to_dict().items() if k not in NOT_CHANGING_TRAINING and k not in unused}
        d["train"] = {k: v for k, v in d["train"].items() if k != "test_subset"}
        return d

    def with_seed(self, seed: int) -> "NasSettings":
        return dataclasses.replace(self, train=self.train.replace(seed=seed))


def nas_auto_metric(ratio: float, schedule: str = "constant") -> str:
    """What ``metric="auto"`` resolves to in a search at ``ratio`` under ``schedule``: ``none`` where the run never
    leaves ratio 1, else :data:`NAS_AUTO_METRIC`."""
    from asp_tune.proxy_settings import lowest_ratio

    return "none" if lowest_ratio(ratio, schedule) >= 1.0 else NAS_AUTO_METRIC


#: ``--metric``'s help in ``nas``: what auto means there (the rest as for every command)
NAS_METRIC_HELP = ("subset strategy: an importance metric, mixture (one drawn per epoch), infobatch, a static proxy, "
                   f"none (full data), or auto ({NAS_AUTO_METRIC} below ratio 1, none at 1: in this project's "
                   "measurements it ranked architectures no worse than loss or mixture)")


def _others_fields(searcher: str) -> list[tuple[str, str]]:
    """(field, searcher) for each NasSettings field that only another searcher than ``searcher`` reads (each
    searcher class declares the fields it alone reads in ``own_settings``)."""
    return [(name, other) for other in SEARCHERS if other != searcher
            for name in getattr(SEARCHERS[other], "own_settings", ())
            if name not in getattr(SEARCHERS[searcher], "own_settings", ())]


def retrain_train_config() -> TrainConfig:
    """DARTS's evaluation training, shortened: SGD 0.025 cosine, weight decay 3e-4, batch 96."""
    return TrainConfig(lr=0.025, weight_decay=3e-4, batch_size=96, epochs=20)


@dataclass
class RetrainSettings:
    genotype: Genotype = option(flag=False)
    train: TrainConfig = option(flag=False, default_factory=retrain_train_config)
    channels: int = option(36, "initial channels (DARTS: 36)", "network", check=Interval(1, None, integer=True))
    layers: int = option(20, "cells (DARTS: 20; two are reduction cells)", "network",
                         check=Interval(3, None, integer=True))
    auxiliary: bool = option(False, "auxiliary head after 2/3 of the cells", "network", check=Boolean())
    aux_weight: float = option(0.4, "weight of the auxiliary head's loss", "network", check=Interval(0, None))
    drop_path_prob: float = option(0.0, "drop-path probability, raised from 0 at the first epoch by this / epochs "
                                        "each epoch, as DARTS does (DARTS: 0.2)", "network",
                                   check=Interval(0, 1, "left"))
    grad_clip: float = option(5.0, "gradient-norm clip (0: off)", "network", check=Interval(0, None))

    def validate(self) -> "RetrainSettings":
        check_fields(self)
        default = RetrainSettings.__dataclass_fields__["aux_weight"].default
        if self.aux_weight != default and not self.auxiliary:
            raise ConfigError("aux_weight", self.aux_weight, f"its default {default!r} without --auxiliary: only the "
                                                             "auxiliary head's loss is weighed by it")
        self.train.validate()
        if self.train.val_fraction == 0:
            from asp_tune.strategies import make_strategy

            metric = self.train.resolved().metric
            if make_strategy(metric, self.train).needs_scores:
                raise ConfigError("val_fraction", 0.0, f"a fraction in (0, 1) with strategy '{metric}': its scoring "
                                                       "model validates on a held-out split")
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "genotype": self.genotype.to_dict(), "train": self.train.to_dict()}


SEEDS = "several seeds (Ray tasks; the flags below but --seeds act only on two or more seeds)"


@dataclass
class SeedsSettings:
    """``asp-tune nas --seeds``: one search per seed as parallel Ray tasks; the Ray settings are the
    search commands' own declarations (:class:`~asp_tune.tune.settings.HpoSettings`), per search."""

    seeds: list[int] | None = option(None, "e.g. 1,2,3: one search per seed as parallel Ray tasks, summarised as "
                                           "mean +- std", SEEDS, kind=parse_seeds,
                                     check=Check(check_seeds, ([1, 1], [-1], "x")))
    address: str | None = reuse(HpoSettings, "address", group=SEEDS)
    cpus_per_search: float = reuse(HpoSettings, "cpus_per_trial", help="CPUs per search", group=SEEDS)
    gpus_per_search: float = reuse(HpoSettings, "gpus_per_trial", help="GPUs per search; fractions allowed, e.g. 0.5",
                                   group=SEEDS)
    max_failures: int | None = reuse(HpoSettings, "max_failures", group=SEEDS,
                                     help="retry a search whose worker or node was lost this often; it continues "
                                          "from its checkpoint (-1: forever; none: 3 on a cluster (--address), 0 "
                                          "locally)")

    #: retries of a search whose worker or node was lost: the search commands' rule, reused
    failures_allowed = HpoSettings.failures_allowed

    def validate(self) -> "SeedsSettings":
        """Check the fields; the Ray settings act only on two or more seeds, so with one they must keep
        their defaults (they were ignored silently)."""
        check_fields(self)
        if self.seeds is None or len(self.seeds) < 2:
            for name in ("address", "cpus_per_search", "gpus_per_search", "max_failures"):
                value, default = getattr(self, name), getattr(type(self), name)
                if value != default:
                    raise ConfigError(name, value, f"its default {default!r}: --{name.replace('_', '-')} acts "
                                                   "only on two or more --seeds (one search per seed as Ray tasks)")
        return self
