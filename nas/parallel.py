"""Several seeds of one search as parallel Ray tasks, each with its own CPU/GPU share."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from nas.search import NasResult, run_search
from nas.settings import NasSettings


def _search_task(settings: NasSettings, checkpoint: str | None, threads: int) -> NasResult:
    import torch

    torch.set_num_threads(max(1, threads))
    return run_search(settings, checkpoint)


def run_seeds(settings: NasSettings, seeds: list[int], checkpoints: dict[int, Path] | None,
              cpus_per_search: float = 1.0,
              gpus_per_search: float = 0.0, address: str | None = None,
              on_done: Callable[[NasResult], None] | None = None, max_failures: int | None = None) -> list[NasResult]:
    """Run ``settings`` once per seed on Ray (local or ``address``); results in seed order.

    ``checkpoints`` maps each seed to its checkpoint file. A search whose worker or node is lost is
    retried ``max_failures`` times (default: 3 on a cluster, 0 locally) and continues from its
    checkpoint; on a multi-node cluster the checkpoints and the data must be on storage every node sees.
    """
    import ray

    from asp_tune.tune.session import check_resources, ensure_ray

    ensure_ray(address)
    check_resources(cpus_per_search, gpus_per_search, field="per_search")  # else it would wait forever
    retries = max_failures if max_failures is not None else (3 if address else 0)
    task = ray.remote(_search_task).options(num_cpus=cpus_per_search, num_gpus=gpus_per_search, max_retries=retries)
    threads = max(1, int(cpus_per_search))
    pending = {}
    for seed in seeds:
        ckpt = str(checkpoints[seed]) if checkpoints else None
        pending[task.remote(settings.with_seed(seed), ckpt, threads)] = seed
    results: dict[int, NasResult] = {}
    with interruptible():
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.5)  # wakes for SIGINT/SIGTERM
            if not done:
                continue
            seed = pending.pop(done[0])
            results[seed] = ray.get(done[0])
            if on_done is not None:
                on_done(results[seed])
    return [results[s] for s in seeds]


@contextlib.contextmanager
def interruptible():
    """SIGINT and SIGTERM raise KeyboardInterrupt here (the command then exits 130, committing
    nothing), whatever handler Ray installed when it started."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def interrupt(signum, frame):
        raise KeyboardInterrupt

    before = {sig: signal.signal(sig, interrupt) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for sig, handler in before.items():
            signal.signal(sig, handler)
