import math

import pytest
import torch

from asp_tune import ConfigError, TrainConfig, Trainer, TrainingDiverged, load_dataset
from asp_tune.trainer import lr_factor


@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits", seed=0)


def test_full_data_baseline_learns_digits(digits):
    t = Trainer(TrainConfig(epochs=6, ratio=1.0, metric="none"), data=digits)
    summary = t.fit()
    assert summary["final_val_accuracy"] >= 0.9
    assert summary["final_test_accuracy"] >= 0.9
    assert summary["data_passes"] == pytest.approx(6.0)
    assert [r["metric_used"] for r in t.history] == ["none"] * 6
    assert all(r["selected"] == len(digits.train) for r in t.history)
    if t.device.type == "cpu":  # asked for (the defaults), applied on CUDA only
        assert t.config.amp and summary["applied"] == {"amp": False, "channels_last": False}


def test_dynamic_ratio_counts_follow_the_schedule(digits):
    cfg = TrainConfig(epochs=8, ratio=0.3, ratio_schedule="dynamic", metric="mixture")
    t = Trainer(cfg, data=digits)
    t.fit()
    n = len(digits.train)
    expected = [max(2, round(r * n)) for r in t.selector.strategy.schedule.ratios()]
    assert [r["selected"] for r in t.history] == expected
    assert t.history[0]["metric_used"] == "all" and t.history[0]["ratio"] == 1.0
    assert {r["metric_used"] for r in t.history[1:]} <= {"random", "loss", "entropy", "gradient", "prediction"}
    passes = [r["data_passes"] for r in t.history]
    assert passes == sorted(passes) and passes[-1] == pytest.approx(sum(expected) / n)
    assert t.history[-1]["val_accuracy"] > 0.5


def test_proxy_training_is_reproducible(digits):
    cfg = TrainConfig(epochs=4, ratio=0.5, metric="loss")
    a, b = Trainer(cfg, data=digits), Trainer(cfg, data=digits)
    a.fit(), b.fit()
    assert [r["val_accuracy"] for r in a.history] == [r["val_accuracy"] for r in b.history]
    assert torch.equal(a.selector.memory["loss"], b.selector.memory["loss"])


def test_checkpoint_mid_run_continues_exactly(digits, tmp_path, interrupted_run):
    cfg = TrainConfig(epochs=6, ratio=0.4, ratio_schedule="dynamic", metric="mixture", seed=3)
    straight, resumed, rest, again = interrupted_run(lambda: Trainer(cfg, data=digits), tmp_path / "ckpt.pt")
    for x, y in zip(rest, again):
        assert x["selected"] == y["selected"] and x["metric_used"] == y["metric_used"]
        assert x["val_accuracy"] == y["val_accuracy"] and x["train_loss"] == pytest.approx(y["train_loss"], abs=1e-6)
    for k in straight.selector.memory.values:
        torch.testing.assert_close(straight.selector.memory[k], resumed.selector.memory[k])


def test_importance_trajectories_survive_a_checkpoint_and_its_pickle_does_not_grow_with_the_epochs(digits, tmp_path):
    """A checkpoint held a dict per tracked sample and epoch (140,000 objects to pickle at 400 epochs);
    it holds one tensor per column, and restores the same rows, from its own or the old list of rows."""
    import io
    import pickle

    cfg = TrainConfig(epochs=6, ratio=0.4, metric="mixture", seed=3)
    straight = Trainer(cfg, data=digits)
    straight.fit()
    rows = straight.trajectories
    assert len(rows) == 6 * 32 and [r["epoch"] for r in rows[::32]] == [1, 2, 3, 4, 5, 6]
    assert {"loss", "entropy", "selected", "metric_used", "label"} <= set(rows[0])
    assert [r["selected"] for r in rows[:32]] == [True] * 32  # the first epoch trains on all data
    assert [r["metric_used"] for r in rows[::32]] == [h["metric_used"] for h in straight.history]

    objects = {}
    for epochs in (3, 6):
        t = Trainer(cfg, data=digits)
        for _ in range(epochs):
            t.train_epoch()
        counted = []
        pickler = pickle.Pickler(io.BytesIO())
        pickler.persistent_id = lambda o: counted.append(o)  # torch.save asks it of every object it pickles
        pickler.dump(t.state_dict()["trajectories"])
        objects[epochs] = len(counted)
    assert objects[6] - objects[3] <= 2 * 3  # each epoch adds its number and metric, not 32 rows of values

    for saved in (straight.state_dict(), {**straight.state_dict(), "trajectories": rows}):  # ours, the old rows
        path = tmp_path / "ckpt.pt"
        torch.save(saved, path)
        resumed = Trainer(cfg, data=digits)
        resumed.load_checkpoint(path)
        assert resumed.trajectories == rows


