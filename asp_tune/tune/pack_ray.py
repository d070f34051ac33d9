"""Packs in a Ray Tune search: every configuration stays one Ray trial, and the trials' training runs in pack
workers, Ray actors that each hold a :class:`~asp_tune.tune.pack_server.PackServer`.

- :class:`PackPool` (a named actor without resources) starts the workers with the resources of one trial each
  (``--cpus-per-trial``, ``--gpus-per-trial``; Ray places them on nodes and GPUs), hands each trial a worker,
  and starts a new worker in place of one that died.
- A trial (:func:`packed_trial`) reserves no CPU of its own: it joins its worker with its configuration and
  its checkpoint, asks for one epoch at a time, reports each epoch to Tune as :func:`proxy_trial` does, and
  checkpoints where the search can pause or stop it. So every scheduler and searcher decides per
  configuration, ``trials.csv`` has one row per configuration, and a trial restored by Ray (a paused trial, a
  killed driver, a lost node) continues from its own checkpoint.
- A worker trains the epochs asked for together once every trial it holds has asked, or ``GATHER_S`` after the
  first asked (a trial paused or stopped by its scheduler asks no more; :class:`PackMembership` tells the
  pool at once).

A worker lost with its node costs the trials it held: each fails and, with ``--max-failures``, Ray restarts it
from its last checkpoint on a new worker; the other workers' trials go on.
"""

from __future__ import annotations

import asyncio
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

#: CPU seconds to start one more Ray worker process for a trial (Python, Ray and Ray Tune imported, the
#: worker connected), measured on 2 cores of our CI machine.
PROCESS_START_CPU_S = 1.5
#: Seconds a worker waits, after the first trial asked for its next epoch, for the others it holds.
GATHER_S = 2.0


@dataclass
class PackPlan:
    """A search's packs: configurations per pack (``size``), how that was chosen (``reason``), and pack
    workers at once (``workers``), each with one trial's resources."""

    size: int
    reason: str
    workers: int
    cpus: float = 1.0
    gpus: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def trials_at_once(self) -> int:
        return self.size * self.workers

    def summary(self) -> dict[str, Any]:
        return {"size": self.size, "reason": self.reason, "workers": self.workers, "trials_at_once": self.trials_at_once}


@dataclass
class PackJob:
    """What a search needs to train its trials in packs: the plan and the arguments of every worker (the
    :class:`~asp_tune.tune.pack_server.PackServer`'s, the data set, threads, extensions, module folders)."""

    plan: PackPlan
    worker_args: dict[str, Any]


#: What a trial reserves: no CPU (its pack worker holds the trial's resources), a token of memory.
TRIAL_RESOURCES = {"cpu": 0, "memory": 2 ** 20}


def pool_name(experiment: str) -> str:
    """The pool actor of the experiment named ``experiment`` (the same name when the search is resumed)."""
    return f"asp-tune-packs-{experiment}"


class _Worker:
    """The pack worker actor: a :class:`PackServer` and the gathering of its trials' epoch requests."""

    def __init__(self, server: dict[str, Any], arrays: Any, threads: int, extensions: dict | None,
                 search_paths: list[str] | None, gather_s: float = GATHER_S):
        from asp_tune.imports import add_search_paths
        from asp_tune.registry import install_extensions
        from asp_tune.tune.pack_server import PackServer, set_threads

        add_search_paths(search_paths or ())
        install_extensions(extensions)
        set_threads(threads)
        self.server = PackServer(arrays=arrays, **server)
        self.gather_s = gather_s
        self.pending: dict[str, asyncio.Future] = {}
        self.active: set[str] = set()
        self.timer: asyncio.TimerHandle | None = None

    async def join(self, member: str, params: dict, overrides: dict | None, state: bytes | None) -> dict:
        import ray

        info = self.server.join(member, params, overrides, state)
        self.active.add(member)
        return {**info, "node_id": ray.get_runtime_context().get_node_id(),
                "assigned_gpus": ",".join(str(g) for g in ray.get_gpu_ids())}

    async def epoch(self, member: str) -> dict:
        """``member``'s next epoch: ``{"record", "done"}`` or ``{"error"}``."""
        future = asyncio.get_running_loop().create_future()
        self.pending[member] = future
        self.active.add(member)
        self._check()
        return await future

    async def state(self, member: str) -> bytes:
        return self.server.state(member)

    async def leave(self, members: list[str], finished: bool) -> None:
        """``members`` ask no more epochs (paused or stopped by the search); ``finished``: forget them."""
        for member in members:
            if member in self.pending:
                continue
            self.active.discard(member)
            if finished:
                self.server.leave(member)
        self._check()

    async def summary(self) -> dict:
        return self.server.summary()

    def _check(self) -> None:
        if not self.pending:
            return
        if self.active <= set(self.pending):
            self._run()
        elif self.timer is None:
            self.timer = asyncio.get_running_loop().call_later(self.gather_s, self._gathered)

    def _gathered(self) -> None:
        self.timer = None
        if self.pending:
            self.active = set(self.pending)  # the others ask no more for now
            self._run()

    def _run(self) -> None:
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        asked, self.pending = self.pending, {}
        try:
            results = self.server.train(list(asked))
        except Exception as exc:  # noqa: BLE001 - each trial raises it
            results = {m: exc for m in asked}
        for member, future in asked.items():
            out = results[member]
            if isinstance(out, BaseException):
                future.set_result({"error": f"{type(out).__name__}: {out}"})
                self.server.leave(member)
                self.active.discard(member)
            else:
                future.set_result({"record": out, "done": self.server.done(member)})


