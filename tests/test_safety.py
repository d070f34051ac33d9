"""Nothing of a user's is lost or run unsafely: markers, locks, safe loading, interrupted runs."""

from __future__ import annotations

import contextlib
import json
import os
import pickle
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from asp_tune import ConfigError, TrainConfig, Trainer, load_dataset
from asp_tune.cli import main
from asp_tune.errors import AspTuneError
from asp_tune.run_dir import MARKER, CheckpointFolder, RunDirectory, read_marker

REPO = Path(__file__).resolve().parents[1]


def user_folder(path: Path) -> Path:
    path.mkdir(parents=True)
    (path / "thesis.tex").write_text("years of work")
    (path / "data").mkdir()
    (path / "data" / "x.csv").write_text("1,2\n")
    return path


def intact(path: Path) -> bool:
    return (path / "thesis.tex").read_text() == "years of work" and (path / "data" / "x.csv").exists()


TINY_TRAIN = ["train", "--epochs", "1", "--subset", "200", "--quiet"]
TINY_NAS = ["nas", "--epochs", "1", "--channels", "2", "--cells", "1", "--subset", "120", "--test-subset", "40",
            "--candidates", "2", "--generations", "0", "--quiet"]


# ------------------------------------------------------------------------------ folders


def test_overwrite_refuses_a_folder_asp_tune_did_not_write(tmp_path, capsys):
    mine = user_folder(tmp_path / "mine")
    assert main([*TINY_TRAIN, "--out", str(mine), "--overwrite"]) == 2
    err = capsys.readouterr().err
    assert "no .asp_tune marker" in err and err.count("error:") == 1
    assert intact(mine) and not list(tmp_path.glob(".mine.*"))


def test_overwrite_replaces_only_an_untouched_asp_tune_folder(tmp_path, capsys):
    out = tmp_path / "run"
    assert main([*TINY_TRAIN, "--out", str(out)]) == 0
    assert read_marker(out)["kind"] == "results" and "summary.json" in read_marker(out)["files"]
    (out / "notes.txt").write_text("mine")
    assert main([*TINY_TRAIN, "--out", str(out), "--overwrite"]) == 2
    assert "notes.txt" in capsys.readouterr().err and (out / "notes.txt").read_text() == "mine"
    (out / "notes.txt").unlink()
    assert main([*TINY_TRAIN, "--out", str(out), "--overwrite", "--epochs", "2"]) == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


@pytest.mark.parametrize("where", [".", "..", "~", "/"])
def test_out_that_is_the_current_home_or_root_folder_is_refused_up_front(tmp_path, monkeypatch, capsys, where):
    work = tmp_path / "work"
    work.mkdir()
    monkeypatch.chdir(work)
    assert main([*TINY_TRAIN, "--out", where, "--overwrite"]) == 2
    assert "invalid out=" in capsys.readouterr().err
    assert list(work.iterdir()) == []


def test_out_under_a_file_or_unwritable_place_is_a_named_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main([*TINY_TRAIN, "--out", str(tmp_path / "afile" / "run")]) == 2
    assert "is a file" in capsys.readouterr().err
    if os.geteuid() != 0:  # root may write anywhere
        locked = tmp_path / "locked"
        locked.mkdir(mode=0o500)
        assert main([*TINY_TRAIN, "--out", str(locked / "run")]) == 2
        assert "not writable" in capsys.readouterr().err


def test_a_second_run_into_the_same_out_is_refused_by_the_lock(tmp_path, capsys):
    out = tmp_path / "run"
    with RunDirectory(out) as first:
        assert main([*TINY_TRAIN, "--out", str(out)]) == 2
        assert "holds" in capsys.readouterr().err
        first.commit({"winner": "first"})
    assert json.loads((out / "summary.json").read_text()) == {"winner": "first"}
    assert not (tmp_path / ".run.lock").exists()


@pytest.mark.slow  # two trainings in subprocesses
def test_two_concurrent_train_processes_one_wins_nothing_is_lost(tmp_path):
    out = tmp_path / "run"
    cmd = [sys.executable, "-m", "asp_tune.cli", *TINY_TRAIN, "--epochs", "3", "--out", str(out)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True) for _ in range(2)]
    results = [p.communicate(timeout=300) + (p.returncode,) for p in procs]
    codes = sorted(r[2] for r in results)
    assert codes == [0, 2], results
    loser = next(r for r in results if r[2] == 2)
    assert "error:" in loser[1] and "Traceback" not in loser[1]
    assert json.loads((out / "summary.json").read_text())["epochs"] == 3
    assert not list(tmp_path.glob(".run.partial-*")) and not (tmp_path / ".run.lock").exists()