def test_a_checkpoint_resumes_only_the_run_it_was_saved_by_where_it_is_placed_may_differ(digits, tmp_path):
    """The optimiser's and schedule's states carry the old learning rate and epoch count: loaded into a trainer
    of other settings, they overrode its lr silently (it trained on at 0.1 where 0.01 was asked)."""
    from asp_tune.errors import AspTuneError

    cfg = TrainConfig(epochs=3, ratio=0.5, metric="loss", lr=0.1)
    t = Trainer(cfg, data=digits)
    t.train_epoch()
    path = tmp_path / "ckpt.pt"
    t.save_checkpoint(path)
    other = Trainer(cfg.replace(lr=0.01, epochs=6), data=digits)
    with pytest.raises(AspTuneError, match=r"other settings \(epochs 3 -> 6; lr 0.1 -> 0.01\)"):
        other.load_checkpoint(path)
    assert other.epoch == 0 and other.optimizer.param_groups[0]["lr"] == pytest.approx(0.01)
    placed = Trainer(cfg.replace(eval_batch_size=64, amp=False, device="cpu", download=True), data=digits)
    placed.load_checkpoint(path)
    assert placed.epoch == 1 and placed.config.eval_batch_size == 64


def test_corrupt_checkpoint_is_a_clear_error(digits, tmp_path):
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"garbage")
    t = Trainer(TrainConfig(epochs=1), data=digits)
    with pytest.raises(Exception, match="cannot read checkpoint"):
        t.load_checkpoint(bad)


def test_divergence_is_detected(digits):
    t = Trainer(TrainConfig(epochs=2, lr=1e6, momentum=0.0, weight_decay=0.0), data=digits)
    with pytest.raises(TrainingDiverged, match="lower the learning rate"):
        t.fit()


def test_stream_storage_trains_like_device_storage(digits):
    cfg = TrainConfig(epochs=3, ratio=0.5, metric="gradient", storage="stream")
    t = Trainer(cfg, data=digits)
    t.fit()
    assert [r["selected"] for r in t.history] == [len(digits.train), round(0.5 * len(digits.train)), round(0.5 * len(digits.train))]
    assert t.history[-1]["val_accuracy"] > 0.7


def test_stream_augmentation_draws_from_its_own_generator_and_resumes_exactly(digits, tmp_path, interrupted_run):
    """Crops and flips drawn in the data set took torch's global generator: any other draw in the process (a
    pack's other members, another trial in a pack worker) changed a run's augmentation."""
    cfg = TrainConfig(epochs=4, ratio=0.5, metric="loss", storage="stream", crop_padding=1, flip_p=0.5, seed=2)

    def disturbed():
        trainer = Trainer(cfg, data=digits)
        real = trainer.train_epoch

        def train_epoch():
            torch.rand(97)  # someone else's draw between epochs
            return real()
        trainer.train_epoch = train_epoch
        return trainer

    quiet = Trainer(cfg, data=digits)
    quiet.fit()
    straight, resumed, rest, again = interrupted_run(disturbed, tmp_path / "ckpt.pt", 2, 2)
    assert [r["train_loss"] for r in quiet.history[2:]] == [r["train_loss"] for r in rest] == \
        [r["train_loss"] for r in again]


def test_resnet8_runs_on_small_images(digits):
    t = Trainer(TrainConfig(model="resnet8", epochs=1, subset=200, batch_size=64), data=load_dataset("digits", subset=200))
    rec = t.train_epoch()
    assert rec["selected"] == len(t.data.train) and math.isfinite(rec["train_loss"])
    # channels-last only on CUDA: on a CPU a 4-channel DARTS cell crashed in backward with it (the process died)
    assert not t.channels_last and all(p.is_contiguous() for p in t.model.parameters())


