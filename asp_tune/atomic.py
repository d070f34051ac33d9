"""Files written whole or not at all, through a temporary file that nothing else can have planted.

Every file asp_tune writes and later reads back (checkpoints, caches, markers, small state files) goes
through :func:`atomic_write`: a fresh temporary file is created exclusively in the target's folder
(``mkstemp``: a random name, ``O_CREAT | O_EXCL``, so a symbolic link planted under any name is never
followed), written through the open descriptor, then renamed over the target. A failure (a full or
read-only disk) removes that temporary file and raises one :class:`~asp_tune.errors.AspTuneError`
naming the file, so nothing half-written is left for the next run to trip on.
"""

from __future__ import annotations

import errno
import os
import tempfile
from pathlib import Path
from typing import IO, Callable

from asp_tune.errors import AspTuneError

#: The names of the temporary files: ``.NAME.<random>.tmp`` beside ``NAME``.
TMP_SUFFIX = ".tmp"


def temp_twin_of(name: str, listed: str) -> bool:
    """Whether ``name`` is a temporary file :func:`atomic_write` made for ``listed`` (a run killed
    mid-write leaves one; it belongs to whoever owns ``listed``)."""
    return name.startswith(f".{listed}.") and name.endswith(TMP_SUFFIX) and "/" not in name


def atomic_write(path: str | Path, write: Callable[[IO[bytes]], None]) -> Path:
    """Write ``path`` by ``write(binary file)`` through a fresh temporary file in the same folder."""
    path = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=TMP_SUFFIX, dir=path.parent)
    except OSError as exc:
        raise AspTuneError(f"cannot write {path}: {_reason(exc)}") from None
    try:
        with os.fdopen(fd, "wb") as handle:
            write(handle)  # no fsync: this guards against a killed process, not a power cut, and an fsync
            #                per report made a search several times slower on a busy disk
        os.replace(tmp, path)
    except BaseException as exc:
        Path(tmp).unlink(missing_ok=True)  # our own fresh file, never a planted one
        if isinstance(exc, OSError) or (isinstance(exc, RuntimeError) and "write" in str(exc).lower()):
            raise AspTuneError(f"cannot write {path}: {_reason(exc)}") from None
        raise
    return path


def atomic_write_text(path: str | Path, text: str) -> Path:
    return atomic_write(path, lambda handle: handle.write(text.encode()))


def create_private(path: str | Path, data: bytes) -> bool:
    """Create ``path`` holding ``data``, readable by this user only (mode 0600 from the first byte, in a
    folder made 0700); False when it exists already (never overwritten, never through a link)."""
    path = Path(path)
    path.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0), 0o600)
    except FileExistsError:
        return False
    with os.fdopen(fd, "wb") as handle:
        handle.write(data)
    return True


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        return "no space left on the device"
    if isinstance(exc, OSError) and exc.errno in (errno.EACCES, errno.EPERM, errno.EROFS):
        return "the folder is not writable"
    if isinstance(exc, OSError):
        return exc.strerror or str(exc)
    return str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
