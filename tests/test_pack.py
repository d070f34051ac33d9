"""A pack trains configurations of one network at once; each member follows its trajectory alone."""

from __future__ import annotations

import copy
import dataclasses
import math

import pytest
import torch
from torch import nn

from asp_tune.build import build_trainer
from asp_tune.config import TrainConfig
from asp_tune.trainer import Trainer
from asp_tune.pack import BYPASSED, CannotFuse, Pack, StackedOptimizer, choose_pack_size, group_into_packs, pack_key

MLP = TrainConfig(dataset="digits", model="mlp", epochs=3, subset=300, batch_size=32, ratio=0.5, metric="loss",
                  lr=0.05, model_args={"hidden": 32})
#: the members' own hyper-parameters: learning rate, weight decay, momentum and Nesterov, label smoothing, schedule
VARIANTS = [{}, {"lr": 0.2, "momentum": 0.0, "weight_decay": 0.0},
            {"lr": 0.01, "nesterov": True, "weight_decay": 1e-3, "label_smoothing": 0.1},
            {"lr": 0.1, "lr_schedule": "multistep", "milestones": (0.3,)}]


def configs(base: TrainConfig, variants: list[dict]) -> list[TrainConfig]:
    return [dataclasses.replace(base, **v) for v in variants]


def alone(config: TrainConfig, epochs: int, model=None) -> tuple[list[dict], object]:
    trainer = build_trainer(config, model=model)
    return [trainer.train_epoch() for _ in range(epochs)], trainer


def packed(members: list[TrainConfig], epochs: int, model=None):
    data = build_trainer(members[0], model=model).data
    trainers = [build_trainer(c, data=data, model=model) for c in members]
    pack = Pack(trainers)
    records = {t: [] for t in trainers}
    for _ in range(epochs):
        for trainer, record in pack.train_epoch().items():
            records[trainer].append(record)
    return [records[t] for t in trainers], trainers, pack


def assert_same_run(a: list[dict], b: list[dict], tol: float) -> None:
    assert len(a) == len(b)
    for x, y in zip(a, b):
        assert x["lr"] == y["lr"] and x["selected"] == y["selected"]
        for key in ("train_loss", "val_loss", "val_score", "train_accuracy"):
            if key not in x and key not in y:  # a regression run reports no accuracy
                continue
            assert math.isclose(x[key], y[key], rel_tol=tol, abs_tol=tol), (key, x[key], y[key])


@pytest.mark.parametrize("kind,variants", [
    ("sgd", [{"lr": 0.05, "weight_decay": 5e-4}, {"lr": 0.1, "momentum": 0.0, "weight_decay": 0.0},
             {"lr": 0.01, "momentum": 0.8, "nesterov": True, "weight_decay": 1e-3}]),
    ("adam", [{"lr": 1e-3}, {"lr": 3e-3, "betas": (0.8, 0.99), "weight_decay": 0.0}]),
    ("adamw", [{"lr": 1e-3}, {"lr": 3e-3, "betas": (0.8, 0.99), "weight_decay": 0.1}]),
])
def test_the_stacked_optimiser_takes_torch_optim_s_steps_bit_for_bit(kind, variants):
    torch.manual_seed(0)
    members = [TrainConfig(optimizer=kind, **v) for v in variants]
    start = torch.randn(len(members), 16, 8) * 0.1
    references = [nn.Parameter(start[k].clone()) for k in range(len(members))]
    from asp_tune.trainer import make_optimizer

    optimisers = [make_optimizer(c, [p]) for c, p in zip(members, references)]
    stacked = {"w": start.clone().requires_grad_()}
    optimizer = StackedOptimizer(members, stacked)
    for _ in range(5):
        grad = torch.randn(len(members), 16, 8) * 1e-2
        for k, opt in enumerate(optimisers):
            references[k].grad = grad[k].clone()
            opt.step()
        stacked["w"].grad = grad.clone()
        optimizer.step(stacked)
    for k, ref in enumerate(references):
        assert torch.equal(ref.detach(), stacked["w"][k].detach())
        theirs, ours = optimisers[k].state[ref], optimizer.member_state(k, "w")
        assert set(theirs) <= set(ours) | {"step"}
        for key, value in theirs.items():
            assert torch.equal(torch.as_tensor(value).float(), torch.as_tensor(ours[key]).float()), key


def test_the_stacked_optimiser_copies_its_members_values_to_the_device_once_while_they_stay(monkeypatch):
    import asp_tune.pack as pack_module

    copies = []

    def counted(values, dtype, device):
        copies.append(tuple(values))
        return torch.tensor(values, dtype=dtype, device=device)

    monkeypatch.setattr(pack_module, "host_values", counted)
    members = [TrainConfig(lr=0.05, momentum=0.9, weight_decay=5e-4, nesterov=True),
               TrainConfig(lr=0.1, momentum=0.5, weight_decay=0.0)]
    params = {"w": torch.zeros(2, 4, 3, requires_grad=True), "b": torch.zeros(2, 4, requires_grad=True)}
    optimizer = StackedOptimizer(members, params)
    for _ in range(6):
        for p in params.values():
            p.grad = torch.ones_like(p)
        optimizer.step(params)
    # learning rate, weight decay, momentum and the Nesterov choice, each for the two shapes: once, not every step
    assert len(copies) == 8 and len(set(copies)) == 4, copies
    optimizer.lr = [0.01, 0.1]  # a schedule's new epoch: the new learning rates are copied once more
    optimizer.step(params)
    assert len(copies) == 10


