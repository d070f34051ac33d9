"""Successive halving over packs stops the same configurations and picks the same one as one at a time."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from asp_tune.config import TrainConfig
from asp_tune.tune.fused import keep_best, successive_halving
from test_pack import DataDependent  # a network whose forward branches on its values

BASE = TrainConfig(dataset="digits", model="mlp", epochs=3, subset=300, batch_size=32, ratio=0.5, metric="loss",
                   first_epoch_full=False, model_args={"hidden": 32})
LRS = [0.003, 0.3, 0.01, 0.1, 0.001, 0.03, 0.2, 0.05]


def test_keep_best_keeps_the_top_share_and_breaks_ties_by_order():
    assert keep_best({0: 0.5, 1: 0.9, 2: 0.9, 3: 0.1}, 2) == {1, 2}
    assert keep_best({0: 0.5, 1: 0.9, 2: 0.9}, 3) == {1}
    assert keep_best({0: 0.5, 1: 0.9, 2: 0.1}, 2, mode="min") == {2, 0}


def test_halving_in_packs_stops_and_picks_as_one_at_a_time():
    configs = [dataclasses.replace(BASE, lr=lr) for lr in LRS]
    alone = successive_halving(configs, [1, 3], eta=2, pack_size=1)
    packed = successive_halving(configs, [1, 3], eta=2, pack_size=4)
    assert packed.pack.size == 4 and alone.pack.size == 1
    for result in (alone, packed):
        assert sorted(result.trials["epochs"]) == [1, 1, 1, 1, 3, 3, 3, 3]
    assert alone.best == packed.best is not None
    stopped = lambda r: sorted(r.trials[r.trials["status"] == "STOPPED"]["config"])  # noqa: E731
    assert stopped(alone) == stopped(packed) and len(stopped(alone)) == 4
    merged = alone.history.merge(packed.history, on=["config", "epoch"], suffixes=("_alone", "_packed"))
    assert len(merged) == len(alone.history) == 16
    assert (merged["val_score_alone"] - merged["val_score_packed"]).abs().max() < 1e-6


def test_a_diverging_configuration_fails_alone_and_the_rest_go_on():
    configs = [dataclasses.replace(BASE, lr=lr) for lr in LRS[:3]] + [
        dataclasses.replace(BASE, lr=1e12, momentum=0.0, weight_decay=0.0)]  # its loss is NaN alone too
    result = successive_halving(configs, [1, 2], eta=2, pack_size=4)
    trials = result.trials.set_index("config")
    assert trials.loc[3, "status"] == "ERROR" and "lower the learning rate" in trials.loc[3, "error"]
    assert result.best in (0, 1, 2)


def test_a_network_that_cannot_be_fused_falls_back_with_a_note():
    configs = [dataclasses.replace(BASE, lr=lr) for lr in LRS[:4]]
    result = successive_halving(configs, [1, 2], eta=2, pack_size=4, model=lambda data: DataDependent())
    assert any(note.startswith("not fused: the network cannot run vectorised") for note in result.notes)
    assert result.best is not None and (result.trials["status"] != "ERROR").all()


class TiedMLP(torch.nn.Module):
    """An encoder and a decoder sharing one weight, then a head: tied weights."""

    def __init__(self):
        super().__init__()
        self.encode, self.decode, self.head = torch.nn.Linear(64, 64), torch.nn.Linear(64, 64), torch.nn.Linear(64, 10)
        self.decode.weight = self.encode.weight

    def forward(self, x):
        return self.head(self.decode(self.encode(x.flatten(1))))


@pytest.mark.parametrize("pack_size", [4, "auto"])
def test_tied_weights_are_not_fused_and_train_one_at_a_time_with_a_note(pack_size):
    configs = [dataclasses.replace(BASE, lr=lr) for lr in LRS[:4]]
    result = successive_halving(configs, [1, 2], eta=2, pack_size=pack_size, model=lambda data: TiedMLP())
    assert any("tied weights" in note for note in result.notes), result.notes
    assert result.best is not None and (result.trials["status"] != "ERROR").all()


def test_auto_says_what_it_chose_and_why():
    configs = [dataclasses.replace(BASE, lr=lr) for lr in LRS[:4]]
    result = successive_halving(configs, [1], eta=2, pack_size="auto")
    assert result.pack.size in (1, 4)
    assert result.notes[0].startswith("packs of 4" if result.pack.size == 4 else "not fused")
    assert "configurations on the run's batches of 32" in result.notes[0]
    assert result.pack.alone_step_s > 0 and result.pack.pack_step_s > 0


def test_auto_s_measurement_leaves_the_first_configuration_s_batches_alone():
    configs = [dataclasses.replace(BASE, lr=lr) for lr in LRS[:4]]
    measured = successive_halving(configs, [2], eta=2, pack_size="auto")
    alone = successive_halving(configs, [2], eta=2, pack_size=1)
    merged = alone.history.merge(measured.history, on=["config", "epoch"], suffixes=("_alone", "_auto"))
    assert len(merged) == 8 and (merged["train_loss_alone"] - merged["train_loss_auto"]).abs().max() < 1e-6


class ThreeKinds(torch.nn.Module):
    """A convolution and a head; ``normed``: a layer norm between (under CPU autocast a pack would compute it in
    float32, alone in bf16); ``evaluation``: a branch on the data in evaluation only (a pack cannot validate it)."""

    def __init__(self, kind: str = "plain"):
        super().__init__()
        self.kind = kind
        self.conv, self.norm = torch.nn.Conv2d(1, 4, 3, padding=1), torch.nn.LayerNorm(8)
        self.head = torch.nn.Linear(256, 10)

    def forward(self, x):
        x = self.conv(x.view(-1, 1, 8, 8))
        if self.kind == "normed":
            x = self.norm(x)
        if self.kind == "evaluation" and not self.training and x.sum() > 0:
            x = x * 1.0
        return self.head(x.flatten(1))


def test_every_kind_is_checked_before_it_trains_its_precision_and_its_evaluation_included(cpu_autocast):
    """Only the first kind was checked: a later one that computes in another precision in a pack was packed
    without a word, one that cannot evaluate vectorised crashed the search."""
    from asp_tune.registry import MODELS

    MODELS.register("three_kinds_test", lambda input_shape, num_classes, kind="plain": ThreeKinds(kind))
    try:
        base = dataclasses.replace(BASE, model="three_kinds_test", model_args={}, amp=True)
        configs = [dataclasses.replace(base, lr=lr, model_args={"kind": kind})
                   for kind in ("plain", "normed", "evaluation") for lr in (0.05, 0.1)]
        packed = successive_halving(configs, [1, 2], eta=1, pack_size=2)
        alone = successive_halving(configs, [1, 2], eta=1, pack_size=1)
    finally:
        MODELS.unregister("three_kinds_test")
    assert (packed.trials["status"] == "TERMINATED").all(), packed.trials
    refused = packed.notes[1:]
    assert len(refused) == 2 and refused[0].startswith("not fused: under autocast a pack would compute layer_norm in "
                                                       "float32, alone in bfloat16")
    assert "{'kind': 'normed'}" in refused[0] and "{'kind': 'evaluation'}" in refused[1]
    assert "data-dependent control flow" in refused[1]
    history = alone.history.merge(packed.history, on=["config", "epoch"], suffixes=("_alone", "_packed"))
    trained_alone = history[history["config"] >= 2]  # the refused kinds: exactly as one at a time
    assert len(trained_alone) == 8 and (trained_alone["val_score_alone"] == trained_alone["val_score_packed"]).all()
