"""--resume unpickles only the state this user's key signed (asp_tune.tune.signing)."""

from __future__ import annotations

import base64
import json
import os
import stat

import pytest

from asp_tune.errors import ConfigError
import asp_tune.tune.signing as signing
from asp_tune.signatures import key_path
from asp_tune.tune.signing import SIGNED_COPY, restore_signed, sign

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
    with pytest.raises(ConfigError, match="no signed copy.*resume_unsigned=True or --resume-unsigned") as err:
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
    with pytest.raises(ConfigError, match="key.*is missing"):  # never made anew on a resume
        restore_signed(str(experiment))
    assert not (tmp_path / "other.key").exists()
    signing.key()  # made on purpose: another key that exists
    with pytest.raises(ConfigError, match="signed with your key"):
        restore_signed(str(experiment))
    (experiment / SIGNED_COPY).write_text("{not json")
    with pytest.raises(ConfigError, match="signed state copy is readable"):
        restore_signed(str(experiment))


@pytest.mark.slow
def test_hpo_resume_takes_the_signed_state_and_refuses_an_unsigned_one(tmp_path, command_here):
    """In this process: a planted pickle loaded would run here as well."""
    space = tmp_path / "space.yaml"
    space.write_text("name: signed\nfixed: {dataset: digits, model: mlp, epochs: 2, subset: 300}\n"
                     "params:\n  lr: {type: loguniform, low: 0.02, high: 0.3}\n")
    storage = tmp_path / "ray"

    def hpo(*extra, out="out"):
        return command_here("hpo", "--space", space, "--algo", "random", "--num-samples", "2", "--storage-path",
                            storage, "--verbose", "0", "--out", tmp_path / out, *extra)

    first = hpo()
    assert first.returncode == 0, first.stderr[-2000:]
    experiment = next(p for p in storage.glob("asp-*") if not p.name.endswith("-full-data"))  # not its audit
    assert (experiment / SIGNED_COPY).is_file()
    audit = experiment.with_name(experiment.name + "-full-data")
    wrong = hpo("--resume", str(audit), out="wrong")  # the audit resumes with its search, never alone
    assert wrong.returncode == 2 and "full-data audit of" in wrong.stderr
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