class _Pool:
    """The pool actor: starts the workers, gives each trial one, replaces a dead one."""

    def __init__(self, name: str, plan: PackPlan, worker_args: dict[str, Any]):
        self.name, self.plan, self.worker_args = name, plan, worker_args
        self.workers: list[Any] = [self._start(i) for i in range(plan.workers)]
        self.members: dict[str, int] = {}
        self.keys: dict[str, tuple] = {}

    def _start(self, index: int):
        import ray

        actor = ray.remote(_Worker).options(num_cpus=self.plan.cpus, num_gpus=self.plan.gpus, max_concurrency=1000)
        return actor.remote(**self.worker_args)

    def assign(self, member: str, params: dict[str, Any]) -> tuple[int, Any]:
        """The worker of ``member``: its own again, else the least loaded (of those, the one holding most of
        its kind: equal but for the per-member hyper-parameters, so they share packs)."""
        from asp_tune.pack import PER_MEMBER

        if member in self.members:
            index = self.members[member]
            return index, self.workers[index]
        key = tuple(sorted((k, repr(v)) for k, v in params.items() if k not in PER_MEMBER))
        load = [0] * len(self.workers)
        same = [0] * len(self.workers)
        for other, index in self.members.items():
            load[index] += 1
            same[index] += self.keys[other] == key
        index = min(range(len(self.workers)), key=lambda i: (load[i], -same[i], i))
        self.members[member], self.keys[member] = index, key
        return index, self.workers[index]

    def worker(self, index: int) -> Any:
        """Worker ``index``'s actor (to watch it, or to stop it as a lost node would)."""
        return self.workers[index]

    def replace(self, index: int, dead: Any) -> None:
        """Put a worker in place of ``dead`` (once, however many of its trials report it): a new one where the
        cluster has its resources free, else the least loaded survivor (a lost node's share of the cluster is
        gone: a new worker would wait for it forever)."""
        import ray

        if self.workers[index] != dead:
            return
        free = ray.available_resources()
        if free.get("CPU", 0.0) >= self.plan.cpus and free.get("GPU", 0.0) >= self.plan.gpus:
            self.workers[index] = self._start(index)
            return
        alive = [i for i, w in enumerate(self.workers) if w != dead]
        if not alive:
            self.workers[index] = self._start(index)  # nothing survived: wait for the cluster's resources
            return
        load = {i: sum(1 for m in self.members.values() if self.workers[m] == self.workers[i]) for i in alive}
        self.workers[index] = self.workers[min(alive, key=lambda i: (load[i], i))]

    def leave(self, members: list[str], finished: bool) -> None:
        by_worker: dict[int, list[str]] = {}
        for member in members:
            if member in self.members:
                by_worker.setdefault(self.members[member], []).append(member)
        for index, names in by_worker.items():
            self.workers[index].leave.remote(names, finished)
        if finished:
            for member in members:
                self.members.pop(member, None)
                self.keys.pop(member, None)

    def summary(self) -> dict[str, Any]:
        import ray

        totals = {"fused_epochs": 0, "alone_epochs": 0, "notes": []}
        for worker in dict.fromkeys(self.workers):  # once each: a survivor may stand in for a lost one
            try:
                part = ray.get(worker.summary.remote(), timeout=30)
            except ray.exceptions.RayError:  # lost with its node: its counts went with it
                totals["notes"].append("a pack worker was lost; its counts are not included")
                continue
            totals["fused_epochs"] += part["fused_epochs"]
            totals["alone_epochs"] += part["alone_epochs"]
            totals["notes"] += [n for n in part["notes"] if n not in totals["notes"]]
        return totals


def start_pool(name: str, plan: PackPlan, worker_args: dict[str, Any]):
    """The pool actor of one search (its workers start with it)."""
    import ray

    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    args = {**worker_args, "arrays": ray.put(worker_args.get("arrays"))}
    heads = [n["NodeID"] for n in ray.nodes() if n.get("Alive") and "node:__internal_head__" in n.get("Resources", {})]
    # on the head node: it lives as long as the cluster does (a soft preference was not kept on a head without CPUs)
    on_head = NodeAffinitySchedulingStrategy(heads[0], soft=False) if heads else "DEFAULT"
    return ray.remote(_Pool).options(name=name, num_cpus=0, scheduling_strategy=on_head).remote(name, plan, args)


