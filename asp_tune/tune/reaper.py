"""Stops a local Ray session's processes when the asp_tune process that started it dies.

Ray ties its GCS server and raylet to the driver (the kernel kills them with it), but the agents
the raylet starts (dashboard and runtime-env agents) outlive a driver killed with SIGKILL by a
minute or more. :func:`watch` starts this module as a detached process that follows the driver's
descendants once a second and, when the driver is gone, kills those still running (checking each
one's start, so a reused process id is never hit) and the process groups they led, which hold any the
polls missed (the raylet's agents are in its group). The driver also tells it of each process it starts
for Ray the moment it starts (:func:`register`, a line on the reaper's standard input), so a driver killed
between two polls, or before the first, still has its raylet's group ended. A driver that exits normally
has shut Ray down already; the reaper then finds nothing left and exits.

    python -m asp_tune.tune.reaper DRIVER_PID
"""

from __future__ import annotations

import os
import select
import signal
import stat
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 1.0
#: The folder that holds the asp_tune package this process runs.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]
#: The reaper this process started (:func:`watch`), told of each process it starts for Ray (:func:`register`).
_reaper: subprocess.Popen | None = None


def watch(driver_pid: int) -> subprocess.Popen:
    """Start the reaper for ``driver_pid`` (its own session: Ctrl-C on the terminal never reaches it)."""
    global _reaper
    # `python -m` puts the current folder first on sys.path, where a file such as psutil.py would be
    # imported instead of the real module: the reaper imports asp_tune from where this process found it
    # and never looks in the current folder
    code = (f"import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            f"sys.path.append({str(PACKAGE_ROOT)!r}); from asp_tune.tune.reaper import main; main()")
    _reaper = subprocess.Popen([sys.executable, "-I", "-c", code, str(driver_pid)],
                               stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                               start_new_session=True, close_fds=True)
    return _reaper


def register(pid: int) -> None:
    """Tell this process's reaper (:func:`watch`) of ``pid``, a process it just started: if this one dies
    before the reaper's next poll, that process and its process group are still ended."""
    reaper = _reaper
    started = start_mark(pid)
    if reaper is None or reaper.stdin is None or reaper.poll() is not None or started is None:
        return
    try:
        reaper.stdin.write(f"{pid} {started!r}\n".encode())
        reaper.stdin.flush()
    except (OSError, ValueError):  # the reaper is gone (its pipe closed)
        return


def _forget_reaper() -> None:
    """In a child this process forks: close its copy of the reaper's pipe, so the reaper sees the driver's
    end close when the driver dies, whatever children it forked live on."""
    global _reaper
    if _reaper is not None and _reaper.stdin is not None:
        try:
            _reaper.stdin.close()
        except OSError:
            pass
    _reaper = None


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_reaper)


def start_mark(pid: int) -> float | None:
    """When ``pid`` started (None: no such process): on Linux its start in clock ticks since boot, which a
    change of the system clock leaves as it is; elsewhere psutil's creation time."""
    if sys.platform.startswith("linux"):
        try:
            with open(f"/proc/{pid}/stat", "rb") as f:
                fields = f.read()
            return float(fields[fields.rindex(b")") + 2:].split()[19])  # field 22, starttime
        except (OSError, ValueError, IndexError):
            return None
    import psutil

    try:
        return psutil.Process(pid).create_time()
    except psutil.Error:
        return None


def _same(pid: int, started: float) -> bool | None:
    """Whether ``pid`` is the process that started at ``started`` (None: no such process now)."""
    now = start_mark(pid)
    return None if now is None else abs(now - started) < 1e-3


class _Registrations:
    """The ``PID START`` lines the driver writes to the reaper's standard input (a pipe; anything else, such as
    a terminal when run by hand, is not read). Read without blocking, so nothing waits on a half-written line."""

    def __init__(self) -> None:
        try:
            self.open = stat.S_ISFIFO(os.fstat(0).st_mode)
        except OSError:
            self.open = False
        if self.open:
            os.set_blocking(0, False)
        self.pending = b""

    def wait(self, timeout_s: float) -> None:
        """Sleep ``timeout_s``, or less when a line (or the end: the driver closed its end, or died) arrives."""
        if not self.open:
            time.sleep(timeout_s)
            return
        select.select([0], [], [], timeout_s)

    def read(self, known: dict[int, float]) -> None:
        """Add every whole line written so far to ``known``."""
        while self.open:
            try:
                chunk = os.read(0, 65536)
            except BlockingIOError:
                break
            except OSError:
                self.open = False
                break
            if not chunk:  # the driver's end is closed
                self.open = False
            self.pending += chunk
            *lines, self.pending = self.pending.split(b"\n")
            for line in lines:
                try:
                    pid, started = line.split()
                    known.setdefault(int(pid), float(started))
                except ValueError:
                    continue


def reap(driver_pid: int, poll_s: float = POLL_S) -> int:
    """Follow ``driver_pid``'s descendants until it dies, then kill those left, and the process groups they led
    (a local Ray's processes each lead one, :func:`asp_tune.tune.session.ensure_ray`, and the raylet's agents
    are in its group: started between two polls, they go with it); returns how many it killed one by one."""
    import psutil

    own_group = os.getpgid(0)
    known: dict[int, float] = {}  # pid -> its start_mark
    registrations = _Registrations()
    try:
        driver = psutil.Process(driver_pid)
        while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
            was_open = registrations.open
            registrations.read(known)
            for child in driver.children(recursive=True):
                if child.pid != os.getpid() and child.pid not in known:  # the reaper is the driver's child too
                    started = start_mark(child.pid)
                    if started is not None:
                        known[child.pid] = started
            if was_open and not registrations.open:  # the driver's end closed: it is gone, or going
                time.sleep(0.05)
            else:
                registrations.wait(poll_s)
    except psutil.NoSuchProcess:
        pass
    registrations.read(known)  # what a dead driver wrote is all in the pipe now
    killed = 0
    for pid, started in list(known.items()):
        if _same(pid, started):
            try:
                os.kill(pid, signal.SIGKILL)
                killed += 1
            except (ProcessLookupError, PermissionError):
                continue
    for leader, started in list(known.items()):  # no new process takes a group's id while the group has members,
        if leader in (driver_pid, own_group) or _same(leader, started) is False:  # and a live process of that id
            continue  # must be the one seen here (False: the id was reused)
        try:
            os.killpg(leader, signal.SIGKILL)  # its members the polls missed (none: no such group)
        except (ProcessLookupError, PermissionError):
            continue
    return killed


def main() -> None:
    reap(int(sys.argv[1]))


if __name__ == "__main__":
    main()