def test_before_each_signature_the_reports_of_trials_with_a_checkpoint_reach_the_storage_path(experiment, tmp_path,
                                                                                              monkeypatch):
    """Ray uploads its staging folder in the background: a signed state naming a trial's checkpoint
    must not be ahead of the trial's reports in the storage path, or a resume after a killed driver
    restarts the trial from that checkpoint with its earlier reports gone (seen in CI: epochs 1-6)."""
    from pathlib import Path
    from types import SimpleNamespace

    import pyarrow.fs

    import asp_tune.tune.signing as signing
    from asp_tune.tune.progress import SignedState
    from asp_tune.tune.safe_fs import safe_local_filesystem

    staging = tmp_path / "staging"
    storage = SimpleNamespace(experiment_driver_staging_path=str(staging), experiment_fs_path=str(experiment),
                              storage_filesystem=safe_local_filesystem())

    def trial(name: str, checkpoint) -> SimpleNamespace:
        (staging / name).mkdir(parents=True)
        (experiment / name).mkdir()
        return SimpleNamespace(trial_id=name, checkpoint=checkpoint, local_path=str(staging / name),
                               storage=SimpleNamespace(**vars(storage), trial_fs_path=str(experiment / name)))

    class Unplaced:  # a trial Ray added but has not placed: its folder is not known yet
        trial_id, checkpoint = "unplaced", object()

        @property
        def local_path(self):
            raise RuntimeError("Should not access `trial_dir_name` before initializing it.")

    paused, fresh, idle = trial("a", object()), trial("b", None), trial("c", object())
    (staging / "a" / "result.json").write_text("".join(f'{{"epoch": {e}}}\n' for e in range(1, 7)))
    (staging / "b" / "result.json").write_text('{"epoch": 1}\n')
    (staging / "c" / "result.json").write_text('{"epoch": 1}\n')
    at_signature = []
    real = signing.sign
    monkeypatch.setattr(signing, "sign", lambda *a: at_signature.append(
        (experiment / "a" / "result.json").read_text().count("epoch")) or real(*a))
    copies, broken = [], []
    real_copy = pyarrow.fs.copy_files

    def copy(source, *args, **kwargs):
        if source in broken:
            raise OSError("the bucket is away")
        copies.append(Path(source).parent.name)
        return real_copy(source, *args, **kwargs)

    monkeypatch.setattr(pyarrow.fs, "copy_files", copy)
    callback = SignedState(str(experiment))
    callback.setup()
    for t in (paused, fresh, Unplaced()):
        callback.on_trial_result(0, [], t, {})
    state = staging / "experiment_state-2026-12-01_10-00-00.json"
    state.write_text(GOOD)
    everyone = [paused, fresh, idle]
    callback.on_step_end(0, everyone)
    assert at_signature == [6]  # the reports were there before the state naming the checkpoint was signed
    assert copies == ["a"]  # not b (no checkpoint: Ray restarts it from scratch), not c (nothing new)
    assert not (experiment / "b" / "result.json").exists()
    state.write_text(GOOD.replace("{}", '{"x": 1}'))  # Ray saved again; no trial reported since
    os.utime(state, ns=(1, 1))
    callback.on_step_end(1, everyone)
    assert len(at_signature) == 2 and copies == ["a"]
    with (staging / "a" / "result.json").open("a") as f:
        f.write('{"epoch": 7}\n')
    callback.on_trial_result(2, [], paused, {})
    broken.append(str(staging / "a" / "result.json"))
    os.utime(state, ns=(2, 2))
    with pytest.warns(UserWarning, match="could not copy .*the bucket is away"):
        callback.on_step_end(2, everyone)
    assert len(at_signature) == 2  # a failed copy: the last signed copy stays
    broken.clear()
    callback.on_step_end(3, everyone)  # the next step tries again
    assert at_signature[-1] == 7 and copies == ["a", "a"]
    fresh.checkpoint = object()  # paused: a checkpoint without a new report
    callback.on_checkpoint(4, [], fresh, object())
    os.utime(state, ns=(4, 4))
    callback.on_experiment_end(everyone)
    assert copies == ["a", "a", "b"] and (experiment / "b" / "result.json").read_text() == '{"epoch": 1}\n'
    import pickle

    earlier = SignedState(str(experiment))  # pickled in a tuner.pkl by an asp_tune without these fields
    for field in ("_changed", "_signed", "_state"):
        del earlier.__dict__[field]
    restored = pickle.loads(pickle.dumps(earlier))
    restored.on_trial_result(0, [], paused, {})
    os.utime(state)  # Ray saved in this run
    restored.on_step_end(0, everyone)
    assert restored._signed is not None and copies[-1] == "a"


