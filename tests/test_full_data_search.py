"""Full data decides, end to end on Ray: a constructed misranking problem, a search too small to measure, proxy
trials at chance, asp_tune's own trainable, and a finished search resumed (its audit and ratio changes kept)."""

from __future__ import annotations

import json

import pytest
import torch
from torch.utils.data import TensorDataset

import asp_tune.tune
from asp_tune.errors import ConfigError

pytestmark = pytest.mark.slow

EPOCHS = 4
DATA = TensorDataset(torch.randn(256, 3), torch.randint(0, 2, (256,)))


def _epochs(config, on_epoch):
    """The user's loop over proxy data; ``on_epoch(ratio of the epoch)`` gives the validation score."""
    proxy = asp_tune.tune.proxy_data(config, DATA, epochs=EPOCHS)
    for epoch in range(proxy.epoch + 1, EPOCHS):
        proxy.set_epoch(epoch)
        for idx, _ in proxy.loader(batch_size=64):
            proxy.update(idx, torch.zeros(len(idx)))
        ratio = proxy.plan.count / len(DATA)
        asp_tune.tune.report({"val_accuracy": on_epoch(ratio), "val_constant": 0.5}, proxy)


def misranking(config):
    """On proxy data a configuration scores 1 - x; on all the data, x."""
    _epochs(config, lambda ratio: config["x"] if ratio >= 1.0 else 1.0 - config["x"])


def chance_below_half(config):
    """Below half the data nothing is learnt (chance, 0.5); from half on, a configuration scores 0.5 + 0.4 x."""
    _epochs(config, lambda ratio: 0.5 if ratio < 0.5 else 0.5 + 0.4 * config["x"])


def test_a_misranking_proxy_is_measured_and_full_data_picks(ray_session, tmp_path, capsys):
    from ray import tune

    xs = [i / 11 for i in range(12)]
    result = asp_tune.tune.search(misranking, {"x": tune.grid_search(xs)}, epochs=EPOCHS, ratio=0.3, strategy="random",
                                  scheduler="fifo", num_samples=1, audit=6, seed=0, first_epoch_full=False,
                                  out=tmp_path / "out")
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    section = summary["full_data"]
    assert summary["decided_by"] == "full data" and section["audited"] == 6
    assert (tmp_path / "out" / "full_data.png").stat().st_size > 1000  # proxy against full data, drawn
    audited = result.trials[result.trials["full_data_from"] == "audit"]
    assert sorted(audited["config/x"])[:3] == xs[:3]  # the proxy's best three are always audited
    assert summary["best_config"]["x"] == audited["config/x"].max()  # the best on full data among them
    assert summary["best_score"] == pytest.approx(audited["config/x"].max())
    assert section["measured"] and section["misranks"] and section["trusted"] is False
    assert section["kendall_tau"] == pytest.approx(-1.0) and section["interval"][1] < 0.3
    assert section["regret_of_proxy_pick"] == pytest.approx(audited["config/x"].max() - 0.0)
    assert section["cost"]["audit_wall_time_s"] > 0 and summary["wall_time_s"] > summary["search_wall_time_s"]
    err = capsys.readouterr().err
    assert "warning: the proxy misranks: Kendall tau -1.00 against full data over 6 configurations" in err
    trials = (tmp_path / "out" / "trials.csv").read_text()
    assert "full_data_score" in trials.splitlines()[0]

    # resumed after it finished: the same audit (its record and experiment), not a new one; with the settings
    # it was started with (a proxy setting left out is named)
    with pytest.raises(ConfigError, match=r"proxy_settings=\{'first_epoch_full': False\} \(this call's: \{\}\)"):
        asp_tune.tune.search(misranking, {"x": tune.grid_search(xs)}, epochs=EPOCHS, ratio=0.3, strategy="random",
                             scheduler="fifo", num_samples=1, audit=6, seed=0, resume=summary["experiment_path"])
    again = asp_tune.tune.search(misranking, {"x": tune.grid_search(xs)}, epochs=EPOCHS, ratio=0.3, strategy="random",
                                 scheduler="fifo", num_samples=1, audit=6, seed=0, first_epoch_full=False,
                                 resume=summary["experiment_path"])
    assert again.summary["full_data"]["audit_experiment"] == section["audit_experiment"]
    assert again.summary["best_config"] == summary["best_config"]


def test_a_small_search_says_it_cannot_measure_and_is_never_trusted(ray_session, tmp_path, capsys):
    from ray import tune

    result = asp_tune.tune.search(misranking, {"x": tune.uniform(0, 1)}, epochs=EPOCHS, ratio=0.3, strategy="random",
                                  scheduler="asha", num_samples=8, seed=1)
    err = capsys.readouterr().err
    assert "the pick is made on full data, but how well the proxy ranks cannot be measured" in err and "give audit=6 to train" in err
    section = result.summary["full_data"]
    assert section["measured"] is False and section["trusted"] is None and section["top_rung_on_full_data"]
    top = result.trials[result.trials["full_data_from"] == "top rung"]
    assert len(top) >= 1 and result.summary["best_trial_id"] in set(top["trial_id"])
    assert result.summary["best_score"] == pytest.approx(top["full_data_score"].max())
    assert (result.summary["proxy_trust"] or {}).get("trusted") in (None, False)  # unmeasured is never "trusted"


