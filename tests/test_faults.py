"""Faults a search must survive: the driver killed outright, a worker node lost mid-trial, a damaged
checkpoint. Each is asserted from the records the trials leave (``result.json`` rows, checkpoints)."""

from __future__ import annotations

import contextlib
import json
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from asp_tune.memory import ProxyMemory
from asp_tune.tune.builtin import run_hpo
from asp_tune.tune.settings import HpoSettings
from asp_tune.tune.space import parse_space
from asp_tune.tune.storage import trial_reports
from asp_tune.tune.trainable import CHECKPOINT_FILE, proxy_trial

pytestmark = pytest.mark.slow

# about 0.015 s each (a checkpoint only every second): a trial lasts about 7 s, so Ray's state, saved every
# second here (:func:`state_saved_every_second`), finds one trial finished and another running mid-way. At 300
# epochs the window (two saved checkpoints, and 60 epochs still to go) was about a second, and was missed once.
EPOCHS = 450


@pytest.fixture()
def state_saved_every_second(monkeypatch):
    """Ray saves an experiment's state every second, not every 10 s (drivers started here inherit it): the
    windows the killed-driver tests kill a driver in come within seconds."""
    monkeypatch.setenv("TUNE_GLOBAL_CHECKPOINT_S", "1")


def write_space(folder: Path, epochs: int = EPOCHS) -> Path:
    space = folder / "space.yaml"
    space.write_text(f"name: faults\nfixed: {{dataset: digits, model: mlp, epochs: {epochs}, subset: 400, "
                     "batch_size: 64}\nparams:\n  lr: {type: loguniform, low: 0.02, high: 0.3}\n")
    return space


def trial_epochs(experiment: Path) -> dict[str, list[int]]:
    """Each trial folder's reported epochs, in the order reported."""
    return {trial.name: [r["epoch"] for r in trial_reports(trial)]
            for trial in sorted(p for p in experiment.iterdir() if p.is_dir())}


def last_checkpoint(trial: Path) -> Path | None:
    found = sorted(trial.glob("checkpoint_*"))
    return found[-1] if found else None


def wait_for(condition, timeout_s: float, what: str, driver: "Driver | None" = None):
    """``condition()``'s first true value within ``timeout_s``; fails at once, with its output, when ``driver``
    ends before that."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if driver is not None:
            driver.check(what)
        value = condition()
        if value:
            return value
        time.sleep(0.2)
    raise AssertionError(f"timed out waiting for {what}" + (f"; {driver.said()}" if driver is not None else ""))


class Driver:
    """A search's driver process whose output goes to a file: a pipe that nobody reads while a test waits
    would block the driver once full, and the test would wait out its timeout for a stalled search."""

    def __init__(self, command: list[str], log: Path, **popen: object):
        self.log = log
        with log.open("w") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=sink, **popen)
        self.pid = self.process.pid

    def said(self, last: int = 2000) -> str:
        return f"the driver's output:\n{self.log.read_text(errors='replace')[-last:]}"

    def check(self, what: str) -> None:
        """Fails when the driver has ended (the window the test waits for is gone)."""
        if self.process.poll() is not None:
            raise AssertionError(f"the search ended (exit {self.process.returncode}) before {what}; {self.said()}")

    def kill(self, sig: int = signal.SIGKILL) -> None:
        self.process.send_signal(sig)
        self.process.wait()


def hpo_command(space: Path, storage: Path, out: Path, *extra: str) -> list[str]:
    # random search checkpoints a trial only at its end and on the interval: a second here; the pick is the
    # proxy's unless ``extra`` asks for full data (an audit of 1000-epoch trials is a test of its own)
    return [sys.executable, "-m", "asp_tune", "hpo", "--space", str(space), "--algo", "random", "--ratio", "0.5",
            "--metric", "loss", "--num-samples", "4", "--max-concurrent", "2", "--storage-path", str(storage),
            "--checkpoint-every-s", "1", "--verbose", "0", "--out", str(out), "--decide", "proxy", *extra]


def saved_checkpoints(experiment: Path, trial: str) -> int:
    """How many of a trial's checkpoints are older than the last signed state (so that state knows one:
    two, since a checkpoint's report reaches the driver a moment after the checkpoint is written)."""
    from asp_tune.tune.signing import SIGNED_COPY

    try:
        signed_at = (experiment / SIGNED_COPY).stat().st_mtime
    except OSError:
        return 0
    return sum(c.stat().st_mtime < signed_at for c in (experiment / trial).glob("checkpoint_*"))


