"""DARTS: genotypes, search/eval networks, first- and second-order architecture steps, retraining."""

import json
import re

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from asp_tune.config import TrainConfig
from asp_tune.datasets import load_dataset
from asp_tune.errors import ConfigError
from nas.darts import DartsTrainer, unrolled_hypergradient
from nas.darts_space import DartsEvalNetwork, DartsSearchNetwork, derive_genotype
from nas.genotypes import KNOWN_GENOTYPES, NUM_EDGES, PRIMITIVES, STEPS, Genotype
from nas.retrain import RetrainTrainer
from nas.settings import RetrainSettings


def _check_genotype_cells(g: Genotype) -> None:
    for edges in (g.normal, g.reduce):
        assert len(edges) == 2 * STEPS
        for node in range(STEPS):
            (op_a, a), (op_b, b) = edges[2 * node], edges[2 * node + 1]
            assert a != b and max(a, b) < node + 2
            assert "none" not in (op_a, op_b)


@pytest.mark.parametrize("seed", range(5))
def test_genotype_derivation_never_picks_none(seed):
    g = torch.Generator().manual_seed(seed)
    normal = torch.randn(NUM_EDGES, len(PRIMITIVES), generator=g)
    reduce = torch.randn(NUM_EDGES, len(PRIMITIVES), generator=g)
    normal[:, PRIMITIVES.index("none")] = 10.0  # none dominates every edge
    _check_genotype_cells(derive_genotype(normal, reduce))


def test_derivation_follows_the_strongest_non_none_edges():
    alphas = torch.zeros(NUM_EDGES, len(PRIMITIVES))
    # node 0 (edges 0, 1): only input 1 has a strong op; node 3 (edges 9..13): inputs 4 and 2 are strong
    alphas[1, PRIMITIVES.index("sep_conv_5x5")] = 3.0
    alphas[13, PRIMITIVES.index("dil_conv_3x3")] = 2.0
    alphas[11, PRIMITIVES.index("max_pool_3x3")] = 1.5
    g = derive_genotype(alphas, alphas)
    assert ("sep_conv_5x5", 1) in g.normal[:2]
    assert set(g.normal[6:]) == {("max_pool_3x3", 2), ("dil_conv_3x3", 4)}


def test_genotype_round_trips_through_repr_json_and_files(tmp_path):
    g = KNOWN_GENOTYPES["darts_v2"]
    assert Genotype.parse(str(g)) == g
    assert Genotype.parse(json.dumps(g.to_dict())) == g
    summary = tmp_path / "summary.json"
    summary.write_text(json.dumps({"space": "darts", "genotype": g.to_dict()}))
    assert Genotype.parse(str(summary)) == g
    assert Genotype.parse("DARTS_V2") == g
    nb201 = tmp_path / "nb201_summary.json"
    nb201.write_text(json.dumps({"space": "nb201", "arch": "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|",
                                 "runs": [{"x": 1}] * 500}))
    with pytest.raises(ConfigError, match=r"invalid genotype='the summary of a search of the nb201 space .*': "
                                          r"allowed a DARTS-space genotype") as raised:
        Genotype.parse(str(nb201))
    assert len(str(raised.value)) < 400
    assert Genotype.parse(str(tmp_path)) == g  # the run folder names its summary
    assert Genotype.parse(f"{summary}#seed=3") == g  # a summary of one seed: no seed in it, any is its own
    other = Genotype.from_dict({**g.to_dict(), "normal": g.to_dict()["reduce"], "reduce": g.to_dict()["normal"]})
    seeds = tmp_path / "seeds"
    seeds.mkdir()
    (seeds / "summary.json").write_text(json.dumps({"space": "darts", "seeds": [1, 2], "arch": [str(g), str(other)],
                                                    "runs": [{"seed": 1, "genotype": g.to_dict()},
                                                             {"seed": 2, "genotype": other.to_dict()}]}))
    assert Genotype.parse(f"{seeds}#seed=2") == other and Genotype.parse(f"{seeds}/summary.json#seed=1") == g
    with pytest.raises(ConfigError, match=r"invalid genotype='.*seeds \(a search of 2 seeds\)': allowed one seed's "
                                          r"genotype: .*seeds#seed=1, .*seeds#seed=2"):
        Genotype.parse(str(seeds))
    with pytest.raises(ConfigError, match=r"invalid genotype='.*seeds#seed=7': allowed one seed's genotype"):
        Genotype.parse(f"{seeds}#seed=7")
    one = tmp_path / "one.json"
    one.write_text(json.dumps({"space": "darts", "seed": 4, "genotype": g.to_dict()}))
    assert Genotype.parse(f"{one}#seed=4") == g
    with pytest.raises(ConfigError, match=r"allowed the seed that search ran: .*one.json#seed=4"):
        Genotype.parse(f"{one}#seed=5")