def test_commit_refuses_a_folder_that_appeared_during_the_run(tmp_path):
    out = tmp_path / "run"
    staging = RunDirectory(out)
    user_folder(out)  # someone else wrote here meanwhile
    staging.write_json("result.json", {"a": 1})
    with pytest.raises(AspTuneError, match="appeared or changed while this run was working"):
        staging.commit({"done": True})
    staging.lock.release()
    assert intact(out)
    kept = list(tmp_path.glob("run.conflict-*"))
    assert len(kept) == 1 and json.loads((kept[0] / "summary.json").read_text()) == {"done": True}


def dead_run_staging(folder: Path) -> Path:
    """A staging folder as a run that has died leaves it: one result file, listed in its marker."""
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    folder.mkdir()
    (folder / "epochs.csv").write_text("1\n")
    (folder / MARKER).write_text(json.dumps({"kind": "staging", "files": ["epochs.csv"], "pid": int(dead.stdout),
                                             "host": os.uname().nodename}))
    return folder


def test_staging_folders_of_dead_runs_are_cleaned_at_the_next_run(tmp_path):
    out = tmp_path / "run"
    debris = dead_run_staging(tmp_path / ".run.partial-dead")
    foreign = tmp_path / ".run.partial-notours"
    foreign.mkdir()
    with RunDirectory(out) as rd:
        rd.commit({})
    assert not debris.exists() and foreign.exists()


@pytest.mark.parametrize("pid", [-1, 0, "123", None, True])
def test_a_staging_marker_without_a_real_pid_is_never_taken_for_a_dead_run(tmp_path, pid):
    debris = dead_run_staging(tmp_path / ".run.partial-odd")
    marker = json.loads((debris / MARKER).read_text())
    (debris / MARKER).write_text(json.dumps({**marker, "pid": pid}))
    (debris / (MARKER + ".tmp")).mkdir()  # a folder with the marker twin's name is never deleted either
    with RunDirectory(tmp_path / "run") as rd:
        rd.commit({})
    assert (debris / "epochs.csv").exists() and (debris / (MARKER + ".tmp")).is_dir()


def test_a_dead_runs_staging_folder_keeps_what_its_marker_does_not_list(tmp_path):
    out = tmp_path / "run"
    debris = dead_run_staging(tmp_path / ".run.partial-dead")
    (debris / "notes.txt").write_text("a user's file dropped here")
    (debris / (MARKER + ".tmp")).mkdir()  # a folder bearing the marker twin's name is not the twin
    with RunDirectory(out) as rd:
        rd.commit({})
    assert not (debris / "epochs.csv").exists() and (debris / "notes.txt").read_text().startswith("a user")
    assert (debris / (MARKER + ".tmp")).is_dir()


def test_a_marker_listing_paths_outside_its_folder_deletes_nothing_there(tmp_path):
    from asp_tune.run_dir import CheckpointFolder, remove_listed

    victim = tmp_path / "victim.txt"
    victim.write_text("keep")
    inner = tmp_path / "marked" / "sub"
    inner.mkdir(parents=True)
    (inner / "deep.txt").write_text("keep")
    folder = tmp_path / "marked"
    names = ["../victim.txt", str(victim), "sub/deep.txt", "sub", "..", "."]
    remove_listed(folder, {"files": names})
    assert victim.read_text() == "keep" and (inner / "deep.txt").read_text() == "keep" and folder.is_dir()
    ckpt = tmp_path / "ckpt"
    ckpt.mkdir()
    (ckpt / MARKER).write_text(json.dumps({"kind": "checkpoints", "files": names + ["seed1.pt"]}))
    (ckpt / "seed1.pt").write_text("x")
    folder = CheckpointFolder(ckpt)
    folder.clear()
    folder.release()
    assert victim.read_text() == "keep" and not (ckpt / "seed1.pt").exists()


def test_a_failed_run_removes_only_the_files_it_wrote_from_its_staging_folder(tmp_path):
    out = tmp_path / "run"
    with pytest.raises(RuntimeError):
        with RunDirectory(out) as rd:
            rd.write_json("result.json", {"a": 1})
            (rd.path / "dropped-by-someone.txt").write_text("not asp_tune's")
            staging = rd.path
            raise RuntimeError("the run fails")
    assert not (staging / "result.json").exists() and (staging / "dropped-by-someone.txt").exists()
    assert not out.exists()


