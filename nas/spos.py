"""SPOS on any :class:`~nas.spaces.NasSpace`: a single-path supernet trained on ASP proxy data,
then an evolutionary search.

Supernet training is the ordinary :class:`~asp_tune.trainer.Trainer` loop; only the step differs:
before each batch one architecture is drawn uniformly and only its operations run, so the proxy
memory learns from that path's logits. Candidates are then scored on the held-out (validation)
split with the weights they inherit: ``candidates`` uniform samples, followed by ``generations``
rounds of mutation and crossover over the best ``population``.
"""

from __future__ import annotations

import random
import warnings
from typing import Any, Callable, Hashable

import pandas as pd
import torch

from asp_tune.config import TrainConfig
from asp_tune.datasets import DataBundle
from asp_tune.build import scores_factory
from asp_tune.trainer import StepOutput, Trainer
from nas.settings import EvolutionSettings, NasSettings
from nas.spaces import NasSpace, require_images


def evolutionary_search(space: NasSpace, score: Callable[[Hashable], float], settings: EvolutionSettings,
                        seed: int, on_score: Callable[[dict[str, Any]], None] | None = None) -> list[dict[str, Any]]:
    """Score random candidates of ``space``, then evolve the best; returns one record per scored
    architecture (``arch``, ``score``, ``phase``, ``generation``), in the order they were scored."""
    rng = random.Random(seed)
    records: list[dict[str, Any]] = []
    scored: dict[Hashable, float] = {}

    def evaluate(arch: Hashable, phase: str, generation: int) -> None:
        value = float(score(arch))
        scored[arch] = value
        record = {"arch": arch, "score": value, "phase": phase, "generation": generation}
        records.append(record)
        if on_score is not None:
            on_score(record)

    wanted = settings.candidates if space.size is None else min(settings.candidates, space.size)
    while len(scored) < wanted:
        arch = space.random(rng)
        if arch not in scored:
            evaluate(arch, "random", 0)
    population = sorted(scored, key=scored.get, reverse=True)[:settings.population]
    for generation in range(1, settings.generations + 1):
        parents = population[:settings.parents]
        children: dict[Hashable, str] = {}
        for count, phase in ((settings.mutations, "mutation"), (settings.crossovers, "crossover")):
            made, tries = 0, 0
            while made < count and tries < 20 * count:
                tries += 1
                if phase == "mutation" or len(parents) < 2:
                    child = space.mutate(rng.choice(parents), rng, settings.mutation_prob)
                else:
                    child = space.crossover(*rng.sample(parents, 2), rng)
                if child not in scored and child not in children:
                    children[child] = phase
                    made += 1
        for child, phase in children.items():
            evaluate(child, phase, generation)
        # ties keep the order architectures were found in (a set's order follows the process's string hashing)
        population = sorted(dict.fromkeys([*population, *children]), key=scored.get,
                            reverse=True)[:settings.population]
    return records


class SposTrainer(Trainer):
    """Trains ``space``'s single-path supernet with one uniformly drawn path per batch; scores paths on ``val``."""

    free_on_resume = Trainer.free_on_resume | {"test_subset"}  # a search never reads the test split

    def __init__(self, config: TrainConfig, data: DataBundle | None, space: NasSpace,
                 channels: int = NasSettings.channels, cells: int | None = None, **kwargs):
        cells = cells or space.default_cells

        def supernet(loaded: DataBundle):
            require_images(loaded)
            return space.single_path_supernet(channels, cells, loaded.num_classes, loaded.image_shape[0])

        super().__init__(config, data, supernet, size_field=("channels", channels), **kwargs)
        self.space = space
        self.path_rng = random.Random(config.seed * 7919 + 17)
        self.monitor_rng = random.Random(config.seed * 7919 + 29)  # apart, so monitoring never changes training
        self.scored_arch: Hashable | None = None
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

    def train_step(self, batch: Any) -> StepOutput:
        self.model.set_arch(self.space.random(self.path_rng))
        return super().train_step(batch)

    def forward_eval(self, x: torch.Tensor) -> torch.Tensor:
        # Per-epoch validation draws a fresh path per batch (a supernet health signal);
        # scoring fixes the candidate.
        arch = self.scored_arch if self.scored_arch is not None else self.space.random(self.monitor_rng)
        self.model.set_arch(arch)
        return self.model(x)

    def score(self, arch: Hashable) -> float:
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


