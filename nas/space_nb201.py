"""NAS-Bench-201 as a :class:`~nas.spaces.NasSpace` (registered as ``nb201``): its cells
(:mod:`nas.nb201`) and ground-truth table; its networks (:mod:`nas.nb201_net`, torch) imported only
when built."""

from __future__ import annotations

from random import Random

from nas.nb201 import NUM_ARCHS, Arch, GroundTruth, crossover, mutate, random_arch


class Nb201Space:
    """NAS-Bench-201 as a :class:`~nas.spaces.NasSpace`: 6 edges, 5 operations, 15,625 cells."""

    name = "nb201"
    description = "NAS-Bench-201 cell (6 edges x 5 ops, 15,625 archs; ground truth from a table)"
    default_cells = 5
    min_cells = 1
    cells_help = "cells per stage N"
    default_searcher = "spos"
    size = NUM_ARCHS
    has_ground_truth = True

    def random(self, rng: Random) -> Arch:
        return random_arch(rng)

    def mutate(self, arch: Arch, rng: Random, edge_prob: float) -> Arch:
        return mutate(arch, rng, edge_prob)

    def crossover(self, a: Arch, b: Arch, rng: Random) -> Arch:
        return crossover(a, b, rng)

    def single_path_supernet(self, channels: int, cells: int, num_classes: int, in_channels: int):
        from nas.nb201_net import Nb201Supernet

        return Nb201Supernet(channels, cells, num_classes, in_channels)

    def continuous_network(self, channels: int, cells: int, num_classes: int, in_channels: int):
        from nas.nb201_net import Nb201DartsNetwork

        return Nb201DartsNetwork(channels, cells, num_classes, in_channels)

    def parse(self, text: str) -> Arch:
        return Arch.parse(text)

    def format(self, arch: Arch) -> str:
        return str(arch)

    def load_ground_truth(self, path: str) -> GroundTruth:
        return GroundTruth.load(path)

    def summarise(self, arch: Arch) -> dict:
        return {}
