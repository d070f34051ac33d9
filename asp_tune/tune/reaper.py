"""Stops a local Ray session's processes when the asp_tune process that started it dies.

Ray ties its GCS server and raylet to the driver (the kernel kills them with it), but the agents
the raylet starts (dashboard and runtime-env agents) outlive a driver killed with SIGKILL by a
minute or more. :func:`watch` starts this module as a detached process that follows the driver's
descendants once a second and, when the driver is gone, kills those still running (checking each
one's start time, so a reused process id is never hit) and the process groups they led, which hold
any the polls missed (the raylet's agents are in its group). A driver that exits normally has shut Ray
down already; the reaper then finds nothing left and exits.

    python -m asp_tune.tune.reaper DRIVER_PID
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

POLL_S = 1.0
#: The folder that holds the asp_tune package this process runs.
PACKAGE_ROOT = Path(__file__).resolve().parents[2]


def watch(driver_pid: int) -> subprocess.Popen:
    """Start the reaper for ``driver_pid`` (its own session: Ctrl-C on the terminal never reaches it)."""
    # `python -m` puts the current folder first on sys.path, where a file such as psutil.py would be
    # imported instead of the real module: the reaper imports asp_tune from where this process found it
    # and never looks in the current folder
    code = (f"import sys; sys.path[:] = [p for p in sys.path if p not in ('', '.')]; "
            f"sys.path.append({str(PACKAGE_ROOT)!r}); from asp_tune.tune.reaper import main; main()")
    return subprocess.Popen([sys.executable, "-I", "-c", code, str(driver_pid)],
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True, close_fds=True)


def reap(driver_pid: int, poll_s: float = POLL_S) -> int:
    """Follow ``driver_pid``'s descendants until it dies, then kill those left, and the process groups they led
    (a local Ray's processes each lead one, :func:`asp_tune.tune.session.ensure_ray`, and the raylet's agents
    are in its group: started between two polls, they go with it); returns how many it killed one by one."""
    import psutil

    try:
        driver = psutil.Process(driver_pid)
    except psutil.NoSuchProcess:
        return 0
    own_group = os.getpgid(0)
    known: dict[int, float] = {}  # pid -> create_time
    while driver.is_running() and driver.status() != psutil.STATUS_ZOMBIE:
        try:
            for child in driver.children(recursive=True):
                if child.pid != os.getpid():  # the reaper is the driver's child too
                    known.setdefault(child.pid, child.create_time())
        except psutil.NoSuchProcess:
            break
        time.sleep(poll_s)
    killed = 0
    for pid, created in known.items():
        try:
            proc = psutil.Process(pid)
            if abs(proc.create_time() - created) < 1e-3:
                proc.kill()
                killed += 1
        except psutil.NoSuchProcess:
            continue
    for leader, created in known.items():  # no new process takes a group's id while the group has members,
        if leader in (driver_pid, own_group):  # and a live process of that id must be the one seen here
            continue
        try:
            if abs(psutil.Process(leader).create_time() - created) >= 1e-3:
                continue  # the id was reused
        except psutil.NoSuchProcess:
            pass
        try:
            os.killpg(leader, signal.SIGKILL)  # its members the polls missed (none: no such group)
        except (ProcessLookupError, PermissionError):
            continue
    return killed


def main() -> None:
    reap(int(sys.argv[1]))


if __name__ == "__main__":
    main()
