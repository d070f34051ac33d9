"""The CUDA path: device placement, bf16 autocast, channels_last, device-resident selection, and
checkpoints that cross between GPU and CPU. Skipped where no CUDA device exists (CI has none);
run on a GPU machine with ``python -m pytest -q tests/test_cuda.py``."""

from __future__ import annotations

import pytest
import torch

from asp_tune import TrainConfig, Trainer, load_dataset
from asp_tune.selection import SelectionRule, select_subset
from nas.darts import DartsTrainer
from nas.darts_space import DartsSearchNetwork
from nas.nb201 import Arch
from nas.space_nb201 import Nb201Space
from nas.spos import SposTrainer

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", None, val_fraction=0.2, subset=600, test_subset=100, seed=0)


def cuda_config(**changes) -> TrainConfig:
    base = dict(dataset="digits", model="resnet8", epochs=4, batch_size=64, ratio=0.5, metric="mixture",
                device="cuda", seed=1)
    base.update(changes)
    return TrainConfig(**base)


def test_everything_of_a_run_lives_on_the_gpu(digits):
    t = Trainer(cuda_config(), data=digits)
    assert t.device.type == "cuda" and t.channels_last
    assert all(p.is_cuda for p in t.model.parameters())
    conv = next(m for m in t.model.modules() if isinstance(m, torch.nn.Conv2d))
    assert conv.weight.is_contiguous(memory_format=torch.channels_last)
    plan = t.selector.plan(0)
    assert plan.indices.is_cuda
    batch = next(iter(t.epoch_batches(plan)))
    step = t.train_step(batch)
    logits, idx = step.trained.logits, step.trained.indices
    assert logits.dtype == torch.bfloat16 and logits.is_cuda and idx.is_cuda  # autocast is on
    record = t.train_epoch()
    assert record["selected"] == plan.count
    assert all(v.is_cuda for v in t.selector.memory.values.values())


def test_gpu_run_learns_and_matches_the_requested_fraction(digits):
    t = Trainer(cuda_config(epochs=8, ratio=0.3, ratio_schedule="dynamic"), data=digits)
    summary = t.fit()
    assert summary["final_test_accuracy"] > 0.5  # 10 classes: chance is 0.1
    assert summary["data_fraction"] == pytest.approx(0.3, rel=0.25)


def test_gpu_checkpoint_resumes_on_gpu_and_loads_on_cpu(digits, tmp_path, interrupted_run):
    cfg = cuda_config(epochs=6, ratio=0.4, ratio_schedule="dynamic")
    _, _, rest, again = interrupted_run(lambda: Trainer(cfg, data=digits), tmp_path / "ckpt.pt")
    # selection is exact; cuDNN's autotuned kernels may differ in the last bits of the losses
    assert [r["selected"] for r in rest] == [r["selected"] for r in again]
    assert [r["metric_used"] for r in rest] == [r["metric_used"] for r in again]
    for x, y in zip(rest, again):
        assert x["train_loss"] == pytest.approx(y["train_loss"], rel=0.05)
    on_cpu = Trainer(cuda_config(epochs=6, ratio=0.4, ratio_schedule="dynamic", device="cpu"), data=digits)
    on_cpu.load_checkpoint(tmp_path / "ckpt.pt")
    assert on_cpu.epoch == 3 and all(not p.is_cuda for p in on_cpu.model.parameters())
    assert on_cpu.train_epoch()["selected"] == rest[0]["selected"]


def test_selection_on_the_gpu_matches_the_cpu():
    g_cpu, g_gpu = torch.Generator().manual_seed(0), torch.Generator(device="cuda").manual_seed(0)
    scores = torch.randn(50_000)
    labels = torch.randint(0, 10, (50_000,))
    rule = SelectionRule.from_settings(TrainConfig())
    cpu = select_subset(scores, 5_000, rule, g_cpu, labels)
    gpu = select_subset(scores.cuda(), 5_000, rule, g_gpu, labels.cuda())
    assert gpu.indices.is_cuda and gpu.indices.numel() == cpu.indices.numel() == 5_000
    # the same inclusion probabilities; the draws use different generators
    torch.testing.assert_close(gpu.inclusion.cpu(), cpu.inclusion, rtol=1e-4, atol=1e-6)


def test_spos_supernet_trains_and_scores_on_the_gpu(digits):
    t = SposTrainer(cuda_config(model="mlp", epochs=2), digits, Nb201Space(), channels=4, cells=1)
    assert all(p.is_cuda for p in t.model.parameters())
    record = t.train_epoch()
    assert record["selected"] > 0
    accuracy = t.score(Arch(("nor_conv_3x3",) * 6))
    assert 0.0 <= accuracy <= 1.0


def test_darts_architecture_step_on_the_gpu(digits):
    t = DartsTrainer(cuda_config(model="mlp", epochs=1), digits,
                     DartsSearchNetwork(channels=4, layers=3, in_channels=1), order=2, arch_lr=0.01)
    alphas = [a.detach().clone() for a in t.model.arch_parameters()]
    t.train_epoch()
    assert all(a.is_cuda for a in t.model.arch_parameters())
    assert all(not torch.equal(a, b) for a, b in zip(alphas, t.model.arch_parameters()))


