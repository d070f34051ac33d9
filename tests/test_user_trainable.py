"""A user's own Ray Tune function trainable through asp_tune.tune.search and compare."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import asp_tune.tune
from asp_tune import ConfigError

pytestmark = pytest.mark.slow

EPOCHS = 4


def data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g)
    y = (x[:, 0] - x[:, 1] > 0).long()
    return TensorDataset(x[:300], y[:300]), x[300:], y[300:]


def trainable(config):
    """The user's own trainable: the loop API inside, one report (and checkpoint) per epoch."""
    train, val_x, val_y = data()
    proxy = asp_tune.tune.proxy_data(config, train, epochs=EPOCHS)
    torch.manual_seed(0)
    model = nn.Linear(6, 2)
    opt = torch.optim.SGD(model.parameters(), lr=config["lr"])
    if proxy.restored:
        model.load_state_dict(proxy.restored["model"])
    for epoch in range(proxy.epoch + 1, EPOCHS):
        proxy.set_epoch(epoch)
        for idx, (x, y) in proxy.loader(batch_size=32):
            logits = model(x)
            proxy.update(idx, F.cross_entropy(logits, y, reduction="none"), logits=logits, targets=y).backward()
            opt.step(); opt.zero_grad()
        with torch.no_grad():
            acc = float((model(val_x).argmax(1) == val_y).float().mean())
        asp_tune.tune.report({"val_accuracy": acc, "ratio_given": config["asp_tune"]["ratio"]}, proxy,
                             model=model.state_dict())


def test_a_user_trainable_with_an_asha_object_and_an_optuna_searcher(ray_session, tmp_path):
    import optuna
    from ray import tune
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    result = asp_tune.tune.search(
        trainable, {"lr": tune.loguniform(1e-3, 1.0)}, epochs=EPOCHS, ratio=0.25,
        scheduler=ASHAScheduler(time_attr="training_iteration", max_t=EPOCHS, grace_period=1, metric="val_accuracy",
                                mode="max"),
        search_alg=OptunaSearch(sampler=optuna.samplers.TPESampler(seed=0), metric="val_accuracy", mode="max"),
        # a passes budget that all 6 trials fit in however ASHA promotes them (at most 6 x 3.25 passes; with 10,
        # a run whose first trials were all promoted stopped after 4)
        num_samples=6, time_budget_s=400, data_passes_budget=80, storage_path=str(tmp_path / "ray"),
        out=tmp_path / "out")
    summary, trials = result.summary, result.trials
    assert summary["num_trials"] == 6 and summary["num_failed"] == 0
    # x the data share of an epoch of a trial run to its end: 0.25 before the top rung (epoch 1), 1 from it
    assert summary["budget"]["scale"] == pytest.approx((0.25 + 3 * 1.0) / 4)
    assert summary["budget"]["time_budget_s"] == pytest.approx(325)
    assert summary["budget"]["data_passes"] == pytest.approx(65)
    # early stopping: never a full first pass; every epoch below the top rung used a quarter of the data, and the
    # top rung (full data decides the pick) all of it
    assert summary["first_epoch_full"] is False and summary["metric"] == "random"
    top = summary["proxy_trust"]["rungs"][-2]
    assert all(abs(p - 0.25 * min(e, top) - max(0, e - top)) < 0.01 for p, e in zip(trials["data_passes"],
                                                                                   trials["epochs"]))
    assert summary["decided_by"] == "full data" and summary["full_data"]["top_rung_trials"] >= 1
    # timed by the trainable's own clock (its reports apart), Ray's time before it is start-up: the full-data
    # part's cost is not 0
    assert (trials["seconds"] > 0).all() and (trials["startup_seconds"] >= 0).all()
    assert summary["trial_seconds"]["startup"] > 0  # the workers' imports before the trainable ran
    cost = summary["full_data"]["cost"]
    assert cost["wall_time_s"] > 0 and 0 < cost["share_of_wall"] < 1 and cost["top_rung_train_seconds"] > 0
    assert 0.0 < summary["best_val_accuracy"] <= 1.0 and set(summary["best_config"]) == {"lr"}
    written = json.loads((tmp_path / "out" / "summary.json").read_text())
    builtin_keys = {"algo", "ratio", "metric", "best_config", "best_val_accuracy", "num_trials", "num_failed",
                    "wall_time_s", "data_passes_total", "budget", "experiment_path", "first_epoch_full"}
    assert builtin_keys <= set(written)  # the shape of the built-in path's summary
    assert (tmp_path / "out" / "trials.csv").is_file()


