"""Folders asp_tune writes into, and the rules that keep a user's own files safe.

- Every folder asp_tune creates carries a marker file, :data:`MARKER`, naming its kind and the
  files asp_tune wrote there. asp_tune deletes or replaces only marked folders, and in them only
  the files the marker lists; a folder holding anything else is refused up front.
- Results are written into a hidden staging folder beside the target and moved into place in one
  rename by :meth:`RunDirectory.commit`, after ``summary.json`` (the sign of a finished run). A
  run that fails or is interrupted commits nothing.
- A lock file beside the target refuses a second run into the same ``--out`` while the first is
  alive; the commit refuses to replace a folder that appeared after the run started.
- Staging folders of dead runs (their process is gone) are cleaned at the next run into the same
  place: the files their marker lists, then the folder if nothing else is in it.
"""

from __future__ import annotations

import json
import math
import os
import socket
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asp_tune.atomic import atomic_write_text, temp_twin_of
from asp_tune.errors import AspTuneError, ConfigError

SUMMARY = "summary.json"
MARKER = ".asp_tune"


def jsonable(value: Any) -> Any:
    """``value`` with numpy scalars, paths and non-finite floats made JSON-safe."""
    if isinstance(value, dict):
        return {str(k): jsonable(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [jsonable(v) for v in value]
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating, float)):
        return None if not math.isfinite(float(value)) else float(value)
    if isinstance(value, Path):
        return str(value)
    return value


# ------------------------------------------------------------------------------------ markers


def read_marker(folder: Path) -> dict[str, Any] | None:
    """The marker of an asp_tune folder, or None when ``folder`` is not one."""
    try:
        data = json.loads((folder / MARKER).read_text())
    except (OSError, ValueError):
        return None
    return data if isinstance(data, dict) and "kind" in data else None


def write_marker(folder: Path, kind: str, files: list[str], **extra: Any) -> dict[str, Any]:
    marker = {"kind": kind, "files": sorted(set(files)), "pid": os.getpid(), "host": socket.gethostname(),
              "run_id": extra.pop("run_id", uuid.uuid4().hex), "written": time.time(), **extra}
    atomic_write_text(folder / MARKER, json.dumps(marker, indent=1) + "\n")
    return marker


def foreign_entries(folder: Path, marker: dict[str, Any] | None) -> list[str]:
    """Entries of ``folder`` that asp_tune did not write (everything, for an unmarked folder)."""
    ours = set(marker.get("files", [])) | {MARKER} if marker else set()
    return sorted(p.name for p in folder.iterdir() if p.name not in ours
                  and not any(temp_twin_of(p.name, name) for name in ours))


def own_file(folder: Path, name: Any) -> Path | None:
    """``folder / name`` when a marker's ``name`` is a plain file name (no path separator, not ``.``
    or ``..``) and that entry is a file (or a link, which is removed, never followed) directly in
    ``folder``; None otherwise. A damaged or crafted marker can therefore never reach outside its
    folder, nor into a sub-folder: asp_tune writes files only."""
    if not isinstance(name, str) or name in ("", ".", "..", MARKER) or "/" in name or os.sep in name \
            or (os.altsep and os.altsep in name):
        return None
    path = folder / name
    return path if path.is_symlink() or path.is_file() else None


def remove_listed(folder: Path, marker: dict[str, Any]) -> None:
    """Delete the files a marker lists, then the marker, then the folder if nothing else is left."""
    listed = [n for n in marker.get("files", []) if own_file(folder, n) is not None]
    for name in listed:
        own_file(folder, name).unlink(missing_ok=True)
    for entry in folder.iterdir():  # temporary twins a run killed mid-write left (plain files only)
        if any(temp_twin_of(entry.name, n) for n in [*listed, MARKER]) and (entry.is_file() or entry.is_symlink()):
            entry.unlink(missing_ok=True)
    for name in (MARKER + ".tmp", MARKER):  # the marker, and its twin if a write was cut off
        path = folder / name
        if path.is_symlink() or path.is_file():  # never a folder someone gave that name
            path.unlink(missing_ok=True)
    try:
        folder.rmdir()
    except OSError:
        pass  # something that is not ours is still there: leave it


