"""Shared fixtures: the shared data folder is found once, here (env ASP_TUNE_SHARED_DATA)."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
# Caches (decoded data, static proxies' scoring models) stay out of the user's home, also in the Ray
# workers a test session starts (they inherit the environment of the process that starts Ray).
SESSION_CACHE = tempfile.mkdtemp(prefix="asp-tune-test-cache-")
os.environ["ASP_TUNE_CACHE"] = SESSION_CACHE

#: Where the stack could write in a home folder (Ray's experiments and token, caches, plot settings).
HOME_WATCHED = ("ray_results", ".ray", ".cache/asp_tune", ".config/asp_tune", ".cache/matplotlib", ".config/matplotlib", ".cache/torch",
                "mlruns", ".optuna")


def home_snapshot(home: Path) -> dict[str, object]:
    """The top-level names of ``home`` and every file under the watched folders, with its mtime."""
    snapshot: dict[str, object] = {"names": sorted(p.name for p in home.iterdir()) if home.is_dir() else []}
    for name in HOME_WATCHED:
        root = home / name
        files = sorted(root.rglob("*")) if root.is_dir() else ([root] if root.exists() else [])
        snapshot[name] = [(str(f.relative_to(home)), f.stat().st_mtime_ns) for f in files if f.exists()]
    return snapshot


# Everything the suite and the processes it starts (Ray, CLI runs) write under "~" goes to a temporary home:
# tests/test_zz_home.py checks at the end that the real one is unchanged.
REAL_HOME = Path.home()
HOME_BEFORE = home_snapshot(REAL_HOME)
SESSION_HOME = tempfile.mkdtemp(prefix="asp-tune-test-home-")
os.environ["HOME"] = SESSION_HOME


def pytest_sessionfinish(session, exitstatus):
    """The temporary home and cache this session made (and only those) go when it ends."""
    import shutil

    try:
        import ray

        ray.shutdown()  # its processes write to the temporary home while they run
    except ImportError:
        pass
    for folder in (SESSION_HOME, SESSION_CACHE):
        shutil.rmtree(folder, ignore_errors=True)


def shared_data_dir() -> Path:
    return Path(os.environ.get("ASP_TUNE_SHARED_DATA", REPO.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"shared data not found at {path} (set ASP_TUNE_SHARED_DATA)")
    return path


@pytest.fixture(autouse=True)
def _isolated_cache(tmp_path_factory, monkeypatch):
    """Keep decoded-data caches out of the user's home folder."""
    monkeypatch.setenv("ASP_TUNE_CACHE", str(tmp_path_factory.getbasetemp() / "cache"))


@pytest.fixture(autouse=True)
def _torch_threads():
    """A test that runs a trial in this process (which sets torch's threads as a Ray worker's) leaves the threads
    as they were: a later test's kernels, and so its rounding, would change (a pack's ResNet-8 drifted 5e-4 from
    its run alone on one thread, 2e-7 on two)."""
    import torch

    threads = torch.get_num_threads()
    yield
    torch.set_num_threads(threads)


def _interrupted_and_straight(make_trainer, checkpoint: Path, before: int = 3, after: int = 3):
    """Train ``before`` epochs, checkpoint, train ``after`` more (straight); then a fresh trainer loads the
    checkpoint and trains the same ``after`` epochs (resumed). Returns (straight, resumed, their records)."""
    straight = make_trainer()
    for _ in range(before):
        straight.train_epoch()
    straight.save_checkpoint(checkpoint)
    rest = [straight.train_epoch() for _ in range(after)]
    resumed = make_trainer()
    resumed.load_checkpoint(checkpoint)
    assert resumed.epoch == before
    again = [resumed.train_epoch() for _ in range(after)]
    return straight, resumed, rest, again


@pytest.fixture()
def cpu_autocast(monkeypatch):
    """Runs and packs with ``amp`` under CPU bf16 autocast, as they run under CUDA's on a GPU."""
    import torch

    def autocast(device, enabled=True):
        return torch.autocast(device.type, dtype=torch.bfloat16) if enabled else contextlib.nullcontext()

    for module in ("asp_tune.pack", "asp_tune.trainer"):
        monkeypatch.setattr(f"{module}.autocast", autocast)


@pytest.fixture()
def interrupted_run():
    """The checkpoint-and-resume comparison shared by the CPU and CUDA trainer tests."""
    return _interrupted_and_straight


def ray_with(num_cpus: int) -> None:
    """A local Ray session of ``num_cpus`` CPUs in this process, left running for the modules after this one
    (one start and stop costs about 7 s on 2 cores); a session of another size is ended first. Ray started by a
    command run here (``command_here``) is joined as it is; :func:`pytest_sessionfinish` ends the last one."""
    import ray

    from asp_tune.tune.session import ensure_ray

    if ray.is_initialized() and ray.cluster_resources().get("CPU") != num_cpus:
        ray.shutdown()
    ensure_ray(num_cpus=num_cpus)


@pytest.fixture(scope="module")
def ray_session():
    """A module's tests share a local 2-CPU Ray session (with every later module that asks for one)."""
    ray_with(2)


@pytest.fixture()
def command_here(capsys):
    """``command_here(*args)``: ``asp-tune ARGS`` run in this process, not in one of its own (no Python, torch
    and Ray start per run; a Ray session this process has is joined). Returns its exit code, stdout and stderr,
    the warnings it raised (which the command prints) appended to stderr."""
    import warnings
    from types import SimpleNamespace

    from asp_tune.cli import main

    def run(*args: object) -> SimpleNamespace:
        with warnings.catch_warnings(record=True) as warned:
            warnings.simplefilter("always")
            code = main([str(a) for a in args])
        said = capsys.readouterr()
        return SimpleNamespace(returncode=code, stdout=said.out,
                               stderr=said.err + "".join(f"{w.message}\n" for w in warned))

    return run


@contextlib.contextmanager
def _clusters():
    """``start(head_args, workers=N)``: a Ray cluster of a head and N one-CPU worker nodes on this machine
    (this process's Ray session is ended first); every one started is shut down at the end."""
    import ray
    from ray.cluster_utils import Cluster

    started = []

    def start(head: dict, workers: int = 0):
        ray.shutdown()
        # a node removed outright is found dead in about 1.5 s, not 15 (Ray checks a node every 3 s, 5 times)
        checks = {"health_check_period_ms": 500, "health_check_failure_threshold": 3}
        cluster = Cluster(initialize_head=True, head_node_args={"_system_config": checks, **head})
        for _ in range(workers):
            cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        started.append(cluster)
        return cluster

    try:
        yield start
    finally:
        ray.shutdown()
        for cluster in started:
            cluster.shutdown()


@pytest.fixture()
def local_cluster():
    """Starts a Ray cluster of several nodes on this machine for one test (see :func:`_clusters`)."""
    with _clusters() as start:
        yield start


@pytest.fixture(scope="module")
def module_cluster():
    """:func:`local_cluster` for clusters a module's tests share (none of which removes a node)."""
    with _clusters() as start:
        yield start


def pytest_collection_modifyitems(config, items):
    """A test that starts Ray (the ``ray_session`` fixture) is slow; one that does not is not."""
    for item in items:
        if "ray_session" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.slow)