@pytest.mark.parametrize("text, field", [
    ("sep_conv", "genotype"),
    ('{"normal": [["sep_conv_3x3", 0]], "reduce": []}', "genotype.normal"),
    (str(KNOWN_GENOTYPES["darts_v2"]).replace("'dil_conv_3x3', 2", "'none', 2"), "genotype.normal op"),
    (str(KNOWN_GENOTYPES["darts_v2"]).replace("'sep_conv_3x3', 1), ('sep_conv_3x3', 0)",
                                              "'sep_conv_3x3', 1), ('sep_conv_3x3', 5)"),
     "genotype.normal input of node 3"),
])
def test_bad_genotypes_name_the_field(text, field):
    with pytest.raises(ConfigError) as err:
        Genotype.parse(text)
    assert err.value.field == field


def test_search_and_eval_networks_shapes():
    torch.manual_seed(0)
    search = DartsSearchNetwork(channels=4, layers=3, num_classes=10)
    assert search(torch.randn(2, 3, 16, 16)).shape == (2, 10)
    assert len(search.arch_parameters()) == 2 and search.alphas_normal.shape == (14, 8)
    _check_genotype_cells(search.derive())
    net = DartsEvalNetwork(KNOWN_GENOTYPES["darts_v2"], channels=4, layers=6, num_classes=10, auxiliary=True)
    net.train()
    logits, aux = net(torch.randn(3, 3, 32, 32))
    assert logits.shape == aux.shape == (3, 10)
    net.eval()
    assert net(torch.randn(3, 3, 32, 32)).shape == (3, 10)


def _tiny_data():
    return load_dataset("digits", None, val_fraction=0.2, subset=200, test_subset=60, seed=0)


@pytest.mark.parametrize("order", [1, 2])
def test_architecture_step_changes_alphas_and_only_weight_step_moves_weights(order):
    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=32, ratio=0.5, metric="loss", lr=0.05)
    torch.manual_seed(0)
    data = _tiny_data()
    trainer = DartsTrainer(cfg, data, DartsSearchNetwork(channels=4, layers=3, in_channels=1), order=order,
                           arch_lr=0.01)
    plan = trainer.selector.plan(0)
    weight_batch, arch_batch = next(iter(trainer.epoch_batches(plan)))
    alphas = [a.detach().clone() for a in trainer.model.arch_parameters()]
    weights = [w.detach().clone() for w in trainer.model.weight_parameters()]
    trainer.model.train()
    trainer.arch_step(weight_batch, arch_batch)
    assert all(not torch.equal(a, b) for a, b in zip(alphas, trainer.model.arch_parameters()))
    assert all(torch.equal(w, v) for w, v in zip(weights, trainer.model.weight_parameters()))
    record = trainer.train_epoch()
    assert record["selected"] == plan.count
    assert not all(torch.equal(w, v) for w, v in zip(weights, trainer.model.weight_parameters()))


@pytest.mark.parametrize("order", [1, 2])
def test_the_architecture_step_weighs_its_samples_as_the_weight_step_does(order):
    """The architecture's loss was a plain mean over the samples the proxy picked (up to 1.37x weights left
    out): a gradient tilted towards the hard ones the unbiased weight step corrects for."""
    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=32, ratio=0.5, metric="loss", lr=0.05,
                      label_smoothing=0.1)
    data = _tiny_data()

    def alphas_after_one_step(weights):
        torch.manual_seed(0)
        trainer = DartsTrainer(cfg, data, DartsSearchNetwork(channels=4, layers=3, in_channels=1), order=order,
                               arch_lr=0.01)
        plan = trainer.selector.plan(0)
        weight_batch, arch_batch = next(iter(trainer.epoch_batches(plan)))
        trainer.sample_weights = weights(len(data.train))
        trainer.model.train()
        trainer.arch_step(weight_batch, arch_batch)
        return [a.detach().clone() for a in trainer.model.arch_parameters()]

    ones = alphas_after_one_step(lambda n: torch.ones(n))
    assert all(torch.allclose(a, b) for a, b in zip(ones, alphas_after_one_step(lambda n: None)))
    tilted = alphas_after_one_step(lambda n: torch.linspace(0.2, 2.0, n))
    assert not all(torch.allclose(a, b) for a, b in zip(ones, tilted))