def test_an_mlp_pack_follows_each_member_s_run_alone():
    members = configs(MLP, VARIANTS)
    runs, trainers, pack = packed(members, 3)
    assert pack.net.how == "batched layers"  # a chain of Linear, BatchNorm1d and ReLU layers
    for config, run in zip(members, runs):
        assert_same_run(alone(config, 3)[0], run, 1e-5)
    assert {r["lr"] for r in runs[3]} != {r["lr"] for r in runs[0]}  # the schedules did differ


def plain_mlp(data):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))


@pytest.mark.parametrize("kind", ["adam", "adamw"])
def test_adam_members_follow_their_runs_alone(kind):
    # no bias before a batch norm here: its gradient is zero but for rounding, which Adam scales up to steps of
    # the learning rate's size, so that such a bias drifts apart in a pack and alone (harmless: the norm removes it)
    members = configs(dataclasses.replace(MLP, optimizer=kind, lr=1e-3), [{}, {"lr": 3e-3, "weight_decay": 0.0}])
    runs, _, _ = packed(members, 2, model=plain_mlp)
    for config, run in zip(members, runs):
        assert_same_run(alone(config, 2, model=plain_mlp)[0], run, 1e-5)


class SmallCNN(nn.Module):
    """Convolutions with batch norm and a linear head, for 8x8 digits."""

    def __init__(self):
        super().__init__()
        self.features = nn.Sequential(nn.Conv2d(1, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                                      nn.Conv2d(8, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU())
        self.head = nn.Linear(8, 10)

    def forward(self, x):
        return self.head(self.features(x.view(-1, 1, 8, 8)).mean(dim=(2, 3)))


def cnn(data):
    return SmallCNN()


def test_a_cnn_with_batch_norm_keeps_each_member_s_running_statistics():
    base = dataclasses.replace(MLP, model_args={}, lr=0.02, epochs=2)
    members = configs(base, [{}, {"lr": 0.05, "weight_decay": 0.0}])
    runs, trainers, pack = packed(members, 2, model=cnn)
    assert pack.net.how == "vmap"  # convolutions: vmap over the network
    pack.sync()
    for config, run, trainer in zip(members, runs, trainers):
        reference_run, reference = alone(config, 2, model=cnn)
        assert_same_run(reference_run, run, 1e-4)
        for (name, ours), (_, theirs) in zip(trainer.model.named_buffers(), reference.model.named_buffers()):
            assert torch.allclose(ours.float(), theirs.float(), atol=1e-4), name
    first, second = (dict(t.model.named_buffers())["features.1.running_mean"] for t in trainers)
    assert not torch.allclose(first, second)  # not one shared set of statistics


class PReLUCNN(SmallCNN):
    def __init__(self):
        super().__init__()
        self.features[5] = nn.PReLU()


def test_under_autocast_a_vmap_pack_computes_every_layer_in_the_precision_it_has_alone(cpu_autocast):
    from asp_tune.pack import precision_differences
    from asp_tune.stacked import StackedNetwork, stack_parameters

    torch.manual_seed(0)
    models = [PReLUCNN().train() for _ in range(3)]
    x = torch.randn(3, 16, 64)
    assert precision_differences(models[0], x[0], amp=True) == []
    params, buffers = stack_parameters([copy.deepcopy(m) for m in models])
    net = StackedNetwork(models[0]).train()
    assert net.how == "vmap"
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = net(params, buffers, x)[0]
        for k, model in enumerate(models):
            theirs = model(x[k])
            assert out.dtype == theirs.dtype == torch.bfloat16
            assert torch.allclose(out[k].float(), theirs.float(), atol=2e-2, rtol=2e-2)
        for k, model in enumerate(models):  # batch norm's statistics kept in float32, as alone
            assert torch.allclose(buffers["features.1.running_mean"][k], model.features[1].running_mean, atol=1e-3)
            assert buffers["features.1.running_mean"].dtype == torch.float32


def test_a_cnn_pack_under_autocast_follows_its_members_runs_alone(cpu_autocast):
    base = dataclasses.replace(MLP, model_args={}, lr=0.02, epochs=1)
    members = configs(base, [{}, {"lr": 0.05, "weight_decay": 0.0}])
    runs, _, pack = packed(members, 1, model=cnn)
    assert pack.net.how == "vmap"
    for config, run in zip(members, runs):
        reference = alone(config, 1, model=cnn)[0]
        assert_same_run(reference, run, 2e-2)  # bf16: batched kernels round differently


class NormedCNN(nn.Module):
    """A layer norm of a convolution's bf16 output: under vmap it computes in its float32 weights' precision."""

    def __init__(self, norm_in: str = "both"):
        super().__init__()
        self.norm_in = norm_in
        self.conv, self.norm, self.head = nn.Conv2d(1, 4, 3, padding=1), nn.LayerNorm(8), nn.Linear(256, 10)

    def forward(self, x):
        x = self.conv(x.view(-1, 1, 8, 8))
        if self.norm_in == "both" or (self.norm_in == "evaluation") != self.training:
            x = self.norm(x)
        return self.head(x.flatten(1))


class AttendingMLP(nn.Module):
    """Attention over 8 rows of 8 pixels: ``multi_head_attention_forward``'s own calls are seen by no mode."""

    def __init__(self):
        super().__init__()
        self.attend, self.head = nn.MultiheadAttention(8, 2, batch_first=True), nn.Linear(64, 10)

    def forward(self, x):
        rows = x.view(-1, 8, 8)
        return self.head(self.attend(rows, rows, rows, need_weights=False)[0].flatten(1))


class HeadInFloat32(SmallCNN):
    """Its head runs outside autocast, in float32, as its author asked."""

    def forward(self, x):
        features = self.features(x.view(-1, 1, 8, 8)).mean(dim=(2, 3))
        with torch.autocast("cpu", enabled=False):
            return self.head(features.float())


def two_trainers(make, amp: bool = True) -> list[Trainer]:
    base = dataclasses.replace(MLP, model_args={}, epochs=1, amp=amp)
    data = build_trainer(base, model=lambda data: make()).data
    return [build_trainer(c, data=data, model=lambda data: make()) for c in configs(base, [{}, {"lr": 0.1}])]


@pytest.mark.filterwarnings("ignore:There is a performance drop")  # vmap's fallback for attention
@pytest.mark.parametrize("make,refusal", [
    (NormedCNN, r"layer_norm in float32, alone in bfloat16 \(and 3 more\)$"),
    (lambda: NormedCNN("evaluation"), r"layer_norm in float32, alone in bfloat16 \(evaluating\) \(and 1 more\)$"),
    (AttendingMLP, r"multi_head_attention_forward in float32, alone in bfloat16 \(and \d+ more\)$")])
def test_a_network_a_pack_would_run_in_another_precision_is_refused_by_name(cpu_autocast, make, refusal):
    with pytest.raises(CannotFuse, match="under autocast a pack would compute " + refusal):
        Pack(two_trainers(make))
    assert Pack(two_trainers(make, amp=False)).net.how == "vmap"  # in float32 the pack runs it


def test_a_forward_that_turns_autocast_off_computes_in_float32_in_a_pack_too(cpu_autocast):
    from asp_tune.pack import precision_differences

    assert precision_differences(HeadInFloat32(), torch.randn(16, 64), amp=True) == []
    runs, trainers, _ = packed(configs(dataclasses.replace(MLP, model_args={}, epochs=1), [{}, {"lr": 0.1}]), 1,
                               model=lambda data: HeadInFloat32())
    assert all(run[0]["train_loss"] > 0 for run in runs)


def test_resnet8_members_agree_with_their_runs_alone_up_to_batched_convolutions_rounding():
    # convolutions batched over configurations sum in another order (about 1e-6 in the first logits): the
    # runs then drift apart as far as training amplifies it; at a small learning rate they stay close
    base = dataclasses.replace(MLP, model="resnet8", model_args={}, lr=0.01, epochs=2, subset=200)
    members = configs(base, [{}, {"lr": 0.02, "weight_decay": 0.0}])
    runs, _, _ = packed(members, 1)
    for config, run in zip(members, runs):
        reference = alone(config, 1)[0][0]
        assert math.isclose(reference["train_loss"], run[0]["train_loss"], rel_tol=1e-3)
        assert abs(reference["val_score"] - run[0]["val_score"]) <= 2 / 20


def test_a_diverging_member_leaves_and_the_others_finish_as_without_it():
    base = dataclasses.replace(MLP, epochs=2)
    healthy = configs(base, VARIANTS[:2])
    with_bad = healthy[:1] + [dataclasses.replace(base, lr=1e6, momentum=0.0, weight_decay=0.0)] + healthy[1:]
    runs, trainers, pack = packed(with_bad, 2)
    bad = trainers[1]
    assert bad in pack.failed and "lower the learning rate" in str(pack.failed[bad])
    assert bad not in pack.trainers and len(pack.trainers) == 2
    for config, run in zip(healthy, (runs[0], runs[2])):
        assert_same_run(alone(config, 2)[0], run, 1e-5)


def test_a_member_s_optimiser_state_comes_back_in_its_parameter_s_layout():
    """The pack keeps Linear weights laid out for its batched products; what it writes back into a trainer's
    torch.optim state is laid out as that trainer's own parameter (torch.optim's fast paths want them alike)."""
    _, trainers, pack = packed(configs(MLP, VARIANTS[:2]), 1)
    pack.sync()
    assert not pack.params["net.1.weight"].is_contiguous()
    for trainer in trainers:
        for param in trainer.model.parameters():
            buffer = trainer.optimizer.state[param]["momentum_buffer"]
            assert buffer.stride() == param.stride() and buffer.is_contiguous()


def test_removed_members_write_back_their_state_and_the_rest_go_on():
    members = configs(MLP, VARIANTS[:3])
    data = build_trainer(members[0]).data
    trainers = [build_trainer(c, data=data) for c in members]
    pack = Pack(trainers)
    pack.train_epoch()
    pack.remove([trainers[1]])  # stopped at a rung
    assert pack.trainers == [trainers[0], trainers[2]]
    later = pack.train_epoch()
    assert set(later) == {trainers[0], trainers[2]}
    reference_run, reference = alone(members[1], 1)
    assert trainers[1].epoch == 1
    for ours, theirs in zip(trainers[1].model.parameters(), reference.model.parameters()):
        assert torch.allclose(ours, theirs, atol=1e-6)
    assert_same_run(alone(members[2], 2)[0], [trainers[2].history[0], later[trainers[2]]], 1e-5)


def test_a_member_that_leaves_and_a_closed_pack_hold_no_stacked_memory_table():
    """The members' memories are rows of one table while they train together; one that leaves (or every member,
    when the pack closes) gets a table of its own with the same values, so that it does not keep the pack's whole
    table alive, and updates it alone."""
    members = configs(MLP, VARIANTS[:3])
    data = build_trainer(members[0]).data
    trainers = [build_trainer(c, data=data) for c in members]
    pack = Pack(trainers)
    pack.train_epoch()
    memories = [t.selector.memory for t in trainers]
    table = pack.memories.latest
    assert all(m._latest.untyped_storage().data_ptr() == table.untyped_storage().data_ptr() for m in memories)
    before = memories[1]["loss"].clone()
    pack.remove([trainers[1]])
    assert memories[1]._latest.untyped_storage().nbytes() == memories[1]._latest.nbytes  # its own, not the stack's
    assert torch.equal(memories[1]["loss"], before) and memories[1]._stack is None
    trainers[1].train_epoch()  # alone, on its own table: the stack's row stays as it was
    assert not torch.equal(memories[1]["loss"], before) and torch.equal(table[1, :, 0], before)
    pack.train_epoch()
    kept = [memories[0]["loss"].clone(), memories[2]["loss"].clone()]
    pack.close()
    assert all(m._stack is None and m._latest.untyped_storage().nbytes() == m._latest.nbytes for m in memories)
    assert torch.equal(memories[0]["loss"], kept[0]) and torch.equal(memories[2]["loss"], kept[1])


def test_a_member_s_checkpoint_resumes_alone_or_in_a_new_pack():
    members = configs(MLP, VARIANTS[:2])
    _, trainers, pack = packed(members, 2)
    pack.sync()
    states = [t.state_dict() for t in trainers]
    reference = alone(members[0], 3)[0]
    resumed = build_trainer(members[0])  # alone, from the pack's checkpoint
    resumed.load_state_dict(copy.deepcopy(states[0]))  # as read from a file
    assert_same_run(reference[2:], [resumed.train_epoch()], 1e-5)
    data = resumed.data
    again = [build_trainer(c, data=data) for c in members]  # a new pack, from both checkpoints
    for trainer, state in zip(again, states):
        trainer.load_state_dict(copy.deepcopy(state))
    third = Pack(again).train_epoch()
    assert_same_run(reference[2:], [third[again[0]]], 1e-5)
    assert_same_run(alone(members[1], 3)[0][2:], [third[again[1]]], 1e-5)


def test_importance_from_feature_norms_is_learnt_per_member():
    members = configs(dataclasses.replace(MLP, metric="gradient", epochs=2), VARIANTS[:2])
    runs, trainers, pack = packed(members, 2)
    assert pack.net.how == "batched layers"  # the trainers' own taps on the output layer are no user hooks
    for config, trainer in zip(members, trainers):
        _, reference = alone(config, 2)
        ours, theirs = trainer.selector.memory, reference.selector.memory
        for column in theirs.columns:
            assert torch.allclose(ours[column], theirs[column], atol=1e-4, equal_nan=True), column


def test_a_regression_pack_learns_each_member_s_importance_from_its_losses(tmp_path, monkeypatch):
    (tmp_path / "pack_reg.py").write_text(
        "import numpy as np\n\ndef linear(seed=0):\n    rng = np.random.default_rng(0)\n"
        "    x = rng.normal(size=(300, 8)).astype(np.float32)\n"
        "    return x, (x @ np.linspace(-1, 1, 8)).astype(np.float32)\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    base = dataclasses.replace(MLP, dataset="pack_reg:linear", subset=None, epochs=2, lr=0.01)
    members = configs(base, VARIANTS[:2])
    runs, trainers, _ = packed(members, 2)
    for config, run, trainer in zip(members, runs, trainers):
        reference_run, reference = alone(config, 2)
        assert_same_run(reference_run, run, 1e-5)
        assert torch.allclose(trainer.selector.memory["loss"], reference.selector.memory["loss"], atol=1e-5)
        assert trainer.selector.memory["loss"].abs().sum() > 0


@pytest.mark.parametrize("storage", ["device", "stream"])
def test_members_with_augmentation_get_their_own_crops_flips_and_cutouts_as_alone(monkeypatch, storage):
    """Stream storage crops and flips in the data set, with torch's global generator: members in one process
    drew from one stream, so a member's scores depended on its pack (0.625 alone, 0.825 in a pack of 3)."""
    from asp_tune.feeding import DeviceFeeder

    made = []
    stacked = DeviceFeeder.stacked_batches
    monkeypatch.setattr(DeviceFeeder, "stacked_batches", lambda *a, **k: made.append(1) or stacked(*a, **k))
    images = dataclasses.replace(MLP, model="resnet8", model_args={}, epochs=2, crop_padding=2, flip_p=0.5, cutout=3,
                                 subset=160, batch_size=32, storage=storage)
    members = configs(images, VARIANTS[:3])
    runs, trainers, _ = packed(members, 2)
    assert len(made) == (2 if storage == "device" else 0)  # on the device each epoch's batches are made at once
    for config, run in zip(members, runs):
        assert_same_run(alone(config, 2)[0], run, 1e-4)
    assert runs[0][1]["train_loss"] != runs[1][1]["train_loss"]


class DataDependent(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer = nn.Linear(64, 10)

    def forward(self, x):
        out = self.layer(x.flatten(1))
        return out if out.sum() > 0 else -out


def test_a_network_that_cannot_be_vectorised_is_refused_by_name():
    members = configs(dataclasses.replace(MLP, epochs=1), VARIANTS[:2])
    data = build_trainer(members[0]).data
    trainers = [build_trainer(c, data=data, model=lambda d: DataDependent()) for c in members]
    with pytest.raises(CannotFuse) as refused:
        Pack(trainers)  # found on copies, before any member drew its epoch
    # said as what it means, not as vmap's request to file an issue with PyTorch
    assert str(refused.value) == ("the network cannot run vectorised over configurations: it branches on its data "
                                  "(data-dependent control flow)")
    assert choose_pack_size("auto", 4, trainers[0]).reason == f"not fused: {refused.value}"
    assert all(t.epoch == 0 and int(t.selector.times_selected.sum()) == 0 for t in trainers)
    pack = Pack(trainers, checked=True)  # said to be checked: its first step names what failed
    with pytest.raises(CannotFuse, match="cannot run vectorised"):
        pack.train_epoch()
    lazy = [build_trainer(c, data=data, model=lambda d: nn.Sequential(nn.Flatten(), nn.LazyLinear(10)))
            for c in members]
    with pytest.raises(CannotFuse, match="lazy"):
        Pack(lazy)


class RunningCentre(nn.Module):
    """Centres its input on a running mean kept as a buffer, replaced (``in_place=False``) or updated in place."""

    def __init__(self, in_place: bool):
        super().__init__()
        self.layer, self.out, self.in_place = nn.Linear(64, 16), nn.Linear(16, 10), in_place
        self.register_buffer("running", torch.zeros(16))

    def forward(self, x):
        h = self.layer(x.flatten(1))
        if self.training and self.in_place:
            self.running.mul_(0.9).add_(0.1 * h.detach().mean(0))
        elif self.training:
            self.running = 0.9 * self.running + 0.1 * h.detach().mean(0)
        return self.out(torch.relu(h - self.running))


def test_a_forward_that_replaces_its_buffer_is_refused_by_name_and_one_that_updates_it_in_place_packs():
    """Replaced, the buffer's new value was lost in a vmap pack (its norm stayed 0), and tracing the chain left
    torch.fx's proxy in it: the pack's trials failed with a TypeError."""
    members = configs(dataclasses.replace(MLP, epochs=2), VARIANTS[:2])
    data = build_trainer(members[0]).data
    replacing = [build_trainer(c, data=data, model=lambda d: RunningCentre(False)) for c in members]
    with pytest.raises(CannotFuse, match=r"its forward replaces running \(self.running = \.\.\.\) where a pack "
                                         r"needs an in-place update \(self.running.mul_"):
        Pack(replacing)
    assert all(type(t.model.running) is torch.Tensor for t in replacing)  # nothing left behind by the checks
    runs, trainers, pack = packed(members, 2, model=lambda d: RunningCentre(True))
    pack.sync()  # the members' weights and buffers written back into their trainers
    for config, run, trainer in zip(members, runs, trainers):
        reference, single = alone(config, 2, model=lambda d: RunningCentre(True))
        assert_same_run(reference, run, 1e-5)
        torch.testing.assert_close(trainer.model.running, single.model.running, atol=1e-5, rtol=1e-5)
        assert trainer.model.running.norm() > 0


def test_a_builder_whose_network_has_lazy_modules_builds_trains_and_packs(tmp_path, monkeypatch):
    """Its parameters' sizes were read before any forward: building failed with torch's ValueError."""
    (tmp_path / "lazy_net.py").write_text("from torch import nn\n\n\ndef net(input_shape, num_classes):\n"
                                          "    return nn.Sequential(nn.Flatten(), nn.LazyLinear(16), nn.ReLU(), "
                                          "nn.Linear(16, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    members = configs(dataclasses.replace(MLP, model="lazy_net:net", model_args={}, epochs=2), VARIANTS[:2])
    runs, trainers, _ = packed(members, 2)
    for config, run in zip(members, runs):
        assert_same_run(alone(config, 2)[0], run, 1e-5)
    assert trainers[0].model[1].weight.shape == (16, 64)


def test_what_a_pack_would_not_run_as_its_members_do_is_refused():
    members = configs(dataclasses.replace(MLP, epochs=1), VARIANTS[:2])
    data = build_trainer(members[0]).data
    hooked = [build_trainer(c, data=data) for c in members]
    for t in hooked:
        next(t.model.parameters()).register_hook(lambda g: g * 0)
    with pytest.raises(CannotFuse, match="gradient hooks"):
        Pack(hooked)

    class OwnSteps(Trainer):
        def optimizer_step(self, loss):
            super().optimizer_step(loss * 2)

    with pytest.raises(CannotFuse, match="OwnSteps overrides Trainer.optimizer_step, which a pack does not call"):
        Pack([OwnSteps(c, data=data) for c in members])

    def weight_normed(d):
        with pytest.warns(FutureWarning):
            return nn.Sequential(nn.Flatten(), torch.nn.utils.weight_norm(nn.Linear(64, 10)))

    with pytest.raises(CannotFuse):
        Pack([build_trainer(c, data=data, model=weight_normed) for c in members])


class Frozen(Trainer):
    """A loss of its own (here: learn nothing), which a pack would not compute."""

    def training_loss(self, logits, y, idx):
        return super().training_loss(logits, y, idx) * 0.0


def _calls_trainer_s(name: str):
    def method(self, *args, **kwargs):
        return getattr(Trainer, name)(self, *args, **kwargs)
    return method


def test_a_trainer_class_whose_overrides_a_pack_would_not_call_is_refused_by_the_method():
    """A pack computed Frozen's members' losses itself: they trained (train_loss 2.17, val 0.40) where alone they
    learn nothing (loss 0.0, val 0.075)."""
    members = configs(dataclasses.replace(MLP, epochs=1), VARIANTS[:2])
    data = build_trainer(members[0]).data
    with pytest.raises(CannotFuse) as refused:
        Pack([Frozen(c, data=data) for c in members])
    assert str(refused.value) == "Frozen overrides Trainer.training_loss, which a pack does not call"
    for name in BYPASSED:
        own = type(f"Own_{name}", (Trainer,), {name: _calls_trainer_s(name)})
        with pytest.raises(CannotFuse, match=f"Own_{name} overrides Trainer.{name}, which a pack does not call"):
            Pack([own(c, data=data) for c in members])
    with pytest.raises(CannotFuse, match=r"members are trainers of different classes \(Trainer, Frozen\)"):
        Pack([Trainer(members[0], data=data), Frozen(members[1], data=data)])


class Noted(Trainer):
    """Ends its epochs its own way: a pack ends its members' epochs through ``close_epoch``."""

    def close_epoch(self, *args, **kwargs):
        return {**super().close_epoch(*args, **kwargs), "noted": True}


def test_a_trainer_class_that_overrides_what_a_pack_calls_packs():
    members = configs(dataclasses.replace(MLP, epochs=1), VARIANTS[:2])
    data = build_trainer(members[0]).data
    trainers = [Noted(c, data=data) for c in members]
    records = Pack(trainers).train_epoch()
    assert all(records[t]["noted"] for t in trainers)


class EvalOnlyData(DataDependent):
    """Trains vectorised, but its evaluation reads a value out of the batch."""

    def forward(self, x):
        out = self.layer(x.flatten(1))
        return out if self.training else out.clamp(max=float(out.abs().max()))


def test_a_network_that_cannot_evaluate_vectorised_is_refused_before_training():
    members = configs(dataclasses.replace(MLP, epochs=1), VARIANTS[:2])
    data = build_trainer(members[0]).data
    with pytest.raises(CannotFuse, match="cannot run vectorised"):
        Pack([build_trainer(c, data=data, model=lambda d: EvalOnlyData()) for c in members])


def test_each_member_clips_its_gradients_as_its_trainer_alone_does():
    members = configs(dataclasses.replace(MLP, epochs=2, lr=0.5), [{}, {"lr": 0.2}, {}])
    clips = [0.05, 0.0, 1.0]
    data = build_trainer(members[0]).data
    trainers = [Trainer(c, data=data, grad_clip=g) for c, g in zip(members, clips)]
    pack = Pack(trainers)
    runs = {t: [] for t in trainers}
    for _ in range(2):
        for trainer, record in pack.train_epoch().items():
            runs[trainer].append(record)
    for config, clip, trainer in zip(members, clips, trainers):
        reference = Trainer(config, data=data, grad_clip=clip)
        assert_same_run([reference.train_epoch() for _ in range(2)], runs[trainer], 1e-5)
    unclipped = Trainer(members[0], data=data)
    assert abs(unclipped.train_epoch()["train_loss"] - runs[trainers[0]][0]["train_loss"]) > 1e-3  # it did clip


def test_a_member_that_does_not_clip_keeps_its_gradients_when_a_clipping_member_shares_its_pack():
    """Its norm overflowing to inf made inf / inf = NaN of its gradients; alone it is not clipped at all."""
    members = configs(dataclasses.replace(MLP, epochs=1), [{}, {"lr": 0.2}])
    data = build_trainer(members[0]).data
    pack = Pack([Trainer(c, data=data, grad_clip=g) for c, g in zip(members, (0.0, 1.0))])
    for p in pack.params.values():
        p.grad = torch.stack([torch.full_like(p[0], 1e20), torch.full_like(p[1], 1e-3)])  # member 0's norm: inf
    before = {n: p.grad.clone() for n, p in pack.params.items()}
    pack._clip_gradients()  # noqa: SLF001
    for name, p in pack.params.items():
        assert torch.equal(p.grad[0], before[name][0]), name  # exactly as it was: its scale is 1
        assert torch.equal(p.grad[1], before[name][1])  # the clipping member's norm is below its limit


def test_adam_s_state_is_allocated_once_not_at_every_step(monkeypatch):
    members = [TrainConfig(optimizer="adam", lr=1e-3), TrainConfig(optimizer="adam", lr=3e-3)]
    params = {"w": torch.zeros(2, 4, 3, requires_grad=True)}
    optimizer = StackedOptimizer(members, params)
    params["w"].grad = torch.ones_like(params["w"])
    optimizer.step(params)
    made, zeros_like = [], torch.zeros_like
    monkeypatch.setattr(torch, "zeros_like", lambda *a, **k: made.append(1) or zeros_like(*a, **k))
    for _ in range(3):
        optimizer.step(params)
    assert made == [] and optimizer.steps == [4, 4]


def test_auto_times_the_pack_at_the_run_s_batch_size_and_packs_only_where_it_wins_there(monkeypatch):
    """At 32 rows a pack saves per-call overhead; at a large batch its batched products may lose to K plain ones."""
    import asp_tune.pack as pack_module

    timed = []

    def measured(model, inputs, members, *args, **kwargs):  # faster on small batches, slower on the run's
        timed.append(inputs.shape[0])
        return (1.0, 0.5) if inputs.shape[0] <= 32 else (1.0, 1.3)

    monkeypatch.setattr(pack_module, "measure_fusion", measured)
    trainer = build_trainer(dataclasses.replace(MLP, batch_size=128))
    choice = choose_pack_size("auto", 8, trainer)
    assert timed == [128] and choice.size == 1
    assert choice.reason.startswith("not fused: a pack's step took 1300.0 ms against 1000.0 ms one after another "
                                    "(timed with 4 configurations on the run's batches of 128, on cpu; packs need 1.15x)")
    small = build_trainer(MLP)  # batches of 32: there the pack wins
    assert choose_pack_size("auto", 8, small).size == 8
    monkeypatch.setattr(pack_module, "measure_fusion", lambda *a, **k: (1.0, 0.93))  # 1.08x: within the noise
    assert choose_pack_size("auto", 8, small).size == 1


def test_auto_times_the_largest_kind_of_a_searched_width_too_and_packs_only_where_both_win(monkeypatch):
    """Timed on the first kind alone (hidden 16), auto chose packs that then trained a width search 0.76x."""
    import asp_tune.pack as pack_module

    timed = []

    def measured(model, inputs, members, *args, **kwargs):  # a narrow network wins fused, a wide one loses
        width = next(m for m in model.modules() if isinstance(m, nn.Linear)).out_features
        timed.append((width, kwargs["config"].optimizer))
        return (1.0, 0.5) if width <= 32 else (1.0, 1.2)

    monkeypatch.setattr(pack_module, "measure_fusion", measured)
    narrow = dataclasses.replace(MLP, model_args={"hidden": 16}, optimizer="adam", lr=1e-3)
    wide = dataclasses.replace(narrow, model_args={"hidden": 256})
    trainer = build_trainer(narrow)
    choice = choose_pack_size("auto", 8, trainer, others=[wide])
    assert timed == [(16, "adam"), (256, "adam")] and choice.size == 1  # with the runs' own optimiser
    assert choice.reason.startswith("not fused: for the largest kind of configuration (mlp {'hidden': 256} at batch "
                                    "size 32) a pack's step took 1200.0 ms against 1000.0 ms one after another")
    timed.clear()
    assert choose_pack_size("auto", 8, trainer, others=[narrow]).size == 8 and timed == [(16, "adam")]


def test_the_timing_steps_with_the_runs_optimiser_alone_and_stacked(monkeypatch):
    from asp_tune.pack import measure_fusion

    steps = []
    real = StackedOptimizer.step
    monkeypatch.setattr(StackedOptimizer, "step", lambda self, params: steps.append(len(self.lr)) or real(self, params))
    model = build_trainer(MLP).model
    x = torch.randn(8, 64)
    measure_fusion(model, x, 3, steps=1, rounds=1, config=dataclasses.replace(MLP, optimizer="adamw", lr=1e-3))
    assert steps == [3, 3]  # the warm-up and the timed step, all 3 members stepped by the stacked optimiser
    steps.clear()
    measure_fusion(model, x, 3, steps=1, rounds=1)  # no config: a plain update, as bench/pack_step.py times
    assert steps == []


@pytest.mark.parametrize("size", [0, -3, 2.7, True, "abc", " 4", "+3", "1_0", "\u0663"])
def test_a_pack_size_that_is_not_a_whole_number_of_at_least_one_is_refused_by_name(size):
    """0, -3 and True were one configuration at a time, 2.7 packs of 2, '1_0' packs of 10, 'abc' a ValueError."""
    from asp_tune import ConfigError
    from asp_tune.tune.fused import successive_halving

    with pytest.raises(ConfigError, match="invalid pack_size=.*allowed a whole number of configurations per pack"):
        choose_pack_size(size, 4, None)
    with pytest.raises(ConfigError, match="invalid pack_size="):
        successive_halving([MLP], [1], pack_size=size)


def test_configurations_that_differ_in_their_network_or_batches_go_to_different_packs():
    members = configs(MLP, [{}, {"lr": 0.2}, {"model_args": {"hidden": 64}}, {"batch_size": 16}, {"lr": 0.3}])
    assert group_into_packs(members, 2) == [[0, 1], [4], [2], [3]]
    assert pack_key(members[0]) == pack_key(members[1]) != pack_key(members[2])
    with pytest.raises(CannotFuse, match="differ"):
        data = build_trainer(members[0]).data
        Pack([build_trainer(members[0], data=data), build_trainer(members[3], data=data)])


class _OwnCrossEntropy:
    """A task of one's own whose loss hands its label smoothing to ``F.cross_entropy``, which takes a number only."""

    name, score_name, has_classes = "own cross-entropy", "accuracy", True

    def __getattr__(self, name):  # everything else as the built-in classification
        from asp_tune.tasks import CLASSIFICATION

        return getattr(CLASSIFICATION, name)

    def loss(self, outputs, targets, label_smoothing=0.0):
        return nn.functional.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing, reduction="none")


OWN_TASK = _OwnCrossEntropy()


def test_a_task_whose_loss_takes_a_number_packs_when_the_members_share_their_label_smoothing():
    members = configs(dataclasses.replace(MLP, task="test_pack:OWN_TASK", label_smoothing=0.1),
                      [{}, {"lr": 0.2, "momentum": 0.0}])
    runs, _, pack = packed(members, 2)
    assert pack.members and not pack.failed
    for config, run in zip(members, runs):
        assert_same_run(alone(config, 2)[0], run, 1e-5)


def test_a_task_whose_loss_takes_a_number_packs_members_that_smooth_differently():
    """Its loss is called once per smoothing value (it raised a TypeError that failed a whole Optuna study)."""
    members = configs(dataclasses.replace(MLP, task="test_pack:OWN_TASK"),
                      [{"label_smoothing": 0.1}, {"lr": 0.2, "momentum": 0.0}, {"lr": 0.1, "label_smoothing": 0.2},
                       {"lr": 0.01, "label_smoothing": 0.1}])
    runs, _, pack = packed(members, 2)
    assert len(pack.members) == 4 and not pack.failed
    for config, run in zip(members, runs):
        assert_same_run(alone(config, 2)[0], run, 1e-5)


class _SumsOneByOne(_OwnCrossEntropy):
    """A task whose sums read a value out of the batch: they cannot run vectorised over configurations."""

    def batch_sums(self, outputs, targets):
        from asp_tune.tasks import CLASSIFICATION

        int(targets.max())
        return CLASSIFICATION.batch_sums(outputs, targets)


SUMS_ONE_BY_ONE = _SumsOneByOne()


def refused_then_alone(members: list[TrainConfig], epochs: int) -> tuple[list[list[dict]], list[Trainer], str]:
    """Members trained in a pack until it is refused, then each alone (as a search falls back)."""
    data = build_trainer(members[0]).data
    trainers = [build_trainer(c, data=data) for c in members]
    pack, refusal = Pack(trainers), ""
    try:
        for _ in range(epochs):
            pack.train_epoch()
    except CannotFuse as exc:
        refusal = str(exc)
    pack.close()
    for trainer in trainers:
        while trainer.epoch < epochs:
            trainer.train_epoch()
    return [t.history for t in trainers], trainers, refusal


@pytest.mark.parametrize("base,refusal", [
    # InfoBatch prunes a number of samples known only once planned: the second epoch's differ
    (dataclasses.replace(MLP, metric="infobatch", ratio=1.0, epochs=3), "select different numbers of samples"),
    # refused at the pack's first step, after its forward had updated BatchNorm's running statistics
    (dataclasses.replace(MLP, task="test_pack:SUMS_ONE_BY_ONE"), "the task cannot run vectorised"),
])
def test_members_of_a_refused_pack_train_on_alone_exactly_as_alone(base, refusal):
    """Planning the refused epoch had drawn each member's subset (and the first step updated running
    statistics): the members trained it alone from that changed state, off their trajectories alone."""
    members = configs(base, [{}, {"lr": 0.5, "weight_decay": 0.0}])
    histories, trainers, refused = refused_then_alone(members, 3)
    assert refusal in refused
    for config, history, trainer in zip(members, histories, trainers):
        expected, reference = alone(config, 3)
        assert [r["selected"] for r in history] == [r["selected"] for r in expected]
        assert_same_run(expected, history, 1e-5)
        assert torch.equal(trainer.selector.times_selected, reference.selector.times_selected)


def test_members_of_a_refused_pack_train_on_alone_as_alone_without_closing_it():
    """A pack refused in its second epoch had its first epoch's weights and momentum only in its stacks: a member
    trained on alone (not closed) from its weights before the pack (epoch 2's train_loss 3.083, not 2.650)."""
    members = configs(dataclasses.replace(MLP, metric="infobatch", ratio=1.0, epochs=3), [{}, {"lr": 0.5}])
    data = build_trainer(members[0]).data
    trainers = [build_trainer(c, data=data) for c in members]
    pack = Pack(trainers)
    pack.train_epoch()
    with pytest.raises(CannotFuse, match="select different numbers of samples"):
        pack.train_epoch()
    for config, trainer in zip(members, trainers):
        while trainer.epoch < 3:
            trainer.train_epoch()
        expected, reference = alone(config, 3)
        assert_same_run(expected, trainer.history, 1e-5)
        for ours, theirs in zip(trainer.model.parameters(), reference.model.parameters()):
            assert torch.allclose(ours, theirs, atol=1e-5)


def test_packs_cut_to_the_configurations_there_are_say_so():
    assert choose_pack_size(20, 8, None).reason == "packs of 8 (asked 20; the search has 8 configurations)"
    assert choose_pack_size(4, 1, None).reason == ("one configuration at a time (asked 4; the search has 1 "
                                                   "configuration)")
    assert choose_pack_size(8, 8, None).reason == "packs of 8 (as asked)"
    assert choose_pack_size(1, 8, None).reason == "one configuration at a time (as asked)"


class _OwnWeights(nn.Module):
    """An MLP scaled by a temperature its optimiser leaves alone: ``weight_parameters()`` names the rest."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Flatten(), nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
        self.temperature = nn.Parameter(torch.ones(1))

    def forward(self, x):
        return self.body(x) * self.temperature

    def weight_parameters(self):
        return list(self.body.parameters())


def test_a_pack_steps_only_the_weight_parameters_its_trainers_step():
    members = configs(dataclasses.replace(MLP, model_args={}, epochs=2), VARIANTS[:3])
    runs, trainers, pack = packed(members, 2, model=lambda data: _OwnWeights())
    pack.close()
    for config, run, trainer in zip(members, runs, trainers):
        expected, reference = alone(config, 2, model=lambda data: _OwnWeights())
        assert_same_run(expected, run, 1e-5)
        assert trainer.model.temperature.item() == 1.0
        for mine, theirs in zip(trainer.model.parameters(), reference.model.parameters()):
            assert torch.allclose(mine, theirs, atol=1e-5)


def test_a_search_whose_packs_fused_nothing_says_why_once():
    """The Ray search said 'packs of 2 (as asked)' and then trained every trial alone without a word."""
    from asp_tune.tune.pack_server import say_if_nothing_fused

    alone = say_if_nothing_fused({"fused_epochs": 0, "alone_epochs": 6, "notes": []}, 2)
    assert len(alone["notes"]) == 1 and alone["notes"][0].startswith("no two trials trained together: trials pack "
                                                                      "only where they differ in nothing but lr,")
    for summary, size in (({"fused_epochs": 0, "alone_epochs": 6, "notes": []}, 1),  # no packs asked for
                          ({"fused_epochs": 4, "alone_epochs": 6, "notes": []}, 2),  # some fused
                          ({"fused_epochs": 0, "alone_epochs": 6, "notes": ["not fused: lazy modules"]}, 2)):
        assert say_if_nothing_fused(dict(summary), size)["notes"] == summary["notes"]
