"""Packed searches on Ray: every configuration one trial, trained in pack workers. The same scores, stopped
trials and pick as one trial per process, a lost node costing only its own packs, and a killed driver's
search resumed with every trial continuing from its own checkpoint."""

from __future__ import annotations

import json
import subprocess
import threading
from pathlib import Path

import pytest

from asp_tune.tune.builtin import run_hpo
from asp_tune.tune.settings import HpoSettings
from asp_tune.tune.space import parse_space
from asp_tune.tune.storage import trial_reports
from test_faults import Driver, hpo_command, saved_checkpoints, trial_epochs, wait_for, write_space

pytestmark = pytest.mark.slow

SPACE = {"name": "packed", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 9, "subset": 600,
                                     "batch_size": 64, "model_args": {"hidden": 32}},
         "params": {"lr": {"type": "loguniform", "low": 0.005, "high": 0.5},
                    "momentum": {"type": "uniform", "low": 0.0, "high": 0.9}}}


def settings(tmp_path: Path, **given) -> HpoSettings:
    values = {"space": parse_space(SPACE), "algo": "hyperband", "num_samples": 9, "ratio": 0.5, "metric": "loss",
              "ratio_schedule": "constant", "seed": 4, "storage_path": str(tmp_path), "verbose": 0,
              "decide": "proxy", "min_first_rung_steps": 0, **given}
    return HpoSettings(**values)


def by_config(trials):
    return {(round(r["config/lr"], 12), round(r["config/momentum"], 12)): r for _, r in trials.iterrows()}


def test_a_packed_hyperband_search_stops_scores_and_picks_what_one_trial_per_process_does(ray_session, tmp_path):
    # Hyperband decides once every trial of a bracket reached the milestone, so its decisions do not hang on
    # the order results arrive in (ASHA's do, packed or not): the packed search must make exactly the same ones
    alone = run_hpo(settings(tmp_path / "alone", pack="1"))
    packed = run_hpo(settings(tmp_path / "packed", pack="5"))  # Hyperband starts all 9 at once: 2 packs of 5 hold them
    assert packed.summary["packs"]["size"] == 5 and packed.summary["packs"]["fused_epochs"] >= 27
    assert packed.summary["packs"]["notes"] == [] and alone.summary.get("packs") is None
    a, p = by_config(alone.trials), by_config(packed.trials)
    assert set(a) == set(p) and len(a) == 9
    for key in a:
        assert (a[key]["status"], a[key]["epochs"]) == (p[key]["status"], p[key]["epochs"])
        assert a[key]["best_score"] == pytest.approx(p[key]["best_score"], abs=1e-9)
    assert packed.summary["best_config"] == alone.summary["best_config"]
    stopped = [k for k in a if a[k]["epochs"] < 9]
    assert 3 <= len(stopped) < 9  # the brackets decided something


def test_a_packed_bohb_search_pauses_resumes_and_stops_its_trials_in_packs(ray_session, tmp_path):
    result = run_hpo(settings(tmp_path, algo="bohb", pack="5"))
    t, packs = result.trials, result.summary["packs"]
    assert len(t) == 9 and result.summary["num_failed"] == 0 and set(t["status"]) <= {"TERMINATED", "STOPPED"}
    assert packs["size"] == 5 and packs["fused_epochs"] > 0 and packs["notes"] == []
    assert (t["epochs"] == 9).any() and (t["epochs"] < 9).sum() >= 3  # its brackets stopped some at milestones