def test_lr_schedules_step_per_epoch():
    cos = TrainConfig(epochs=10, lr=0.1, lr_schedule="cosine")
    assert lr_factor(cos, 0) == 1.0 and lr_factor(cos, 5) == pytest.approx(0.5) and lr_factor(cos, 10) == pytest.approx(0)
    ms = TrainConfig(epochs=200, lr_schedule="multistep", milestones=(0.5, 0.75), lr_gamma=0.1)
    assert [lr_factor(ms, e) for e in (0, 99, 100, 149, 150)] == pytest.approx([1, 1, 0.1, 0.1, 0.01])


@pytest.mark.parametrize("field,value,pattern", [
    ("ratio", 0.0, r"ratio=0.0: allowed a number in \(0.0, 1.0\]"),
    ("ratio", 1.5, r"ratio=1.5"),
    ("metric", "foo", r"metric='foo': allowed one of 'random', 'loss'"),
    ("mixture_order", "g000", r"mixture_order='g000'.*'g012'"),
    ("ratio_schedule", "cyclic", r"ratio_schedule='cyclic'.*'constant', 'dynamic'"),
    ("model", "vgg", r"model='vgg'.*'resnet18'"),
    ("dataset", "mnist", r"dataset='mnist'.*'digits'"),
    ("lr_schedule", "step", r"lr_schedule='step'.*'cosine'"),
    ("epochs", 0, r"epochs=0: allowed an integer >= 1"),
])
def test_config_errors_name_field_and_allowed_values(field, value, pattern):
    with pytest.raises(ConfigError, match=pattern):
        TrainConfig(**{field: value}).validate()


def test_metric_none_requires_full_ratio():
    with pytest.raises(ConfigError, match="'none' only with ratio 1.0"):
        TrainConfig(metric="none", ratio=0.5).validate()


def test_from_dict_rejects_unknown_keys():
    with pytest.raises(ConfigError, match="config key='learning_rate'"):
        TrainConfig.from_dict({"learning_rate": 0.1})


def test_a_generator_state_from_another_device_type_reseeds_deterministically():
    from asp_tune.device import restore_generator

    foreign = torch.zeros(16, dtype=torch.uint8)  # a CUDA generator's state is 16 bytes; a CPU one's 5056
    a, b = torch.Generator(), torch.Generator()
    with pytest.warns(UserWarning, match="another device type"):
        restore_generator(a, foreign)
    with pytest.warns(UserWarning):
        restore_generator(b, foreign)
    assert torch.equal(torch.rand(5, generator=a), torch.rand(5, generator=b))
    c = torch.Generator().manual_seed(3)
    state = c.get_state()
    expected = torch.rand(3, generator=c)
    restore_generator(c, state)  # same device type: the exact state
    assert torch.equal(torch.rand(3, generator=c), expected)


def test_a_network_with_fewer_outputs_than_classes_is_a_named_error_and_more_are_warned(digits):
    from torch import nn

    from asp_tune.build import build_trainer

    narrow = build_trainer(TrainConfig(dataset="digits", epochs=1, subset=200),
                           model=nn.Sequential(nn.Flatten(), nn.Linear(64, 2)))
    with pytest.raises(ConfigError, match=r"invalid model='torch.nn.modules.container:Sequential': allowed a "
                                          r"network with 10 outputs, one per class of this data: it gives 2"):
        narrow.fit()
    wide = build_trainer(TrainConfig(dataset="digits", epochs=1, subset=200),
                         model=nn.Sequential(nn.Flatten(), nn.Linear(64, 12)))  # a builder that ignores num_classes
    with pytest.warns(UserWarning, match="gives 12 outputs for the 10 classes of this data: the last 2 are never"):
        summary = wide.fit()
    assert summary["epochs"] == 1


@pytest.mark.parametrize("ratio, metric, first_full, expected", [
    (1.0, "none", True, [1.0, 1.0]), (0.3, "fixed_random", True, [0.3, 0.3]), (0.3, "random", False, [0.3, 0.6])])
def test_coverage_is_the_share_of_samples_trained_so_far_for_every_strategy(digits, ratio, metric, first_full,
                                                                             expected):
    t = Trainer(TrainConfig(epochs=2, ratio=ratio, metric=metric, first_epoch_full=first_full, unseen_first=True),
                data=digits)
    t.fit()
    assert [r["coverage"] for r in t.history] == pytest.approx(expected, abs=0.01)