@pytest.mark.parametrize("ratio, metric", [(1.0, "none"), (0.5, "random"), (0.5, "loss"), (0.5, "mixture")])
def test_every_darts_search_keeps_one_weight_and_architecture_partition_and_picks_ratio_of_each(ratio, metric):
    class Recording(DartsTrainer):
        def train_step(self, batch):
            weight_batch, arch_batch = batch
            seen["weight"][-1].append(weight_batch[2].cpu())
            if arch_batch is not None:
                seen["arch"][-1].append(arch_batch[2].cpu())
            return super().train_step(batch)

    seen = {"weight": [], "arch": []}
    cfg = TrainConfig(dataset="digits", epochs=3, batch_size=32, ratio=ratio, metric=metric, lr=0.05, seed=1,
                      first_epoch_full=False)
    trainer = Recording(cfg, _tiny_data(), DartsSearchNetwork(channels=4, layers=3, in_channels=1))
    n = trainer.selector.num_samples
    weight_part, arch_part = (set(p.tolist()) for p in DartsTrainer.partition(n, seed=1))
    assert (len(weight_part), len(arch_part)) == ((n + 1) // 2, n // 2) and weight_part.isdisjoint(arch_part)
    for _ in range(3):
        seen["weight"].append([]), seen["arch"].append([])
        trainer.train_epoch()
        weight, arch = set(torch.cat(seen["weight"][-1]).tolist()), set(torch.cat(seen["arch"][-1]).tolist())
        assert weight <= weight_part and arch <= arch_part  # the same partition every epoch, whatever the ratio
        # ratio of each part, so a strategy never crowds one part's samples into the other's share
        assert (len(weight), len(arch)) == (round(ratio * len(weight_part)), round(ratio * len(arch_part)))
    assert trainer.history[-1]["selected"] == len(weight) + len(arch)
    assert trainer.summary(0.0)["data_passes"] == pytest.approx(3 * ratio, abs=0.01)
    table = trainer.sample_table()  # the parts' selectors read as one over every sample
    assert sum(table["times_selected"]) == trainer.samples_seen and len(table["label"]) == n
    if metric == "loss":  # each part's memory learnt from its own steps' logits
        assert all(table["loss"][i] > 0 for i in weight | arch)


class TinyMixedNet(nn.Module):
    """A smooth (tanh) two-layer network with one DARTS-style mixed op: finite differences are exact
    up to O(h^2) here, unlike ReLU networks whose kinks make them noisy."""

    def __init__(self):
        super().__init__()
        self.inp = nn.Linear(4, 6)
        self.ops = nn.ModuleList([nn.Linear(6, 6), nn.Sequential(nn.Linear(6, 6), nn.Tanh()), nn.Identity()])
        self.head = nn.Linear(6, 3)
        self.alpha = nn.Parameter(torch.randn(3))

    def forward(self, x):
        h = torch.tanh(self.inp(x))
        w = torch.softmax(self.alpha, dim=0)
        return self.head(sum(wk * op(h) for wk, op in zip(w, self.ops)))

    def weight_parameters(self):
        return [p for n, p in self.named_parameters() if n != "alpha"]

    def arch_parameters(self):
        return [self.alpha]


def test_second_order_hypergradient_matches_finite_differences():
    torch.manual_seed(0)
    net = TinyMixedNet().double()
    x_train, y_train = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    x_val, y_val = torch.randn(32, 4, dtype=torch.float64), torch.randint(0, 3, (32,))
    weights, arch = net.weight_parameters(), net.arch_parameters()
    xi, momentum, decay = 0.5, 0.9, 1e-2
    buffers = [0.1 * torch.randn_like(w) for w in weights]

    def train_loss():
        return F.cross_entropy(net(x_train), y_train)

    def val_loss():
        return F.cross_entropy(net(x_val), y_val)

    before = [w.detach().clone() for w in weights]
    hyper = unrolled_hypergradient(weights, arch, train_loss, val_loss, xi=xi, momentum=momentum,
                                   weight_decay=decay, momentum_buffers=buffers, epsilon=1e-5)[0]
    assert all(torch.equal(w, b) for w, b in zip(weights, before))  # weights restored

    def unrolled_objective() -> float:
        grads = torch.autograd.grad(train_loss(), weights)
        with torch.no_grad():
            for w, g, buf in zip(weights, grads, buffers):
                w.sub_(xi * (g + decay * w + momentum * buf))
            value = float(val_loss())
            for w, b in zip(weights, before):
                w.copy_(b)
        return value

    numeric = torch.zeros_like(net.alpha)
    h = 1e-6
    for k in range(3):
        with torch.no_grad():
            net.alpha[k] += h
        plus = unrolled_objective()
        with torch.no_grad():
            net.alpha[k] -= 2 * h
        minus = unrolled_objective()
        with torch.no_grad():
            net.alpha[k] += h
        numeric[k] = (plus - minus) / (2 * h)
    first_order = torch.autograd.grad(val_loss(), arch)[0]
    assert torch.allclose(hyper, numeric, rtol=1e-4, atol=1e-8)
    # the second-order term matters here, so dropping it would fail the check above
    assert (hyper - first_order).norm() > 0.05 * numeric.norm()


def test_retrain_schedules_drop_path_and_adds_the_auxiliary_loss():
    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=64, cutout=3, subset=200, test_subset=60)
    settings = RetrainSettings(KNOWN_GENOTYPES["darts_v2"], cfg, channels=4, layers=3, auxiliary=True,
                               drop_path_prob=0.2)
    trainer = RetrainTrainer(settings.validate())
    first = trainer.train_epoch()
    second = trainer.train_epoch()
    assert first["drop_path_prob"] == 0.0 and second["drop_path_prob"] == pytest.approx(0.1)
    assert trainer.model.auxiliary_head is not None
    assert second["train_aux_loss"] > 0 and "train_aux_loss" not in RetrainTrainer(
        RetrainSettings(KNOWN_GENOTYPES["darts_v2"], cfg, channels=4, layers=3).validate()).train_epoch()


