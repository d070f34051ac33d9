"""NAS-Bench-201: arch strings, enumeration, ground-truth table, single-path supernet."""

import random

import pandas as pd
import pytest
import torch

from asp_tune.errors import ConfigError, DataError
from nas.nb201 import EDGES, EXAMPLE, NUM_ARCHS, NB201_OPS, Arch, GroundTruth, all_archs, crossover, mutate, random_arch
from nas.nb201_net import Nb201DartsNetwork, Nb201Supernet, Nb201Cell, live_edges

BEST_C10 = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def test_every_arch_string_round_trips():
    archs = list(all_archs())
    assert len(archs) == NUM_ARCHS == 15_625
    strings = [str(a) for a in archs]
    assert len(set(strings)) == NUM_ARCHS
    assert all(Arch.parse(s) == a for s, a in zip(strings, archs))


def test_standard_form_and_edge_order():
    arch = Arch.parse(EXAMPLE)
    assert EDGES == ((1, 0), (2, 0), (2, 1), (3, 0), (3, 1), (3, 2))
    assert arch.ops == ("nor_conv_3x3", "nor_conv_3x3", "nor_conv_3x3", "skip_connect", "nor_conv_3x3",
                        "nor_conv_1x1")
    assert str(arch) == EXAMPLE
    assert Arch.from_indices(arch.indices) == arch


@pytest.mark.parametrize("text, field", [
    ("|conv_9x9~0|+|none~0|none~1|+|none~0|none~1|none~2|", "arch operation"),
    ("|none~0|+|none~0|none~1|", "arch"),
    ("|none~0|+|none~0|none~0|+|none~0|none~1|none~2|", "arch"),
    ("|none~0|+|none~0|+|none~0|none~1|none~2|", "arch"),
])
def test_malformed_arch_strings_name_the_problem(text, field):
    with pytest.raises(ConfigError) as err:
        Arch.parse(text)
    assert err.value.field == field


def test_mutation_and_crossover_stay_in_the_space():
    rng = random.Random(0)
    a, b = random_arch(rng), random_arch(rng)
    for _ in range(200):
        child = mutate(a, rng, 0.2)
        assert child != a and Arch.parse(str(child)) == child
        mix = crossover(a, b, rng)
        assert all(op in (x, y) for op, x, y in zip(mix.ops, a.ops, b.ops))


@pytest.mark.shared_data
def test_shared_table_best_cifar10_arch_reads_94_37(shared_data):
    table = GroundTruth.load(shared_data / "nb201" / "nb201_test_accuracy.csv")
    assert len(table) == NUM_ARCHS
    assert table.lookup(BEST_C10)["cifar10_test"] == pytest.approx(94.37, abs=0.01)
    best, acc = table.best("cifar10")
    assert str(best) == BEST_C10 and acc == pytest.approx(94.37, abs=0.01)
    assert table.best("cifar100")[1] == pytest.approx(73.51, abs=0.01)
    assert table.best("imagenet16_120")[1] == pytest.approx(47.31, abs=0.01)
    assert all(a in table for a in all_archs())
    assert table.accuracy(BEST_C10, "cifar100") == table.lookup(BEST_C10)["cifar100_test"]


def _frame(**changes):
    rows = {"arch": [EXAMPLE, str(Arch(("none",) * 6))], "cifar10_test": [94.0, 10.0],
            "cifar100_test": [73.0, 1.0]}
    rows.update(changes)
    return pd.DataFrame(rows)


def test_table_errors_are_clear(tmp_path):
    table = GroundTruth(_frame())
    with pytest.raises(DataError, match="is not in the ground-truth table"):
        table.lookup(Arch(("skip_connect",) * 6))
    with pytest.raises(DataError, match="no 'arch' column"):
        GroundTruth(_frame().rename(columns={"arch": "name"}))
    with pytest.raises(DataError, match="none of the accuracy columns"):
        GroundTruth(_frame().drop(columns=["cifar10_test", "cifar100_test"]))
    with pytest.raises(DataError, match="line 3: not a NAS-Bench-201 arch string"):
        GroundTruth(_frame(arch=[EXAMPLE, "|oops~0|"]))
    with pytest.raises(DataError, match="line 2: accuracy missing"):
        GroundTruth(_frame(cifar10_test=["n/a", 3.0]))
    with pytest.raises(DataError, match="more than once"):
        GroundTruth(_frame(arch=[EXAMPLE, EXAMPLE]))
    with pytest.raises(ConfigError, match="ground_truth"):
        GroundTruth.load(tmp_path / "missing.csv")
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(DataError):
        GroundTruth.load(bad)