# ------------------------------------------------------------------------------ checkpoints


def test_a_user_folder_given_as_checkpoint_dir_survives(tmp_path, capsys):
    mine = user_folder(tmp_path / "mine")
    for extra in ([], ["--restart"]):
        assert main([*TINY_NAS, "--out", str(tmp_path / "search"), "--checkpoint-dir", str(mine), *extra]) == 2
        assert "invalid checkpoint_dir=" in capsys.readouterr().err
        assert intact(mine) and not (tmp_path / "search").exists()


def test_a_file_as_checkpoint_dir_is_a_named_error(tmp_path, capsys):
    (tmp_path / "afile").write_text("x")
    assert main([*TINY_NAS, "--out", str(tmp_path / "s"), "--checkpoint-dir", str(tmp_path / "afile")]) == 2
    assert "invalid checkpoint_dir=" in capsys.readouterr().err and (tmp_path / "afile").read_text() == "x"


def test_checkpoint_folder_deletes_only_its_own_files(tmp_path):
    folder = CheckpointFolder(tmp_path / "ck")
    folder.file("seed1.pt").write_bytes(b"1")
    (tmp_path / "ck" / "later.txt").write_text("a user's file put there afterwards")
    folder.remove()
    assert sorted(p.name for p in (tmp_path / "ck").iterdir()) == ["later.txt"]
    empty = tmp_path / "empty"
    empty.mkdir()
    folder = CheckpointFolder(empty)  # an existing empty folder is used, and kept afterwards
    folder.file("retrain.pt").write_bytes(b"1")
    folder.remove()
    assert empty.is_dir() and list(empty.iterdir()) == []


def test_nas_run_removes_its_checkpoints_and_nothing_else(tmp_path):
    ck = tmp_path / "ck"
    assert main([*TINY_NAS, "--out", str(tmp_path / "s"), "--checkpoint-dir", str(ck)]) == 0
    assert not ck.exists() and (tmp_path / "s" / "summary.json").exists()


class _Exploit:
    def __init__(self, flag: Path):
        self.flag = flag

    def __reduce__(self):
        return (os.system, (f"touch {self.flag}",))


def test_a_crafted_pickle_in_a_checkpoint_is_refused_without_running(tmp_path):
    flag = tmp_path / "pwned"
    bad = tmp_path / "trainer.pt"
    torch.save({"selector": _Exploit(flag), "model": {}}, bad, pickle_module=pickle)
    trainer = Trainer(TrainConfig(epochs=1, subset=100), data=load_dataset("digits", subset=100))
    with pytest.raises(AspTuneError, match="cannot read checkpoint"):
        trainer.load_checkpoint(bad)
    from nas.checkpoint import resume_run

    with pytest.raises(AspTuneError, match="cannot read checkpoint"):
        resume_run(bad, {}, trainer)
    assert not flag.exists()


def test_trainer_checkpoints_load_with_weights_only(tmp_path):
    cfg = TrainConfig(epochs=2, ratio=0.5, metric="mixture", subset=200)
    trainer = Trainer(cfg, data=load_dataset("digits", subset=200))
    trainer.train_epoch()
    trainer.save_checkpoint(tmp_path / "c.pt")
    state = torch.load(tmp_path / "c.pt", weights_only=True)
    assert state["epoch"] == 1 and state["config"]["metric"] == "mixture"


# ------------------------------------------------------------------------------ data cache


