"""The local file system Ray Tune writes an experiment through: every file whole or not at all, and a
file rewritten with the bytes it already holds left alone.

Ray Tune keeps an experiment's driver files (its state, each trial's ``result.json`` and
``progress.csv``) in a staging folder and copies that whole folder to the storage path every time it
saves its state; trials write checkpoints straight to the storage path. Through pyarrow's local file
system each copy truncates the file it replaces and writes it again, so a driver killed during a copy
left trials whose ``result.json`` was empty (their reports lost to the summary), and every save
rewrote every trial's files: the bytes written grew with the square of the number of trials.

:func:`safe_local_filesystem` is handed to Ray as ``storage_filesystem`` for a local storage path:
reads go to pyarrow's local file system unchanged; a written file is collected and, on close,
compared with the file it would replace. The same bytes: nothing is written. Other bytes: they go
through :func:`asp_tune.atomic.atomic_write` (a fresh temporary file, renamed over the target), so a
kill at any moment leaves the old file or the new one, and a link planted under the name is never
followed.
"""

from __future__ import annotations

import io
import os
import stat
import tempfile
from pathlib import Path

import pyarrow as pa
import pyarrow.fs as pafs

from asp_tune.atomic import TMP_SUFFIX, atomic_write

#: Written files up to this size are held in memory until closed; larger ones spill to their
#: temporary file as they are written.
IN_MEMORY = 4 << 20


def same_bytes(path: str, data: bytes | None, spilled: str | None) -> bool:
    """Whether the regular file at ``path`` (never a link) holds exactly ``data`` (or the bytes of the file
    ``spilled``)."""
    try:
        info = os.stat(path, follow_symlinks=False)
        if not stat.S_ISREG(info.st_mode):
            return False
        size = info.st_size
        if data is not None:
            if size != len(data):
                return False
            with open(path, "rb") as f:
                return f.read(len(data) + 1) == data
        if size != os.path.getsize(spilled):
            return False
        with open(path, "rb") as a, open(spilled, "rb") as b:
            while True:
                x, y = a.read(1 << 20), b.read(1 << 20)
                if x != y:
                    return False
                if not x:
                    return True
    except OSError:
        return False


class _WholeFile(io.RawIOBase):
    """A file being written: in memory (then in a temporary file once large), renamed into place on
    close unless the target already holds the same bytes."""

    def __init__(self, path: str):
        super().__init__()
        self.path = path
        self._buffer: io.BytesIO | None = io.BytesIO()
        self._spill: tuple[int, str] | None = None
        self._written = 0

    def writable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._written

    def write(self, data) -> int:
        data = bytes(data)
        if self._buffer is not None and self._buffer.tell() + len(data) > IN_MEMORY:
            target = Path(self.path)
            fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=TMP_SUFFIX, dir=target.parent)
            os.write(fd, self._buffer.getvalue())
            self._spill, self._buffer = (fd, tmp), None
        if self._buffer is not None:
            self._buffer.write(data)
        else:
            view = memoryview(data)
            while view:
                view = view[os.write(self._spill[0], view):]
        self._written += len(data)
        return len(data)

    def close(self) -> None:
        if self.closed:
            return
        super().close()
        if self._spill is None:
            data = self._buffer.getvalue()
            if not same_bytes(self.path, data, None):
                atomic_write(self.path, lambda handle: handle.write(data))
            return
        fd, tmp = self._spill
        os.close(fd)
        try:
            if not same_bytes(self.path, None, tmp):
                os.replace(tmp, self.path)
        finally:
            Path(tmp).unlink(missing_ok=True)


class SafeLocalHandler(pafs.FileSystemHandler):
    """pyarrow's local file system, with whole-file, write-if-changed output streams."""

    def __init__(self):
        self._fs = pafs.LocalFileSystem()

    def __reduce__(self):  # rebuilt where unpickled (Ray hands checkpoints with their file system to workers)
        return SafeLocalHandler, ()

    def __eq__(self, other) -> bool:
        return isinstance(other, SafeLocalHandler)

    def __hash__(self) -> int:
        return hash(SafeLocalHandler)

    def equals(self, other) -> bool:
        return isinstance(other, SafeLocalHandler)

    def get_type_name(self) -> str:
        return "asp_tune-local"

    def normalize_path(self, path: str) -> str:
        return self._fs.normalize_path(path)

    def get_file_info(self, paths):
        return self._fs.get_file_info(paths)

    def get_file_info_selector(self, selector):
        return self._fs.get_file_info(selector)

    def create_dir(self, path: str, recursive: bool) -> None:
        self._fs.create_dir(path, recursive=recursive)

    def delete_dir(self, path: str) -> None:
        self._fs.delete_dir(path)

    def delete_dir_contents(self, path: str, missing_dir_ok: bool = False) -> None:
        self._fs.delete_dir_contents(path, missing_dir_ok=missing_dir_ok)

    def delete_root_dir_contents(self) -> None:
        raise OSError("refusing to delete the contents of the root folder")

    def delete_file(self, path: str) -> None:
        self._fs.delete_file(path)

    def move(self, src: str, dest: str) -> None:
        self._fs.move(src, dest)

    def copy_file(self, src: str, dest: str) -> None:
        with self._fs.open_input_stream(src) as source, self.open_output_stream(dest, None) as target:
            while chunk := source.read(1 << 20):
                target.write(chunk)

    def open_input_stream(self, path: str):
        return self._fs.open_input_stream(path)

    def open_input_file(self, path: str):
        return self._fs.open_input_file(path)

    def open_output_stream(self, path: str, metadata):
        return pa.PythonFile(_WholeFile(path), mode="w")

    def open_append_stream(self, path: str, metadata):
        return self._fs.open_append_stream(path)


def safe_local_filesystem() -> pafs.PyFileSystem:
    """The file system to hand Ray Tune (``storage_filesystem``) for a local storage path."""
    return pafs.PyFileSystem(SafeLocalHandler())
