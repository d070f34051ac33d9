"""Packs in a Ray Tune search: every configuration stays one Ray trial, and the trials' training runs in pack
workers, Ray actors that each hold a :class:`~asp_tune.tune.pack_server.PackServer`.

- The pool (a named actor without resources, on the head node) starts the workers with the resources of one trial each
  (``--cpus-per-trial``, ``--gpus-per-trial``; Ray places them on nodes and GPUs), hands each trial a worker,
  and starts a new worker in place of one that died.
- A trial (:func:`packed_trial`) reserves no CPU of its own and lives on the head node: it joins its worker
  with its configuration and its checkpoint, asks for one epoch at a time, reports each epoch to Tune as
  :func:`proxy_trial` does, and checkpoints where the search can pause or stop it. So every scheduler and searcher decides per
  configuration, ``trials.csv`` has one row per configuration, and a trial restored by Ray (a paused trial, a
  killed driver, a lost node) continues from its own checkpoint.
- A worker trains the epochs asked for together once every trial it holds has asked, or ``GATHER_S`` after the
  first asked (a trial paused or stopped by its scheduler asks no more; :class:`PackMembership` tells the
  pool at once). A worker holds the trainers of at most one pack's worth of trials; a paused trial's goes
  (it joins again from its checkpoint).

A worker lost with its node costs the trials it held: each fails and, with ``--max-failures``, Ray restarts it
from its last checkpoint on a new worker (or a surviving one, when the cluster has no resources free for a new
one); the other workers' trials go on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ray.tune import Callback

#: Seconds a trial waits for a free slot in its worker; then it joins beside the others (a worker may hold
#: trainers of trials that left without a word: their memory is the price, a search that never ends is not).
SLOT_WAIT_S = 30.0
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
    cpus: float
    gpus: float
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


def pack_job(choice: Any, space: Any, run: dict[str, Any], validate_epochs: tuple[int, ...] | None,
             arrays: dict[str, Any] | None, workers: int, cpus: float, gpus: float, extensions: dict | None,
             search_paths: list[str]) -> PackJob | None:
    """The packs of a search of ``space`` under ``run`` (None when ``choice``, a
    :class:`~asp_tune.pack.PackChoice`, is one trial per process): ``workers`` pack workers of ``cpus`` and
    ``gpus`` each, every one with the data set, the extensions and the module folders the trials need."""
    if choice.size == 1:
        return None
    server = {"space": space, "run": run, "pack_size": choice.size, "validate_epochs": validate_epochs}
    return PackJob(PackPlan(choice.size, choice.reason, workers, cpus, gpus),
                   {"server": server, "arrays": arrays, "threads": max(1, int(cpus)), "extensions": extensions,
                    "search_paths": search_paths})


#: What a trial reserves: no CPU (its pack worker holds the trial's resources), a token of memory, and a
#: ten-thousandth of the head node's own resource: a trial's actor lives on the head, as its pool does, so a lost
#: worker node costs only the trials of the pack workers it held (placed anywhere, the actors of a surviving
#: worker's trials were lost with the node that happened to hold them). 10,000 trials at once at most.
TRIAL_RESOURCES = {"cpu": 0, "memory": 2 ** 20, "node:__internal_head__": 1e-4}


def pool_name(experiment: str) -> str:
    """The pool actor of the experiment named ``experiment`` (the same name when the search is resumed)."""
    return f"asp-tune-packs-{experiment}"


class _Worker:
    """The pack worker actor: a :class:`PackServer`, the gathering of its trials' epoch requests, and its slots:
    at most one pack's worth of trials hold a trainer at once (a trial joining beyond that waits for one to
    leave; a trial paused by its scheduler leaves and joins again from its checkpoint)."""

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
        self.leaving: dict[str, tuple[str | None, bool]] = {}  # asked to leave while an epoch was under way
        self.timer: asyncio.TimerHandle | None = None
        self.slots: asyncio.Condition | None = None
        self.waits = {"gather_timeouts": 0, "slot_timeouts": 0}  # how often a trial waited out a timeout

    async def join(self, member: str, params: dict, overrides: dict | None, state: bytes | None,
                   token: str | None = None) -> dict:
        """Build ``member``'s trainer once a slot is free; what its trial reports beside every epoch."""
        import ray

        self.slots = self.slots or asyncio.Condition()
        try:
            async with self.slots:
                await asyncio.wait_for(self.slots.wait_for(lambda: member in self.server.trainers
                                                           or len(self.server.trainers) < self.server.pack_size),
                                       SLOT_WAIT_S)
        except asyncio.TimeoutError:  # trainers of trials that will not ask again: join beside them
            self.waits["slot_timeouts"] += 1
        info = self.server.join(member, params, overrides, state, token)
        self.active.add(member)
        if not ray.is_initialized():  # a worker outside Ray (its tests)
            return {**info, "node_id": "", "assigned_gpus": ""}
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
        """``member``'s checkpoint, as bytes."""
        return self.server.state(member)

    async def leave(self, members: list[list], finished: bool) -> None:
        """``members`` (``[name, token]`` pairs: the start of the trial the message is about) ask no more epochs:
        paused, stopped or finished by the search. Their trainers go (a paused trial joins again from its
        checkpoint); a message about an earlier start of a trial that joined again since changes nothing."""
        for member, token in members:
            if member in self.pending:
                self.leaving[member] = (token, finished)
            else:
                self._forget(member, token, finished)
        self._check()
        await self._free_slots()

    async def summary(self) -> dict:
        """What this worker trained in packs and alone, and how often its trials waited out a timeout."""
        return {**self.server.summary(), **self.waits}

    def _forget(self, member: str, token: str | None, finished: bool) -> None:
        # a trial that never reported has no token to name: only its final status may forget it then
        if self.server.leave(member, token, any_start=finished and token is None):
            self.active.discard(member)
        elif member not in self.server.trainers:
            self.active.discard(member)

    async def _free_slots(self) -> None:
        if self.slots is not None:
            async with self.slots:
                self.slots.notify_all()

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
            self.waits["gather_timeouts"] += 1
            self.active = set(self.pending)  # the others ask no more for now
            self._run()

    def _run(self) -> None:
        """Train one epoch of every trial that asked, and answer each (never leaving one waiting)."""
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        asked, self.pending = self.pending, {}
        try:
            results = self.server.train(list(asked))
        except Exception as exc:  # noqa: BLE001 - each trial raises it
            results = {m: exc for m in asked}
        for member, future in asked.items():
            out = results.get(member, RuntimeError("no result"))
            try:
                answer = (error_answer(out) if isinstance(out, BaseException)
                          else {"record": out, "done": self.server.done(member)})
            except Exception as exc:  # noqa: BLE001
                answer = error_answer(exc)
            if "error" in answer:
                self.server.leave(member)
                self.active.discard(member)
            if not future.done():
                future.set_result(answer)
        for member in [m for m in self.leaving if m in asked]:
            self._forget(member, *self.leaving.pop(member))
        asyncio.ensure_future(self._free_slots())