def test_a_truncated_data_cache_is_rebuilt_with_a_warning(tmp_path, monkeypatch):
    from PIL import Image

    root = tmp_path / "imgs"
    rng = np.random.default_rng(0)
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        for i in range(12):
            Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(root / "train" / cls / f"{i}.png")
    monkeypatch.setenv("ASP_TUNE_CACHE", str(tmp_path / "cache"))
    first = load_dataset("image_folder", str(root), subset=None)
    cache = next((tmp_path / "cache").glob("*.npz"))
    cache.write_bytes(cache.read_bytes()[: cache.stat().st_size // 2])
    with pytest.warns(UserWarning, match="damaged"):
        again = load_dataset("image_folder", str(root))
    assert torch.equal(first.train.images, again.train.images)
    with np.load(cache) as z:  # rebuilt and readable
        assert "train_x" in z.files


def test_a_non_image_file_named_jpg_is_a_named_error(tmp_path, capsys):
    root = tmp_path / "imgs"
    for cls in ("a", "b"):
        (root / "train" / cls).mkdir(parents=True)
        (root / "train" / cls / "0.jpg").write_text("not an image")
    assert main([*TINY_TRAIN[:-3], "--dataset", "image_folder", "--data-dir", str(root), "--quiet",
                 "--out", str(tmp_path / "run")]) == 2
    assert "not a readable image" in capsys.readouterr().err


# ------------------------------------------------------------------------------ Ray edges (no Ray session)


def test_config_error_survives_a_process_boundary():
    err = pickle.loads(pickle.dumps(ConfigError("lr", -5, "a number > 0")))
    assert isinstance(err, ConfigError) and err.field == "lr" and str(err) == "invalid lr=-5: allowed a number > 0"


def test_an_unreachable_address_fails_in_seconds():
    from asp_tune.tune.session import check_reachable

    start = time.perf_counter()
    for address in ("127.0.0.1:1", "ray://127.0.0.1:1"):
        with pytest.raises(ConfigError, match="invalid address=.*connecting to 127.0.0.1:1 failed"):
            check_reachable(address)
    with pytest.raises(ConfigError, match="'auto', ray://HOST:PORT or HOST:PORT"):
        check_reachable("nowhere")
    assert time.perf_counter() - start < 10


def test_resume_with_other_flags_is_refused_naming_them(tmp_path):
    from functools import partial

    from asp_tune.tune.builtin import RESUME_FIELDS
    from asp_tune.tune.run import SETTINGS_FILE, check_resume_settings

    check_resume_settings = partial(check_resume_settings, keys=RESUME_FIELDS)
    saved = {"algo": "asha", "ratio": 0.3, "metric": "mixture", "num_samples": 4, "seed": 0,
             "space": {"name": "s", "fixed": {}, "params": []}}
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(saved))
    check_resume_settings(str(tmp_path), dict(saved))  # the same flags: fine
    with pytest.raises(ConfigError, match=r"give the flags or settings it was started with.*: "
                                          r"ratio=0.3 or --ratio 0.3 \(this one's: 0.5\); "
                                          r"metric='mixture' or --metric mixture \(this one's: 'loss'\)"):
        check_resume_settings(str(tmp_path), {**saved, "ratio": 0.5, "metric": "loss"})
    check_resume_settings(str(tmp_path), {**saved, "decide": "proxy"})  # not recorded (an older folder): not asked
    (tmp_path / SETTINGS_FILE).write_text(json.dumps({**saved, "max_concurrent": 1}))  # Ray restores concurrency
    with pytest.raises(ConfigError, match=r"max_concurrent=1 or --max-concurrent 1 \(this one's: 3\)"):
        check_resume_settings(str(tmp_path), {**saved, "max_concurrent": 3})
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(saved))
    with pytest.raises(ConfigError, match="written by 'asp-tune hpo'"):
        check_resume_settings(str(tmp_path / "nothing"), saved)
    from asp_tune.tune.user import RESUME_KEYS

    with pytest.raises(ConfigError, match=r"an experiment of this kind of search \(its asp_tune_settings.json has no "
                                          r"'trainable': it was written by asp-tune hpo\)"):
        check_resume_settings(str(tmp_path), {**saved, "trainable": "mine"}, keys=RESUME_KEYS)  # hpo's, to search()


def test_a_resume_of_a_search_with_another_param_space_is_refused_in_search_s_words(tmp_path):
    from ray import tune

    from asp_tune.tune.run import SETTINGS_FILE, check_resume_settings
    from asp_tune.tune.user import RESUME_KEYS, user_job

    def job(space, **changes):
        arguments = dict(epochs=4, ratio=0.3, strategy="auto", metric="val_accuracy", mode="max", scheduler="asha",
                         search_alg=None, num_samples=4, max_concurrent=2, reduction_factor=2, grace_period=1,
                         time_budget_s=None, data_passes_budget=None, seed=0, cpus_per_trial=1, gpus_per_trial=0,
                         storage_path=None, address=None, name=None, verbose=0, proxy_settings={})
        return user_job(lambda config: None, space, **{**arguments, **changes})

    import numpy as np

    from asp_tune.tune.user import described_space

    # what differs between processes for the same space (a set's order, an object's address or id) never does
    assert described_space({"tags": {"b", "a", 3}, "n": np.int64(3), "data": object(), "q": tune.qrandint(1, 9, 2)}) \
        == {"tags": ["a", "b", 3], "n": 3, "data": "builtins.object",
            "q": "integer[1, 9] Quantized(q=2) of Uniform"}
    started = job({"lr": tune.loguniform(1e-3, 0.1), "width": tune.choice([16, 32])})
    assert started.settings["param_space"] == {"lr": "float[0.001, 0.1] LogUniform", "width": {"choice": [16, 32]}}
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(started.settings))
    same = job({"lr": tune.loguniform(1e-3, 0.1), "width": tune.choice([16, 32])})
    check_resume_settings(str(tmp_path), same.settings, RESUME_KEYS, arguments=True)
    other = job({"lr": tune.loguniform(0.05, 0.1), "width": tune.choice([16, 32])}, num_samples=6)
    assert other.settings_are_arguments
    with pytest.raises(ConfigError, match=r"give the arguments it was started with.*: num_samples=4 \(this call's: "
                                          r"6\); the same param_space$"):
        check_resume_settings(str(tmp_path), other.settings, RESUME_KEYS, arguments=True)
    older = {k: v for k, v in started.settings.items() if k != "param_space"}  # a folder from before it was kept
    (tmp_path / SETTINGS_FILE).write_text(json.dumps(older))
    check_resume_settings(str(tmp_path), other.settings | {"num_samples": 4}, RESUME_KEYS, arguments=True)


