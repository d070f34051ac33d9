"""What a search leaves behind: only what a resume needs, a named error on a full disk with nothing left, and
a run that still starts where the home folder cannot be written."""

from __future__ import annotations

import argparse
import errno
import json
import os
import re
import sys
from pathlib import Path

import pytest

from asp_tune.cli import SUBCOMMANDS, main

SPACE = ("name: tiny\nfixed: {dataset: digits, model: mlp, epochs: 3, subset: 400}\n"
         "params:\n  lr: {type: loguniform, low: 0.02, high: 0.3}\n")


def test_ray_gets_a_private_token_where_the_home_folder_cannot_hold_one(tmp_path, monkeypatch, capsys):
    import stat

    from asp_tune.tune.session import protect_ray_token

    home = tmp_path / "home"
    home.mkdir()
    (home / ".ray").write_text("a file where Ray's folder should be")  # ~/.ray/auth_token cannot be made
    monkeypatch.setenv("HOME", str(home))
    monkeypatch.delenv("RAY_AUTH_TOKEN", raising=False)
    previous = os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
    try:  # set for the process by the code under test: never left for the tests after this one
        path = protect_ray_token()
        assert os.environ["RAY_AUTH_TOKEN_PATH"] == str(path) and path.is_file() and str(home) not in str(path)
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and stat.S_IMODE(path.parent.stat().st_mode) == 0o700
        assert "is not writable: Ray's token is kept in" in capsys.readouterr().err
        assert protect_ray_token() == path  # named to Ray already: kept
    finally:
        os.environ.pop("RAY_AUTH_TOKEN_PATH", None)
        if previous is not None:
            os.environ["RAY_AUTH_TOKEN_PATH"] = previous


def test_the_private_token_s_folder_goes_when_the_process_exits(tmp_path):
    """A token in the temporary folder outlived every run that made one (one a test run, each left behind)."""
    import subprocess

    home = tmp_path / "home"
    home.mkdir()
    (home / ".ray").write_text("a file where Ray's folder should be")
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH")}
    env["HOME"], env["TMPDIR"] = str(home), str(tmp_path)
    code = "from asp_tune.tune.session import protect_ray_token; p = protect_ray_token(); print(p, p.is_file())"
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    path, existed = out.split()
    assert existed == "True" and path.startswith(str(tmp_path))
    assert not Path(path).parent.exists()
    assert (home / ".ray").is_file()  # nothing else touched


@pytest.mark.slow
def test_a_full_disk_under_hpo_is_one_named_error_and_the_next_search_works(tmp_path, monkeypatch, capsys):
    from asp_tune.run_dir import RunDirectory

    (tmp_path / "s.yaml").write_text(SPACE)
    real = RunDirectory.write_table

    def full(self, name, frame):
        raise OSError(errno.ENOSPC, "No space left on device", str(self.path / name))

    monkeypatch.setattr(RunDirectory, "write_table", full)
    args = ["hpo", "--space", str(tmp_path / "s.yaml"), "--algo", "random", "--num-samples", "2", "--verbose", "0",
            "--decide", "proxy", "--out", str(tmp_path / "out")]
    assert main(args) == 2
    err = capsys.readouterr().err
    assert "no space left on the device; nothing was committed" in err and "Traceback" not in err
    assert not (tmp_path / "out").exists() and not list(tmp_path.glob(".out.partial-*"))
    assert not (tmp_path / ".out.lock").exists()
    monkeypatch.setattr(RunDirectory, "write_table", real)
    assert main(args) == 0


@pytest.mark.slow
def test_the_demo_keeps_only_what_a_resume_needs_and_says_where(tmp_path, capsys):
    assert main(["demo", "--num-samples", "3", "--out", str(tmp_path / "demo")]) == 0
    err = capsys.readouterr().err
    assert "Ray's experiment:" in err and "trial checkpoints dropped" in err
    notices = [line for line in err.splitlines() if "first rung would take" in line or "cannot be measured" in line]
    said = set(re.findall(r"(--[a-z][a-z-]+)", "\n".join(notices)))
    assert {"--audit", "--min-first-rung-steps"} <= said  # the demo's notices: the first rung, the measurement
    demo = argparse.ArgumentParser()
    SUBCOMMANDS["demo"].add_arguments(demo)
    takes = set(re.findall(r"(--[a-z][a-z-]+)", demo.format_help()))
    assert said <= takes, said - takes  # every flag these notices name is one the demo takes
    experiments = tmp_path / ".demo.ray"
    assert not list(experiments.rglob("checkpoint_*"))
    size = sum(f.stat().st_size for f in experiments.rglob("*") if f.is_file())
    assert size < 5e6, size  # 30 trial checkpoints of a wide MLP were about 1 GB
    summary = json.loads((tmp_path / "demo" / "summary.json").read_text())
    settled = summary["runs"]["1.0"]["experiment"]
    assert settled["checkpoints_kept"] is False and Path(settled["path"]).parent == experiments


def test_a_new_search_names_the_searches_in_its_storage_that_stopped_before_they_finished(tmp_path, monkeypatch,
                                                                                          capsys):
    """A driver killed hard left its experiment in .OUT.ray; the same command again started a new search and
    never said the old one could be finished."""
    from types import SimpleNamespace

    import asp_tune.tune.run as run
    from asp_tune.tune.storage import SETTINGS_FILE, settle_experiment, unfinished_experiments

    storage = tmp_path / ".out.ray"

    def experiment(name: str, settings: dict, checkpoint: bool = True) -> Path:
        folder = storage / name
        (folder / "trial_1" / ("checkpoint_000001" if checkpoint else "other")).mkdir(parents=True)
        (folder / SETTINGS_FILE).write_text(json.dumps(settings))
        return folder

    killed = experiment("asp-killed", {"algo": "asha"})
    settle_experiment(str(experiment("asp-finished", {"algo": "asha"})), keep_checkpoints=True, verbose=0)
    experiment("asp-killed-full-data", {"algo": "random", "audit_of": "asp-killed"})  # resumes with its search
    experiment("asp-before-its-first-checkpoint", {"algo": "asha"}, checkpoint=False)
    (storage / "not-ours" / "trial" / "checkpoint_000001").mkdir(parents=True)
    assert unfinished_experiments(str(storage)) == [killed]
    assert unfinished_experiments(str(tmp_path / "nowhere")) == unfinished_experiments(None) == []

    class Stop(Exception):
        pass

    monkeypatch.setattr(run, "_preflight", lambda job, resume: (str(storage), resume))
    monkeypatch.setattr("asp_tune.tune.session.ensure_ray", lambda *a, **k: (_ for _ in ()).throw(Stop()))
    job = SimpleNamespace(address=None, modules=[])
    for say, resume in ((True, None), (False, None), (True, str(killed))):
        with pytest.raises(Stop):
            run.run_search(job, resume=resume, say_unfinished=say)
        said = capsys.readouterr().err
        assert (f"[asp-tune] note: {killed} holds a search that stopped before it finished; resume='{killed}' or "
                f"--resume {killed} finishes it (this search is a new one)" in said) == (say and resume is None)
