"""The local file system Ray writes an experiment through (asp_tune.tune.safe_fs): whole files only,
unchanged files left alone, never through a planted link."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

import pyarrow.fs as pafs
import pytest

from asp_tune.tune.safe_fs import IN_MEMORY, safe_local_filesystem


def tree(root, files: dict[str, bytes]) -> None:
    for name, data in files.items():
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        (root / name).write_bytes(data)


def test_a_copy_rewrites_only_what_changed(tmp_path):
    src, dst = tmp_path / "staging", tmp_path / "storage"
    big = os.urandom(IN_MEMORY + 12345)  # spills to its temporary file while written
    tree(src, {"experiment_state.json": b'{"a": 1}', "trial_0/result.json": b"{}\n", "trial_0/big.bin": big})
    fs = safe_local_filesystem()
    pafs.copy_files(str(src), str(dst), destination_filesystem=fs)
    stamps = {p.name: p.stat().st_ino for p in dst.rglob("*") if p.is_file()}
    (src / "trial_0/result.json").write_bytes(b"{}\n{}\n")  # one trial reported again
    pafs.copy_files(str(src), str(dst), destination_filesystem=fs)
    after = {p.name: p.stat().st_ino for p in dst.rglob("*") if p.is_file()}
    assert after["experiment_state.json"] == stamps["experiment_state.json"]  # the very same file: not rewritten
    assert after["big.bin"] == stamps["big.bin"] and (dst / "trial_0/big.bin").read_bytes() == big
    assert after["result.json"] != stamps["result.json"] and (dst / "trial_0/result.json").read_bytes() == b"{}\n{}\n"
    assert sorted(p.name for p in dst.rglob(".*")) == []  # no temporary file left


@pytest.mark.parametrize("size", [100, IN_MEMORY + 100])
def test_a_writer_killed_mid_file_leaves_the_old_file_whole(tmp_path, size):
    target = tmp_path / "result.json"
    target.write_bytes(b"the reports so far\n")
    code = textwrap.dedent(f"""
        import os
        from asp_tune.tune.safe_fs import safe_local_filesystem
        stream = safe_local_filesystem().open_output_stream({str(target)!r})
        stream.write(b"x" * {size})
        os._exit(9)  # killed before the stream is closed
    """)
    assert subprocess.run([sys.executable, "-c", code]).returncode == 9
    assert target.read_bytes() == b"the reports so far\n"
    with safe_local_filesystem().open_output_stream(str(target)) as stream:
        stream.write(b"new")
    assert target.read_bytes() == b"new"


def test_a_planted_link_is_replaced_never_followed(tmp_path):
    outside = tmp_path / "outside.txt"
    outside.write_bytes(b"not ours")
    folder = tmp_path / "exp"
    folder.mkdir()
    (folder / "params.json").symlink_to(outside)
    with safe_local_filesystem().open_output_stream(str(folder / "params.json")) as stream:
        stream.write(b"not ours")  # even the same bytes: a link is never taken for the file
    assert outside.read_bytes() == b"not ours"
    assert not (folder / "params.json").is_symlink() and (folder / "params.json").read_bytes() == b"not ours"
    # a link as long as the bytes written, to a file holding them: still never taken for the file
    same = str(outside).encode()
    outside.write_bytes(same)
    (folder / "state.json").symlink_to(outside)
    with safe_local_filesystem().open_output_stream(str(folder / "state.json")) as stream:
        stream.write(same)
    assert not (folder / "state.json").is_symlink() and (folder / "state.json").read_bytes() == same


def test_it_travels_to_workers_and_reads_like_the_local_file_system(tmp_path):
    import ray.cloudpickle

    fs = ray.cloudpickle.loads(ray.cloudpickle.dumps(safe_local_filesystem()))
    assert fs.equals(safe_local_filesystem()) and fs.type_name == "py::asp_tune-local"
    (tmp_path / "a").write_bytes(b"abc")
    assert fs.get_file_info(str(tmp_path / "a")).size == 3
    with fs.open_input_stream(str(tmp_path / "a")) as f:
        assert f.read() == b"abc"
    fs.copy_file(str(tmp_path / "a"), str(tmp_path / "b"))
    assert (tmp_path / "b").read_bytes() == b"abc"
    with pytest.raises(OSError, match="root folder"):
        fs.delete_dir_contents("/", accept_root_dir=True)


def test_a_restarted_trial_keeps_the_reports_made_since_ray_last_saved(tmp_path):
    """Ray's loggers copy a trial's result.json from the storage path over the driver's copy when the trial
    restarts from a checkpoint (a promotion after a pause, a retry); that copy is only as fresh as Ray's
    last save. publish_trial_logs, run first (by FreshTrialLogs and Hyper-Tune's scheduler), keeps them."""
    from types import SimpleNamespace

    from ray.tune.logger import JsonLoggerCallback

    from asp_tune.tune.progress import publish_trial_logs

    staging, storage = tmp_path / "staging" / "trial", tmp_path / "storage" / "trial"
    staging.mkdir(parents=True)
    storage.mkdir(parents=True)
    (storage / "result.json").write_text('{"epoch": 1}\n')  # Ray's last save: after epoch 1
    (staging / "result.json").write_text('{"epoch": 1}\n{"epoch": 2}\n{"epoch": 3}\n')  # reported since
    trial = SimpleNamespace(checkpoint=object(), local_path=str(staging),
                            storage=SimpleNamespace(trial_fs_path=str(storage), storage_filesystem=safe_local_filesystem()))
    lost = tmp_path / "lost"
    lost.mkdir()
    (lost / "result.json").write_text((staging / "result.json").read_text())
    JsonLoggerCallback()._restore_from_remote("result.json", SimpleNamespace(**{**vars(trial), "local_path": str(lost)}))
    assert (lost / "result.json").read_text() == '{"epoch": 1}\n'  # what Ray alone does: epochs 2 and 3 gone
    publish_trial_logs(trial)
    JsonLoggerCallback()._restore_from_remote("result.json", trial)
    assert (staging / "result.json").read_text().count("epoch") == 3
    fresh = SimpleNamespace(**{**vars(trial), "checkpoint": None})  # a fresh start: nothing is copied
    (staging / "result.json").write_text("")
    publish_trial_logs(fresh)
    assert (storage / "result.json").read_text().count("epoch") == 3