def signed_statuses(experiment: Path) -> dict[str, str]:
    """Each trial folder's status in the last signed copy of Ray's state (what a failure should show)."""
    import base64

    from asp_tune.tune.signing import SIGNED_COPY

    try:
        files = json.loads((experiment / SIGNED_COPY).read_text())["files"]
        state = json.loads(base64.b64decode(next(v for k, v in files.items() if k.startswith("experiment_state-"))))
    except (OSError, ValueError, StopIteration):
        return {}
    return {t["relative_logdir"]: t["status"] for t in (json.loads(d[0]) for d in state["trial_data"])}


@pytest.mark.slow
def test_a_group_killed_while_ray_starts_leaves_none_of_its_processes(tmp_path):
    """SIGKILL to the driver's group the moment Ray's agents appear, before ray.init returns: the raylet's agents,
    in its process group and no longer in the driver's, outlived it by a minute when the reaper started after
    ray.init; it now starts first and ends the groups Ray's processes lead."""
    import os

    import psutil

    script = tmp_path / "driver.py"
    script.write_text("import time\nfrom asp_tune.tune.session import ensure_ray\nensure_ray(num_cpus=1)\n"
                      "time.sleep(300)\n")
    driver = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                              start_new_session=True)
    seen: dict[int, psutil.Process] = {}

    def agents_up():
        for child in psutil.Process(driver.pid).children(recursive=True):
            seen.setdefault(child.pid, child)
        return any("Agent" in " ".join(_cmdline(p)) for p in seen.values())

    try:
        wait_for(agents_up, 120, "Ray's agents")
    finally:
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait()
    def left() -> list[psutil.Process]:
        alive = []
        for p in seen.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                if p.is_running() and p.status() != psutil.STATUS_ZOMBIE:
                    alive.append(p)
        return alive

    try:
        wait_for(lambda: not left(), 15, "none of Ray's processes left")
    except AssertionError:
        described = [f"{p.pid} (group {os.getpgid(p.pid)}): {' '.join(_cmdline(p))[:120]}" for p in left()]
        raise AssertionError("left running: " + "; ".join(described)) from None
    finally:
        for p in left():
            p.kill()  # a failed test leaves none either


def test_the_reaper_ends_the_group_of_a_process_registered_but_never_seen_in_a_poll(tmp_path):
    """A driver killed between the reaper's polls, or before its first: the raylet it had just started (killed with
    it by the kernel) was never seen, so its agents, in the raylet's process group, were left. The driver registers
    each process it starts for Ray (:func:`asp_tune.tune.reaper.register`), and the reaper ends its group."""
    import os

    import psutil

    from asp_tune.tune.reaper import start_mark

    driver = subprocess.Popen(["sleep", "300"])
    reaper = subprocess.Popen([sys.executable, "-c", f"from asp_tune.tune.reaper import reap; reap({driver.pid}, "
                               "poll_s=300)"], stdin=subprocess.PIPE)  # polls once, at its start
    raylet = subprocess.Popen([sys.executable, "-c", "import subprocess, sys; a = subprocess.Popen(['sleep', '300']);"
                               " print(a.pid, flush=True); sys.stdin.read()"],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True, start_new_session=True)
    agent = psutil.Process(int(raylet.stdout.readline()))  # in the raylet's group, as Ray's agents are
    unrelated = subprocess.Popen(["sleep", "300"], start_new_session=True)
    try:
        assert os.getpgid(agent.pid) == raylet.pid != os.getpgid(0)
        reaper.stdin.write(f"{raylet.pid} {start_mark(raylet.pid)!r}\n".encode()[:7])  # half a line, then the rest:
        reaper.stdin.flush()  # nothing waits on it
        reaper.stdin.write(f"{raylet.pid} {start_mark(raylet.pid)!r}\n".encode()[7:])
        reaper.stdin.flush()
        raylet.stdin.close()
        raylet.wait(30)  # the kernel ends the raylet with its driver
        driver.kill()
        driver.wait()
        reaper.stdin.close()  # as the killed driver's end closes: the reaper looks at once, not in 300 s
        assert reaper.wait(30) == 0
        wait_for(lambda: not agent.is_running() or agent.status() == psutil.STATUS_ZOMBIE, 30, "the agent ended")
        assert unrelated.poll() is None  # a group it was never told of is left alone
    finally:
        for process in (driver, reaper, unrelated):
            process.kill()
        with contextlib.suppress(psutil.NoSuchProcess):
            agent.kill()