def error_answer(error: BaseException) -> dict[str, Any]:
    """A worker's answer for a trial whose training raised ``error``: ``Type: message``, and where its class lives
    (its trial raises one like it again: ``trials.csv`` then reads as for a trial alone)."""
    kind = type(error)
    return {"error": f"{kind.__name__}: {error}", "type": f"{kind.__module__}:{kind.__qualname__}",
            "message": str(error)}


def member_error(answer: dict[str, Any]) -> BaseException:
    """The error a trial raises for a worker's ``answer`` (:func:`error_answer`): one of the same class with the same
    message where the class is Python's or asp_tune's own (nothing is unpickled, nothing else imported), else a
    :class:`~asp_tune.errors.RunFailed` that names it."""
    import importlib

    from asp_tune.errors import RunFailed

    module, _, name = str(answer.get("type") or "").partition(":")
    if module == "builtins" or module == "asp_tune" or module.startswith("asp_tune."):
        with contextlib.suppress(Exception):
            kind = getattr(importlib.import_module(module), name)
            if isinstance(kind, type) and issubclass(kind, BaseException):
                error = kind.__new__(kind)
                BaseException.__init__(error, answer["message"])
                if str(error) == answer["message"]:  # a class whose own __str__ needs more than its message: named
                    return error
    return RunFailed(answer["error"])


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

    def assign(self, member: str, params: dict[str, Any], overrides: dict[str, Any]) -> tuple[int, Any]:
        """The worker of ``member``: its own again; else, of the workers with room for one more pack member,
        the one holding most of its kind (:func:`~asp_tune.pack.pack_key`: they can share packs); else the
        least loaded."""
        from asp_tune.pack import pack_key
        from asp_tune.tune.pack_server import trial_config

        if member in self.members:
            index = self.members[member]
            return index, self.workers[index]
        server = self.worker_args["server"]
        key = pack_key(trial_config(server["space"], server["run"], params, overrides))
        load = [0] * len(self.workers)
        same = [0] * len(self.workers)
        for other, index in self.members.items():
            load[index] += 1
            same[index] += self.keys[other] == key
        room = [i for i in range(len(self.workers)) if load[i] < self.plan.size]
        index = (max(room, key=lambda i: (same[i], -load[i], -i)) if room
                 else min(range(len(self.workers)), key=lambda i: (load[i], i)))
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
        alive = [i for i, w in enumerate(self.workers) if w != dead and _answers(w)]
        if not alive:
            self.workers[index] = self._start(index)  # nothing survived: wait for the cluster's resources
            return
        load = {i: sum(1 for m in self.members.values() if self.workers[m] == self.workers[i]) for i in alive}
        self.workers[index] = self.workers[min(alive, key=lambda i: (load[i], i))]

    def leave(self, members: list[list], finished: bool) -> None:
        """``members`` (``[name, token]`` pairs) ask no more epochs; ``finished``: their trials ended."""
        by_worker: dict[int, list[list]] = {}
        for member, token in members:
            if member in self.members:
                by_worker.setdefault(self.members[member], []).append([member, token])
        for index, entries in by_worker.items():
            self.workers[index].leave.remote(entries, finished)
        if finished:
            for member, _ in members:
                self.members.pop(member, None)
                self.keys.pop(member, None)

    def summary(self) -> dict[str, Any]:
        import ray

        totals = {"fused_epochs": 0, "alone_epochs": 0, "gather_timeouts": 0, "slot_timeouts": 0, "notes": []}
        for worker in dict.fromkeys(self.workers):  # once each: a survivor may stand in for a lost one
            try:
                part = ray.get(worker.summary.remote(), timeout=30)
            except ray.exceptions.RayError:  # lost with its node: its counts went with it
                totals["notes"].append("a pack worker was lost; its counts are not included")
                continue
            for key in ("fused_epochs", "alone_epochs", "gather_timeouts", "slot_timeouts"):
                totals[key] += part[key]
            totals["notes"] += [n for n in part["notes"] if n not in totals["notes"]]
        return totals