def test_compare_a_user_trainable_against_full_data(ray_session, tmp_path):
    from ray import tune

    # six configurations: correlations are measured from six pairs on (fewer report none)
    lrs = [0.003, 0.01, 0.03, 0.1, 0.3, 1.0]
    report = asp_tune.tune.compare_trainable(trainable, {"lr": tune.grid_search(lrs)}, epochs=EPOCHS,
                                   ratios=(1.0, 0.5), scheduler="fifo", num_samples=1, decide="proxy",
                                   storage_path=str(tmp_path / "ray"), out=tmp_path / "cmp")
    arms = report["table"]
    assert list(zip(arms["ratio"], arms["arm"], arms["metric"])) == [(1.0, "full data", "none"), (0.5, "proxy", "loss"),
                                                                    (0.5, "control", "random")]
    assert arms["data_passes_total"].iloc[2] == pytest.approx(arms["data_passes_total"].iloc[1])  # of the same cost
    table = arms[arms["arm"] != "control"].set_index("ratio")
    assert table.loc[1.0, "pairs"] == 0 and table.loc[0.5, "pairs"] == 6 and table.loc[0.5, "measured"]
    assert table.loc[1.0, ["kendall_tau", "r2", "spearman"]].isna().all()  # full data has nothing to correlate
    assert table.loc[0.5, ["kendall_tau", "r2", "spearman"]].notna().all()
    assert table.loc[0.5, "data_passes"] < table.loc[1.0, "data_passes"]
    assert 0.0 < table.loc[0.5, "retrained_score"] <= 1.0 and "kendall_tau" in table
    assert (tmp_path / "cmp" / "comparison.csv").is_file()


def unseeded(config):
    """A trainable that draws from the global generators, as a network's initialisation does."""
    import random

    import numpy as np

    train, _, _ = data()
    proxy = asp_tune.tune.proxy_data(config, train, epochs=2)
    for epoch in range(proxy.epoch + 1, 2):
        proxy.set_epoch(epoch)
        for idx, (x, y) in proxy.loader(batch_size=100):
            proxy.update(idx, torch.zeros(len(idx)))
        score = float(torch.rand(())) + float(np.random.rand()) + random.random()
        asp_tune.tune.report({"val_accuracy": score}, proxy)


def test_every_trial_starts_from_the_search_s_seed_in_a_reused_worker(ray_session, tmp_path):
    from ray import tune

    result = asp_tune.tune.search(unseeded, {"lr": tune.grid_search([0.1, 0.1, 0.1])}, epochs=2, ratio=0.5,
                                  scheduler="fifo", num_samples=1, max_concurrent=1, decide="proxy", seed=3,
                                  storage_path=str(tmp_path / "ray"))
    scores = result.trials["final_score"].tolist()
    assert len(scores) == 3 and scores[0] == scores[1] == scores[2]  # one worker, three trials: the same draws
    from pathlib import Path

    from asp_tune.tune.storage import trial_reports

    trials = [p for p in Path(result.summary["experiment_path"]).iterdir() if p.is_dir()]
    workers = {r["pid"] for t in trials for r in trial_reports(t)}  # Ray's own field in every report
    assert len(trials) == 3 and len(workers) == 1  # one reused worker: unseeded, its generators would move on
    again = asp_tune.tune.search(unseeded, {"lr": 0.1}, epochs=2, ratio=0.5, scheduler="fifo", num_samples=1,
                                 decide="proxy", seed=4, storage_path=str(tmp_path / "ray"))
    assert again.trials["final_score"].iloc[0] != scores[0]  # another seed, other draws


def test_bad_arguments_are_named_errors(ray_session):
    with pytest.raises(ConfigError, match="invalid scheduler='nope'"):
        asp_tune.tune.search(trainable, {}, epochs=2, scheduler="nope")
    with pytest.raises(ConfigError, match="invalid ratio=2"):
        asp_tune.tune.search(trainable, {}, epochs=2, ratio=2)
    with pytest.raises(ConfigError, match="invalid param_space='asp_tune'"):
        asp_tune.tune.search(trainable, {"asp_tune": 1}, epochs=2)


def test_correlate_a_user_trainable_cell_by_cell(ray_session, tmp_path):
    from ray import tune

    table = asp_tune.tune.correlate_trainable(trainable, {"lr": tune.grid_search([0.003, 0.03, 0.3, 3.0])},
                                              epochs=EPOCHS, ratios=(0.5,), strategies=("random", "loss"),
                                              storage_path=str(tmp_path / "ray"), out=tmp_path / "corr")
    assert list(table["asked"]) == ["random", "loss"] and (table["pairs"] == 4).all()
    assert table["kendall_tau"].between(-1, 1).all() and (table["data_passes"] > 0).all()
    assert (tmp_path / "corr" / "correlation.csv").is_file()