def test_single_path_forward_has_right_shapes_and_runs_only_the_sampled_ops():
    torch.manual_seed(0)
    net = Nb201Supernet(channels=4, cells_per_stage=2, num_classes=7, in_channels=3)
    ran = set()
    for cell in net.layers:
        if isinstance(cell, Nb201Cell):
            for edge in cell.edges:
                for op in edge:
                    op.register_forward_hook(lambda m, i, o: ran.add(id(m)))
    rng = random.Random(1)
    for _ in range(40):
        arch = random_arch(rng)
        net.set_arch(arch)
        net.zero_grad(set_to_none=True)
        ran.clear()
        out = net(torch.randn(5, 3, 16, 16))
        assert out.shape == (5, 7)
        out.sum().backward()
        assert ran == {id(m) for m in net.path_modules(arch)}
        op = dict(zip(EDGES, arch.ops))
        node2_live = op[(3, 2)] != "none"
        node1_live = op[(3, 1)] != "none" or (node2_live and op[(2, 1)] != "none")
        node_live = {1: node1_live, 2: node2_live, 3: True}
        for (j, i), name in op.items():
            runs = name != "none" and node_live[j]
            module = lambda cell: cell.edges[EDGES.index((j, i))][NB201_OPS.index(name)]  # noqa: E731
            cells = [c for c in net.layers if isinstance(c, Nb201Cell)]
            assert all((id(module(c)) in ran) == runs for c in cells)
        for cell in (c for c in net.layers if isinstance(c, Nb201Cell)):
            for e, edge in enumerate(cell.edges):
                for k, op in enumerate(edge):
                    if k != arch.indices[e]:
                        assert all(p.grad is None for p in op.parameters())


def test_dead_edges_are_skipped_and_change_nothing():
    torch.manual_seed(0)
    net = Nb201Supernet(channels=4, cells_per_stage=1, num_classes=3)
    x = torch.randn(6, 3, 8, 8)
    # node 2 only feeds 3<-2, which is none: edges into node 2 are dead
    arch = Arch.parse("|nor_conv_3x3~0|+|nor_conv_1x1~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|none~2|")
    assert live_edges(arch.indices, NB201_OPS.index("none")) == (True, False, False, True, True, False)
    net.set_arch(arch)
    pruned = net(x)
    full = net.stem(x)
    for layer in net.layers:  # reference: every non-none edge computed
        if isinstance(layer, Nb201Cell):
            nodes = [full]
            for j in range(1, 4):
                terms = [layer.edges[e][k](nodes[i]) for e, ((jj, i), k) in enumerate(zip(EDGES, arch.indices))
                         if jj == j and NB201_OPS[k] != "none"]
                nodes.append(sum(terms) if terms else torch.zeros_like(full))
            full = nodes[-1]
        else:
            full = layer(full)
    assert torch.allclose(pruned, net.classifier(net.head(full)), atol=1e-6)


def test_all_none_cell_still_gives_logits():
    net = Nb201Supernet(channels=4, cells_per_stage=1, num_classes=3)
    net.set_arch(Arch(("none",) * 6))
    assert net(torch.randn(4, 3, 8, 8)).shape == (4, 3)


def test_darts_on_nb201_mixes_all_ops_and_derives_an_arch():
    torch.manual_seed(0)
    net = Nb201DartsNetwork(channels=4, cells_per_stage=1, num_classes=5)
    assert net(torch.randn(4, 3, 8, 8)).shape == (4, 5)
    assert {id(p) for p in net.arch_parameters()}.isdisjoint(id(p) for p in net.weight_parameters())
    with torch.no_grad():
        net.alpha.zero_()
        net.alpha[:, NB201_OPS.index("nor_conv_3x3")] = 1.0
    assert net.derive() == Arch(("nor_conv_3x3",) * 6)