def test_a_refused_resume_makes_no_experiments_folder(tmp_path):
    from types import SimpleNamespace

    from asp_tune.tune.builtin import RESUME_FIELDS
    from asp_tune.tune.run import _preflight

    storage = tmp_path / ".out.ray"
    job = SimpleNamespace(storage_path=str(storage), settings={"algo": "asha"}, resume_keys=RESUME_FIELDS, verbose=0,
                          settings_are_arguments=False)
    with pytest.raises(ConfigError, match="invalid resume=.*written by 'asp-tune hpo'"):
        _preflight(job, str(tmp_path / "nonexistent"))
    assert not storage.exists()  # refused before the storage place is made
    assert _preflight(job, None)[0] == str(storage) and not storage.exists()  # probed; Ray makes it when it runs


def test_the_names_runner_held_still_work_with_a_warning():
    import asp_tune.tune.runner as runner
    from asp_tune.tune.settings import HpoSettings

    with pytest.warns(DeprecationWarning, match="asp_tune.tune.settings.HpoSettings"):
        assert runner.HpoSettings is HpoSettings
    with pytest.raises(AttributeError):
        runner.no_such_name


# ------------------------------------------------------------------------------ interrupting a search


@pytest.mark.slow
@pytest.mark.parametrize("how", ["SIGINT to the driver", "SIGTERM to its group", "SIGTERM to every process"])
def test_sigint_during_hpo_exits_non_zero_and_commits_nothing(tmp_path, how):
    """A signal to the whole process group (coreutils timeout, kill -- -PGID) reached Ray's raylet too, and the
    driver's next call to it ended the process with status 1 (Ray's own exit): a local Ray's processes now
    have a group of their own, so the driver stops the search gracefully, as for SIGINT, and leaves none behind.
    A SIGTERM to every process (systemd's or SLURM's stop of a control group) still ends the raylet: the driver
    says so with the --resume path and exits 130, unless Ray's own exit came first; it commits nothing either way."""
    import psutil

    space = tmp_path / "s.yaml"
    space.write_text("name: slow\nfixed: {dataset: digits, model: mlp, epochs: 300, batch_size: 16}\n"
                     "params:\n  lr: {type: loguniform, low: 0.01, high: 0.1}\n")
    out, storage = tmp_path / "out", tmp_path / "ray"
    proc = subprocess.Popen([sys.executable, "-m", "asp_tune.cli", "hpo", "--space", str(space), "--algo", "random",
                             "--num-samples", "2", "--ratio", "1.0", "--metric", "none", "--verbose", "0",
                             "--storage-path", str(storage), "--out", str(out)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    deadline = time.time() + 120
    while time.time() < deadline and not list(storage.glob("*/*/result.json")):
        time.sleep(0.5)  # wait until a trial has reported
    assert list(storage.glob("*/*/result.json")), "no trial started"
    descendants = psutil.Process(proc.pid).children(recursive=True)
    rays = [p for p in descendants if p.name() in ("raylet", "gcs_server")]
    assert len(rays) == 2 and all(os.getpgid(p.pid) != proc.pid for p in rays)  # out of the driver's group
    if how == "SIGINT to the driver":
        proc.send_signal(signal.SIGINT)
    elif how == "SIGTERM to its group":
        os.killpg(proc.pid, signal.SIGTERM)
    else:
        for p in [psutil.Process(proc.pid), *descendants]:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=45)  # Ray's own wait for its stopped processes was 60 s
    if how == "SIGTERM to every process":  # where the raylet went before the handler ran, Ray's exit (status 1)
        assert proc.returncode in (130, 1), err
        assert proc.returncode == 1 or ("ended Ray's own processes too" in err and "--resume" in err), err
    else:
        assert proc.returncode == 130, err
        assert f"interrupted by {how.split()[0]}" in err and "--resume" in err and "Ray's own" not in err
    assert not out.exists() and list(storage.glob("*/experiment_state-*.json"))  # Ray's experiment for --resume
    if how != "SIGTERM to every process":  # stopped gracefully: its staging folder cleared too
        assert not list(tmp_path.glob(".out.partial-*"))
    _, alive = psutil.wait_procs(rays, timeout=10)
    assert not alive


@pytest.mark.parametrize("ray_goes", [False, True], ids=["Ray stays", "Ray goes too"])
def test_a_sigterm_stops_gracefully_unless_the_local_ray_went_with_it(tmp_path, ray_goes):
    """No Ray needed: a raylet that stays and a GCS address refused from the start (never seen listening) is
    a SIGTERM to the driver alone, stopped gracefully; a raylet that exits with it ends the driver with 130."""
    script = tmp_path / "driver.py"
    script.write_text(f"""
import os, signal, socket, time
from asp_tune.errors import RunInterrupted
from asp_tune.tune import session

probe = socket.socket()
probe.bind(("127.0.0.1", 0))
port = probe.getsockname()[1]
probe.close()  # nothing listens there: every connection is refused
signalled = []

class Raylet:
    def poll(self):
        return 0 if {ray_goes} and signalled else None

session._local_ray = lambda: ([Raylet()], ("127.0.0.1", port))
stopping = []
signal.signal(signal.SIGUSR1, lambda *_: stopping.append(1))  # Tune's graceful stop

class Tuner:
    def fit(self):
        signalled.append(1)
        os.kill(os.getpid(), signal.SIGTERM)
        deadline = time.time() + 5
        while not stopping and time.time() < deadline:
            time.sleep(0.05)
        return "grid"

try:
    session.fit_interruptibly(Tuner(), "/the/experiment")
except RunInterrupted as exc:
    print("graceful:", exc.message)
""")
    done = subprocess.run([sys.executable, str(script)], capture_output=True, text=True, timeout=60)
    if ray_goes:
        assert done.returncode == 130 and "ended Ray's own processes too" in done.stderr
        assert "--resume /the/experiment" in done.stderr and not done.stdout
    else:
        assert done.returncode == 0, done.stderr
        assert done.stdout.strip() == "graceful: interrupted by SIGTERM; no results were committed"


def test_a_lock_file_asp_tune_did_not_write_is_never_removed(tmp_path, capsys):
    lock = tmp_path / ".run.lock"
    lock.write_text("someone else's notes")
    assert main([*TINY_TRAIN, "--out", str(tmp_path / "run")]) == 2
    assert "is not an asp_tune lock" in capsys.readouterr().err
    assert lock.read_text() == "someone else's notes" and not (tmp_path / "run").exists()


def test_overwrite_never_deletes_a_folder_standing_where_a_listed_file_was(tmp_path):
    out = tmp_path / "run"
    with RunDirectory(out) as rd:
        rd.write_json("extra.json", {})
        rd.commit({})
    (out / "extra.json").unlink()
    (out / "extra.json").mkdir()  # a user's folder under a name asp_tune once wrote
    (out / "extra.json" / "keep.txt").write_text("mine")
    from asp_tune.run_dir import remove_listed

    remove_listed(out, read_marker(out))
    assert (out / "extra.json" / "keep.txt").read_text() == "mine"


@pytest.mark.slow
def test_a_local_ray_session_refuses_a_client_without_its_token(tmp_path):
    """Ray listens on every interface; asp_tune's local sessions require Ray's token, so a process
    that does not hold it cannot join."""
    script = tmp_path / "session.py"
    script.write_text("import sys, time, ray\nfrom asp_tune.tune.session import ensure_ray\nensure_ray(num_cpus=1)\n"
                      "print(ray.get_runtime_context().gcs_address, flush=True)\ntime.sleep(300)\n")
    session = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True)
    try:
        address = session.stdout.readline().strip()
        assert address
        probe = ("import ray\ntry:\n    ray.init(address=%r, logging_level='ERROR')\n    print('joined')\n"
                 "except Exception as exc:\n    print('refused', type(exc).__name__)\n" % address)

        def attempt(**env: str) -> str:
            return subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=120,
                                  env={**os.environ, **env}).stdout

        assert "joined" in attempt(RAY_AUTH_MODE="token")  # with this user's token (~/.ray/auth_token): in
        refused = attempt(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="not-the-token", RAY_AUTH_TOKEN_PATH=str(tmp_path / "x"))
        assert "refused" in refused and "joined" not in refused  # Ray logs: InvalidAuthToken
    finally:
        session.kill()
        session.wait()


