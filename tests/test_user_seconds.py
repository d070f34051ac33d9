"""How a search() trial of a user's own trainable is timed: the trainable's seconds but for its reports, its
start-up the rest of Ray's time in the trial, both kept across a restart (no Ray needed)."""

from __future__ import annotations

import time
from pathlib import Path
from types import SimpleNamespace

import pandas as pd
import pytest
import torch
from torch.utils.data import TensorDataset

from asp_tune.tune import user
from asp_tune.tune.collect import collect_trials


@pytest.fixture()
def clock(monkeypatch) -> list[float]:
    """``time.perf_counter`` ahead of the real one by what a test adds to ``clock[0]``: waits of 100 s in no time,
    so no figure depends on how busy the machine is."""
    real, ahead = time.perf_counter, [0.0]
    monkeypatch.setattr(time, "perf_counter", lambda: real() + ahead[0])
    return ahead


@pytest.fixture()
def reports(monkeypatch, clock):
    """Ray's ``tune.report`` and ``get_checkpoint`` stood in for: each report's metrics and checkpoint state."""
    from ray import tune

    said: list[tuple[dict, dict]] = []

    def report(metrics, checkpoint=None):
        state = torch.load(Path(checkpoint.path) / user.CHECKPOINT_FILE, weights_only=True)
        said.append((metrics, state))
        clock[0] += 100.0  # a report waiting 100 s for Ray's controller: not training, not in Ray's time either

    monkeypatch.setattr(tune, "report", report)
    monkeypatch.setattr(tune, "get_checkpoint", lambda: None)
    return said


def _data() -> TensorDataset:
    return TensorDataset(torch.randn(40, 3), torch.arange(40) % 2)


def test_a_trial_reports_the_trainable_s_seconds_without_its_reports_and_keeps_them_across_a_restart(
        reports, clock, monkeypatch):
    monkeypatch.setattr(user, "_CALLED_AT", time.perf_counter() - 500.0)  # the trainable was called 500 s ago
    proxy = user.proxy_data({}, _data(), epochs=3)
    user.report({"val_accuracy": 0.5}, proxy)
    clock[0] += 200.0  # 200 s of training
    user.report({"val_accuracy": 0.6}, proxy)
    (first, _), (second, state) = reports
    assert 500.0 <= first["train_seconds_total"] < 550 and first["report_seconds_total"] == 0.0
    assert 0 < second["report_seconds_total"] < 50  # the first report's saving, not its 100 s wait
    assert second["train_seconds_total"] - first["train_seconds_total"] == pytest.approx(200, abs=50)
    assert state[user.SECONDS_KEY] == {"train": second["train_seconds_total"],
                                       "reports": second["report_seconds_total"]}

    from ray import tune

    saved = state  # a restarted trial (a new worker) goes on from its checkpoint's seconds
    monkeypatch.setattr(tune, "get_checkpoint", lambda: SimpleNamespace(as_directory=lambda: _folder_with(saved)))
    monkeypatch.setattr(user, "_CALLED_AT", time.perf_counter())
    again = user.proxy_data({}, _data(), epochs=3)
    assert again.restored == {}  # the seconds are not part of the user's state
    user.report({"val_accuracy": 0.7}, again)
    third = reports[-1][0]
    assert third["train_seconds_total"] == pytest.approx(second["train_seconds_total"], abs=50)  # not 300 more
    assert third["report_seconds_total"] == pytest.approx(second["report_seconds_total"])


def test_outside_a_search_no_seconds_are_reported(reports, monkeypatch):
    monkeypatch.setattr(user, "_CALLED_AT", None)
    user.report({"val_accuracy": 0.5}, user.proxy_data({}, _data(), epochs=2))
    metrics, state = reports[0]
    assert "train_seconds_total" not in metrics and user.SECONDS_KEY not in state


def test_a_trial_s_start_up_is_ray_s_time_in_it_but_for_the_trainable_s_and_its_reports():
    def result(**columns):
        frame = pd.DataFrame({"epoch": [1, 2], "val_accuracy": [0.5, 0.6], **columns})
        return SimpleNamespace(metrics_dataframe=frame, metrics={"trial_id": f"t{len(columns)}"}, path=None,
                               config={}, error=None)

    trials, _ = collect_trials([
        result(time_total_s=[3.0, 3.4], train_seconds_total=[0.5, 0.8], report_seconds_total=[0.0, 0.1]),
        result(time_total_s=[1.0, 2.0])], [])  # a trainable that reports no seconds: Ray's clock, no start-up
    assert trials["startup_seconds"].tolist() == pytest.approx([2.5, 0.0])
    assert trials["seconds"].tolist() == pytest.approx([0.8, 2.0])


def _folder_with(state: dict):
    import contextlib
    import tempfile

    @contextlib.contextmanager
    def folder():
        with tempfile.TemporaryDirectory() as path:
            torch.save(state, Path(path) / user.CHECKPOINT_FILE)
            yield path

    return folder()


def test_a_trainable_agrees_with_what_its_search_set_and_an_object_is_refused_by_name(reports):
    from asp_tune.errors import ConfigError
    from asp_tune.strategies import make_strategy

    config = {user.TRIAL_KEY: {"ratio": 0.5, "metric": "random", "first_epoch_full": False, "seed": 3}}
    assert user.proxy_data(config, _data(), epochs=3).strategy.name == "random"
    # the search's setting wins where the trainable agrees or says auto; a compare's control (random) or full-data
    # baseline (none) must not train the trainable's own loss under their names
    for agreeing in ({"strategy": "random"}, {"strategy": "auto"}, {"ratio": 0.5}, {"seed": 3}):
        assert user.proxy_data(config, _data(), epochs=3, **agreeing).strategy.name == "random"
    with pytest.raises(ConfigError, match="invalid strategy='loss': allowed left out, or 'random': the search set it"):
        user.proxy_data(config, _data(), epochs=3, strategy="loss")
    with pytest.raises(ConfigError, match="invalid ratio=0.3: allowed left out, or 0.5"):
        user.proxy_data(config, _data(), epochs=3, ratio=0.3)
    alone = user.proxy_data({}, _data(), epochs=3, strategy="loss", ratio=0.3)  # outside a search: its own
    assert (alone.strategy.name, alone.strategy.ratio) == ("loss", 0.3)
    assert user.proxy_data(config, _data(), epochs=3, selection_rule="zscore").selector.settings.selection_rule == "zscore"
    with pytest.raises(ConfigError, match="invalid strategy='Importance': allowed a strategy's name in a search"):
        user.proxy_data(config, _data(), epochs=3, strategy=make_strategy("loss"))
