"""Several seeds of one search as parallel Ray tasks, each with its own CPU/GPU share."""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Callable

from nas.search import NasResult, run_search
from nas.settings import NasSettings, SeedsSettings


def _search_task(settings: NasSettings, checkpoint: str | None, threads: int) -> NasResult:
    import torch

    torch.set_num_threads(max(1, threads))
    return run_search(settings, checkpoint)


def seed_failure(error: BaseException, seed: int) -> BaseException:
    """What a search's failure inside its Ray task is raised as: a named error of asp_tune (a
    :class:`~asp_tune.errors.ConfigError`, a trainer's) as itself, its message prefixed by the seed,
    instead of Ray's wrapper with the task's coloured traceback; any other error as Ray gave it."""
    from ray.exceptions import RayTaskError

    from asp_tune.errors import AspTuneError

    cause = error.cause if isinstance(error, RayTaskError) else error
    if not isinstance(cause, AspTuneError):
        return error
    cause.args = (f"seed {seed}: {cause}", *cause.args[1:])
    return cause


def run_seeds(settings: NasSettings, seeds: list[int], checkpoints: dict[int, Path] | None,
              cpus_per_search: float = SeedsSettings.cpus_per_search,
              gpus_per_search: float = SeedsSettings.gpus_per_search, address: str | None = SeedsSettings.address,
              on_done: Callable[[NasResult], None] | None = None,
              max_failures: int | None = SeedsSettings.max_failures) -> list[NasResult]:
    """Run ``settings`` once per seed on Ray (local or ``address``); results in seed order.

    ``checkpoints`` maps each seed to its checkpoint file. A search whose worker or node is lost is
    retried ``max_failures`` times (default: 3 on a cluster, 0 locally) and continues from its
    checkpoint; on a multi-node cluster the checkpoints and the data must be on storage every node sees.
    A search that fails cancels the others and raises its error (:func:`seed_failure`).
    """
    import ray
    from ray.exceptions import RayTaskError

    from asp_tune.tune.session import check_resources, ensure_ray

    ensure_ray(address)
    check_resources(cpus_per_search, gpus_per_search, field="per_search")  # else it would wait forever
    retries = SeedsSettings(address=address, max_failures=max_failures).failures_allowed()
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
            try:
                results[seed] = ray.get(done[0])
            except RayTaskError as error:
                for other in pending:
                    ray.cancel(other, force=True)
                raise seed_failure(error, seed) from None
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
