"""Settings of NAS runs (search, evolution, retraining): every default, help text and allowed value
in one place, and the flags of ``asp-tune nas`` / ``nas-retrain`` generated from them. Nothing here
imports torch, so the command line's help answers at once."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from asp_tune.config import TrainConfig
from asp_tune.errors import ConfigError
from asp_tune.flags import option, optional
from asp_tune.registry import MODELS, LazyRegistry
from nas.genotypes import Genotype
from nas.spaces import NasSpace, get_space, space_names


@dataclass(frozen=True)
class EvolutionSettings:
    """Architecture selection after supernet training (``generations=0``: random search only)."""

    candidates: int = option(50, "random candidates scored first")
    population: int = option(20, "survivors kept each generation")
    generations: int = option(10, "evolution rounds (0: random search only)")
    parents: int = option(10, "best of the population that breed")
    mutations: int = option(10, "children by mutation per generation")
    crossovers: int = option(10, "children by crossover per generation")
    mutation_prob: float = option(0.2, "per-edge chance of a new operation in a mutation")

    def validate(self, space_size: int | None = None) -> "EvolutionSettings":
        """Check the settings; with ``space_size``, no more candidates than the space holds."""
        for name in ("candidates", "population", "parents"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 1):
                raise ConfigError(name, value, "an integer >= 1")
            if space_size is not None and value > space_size:
                raise ConfigError(name, value, f"an integer in [1, {space_size}] (the architectures of the space)")
        for name in ("generations", "mutations", "crossovers"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise ConfigError(name, value, "an integer >= 0")
        if not (isinstance(self.mutation_prob, (int, float)) and 0.0 < self.mutation_prob <= 1.0):
            raise ConfigError("mutation_prob", self.mutation_prob, "a number in (0, 1]")
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


@dataclass
class NasSettings:
    """A search: the space, the searcher, the supernet's training (``train``) and selection settings.

    Each field's default, help and allowed values live here; ``asp-tune nas`` generates its flags
    from these fields and from :class:`~nas.spos.EvolutionSettings` (:mod:`asp_tune.flags`).
    """

    space: str = option("nb201", "search space (a registered name, see nas.spaces)", SEARCH, space_names)
    searcher: str | None = option(None, lambda: "searcher (none: the space's own: " + ", ".join(
        f"{get_space(n).default_searcher} on {n}" for n in space_names()) + ")", SEARCH, lambda: tuple(SEARCHERS))
    train: TrainConfig = option(flag=False, default_factory=supernet_train_config)
    channels: int = option(16, "supernet width C (16 in both papers)", SEARCH)
    cells: int | None = option(None, _cells_help, SEARCH)
    evolution: EvolutionSettings = option(flag=False, default_factory=EvolutionSettings)
    order: int = option(1, "1 first order, 2 second order (unrolled)", DARTS, (1, 2))
    arch_lr: float = option(3e-4, "architecture learning rate (Adam)", DARTS)
    arch_weight_decay: float = option(1e-3, "architecture weight decay", DARTS)
    grad_clip: float = option(5.0, "gradient-norm clip of the network weights (0: off)", DARTS)
    ground_truth: str | None = option(None, "a table of known accuracies for spaces that have one: for nb201 the "
                                            "NAS-Bench-201 CSV (arch, cifar10_test, cifar100_test, "
                                            "imagenet16_120_test)", SEARCH, aliases=("--nb201-table",))
    monitor: bool = option(True, "validate the supernet after each epoch (SPOS: a fresh random path per batch; "
                                 "costs one pass over the val split)", SEARCH)
    score_samples: int | None = option(None, "SPOS: held-out images each candidate is scored on (the same seeded "
                                             "subset for all); auto: sized so scoring takes about 10% of the search",
                                       SEARCH, kind=optional(int, ("auto", "none", "")))

    def validate(self) -> "NasSettings":
        space = self.search_space  # an unknown space is an error naming the registered ones
        if self.searcher is None:
            self.searcher = space.default_searcher
        if self.searcher not in SEARCHERS:
            raise ConfigError("searcher", self.searcher, tuple(SEARCHERS))
        if self.order not in (1, 2):
            raise ConfigError("order", self.order, (1, 2))
        if not (isinstance(self.channels, int) and self.channels >= 1):
            raise ConfigError("channels", self.channels, "an integer >= 1")
        if self.cells is not None and not (isinstance(self.cells, int) and self.cells >= space.min_cells):
            raise ConfigError("cells", self.cells, f"an integer >= {space.min_cells} for the {space.name} space "
                                                   f"({space.cells_help})")
        for name in ("arch_lr", "arch_weight_decay", "grad_clip"):
            value = getattr(self, name)
            if not (isinstance(value, (int, float)) and value >= 0):
                raise ConfigError(name, value, "a number >= 0")
        if self.score_samples is not None and not (isinstance(self.score_samples, int) and self.score_samples >= 32):
            raise ConfigError("score_samples", self.score_samples, "an integer >= 32, or auto")
        if self.ground_truth is not None and not space.has_ground_truth:
            raise ConfigError("ground_truth", self.ground_truth, f"no table: the {space.name} space has none")
        self.train.validate()
        from asp_tune.strategies import make_strategy

        if make_strategy(self.train.metric, self.train).needs_scores and self.train.proxy_model is None:  # the supernet cannot score samples on its own
            raise ConfigError("proxy_model", None, f"a network that scores samples for '{self.train.metric}' in a "
                                                   f"NAS search: one of {', '.join(MODELS)}")
        self.evolution.validate(space.size)
        return self

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

    def with_seed(self, seed: int) -> "NasSettings":
        return dataclasses.replace(self, train=self.train.replace(seed=seed))


def retrain_train_config() -> TrainConfig:
    """DARTS's evaluation training, shortened: SGD 0.025 cosine, weight decay 3e-4, batch 96."""
    return TrainConfig(lr=0.025, weight_decay=3e-4, batch_size=96, epochs=20)


@dataclass
class RetrainSettings:
    genotype: Genotype = option(flag=False)
    train: TrainConfig = option(flag=False, default_factory=retrain_train_config)
    channels: int = option(36, "initial channels (DARTS: 36)", "network")
    layers: int = option(20, "cells (DARTS: 20)", "network")
    auxiliary: bool = option(False, "auxiliary head after 2/3 of the cells", "network")
    aux_weight: float = option(0.4, "weight of the auxiliary head's loss", "network")
    drop_path_prob: float = option(0.0, "drop-path probability reached at the last epoch (DARTS: 0.2)", "network")
    grad_clip: float = option(5.0, "gradient-norm clip (0: off)", "network")

    def validate(self) -> "RetrainSettings":
        if not (isinstance(self.channels, int) and self.channels >= 1):
            raise ConfigError("channels", self.channels, "an integer >= 1")
        if not (isinstance(self.layers, int) and self.layers >= 3):
            raise ConfigError("layers", self.layers, "an integer >= 3 (two are reduction cells)")
        if not (0.0 <= self.drop_path_prob < 1.0):
            raise ConfigError("drop_path_prob", self.drop_path_prob, "a number in [0, 1)")
        if not self.aux_weight >= 0.0:
            raise ConfigError("aux_weight", self.aux_weight, "a number >= 0")
        self.train.validate()
        return self

    def to_dict(self) -> dict[str, Any]:
        return {**dataclasses.asdict(self), "genotype": self.genotype.to_dict(), "train": self.train.to_dict()}