def auto_score_samples(train: TrainConfig, evolution: EvolutionSettings, num_train: int) -> int:
    """Held-out images per candidate so that scoring costs about 10% of a full-data search.

    A training sample costs about three forward passes (forward and backward), a scored one one:
    scoring ``K`` candidates on ``S`` images costs ``K S``, training ``3 E N`` for ``E`` epochs over
    ``N`` images, so ``K S <= (0.1 / 0.9) 3 E N`` gives ``S = E N / (3 K)`` (at least 256). The size
    depends on the full-data budget only, not on ``ratio`` or the strategy, so every variant of one
    comparison ranks its candidates on the same held-out images; scoring is then a larger share of
    a proxy run's time (about 18% at half the data passes).
    """
    candidates = evolution.candidates + evolution.generations * (evolution.mutations + evolution.crossovers)
    return max(256, int(train.epochs * num_train / (3 * max(1, candidates))))


class SposSearch:
    """The SPOS searcher: single-path supernet training, then evolution scored on held-out data."""

    #: NasSettings fields only this searcher reads (another searcher refuses them)
    own_settings = ("evolution", "score_samples", "rank_sample")
    #: it scores single architectures (:meth:`score`): candidates, and the uniform sample of ``rank_sample``
    scores_candidates = True
    #: the supernet normalises with batch statistics, so a score depends on the evaluation batch: smaller
    #: ones are refused (``eval_batch_size``)
    min_eval_batch = 32

    def trainer(self, settings: NasSettings, space: NasSpace) -> SposTrainer:
        """The supernet's trainer; a validation split smaller than :attr:`min_eval_batch` is warned of here, with
        the data loaded and nothing trained (its candidates' scores are one small batch's statistics)."""
        train = settings.train_config()
        trainer = SposTrainer(train, None, space, settings.channels, settings.num_cells, scores=scores_factory(train))
        held = trainer.eval_feeders["val"].num_samples
        if held < self.min_eval_batch:
            warnings.warn(f"the validation split holds {held} samples (val_fraction {train.val_fraction:g} of "
                          f"{held + trainer.selector.num_samples}), fewer than the {self.min_eval_batch} an evaluation "
                          "batch must hold: the supernet normalises with the batch's statistics, so every candidate "
                          "is scored on one small batch and ranks otherwise than on a full one (a larger "
                          "--val-fraction or --subset holds more)", stacklevel=2)
        return trainer

    def score(self, trainer: SposTrainer, settings: NasSettings, archs: list[Hashable]) -> list[float]:
        """Supernet scores of ``archs`` on the images the candidates were scored on (after :meth:`select`)."""
        return [trainer.score(a) for a in archs]

    def select(self, trainer: SposTrainer, settings: NasSettings, space: NasSpace,
               on_score: Callable[[dict[str, Any]], None] | None = None
               ) -> tuple[Hashable, dict[str, Any], pd.DataFrame]:
        """(best architecture, its summary fields, every scored candidate)."""
        wanted = settings.score_samples or auto_score_samples(settings.train, settings.evolution,
                                                              trainer.selector.num_samples)
        used = trainer.set_score_subset(wanted)
        records = evolutionary_search(space, trainer.score, settings.evolution, settings.train.seed, on_score)
        best = max(records, key=lambda r: r["score"])
        candidates = pd.DataFrame([{**r, "arch": space.format(r["arch"])} for r in records])
        return best["arch"], {"score_samples": used, "supernet_val_accuracy": best["score"]}, candidates
