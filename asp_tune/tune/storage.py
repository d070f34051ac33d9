"""Where experiments live: a local folder or a bucket URI (``s3://``, ``gs://``, ``file://``...).

Ray Tune keeps trials and checkpoints there; asp_tune keeps two small files beside them (the run's
settings, its cumulative wall time). Local paths are made absolute (Ray reads a relative path as a
URI); URIs go through pyarrow's file systems, the layer Ray itself uses.
"""

from __future__ import annotations

import contextlib
import json
import re
import sys
from pathlib import Path
from typing import Any


def is_uri(location: str) -> bool:
    return "://" in location


def storage_root(storage_path: str | None, field: str = "storage_path") -> str:
    """``storage_path`` ready for Ray: a URI as given, a local path absolute (default ``~/ray_results``);
    a path through a loop of links is a named error."""
    if storage_path and is_uri(storage_path):
        return storage_path.rstrip("/")
    try:
        return str(Path(storage_path or Path.home() / "ray_results").expanduser().resolve())
    except (RuntimeError, OSError, RecursionError) as exc:
        from asp_tune.errors import ConfigError

        raise ConfigError(field, storage_path, f"a folder path without a loop of links ({type(exc).__name__}: "
                                               f"{str(exc)[:120]})") from None


def ray_filesystem(location: str):
    """The file system Ray Tune is handed for ``location``: for a local folder, one that writes every
    file whole and leaves unchanged ones alone (:mod:`asp_tune.tune.safe_fs`); None (Ray's own choice)
    for a URI."""
    if is_uri(location):
        return None
    from asp_tune.tune.safe_fs import safe_local_filesystem

    return safe_local_filesystem()


def check_location(location: str, field: str = "storage_path") -> None:
    """Refuse, by name and before Ray starts, a storage location Ray could not use: a URI whose scheme
    no pyarrow file system knows, or a local folder that cannot be made or written."""
    import os
    import tempfile

    from asp_tune.errors import ConfigError

    if is_uri(location):
        try:
            filesystem, path = _filesystem(location)
        except Exception as exc:  # noqa: BLE001 - pyarrow's own error types
            raise ConfigError(field, location, "a local folder or a URI of a file system Ray can use (file://, "
                                               f"s3://, gs://, hdfs://): {str(exc).splitlines()[0][:160]}") from None
        reachable(filesystem, path, field, location)
        return
    from asp_tune.run_dir import NAME_MAX

    path = Path(location)
    if any(len(os.fsencode(part)) > NAME_MAX - 64 for part in path.parts):
        raise ConfigError(field, location, f"a path whose every name is at most {NAME_MAX - 64} bytes (Ray names "
                                           "experiments and trials inside it)")
    made = [p for p in (path, *path.parents) if not p.exists()]  # what the probe makes, it takes away again:
    try:                                                            # a search refused later leaves no folder
        path.mkdir(parents=True, exist_ok=True)
        with tempfile.NamedTemporaryFile(dir=path, prefix=".asp_tune_probe."):
            pass
    except OSError as exc:
        raise ConfigError(field, location, f"a folder this user can write ({exc.strerror or exc})") from None
    finally:
        for folder in made:  # deepest first; one another process filled meanwhile stays
            with contextlib.suppress(OSError):
                folder.rmdir()


#: Seconds a storage URI has to answer before a search is refused (pyarrow's GCS client retries for
#: 15 minutes by default; its S3 client gives up after a few seconds).
REACH_TIMEOUT_S = 20.0


def reachable(filesystem, path: str, field: str, location: str, timeout_s: float | None = None) -> None:
    """Ask ``filesystem`` about ``path`` once, in a thread given ``timeout_s``: an unreachable bucket is one
    named error in seconds, never a search that hangs or fails in every trial."""
    import threading

    from asp_tune.errors import ConfigError

    outcome: list[BaseException | None] = []

    def ask() -> None:
        try:
            filesystem.get_file_info(path)
            outcome.append(None)
        except BaseException as exc:  # noqa: BLE001 - reported below
            outcome.append(exc)

    worker = threading.Thread(target=ask, name="asp_tune-storage-probe", daemon=True)
    worker.start()
    worker.join(REACH_TIMEOUT_S if timeout_s is None else timeout_s)
    if not outcome:
        raise ConfigError(field, location, f"storage that answers (no answer within "
                                           f"{REACH_TIMEOUT_S if timeout_s is None else timeout_s:g} s)")
    if outcome[0] is not None:
        lines = str(outcome[0]).strip().splitlines() or [type(outcome[0]).__name__]
        raise ConfigError(field, location, f"storage that answers ({lines[0][:200]})")


def join(root: str, *parts: str) -> str:
    return "/".join([root.rstrip("/"), *parts]) if is_uri(root) else str(Path(root, *parts))


def _filesystem(location: str):
    from pyarrow import fs

    return fs.FileSystem.from_uri(location)


def make_dirs(location: str) -> None:
    if is_uri(location):
        filesystem, path = _filesystem(location)
        filesystem.create_dir(path, recursive=True)
    else:
        Path(location).mkdir(parents=True, exist_ok=True)


def read_bytes(location: str) -> bytes:
    """The bytes of a file; OSError (FileNotFoundError) when it cannot be read."""
    if not is_uri(location):
        return Path(location).read_bytes()
    filesystem, path = _filesystem(location)
    try:
        with filesystem.open_input_stream(path) as stream:
            return stream.read()
    except Exception as exc:  # noqa: BLE001 - pyarrow raises its own types for a missing file
        raise FileNotFoundError(location) from exc