def process_alive(pid: Any, host: str | None = None) -> bool:
    """Whether ``pid`` runs on this host. A lock or marker from another host, or one whose pid is not
    a positive integer, counts as alive: nothing is deleted on its word."""
    if host is not None and host != socket.gethostname():
        return True
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return True  # os.kill(0 or -1, 0) would ask about whole process groups
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


RESULTS_SIGNATURE = "results summary v1"


def summary_identity(path: Path, content: bytes | None = None) -> dict[str, Any]:
    """What a results folder's signature covers: the summary's name and the hash of ``content`` (read from
    ``path`` when not given)."""
    import hashlib

    return {"file": path.name, "sha256": hashlib.sha256(path.read_bytes() if content is None else content).hexdigest()}


def summary_signed(path: Path, content: bytes | None = None) -> bool:
    """Whether this user's asp_tune committed the ``summary.json`` at ``path`` as it is now (signed in its
    folder's marker with this user's key): the code it names is then this user's own. ``content``: the bytes
    the caller read and will use (so that what is checked is what is used)."""
    from asp_tune.signatures import signed_by_me

    marker = read_marker(path.parent) or {}
    try:
        return signed_by_me(RESULTS_SIGNATURE, summary_identity(path, content), marker.get("summary_signature"))
    except OSError:
        return False


# ------------------------------------------------------------------------------------ paths


NAME_MAX, PATH_MAX = 255, 4096  # Linux's, and about every local file system's


def checked_folder(path: str | Path, field: str) -> Path:
    """``path`` made absolute, refused when it cannot be an asp_tune output folder.

    Refused: the file-system root, the home folder, the current folder or any folder above it,
    a path through a file, and a place where nothing can be created.
    """
    if path is None or str(path).strip() == "":
        raise ConfigError(field, path, "a folder path")
    target = Path(os.path.normpath(Path(path).expanduser().absolute()))
    longest = max(len(os.fsencode(part)) for part in target.parts)
    if longest > NAME_MAX - 24:  # room for the lock and temporary twins beside it (".NAME.lock", ...)
        raise ConfigError(field, str(path), f"a path whose every name is at most {NAME_MAX - 24} bytes "
                                            f"(one has {longest})")
    if len(os.fsencode(str(target))) > PATH_MAX - 256:
        raise ConfigError(field, str(path), f"a path of at most {PATH_MAX - 256} bytes (files go inside it)")
    cwd = Path.cwd().absolute()
    if target == Path(target.anchor) or target == Path.home().absolute():
        raise ConfigError(field, str(path), "a folder of its own, not the root or home folder")
    if target == cwd or target in cwd.parents:
        raise ConfigError(field, str(path), "a new folder, not the current folder or one above it")
    if target.exists() and not target.is_dir():
        raise ConfigError(field, str(path), "a folder path (a file is in the way)")
    existing = target
    while not existing.exists():
        existing = existing.parent
    if not existing.is_dir():
        raise ConfigError(field, str(path), f"a folder path ({existing} is a file)")
    if not os.access(existing, os.W_OK | os.X_OK):
        raise ConfigError(field, str(path), f"a place this user can write to ({existing} is not writable)")
    return target