def test_a_pack_on_the_gpu_trains_its_members_as_they_train_alone(digits):
    from asp_tune.pack import Pack, choose_pack_size

    configs = [cuda_config(metric="loss", lr=0.01), cuda_config(metric="loss", lr=0.02, weight_decay=0.0)]
    alone = []
    for config in configs:
        trainer = Trainer(config, data=digits)
        alone.append(trainer.train_epoch())
    members = [Trainer(config, data=digits) for config in configs]
    pack = Pack(members)
    records = pack.train_epoch()
    assert all(p.is_cuda for p in pack.params.values())
    feeders = [m.train_feeder for m in members]  # the data went to the GPU once, for every member
    assert feeders[0].images.is_cuda and feeders[0].images.data_ptr() == feeders[1].images.data_ptr()
    for reference, member in zip(alone, members):  # bf16 autocast: batched kernels round differently
        assert abs(records[member]["train_loss"] - reference["train_loss"]) < 0.05 * reference["train_loss"]
        assert records[member]["selected"] == reference["selected"]
    choice = choose_pack_size("auto", 8, members[0])
    assert 1 <= choice.size <= 8 and choice.reason


def test_under_bf16_autocast_a_resnet8_pack_computes_every_layer_as_it_does_alone(digits):
    """vmap skips autocast for some functions (on a CPU: convolutions, Linear with a bias, PReLU, batch norm of
    a bf16 input); a pack casts those itself, and refuses a network where any layer's output would differ."""
    from asp_tune.pack import precision_differences

    trainer = Trainer(cuda_config(), data=digits)
    x = next(iter(trainer.train_feeder.batches(torch.arange(32, device="cuda"), 32)))[0]
    assert precision_differences(trainer.model, x, amp=True) == []


@pytest.mark.parametrize("model,how", [("resnet8", "vmap"), ("mlp", "batched layers")])
def test_a_pack_s_step_never_waits_for_the_gpu(digits, monkeypatch, model, how):
    """Making the batches, the vectorised step (through vmap, or batched layers), the stacked optimiser and the
    memories' update queue work on the GPU without a host synchronisation (a copy of per-member values each
    step used to wait for it)."""
    from asp_tune.pack import Pack, _stacked_batches

    monkeypatch.setenv("ASP_TUNE_COMPILE", "0")  # compiling the memory's statistics may synchronise, once
    configs = [cuda_config(model=model, metric="gradient", lr=0.01, crop_padding=2, flip_p=0.5, cutout=3),
               cuda_config(model=model, metric="gradient", lr=0.02, weight_decay=0.0, momentum=0.5, crop_padding=2,
                           flip_p=0.5, cutout=3)]
    members = [Trainer(config, data=digits) for config in configs]
    pack = Pack(members)
    assert pack.net.how == how
    pack.train_epoch()  # the first epoch: cuDNN's and the allocator's first calls
    plans = [t.selector.plan(t.epoch) for t in members]
    smoothing = torch.zeros(2, device="cuda")
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for x, y, idx in _stacked_batches(members, plans):
            with torch.autocast("cuda", dtype=torch.bfloat16):
                losses, logits, norms = pack._losses(x, y, torch.ones(y.shape[:2], device="cuda"),  # noqa: SLF001
                                                     smoothing)  # the step itself
            for p in pack.params.values():
                p.grad = None
            losses.sum().backward()
            pack.optimizer.step(pack.params)
            members[0].observe_stacked(members[1:], logits.detach(), y, idx, norms)
    finally:
        torch.cuda.set_sync_debug_mode("default")


def test_a_pack_of_the_size_auto_chose_fits_in_the_gpu_memory_it_was_told_is_free(monkeypatch):
    """auto measures a member's activations: a ResNet-8 pack of CIFAR-10-sized images (batch 128), sized for 2 GiB
    free, takes no more than those 2 GiB for its epoch (a guess from the weights put 7x too many in it)."""
    import dataclasses

    import numpy as np

    from asp_tune import pack
    from asp_tune.build import build_trainer

    rng = np.random.default_rng(0)
    arrays = {"classes": np.asarray([str(i) for i in range(10)]),
              "train_x": rng.integers(0, 256, (640, 3, 32, 32), dtype=np.uint8), "train_y": rng.integers(0, 10, 640),
              "test_x": rng.integers(0, 256, (64, 3, 32, 32), dtype=np.uint8), "test_y": rng.integers(0, 10, 64)}
    config = TrainConfig(dataset="cifar10", model="resnet8", epochs=1, batch_size=128, ratio=1.0, metric="loss",
                         first_epoch_full=False, device="cuda", seed=0)
    first = build_trainer(config, arrays=arrays)
    free = 2 * 2 ** 30
    monkeypatch.setattr(pack, "free_bytes", lambda device: free)
    monkeypatch.setattr(pack, "_measure", lambda *args, **kwargs: (2.0, 1.0))  # the pack measured faster
    choice = pack.choose_pack_size("auto", 64, first)
    assert "free for packs" in choice.memory and "the memory holds" in choice.reason, choice.reason
    assert 4 <= choice.size < 64, choice.reason
    members = [first] + [build_trainer(dataclasses.replace(config, lr=0.1 / (k + 1)), data=first.data)
                         for k in range(1, choice.size)]
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    pack.Pack(members).train_epoch()
    assert torch.cuda.max_memory_allocated() - before <= free