def test_a_driver_killed_right_after_it_started_a_process_group_leaves_none_of_it(tmp_path):
    """The driver's side: :func:`~asp_tune.tune.reaper.watch`, then a group leader it is not the parent of (so no
    poll can see it) told to the reaper with :func:`~asp_tune.tune.reaper.register`, then SIGKILL, with a child it
    forked (such a child once kept the reaper's pipe open, and the reaper aborted as it exited)."""
    import psutil

    script, pids = tmp_path / "driver.py", tmp_path / "pids"
    middle = ("import subprocess; l = subprocess.Popen(['sh', '-c', 'sleep 300 & echo $!; exec sleep 300'], "
              "stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, start_new_session=True); "
              "print(l.pid, l.stdout.readline().decode().strip(), flush=True)")
    script.write_text(
        "import os, signal, subprocess, sys, time\n"
        "from asp_tune.tune.reaper import register, watch\n"
        "watch(os.getpid())\n"
        "forked = os.fork()\n"
        "if forked == 0:\n"  # a child it forks (a DataLoader worker, multiprocessing) that outlives it
        "    time.sleep(300)\n"
        "    os._exit(0)\n"
        f"leader, member = subprocess.run([sys.executable, '-c', {middle!r}], stdin=subprocess.DEVNULL,\n"
        "                                capture_output=True, text=True).stdout.split()\n"
        "register(int(leader))\n"
        f"open({str(pids)!r}, 'w').write(f'{{leader}} {{member}} {{forked}}')\n"
        "os.kill(os.getpid(), signal.SIGKILL)\n")
    with open(tmp_path / "driver.log", "w") as log:  # a file: the forked child keeps no pipe of the test's open
        driver = subprocess.run([sys.executable, str(script)], stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                                timeout=60)
    assert driver.returncode == -signal.SIGKILL, (tmp_path / "driver.log").read_text()
    leader, member, forked = (psutil.Process(int(pid)) for pid in pids.read_text().split())
    try:
        gone = lambda p: not p.is_running() or p.status() == psutil.STATUS_ZOMBIE  # noqa: E731
        wait_for(lambda: gone(leader) and gone(member), 30, "the leader and its group's member ended")
    finally:
        for p in (leader, member, forked):
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()


def _cmdline(process) -> list[str]:
    import psutil

    try:
        return process.cmdline()
    except psutil.Error:
        return []


