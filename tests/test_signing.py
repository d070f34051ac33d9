"""--resume unpickles only the state this user's key signed (asp_tune.tune.signing)."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from asp_tune.errors import ConfigError
from asp_tune.tune.signing import SIGNED_COPY, key_path, restore_signed, sign

GOOD = json.dumps({"trial_data": [["t", "m"]], "runner_data": {}, "stats": {}})


@pytest.fixture()
def experiment(tmp_path, monkeypatch):
    monkeypatch.setenv("ASP_TUNE_KEY", str(tmp_path / "keys" / "resume.key"))
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "tuner.pkl").write_bytes(b"\x80\x05 the tuner")
    (folder / "experiment_state-2026-12-01_10-00-00.json").write_text(GOOD)
    (folder / "searcher-state-2026-12-01_10-00-00.pkl").write_bytes(b"\x80\x05 the searcher")
    return folder


def test_the_key_is_made_once_for_this_user_only(experiment):
    assert sign(str(experiment))
    key = key_path()
    assert stat.S_IMODE(key.stat().st_mode) == 0o600 and len(key.read_bytes()) == 32
    first = key.read_bytes()
    assert sign(str(experiment)) and key.read_bytes() == first
    key.chmod(0o644)
    with pytest.raises(ConfigError, match="resume key.*only you own and can read"):
        sign(str(experiment))


def test_a_signed_state_restores_as_it_was_and_sets_aside_what_was_added(experiment):
    assert sign(str(experiment))
    assert restore_signed(str(experiment)) == []  # nothing changed
    (experiment / "tuner.pkl").write_bytes(b"\x80\x05 someone else's code")
    planted = experiment / "experiment_state-2099-01-01_00-00-00.json"  # newer: Ray would restore it
    planted.write_text(GOOD)
    changed = restore_signed(str(experiment))
    assert changed == ["experiment_state-2099-01-01_00-00-00.json", "tuner.pkl"]
    assert (experiment / "tuner.pkl").read_bytes() == b"\x80\x05 the tuner"
    assert not planted.exists() and (experiment / (planted.name + ".unsigned")).read_text() == GOOD


def test_a_state_cut_off_by_a_killed_driver_resumes_from_the_signed_copy(experiment):
    state = experiment / "experiment_state-2026-12-01_10-00-00.json"
    assert sign(str(experiment))
    state.write_text(GOOD[:20])  # killed while Ray wrote it
    assert sign(str(experiment)) is False  # a cut-off file is never signed: the last copy stays
    assert restore_signed(str(experiment)) == [state.name] and state.read_text() == GOOD


def test_an_unsigned_or_forged_experiment_is_refused_by_name(experiment, tmp_path, monkeypatch):
    with pytest.raises(ConfigError, match="no signed copy.*--resume-unsigned") as err:
        restore_signed(str(experiment))
    assert err.value.field == "resume"
    assert sign(str(experiment))
    copy = json.loads((experiment / SIGNED_COPY).read_text())
    copy["files"]["tuner.pkl"] = base64.b64encode(b"\x80\x05 forged").decode()
    (experiment / SIGNED_COPY).write_text(json.dumps(copy))
    with pytest.raises(ConfigError, match="does not match its signature"):
        restore_signed(str(experiment))
    assert (experiment / "tuner.pkl").read_bytes() == b"\x80\x05 the tuner"  # nothing was put in place
    assert sign(str(experiment))
    monkeypatch.setenv("ASP_TUNE_KEY", str(tmp_path / "other.key"))  # another user's (or machine's) key
    with pytest.raises(ConfigError, match="signed with your key"):
        restore_signed(str(experiment))
    (experiment / SIGNED_COPY).write_text("{not json")
    with pytest.raises(ConfigError, match="signed state copy is readable"):
        restore_signed(str(experiment))


@pytest.mark.slow
def test_hpo_resume_takes_the_signed_state_and_refuses_an_unsigned_one(tmp_path):
    import subprocess
    import sys

    space = tmp_path / "space.yaml"
    space.write_text("name: signed\nfixed: {dataset: digits, model: mlp, epochs: 2, subset: 300}\n"
                     "params:\n  lr: {type: loguniform, low: 0.02, high: 0.3}\n")
    storage = tmp_path / "ray"

    def hpo(*extra, out="out"):
        return subprocess.run([sys.executable, "-m", "asp_tune", "hpo", "--space", str(space), "--algo", "random",
                               "--num-samples", "2", "--storage-path", str(storage), "--verbose", "0",
                               "--out", str(tmp_path / out), *extra], capture_output=True, text=True, timeout=300)

    first = hpo()
    assert first.returncode == 0, first.stderr[-2000:]
    experiment = next(storage.glob("asp-*"))
    assert (experiment / SIGNED_COPY).is_file()
    tuner = experiment / "tuner.pkl"
    signed = tuner.read_bytes()
    tuner.write_bytes(b"\x80\x05 not what the search wrote")
    again = hpo("--resume", str(experiment), out="again")
    assert again.returncode == 0, again.stderr[-2000:]
    assert "resuming from the signed copy" in again.stderr and tuner.read_bytes() == signed
    (experiment / SIGNED_COPY).unlink()
    refused = hpo("--resume", str(experiment), out="refused")
    assert refused.returncode == 2 and "no signed copy" in refused.stderr
    assert not (tmp_path / "refused").exists()
    trusted = hpo("--resume", str(experiment), "--resume-unsigned", out="trusted")
    assert trusted.returncode == 0, trusted.stderr[-2000:]


def test_a_file_set_aside_never_replaces_another(experiment):
    assert sign(str(experiment))
    earlier = experiment / "experiment_state-2099-01-01_00-00-00.json.unsigned"
    earlier.write_text("set aside before")
    planted = experiment / "experiment_state-2099-01-01_00-00-00.json"
    planted.write_text(GOOD)
    restore_signed(str(experiment))
    assert earlier.read_text() == "set aside before"
    assert (experiment / (planted.name + ".unsigned.1")).read_text() == GOOD and not planted.exists()


def test_the_callback_signs_each_state_ray_saved_from_its_staging_copy_and_only_then(experiment, tmp_path,
                                                                                     monkeypatch):
    from types import SimpleNamespace

    import asp_tune.tune.signing as signing
    from asp_tune.tune.progress import SignedState

    staging = tmp_path / "staging"
    staging.mkdir()
    earlier = staging / "experiment_state-2026-11-30_09-00-00.json"  # an earlier part's, fetched on resume
    earlier.write_text(GOOD)
    os.utime(earlier, (1, 1))
    signed = []
    real = signing.sign
    monkeypatch.setattr(signing, "sign", lambda *a: signed.append(a) or real(*a))
    trials = [SimpleNamespace(storage=SimpleNamespace(experiment_driver_staging_path=str(staging),
                                                      experiment_fs_path=str(experiment)))]
    callback = SignedState(str(experiment))
    callback.setup()
    callback.on_step_end(0, [])  # no trial yet: nothing to sign
    callback.on_step_end(0, trials)  # only an earlier part's state: nothing of this run's yet
    assert signed == []
    state = staging / "experiment_state-2026-12-01_10-00-00.json"
    state.write_text(GOOD)  # Ray's first save of this run
    # the experiment folder's copy is one Ray is still uploading: cut off
    (experiment / state.name).write_text(GOOD[:10])
    for step in range(5):  # one save, then steps without one
        callback.on_step_end(step, trials)
    assert len(signed) == 1
    copy = json.loads((experiment / SIGNED_COPY).read_text())["files"]
    assert base64.b64decode(copy[state.name]).decode() == GOOD  # the whole staging copy
    assert base64.b64decode(copy["tuner.pkl"]) == b"\x80\x05 the tuner"  # only in the experiment folder
    state.write_text(GOOD.replace("{}", '{"x": 1}'))  # Ray saved again
    os.utime(state, ns=(1, 1))
    callback.on_step_end(6, trials)
    callback.on_step_end(7, trials)
    assert len(signed) == 2 and restore_signed(str(experiment)) == [state.name]
    assert json.loads((experiment / state.name).read_text())["runner_data"] == {"x": 1}