class FolderLock:
    """An exclusive lock file ``.NAME.lock`` beside a folder, held by one live process."""

    def __init__(self, target: Path, field: str):
        self.path = target.parent / f".{target.name}.lock"
        self.field, self.target = field, target
        self.held = False

    def acquire(self) -> "FolderLock":
        for _ in range(2):
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                fd = os.open(self.path, os.O_CREAT | os.O_EXCL | os.O_WRONLY | getattr(os, "O_NOFOLLOW", 0), 0o644)
            except FileExistsError:
                try:
                    owner = json.loads(self.path.read_text())
                except (OSError, ValueError):
                    owner = None
                if owner is None and self._stale_empty():
                    self.path.unlink(missing_ok=True)  # left empty by a run that could not write it (a full disk)
                    continue
                if not (isinstance(owner, dict) and isinstance(owner.get("pid"), int) and "host" in owner):
                    raise ConfigError(self.field, str(self.target),
                                      f"a folder whose lock {self.path} asp_tune can read (that file is not "
                                      "an asp_tune lock; remove it if it is yours)") from None
                if process_alive(owner["pid"], owner["host"]):
                    raise ConfigError(self.field, str(self.target),
                                      f"a folder no other run is writing (process {owner['pid']} on "
                                      f"{owner['host']} holds {self.path})") from None
                self.path.unlink(missing_ok=True)  # our lock, and its process is gone
                continue
            except OSError as exc:  # e.g. /proc as root: permitted, yet nothing can be created there
                raise ConfigError(self.field, str(self.target), f"a place where files can be created ({self.path}: "
                                                                f"{exc.strerror or exc})") from None
            try:
                with os.fdopen(fd, "w") as f:
                    json.dump({"pid": os.getpid(), "host": socket.gethostname()}, f)
            except OSError as exc:  # a full disk: no empty lock is left to block the next run
                self.path.unlink(missing_ok=True)
                raise ConfigError(self.field, str(self.target), f"a place with room for its lock file ({self.path}: "
                                                                f"{exc.strerror or exc})") from None
            self.held = True
            return self
        raise ConfigError(self.field, str(self.target), f"a folder whose lock {self.path} can be taken")

    def _stale_empty(self, age_s: float = 30.0) -> bool:
        """An empty lock file older than ``age_s``: its run died before it could write its owner."""
        try:
            info = self.path.lstat()
        except OSError:
            return False
        import stat

        return stat.S_ISREG(info.st_mode) and info.st_size == 0 and time.time() - info.st_mtime > age_s

    def release(self) -> None:
        if self.held:
            self.path.unlink(missing_ok=True)
            self.held = False


def clean_dead_staging(target: Path) -> list[Path]:
    """Remove the staging folders (``.NAME.partial-*``) and locks (``.NAME.lock``) that runs killed outright
    left beside ``target``, of any results folder there: a run killed with SIGKILL cannot clean up, so the
    next run in the same place does. Only what is provably asp_tune's and whose process is gone goes."""
    removed = []
    for folder in target.parent.glob(".*.partial-*"):
        marker = None if folder.is_symlink() or not folder.is_dir() else read_marker(folder)
        if marker is None or marker.get("kind") != "staging":
            continue  # not provably ours
        if not process_alive(marker.get("pid"), marker.get("host")):
            remove_listed(folder, marker)  # its files, its marker, the folder if nothing else is there
            removed.append(folder)
    for lock in target.parent.glob(".*.lock"):
        try:
            owner = json.loads(lock.read_text()) if lock.is_file() and not lock.is_symlink() else None
        except (OSError, ValueError):
            continue
        if isinstance(owner, dict) and set(owner) == {"pid", "host"} and isinstance(owner["pid"], int) \
                and lock.name != f".{target.name}.lock" and not process_alive(owner["pid"], owner["host"]):
            lock.unlink(missing_ok=True)  # our lock (its exact content), its process gone
            removed.append(lock)
    return removed


# ------------------------------------------------------------------------------------ results


