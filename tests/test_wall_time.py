"""Costs that must not grow with the number of trials or candidates: shared data, reused workers,
the first-epoch policy under early stopping, NAS scoring on a fixed subset."""

from __future__ import annotations

import pytest
import torch

from asp_tune import TrainConfig
from asp_tune.datasets import READS, load_dataset, read_dataset
from asp_tune.tune.space import parse_space
from asp_tune.tune.trainable import proxy_trial

SPACE = {"name": "tiny", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 2, "subset": 400, "batch_size": 64},
         "params": {"lr": {"type": "loguniform", "low": 0.02, "high": 0.3}}}


def _trial(arrays=None):
    reports = []
    proxy_trial({"lr": 0.1}, space=parse_space(SPACE), run={"ratio": 0.5, "metric": "loss", "seed": 1,
                                                            "device": "cpu", "epochs": 2},
                arrays=arrays, report=lambda metrics, checkpoint: reports.append(metrics),
                get_checkpoint=lambda: None)
    return reports


def test_a_trial_given_shared_arrays_does_not_read_the_data_again():
    arrays = read_dataset("digits")
    for value in arrays.values():  # as Ray's object store hands them out: read-only
        value.setflags(write=False)
    before = READS["count"]
    shared = _trial(arrays)
    assert READS["count"] == before
    direct = _trial()
    assert READS["count"] == before + 1
    assert [r["val_accuracy"] for r in shared] == [r["val_accuracy"] for r in direct]
    assert all(r["startup_seconds"] > 0 for r in shared)


def test_shared_arrays_split_exactly_like_a_direct_load():
    arrays = read_dataset("digits")
    a = load_dataset("digits", subset=500, seed=3, arrays=arrays)
    b = load_dataset("digits", subset=500, seed=3)
    for split in ("train", "val", "test"):
        assert torch.equal(getattr(a, split).images, getattr(b, split).images)
        assert torch.equal(getattr(a, split).labels, getattr(b, split).labels)


def test_a_subset_larger_than_the_data_is_refused():
    from asp_tune.errors import ConfigError

    with pytest.raises(ConfigError, match=r"invalid subset=5000: allowed at most 1438"):
        load_dataset("digits", subset=5000)


def test_early_stopping_searches_do_not_spend_a_full_first_pass():
    from asp_tune.tune.settings import HpoSettings

    space = parse_space(SPACE)
    asha = HpoSettings(space=space, algo="asha", ratio=0.3, metric="mixture").validate()
    assert asha.trial_config().first_epoch_full is False and asha.trial_config().unseen_first is True
    auto = HpoSettings(space=space, algo="asha", ratio=0.3).validate().trial_config()
    assert (auto.metric, auto.class_balance, auto.first_epoch_full) == ("random", False, False)
    auto_fifo = HpoSettings(space=space, algo="random", ratio=0.3).validate().trial_config()
    assert (auto_fifo.metric, auto_fifo.selection_rule, auto_fifo.class_balance) == ("loss", "calibrated", True)
    assert HpoSettings(space=space, algo="asha", ratio=1.0).validate().trial_config().metric == "none"
    fifo = HpoSettings(space=space, algo="random", ratio=0.3, metric="mixture").validate()
    assert fifo.trial_config().first_epoch_full is True
    kept = HpoSettings(space=space, algo="asha", ratio=0.3, metric="mixture",
                       selection={"first_epoch_full": True}).validate()
    assert kept.trial_config().first_epoch_full is True


def test_nas_scoring_subset_is_the_same_for_every_candidate_and_run_with_a_seed():
    from nas.search import supernet_trainer as build_trainer
    from nas.settings import EvolutionSettings, NasSettings
    from nas.spos import auto_score_samples

    train = TrainConfig(dataset="digits", epochs=4, batch_size=64, ratio=0.5, metric="loss", subset=800,
                        val_fraction=0.5, seed=3)
    settings = NasSettings(train=train, channels=4, cells=1,
                           evolution=EvolutionSettings(candidates=20, generations=1, mutations=5, crossovers=5))
    a, b = build_trainer(settings), build_trainer(settings)
    assert a.set_score_subset(100) == b.set_score_subset(100) == 100
    assert torch.equal(a.score_indices, b.score_indices) and a.score_indices.unique().numel() == 100
    other = build_trainer(NasSettings(**{**settings.__dict__, "train": train.replace(seed=4)}))
    other.set_score_subset(100)
    assert not torch.equal(a.score_indices, other.score_indices)
    assert a.set_score_subset(None) == len(a.data.val) and a.score_indices is None
    # auto: scoring K candidates on S images costs at most ~10% of full-data training's 3 x epochs x N
    n = a.selector.num_samples
    assert auto_score_samples(settings.train, settings.evolution, n) == max(256, int(4 * n / (3 * 30)))


def test_nas_automatic_scoring_subset_is_the_full_data_budgets_whatever_the_ratio_and_metric():
    from nas.settings import EvolutionSettings
    from nas.spos import auto_score_samples

    evolution = EvolutionSettings(candidates=30, generations=5, mutations=5, crossovers=5)  # 80 candidates
    full = TrainConfig(epochs=20, ratio=1.0, metric="none")
    sizes = {auto_score_samples(full.replace(ratio=ratio, metric=metric, ratio_schedule=schedule), evolution, 4000)
             for ratio, metric, schedule in ((1.0, "none", "constant"), (0.5, "random", "constant"),
                                             (0.5, "mixture", "constant"), (0.3, "loss", "dynamic"))}
    assert sizes == {333}  # 20 epochs x 4000 images / (3 x 80); a proxy run used to get fewer (256 at r = 0.5)