def passes_told(config):
    """Scores x plus a hundredth of the data passes trained: a score that tells how a trial was trained."""
    proxy = asp_tune.tune.proxy_data(config, DATA, epochs=EPOCHS)
    for epoch in range(proxy.epoch + 1, EPOCHS):
        proxy.set_epoch(epoch)
        for idx, _ in proxy.loader(batch_size=64):
            proxy.update(idx, torch.zeros(len(idx)))
        asp_tune.tune.report({"val_accuracy": config["x"] + 0.01 * proxy.describe()["data_passes"]}, proxy)


def test_a_trainable_s_top_rung_and_audit_train_alike_on_all_the_data_at_any_ratio(ray_session, tmp_path, capsys):
    """Below ratio 0.2 a trial's own ProxyData made strategy "auto" a fixed random subset, which ignored the
    step to ratio 1: the top rung trained on a tenth of the data and was called full data's. And an audited
    configuration trained on all the data from the start, the top rung's only after the last proxy rung: its
    score came from more full-data training, so audits won the pick by protocol, not by configuration."""
    from ray import tune

    result = asp_tune.tune.search(passes_told, {"x": tune.uniform(0, 0.5)}, epochs=EPOCHS, ratio=0.1,
                                  scheduler="asha", num_samples=8, audit=3, seed=1, out=tmp_path / "out",
                                  time_budget_s=3600)
    err = capsys.readouterr().err
    summary, trials = result.summary, result.trials.set_index("trial_id")
    assert summary["metric"] == "random" and summary["ratio_schedule"] == "steps:3=1"
    top = trials[trials["full_data_from"] == "top rung"]
    audited = trials[trials["full_data_from"] == "audit"]
    assert len(top) >= 1 and len(audited) == 3 and "ended the top rung on a subset" not in err
    for trial in top.index:  # the epochs after the last proxy rung on all the data
        assert list(result.histories[trial]["proxy_ratio"].round(2)) == [0.1, 0.1, 0.1, 1.0]
    trained = (trials["full_data_score"] - trials["config/x"]).dropna()
    assert trained.round(4).nunique() == 1  # every full-data score from the same data passes (3 x 0.1 + 1)
    assert trained.iloc[0] == pytest.approx(0.01 * (3 * round(0.1 * len(DATA)) / len(DATA) + 1), abs=1e-6)
    assert "training 3 configurations to the end as a promoted trial" in err
    assert "beyond --time-budget-s, which bound the search alone" in err  # the audit comes on top of a budget
    assert "outside --time-budget-s" in summary["full_data"]["cost"]["note"]
    assert "reports no val_constant" in err  # the search cannot tell proxy trials at chance: it says so


def test_proxy_trials_at_chance_raise_the_ratio_of_the_configurations_started_later(ray_session, tmp_path, capsys):
    from ray import tune

    result = asp_tune.tune.search(chance_below_half, {"x": tune.uniform(0, 1)}, epochs=EPOCHS, ratio=0.3,
                                  strategy="random", scheduler="asha", num_samples=8, max_concurrent=1, seed=2,
                                  out=tmp_path / "out")
    changes = result.summary["full_data"]["ratio_changes"]
    assert len(changes) >= 1 and changes[0]["before"] == 0.3 and changes[0]["after"] == 0.6
    assert "at chance" in changes[0]["why"] and changes[0]["evidence"]["trials"] >= 3
    assert "configurations started from now on train on ratio 0.6 (was 0.3" in capsys.readouterr().err
    epochs = result.histories
    starts = sorted({float(h["start_ratio"].iloc[0]) for h in epochs.values()})
    assert starts[0] == 0.3 and starts[-1] >= 0.6  # the later trials started on the raised ratio
    learnt = [h for h in epochs.values() if float(h["start_ratio"].iloc[0]) >= 0.6]
    assert learnt and all(h["val_accuracy"].iloc[0] > 0.5 for h in learnt)  # they learn at the first rung
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["full_data"]["ratio_changes"] == changes


def test_asp_tunes_own_search_ends_its_top_rung_on_full_data(ray_session, tmp_path, capsys):
    from asp_tune.tune.builtin import run_hpo
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space

    space = parse_space({"name": "top", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 4, "subset": 500,
                                                  "batch_size": 32},
                         "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.3}}})
    settings = HpoSettings(space=space, algo="asha", ratio=0.3, num_samples=6, device="cpu", verbose=0,
                           min_first_rung_steps=0, storage_path=str(tmp_path / "ray"), audit=2)
    result = run_hpo(settings)
    s = result.summary
    assert s["ratio_schedule"] == "steps:3=1" and s["decided_by"] == "full data"
    top = result.trials[result.trials["full_data_from"] == "top rung"]
    assert len(top) >= 1 and (top["epochs"] == 4).all()
    for trial in top["trial_id"]:  # the last epoch trained on all the data
        hist = result.histories[trial]
        assert float(hist["data_passes"].iloc[-1] - hist["data_passes"].iloc[-2]) == pytest.approx(1.0, abs=0.01)
    audited = result.trials[result.trials["full_data_from"] == "audit"]
    assert len(audited) == 2 and s["best_trial_id"] in set(top["trial_id"]) | set(audited["trial_id"])
    # an audited configuration trains as a promoted one: 3 epochs at 0.3, then 1 on all the data
    assert s["full_data"]["cost"]["data_passes"] == pytest.approx(len(top) * 1.0 + 2 * 1.9, abs=0.05)
    assert "full data decided the pick" in capsys.readouterr().err
