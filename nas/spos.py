"""SPOS on NAS-Bench-201: a single-path supernet trained on ASP proxy data, then an evolutionary search.

Supernet training is the ordinary :class:`~asp_tune.trainer.Trainer` loop; only the step differs:
before each batch one architecture is drawn uniformly and only its operations run, so the proxy
memory learns from that path's logits. Candidates are then scored on the held-out (validation)
split with the weights they inherit: ``candidates`` uniform samples, followed by ``generations``
rounds of mutation and crossover over the best ``population``.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Any, Callable

import torch

from asp_tune.config import TrainConfig
from asp_tune.datasets import DataBundle
from asp_tune.errors import ConfigError
from asp_tune.trainer import Trainer
from nas.nb201 import NUM_ARCHS, Arch, crossover, mutate, random_arch
from nas.nb201_net import Nb201Supernet


@dataclass(frozen=True)
class EvolutionSettings:
    """Architecture selection after supernet training (``generations=0``: random search only)."""

    candidates: int = 50  # uniform random candidates scored first
    population: int = 20  # survivors kept each generation
    generations: int = 10
    parents: int = 10  # best of the population that breed
    mutations: int = 10  # children by mutation per generation
    crossovers: int = 10  # children by crossover per generation
    mutation_prob: float = 0.2  # per-edge chance of a new operation

    def validate(self) -> "EvolutionSettings":
        for name in ("candidates", "population", "parents"):
            value = getattr(self, name)
            if not (isinstance(value, int) and 1 <= value <= NUM_ARCHS):
                raise ConfigError(name, value, f"an integer in [1, {NUM_ARCHS}]")
        for name in ("generations", "mutations", "crossovers"):
            value = getattr(self, name)
            if not (isinstance(value, int) and value >= 0):
                raise ConfigError(name, value, "an integer >= 0")
        if not (isinstance(self.mutation_prob, (int, float)) and 0.0 < self.mutation_prob <= 1.0):
            raise ConfigError("mutation_prob", self.mutation_prob, "a number in (0, 1]")
        if self.parents > self.population:
            raise ConfigError("parents", self.parents, f"at most the population ({self.population})")
        return self


def evolutionary_search(score: Callable[[Arch], float], settings: EvolutionSettings, seed: int,
                        on_score: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Score random candidates, then evolve the best; returns one record per scored architecture
    (``arch``, ``score``, ``phase``, ``generation``), in the order they were scored."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    scored: dict[Arch, float] = {}

    def evaluate(arch: Arch, phase: str, generation: int) -> None:
        value = float(score(arch))
        scored[arch] = value
        record = {"arch": arch, "score": value, "phase": phase, "generation": generation}
        records.append(record)
        if on_score is not None:
            on_score(record)

    while len(scored) < min(settings.candidates, NUM_ARCHS):
        arch = random_arch(rng)
        if arch not in scored:
            evaluate(arch, "random", 0)
    population = sorted(scored, key=scored.get, reverse=True)[:settings.population]
    for generation in range(1, settings.generations + 1):
        parents = population[:settings.parents]
        children: dict[Arch, str] = {}
        for count, phase in ((settings.mutations, "mutation"), (settings.crossovers, "crossover")):
            made, tries = 0, 0
            while made < count and tries < 20 * count:
                tries += 1
                if phase == "mutation" or len(parents) < 2:
                    child = mutate(rng.choice(parents), rng, settings.mutation_prob)
                else:
                    child = crossover(*rng.sample(parents, 2), rng)
                if child not in scored and child not in children:
                    children[child] = phase
                    made += 1
        for child, phase in children.items():
            evaluate(child, phase, generation)
        population = sorted(set(population) | set(children), key=scored.get, reverse=True)[:settings.population]
    return records


class SposTrainer(Trainer):
    """Trains a :class:`Nb201Supernet` with one uniformly drawn path per batch; scores paths on ``val``."""

    def __init__(self, config: TrainConfig, data: DataBundle, channels: int = 16, cells_per_stage: int = 5):
        torch.manual_seed(config.seed)
        c, _, _ = data.image_shape
        model = Nb201Supernet(channels, cells_per_stage, data.num_classes, c)
        super().__init__(config, data, model)
        self.path_rng = random.Random(config.seed * 7919 + 17)
        self.monitor_rng = random.Random(config.seed * 7919 + 29)  # apart, so monitoring never changes training
        self.scored_arch: Arch | None = None
        self.score_indices: torch.Tensor | None = None  # None: score on the whole held-out split

    def set_score_subset(self, samples: int | None) -> int:
        """Score every candidate on the same seeded ``samples`` held-out images (None: all of them);
        returns how many are used. The subset depends only on the seed, not on the run's history."""
        n = self.eval_feeders["val"].num_samples
        if samples is None or samples >= n:
            self.score_indices = None
            return n
        g = torch.Generator().manual_seed(self.config.seed * 104729 + 7)
        self.score_indices = torch.randperm(n, generator=g)[:samples].sort().values.to(self.device)
        return samples

    def train_step(self, batch: Any):
        self.model.set_arch(random_arch(self.path_rng))
        return super().train_step(batch)

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        # Per-epoch validation draws a fresh path per batch (a supernet health signal);
        # scoring fixes the candidate.
        self.model.set_arch(self.scored_arch or random_arch(self.monitor_rng))
        return self.model(x)

    def score(self, arch: Arch) -> float:
        """Validation accuracy of ``arch`` with the weights it inherits from the supernet."""
        self.scored_arch = arch
        try:
            return self.evaluate("val", self.score_indices)[0]
        finally:
            self.scored_arch = None

    def state_dict(self) -> dict[str, Any]:
        state = super().state_dict()
        state["path_rng"] = self.path_rng.getstate()
        state["monitor_rng"] = self.monitor_rng.getstate()
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        super().load_state_dict(state)
        self.path_rng.setstate(state["path_rng"])
        self.monitor_rng.setstate(state["monitor_rng"])