def _answers(worker: Any, timeout_s: float = 5.0) -> bool:
    """Whether ``worker`` is alive (a node lost with several workers takes them all)."""
    import ray

    try:
        ray.get(worker.__ray_ready__.remote(), timeout=timeout_s)
        return True
    except Exception:  # noqa: BLE001 - dead, unreachable or too slow: not a place for a lost worker's trials
        return False


def workers_that_fit(plan: PackPlan) -> int:
    """How many pack workers of ``plan``'s resources the cluster's alive nodes can hold at once."""
    import ray

    fit = 0
    for node in (n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")):
        counts = [int(node.get(kind, 0.0) // each + 1e-9) for kind, each in (("CPU", plan.cpus), ("GPU", plan.gpus))
                  if each > 0]
        fit += min(counts) if counts else plan.workers
    return fit


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

    from asp_tune.tune.fulldata import started_ratio
    from asp_tune.tune.reports import CHECKPOINT_FILE, START_FILE, checkpoint_due, trial_metrics

    started, started_at = time.perf_counter(), time.time()
    overrides: dict[str, Any] = {}
    if per_cell:
        from asp_tune.tune.cells import cell_fields

        overrides = cell_fields(config)
        run_ratio = overrides.pop("ratio")
    member, token = tune.get_context().get_trial_id(), uuid.uuid4().hex[:12]
    checkpoint = tune.get_checkpoint()
    state, ratio = None, started_ratio(changes, run_ratio)
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = Path(folder, CHECKPOINT_FILE).read_bytes()
            saved = Path(folder, START_FILE)
            ratio = float(json.loads(saved.read_text())["ratio"]) if saved.is_file() else run_ratio
    params = dict(config)
    the_pool = ray.get_actor(pool_name(_experiment_name()))
    index, worker = ray.get(the_pool.assign.remote(member, params, {**overrides, "ratio": ratio}))
    try:
        info = ray.get(worker.join.remote(member, params, {**overrides, "ratio": ratio}, state, token))
        info.pop("startup_seconds")
        startup = time.perf_counter() - started - (info["proxy_seconds"] if info.get("proxy_computed") else 0.0)
        if info.pop("done"):  # restored from its last checkpoint: nothing left to train
            the_pool.leave.remote([[member, token]], True)
            return
        where = {"trial_started_at": started_at, "start_ratio": ratio, "pack_worker": index, "pack_token": token,
                 **info}  # node_id, assigned_gpus: the worker's
        saved_at = time.perf_counter()
        while True:
            out = ray.get(worker.epoch.remote(member))
            if "error" in out:
                raise member_error(out)
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
    the_pool.leave.remote([[member, token]], True)


def _experiment_name() -> str:
    from ray import tune

    context = tune.get_context()
    try:
        return context.get_experiment_name()
    except (AttributeError, NotImplementedError):
        return Path(context.get_trial_dir()).parent.name


class PackMembership(Callback):
    """Tells the pool which trials stopped asking for epochs: trials the scheduler paused (they join again
    when resumed), and trials that ended, finished, stopped (a paused one too) or failed for good (a worker
    then trains the others without waiting for them, and the pool forgets them)."""

    absent = False  # looked for the pool in this run of the driver and found none: a search without packs

    def __init__(self, experiment: str):
        self.pool, self.handle, self.running = pool_name(experiment), None, set()

    def __getstate__(self) -> dict[str, Any]:  # kept in Tune's state: a resumed search looks for its new pool
        return {"pool": self.pool, "handle": None, "running": set(), "absent": False}

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        running = {t.trial_id for t in trials if t.status == "RUNNING"}
        stopped = self.running - running
        self.running = running
        idle = [[t.trial_id, _token(t)] for t in trials
                if t.trial_id in stopped and t.status not in ("TERMINATED", "ERROR")]
        if idle and self._pool() is not None:
            self.handle.leave.remote(idle, False)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def _ended(self, trial: Any) -> None:
        self.running.discard(trial.trial_id)
        if self._pool() is not None:
            self.handle.leave.remote([[trial.trial_id, _token(trial)]], True)

    def _pool(self) -> Any:
        """The pool's actor handle; None without one (looked up once per run of the driver: the pool starts
        before the search does) or when it cannot be reached now (looked up again next time)."""
        if self.handle is None and not self.absent:
            import ray

            try:
                self.handle = ray.get_actor(self.pool)
            except ValueError:  # no actor of that name: a search without packs
                self.absent = True
            except Exception:  # noqa: BLE001 - Ray's control plane busy or away: never fail the search for it
                return None
        return self.handle


def _token(trial: Any) -> str | None:
    """The start token ``trial`` last reported (None before its first report)."""
    return (trial.last_result or {}).get("pack_token")