def test_a_lost_node_costs_only_its_packs_whose_trials_resume_from_their_checkpoints(local_cluster, tmp_path):
    """Two one-CPU nodes, a pack worker on each; remove one node outright. Its trials restart from their
    checkpoints on the surviving worker (no free CPU is left for a new one); the other worker's never restart."""
    cluster = local_cluster({"num_cpus": 0}, workers=2)
    epochs = 100
    s = settings(tmp_path, algo="random", num_samples=4, pack="2", max_failures=3, checkpoint_every_s=0,
                 address=cluster.address, name="lost-pack",
                 space=parse_space({**SPACE, "fixed": {**SPACE["fixed"], "epochs": epochs, "subset": 300}}))
    outcome: dict = {}
    search = threading.Thread(target=lambda: outcome.setdefault("result", run_hpo(s)), daemon=True)
    search.start()
    experiment = tmp_path / "lost-pack"

    def both_workers_training():
        trials = [t for t in experiment.glob("packed_trial_*") if (t / "result.json").exists()]
        reports = {t: trial_reports(t) for t in trials}
        if len(trials) < 4 or any(len(r) < 5 for r in reports.values()):
            return None
        return {r[-1]["pack_worker"]: (r[-1]["node_id"], len(r)) for r in reports.values()}

    workers = wait_for(both_workers_training, 120, "four trials training on two pack workers")
    assert len({node for node, _ in workers.values()}) == 2  # one worker on each node
    removed = min(workers, key=lambda w: workers[w][1])  # the one behind: its trials are far from done
    cluster.remove_node(next(n for n in cluster.worker_nodes if n.node_id == workers[removed][0]),
                        allow_graceful=False)
    search.join(timeout=300)
    result = outcome["result"]
    assert result.summary["num_failed"] == 0 and (result.trials["epochs"] == epochs).all()
    lost, kept = [], []
    for trial in experiment.glob("packed_trial_*"):
        reports = trial_reports(trial)
        restored = {r.get("restored_epoch") for r in reports} - {None}
        (lost if reports[0]["pack_worker"] == removed else kept).append(restored)
        assert sorted({r["epoch"] for r in reports}) == list(range(1, epochs + 1))  # no epoch lost
    assert len(lost) == 2 and all(r and min(r) >= 5 for r in lost)  # from a checkpoint, not from the start
    # never restarted (a trial's actor lives on the head: on the removed node, a kept trial restarted with it)
    assert len(kept) == 2 and all(not r for r in kept), kept


def test_a_killed_driver_resumes_a_packed_search_with_every_trial_from_its_own_checkpoint(tmp_path, monkeypatch):
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1")  # Ray saves its state every second: shorter trials do
    epochs = 200
    space, storage, out = write_space(tmp_path, epochs), tmp_path / "ray", tmp_path / "out"
    command = hpo_command(space, storage, out, "--pack", "2")
    driver = Driver(command, tmp_path / "driver.log")
    experiment = wait_for(lambda: next(iter(storage.glob("asp-*")), None), 60, "the experiment folder", driver)

    def running_with_checkpoints():
        epochs_now = trial_epochs(experiment)
        ready = [t for t, e in epochs_now.items() if 10 <= len(e) < epochs - 60 and saved_checkpoints(experiment, t) >= 2]
        return ready if len(ready) == 4 else None

    running = wait_for(running_with_checkpoints, 240, "four packed trials running with checkpoints", driver)
    driver.kill()
    before = trial_epochs(experiment)
    resumed = subprocess.run(command + ["--resume", str(experiment)], capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    for t in running:
        new = trial_reports(experiment / t)[len(before[t]):]
        restored = {r.get("restored_epoch") for r in new}
        assert len(restored) == 1 and 1 <= next(iter(restored)) <= len(before[t])  # its state, not a restart
        assert [r["epoch"] for r in new][-1] == epochs
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_trials"] == 4 and summary["num_failed"] == 0 and summary["packs"]["size"] == 2


def test_correlate_in_packs_scores_every_cell_as_one_trial_per_process_does(ray_session, tmp_path):
    from asp_tune.tune.builtin import correlate_space

    space = parse_space({"name": "cells", "fixed": {**SPACE["fixed"], "epochs": 2, "subset": 300},
                         "params": {"lr": {"type": "grid", "values": [0.02, 0.05, 0.1]}}})
    given = {"ratios": [0.5], "metrics": ["loss"], "seed": 1, "device": "cpu", "storage_path": str(tmp_path),
             "verbose": 0}
    alone = correlate_space(space, pack="1", **given)["scores"]
    run = correlate_space(space, pack=3, max_concurrent=3, **given)  # 3 workers for 2 packs were refused on 2 cores
    packed = run["scores"]
    assert len(alone) == len(packed) == 6 and (packed["status"] == "TERMINATED").all()
    assert packed["score"].tolist() == pytest.approx(alone["score"].tolist(), abs=1e-9)
    from asp_tune.tune.correlate import write_correlation

    class Folder:
        def write_table(self, name, frame):
            frame.to_csv(tmp_path / name, index=False)

        def file(self, name):
            return tmp_path / name

    summary = write_correlation(Folder(), run, "t", {})  # summary.json says what --pack chose (it said nothing)
    assert summary["pack"]["size"] == 3 and summary["packs"]["workers"] == 2