def read_text(location: str) -> str:
    """The text of a file; OSError (FileNotFoundError) when it cannot be read."""
    return read_bytes(location).decode()


def write_bytes(location: str, data: bytes) -> None:
    """Write a small file (replaced at once on a local disk; a bucket object is replaced whole anyway)."""
    if is_uri(location):
        filesystem, path = _filesystem(location)
        with filesystem.open_output_stream(path) as stream:
            stream.write(data)
        return
    from asp_tune.atomic import atomic_write

    atomic_write(location, lambda handle: handle.write(data))


def write_text(location: str, text: str) -> None:
    write_bytes(location, text.encode())


def move(source: str, target: str) -> None:
    if is_uri(source):
        filesystem, path = _filesystem(source)
        filesystem.move(path, _filesystem(target)[1])
    else:
        Path(source).replace(target)


def list_names(location: str, pattern: str) -> list[str]:
    """Names of the files in the folder ``location`` that match the glob ``pattern`` (sorted)."""
    import fnmatch

    if not is_uri(location):
        return sorted(p.name for p in Path(location).glob(pattern) if p.is_file())
    from pyarrow import fs

    filesystem, path = _filesystem(location)
    infos = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == fs.FileType.File and fnmatch.fnmatch(i.base_name, pattern))


def list_dirs(location: str) -> list[str]:
    """Names of the folders directly in the folder ``location`` (sorted; links to folders left out)."""
    if not is_uri(location):
        root = Path(location)
        return sorted(p.name for p in root.iterdir() if p.is_dir() and not p.is_symlink()) if root.is_dir() else []
    from pyarrow import fs

    filesystem, path = _filesystem(location)
    infos = filesystem.get_file_info(fs.FileSelector(path, allow_not_found=True))
    return sorted(i.base_name for i in infos if i.type == fs.FileType.Directory)


def trial_folder(trial: Any) -> Path | None:
    """Where a trial's ``result.json`` is: the driver's staging folder, or the experiment's trial folder."""
    for name in ("local_path", "path"):
        try:
            value = getattr(trial, name)
        except Exception:  # noqa: BLE001 - a trial without storage yet
            continue
        if value and (Path(value) / "result.json").is_file():
            return Path(value)
    return None


def trial_reports(trial: str | Path) -> list[dict]:
    """A trial's reports so far, from its ``result.json``; a line still being written, or one cut off
    by a killed driver (merged with the next on resume), is left out."""
    file = Path(trial) / "result.json"
    rows = []
    for line in file.read_text().splitlines() if file.exists() else []:
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return rows


#: asp_tune's record of how an experiment was started, beside Ray's files.
SETTINGS_FILE = "asp_tune_settings.json"
#: written into an experiment whose search finished (:func:`settle_experiment`)
FINISHED_FILE = "asp_tune_finished"
CHECKPOINT_FOLDER = re.compile(r"checkpoint_\d+")


def unfinished_experiments(storage: str | None) -> list[Path]:
    """The experiments asp_tune started in the local folder ``storage`` whose search stopped before it finished
    (killed, or its driver lost): never settled, their trials' checkpoints still there to resume from. A search's
    full-data audit resumes with the search and is not listed."""
    if storage is None or is_uri(storage) or not Path(storage).is_dir():
        return []
    found = []
    for experiment in sorted(p for p in Path(storage).iterdir() if p.is_dir() and not p.is_symlink()):
        if not (experiment / SETTINGS_FILE).is_file() or (experiment / FINISHED_FILE).exists():
            continue
        try:
            if json.loads((experiment / SETTINGS_FILE).read_text()).get("audit_of"):
                continue
            if any(CHECKPOINT_FOLDER.fullmatch(c.name) for t in experiment.iterdir() if t.is_dir()
                   for c in t.iterdir()):
                found.append(experiment)
        except (OSError, ValueError, AttributeError):  # one it cannot read is not named
            continue
    return found


def settle_experiment(experiment: str, keep_checkpoints: bool, verbose: int) -> dict[str, Any]:
    """After a finished search: drop its trials' checkpoints unless kept (a finished experiment resumes
    without them: nothing in it runs again), and say where the experiment is and how big it is. Only
    ``checkpoint_N`` folders Ray made in the trial folders of an experiment asp_tune started go."""
    if is_uri(experiment):
        return {"path": experiment, "checkpoints_kept": True}
    root = Path(experiment)
    dropped = 0
    if not keep_checkpoints and (root / SETTINGS_FILE).is_file() and not root.is_symlink():
        import shutil

        for trial in (p for p in root.iterdir() if p.is_dir() and not p.is_symlink()):
            for folder in (c for c in trial.iterdir() if CHECKPOINT_FOLDER.fullmatch(c.name)):
                if folder.is_dir() and not folder.is_symlink():
                    shutil.rmtree(folder)  # Ray's own checkpoint folder, in a trial folder of our experiment
                    dropped += 1
    if (root / SETTINGS_FILE).is_file() and not root.is_symlink():
        (root / FINISHED_FILE).touch()
    size = sum(f.stat().st_size for f in root.rglob("*") if f.is_file() and not f.is_symlink())
    if verbose:
        kept = "its trials' checkpoints kept" if keep_checkpoints else \
            f"{dropped} trial checkpoints dropped (--keep-checkpoints keeps them)"
        print(f"[asp-tune] Ray's experiment: {root} ({size / 1e6:,.1f} MB; {kept})", file=sys.stderr)
    return {"path": str(root), "size_mb": round(size / 1e6, 3), "checkpoints_kept": keep_checkpoints,
            "checkpoints_dropped": dropped}