def test_an_auxiliary_weight_without_the_auxiliary_head_is_refused_by_name():
    from asp_tune import ConfigError

    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=64, subset=200, test_subset=60)
    with pytest.raises(ConfigError, match="invalid aux_weight=0.8: allowed its default 0.4 without --auxiliary"):
        RetrainSettings(KNOWN_GENOTYPES["darts_v2"], cfg, channels=4, layers=3, aux_weight=0.8).validate()


def test_retrain_reports_the_main_head_s_loss_as_train_loss_and_the_auxiliary_one_apart():
    cfg = TrainConfig(dataset="digits", epochs=2, batch_size=64, subset=200, test_subset=60)
    trainer = RetrainTrainer(RetrainSettings(KNOWN_GENOTYPES["darts_v2"], cfg, channels=4, layers=3, auxiliary=True,
                                             aux_weight=0.4).validate())
    batch = next(iter(trainer.epoch_batches(trainer.selector.plan(0))))
    x, y, _ = batch
    trainer.model.train()
    with torch.no_grad():
        logits, aux = trainer.model(x)  # batch statistics: the step's forward gives the same outputs
    out = trainer.train_step(batch)
    assert float(out.loss.detach()) == pytest.approx(float(F.cross_entropy(logits, y)), rel=1e-5)
    assert float(trainer.aux_loss_sum) / trainer.aux_samples == pytest.approx(float(F.cross_entropy(aux, y)), rel=1e-5)
    assert trainer.aux_samples == y.shape[0]
    with pytest.raises(ConfigError, match="layers"):
        RetrainSettings(KNOWN_GENOTYPES["darts_v2"], cfg, layers=2).validate()


@pytest.mark.parametrize("text, pattern", [
    ('{"normal": [["sep_conv_3x3", Infinity]], "reduce": []}', "Infinity is not a number"),
    ('{"normal": [["sep_conv_3x3", 1.7]], "reduce": []}', "normal and reduce lists"),
    ("{" * 1 + '"a": ' + "[" * 100000 + "]" * 100000 + "}", "nested a few levels deep|normal and reduce"),
    ('{"genotype": [1, 2]}', "normal and reduce lists"),
])
def test_a_bad_genotype_is_one_named_error(text, pattern):
    from asp_tune.errors import ConfigError

    with pytest.raises(ConfigError, match=pattern) as err:
        Genotype.parse(text)
    assert err.value.field == "genotype"


@pytest.mark.parametrize("concat, message", [
    ("range(0, 1000000)", "normal_concat: a cell has 6 nodes, the range holds more"),
    (f"range(0, {10**30})", "normal_concat: a cell has 6 nodes, the range holds more"),
    ("range(1.5)", "'float' object cannot be interpreted as an integer"),
])
def test_a_genotype_s_concat_range_is_checked_before_it_is_built(concat, message):
    text = str(KNOWN_GENOTYPES["darts_v2"]).replace("normal_concat=range(2, 6)", f"normal_concat={concat}")
    assert concat in text
    with pytest.raises(ConfigError, match=re.escape(message)) as err:
        Genotype.parse(text)  # before building it: range(0, 10**9) as a list took gigabytes
    assert err.value.field == "genotype"