def test_address_auto_refuses_a_cluster_another_user_started(tmp_path, monkeypatch):
    import os

    from asp_tune.tune.session import check_cluster_owner

    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    mine = tmp_path / "ray_current_cluster"
    mine.write_text("10.0.0.5:6379")
    check_cluster_owner("auto", str(mine))  # this user's own: joined
    check_cluster_owner("auto", str(tmp_path / "none"))  # no cluster: Ray says so itself
    theirs = tmp_path / "theirs"
    theirs.write_text("10.0.0.7:6379")
    try:
        os.chown(theirs, os.getuid() + 4242, -1)
    except PermissionError:
        pytest.skip("needs to give a file to another user (root)")
    with pytest.raises(ConfigError, match=r"invalid address='auto': allowed a Ray cluster of your own: .*names "
                                          r"10\.0\.0\.7:6379, started by uid \d+"):
        check_cluster_owner("auto", str(theirs))
    check_cluster_owner("10.0.0.7:6379", str(theirs))  # an address given outright is the user's choice


def test_ray_s_token_is_made_and_kept_readable_by_this_user_only(tmp_path):
    import stat

    from asp_tune.tune.session import protect_ray_token

    made = protect_ray_token(tmp_path / ".ray" / "auth_token")
    assert stat.S_IMODE(made.stat().st_mode) == 0o600 and len(made.read_text()) >= 32
    assert stat.S_IMODE(made.parent.stat().st_mode) == 0o700
    token = made.read_text()
    made.chmod(0o644)  # as Ray writes it
    assert protect_ray_token(made).read_text() == token and stat.S_IMODE(made.stat().st_mode) == 0o600


