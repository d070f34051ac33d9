"""Atomic, link-safe writes: a planted symbolic link is never followed, a full disk leaves nothing behind."""

from __future__ import annotations

import errno
import os

import pytest
import torch

from asp_tune.atomic import atomic_write, atomic_write_text
from asp_tune.errors import AspTuneError


def test_a_planted_link_under_the_old_temporary_name_is_not_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_text("precious")
    folder = tmp_path / "ckpt"
    folder.mkdir()
    for name in ("seed0.pt.tmp", ".seed0.pt.tmp", ".asp_tune.tmp"):
        (folder / name).symlink_to(outside)
    from asp_tune.trainer import save_state

    save_state({"x": torch.ones(3)}, folder / "seed0.pt")
    assert outside.read_text() == "precious"
    assert torch.load(folder / "seed0.pt", weights_only=True)["x"].tolist() == [1.0, 1.0, 1.0]
    from asp_tune.tune.storage import write_text

    write_text(str(folder / "state.json"), "{}")
    assert outside.read_text() == "precious" and (folder / "state.json").read_text() == "{}"


def test_the_proxy_scores_and_data_caches_leave_a_planted_link_alone(tmp_path, monkeypatch):
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"precious")
    cache = tmp_path / "cache"
    monkeypatch.setenv("ASP_TUNE_CACHE", str(cache))
    from asp_tune import TrainConfig, load_dataset
    from asp_tune.proxy_scores import cache_dir, cache_key, proxy_scores

    config = TrainConfig(metric="easiest", ratio=0.5, epochs=2, subset=200)
    data = load_dataset("digits", subset=200)
    cache_dir().mkdir(parents=True)
    key = cache_key(config, data)
    (cache_dir() / f"{key}.pt.tmp").symlink_to(outside)
    (cache_dir() / f".{key}.pt.tmp").symlink_to(outside)
    proxy_scores(config, data)
    assert outside.read_bytes() == b"precious" and (cache_dir() / f"{key}.pt").is_file()


def test_a_link_planted_at_the_proxy_scores_lock_leaves_its_target_untouched(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("ASP_TUNE_CACHE", str(cache))
    from asp_tune import TrainConfig, load_dataset
    from asp_tune.proxy_scores import cache_dir, cache_key, proxy_scores

    config = TrainConfig(metric="easiest", ratio=0.5, epochs=2, subset=200)
    data = load_dataset("digits", subset=200)
    cache_dir().mkdir(parents=True)
    key = cache_key(config, data)
    target = tmp_path / "elsewhere" / "created-by-the-lock"
    target.parent.mkdir()
    (cache_dir() / f"{key}.lock").symlink_to(target)  # a dangling link: opening it would create the target
    with pytest.warns(UserWarning, match="not usable"):
        scores = proxy_scores(config, data)  # computed without the shared cache, never through the link
    assert not target.exists() and len(scores.loss) == len(data.train)
    precious = tmp_path / "precious"
    precious.write_text("mine")
    (cache_dir() / f"{key}.lock").unlink()
    (cache_dir() / f"{key}.lock").symlink_to(precious)
    with pytest.warns(UserWarning, match="not usable"):
        proxy_scores(config, data)
    assert precious.read_text() == "mine"


def test_a_full_disk_is_one_named_error_and_leaves_no_temporary_file(tmp_path, monkeypatch):
    def full(handle):
        raise OSError(errno.ENOSPC, "No space left on device")

    with pytest.raises(AspTuneError, match=r"cannot write .*model.pt: no space left on the device"):
        atomic_write(tmp_path / "model.pt", full)
    assert list(tmp_path.iterdir()) == []
    def no_space(state, handle):
        handle.write(b"half a checkpoint")
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(torch, "save", no_space)
    from asp_tune.trainer import save_state

    with pytest.raises(AspTuneError, match="no space left"):
        save_state({"x": torch.ones(1)}, tmp_path / "c.pt")
    monkeypatch.undo()
    assert list(tmp_path.iterdir()) == []  # nothing half-written left for the next run


def test_an_unwritable_folder_is_named(tmp_path):
    if os.geteuid() == 0:
        target = "/proc/asp-tune-test/x"  # root may write anywhere but here
    else:
        folder = tmp_path / "ro"
        folder.mkdir(mode=0o500)
        target = str(folder / "x")
    with pytest.raises(AspTuneError, match="cannot write"):
        atomic_write_text(target, "x")


def test_a_space_name_that_would_climb_out_of_the_storage_path_is_refused():
    from asp_tune import ConfigError
    from asp_tune.tune.space import parse_space

    for bad in ("x/../../ESCAPED", "../up", ".hidden", "a" * 101, "sp ace"):
        with pytest.raises(ConfigError, match="invalid name="):
            parse_space({"name": bad, "params": {"lr": {"type": "grid", "values": [0.1]}}})
    assert parse_space({"name": "ok-1.2_x", "params": {"lr": {"type": "grid", "values": [0.1]}}}).name == "ok-1.2_x"


@pytest.mark.slow
def test_the_reaper_never_imports_a_module_from_the_current_folder(tmp_path):
    import subprocess
    import sys
    import time

    (tmp_path / "psutil.py").write_text(f"open({str(tmp_path / 'ran')!r}, 'w').write('x')\nraise SystemExit\n")
    script = ("import os, time\nfrom asp_tune.tune.reaper import watch\np = watch(os.getpid())\n"
              "time.sleep(2)\nprint(p.poll())\n")
    run = subprocess.run([sys.executable, "-c", script], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    time.sleep(2)  # the reaper notices its driver gone and exits
    assert run.returncode == 0 and run.stdout.strip() == "None"  # it was running, not killed by a fake psutil
    assert not (tmp_path / "ran").exists()