class _Planted:
    """A pickle that creates a marker file when it is loaded (what a crafted file could do instead)."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return open, (self.marker, "w")


def test_every_file_ray_would_unpickle_that_was_not_signed_is_set_aside(experiment, tmp_path):
    import pickle

    variant = experiment / "basic-variant-state-2026-12-01_10-00-00.json"
    variant.write_bytes(b"\x80\x05 the generator")
    assert sign(str(experiment))
    assert "basic-variant-state" in "".join(json.loads((experiment / SIGNED_COPY).read_text())["files"])
    marker = tmp_path / "ran"
    variant.write_bytes(pickle.dumps(_Planted(marker)))  # read by every random, ASHA and Hyperband search
    planted = experiment / "zz-unknown-state.pkl"  # any other .pkl/.json Ray copies to the driver
    planted.write_bytes(pickle.dumps(_Planted(marker)))
    trial = experiment / "trial_0"
    trial.mkdir()
    (trial / "error.pkl").write_bytes(pickle.dumps(_Planted(marker)))  # unpickled to report a failed trial
    (trial / "error.txt").write_text("the trial's own error")
    (experiment / "asp_tune_settings.json").write_text("{}")  # asp_tune's own plain JSON stays
    changed = restore_signed(str(experiment))
    assert changed == [variant.name, planted.name]
    assert variant.read_bytes() == b"\x80\x05 the generator" and not planted.exists()
    assert not (trial / "error.pkl").exists() and (trial / "error.pkl.unsigned").is_file()
    assert (trial / "error.txt").is_file() and (experiment / "asp_tune_settings.json").is_file()
    assert not marker.exists()


def test_an_older_signed_copy_and_another_experiments_are_refused(experiment, tmp_path):
    import shutil

    assert sign(str(experiment))
    older = (experiment / SIGNED_COPY).read_bytes()
    assert sign(str(experiment))  # Ray saved its state again: copy number 2
    assert json.loads((experiment / SIGNED_COPY).read_text())["serial"] == 2
    (experiment / SIGNED_COPY).write_bytes(older)  # replayed
    with pytest.raises(ConfigError, match=r"older copy was put back \(a rollback\)") as err:
        restore_signed(str(experiment))
    assert err.value.field == "resume"
    assert sign(str(experiment))  # the latest again
    other = tmp_path / "other"
    shutil.copytree(experiment, other)
    signing._SIGNED.clear()  # another search, in another process
    (other / SIGNED_COPY).unlink()
    (other / "tuner.pkl").write_bytes(b"\x80\x05 the other tuner")
    assert sign(str(other))
    assert restore_signed(str(experiment)) == [] and restore_signed(str(other)) == []
    (experiment / SIGNED_COPY).write_bytes((other / SIGNED_COPY).read_bytes())  # swapped in
    with pytest.raises(ConfigError, match="signed for another experiment.*swapped in"):
        restore_signed(str(experiment))
    assert (experiment / "tuner.pkl").read_bytes() == b"\x80\x05 the tuner"  # nothing was put in place


def test_a_copied_folder_resumes_and_then_the_original_is_an_older_copy(experiment, tmp_path):
    import shutil

    assert sign(str(experiment))
    moved = tmp_path / "elsewhere" / "renamed"
    shutil.copytree(experiment, moved)
    assert restore_signed(str(moved)) == []  # a folder this machine never signed in: its own copy
    signing._SIGNED.clear()
    assert sign(str(moved))  # the resumed copy goes on: number 2 of the same experiment
    with pytest.raises(ConfigError, match="rollback.*resume the newest copy"):
        restore_signed(str(experiment))


def test_a_copy_signed_without_binding_is_refused(experiment):
    assert sign(str(experiment))
    copy = json.loads((experiment / SIGNED_COPY).read_text())
    copy["version"] = 1
    (experiment / SIGNED_COPY).write_text(json.dumps(copy))
    with pytest.raises(ConfigError, match="version 1.*--resume-unsigned"):
        restore_signed(str(experiment))


def test_a_folder_where_the_key_cannot_be_made_is_said_before_a_search(tmp_path, monkeypatch):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "afile").write_text("x")
    monkeypatch.setenv("ASP_TUNE_KEY", str(locked / "afile" / "resume.key"))  # a folder through a file
    assert "resume key" in signing.signing_problem()
    monkeypatch.setenv("ASP_TUNE_KEY", str(tmp_path / "fine" / "resume.key"))
    assert signing.signing_problem() is None


@pytest.mark.slow
def test_a_resume_of_a_folder_with_planted_pickles_runs_nothing(tmp_path, command_here):
    import pickle

    space = tmp_path / "space.yaml"
    space.write_text("name: planted\nfixed: {dataset: digits, model: mlp, epochs: 3, subset: 600, batch_size: 64, momentum: 0.0,"
                     " weight_decay: 0.0}\nparams:\n  lr: {type: grid, values: [0.05, 10000000.0]}\n")
    storage = tmp_path / "ray"

    def hpo(*extra, out="out"):  # in this process: a pickle loaded would make its marker here as well
        return command_here("hpo", "--space", space, "--algo", "random", "--num-samples", "1", "--ratio", "1.0",
                            "--metric", "none", "--storage-path", storage, "--verbose", "0", "--out", tmp_path / out,
                            *extra)

    first = hpo()
    assert first.returncode == 0, first.stderr[-2000:]
    assert json.loads((tmp_path / "out" / "summary.json").read_text())["num_failed"] == 1
    experiment = next(storage.glob("asp-*"))
    failed = next(p.parent for p in experiment.glob("*/error.pkl"))  # the diverged trial's pickled error
    marker = tmp_path / "ran"
    payload = pickle.dumps(_Planted(marker))
    failed.joinpath("error.pkl").write_bytes(payload)
    variant = next(experiment.glob("basic-variant-state-*.json"))
    variant.write_bytes(payload)
    (experiment / "basic-variant-state-9999-12-31_23-59-59.json").write_bytes(payload)  # newer: Ray takes it
    again = hpo("--resume", str(experiment), out="again")
    assert again.returncode == 0, again.stderr[-2000:]
    assert not marker.exists()
    assert "basic-variant-state" in again.stderr  # named as changed after it was signed
    summary = json.loads((tmp_path / "again" / "summary.json").read_text())
    assert summary["num_trials"] == 2 and summary["num_failed"] == 1