def test_two_runs_cannot_share_a_checkpoint_folder(tmp_path):
    folder = tmp_path / "ck"
    first = CheckpointFolder(folder)
    again = CheckpointFolder(folder)  # the same process: its own lock
    assert again.path == folder
    probe = ("import sys\nfrom asp_tune.run_dir import CheckpointFolder\nfrom asp_tune.errors import ConfigError\n"
             f"try:\n    CheckpointFolder({str(folder)!r})\nexcept ConfigError as exc:\n    print(exc)\n")
    other = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert f"invalid checkpoint_dir='{folder}'" in other.stdout
    assert f"held by pid {os.getpid()}" in other.stdout
    again.release()  # one of the two lets go: the other still holds the folder
    held = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert f"held by pid {os.getpid()}" in held.stdout
    first.release()  # the run is over, its checkpoints stay: the next run may take the folder
    after = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, timeout=60)
    assert after.returncode == 0 and after.stdout == ""
    one, two = CheckpointFolder(tmp_path / "shared"), CheckpointFolder(tmp_path / "shared")
    one.remove()  # while the other holds it: the folder, its marker and its lock stay
    assert (tmp_path / "shared" / CheckpointFolder.LOCK).is_file()
    assert f"held by pid {os.getpid()}" in subprocess.run(
        [sys.executable, "-c", probe.replace(str(folder), str(tmp_path / "shared"))], capture_output=True,
        text=True, timeout=60).stdout
    two.remove()
    assert not (tmp_path / "shared").exists()


@pytest.mark.parametrize("address, message", [
    ("127.0.0.1:70000", "with a port in 1..65535"),
    ("a" * 70 + ".example.com:6379", "a host name whose labels are 1 to 63 characters"),
    ("[::1]:1", r"connecting to \[::1\]:1 failed"),
])
def test_bad_cluster_addresses_are_one_named_error(address, message):
    from asp_tune.tune.session import check_reachable

    with pytest.raises(ConfigError, match=message):
        check_reachable(address, timeout_s=2)


@pytest.mark.parametrize("location, message", [
    ("ftp://host/experiments", "Unrecognized filesystem type"),
    ("/proc/asp-tune-nowhere/x", "a folder this user can write"),
])
def test_a_storage_path_ray_could_not_use_is_refused_before_ray_starts(location, message):
    from asp_tune.tune.storage import check_location

    with pytest.raises(ConfigError, match=message) as err:
        check_location(location)
    assert err.value.field == "storage_path"