def test_a_ground_truth_table_without_rows_or_with_infinite_accuracy_is_refused(tmp_path):
    from asp_tune.errors import DataError
    from nas.nb201 import GroundTruth

    empty = tmp_path / "empty.csv"
    empty.write_text("arch,cifar10_test\n")
    with pytest.raises(DataError, match="no architectures"):
        GroundTruth.load(empty)
    inf = tmp_path / "inf.csv"
    inf.write_text("arch,cifar10_test\n|nor_conv_3x3~0|+|skip_connect~0|none~1|+|none~0|none~1|none~2|,inf\n")
    with pytest.raises(DataError, match="line 2: accuracy missing or not a finite number"):
        GroundTruth.load(inf)


def test_retrain_with_val_fraction_0_trains_on_the_whole_training_split_and_reports_test_accuracy(tmp_path):
    from asp_tune.trainer import Trainer
    from nas.retrain import run_retrain
    from nas.settings import NasSettings

    cfg = TrainConfig(dataset="digits", epochs=1, batch_size=64, subset=200, test_subset=60, val_fraction=0.0)
    summary, epochs = run_retrain(RetrainSettings(KNOWN_GENOTYPES["darts_v2"], cfg, channels=4, layers=3))
    assert summary["train_split"]["samples"] == 200 and summary["samples_seen"] == 200  # none held out
    assert 0 <= summary["final_test_accuracy"] <= 1 and epochs["val_accuracy"].isna().all()
    assert summary["validation"].startswith("none")
    # where a validation split is needed, 0 is refused by name
    with pytest.raises(ConfigError, match=r"val_fraction=0.0: allowed a fraction in \(0, 1\): a search"):
        NasSettings(train=cfg.replace(model="mlp")).validate()
    with pytest.raises(ConfigError, match=r"val_fraction=0.0: allowed a fraction in \(0, 1\): Trainer validates"):
        Trainer(cfg.replace(model="mlp"))
    with pytest.raises(ConfigError, match="val_fraction"):
        TrainConfig(val_fraction=-0.1).validate()


def test_the_auxiliary_head_leaves_the_main_logits_alone_when_it_follows_the_last_cell():
    torch.manual_seed(0)
    net = DartsEvalNetwork(KNOWN_GENOTYPES["darts_v2"], channels=4, layers=3, auxiliary=True).train()
    assert net.aux_after == len(net.cells) - 1  # the auxiliary head reads the last cell's output
    x = torch.randn(8, 3, 32, 32)
    logits, aux = net(x)
    head, net.auxiliary_head = net.auxiliary_head, None  # the same weights, no auxiliary head
    plain = net(x)
    net.auxiliary_head = head
    assert torch.equal(logits, plain)  # an in-place ReLU there changed them by up to 0.008


def test_darts_parts_draw_apart_and_an_infobatch_epoch_counts_only_what_it_trained():
    """The two parts' selectors shared one seed, so they picked the same places of their parts (188 of 188);
    infobatch could pick more of the architecture part than beside the weight part's batches, and the surplus
    was dropped from training but counted seen and selected."""
    from nas.search import supernet_trainer
    from nas.settings import NasSettings

    def trainer(metric, ratio, seed):
        train = TrainConfig(dataset="digits", epochs=3, batch_size=32, ratio=ratio, metric=metric, lr=0.05,
                            subset=600, test_subset=40, val_fraction=0.25, seed=seed, first_epoch_full=False)
        t = supernet_trainer(NasSettings(space="nb201", searcher="darts", train=train, channels=4, cells=1).validate())
        t.validate_each_epoch = False
        return t

    sel = trainer("random", 0.5, 3).selector
    a, b = (set(s.plan(0).indices.tolist()) for s in sel.selectors)
    assert len(a) == len(b) > 100 and len(a & b) < 0.75 * len(a)  # about half by chance; all of them before
    for seed in range(4):
        t = trainer("infobatch", 1.0, seed)
        trained = []
        original = t.epoch_batches

        def spy(plan):
            in_arch = t.selector.part_of[plan.indices] == 1
            assert int(in_arch.sum()) <= int((~in_arch).sum())  # never more architecture picks than weight ones
            trained.append(plan.count)
            return original(plan)

        t.epoch_batches = spy
        while not t.done:
            t.train_epoch()
        assert t.samples_seen == sum(trained) == int(t.selector.times_selected.sum())