def stop_pool(pool) -> dict[str, Any]:
    """What the pool's workers trained how; then the pool and its workers are gone."""
    import ray

    try:
        return ray.get(pool.summary.remote(), timeout=60)
    except Exception as exc:  # noqa: BLE001 - a summary is not worth failing a finished search
        return {"notes": [f"the pack workers' summary could not be read ({type(exc).__name__})"]}
    finally:
        ray.kill(pool)


def packed_trial(config: dict[str, Any], *, checkpoint_epochs: tuple[int, ...] | None = None,
                 checkpoint_every_s: float = 0.0, changes: str | None = None, run_ratio: float = 1.0,
                 per_cell: bool = False) -> None:
    """A trial of a packed search: its epochs trained by its pack worker, reported as
    :func:`~asp_tune.tune.trainable.proxy_trial` reports them (same columns, same checkpoints). ``per_cell``: the
    trial's ratio and strategy are its ``cell``'s (``asp-tune correlate``)."""
    import ray
    from ray import tune

    from asp_tune.errors import RunFailed
    from asp_tune.tune.fulldata import started_ratio
    from asp_tune.tune.reports import CHECKPOINT_FILE, START_FILE, checkpoint_due, trial_metrics

    started, started_at = time.perf_counter(), time.time()
    overrides: dict[str, Any] = {}
    if per_cell:
        from asp_tune.tune.cells import cell_of

        run_ratio, overrides["metric"] = cell_of(config)
    member = tune.get_context().get_trial_id()
    checkpoint = tune.get_checkpoint()
    state, ratio = None, started_ratio(changes, run_ratio)
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = Path(folder, CHECKPOINT_FILE).read_bytes()
            saved = Path(folder, START_FILE)
            ratio = float(json.loads(saved.read_text())["ratio"]) if saved.is_file() else run_ratio
    params = dict(config)
    the_pool = ray.get_actor(pool_name(_experiment_name()))
    index, worker = ray.get(the_pool.assign.remote(member, params))
    try:
        info = ray.get(worker.join.remote(member, params, {**overrides, "ratio": ratio}, state))
        info.pop("startup_seconds")
        startup = time.perf_counter() - started - (info["proxy_seconds"] if info.get("proxy_computed") else 0.0)
        where = {"trial_started_at": started_at, "start_ratio": ratio, "pack_worker": index, **info}  # the worker's node
        saved_at = time.perf_counter()
        while True:
            out = ray.get(worker.epoch.remote(member))
            if "error" in out:
                raise RunFailed(out["error"])  # as the trainer raised it in the pack worker
            record = out["record"]
            metrics = {**trial_metrics(record), "startup_seconds": startup, "reported_at": time.time(), **where}
            if not checkpoint_due(record["epoch"], out["done"], checkpoint_epochs, time.perf_counter() - saved_at,
                                  checkpoint_every_s):
                tune.report(metrics)
            else:
                blob = ray.get(worker.state.remote(member))
                with tempfile.TemporaryDirectory() as folder:
                    Path(folder, CHECKPOINT_FILE).write_bytes(blob)
                    Path(folder, START_FILE).write_text(json.dumps({"ratio": ratio}))
                    tune.report(metrics, checkpoint=tune.Checkpoint.from_directory(folder))
                saved_at = time.perf_counter()
            if out["done"]:
                break
    except ray.exceptions.RayActorError:
        the_pool.replace.remote(index, worker)  # lost with its node: the next try of this trial gets a new one
        raise
    the_pool.leave.remote([member], True)


def _experiment_name() -> str:
    from ray import tune

    context = tune.get_context()
    try:
        return context.get_experiment_name()
    except (AttributeError, NotImplementedError):
        return Path(context.get_trial_dir()).parent.name


class PackMembership(Callback):
    """Tells the pool which trials stopped asking for epochs: trials the scheduler paused, stopped or
    finished, and failed ones (a worker then trains the others without waiting for them)."""

    def __init__(self, experiment: str):
        self.pool, self.handle, self.running = pool_name(experiment), None, set()

    def __getstate__(self) -> dict[str, Any]:  # kept in Tune's state: a resumed search finds its new pool
        return {"pool": self.pool, "handle": None, "running": set()}

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        running = {t.trial_id for t in trials if t.status == "RUNNING"}
        stopped = self.running - running
        self.running = running
        if not stopped:
            return
        import ray

        try:
            if self.handle is None:
                self.handle = ray.get_actor(self.pool)
        except ValueError:  # no pool (a search resumed without packs): nothing to tell
            return
        status = {t.trial_id: t.status for t in trials}
        finished = [t for t in stopped if status.get(t) in ("TERMINATED", "ERROR")]
        idle = [t for t in stopped if t not in finished]
        if finished:
            self.handle.leave.remote(finished, True)
        if idle:
            self.handle.leave.remote(idle, False)
