"""The Ray session of a search: started (or joined) once per process, checked before any trial runs,
and stopped cleanly on SIGINT/SIGTERM.

A local Ray is private to this process (``address="local"``) with Ray's token made readable by this
user only; a cluster address is checked for a listening port and, for ``auto``, for an owner who is
this user. Resources no node has, and several nodes without shared storage, are refused up front.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from asp_tune.errors import AspTuneError, ConfigError, RunInterrupted


def ensure_ray(address: str | None = None, num_cpus: int | None = None, modules: list | None = None) -> None:
    """Start (or connect to) Ray once per process.

    ``modules``: the user's modules (:func:`asp_tune.imports.user_modules`) sent to every worker, on
    this machine or a cluster (``runtime_env={"py_modules": ...}``). A Ray this process started
    before keeps its own; trials then also find them through the driver's folders.

    A local Ray requires Ray's token (its default; see the comment below), and a reaper process
    ends its processes if this one is killed (:mod:`asp_tune.tune.reaper`). A cluster ``address`` (HOST:PORT or
    ray://HOST:PORT) is checked for a listening port first, so a wrong address fails in seconds
    instead of hanging.
    """
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    os.environ.setdefault("RAY_AIR_NEW_OUTPUT", "0")
    # The experiment's state is saved at Ray's own cadence (at least 10 s apart, so its cost stays a
    # small share of the search's), and whenever a trial has made KEEP_CHECKPOINTS checkpoints since the
    # last save (Ray's own rule), so the checkpoint a saved state names is still there on --resume.
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    if modules:
        kwargs["runtime_env"] = {"py_modules": list(modules)}
    if address:
        check_reachable(address)
        check_cluster_owner(address)
        try:
            ray.init(address=address, **kwargs)
        except (ConnectionError, RuntimeError, ValueError) as exc:
            raise ConfigError("address", address, f"a running Ray cluster ({str(exc).splitlines()[0][:200]})") from None
        print(f"[asp-tune] joined the Ray cluster at {joined_cluster()}", file=sys.stderr)
    else:
        # Ray's servers listen on every interface whatever the node address (Ray 2.60 has no setting
        # for it); a new local session requires Ray's token (~/.ray/auth_token, this user's only) unless
        # RAY_AUTH_MODE=disabled is set (tests/test_safety.py checks that a client without it is refused)
        # address="local": a session of our own even when the machine runs a cluster already (a bare
        # init() would join the one that Ray's address file or RAY_ADDRESS names, a stranger's included)
        protect_ray_token()
        from asp_tune.tune.reaper import watch

        watch(os.getpid())  # first: a driver killed outright, even while Ray starts, leaves none of its processes
        try:
            with _in_a_process_group_of_their_own():
                ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1", **kwargs)
        except Exception as exc:  # noqa: BLE001 - Ray's own types; its processes could not start here
            ray.shutdown()
            first = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
            raise AspTuneError(f"Ray could not start on this machine ({type(exc).__name__}: {first}); a full disk, a "
                               "file-size limit (ulimit -f) or a read-only temporary folder stops its processes "
                               "(RAY_TMPDIR names another one)") from None


@contextlib.contextmanager
def _in_a_process_group_of_their_own() -> Iterator[None]:
    """The processes a local ``ray.init`` starts (its GCS, raylet and monitors) each lead a process group of
    their own, as Ray does on Windows, out of the driver's (the raylet's agents join its group; its workers
    have groups of their own already).

    A signal to this process's group (coreutils ``timeout``, ``kill -- -PGID``, a batch system's stop) then
    reaches the driver only, which stops the search gracefully, saves Ray's experiment and shuts Ray down.
    Otherwise it killed Ray's raylet beside the driver, and the driver's next call to it ended the process
    with exit status 1 (Ray's own exit) before the experiment was saved. Only where the kernel ties these
    processes to the driver (Linux: Ray's fate-sharing, checked here; the reaper, :mod:`asp_tune.tune.reaper`,
    told of each one as it starts, ends the raylet's agents and the groups they are in), so they never outlive
    it; elsewhere, or if Ray's internals moved, Ray starts them as it always does.
    """
    from asp_tune.tune.reaper import register

    try:
        from ray._private import services, utils

        original = services.ConsolePopen
        tied = sys.platform.startswith("linux") and bool(utils.detect_fate_sharing_support())
    except (ImportError, AttributeError):
        tied = False
    if not tied:
        yield
        return

    class OwnGroupPopen(original):  # type: ignore[misc,valid-type]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            rays, driver = kwargs.get("preexec_fn"), os.getpid()

            def preexec() -> None:  # in the child, before it runs Ray's program (Popen's process_group is 3.11+)
                os.setpgid(0, 0)
                if rays is not None:
                    rays()  # Ray's fate-sharing: the kernel kills this child when the driver dies
                if os.getppid() != driver:  # the driver died before that was set: not tied, nor registered
                    os._exit(1)

            kwargs["preexec_fn"] = preexec
            super().__init__(*args, **kwargs)
            register(self.pid)  # the reaper ends its group even if this process dies before its next poll

    services.ConsolePopen = OwnGroupPopen
    try:
        yield
    finally:
        services.ConsolePopen = original


def protect_ray_token(path: Path | None = None) -> Path:
    """Ray's token (``~/.ray/auth_token``) readable by this user only: Ray writes it with the default
    umask (world-readable), and anyone who reads it may run code in this user's local Ray, whose
    servers listen on every interface. Made here (mode 0600) when missing, so it is never readable
    by others even for a moment; tightened when it exists."""
    import secrets
    import stat

    from asp_tune.atomic import create_private

    if path is None and (os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH")):
        return Path(os.environ.get("RAY_AUTH_TOKEN_PATH") or "")  # the user's own choice, as Ray reads it
    default = path is None
    path = path or Path.home() / ".ray" / "auth_token"
    if default and not path.exists() and not _writable(path.parent):
        return _private_token()  # a read-only home: Ray's token in a private temporary folder instead
    if not path.exists() and not path.is_symlink():
        try:
            from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

            token = generate_new_authentication_token()
        except ImportError:  # Ray moved it: any long random text is a token
            token = secrets.token_hex(32)
        try:
            create_private(path, token.encode())  # False: another search made it at the same moment
        except OSError:
            if not default:
                raise
            return _private_token()  # a read-only home: Ray's token in a private temporary folder instead
    info = path.lstat()  # a link is left as it is: chmod would change the file it names
    if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) \
            and (not hasattr(os, "getuid") or info.st_uid == os.getuid()):
        path.chmod(0o600)
    return path


def _writable(folder: Path) -> bool:
    """Whether ``folder`` (or the nearest folder above it that exists) lets this user create files."""
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    return os.access(folder, os.W_OK | os.X_OK)


def _private_token() -> Path:
    """A new token in a private temporary folder (mode 0700, the file 0600), named to Ray by
    ``RAY_AUTH_TOKEN_PATH`` for this process and the Ray it starts; the folder is removed when this process
    exits (the local Ray it started goes with it), so no token is left behind in the temporary folder."""
    import atexit
    import secrets
    import shutil
    import tempfile

    from asp_tune.atomic import create_private

    folder = Path(tempfile.mkdtemp(prefix="asp-tune-ray-token-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)  # the folder this call made, and only it
    path = folder / "auth_token"
    create_private(path, secrets.token_hex(32).encode())
    os.environ["RAY_AUTH_TOKEN_PATH"] = str(path)
    print(f"[asp-tune] {Path.home()} is not writable: Ray's token is kept in {path} for this run", file=sys.stderr)
    return path


def check_cluster_owner(address: str, address_file: str | None = None) -> None:
    """``--address auto`` joins the cluster that Ray's address file on this machine names: refuse one
    that another user started (its workers would run this user's trials, as that user, and see the
    data), naming the file, the cluster and its owner. Other addresses are the user's own choice."""
    if address != "auto" or os.environ.get("RAY_ADDRESS"):
        return
    if address_file is None:
        from ray._private.utils import get_ray_address_file

        address_file = get_ray_address_file(None)
    path = Path(address_file)
    try:
        owner, named = path.stat().st_uid, path.read_text().strip()
    except OSError:
        return  # no local cluster: Ray says so itself
    if hasattr(os, "getuid") and owner != os.getuid():
        try:
            import pwd

            who = f"user {pwd.getpwuid(owner).pw_name} (uid {owner})"
        except (ImportError, KeyError):
            who = f"uid {owner}"
        raise ConfigError("address", address, f"a Ray cluster of your own: Ray's address file {path} names {named}, "
                                              f"started by {who}, whose workers would run your trials and see your "
                                              "data; start your own (ray start --head) and give its HOST:PORT, or "
                                              "leave --address out for a private local Ray")


def joined_cluster() -> str:
    """Where this driver's Ray runs: its GCS address and nodes, CPUs and GPUs (one line)."""
    import ray

    nodes = [n for n in ray.nodes() if n.get("Alive")]
    total = ray.cluster_resources()
    try:
        where = ray.get_runtime_context().gcs_address
    except Exception:  # noqa: BLE001 - only a label
        where = "?"
    return f"{where}: {len(nodes)} node(s), {total.get('CPU', 0):g} CPUs, {total.get('GPU', 0):g} GPUs"


def check_reachable(address: str, timeout_s: float = 5.0) -> None:
    """Fail fast when a HOST:PORT (or ray://HOST:PORT) address has nothing listening."""
    import socket

    if address == "auto":
        return  # Ray reads the local cluster's address file and fails at once when there is none
    hostport = address.removeprefix("ray://")
    host, sep, port = hostport.rpartition(":")
    if not sep or not port.isdigit() or not 1 <= int(port) <= 65535:
        raise ConfigError("address", address, "'auto', ray://HOST:PORT or HOST:PORT with a port in 1..65535 "
                                              "(an IPv6 host in brackets: [::1]:6379)")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        with socket.create_connection((host or "127.0.0.1", int(port)), timeout=timeout_s):
            pass
    except (UnicodeError, ValueError):
        raise ConfigError("address", address, "a host name whose labels are 1 to 63 characters") from None
    except OSError as exc:
        raise ConfigError("address", address, f"a reachable Ray cluster (connecting to {hostport} failed: "
                                               f"{exc.strerror or exc})") from None


def check_resources(cpus_per_trial: float, gpus_per_trial: float, field: str = "per_trial",
                    cluster: bool = False) -> None:
    """Refuse a per-trial request that no node of the cluster can ever satisfy (it would wait forever): neither
    a node alive now nor one its autoscaler may add (the node types it reports to Ray, as Ray Train reads them;
    a launcher that reports none counts its live nodes only, which the refusal of a search joining a
    ``cluster`` then says)."""
    import ray

    types = _node_types()
    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")] + [r for r, _ in types]
    if not nodes:
        return
    most_cpus = max(n.get("CPU", 0.0) for n in nodes)
    most_gpus = max(n.get("GPU", 0.0) for n in nodes)
    later = ("; an autoscaling cluster whose launcher does not report its node types to Ray counts only the "
             "nodes up now: keep one such node up (min_workers: 1)") if cluster and not types else ""
    if cpus_per_trial > most_cpus:
        raise ConfigError(f"cpus_{field}", cpus_per_trial, f"at most {most_cpus:g} (the most CPUs of any node{later})")
    if gpus_per_trial > most_gpus:
        raise ConfigError(f"gpus_{field}", gpus_per_trial,
                          f"at most {most_gpus:g} (the most GPUs of any node{later})" if most_gpus else
                          f"0 (no node of this Ray cluster has a GPU{later})")


def _node_types() -> list[tuple[dict[str, float], int]]:
    """The node types the cluster's autoscaler may start, each with its resources and how many (-1: no limit);
    empty where the cluster reports none (a fixed cluster, or a launcher that does not report them)."""
    try:
        from ray._private.state import state

        config = state.get_cluster_config()
    except Exception:  # noqa: BLE001 - Ray's private accessor; without it only the live nodes count
        return []
    if config is None:
        return []
    return [(dict(group.resources), int(group.max_count)) for group in config.node_group_configs
            if group.max_count != 0]


def check_shared_storage(storage_path: str | None) -> None:
    """On a cluster of several nodes (alive now, or that its autoscaler may start), trials and their
    checkpoints must live where every node sees them; without ``--storage-path`` each node would keep its own,
    and a trial moved to another node could not resume. Refused before any trial starts."""
    import ray

    alive = sum(1 for node in ray.nodes() if node.get("Alive"))
    types = _node_types()
    more = any(count == -1 for _, count in types) or sum(count for _, count in types) > 1
    if (alive > 1 or more) and storage_path is None:
        nodes = f"the {alive} nodes" if alive > 1 else "the nodes its autoscaler may start"
        raise ConfigError("storage_path", None, f"a folder every one of {nodes} sees (NFS) or a bucket "
                                                "URI (s3://, gs://): a search on several nodes needs shared storage")


def quiet_ray_logs(verbose: int) -> None:
    """Below ``--verbose 2`` Ray Tune's own messages (per-trial tracebacks, hints) stay in the
    experiment folder; asp_tune reports failures itself."""
    import logging

    level = logging.INFO if verbose >= 2 else logging.CRITICAL
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(level)


def _local_ray() -> tuple[list[Any], tuple[str, int] | None]:
    """The raylet and GCS server of the local Ray this process started (their ``Popen``) and the GCS's address;
    none where it joined a cluster."""
    try:
        import ray

        node = ray._private.worker._global_node  # noqa: SLF001 - Ray keeps its session there
        processes = [info.process for kind in ("raylet", "gcs_server")
                     for info in (node.all_processes or {}).get(kind, [])]
        host, port = node.gcs_address.rsplit(":", 1)
        return processes, ((host, int(port)) if processes else None)
    except Exception:  # noqa: BLE001 - no session, a joined cluster, or Ray's internals moved: nothing to watch
        return [], None


def _refused(address: tuple[str, int]) -> bool:
    """Whether nothing listens at ``address`` any more (a busy server that is slow to answer is not that)."""
    import socket

    try:
        socket.create_connection(address, timeout=0.5).close()
        return False
    except ConnectionRefusedError:
        return True
    except OSError:
        return False


def _ended_too(processes: list[Any], gcs: tuple[str, int] | None, wait_s: float, poll_s: float = 0.05) -> bool:
    """Whether the signal this process got reached its local Ray too: within ``wait_s`` one of ``processes`` (its
    children) exits, or the GCS stops listening (twice in a row; it lingers a while after that, waiting on
    the raylet). Where it did not, a graceful stop begins ``wait_s`` later."""
    import time

    deadline, refusals = time.monotonic() + wait_s, 0
    while processes:
        if any(process.poll() is not None for process in processes):
            return True
        refusals = refusals + 1 if gcs is not None and _refused(gcs) else 0
        if refusals >= 2:
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(poll_s)
    return False


def fit_interruptibly(tuner, experiment_path: str):
    """``tuner.fit()`` where SIGINT/SIGTERM stop the experiment gracefully and then raise.

    Ray Tune's own SIGINT handler ends the run and returns results that look finished. Here both
    signals ask Tune to stop the same way (through its SIGUSR1 handler, which saves the
    experiment state), and :class:`~asp_tune.errors.RunInterrupted` is raised afterwards, so nothing is committed.
    A second signal interrupts at once. A signal to the whole process group (coreutils ``timeout``,
    ``kill -- -PGID``) stops it the same way: a local Ray's processes are in a group of their own
    (:func:`_in_a_process_group_of_their_own`), so it never reaches them. A SIGTERM sent to every process
    (a service manager's stop of its control group: systemd, SLURM's ``scancel``) ends Ray's raylet and GCS
    too, and Ray ends the driver (status 1, no message) at its next call to the raylet. Where the handler
    runs first (it holds the thread Tune calls Ray from) and sees them go within half a second, or a watcher
    sees it later while Tune stops, it says how to resume and exits 130 (:func:`_ended_too`); where Ray's
    exit comes first, status 1 it is. Ray's experiment resumes from its last saved state either way.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return tuner.fit()
    interrupted: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    rays, gcs = _local_ray()
    gcs = gcs if gcs is not None and not _refused(gcs) else None  # only a GCS seen listening is watched
    fitted = threading.Event()

    def exit_if_ray_ended(wait_s: float) -> None:
        if _ended_too(rays, gcs, wait_s) and not fitted.is_set():
            hint = RunInterrupted("interrupted by SIGTERM, which ended Ray's own processes too; no results were "
                                  "committed", experiment_path).resume_hint("--resume ")
            print(f"[asp-tune] error: {hint} (or search(resume=...))", file=sys.stderr, flush=True)
            os._exit(RunInterrupted.exit_code)

    def handler(sig: int, frame) -> None:
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(sig)
        if sig == signal.SIGTERM and rays:
            exit_if_ray_ended(0.5)  # holding the thread Tune calls Ray from, which then makes no call to the raylet
            # a machine slower than that: watched while Tune stops (a graceful stop's own shutdown never counts)
            threading.Thread(target=exit_if_ray_ended, args=(10.0,), daemon=True).start()
        os.kill(os.getpid(), signal.SIGUSR1)

    ray_handler = os.environ.get("TUNE_DISABLE_SIGINT_HANDLER")
    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for sig in previous:
        signal.signal(sig, handler)
    try:
        grid = tuner.fit()
    finally:
        fitted.set()
        for sig, old in previous.items():
            signal.signal(sig, old)
        if ray_handler is None:  # Ray's own Ctrl-C handling back for the rest of the process
            os.environ.pop("TUNE_DISABLE_SIGINT_HANDLER", None)
        else:
            os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = ray_handler
    if interrupted:
        raise RunInterrupted(f"interrupted by {signal.Signals(interrupted[0]).name}; no results were committed",
                             experiment_path)
    return grid
