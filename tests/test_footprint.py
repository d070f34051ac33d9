"""A configuration's measured footprint (weights, gradients, optimiser states, saved activations), the memory
this process can still take (cgroup limits included), and how ``auto`` sizes packs from the two."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from asp_tune import pack, sizes
from asp_tune.build import build_trainer
from asp_tune.config import TrainConfig
from asp_tune.footprint import Footprint, measure_footprint, readable_bytes, saved_activation_bytes
from asp_tune.sizes import cgroup_memory_left, free_bytes

BASE = TrainConfig(dataset="digits", model="mlp", epochs=1, subset=300, batch_size=32, ratio=0.5, metric="loss",
                   first_epoch_full=False, model_args={"hidden": 32})


def test_saved_activations_are_what_the_backward_pass_keeps_each_storage_once():
    # Linear keeps its input, ReLU its output (which the second Linear keeps too: counted once); weights are not
    net = nn.Sequential(nn.Linear(64, 32), nn.ReLU(), nn.Linear(32, 10))
    assert saved_activation_bytes(net, torch.randn(8, 64)) == 8 * (64 + 32) * 4
    # batch norm keeps its input and its batch's mean and inverse deviation per channel
    net = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    assert saved_activation_bytes(net, torch.randn(8, 64)) == 8 * (64 + 32 + 32) * 4 + 2 * 32 * 4
    assert net.training and net[1].num_batches_tracked == 0  # measured on a copy


def test_a_footprint_scales_activations_to_the_batch_and_counts_every_state():
    net = nn.Sequential(nn.Linear(64, 32), nn.BatchNorm1d(32), nn.ReLU(), nn.Linear(32, 10))
    weights = sum(p.numel() for p in net.parameters()) * 4
    buffers = sum(b.numel() * b.element_size() for b in net.buffers())
    x = torch.randn(8, 64)
    sgd = measure_footprint(net, x, batch_size=128, optimizer="sgd", extra_state=1000)
    assert sgd.activations == 128 * (64 + 32 + 32) * 4 + 2 * 32 * 4  # the batch norm's statistics: once
    assert sgd.state == 3 * weights + buffers + 1000  # weights, gradients, momentum
    adam = measure_footprint(net, x, batch_size=128, optimizer="adam")
    assert adam.state == 4 * weights + buffers and adam.total == adam.state + adam.activations
    assert "activations at batch 128" in adam.describe()


class ComputedWeight(nn.Module):
    """A layer whose weight is computed each forward (as autocast's casts of the weights are): a tensor of a
    fixed size that the backward pass keeps, whatever the batch."""

    def __init__(self):
        super().__init__()
        self.first, self.weight = nn.Linear(512, 512), nn.Parameter(torch.randn(10, 512))

    def forward(self, x):
        return torch.nn.functional.linear(self.first(x), self.weight * 2)


def test_what_does_not_grow_with_the_batch_is_counted_once():
    x = torch.randn(8, 512)
    measured = measure_footprint(ComputedWeight(), x, batch_size=1024)
    assert measured.activations == 10 * 512 * 4 + 1024 * 2 * 512 * 4  # the computed weight once; two per sample


def test_a_saved_view_keeps_its_whole_tensor():
    wide, head = nn.Linear(16, 4096), nn.Linear(16, 10)

    class Narrow(nn.Module):
        def __init__(self):
            super().__init__()
            self.wide, self.head = wide, head

        def forward(self, x):
            return self.head(self.wide(x)[:, :16])  # the head keeps a view of all 4096 features alive

    assert saved_activation_bytes(Narrow(), torch.randn(8, 16)) == 8 * 16 * 4 + 8 * 4096 * 4


def test_a_convolutional_network_s_activations_outweigh_its_weights():
    """What the old estimate missed: ResNet-8 has 0.3 MB of weights, and at batch 128 keeps about 80 MB of
    activations for its backward pass."""
    from asp_tune.models import resnet8

    measured = measure_footprint(resnet8((3, 32, 32), 10), torch.randn(4, 3, 32, 32), batch_size=128)
    assert measured.activations > 50 * measured.state
    assert 60 * 2 ** 20 < measured.activations < 100 * 2 ** 20


def _cgroup(tmp_path, proc_line: str, files: dict[str, str]):
    tmp_path.mkdir()
    proc = tmp_path / "cgroup"
    proc.write_text(proc_line + "\n")
    for name, text in files.items():
        path = tmp_path / "fs" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return proc, tmp_path / "fs"


def test_the_cgroup_limit_is_read_in_version_2_and_version_1(tmp_path):
    # what is charged less the page cache (but for shared memory), which the kernel reclaims
    v2 = _cgroup(tmp_path / "a", "0::/job/run", {"job/run/memory.max": "1000\n", "job/run/memory.current": "400\n",
                                                  "job/run/memory.stat": "anon 150\nfile 300\nshmem 100\n"})
    assert cgroup_memory_left(*v2) == 800
    parent = _cgroup(tmp_path / "b", "0::/job/run", {"job/run/memory.max": "max\n", "job/run/memory.current": "50\n",
                                                      "job/memory.max": "500\n", "job/memory.current": "100\n"})
    assert cgroup_memory_left(*parent) == 400  # a limit set above the process's own cgroup
    unlimited = _cgroup(tmp_path / "c", "0::/", {"memory.max": "max\n", "memory.current": "400\n"})
    assert cgroup_memory_left(*unlimited) is None
    v1 = _cgroup(tmp_path / "d", "9:cpu:/\n4:memory,hugetlb:/box",
                 {"memory/box/memory.limit_in_bytes": "2000", "memory/box/memory.usage_in_bytes": "2500"})
    assert cgroup_memory_left(*v1) == 0  # over its limit: nothing left
    v1_cache = _cgroup(tmp_path / "e", "4:memory:/box", {
        "memory/box/memory.limit_in_bytes": "2000", "memory/box/memory.usage_in_bytes": "1900",
        "memory/box/memory.stat": "cache 1500\nrss 400\ntotal_cache 1500\ntotal_shmem 0\ntotal_rss 400\n"})
    assert cgroup_memory_left(*v1_cache) == 1600
    v1_unlimited = _cgroup(tmp_path / "f", "4:memory:/box", {
        "memory/box/memory.limit_in_bytes": "9223372036854771712", "memory/box/memory.usage_in_bytes": "5"})
    assert cgroup_memory_left(*v1_unlimited) is None
    elsewhere = _cgroup(tmp_path / "g", "0::/not/in/this/view", {"memory.max": "1000\n", "memory.current": "10\n"})
    assert cgroup_memory_left(*elsewhere) == 990  # a path outside this process's view: the root it sees
    assert cgroup_memory_left(tmp_path / "missing", tmp_path) is None


def test_free_host_memory_is_the_lesser_of_the_machine_s_and_the_cgroup_s(monkeypatch):
    import types

    import psutil

    monkeypatch.setattr(psutil, "virtual_memory", lambda: types.SimpleNamespace(available=8 * 2 ** 30))
    monkeypatch.setattr(sizes, "cgroup_memory_left", lambda: 2 ** 30)
    assert free_bytes(torch.device("cpu")) == 2 ** 30
    monkeypatch.setattr(sizes, "cgroup_memory_left", lambda: None)
    assert free_bytes(torch.device("cpu")) == 8 * 2 ** 30


def _footprint_of(trainer) -> Footprint:
    x = next(iter(trainer.train_feeder.batches(torch.arange(32), 32)))[0]
    return measure_footprint(trainer.model, x, trainer.config.batch_size, trainer.config.optimizer,
                             extra_state=trainer.selector.memory.nbytes)


def test_auto_packs_as_many_measured_footprints_as_its_share_of_the_free_memory_holds(monkeypatch):
    trainer = build_trainer(BASE)
    each = _footprint_of(trainer).total
    monkeypatch.setattr(pack, "free_bytes", lambda device: int(5 * each / pack.AUTO_MEMORY_SHARE) + each // 4)
    choice = pack.choose_pack_size("auto", 64, trainer)
    assert choice.size in (1, 5)  # 1: if its measurement saw the pack lose
    assert choice.memory.startswith(f"{readable_bytes(each)} a configuration")
    assert choice.summary()["memory"] == choice.memory
    shared = pack.choose_pack_size("auto", 64, trainer, device_share=0.4)  # 0.4 of the device: 2 of the 5
    assert shared.size in (1, 2)
    monkeypatch.setattr(pack, "free_bytes", lambda device: each)
    alone = pack.choose_pack_size("auto", 64, trainer)
    assert alone.size == 1 and alone.reason.startswith("the device's memory holds one configuration's training at "
                                                       "a time (") and "free for packs" in alone.reason
    monkeypatch.setattr(pack, "free_bytes", lambda device: None)
    assert pack.choose_pack_size("auto", 64, trainer).size in (1, pack.AUTO_MAX_CPU)


def test_auto_sizes_packs_by_the_largest_kind_of_configuration_a_search_trains(monkeypatch):
    trainer = build_trainer(BASE)
    wide = BASE.replace(model_args={"hidden": 512}, batch_size=64)
    small, large = _footprint_of(trainer).total, pack._footprint_of(trainer, wide).total
    assert large > 4 * small
    free = int(3 * large / pack.AUTO_MEMORY_SHARE) + large // 4
    monkeypatch.setattr(pack, "free_bytes", lambda device: free)
    choice = pack.choose_pack_size("auto", 64, trainer, others=[wide, BASE.replace(lr=0.5)])
    assert choice.memory.startswith(f"{readable_bytes(large)} a configuration") \
        and "(the largest of 2 kinds of configuration measured)" in choice.memory  # lr=0.5 packs with BASE
    assert choice.size in (1, 3)  # 1: if its measurement saw the pack lose
    alone = pack.choose_pack_size("auto", 64, trainer)  # without them it packs by the small network's footprint
    assert alone.memory.startswith(f"{readable_bytes(small)} a configuration")
    assert alone.size in (1, min(pack.AUTO_MAX_CPU, int(pack.AUTO_MEMORY_SHARE * free) // small)) and alone.size != 3
    broken = BASE.replace(model_args={"no_such_argument": 1})  # fails as a trial, and says why there
    said = pack.choose_pack_size("auto", 64, trainer, others=[broken]).memory
    assert said.startswith(alone.memory.split(";")[0]) and "; 1 kind could not be measured, their trials will " \
        "say why if they fail (ConfigError: invalid model_args={'no_such_argument': 1}" in said


def test_the_configurations_that_size_a_search_s_packs_are_its_pack_kinds_at_their_ends():
    from asp_tune.tune.space import Param, SearchSpace

    space = SearchSpace("s", {"dataset": "digits", "model": "mlp"}, (
        Param("lr", "loguniform", 0.01, 0.5), Param("model_args.hidden", "choice", values=(16, 64, 256)),
        Param("batch_size", "int", 32, 128), Param("momentum", "uniform", 0.5, 0.9)))
    configs = space.sizing_configs({"ratio": 0.5, "seed": 0})
    assert [(c.model_args["hidden"], c.batch_size) for c in configs] == [
        (16, 32), (16, 128), (64, 32), (64, 128), (256, 32), (256, 128)]  # the first configuration first
    assert {(c.lr, c.momentum) for c in configs} == {(0.01, 0.5)}  # per member: never another kind
    many = space.extreme_params(["model_args.hidden", "batch_size"], limit=4)  # 6 combinations: each end alone
    assert [(p["model_args.hidden"], p["batch_size"]) for p in many] == [
        (16, 32), (64, 32), (256, 32), (16, 32), (16, 128), (256, 128)]  # and all at their last end
    widths = SearchSpace("w", space.fixed, (Param("model_args.hidden", "choice", values=(16, 512, 64, 32, 8)),
                                            Param("batch_size", "int", 32, 128),
                                            Param("optimizer", "choice", values=("sgd", "adam", "adamw"))))
    weight = {512: 8, 16: 1, 64: 2, 32: 1, 8: 1}  # 30 combinations, too many: each end alone, then the heaviest
    heavy = {"sgd": 2, "adam": 3, "adamw": 2.5}  # of each parameter, measured alone, combined
    sized = widths.sizing_configs({"ratio": 0.5}, measure=lambda c: weight[c.model_args["hidden"]] * c.batch_size
                                  * heavy[c.optimizer])
    assert len(sized) == 1 + 4 + 1 + 2 + 1  # the first; each other end alone; the heaviest of all
    assert (sized[-1].model_args["hidden"], sized[-1].batch_size, sized[-1].optimizer) == (512, 128, "adam")
    unmeasured = widths.sizing_configs({"ratio": 0.5})[-1]  # without a measure: each at its last end
    assert (unmeasured.model_args["hidden"], unmeasured.batch_size, unmeasured.optimizer) == (8, 128, "adamw")


def test_auto_s_footprint_measurement_leaves_the_trainer_s_batches_and_random_state_alone():
    measured, untouched = build_trainer(BASE), build_trainer(BASE)
    before = torch.get_rng_state()
    pack.choose_pack_size("auto", 4, measured)
    assert torch.equal(torch.get_rng_state(), before)
    assert measured.train_epoch()["train_loss"] == pytest.approx(untouched.train_epoch()["train_loss"], abs=0)


def test_each_pack_worker_of_a_search_sizes_its_packs_for_its_share_of_the_machine(monkeypatch):
    from asp_tune.tune.builtin import auto_pack_size

    shares = []

    def choose(requested, configurations, trainer, device_share=1.0, others=()):
        shares.append(device_share)
        return pack.PackChoice(1, "one")

    monkeypatch.setattr(pack, "choose_pack_size", choose)
    auto_pack_size("auto", BASE, None, trials=16, epochs_total=16, max_concurrent=4, cpus_per_trial=1, gpus_per_trial=0)
    assert shares == [0.25]  # four workers on one host's memory


def test_a_search_s_auto_pack_size_weighs_every_kind_of_pack_its_space_makes(monkeypatch):
    from asp_tune.tune.builtin import pack_choice
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space

    told = []

    def choose(requested, configurations, trainer, device_share=1.0, others=()):
        told.append(sorted(c.model_args["hidden"] for c in others(lambda c: None) if c.lr == trainer.config.lr))
        return pack.PackChoice(1, "one")

    monkeypatch.setattr(pack, "choose_pack_size", choose)
    space = parse_space({"name": "w", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 2, "subset": 300},
                         "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.5},
                                    "model_args.hidden": {"type": "choice", "values": [8, 128, 32]}}})
    pack_choice(HpoSettings(space=space, pack="auto", num_samples=8, verbose=0).validate(), None)
    assert told == [[8, 32, 128]]


def test_auto_does_not_let_a_driver_without_a_gpu_measure_for_gpu_trials(monkeypatch):
    from asp_tune.tune.builtin import auto_pack_size

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    choice = auto_pack_size("auto", BASE, None, trials=16, epochs_total=16, max_concurrent=2, cpus_per_trial=1,
                            gpus_per_trial=1)
    assert choice.size == 1 and "has none to measure a pack on (--pack K" in choice.reason
