"""Hyper-Tune on Ray Tune: a whole search of a scripted trainable, the CLI with ratio rungs, a user's own
trainable, and a killed driver resumed."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from asp_tune.tune.storage import trial_reports
from test_faults import Driver, wait_for

pytestmark = pytest.mark.slow

MAX_T = 9


def scripted(config):
    """Score rises with epochs towards 1 - (lr - 0.3)^2; early epochs favour large lr (a misranking proxy).
    Checkpointed every epoch, so a paused trial resumes where it stopped."""
    from ray import tune

    start = 0
    checkpoint = tune.get_checkpoint()
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            start = json.loads((Path(folder) / "state.json").read_text())["epoch"]
    lr = config["lr"]
    for epoch in range(start + 1, MAX_T + 1):
        began = time.time()
        time.sleep(0.05)
        progress = epoch / MAX_T
        score = progress * (1 - (lr - 0.3) ** 2) + (1 - progress) * lr
        with tempfile.TemporaryDirectory() as folder:
            (Path(folder) / "state.json").write_text(json.dumps({"epoch": epoch}))
            tune.report({"val_accuracy": score, "epoch": epoch, "began": began, "ended": time.time(),
                         "resumed_from": start}, checkpoint=tune.Checkpoint.from_directory(folder))


@pytest.fixture(scope="module")
def ray_session():
    import ray

    from conftest import ray_with

    ray_with(4)  # 2 trials at most at once, where Ray would start 4
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the scripted trainable, for Ray's workers
    yield
    ray.cloudpickle.unregister_pickle_by_value(sys.modules[__name__])
    ray.shutdown()  # the modules after this one share a session of 2


def test_a_hypertune_search_pauses_at_rungs_resumes_from_checkpoints_and_keeps_its_concurrency(ray_session, tmp_path):
    from ray import tune

    from asp_tune.tune.hypertune_ray import hypertune

    scheduler, searcher = hypertune(MAX_T, num_samples=14, max_concurrent=2, metric="val_accuracy", mode="max",
                                    seed=0)
    grid = tune.Tuner(scripted, param_space={"lr": tune.uniform(0.0, 1.0)},
                      tune_config=tune.TuneConfig(scheduler=scheduler, search_alg=searcher, num_samples=14),
                      run_config=tune.RunConfig(name="ht", storage_path=str(tmp_path), verbose=0)).fit()
    state = scheduler.state
    assert len(grid) == 14 and not grid.errors
    reports = {r.path: trial_reports(Path(r.path)) for r in grid}
    for rows in reports.values():
        epochs = [r["epoch"] for r in rows]
        assert epochs == list(range(1, epochs[-1] + 1))  # continued from its checkpoint, never from the start
        assert epochs[-1] in state.rungs  # a trial ends only at a rung of its bracket or the top
    assert max(r[-1]["epoch"] for r in reports.values()) == MAX_T
    resumed = [r for rows in reports.values() for r in rows if r["resumed_from"] > 0]
    assert resumed and all(r["epoch"] > r["resumed_from"] for r in resumed)
    # never more than max_concurrent epochs training at once (a waiting trial holds no worker)
    spans = sorted((r["began"], r["ended"]) for rows in reports.values() for r in rows)
    events = sorted([(b, 1) for b, _ in spans] + [(e, -1) for _, e in spans])
    running = peak = 0
    for _, step in events:
        running += step
        peak = max(peak, running)
    assert peak <= 2
    summary = state.summary()
    assert sum(summary["configurations_per_bracket"]) == 14
    for promoted, bracket in zip(summary["promotions"].values(), state.brackets):
        for rung, count in enumerate(promoted[:-1]):
            assert count <= max(1, len(bracket.results[rung]) // 3)
    assert not state.waiting and not state.active


def test_hpo_hypertune_with_ratio_rungs_counts_the_passes_it_spent(ray_session, tmp_path, command_here):
    space = tmp_path / "space.yaml"
    space.write_text("name: ht\nfixed: {dataset: digits, model: mlp, epochs: 9, subset: 500, batch_size: 64}\n"
                     "params:\n  lr: {type: loguniform, low: 0.01, high: 0.5}\n")
    out = tmp_path / "out"
    done = command_here("hpo", "--space", space, "--algo", "hypertune", "--rung-ratios", "0.25,0.5,1", "--num-samples",
                        "8", "--verbose", "0", "--out", out)
    assert done.returncode == 0, done.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["algo"] == "hypertune" and summary["rung_ratios"] == [0.25, 0.5, 1.0]
    assert summary["ratio"] == 0.25 and summary["settings"]["ratio_schedule"] == "steps:1=0.5,3=1"
    assert summary["num_trials"] == 8 and summary["num_failed"] == 0
    assert sum(summary["hypertune"]["configurations_per_bracket"]) == 8
    assert summary["validation_epochs"] == [1, 3, 9]
    assert summary["proxy_trust"]["rungs"] == [1, 3, 9]
    import pandas as pd

    epochs = pd.read_csv(out / "trial_epochs.csv")
    per_epoch = epochs.sort_values(["trial_id", "epoch"]).groupby("trial_id")["data_passes"].diff().fillna(
        epochs.sort_values(["trial_id", "epoch"])["data_passes"])
    ratio_of = {1: 0.25, 2: 0.5, 3: 0.5}
    for (_, row), cost in zip(epochs.sort_values(["trial_id", "epoch"]).iterrows(), per_epoch):
        assert cost == pytest.approx(ratio_of.get(int(row["epoch"]), 1.0), abs=0.01)
    trials = pd.read_csv(out / "trials.csv")
    assert summary["data_passes_total"] == pytest.approx(trials["data_passes"].sum())


def test_a_user_trainable_under_hypertune(ray_session, tmp_path):
    from ray import tune

    import asp_tune.tune
    from asp_tune import ConfigError

    with pytest.raises(ConfigError, match="search_alg"):
        asp_tune.tune.search(scripted, {"lr": tune.uniform(0, 1)}, epochs=MAX_T, scheduler="hypertune",
                             search_alg="tpe")
    result = asp_tune.tune.search(scripted, {"lr": tune.uniform(0.0, 1.0)}, epochs=MAX_T, ratio=0.5,
                                  scheduler="hypertune", num_samples=8, storage_path=str(tmp_path / "ray"))
    assert result.summary["num_trials"] == 8 and result.summary["num_failed"] == 0
    assert result.summary["algo"] == "HyperTuneScheduler + HyperTuneSearcher"
    assert set(result.trials["epochs"]) <= {1, 3, 9} and 9 in set(result.trials["epochs"])


def test_a_killed_hypertune_driver_resumes_with_its_brackets_and_promotions(tmp_path):
    import psutil

    space = tmp_path / "space.yaml"
    space.write_text("name: htfault\nfixed: {dataset: digits, model: mlp, epochs: 45, subset: 400, "
                     "batch_size: 64}\nparams:\n  lr: {type: loguniform, low: 0.02, high: 0.3}\n")
    storage, out = tmp_path / "ray", tmp_path / "out"
    command = [sys.executable, "-m", "asp_tune", "hpo", "--space", str(space), "--algo", "hypertune", "--ratio",
               "0.5", "--metric", "loss", "--num-samples", "8", "--grace-period", "5", "--max-concurrent", "2",
               "--storage-path", str(storage), "--verbose", "0", "--out", str(out)]
    # Ray saves its state every second here, not every 10 s: these trials are over in seconds, and the
    # state must show two waiting trials before the driver is killed
    env = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}
    driver = Driver(command, tmp_path / "driver.log", env=env)

    def paused_trials(experiment: Path) -> int:  # trials with a report at the first rung, saved in the state
        states = list(experiment.glob("searcher-state-*.pkl"))
        return 0 if not states else len(json.loads(states[0].read_text())["waiting"])

    def experiment_with_paused_trials() -> Path | None:
        experiment = next(iter(storage.glob("asp-*")), None)
        return experiment if experiment is not None and paused_trials(experiment) >= 2 else None

    experiment = wait_for(experiment_with_paused_trials, 240, "two trials waiting at a rung", driver)
    session = [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
    driver.kill()
    while any(psutil.pid_exists(p) and psutil.Process(p).status() != "zombie" for p in session):
        time.sleep(0.2)
    # the resume starts from the signed copy of the state (asp_tune.tune.signing), taken after the last step
    # with a report: a trial Ray added after it is not part of what resumes
    import base64

    from asp_tune.tune.signing import SIGNED_COPY

    signed = json.loads((experiment / SIGNED_COPY).read_text())["files"]
    saved = json.loads(base64.b64decode(next(v for k, v in signed.items() if k.startswith("searcher-state-"))))
    resumed = subprocess.run(command + ["--resume", str(experiment)], capture_output=True, text=True, timeout=400,
                             env=env)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_trials"] == 8 and summary["num_failed"] == 0
    final = json.loads(sorted(experiment.glob("searcher-state-*.pkl"))[-1].read_text())  # the resumed session's
    assert {t: b for t, b in final["bracket_of"].items() if t in saved["bracket_of"]} == saved["bracket_of"]
    rungs = summary["hypertune"]["rungs"]
    for trial in (p for p in experiment.iterdir() if p.is_dir()):
        trial_id = trial.name.split("_")[2]  # proxy_trial_<id>_<n>_<config>_<date>
        if trial_id not in final["bracket_of"]:  # made after the last signed state: not part of what resumed
            assert trial_id not in saved["bracket_of"], trial.name
            continue
        epochs = [r["epoch"] for r in trial_reports(trial)]
        assert epochs[-1] in rungs
        # a trial waiting at a rung when the driver died goes on only when promoted: from that rung's checkpoint
        assert sorted(set(epochs)) == list(range(1, epochs[-1] + 1))
