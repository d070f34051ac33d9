"""The DARTS space as a :class:`~nas.spaces.NasSpace` (registered as ``darts``): its genotypes
(:mod:`nas.genotypes`) sampled, mutated and crossed; its networks (:mod:`nas.darts_space`, torch)
imported only when built."""

from __future__ import annotations

import math
from random import Random

from asp_tune.errors import ConfigError
from nas.genotypes import PRIMITIVES, STEPS, Edge, Genotype, _mutate_edge, _random_cell


class DartsSpace:
    """The DARTS space as a :class:`~nas.spaces.NasSpace`: normal and reduction cells of 4 nodes,
    each node two (op, input) pairs over 7 operations."""

    name = "darts"
    description = "DARTS cells (normal + reduction, 4 nodes x 2 inputs, 7 ops); no ground truth"
    default_cells = 8
    min_cells = 3
    cells_help = "layers (cells; two are reduction cells)"
    default_searcher = "darts"
    has_ground_truth = False
    size = (math.prod(math.comb(2 + i, 2) for i in range(STEPS)) * (len(PRIMITIVES) - 1) ** (2 * STEPS)) ** 2

    def random(self, rng: Random) -> Genotype:
        return Genotype(normal=_random_cell(rng), reduce=_random_cell(rng))

    def mutate(self, genotype: Genotype, rng: Random, edge_prob: float) -> Genotype:
        """Each of the 16 edges changes with probability ``edge_prob`` (at least one changes)."""
        cells = [list(genotype.normal), list(genotype.reduce)]
        changed = False
        for edges in cells:
            for k in range(len(edges)):
                if rng.random() < edge_prob:
                    _mutate_edge(edges, k, rng)
                    changed = True
        if not changed:
            _mutate_edge(rng.choice(cells), rng.randrange(2 * STEPS), rng)
        for edges in cells:  # keep each node's inputs in order, as derived genotypes have them
            for k in range(0, len(edges), 2):
                edges[k:k + 2] = sorted(edges[k:k + 2], key=lambda e: e[1])
        return Genotype(normal=tuple(cells[0]), reduce=tuple(cells[1]))

    def crossover(self, a: Genotype, b: Genotype, rng: Random) -> Genotype:
        """Each node's pair of edges from either parent, with equal chance."""
        def mix(x: tuple[Edge, ...], y: tuple[Edge, ...]) -> tuple[Edge, ...]:
            return tuple(e for k in range(0, 2 * STEPS, 2) for e in (x if rng.random() < 0.5 else y)[k:k + 2])
        return Genotype(normal=mix(a.normal, b.normal), reduce=mix(a.reduce, b.reduce))

    def single_path_supernet(self, channels: int, cells: int, num_classes: int, in_channels: int):
        from nas.darts_space import DartsSinglePathSupernet

        return DartsSinglePathSupernet(channels, cells, num_classes, in_channels)

    def continuous_network(self, channels: int, cells: int, num_classes: int, in_channels: int):
        from nas.darts_space import DartsSearchNetwork

        return DartsSearchNetwork(channels, cells, num_classes, in_channels)

    def parse(self, text: str) -> Genotype:
        return Genotype.parse(text)

    def format(self, genotype: Genotype) -> str:
        return str(genotype)

    def load_ground_truth(self, path: str):
        raise ConfigError("ground_truth", path, "no table for the DARTS space (only nb201 has one)")

    def summarise(self, genotype: Genotype) -> dict:
        """The genotype as JSON too: ``asp-tune nas-retrain --genotype RUN/summary.json`` reads it."""
        return {"genotype": genotype.to_dict(), "genotype_str": str(genotype)}