class RunDirectory:
    """A staging folder for one command's outputs, committed atomically to ``target``.

    ``overwrite`` replaces an existing results folder only when asp_tune wrote it and it holds
    nothing else; anything else is refused before work starts.
    """

    def __init__(self, target: str | Path, overwrite: bool = False, field: str = "out"):
        self.field = field
        self.target = checked_folder(target, field)
        self.overwrite = overwrite
        self.lock = FolderLock(self.target, field).acquire()
        try:
            self.replacing = self._check_target()
            clean_dead_staging(self.target)
            self.path = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.partial-", dir=self.target.parent))
            os.chmod(self.path, 0o755)
            self.files: list[str] = []  # every file handed out, so a dead run's staging can be cleaned
            self.run_id = write_marker(self.path, "staging", self.files)["run_id"]
        except BaseException:
            self.lock.release()
            raise
        self.committed = False

    def _check_target(self) -> str | None:
        """The run id of the results folder this run may replace (None: the target is new or empty)."""
        t = self.target
        if not t.is_dir() or not any(t.iterdir()):
            return None
        marker = read_marker(t)
        if not self.overwrite:
            return self._refuse("a new or empty folder (pass --overwrite, or overwrite=True from Python, to replace "
                                "an asp_tune results folder)")
        if marker is None or marker.get("kind") != "results":
            return self._refuse("a new or empty folder, or an asp_tune results folder with --overwrite "
                                "(this one has no .asp_tune marker, so asp_tune will not touch it)")
        foreign = foreign_entries(t, marker)
        if foreign:
            return self._refuse(f"a folder holding only asp_tune's files to overwrite (found {', '.join(foreign[:3])}"
                                f"{', ...' if len(foreign) > 3 else ''}; move them away first)")
        return str(marker.get("run_id"))

    def _refuse(self, allowed: str) -> None:
        raise ConfigError(self.field, str(self.target), allowed)

    def file(self, name: str) -> Path:
        """Where to write result file ``name``, recorded in the staging marker as asp_tune's."""
        if name not in self.files and not self.committed:
            self.files.append(name)
            write_marker(self.path, "staging", self.files, run_id=self.run_id)
        return self.path / name

    def write_table(self, name: str, frame: pd.DataFrame) -> Path:
        path = self.file(name)
        frame.to_csv(path, index=False)
        return path

    def write_json(self, name: str, data: dict[str, Any]) -> Path:
        path = self.file(name)
        path.write_text(json.dumps(jsonable(data), indent=2, sort_keys=False) + "\n")
        return path

    def commit(self, summary: dict[str, Any]) -> Path:
        """Write ``summary.json`` and the marker, then move the folder into place.

        Refuses to replace a folder that appeared, or changed hands, after the run started; the
        results then stay in a visible ``NAME.conflict-*`` folder named in the error.
        """
        from asp_tune.signatures import sign_payload

        self.write_json(SUMMARY, summary)
        files = [p.name for p in self.path.iterdir() if p.name != MARKER]
        self.signature = sign_payload(RESULTS_SIGNATURE, summary_identity(self.path / SUMMARY))
        write_marker(self.path, "results", files, summary_signature=self.signature)
        t = self.target
        if t.is_dir() and any(t.iterdir()):
            marker = read_marker(t)
            if self.replacing is None or marker is None or str(marker.get("run_id")) != self.replacing \
                    or foreign_entries(t, marker):
                self._conflict("appeared or changed while this run was working")
            remove_listed(t, marker)
        try:
            os.rename(self.path, t)  # replaces an empty folder, fails on a non-empty one
        except OSError:
            self._conflict("could not be replaced")
        self.path, self.committed = t, True
        return t

    def _conflict(self, what: str) -> None:
        kept = self.target.with_name(f"{self.target.name}.conflict-{time.strftime('%Y%m%d-%H%M%S')}")
        os.rename(self.path, kept)
        self.path = kept
        write_marker(kept, "results", [p.name for p in kept.iterdir() if p.name != MARKER],
                     summary_signature=getattr(self, "signature", None))
        raise AspTuneError(f"{self.field} {self.target} {what}; this run's results are kept in {kept}")

    def discard(self) -> None:
        """Remove this run's staging folder: the files it handed out, the marker, then the folder."""
        if not self.committed and self.path.name.startswith(f".{self.target.name}.partial-"):
            remove_listed(self.path, {"files": self.files})

    def __enter__(self) -> "RunDirectory":
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        try:
            if exc_type is not None:
                self.discard()
        finally:
            self.lock.release()


# ------------------------------------------------------------------------------------ checkpoints


#: Checkpoint-folder locks this process holds, by folder: the open lock file and how many objects hold it.
_HELD: dict[str, list] = {}