@pytest.fixture(scope="module")
def killed_search(tmp_path_factory):
    """One search whose driver was killed outright with a trial finished and another running mid-way (as far as
    the signed state a resume reads knows): the tests below each resume a copy of what it left, so the search
    runs, and is killed, once for them all."""
    import os

    import psutil

    folder = tmp_path_factory.mktemp("killed")
    space, storage, out = write_space(folder), folder / "ray", folder / "out"
    saved_every_second = {**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "1"}  # as the fixture above
    driver = Driver(hpo_command(space, storage, out), folder / "driver.log", env=saved_every_second)
    experiment = wait_for(lambda: next(iter(storage.glob("asp-*")), None), 60, "the experiment folder", driver)

    def finished_and_running():  # as far as the state a resume reads knows
        epochs = trial_epochs(experiment)
        statuses = signed_statuses(experiment)
        done = [t for t, e in epochs.items() if len(e) >= EPOCHS and statuses.get(t) == "TERMINATED"]
        running = [t for t, e in epochs.items() if len(e) < EPOCHS - 60 and statuses.get(t) == "RUNNING"
                   and saved_checkpoints(experiment, t) >= 2]
        return (done, running) if done and running else None

    done, running = wait_for(finished_and_running, 180, "one finished and one running trial", driver)
    session = [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
    driver.kill()
    # the reaper ends what Ray leaves (its agents outlive a killed driver by a minute otherwise)
    wait_for(lambda: not [p for p in session if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"],
             30, "the Ray session's processes to end")
    from types import SimpleNamespace

    from asp_tune.tune.signing import ledger_dir

    # what this machine knows of the experiment's signed states when it was killed: a resume of one copy
    # records a newer state, and another copy resumed after it would be refused as a rollback
    ledger = {f: f.read_bytes() for f in ledger_dir().glob("*.json")}
    return SimpleNamespace(space=space, experiment=experiment, out=out, done=done, running=running,
                           before=trial_epochs(experiment), known=signed_statuses(experiment), ledger=ledger)


def resume_a_copy(killed, tmp_path: Path, damaged: str | None = None):
    """Resumes a copy of ``killed``'s experiment (a copied folder resumes into itself) in a driver of its own,
    every checkpoint of trial ``damaged`` overwritten first; returns (the copy, the finished driver, its out)."""
    import shutil

    storage, out = tmp_path / "ray", tmp_path / "out"
    experiment = storage / killed.experiment.name
    shutil.copytree(killed.experiment, experiment, symlinks=True)
    for entry, known in killed.ledger.items():  # as if no other copy had been resumed
        entry.write_bytes(known)
    if damaged:
        for checkpoint in (experiment / damaged).glob("checkpoint_*"):  # whichever Tune restores
            (checkpoint / CHECKPOINT_FILE).write_bytes(b"damaged")
    resumed = subprocess.run(hpo_command(killed.space, storage, out, "--resume", str(experiment)),
                             capture_output=True, text=True, timeout=300)
    assert resumed.returncode == 0, resumed.stderr[-2000:]  # failed trials are counted, not fatal
    return experiment, resumed, out


def test_a_killed_driver_leaves_no_ray_processes_and_resume_finishes_the_experiment(killed_search, tmp_path):
    assert not killed_search.out.exists()  # nothing committed (and the fixture saw every Ray process end)
    experiment, resumed, out = resume_a_copy(killed_search, tmp_path)
    before, known = killed_search.before, killed_search.known
    after = trial_epochs(experiment)
    for t in killed_search.done:  # finished trials are not run again
        assert after[t] == before[t]
    for t in killed_search.running:  # unfinished ones continue from a checkpoint, not from the start
        new = trial_reports(experiment / t)[len(before[t]):]
        restored = {r.get("restored_epoch") for r in new}
        seen = (f"{t}: {len(before[t])} reports before the kill, {len(after[t])} after; the signed state's "
                f"statuses {known}; the resume's output: {resumed.stderr[-1500:]}")
        assert len(restored) == 1 and 1 <= next(iter(restored)) <= len(before[t]), seen
        epochs = [r["epoch"] for r in new]
        assert epochs == sorted(epochs) and epochs[-1] == EPOCHS
        assert epochs[0] <= next(iter(restored)) + 2  # the first, or the one after a line the kill cut off
    assert all(e[-1] == EPOCHS for e in after.values())
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_trials"] == 4 and summary["num_failed"] == 0


@pytest.mark.usefixtures("state_saved_every_second")
def test_a_driver_killed_during_the_full_data_audit_resumes_the_same_audit(tmp_path):
    import psutil

    from asp_tune.tune.deciding import AUDIT_FILE

    epochs = 400  # enough for a window in which an audit trial runs with saved checkpoints (250 missed it once)
    space, storage, out = write_space(tmp_path, epochs), tmp_path / "ray", tmp_path / "out"
    audit_flags = ("--decide", "full", "--audit", "3")  # 2 at once: the third has not started when killed
    driver = Driver(hpo_command(space, storage, out, *audit_flags), tmp_path / "driver.log")
    experiment = wait_for(lambda: next(iter(storage.glob("asp-*")), None), 60, "the experiment folder", driver)
    audit = storage / f"{experiment.name}-full-data"

    def running_audit_trial():
        if not audit.is_dir():
            return None
        running = [t for t, e in trial_epochs(audit).items() if len(e) < epochs - 60 and saved_checkpoints(audit, t) >= 2]
        return running or None

    running = wait_for(running_audit_trial, 300, "an audit trial running with a saved checkpoint", driver)
    record = json.loads((experiment / AUDIT_FILE).read_text())
    session = [p.pid for p in psutil.Process(driver.pid).children(recursive=True)]
    driver.kill()
    wait_for(lambda: not [p for p in session if psutil.pid_exists(p) and psutil.Process(p).status() != "zombie"],
             30, "the Ray session's processes to end")
    assert not out.exists()
    before = trial_epochs(audit)

    resumed = subprocess.run(hpo_command(space, storage, out, *audit_flags, "--resume", str(experiment)),
                             capture_output=True, text=True, timeout=400)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert json.loads((experiment / AUDIT_FILE).read_text()) == record  # the same configurations, not a new draw
    assert {p.name for p in storage.iterdir() if p.is_dir()} == {experiment.name, audit.name}  # no second audit
    for t in running:  # the audit's unfinished trial continues from its checkpoint
        new = trial_reports(audit / t)[len(before[t]):]
        assert {r.get("restored_epoch") for r in new} - {None} and new[-1]["epoch"] == epochs
    summary = json.loads((out / "summary.json").read_text())
    section = summary["full_data"]
    # the audit's trial that had not started runs with its configuration (Ray restored its placeholder
    # without the space: it failed, and the pick was made on 2)
    assert summary["decided_by"] == "full data" and section["audited"] == 3 and section["audit_failed"] == 0
    assert sorted(section_trials(out)) == sorted(record["trials"])


def section_trials(out: Path) -> list[str]:
    """The trials a finished search's ``trials.csv`` says were audited on full data."""
    import pandas as pd

    trials = pd.read_csv(out / "trials.csv")
    return trials[trials["full_data_from"] == "audit"]["trial_id"].tolist()


def test_a_damaged_or_missing_checkpoint_fails_only_its_trial_with_a_clear_error(tmp_path):
    space = parse_space({"name": "ckpt", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 3, "subset": 300},
                         "params": {"lr": {"type": "choice", "values": [0.05]}}})
    run = {"ratio": 0.5, "metric": "loss", "seed": 0, "device": "cpu"}
    reports = []

    class Saved:
        def __init__(self, folder):
            self.folder = folder

        def as_directory(self):
            import contextlib

            return contextlib.nullcontext(str(self.folder))

    folder = tmp_path / "ckpt"
    folder.mkdir()
    (folder / CHECKPOINT_FILE).write_bytes(b"\x00 not a checkpoint")
    with pytest.raises(Exception, match=r"cannot read checkpoint .*trainer.pt"):
        proxy_trial({"lr": 0.05}, space=space, run=run, report=lambda *a, **k: reports.append(a),
                    get_checkpoint=lambda: Saved(folder))
    (folder / CHECKPOINT_FILE).unlink()
    with pytest.raises(Exception, match=r"cannot read checkpoint .*trainer.pt.*No such file"):
        proxy_trial({"lr": 0.05}, space=space, run=run, report=lambda *a, **k: reports.append(a),
                    get_checkpoint=lambda: Saved(folder))
    assert reports == []


def test_a_damaged_checkpoint_in_a_resumed_experiment_fails_that_trial_and_the_rest_finish(killed_search, tmp_path):
    _, _, out = resume_a_copy(killed_search, tmp_path, damaged=killed_search.running[0])
    summary = json.loads((out / "summary.json").read_text())
    assert summary["num_trials"] == 4 and summary["num_failed"] == 1
    import pandas as pd

    trials = pd.read_csv(out / "trials.csv")
    failed = trials[trials["status"] == "ERROR"]
    assert len(failed) == 1 and "cannot read checkpoint" in failed["error"].iloc[0]
    assert (trials[trials["status"] != "ERROR"]["epochs"] == EPOCHS).all()


@pytest.fixture()
def two_worker_cluster(local_cluster):
    return local_cluster({"num_cpus": 0}, workers=2)


def test_a_lost_node_s_trial_restarts_from_its_checkpoint_on_another_node(two_worker_cluster, tmp_path):
    """Remove the worker node a trial runs on; with --max-failures it restarts from its last checkpoint on
    the other node, its proxy memory the checkpoint's, and ends where an uninterrupted run ends."""
    cluster = two_worker_cluster
    epochs = 150
    spec = {"name": "lost", "fixed": {"dataset": "digits", "model": "mlp", "epochs": epochs, "subset": 400,
                                      "batch_size": 64},
            "params": {"lr": {"type": "choice", "values": [0.05]}}}
    settings = HpoSettings(space=parse_space(spec), algo="random", ratio=0.5, metric="loss", num_samples=1,
                           max_concurrent=1, address=cluster.address, storage_path=str(tmp_path), verbose=0,
                           max_failures=3, name="lost-node", checkpoint_every_s=0,  # a checkpoint every epoch
                           decide="proxy")
    result: dict = {}
    worker = threading.Thread(target=lambda: result.update(run=run_hpo(settings)), daemon=True)
    worker.start()
    experiment = tmp_path / "lost-node"

    def trial_on_a_node():
        trials = [p for p in experiment.glob("proxy_trial_*") if (p / "result.json").exists()]
        rows = trial_reports(trials[0]) if trials else []
        return (trials[0], rows[-1]["node_id"]) if len(rows) >= 5 else None

    trial, node_id = wait_for(trial_on_a_node, 120, "the trial to report five epochs")
    victim = next(n for n in cluster.worker_nodes if n.node_id == node_id)
    cluster.remove_node(victim, allow_graceful=False)
    worker.join(timeout=300)
    assert not worker.is_alive() and "run" in result
    run = result["run"]
    assert run.summary["num_trials"] == 1 and run.summary["num_failed"] == 0
    rows = trial_reports(trial)
    restored = [r for r in rows if "restored_epoch" in r]
    assert restored, "the trial never restarted"
    first = restored[0]
    assert first["node_id"] != node_id  # another node
    assert first["epoch"] == first["restored_epoch"] + 1
    # no epoch lost, none run twice past the checkpoint, and the end equals an uninterrupted run
    reported = [r["epoch"] for r in rows]
    assert sorted(set(reported)) == list(range(1, epochs + 1))
    # the same trial without the fault, in this process: its checkpoints' memory, epoch by epoch
    straight, memory_at = [], {}

    def report(metrics, checkpoint=None):
        straight.append(metrics)
        state = torch.load(Path(checkpoint.path) / CHECKPOINT_FILE, weights_only=True)
        memory_at[metrics["epoch"]] = ProxyMemory.fingerprint(state["selector"]["memory"])

    threads = torch.get_num_threads()
    try:
        proxy_trial({"lr": 0.05}, space=settings.space, run=settings.run_fields(), report=report,
                    get_checkpoint=lambda: None)
    finally:
        torch.set_num_threads(threads)
    # the restored memory is the checkpoint's: the one a run without the fault held at that epoch
    assert first["restored_memory"] == memory_at[first["restored_epoch"]]
    # and the run ends where the uninterrupted one ends
    assert rows[-1]["val_accuracy"] == straight[-1]["val_accuracy"]
    assert rows[-1]["train_loss"] == pytest.approx(straight[-1]["train_loss"], rel=1e-5)
    assert rows[-1]["samples_seen"] == straight[-1]["samples_seen"]


def test_a_lost_node_s_nas_search_resumes_from_its_checkpoint(two_worker_cluster, tmp_path):
    from nas.parallel import run_seeds
    from nas.search import run_search
    from nas.settings import EvolutionSettings, NasSettings

    from asp_tune.config import TrainConfig

    train = TrainConfig(dataset="digits", epochs=120, batch_size=64, ratio=0.5, metric="loss", lr=0.05, subset=600,
                        test_subset=40, val_fraction=0.25)
    settings = NasSettings(space="nb201", searcher="spos", train=train, channels=4, cells=1, monitor=False,
                           evolution=EvolutionSettings(candidates=4, population=3, parents=2, generations=1,
                                                       mutations=1, crossovers=1)).validate()
    checkpoints = {seed: tmp_path / f"seed{seed}.pt" for seed in (1, 2)}
    out: dict = {}
    worker = threading.Thread(target=lambda: out.update(results=run_seeds(
        settings, [1, 2], checkpoints, address=two_worker_cluster.address, max_failures=2)), daemon=True)
    worker.start()

    def epoch_of(path: Path) -> int:
        try:
            return torch.load(path, weights_only=True)["trainer"]["epoch"]
        except Exception:  # noqa: BLE001 - not written yet, or being replaced
            return 0

    wait_for(lambda: all(epoch_of(c) >= 3 for c in checkpoints.values()), 120, "both searches to checkpoint")
    two_worker_cluster.remove_node(next(iter(two_worker_cluster.worker_nodes)), allow_graceful=False)
    worker.join(timeout=400)
    assert not worker.is_alive() and "results" in out
    by_seed = {r.summary["seed"]: r for r in out["results"]}
    resumed = [seed for seed, r in by_seed.items() if r.summary["resumed_from_epoch"] > 0]
    assert len(resumed) == 1  # the search on the lost node, continued from its checkpoint elsewhere
    seed = resumed[0]
    threads = torch.get_num_threads()
    try:
        torch.set_num_threads(1)
        straight = run_search(settings.with_seed(seed)).summary
    finally:
        torch.set_num_threads(threads)
    again = by_seed[seed].summary
    assert again["arch"] == straight["arch"] and again["samples_seen"] == straight["samples_seen"]
    assert again["supernet_val_accuracy"] == straight["supernet_val_accuracy"]
