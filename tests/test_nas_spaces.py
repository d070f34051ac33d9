"""Search spaces as objects: the registry, SPOS on the DARTS space (to a retrained genotype), and a
toy space defined here and searched without touching ``nas/``."""

from __future__ import annotations

import json
import random
from dataclasses import dataclass

import pytest
import torch
from torch import nn

from asp_tune.cli import main
from asp_tune.config import TrainConfig
from asp_tune.errors import ConfigError
from nas.genotypes import STEPS, Genotype
from nas.space_darts import DartsSpace
from nas.space_nb201 import Nb201Space
from nas.search import run_search
from nas.settings import EvolutionSettings, NasSettings
from nas.spaces import NasSpace, get_space, register_space, space_names, unregister_space

TINY_EVOLUTION = EvolutionSettings(candidates=6, population=4, generations=1, parents=3, mutations=2, crossovers=2)


def tiny_train(**changes) -> TrainConfig:
    base = dict(dataset="digits", epochs=2, batch_size=64, ratio=0.5, metric="loss", lr=0.05, subset=300,
                test_subset=40, val_fraction=0.25, seed=2)
    base.update(changes)
    return TrainConfig(**base)


def test_builtin_spaces_are_registered_and_implement_the_protocol():
    assert {"nb201", "darts"} <= set(space_names())
    for name in ("nb201", "darts"):
        space = get_space(name)
        assert isinstance(space, NasSpace) and space.name == name
    with pytest.raises(ConfigError, match="invalid space='nb301': allowed one of 'nb201', 'darts'"):
        get_space("nb301")


@pytest.mark.parametrize("seed", range(5))
def test_darts_genotypes_from_random_mutation_and_crossover_are_valid(seed):
    space, rng = DartsSpace(), random.Random(seed)
    parents = [space.random(rng) for _ in range(4)]
    children = [space.mutate(p, rng, 0.3) for p in parents] + [space.crossover(*rng.sample(parents, 2), rng)
                                                              for _ in range(4)]
    for g in parents + children:
        assert isinstance(g, Genotype)  # construction validates ops and inputs
        for edges in (g.normal, g.reduce):
            for node in range(STEPS):
                a, b = edges[2 * node], edges[2 * node + 1]
                assert a[1] < b[1]  # two distinct inputs, in order
        assert space.parse(space.format(g)) == g
    assert all(m != p for m, p in zip(children[:4], parents))  # a mutation always changes something


def test_single_path_darts_supernet_runs_only_the_chosen_ops():
    space = DartsSpace()
    net = space.single_path_supernet(4, 3, 10, 1)
    genotype = space.random(random.Random(0))
    net.set_arch(genotype)
    out = net(torch.randn(6, 1, 8, 8))
    out.sum().backward()
    cell = net.cells[0]  # a normal cell
    chosen = set()
    first = 0
    for node in range(STEPS):
        for op, src in genotype.normal[2 * node:2 * node + 2]:
            chosen.add((first + src, op))
        first += 2 + node
    for e, ops in enumerate(cell.edges):
        for op, module in ops.items():
            grads = [p.grad for p in module.parameters()]
            if grads and (e, op) not in chosen:
                assert all(g is None for g in grads), (e, op)
    assert out.shape == (6, 10)
    assert not any(m.track_running_stats for m in net.modules() if isinstance(m, nn.BatchNorm2d))