class CheckpointFolder:
    """A folder of per-run checkpoint files that asp_tune created and may clean up.

    An existing folder is used only when it is empty or carries an asp_tune checkpoint marker;
    :meth:`clear` and :meth:`remove` delete only the files this class handed out.
    """

    KIND = "checkpoints"

    def __init__(self, path: str | Path, field: str = "checkpoint_dir"):
        self.field = field
        self.path = checked_folder(path, field)
        if self.path.is_dir() and any(self.path.iterdir()):
            marker = read_marker(self.path)
            if marker is None or marker.get("kind") != self.KIND:
                raise ConfigError(field, str(path), "a new or empty folder, or one asp_tune created for "
                                                    "checkpoints (this one holds other files; asp_tune will not "
                                                    "write or delete there)")
        marker = read_marker(self.path) or {}
        self.created = bool(marker.get("created", not self.path.exists()))  # only then may it go
        self.path.mkdir(parents=True, exist_ok=True)
        self.files: list[str] = list(marker.get("files", []))
        self._mark()
        self._lock = self._hold()

    LOCK = ".asp_tune.lock"

    def _hold(self):
        """An exclusive lock on the folder for as long as this process runs: two runs writing the same
        checkpoints would resume from each other's. A second run is refused by name."""
        try:
            import fcntl
        except ImportError:  # not POSIX: no lock
            return None
        held = _HELD.get(str(self.path.resolve()))
        if held is not None and not held[0].closed:
            held[1] += 1
            return held[0]  # this process holds it already (a second object for the same folder)
        try:  # never through a link someone planted there: truncating it would empty the file it names
            fd = os.open(self.path / self.LOCK, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o600)
        except OSError as exc:
            raise ConfigError(self.field, str(self.path), f"a folder whose lock file {self.LOCK} asp_tune can make "
                                                          f"({exc.strerror or exc})") from None
        handle = os.fdopen(fd, "r+")  # held open until the process ends
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.seek(0)
            holder = handle.read().strip() or "another process"
            handle.close()
            raise ConfigError(self.field, str(self.path), f"a folder no other run is using (it is held by {holder}: "
                                                          "give this run its own --checkpoint-dir)") from None
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}\n")
        handle.flush()
        _HELD[str(self.path.resolve())] = [handle, 1]
        return handle

    def _mark(self) -> None:
        write_marker(self.path, self.KIND, self.files, created=self.created)

    def file(self, name: str) -> Path:
        """The path of checkpoint ``name`` (and its ``.tmp`` twin), recorded as asp_tune's."""
        new = [n for n in (name, name + ".tmp") if n not in self.files]
        if new:
            self.files.extend(new)
            self._mark()
        return self.path / name

    def clear(self) -> None:
        """Delete every checkpoint this folder's marker lists (``--restart``)."""
        for name in self.files:
            path = own_file(self.path, name)
            if path is not None:
                path.unlink(missing_ok=True)

    def holds_checkpoints(self) -> bool:
        """Whether a checkpoint this folder's marker lists is there (something to resume from)."""
        return any(own_file(self.path, name) is not None for name in self.files)

    def remove_if_unused(self) -> None:
        """:meth:`remove` when no checkpoint was written yet (a run refused or failed before its first):
        nothing is left to resume from, so nothing is left behind."""
        if not self.holds_checkpoints():
            self.remove()

    def release(self) -> None:
        """Let go of the folder's lock (its checkpoints stay for a resume): another run may take it once no
        other object of this process for the same folder holds it."""
        if self._lock is None:
            return
        held = _HELD.get(str(self.path.resolve()))
        if held is not None and held[0] is self._lock:
            held[1] -= 1
            if held[1] <= 0:
                del _HELD[str(self.path.resolve())]
                self._lock.close()
        else:
            self._lock.close()
        self._lock = None

    def remove(self) -> None:
        """Delete the listed checkpoints and the marker; the folder itself goes only if asp_tune
        created it and nothing else is in it. While another object of this process holds the folder, only
        the checkpoints go (the marker, the lock and the folder stay for it)."""
        self.clear()
        held = _HELD.get(str(self.path.resolve()))
        if self._lock is not None and held is not None and held[0] is self._lock and held[1] > 1:
            self.release()
            return
        (self.path / MARKER).unlink(missing_ok=True)
        if self._lock is not None:
            (self.path / self.LOCK).unlink(missing_ok=True)  # the file this run made and holds open
            self.release()
        if self.created:
            try:
                self.path.rmdir()
            except OSError:
                pass