def test_the_storage_probe_leaves_no_folder_it_made(tmp_path):
    """A search refused after the probe (no node with the GPU a trial asks for) left an empty ``.OUT.ray``."""
    from asp_tune.tune.storage import check_location

    check_location(str(tmp_path / "new" / ".out.ray"))
    assert list(tmp_path.iterdir()) == []
    (tmp_path / "kept").mkdir()
    check_location(str(tmp_path / "kept"))
    assert [p.name for p in tmp_path.iterdir()] == ["kept"] and list((tmp_path / "kept").iterdir()) == []


@pytest.mark.parametrize("scheme, message", [
    ("s3", r"allowed storage that answers \((no answer within 3 s|.*NETWORK_CONNECTION)"),  # gives up in ~6 s
    ("gs", r"allowed storage that answers \(no answer within 3 s\)"),  # its GCS client would retry for 15 min
])
def test_unreachable_bucket_storage_fails_within_seconds_and_leaves_no_folder(tmp_path, monkeypatch, capsys,
                                                                              scheme, message):
    import re
    import socket
    import time

    import asp_tune.tune.storage as storage
    from asp_tune.cli import main

    with socket.socket() as probe:  # a port nothing listens on stands for an unreachable endpoint
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monkeypatch.setattr(storage, "REACH_TIMEOUT_S", 3.0)
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml"
    started = time.monotonic()
    code = main(["hpo", "--space", str(space), "--out", str(tmp_path / "out"),
                 "--storage-path", f"{scheme}://bucket/exp?endpoint_override=127.0.0.1:{port}&scheme=http"])
    err = capsys.readouterr().err
    assert code == 2 and time.monotonic() - started < 30
    assert re.search(message, err) and "storage_path" in err and len(err.strip().splitlines()) == 1
    assert not list(tmp_path.iterdir())


def test_an_output_path_with_a_name_too_long_for_the_file_system_is_refused(tmp_path):
    from asp_tune.run_dir import checked_folder

    with pytest.raises(ConfigError, match="every name is at most 231 bytes"):
        checked_folder(tmp_path / ("x" * 300), "out")


def test_a_link_planted_as_the_checkpoint_lock_is_never_followed(tmp_path):
    victim = tmp_path / "precious.txt"
    victim.write_text("keep me")

    folder = tmp_path / "ck-link"
    CheckpointFolder(folder).release()  # a folder asp_tune marked as its own, its run ended
    (folder / CheckpointFolder.LOCK).unlink()
    (folder / CheckpointFolder.LOCK).symlink_to(victim)
    with pytest.raises(ConfigError, match="lock file .asp_tune.lock asp_tune can make"):
        CheckpointFolder(folder)
    assert victim.read_text() == "keep me"


def test_ray_s_own_ctrl_c_handling_is_back_after_a_search(monkeypatch):
    """The search turned Ray's SIGINT handler off for itself and left it off for the rest of the process."""
    import os

    from asp_tune.tune import session

    monkeypatch.delenv("TUNE_DISABLE_SIGINT_HANDLER", raising=False)
    seen = []

    class Tuner:
        def fit(self):
            seen.append(os.environ.get("TUNE_DISABLE_SIGINT_HANDLER"))
            return "grid"

    assert session.fit_interruptibly(Tuner(), "/the/experiment") == "grid"
    assert seen == ["1"] and "TUNE_DISABLE_SIGINT_HANDLER" not in os.environ
    monkeypatch.setenv("TUNE_DISABLE_SIGINT_HANDLER", "0")  # a value of the user's is put back
    session.fit_interruptibly(Tuner(), "/the/experiment")
    assert os.environ["TUNE_DISABLE_SIGINT_HANDLER"] == "0"


def test_a_resume_given_the_storage_or_the_results_folder_names_the_experiment_folders_within(tmp_path):
    from asp_tune.tune.builtin import RESUME_FIELDS
    from asp_tune.tune.run import SETTINGS_FILE, check_resume_settings

    experiment = tmp_path / ".out.ray" / "asp-s-asha-r0.3-20261207-1"
    experiment.mkdir(parents=True)
    (experiment / SETTINGS_FILE).write_text("{}")
    (tmp_path / "out").mkdir()
    (tmp_path / "out" / "summary.json").write_text("{}")
    for given in (tmp_path / ".out.ray", tmp_path / "out"):
        with pytest.raises(ConfigError, match=rf"the experiment folders are within .*\.out\.ray: .*{experiment.name}"):
            check_resume_settings(str(given), {}, keys=RESUME_FIELDS)