@pytest.mark.slow
def test_spos_on_the_darts_space_finds_a_genotype_that_nas_retrain_trains(tmp_path, capsys):
    out = tmp_path / "search"
    assert main(["nas", "--space", "darts", "--searcher", "spos", "--channels", "4", "--cells", "3",
                 "--dataset", "digits", "--subset", "300", "--test-subset", "40", "--val-fraction", "0.25",
                 "--epochs", "2", "--ratio", "0.5", "--metric", "loss", "--candidates", "4", "--population", "3",
                 "--parents", "2", "--generations", "1", "--mutations", "2", "--crossovers", "1",
                 "--score-samples", "64", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["space"] == "darts" and summary["searcher"] == "spos"
    assert summary["candidates_scored"] == 4 + 3
    genotype = Genotype.parse(str(out / "summary.json"))
    assert str(genotype) == summary["arch"] == summary["genotype_str"]
    retrained = tmp_path / "retrain"
    assert main(["nas-retrain", "--genotype", str(out / "summary.json"), "--channels", "4", "--layers", "3",
                 "--dataset", "digits", "--subset", "300", "--test-subset", "40", "--epochs", "1", "--quiet",
                 "--out", str(retrained)]) == 0
    assert json.loads((retrained / "summary.json").read_text())["genotype_str"] == str(genotype)


# ---------------------------------------------------------------------------------------- a toy space

ACTIVATIONS = ("relu", "tanh", "identity")


class ToySupernet(nn.Module):
    """An MLP of two hidden layers whose activation is the architecture choice."""

    def __init__(self, width: int, num_classes: int, in_features: int):
        super().__init__()
        self.layers = nn.ModuleList([nn.LazyLinear(width), nn.Linear(width, width)])
        self.acts = {"relu": torch.relu, "tanh": torch.tanh, "identity": lambda x: x}
        self.head = nn.Linear(width, num_classes)
        self.arch: tuple[str, str] | None = None

    def set_arch(self, arch: tuple[str, str]) -> None:
        self.arch = arch

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = x.flatten(1)
        for layer, act in zip(self.layers, self.arch):
            h = self.acts[act](layer(h))
        return self.head(h)


@dataclass
class ToySpace:
    """Two choices of activation: 9 architectures, with a made-up ground truth."""

    name: str = "toy"
    description: str = "two activations, 9 archs"
    default_cells: int = 1
    min_cells: int = 1
    cells_help: str = "unused"
    default_searcher: str = "spos"
    size: int = len(ACTIVATIONS) ** 2
    has_ground_truth: bool = True

    def random(self, rng):
        return (rng.choice(ACTIVATIONS), rng.choice(ACTIVATIONS))

    def mutate(self, arch, rng, edge_prob):
        k = rng.randrange(2)
        return tuple(rng.choice([a for a in ACTIVATIONS if a != arch[k]]) if i == k else arch[i] for i in range(2))

    def crossover(self, a, b, rng):
        return (a[0], b[1])

    def single_path_supernet(self, channels, cells, num_classes, in_channels):
        return ToySupernet(channels, num_classes, in_channels)

    def continuous_network(self, channels, cells, num_classes, in_channels):
        raise NotImplementedError

    def parse(self, text):
        return tuple(text.split("-"))

    def format(self, arch):
        return "-".join(arch)

    def load_ground_truth(self, path):
        return ToyTable()

    def summarise(self, arch):
        return {"activations": list(arch)}


class ToyTable:
    columns = ("made_up",)

    def lookup(self, arch):
        arch = tuple(arch.split("-")) if isinstance(arch, str) else arch
        return {"made_up": 10.0 * ACTIVATIONS.index(arch[0]) + ACTIVATIONS.index(arch[1])}

    def column_for(self, dataset):
        return "made_up"

    def best(self, dataset):
        return ("identity", "identity"), 22.0


@pytest.fixture
def toy_space():
    register_space("toy", ToySpace)
    yield
    unregister_space("toy")


def test_a_toy_space_defined_in_a_test_is_searched_with_spos(toy_space):
    settings = NasSettings(space="toy", train=tiny_train(model="mlp"), channels=16, evolution=TINY_EVOLUTION,
                           ground_truth="anything")
    result = run_search(settings)
    s = result.summary
    assert s["space"] == "toy" and s["searcher"] == "spos"
    assert tuple(s["arch"].split("-")) in {(a, b) for a in ACTIVATIONS for b in ACTIVATIONS}
    assert s["activations"] == s["arch"].split("-")
    assert s["toy_made_up"] == ToyTable().lookup(s["arch"])["made_up"] and s["toy_best_possible"] == 22.0
    n = s["candidates_scored"]
    assert len(result.candidates) == n and 6 < n <= 9  # 6 random, then new children only, in a 9-arch space
    assert result.candidates["arch"].is_unique
    assert set(result.candidates["toy_made_up"]) <= {10.0 * i + j for i in range(3) for j in range(3)}
    assert -1.0 <= s["kendall_tau"] <= 1.0


def test_toy_space_settings_are_checked_against_the_space(toy_space):
    with pytest.raises(ConfigError, match=r"candidates=20: allowed an integer in \[1, 9\]"):
        NasSettings(space="toy", train=tiny_train(), evolution=EvolutionSettings(candidates=20)).validate()
    with pytest.raises(ConfigError, match="invalid ground_truth"):
        NasSettings(space="darts", cells=3, train=tiny_train(), ground_truth="x.csv").validate()
    assert NasSettings(space="nb201", train=tiny_train()).validate().searcher == Nb201Space.default_searcher
