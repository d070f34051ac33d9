"""Running one HPO experiment on Ray Tune with proxy-data trials and a rescaled budget."""

from __future__ import annotations

import json
import math
import os
import sys
import time
import uuid
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from asp_tune.config import DEVICES, SELECTION_FIELDS, TrainConfig
from asp_tune.errors import ConfigError, RunFailed, RunInterrupted
from asp_tune.flags import option
from asp_tune.imports import is_import_path, search_paths, user_modules
from asp_tune.registry import extensions
from asp_tune.run_dir import jsonable
from asp_tune.proxy_settings import (EARLY_STOPPING_PROXY, RATIO_SCHEDULES, auto_strategy, check_strategy, metric_choices,
                                     ratio_steps, steps_schedule)
from asp_tune.tune.storage import join, make_dirs, ray_filesystem, read_text, storage_root, write_text
from asp_tune.tune.space import SearchSpace

ALGORITHMS = ("hyperband", "bohb", "asha", "hypertune", "tpe", "random")
#: Algorithms that stop or pause trials at rungs (and so measure their proxy's rank agreement).
MULTI_FIDELITY = ("asha", "hyperband", "bohb", "hypertune")
TRACKERS = ("none", "mlflow", "tensorboard", "wandb")
#: The package each tracker needs.
TRACKER_PACKAGES = {"mlflow": "mlflow", "tensorboard": "tensorboardX", "wandb": "wandb"}
SEARCH, RAY = "search", "Ray"
#: Trials reuse a worker process whose resources match (the trainer is rebuilt from config and
#: checkpoint each time, so a reused worker behaves exactly like a fresh one).
REUSE_ACTORS = True
EARLY_STOPPING = ("none", "asha")
#: Checkpoints a trial keeps (its latest ones); Ray saves the experiment's state at the latest when a
#: trial has made this many since the last save, so the one a saved state names is on disk.
KEEP_CHECKPOINTS = 5
METRIC = "val_accuracy"


@dataclass
class HpoSettings:
    """One experiment. Budgets are given as for full data and rescaled by ``ratio``.

    Each field's default, help and allowed values live here; the ``hpo``, ``compare``,
    ``correlate`` and ``demo`` flags are generated from these fields (:mod:`asp_tune.flags`).
    """

    space: SearchSpace = option(flag=False)
    algo: str = option("asha", "search algorithm", SEARCH, ALGORITHMS)
    ratio: float = option(1.0, "sampling ratio (1.0 with --metric none: full data)", SEARCH)
    ratio_schedule: str = option("constant", "how the ratio moves over the epochs (steps:E=R,...: from epoch E, "
                                             "counted from 0, the ratio is R)", SEARCH, RATIO_SCHEDULES)
    rung_ratios: str | None = option(None, "the data ratio as a fidelity: one ratio per rung, increasing, e.g. "
                                           "0.1,0.3,1 (a promoted trial continues from its checkpoint on the "
                                           "larger subset with its memory); overrides --ratio and --ratio-schedule",
                                     SEARCH)
    metric: str = option("auto", "subset strategy of proxy runs; auto: the best measured (random, never-seen "
                                 "samples first, when trials start at the ratio under early stopping; else loss "
                                 "at r >= 0.2 and fixed_random below)", SEARCH, metric_choices)
    num_samples: int = option(8, "trials (for a grid space: repeats of the grid)", SEARCH)
    max_epochs: int | None = option(None, "epochs per trial (none: the space's)", SEARCH)
    max_concurrent: int = option(2, "trials at once (the paper runs 8)", SEARCH)
    cpus_per_trial: float = option(1.0, "CPUs per trial", RAY)
    gpus_per_trial: float = option(0.0, "GPUs per trial; fractions allowed, e.g. 0.25", RAY)
    time_budget_s: float | None = option(None, "full-data wall-time budget; x ratio", SEARCH)
    data_passes_budget: float | None = option(None, "full-data budget in data passes; x ratio", SEARCH)
    early_stop: str = option("none", "add ASHA early stopping to tpe and random", SEARCH, EARLY_STOPPING)
    optuna_storage: str | None = option(None, "tpe: keep the Optuna study in this journal file (optuna-dashboard "
                                              "opens it; the study is named after the experiment)", SEARCH)
    grace_period: int = option(1, "ASHA/Hyperband: epochs before a trial may be stopped", SEARCH)
    reduction_factor: int = option(3, "ASHA/Hyperband: 1/this of the trials go on at each rung", SEARCH)
    seed: int = option(0, "seed of the search and of every trial", RAY)
    device: str = option("auto", "training device of the trials", RAY, DEVICES)
    address: str | None = option(None, "Ray cluster: auto, HOST:PORT or ray://HOST:10001 (none: start locally)", RAY)
    storage_path: str | None = option(None, "where Ray keeps experiments: a folder every node sees, s3:// or gs:// "
                                            "(none: .OUT.ray beside --out for a local run; Ray's ~/ray_results "
                                            "from the Python API)", RAY)
    name: str | None = option(None, flag=False)
    verbose: int = option(1, "0: silent; 1: one progress bar per search; 2: Ray Tune's own tables and logs", RAY)
    selection: dict[str, Any] = option(flag=False, default_factory=dict)  # SELECTION_FIELDS given as flags
    tracking: str = option("none", "hand the run to Ray Tune's own tracking callback: mlflow, tensorboard or wandb "
                                   "(the package must be installed)", RAY, TRACKERS)
    tracking_uri: str | None = option(None, "mlflow: the tracking URI (none: MLflow's own default or "
                                            "$MLFLOW_TRACKING_URI); wandb: the project (none: the experiment's name)",
                                      RAY)
    max_failures: int | None = option(None, "retry a failed trial this often from its last checkpoint (a lost "
                                            "node); -1: forever; none: 3 on a cluster (--address), 0 locally", RAY)
    checkpoint_every_s: float = option(60.0, "a trial checkpoints where its scheduler can pause or stop it, at its "
                                             "last epoch, and once this many seconds passed since its last "
                                             "checkpoint; 0: after every epoch", RAY)

    def validate(self) -> "HpoSettings":
        if self.algo not in ALGORITHMS:
            raise ConfigError("algo", self.algo, ALGORITHMS)
        check_strategy("metric", self.metric)
        ratio_steps(self.ratio_schedule)
        for key in self.selection:
            if key not in SELECTION_FIELDS:
                raise ConfigError("selection", key, SELECTION_FIELDS)
        if self.tracking not in TRACKERS:
            raise ConfigError("tracking", self.tracking, TRACKERS)
        if self.tracking != "none":
            import importlib.util

            package = TRACKER_PACKAGES[self.tracking]
            if importlib.util.find_spec(package) is None:
                raise ConfigError("tracking", self.tracking, f"a tracker whose package is installed "
                                                             f"(pip install {package})")
        if self.optuna_storage is not None and self.algo != "tpe":
            raise ConfigError("optuna_storage", self.optuna_storage, "none unless --algo tpe")
        if self.early_stop not in EARLY_STOPPING:
            raise ConfigError("early_stop", self.early_stop, EARLY_STOPPING)
        if self.early_stop != "none" and self.algo in MULTI_FIDELITY:
            raise ConfigError("early_stop", self.early_stop, f"none with --algo {self.algo}, which stops trials "
                                                             "itself (--early-stop adds ASHA to tpe and random)")
        if self.max_failures is not None and not (isinstance(self.max_failures, int) and self.max_failures >= -1):
            raise ConfigError("max_failures", self.max_failures, "an integer >= 0 (-1: retry forever)")
        for name in ("num_samples", "max_concurrent", "grace_period"):
            v = getattr(self, name)
            if not (isinstance(v, int) and v >= 1):
                raise ConfigError(name, v, "an integer >= 1")
        if not (isinstance(self.reduction_factor, int) and self.reduction_factor >= 2):
            raise ConfigError("reduction_factor", self.reduction_factor, "an integer >= 2")
        if self.max_epochs is not None and not (isinstance(self.max_epochs, int) and self.max_epochs >= 1):
            raise ConfigError("max_epochs", self.max_epochs, "an integer >= 1")
        if not self.cpus_per_trial > 0:
            raise ConfigError("cpus_per_trial", self.cpus_per_trial, "a number > 0")
        if not self.gpus_per_trial >= 0:
            raise ConfigError("gpus_per_trial", self.gpus_per_trial, "a number >= 0 (fractions allowed)")
        if not (isinstance(self.checkpoint_every_s, (int, float)) and 0 <= self.checkpoint_every_s < math.inf):
            raise ConfigError("checkpoint_every_s", self.checkpoint_every_s, "a number of seconds >= 0 (0: every epoch)")
        for name in ("time_budget_s", "data_passes_budget"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise ConfigError(name, v, "a number > 0")
        if self.space.has_grid and self.algo in ("tpe", "bohb", "hypertune"):
            raise ConfigError("algo", self.algo, "random, hyperband or asha for a space with grid parameters")
        if self.address is not None and not (self.address == "auto" or self.address.startswith(("ray://", "localhost", "127.")) or ":" in self.address):
            raise ConfigError("address", self.address, "'auto', ray://HOST:PORT or HOST:PORT")
        if self.rung_ratios is not None:
            self._apply_rung_ratios()
        self.trial_config()  # the fixed settings plus the run's flags must make a valid TrainConfig
        if self.address is None:  # a local run: the device must exist here
            from asp_tune.device import resolve_device

            resolve_device(self.device)
        return self

    def failures_allowed(self) -> int:
        """Retries of a failed trial: ``max_failures``, or by default 3 on a cluster and 0 locally
        (where a failure is a bug to see at once, not a lost node)."""
        if self.max_failures is not None:
            return self.max_failures
        return 3 if self.address else 0

    @property
    def epochs(self) -> int:
        return self.max_epochs or int(self.space.fixed.get("epochs", TrainConfig.epochs))

    @property
    def early_stopping(self) -> bool:
        return self.algo in MULTI_FIDELITY or self.early_stop != "none"

    def ratios(self) -> tuple[float, ...]:
        """The ratios of ``rung_ratios``, one per rung (a :class:`ConfigError` naming it otherwise)."""
        allowed = "increasing ratios in (0, 1], one per rung, comma-separated (e.g. 0.1,0.3,1)"
        try:
            ratios = tuple(float(v) for v in str(self.rung_ratios).split(","))
        except ValueError:
            raise ConfigError("rung_ratios", self.rung_ratios, allowed) from None
        if not all(0.0 < r <= 1.0 for r in ratios) or any(b <= a for a, b in zip(ratios, ratios[1:])):
            raise ConfigError("rung_ratios", self.rung_ratios, allowed)
        return ratios

    def _apply_rung_ratios(self) -> None:
        """``ratio`` and ``ratio_schedule`` from ``rung_ratios``: the first rung's ratio until the first
        rung's epoch, then each next ratio from the rung before it."""
        if not self.early_stopping:
            raise ConfigError("rung_ratios", self.rung_ratios, "none unless --algo is one of "
                                                               f"{', '.join(MULTI_FIDELITY)} (ratios need rungs)")
        ratios, rungs = self.ratios(), self.rungs()
        if len(ratios) != len(rungs):
            raise ConfigError("rung_ratios", self.rung_ratios, f"{len(rungs)} ratios, one per rung at epochs "
                                                               f"{', '.join(map(str, rungs))}")
        steps = steps_schedule(list(zip(rungs[:-1], ratios[1:])))
        if self.ratio_schedule not in ("constant", steps):
            raise ConfigError("ratio_schedule", self.ratio_schedule, "constant with --rung-ratios")
        self.ratio, self.ratio_schedule = ratios[0], steps

    def run_fields(self) -> dict[str, Any]:
        """The fields every trial takes from the command rather than the space (selection settings
        given as flags override the space's ``fixed`` ones).

        With an early-stopping scheduler most trials stop after a rung or two, so unless told
        otherwise a proxy trial does not spend a full first pass: its first epochs take never-seen
        samples first (``unseen_first``) at the ratio.
        """
        run = {**self.selection, "ratio": self.ratio, "ratio_schedule": self.ratio_schedule,
               "metric": self.resolved_metric(),
               "seed": self.seed, "device": self.device, "epochs": self.epochs}
        if self.starts_at_ratio:
            run["first_epoch_full"] = False
        if self.metric == "auto" and run["metric"] == EARLY_STOPPING_PROXY["metric"]:
            # the measured default there is a plain uniform pick, unless the space or a flag says otherwise
            run.update({k: v for k, v in EARLY_STOPPING_PROXY.items()
                        if k not in self.selection and k not in self.space.fixed})
        return run

    @property
    def starts_at_ratio(self) -> bool:
        """Whether trials skip the full first pass (early stopping, unless the first epoch is set)."""
        return self.early_stopping and self.ratio < 1.0 and "first_epoch_full" not in self.selection \
            and "first_epoch_full" not in self.space.fixed

    def resolved_metric(self) -> str:
        """``metric``, with ``auto`` made the best measured choice (asp_tune.config): ``none`` at
        ratio 1, a uniform pick of never-seen samples when trials start at the ratio, else the
        importance metric under the calibrated rule."""
        if self.metric != "auto":
            return self.metric
        return auto_strategy(self.ratio, self.starts_at_ratio)["metric"]

    def user_modules(self) -> list:
        """The user's modules this search's trials import: those its import paths name (model, data set,
        strategy, scoring model) and those that define what the driver registered."""
        names = [self.metric, *(self.space.fixed.get(k) for k in ("model", "dataset", "proxy_model", "metric"))]
        names += [v for p in self.space.params if p.name in ("model", "dataset") for v in p.values]
        registered = [e for added in extensions().values() for e in added.values()]
        return user_modules([n for n in names if is_import_path(n)] + registered)

    def rungs(self) -> tuple[int, ...] | None:
        """The epochs where this search's early stopping decides (None without early stopping)."""
        if not self.early_stopping:
            return None
        from asp_tune.tune.trust import rung_epochs

        return rung_epochs(min(self.grace_period, self.epochs), self.reduction_factor, self.epochs)

    def trial_config(self) -> TrainConfig:
        first = {p.name: (p.low if p.low is not None else p.values[0]) for p in self.space.params}
        return self.space.train_config(first, **self.run_fields())

    def validation_epochs(self) -> tuple[int, ...] | None:
        """The epochs at which a trial must validate for the scheduler; None: every epoch.

        ASHA decides only at its rung milestones (``grace_period * reduction_factor**k``), so
        trials validate there and at the last epoch; its decisions are the same as with
        validation every epoch, because a rung reads the report of exactly that epoch. Budgets
        (time, data passes) can stop a trial at any epoch, and Hyperband/BOHB pause trials at
        their own rungs, so those keep validating every epoch.
        """
        if self.algo == "hypertune" and self.time_budget_s is None and self.data_passes_budget is None:
            return self.rungs()
        if not self._asha() or self.time_budget_s is not None or self.data_passes_budget is not None:
            return None
        return self._asha_milestones()

    def _asha(self) -> bool:
        return self.algo == "asha" or (self.algo in ("tpe", "random") and self.early_stop == "asha")

    def _asha_milestones(self) -> tuple[int, ...]:
        grace = min(self.grace_period, self.epochs)
        import numpy as np  # the very expression of Ray's ASHA bracket, so the rungs match it bit for bit

        rungs = int(np.log(self.epochs / grace) / np.log(self.reduction_factor) + 1)
        return tuple(sorted({grace * self.reduction_factor ** k for k in range(rungs)} | {self.epochs}))

    def checkpoint_epochs(self) -> tuple[int, ...] | None:
        """The epochs after which a trial checkpoints besides its last one and ``checkpoint_every_s``:
        where its scheduler can pause or stop it. None: after every epoch (``checkpoint_every_s`` 0, and
        Hyperband/BOHB, which pause trials at their brackets' own milestones)."""
        if self.checkpoint_every_s == 0 or self.algo in ("hyperband", "bohb"):
            return None
        if self.algo == "hypertune":
            return self.rungs()
        return self._asha_milestones() if self._asha() else ()

    def data_scale(self) -> float:
        """The share of the data one epoch costs: the ratio, or under ``rung_ratios`` the mean ratio of
        a trial's epochs run to the end."""
        if ratio_steps(self.ratio_schedule):
            from asp_tune.schedules import RatioSchedule

            return float(RatioSchedule(self.ratio, self.epochs, self.ratio_schedule, False).ratios().mean())
        return self.ratio if self.ratio < 1.0 else 1.0

    def budget(self) -> dict[str, Any]:
        """Nominal (full-data) and rescaled budgets: at ratio r < 1 every budget becomes r times."""
        scale = self.data_scale()
        nominal_passes = self.data_passes_budget
        return {
            "scale": scale,
            "num_trials": self.num_samples,
            "max_epochs_per_trial": self.epochs,
            "nominal_time_budget_s": self.time_budget_s,
            "time_budget_s": None if self.time_budget_s is None else self.time_budget_s * scale,
            "nominal_data_passes": nominal_passes,
            "data_passes": None if nominal_passes is None else nominal_passes * scale,
            "nominal_data_passes_if_all_trials_finish": self.num_samples * self.epochs * self.space.grid_size(),
            "scheduler_resource": "training_iteration (one epoch, costing about r data passes)",
        }


@dataclass
class HpoResult:
    trials: pd.DataFrame
    summary: dict[str, Any]
    histories: dict[str, pd.DataFrame] = field(default_factory=dict)


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
        ray.init(address="local", num_cpus=num_cpus or os.cpu_count(), _node_ip_address="127.0.0.1", **kwargs)
        from asp_tune.tune.reaper import watch

        watch(os.getpid())  # a driver killed outright leaves none of this session's processes behind


def protect_ray_token(path: Path | None = None) -> Path:
    """Ray's token (``~/.ray/auth_token``) readable by this user only: Ray writes it with the default
    umask (world-readable), and anyone who reads it may run code in this user's local Ray, whose
    servers listen on every interface. Made here (mode 0600) when missing, so it is never readable
    by others even for a moment; tightened when it exists."""
    import secrets
    import stat

    from asp_tune.atomic import create_private

    path = path or Path.home() / ".ray" / "auth_token"
    if not path.exists() and not path.is_symlink():
        try:
            from ray._private.authentication.authentication_token_generator import generate_new_authentication_token

            token = generate_new_authentication_token()
        except ImportError:  # Ray moved it: any long random text is a token
            token = secrets.token_hex(32)
        create_private(path, token.encode())  # False: another search made it at the same moment
    info = path.lstat()  # a link is left as it is: chmod would change the file it names
    if stat.S_ISREG(info.st_mode) and info.st_mode & (stat.S_IRWXG | stat.S_IRWXO) \
            and (not hasattr(os, "getuid") or info.st_uid == os.getuid()):
        path.chmod(0o600)
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


def check_resources(cpus_per_trial: float, gpus_per_trial: float, field: str = "per_trial") -> None:
    """Refuse a per-trial request that no node of the cluster can ever satisfy (it would wait forever)."""
    import ray

    nodes = [n.get("Resources", {}) for n in ray.nodes() if n.get("Alive")]
    if not nodes:
        return
    most_cpus = max(n.get("CPU", 0.0) for n in nodes)
    most_gpus = max(n.get("GPU", 0.0) for n in nodes)
    if cpus_per_trial > most_cpus:
        raise ConfigError(f"cpus_{field}", cpus_per_trial, f"at most {most_cpus:g} (the most CPUs of any node)")
    if gpus_per_trial > most_gpus:
        raise ConfigError(f"gpus_{field}", gpus_per_trial,
                          f"at most {most_gpus:g} (the most GPUs of any node)" if most_gpus else
                          "0 (no node of this Ray cluster has a GPU)")


def fit_interruptibly(tuner, experiment_path: str):
    """``tuner.fit()`` where SIGINT/SIGTERM stop the experiment gracefully and then raise.

    Ray Tune's own SIGINT handler ends the run and returns results that look finished. Here both
    signals ask Tune to stop the same way (through its SIGUSR1 handler, which saves the
    experiment state), and :class:`~asp_tune.errors.RunInterrupted` is raised afterwards, so nothing is committed.
    A second signal interrupts at once.
    """
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return tuner.fit()
    interrupted: list[int] = []
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}

    def handler(sig: int, frame) -> None:
        if interrupted:
            raise KeyboardInterrupt
        interrupted.append(sig)
        os.kill(os.getpid(), signal.SIGUSR1)

    os.environ["TUNE_DISABLE_SIGINT_HANDLER"] = "1"
    for sig in previous:
        signal.signal(sig, handler)
    try:
        grid = tuner.fit()
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
    if interrupted:
        raise RunInterrupted(f"interrupted by {signal.Signals(interrupted[0]).name}; no results were committed. "
                             f"Resume with --resume {experiment_path}")
    return grid


SETTINGS_FILE = "asp_tune_settings.json"
#: Settings a resumed experiment must share with the run that started it.
RESUME_FIELDS = ("algo", "ratio", "ratio_schedule", "rung_ratios", "metric", "num_samples", "max_epochs", "early_stop",
                 "grace_period", "reduction_factor", "seed", "time_budget_s", "data_passes_budget", "selection",
                 "space")


def check_resume_settings(experiment: str, settings: dict[str, Any]) -> None:
    """Refuse to resume ``experiment`` with flags other than those it was started with, naming them."""
    try:
        saved = json.loads(read_text(join(experiment, SETTINGS_FILE)))
    except (OSError, ValueError):
        raise ConfigError("resume", experiment, "an experiment folder written by 'asp-tune hpo' "
                                                f"(no readable {SETTINGS_FILE})") from None
    saved_jsonable = {k: saved.get(k) for k in RESUME_FIELDS}
    given = json.loads(json.dumps(jsonable({k: settings.get(k) for k in RESUME_FIELDS})))
    differ = [k for k in RESUME_FIELDS if saved_jsonable.get(k) != given.get(k)]
    if differ:
        detail = "; ".join(f"--{k.replace('_', '-')} {saved_jsonable.get(k)!r} (given {given.get(k)!r})"
                           for k in differ if k != "space") + ("; the same search space" if "space" in differ else "")
        raise ConfigError("resume", experiment, f"the flags of the run being resumed: {detail}")


def quiet_ray_logs(verbose: int) -> None:
    """Below ``--verbose 2`` Ray Tune's own messages (per-trial tracebacks, hints) stay in the
    experiment folder; asp_tune reports failures itself."""
    import logging

    level = logging.INFO if verbose >= 2 else logging.CRITICAL
    for name in ("ray.tune", "ray.train", "ray.air"):
        logging.getLogger(name).setLevel(level)


def shared_arrays(s: HpoSettings) -> dict[str, Any] | None:
    """The decoded data set every trial shares, read once here (None when the space searches
    which data to read). Reading it here also checks the data before any trial starts."""
    from asp_tune.datasets import read_dataset
    from asp_tune.tune.trainable import DATA_SOURCE_FIELDS

    if any(p.name in DATA_SOURCE_FIELDS for p in s.space.params):
        return None
    cfg = s.trial_config()
    return read_dataset(cfg.dataset, cfg.data_dir, download=cfg.download)


def _absolute_data_dir(space: SearchSpace) -> SearchSpace:
    data_dir = space.fixed.get("data_dir")
    if data_dir and not str(data_dir).startswith(("s3://", "gs://")):
        fixed = {**space.fixed, "data_dir": str(Path(data_dir).expanduser().resolve())}
        return SearchSpace(space.name, fixed, space.params)
    return space


def build_search(s: HpoSettings):
    """(search_alg, scheduler, param_space) for the chosen algorithm."""
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandForBOHB, HyperBandScheduler
    from ray.tune.search import BasicVariantGenerator

    epochs = s.epochs
    target = {"metric": METRIC, "mode": "max"}
    asha = lambda: ASHAScheduler(time_attr="training_iteration", max_t=epochs, **target,  # noqa: E731
                                 grace_period=min(s.grace_period, epochs), reduction_factor=s.reduction_factor)
    if s.algo == "hypertune":
        from asp_tune.tune.hypertune import hypertune

        scheduler, search = hypertune(epochs, num_samples=s.num_samples, param_space=s.space.to_tune(),
                                      max_concurrent=s.max_concurrent,
                                      grace_period=min(s.grace_period, epochs), reduction_factor=s.reduction_factor,
                                      seed=s.seed, **target)
        return search, scheduler, s.space.to_tune()
    if s.algo == "bohb":
        from ray.tune.search.bohb import TuneBOHB

        search = TuneBOHB(space=s.space.to_configspace(s.seed), seed=s.seed, **target)
        scheduler = HyperBandForBOHB(time_attr="training_iteration", max_t=epochs,
                                     reduction_factor=s.reduction_factor, **target)
        return search, scheduler, {}
    if s.algo == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        kept = {}
        if s.optuna_storage:
            from optuna.storages import JournalStorage
            from optuna.storages.journal import JournalFileBackend

            Path(s.optuna_storage).expanduser().resolve().parent.mkdir(parents=True, exist_ok=True)
            kept = {"storage": JournalStorage(JournalFileBackend(str(Path(s.optuna_storage).expanduser().resolve()))),
                    "study_name": s.name or f"asp-{s.space.name}-r{s.ratio}"}
        search = OptunaSearch(space=s.space.to_tune(), sampler=optuna.samplers.TPESampler(seed=s.seed), **target,
                              **kept)
        return search, (asha() if s.early_stop == "asha" else FIFOScheduler()), {}
    search = BasicVariantGenerator(random_state=s.seed)
    if s.algo == "hyperband":
        scheduler = HyperBandScheduler(time_attr="training_iteration", max_t=epochs,
                                       reduction_factor=s.reduction_factor, **target)
    elif s.algo == "asha" or s.early_stop == "asha":
        scheduler = asha()
    else:
        scheduler = FIFOScheduler()
    return search, scheduler, s.space.to_tune()


class DataPassBudget:
    """Stops the experiment once the trials together have used ``budget`` data passes."""

    def __init__(self, budget: float):
        from ray import tune

        class _Stopper(tune.Stopper):
            def __init__(inner):
                inner.used: dict[str, float] = {}

            def __call__(inner, trial_id: str, result: dict) -> bool:
                inner.used[trial_id] = float(result.get("data_passes", 0.0))
                return False

            def stop_all(inner) -> bool:
                return sum(inner.used.values()) >= budget

        self.stopper = _Stopper()


def run_hpo(settings: HpoSettings, resume: str | None = None, resume_unsigned: bool = False) -> HpoResult:
    """Run (or resume) one experiment and collect one row per trial.

    ``resume``: an experiment folder to finish; only from the copy of its state this user's key signed
    (:mod:`asp_tune.tune.signing`) unless ``resume_unsigned``, which lets Ray unpickle whatever the folder holds.

    Raises :class:`~asp_tune.errors.RunInterrupted` on SIGINT/SIGTERM (the experiment stays resumable) and
    :class:`~asp_tune.errors.RunFailed` when no trial succeeded.
    """
    from ray import tune

    from asp_tune.tune.progress import SignedState, WallTimeRecorder, recorded_wall_time
    from asp_tune.tune.trainable import proxy_trial

    s = settings.validate()
    s.space = _absolute_data_dir(s.space)
    if resume:
        resume = storage_root(resume)  # Ray reads a relative path as a URI
        check_resume_settings(resume, settings_dict(s))
    quiet_ray_logs(s.verbose)
    from asp_tune.tune.storage import check_location

    check_location(storage_root(s.storage_path))  # before Ray starts: a bad place is one named error
    from asp_tune.tune.signing import signing_problem

    unsigned = signing_problem()
    if unsigned:  # said aloud: this search runs, but its --resume would be refused as unsigned
        print(f"[asp-tune] warning: this search cannot be signed for --resume ({unsigned}); resuming it will "
              "need --resume-unsigned", file=sys.stderr)
    arrays = shared_arrays(s)  # read (and checked) before Ray starts
    if s.validation_epochs() is not None:
        # reports between rungs carry no val_accuracy; ASHA then simply waits for the next one
        os.environ["TUNE_DISABLE_STRICT_METRIC_CHECKING"] = "1"
    modules = s.user_modules()
    ensure_ray(s.address, modules=modules)
    check_resources(s.cpus_per_trial, s.gpus_per_trial)
    check_shared_storage(s.storage_path)
    budget = s.budget()
    trainable = tune.with_resources(
        tune.with_parameters(proxy_trial, space=s.space, run=s.run_fields(), threads=max(1, int(s.cpus_per_trial)),
                             arrays=arrays, validate_epochs=s.validation_epochs(), extensions=extensions(),
                             checkpoint_epochs=s.checkpoint_epochs(), checkpoint_every_s=s.checkpoint_every_s,
                             search_paths=search_paths(modules)),
        {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
    start = time.perf_counter()
    if resume:
        if not tune.Tuner.can_restore(resume):
            raise ConfigError("resume", resume, "a Ray Tune experiment folder written by 'asp-tune hpo'")
        experiment = resume
        if not resume_unsigned:
            from asp_tune.tune.signing import restore_signed

            changed = restore_signed(resume)
            if changed:
                warnings.warn(f"resuming from the signed copy of the experiment's state: {', '.join(changed)} "
                              "changed after it was signed (a driver killed while Ray wrote its state, or a "
                              "change by someone else); the files set aside end in .unsigned", stacklevel=2)
        tuner = tune.Tuner.restore(resume, trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False, storage_filesystem=ray_filesystem(resume))
    else:
        search, scheduler, param_space = build_search(s)
        stop = DataPassBudget(budget["data_passes"]).stopper if budget["data_passes"] else None
        storage = storage_root(s.storage_path)
        # a random part: two runs started in the same second never share an experiment folder
        name = s.name or f"asp-{s.space.name}-{s.algo}-r{s.ratio}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"
        experiment = join(storage, name)
        make_dirs(experiment)
        write_text(join(experiment, SETTINGS_FILE), json.dumps(jsonable(settings_dict(s)), indent=1) + "\n")
        tuner = make_tuner(trainable, param_space, name=name, storage=storage, num_samples=s.num_samples,
                           # Hyper-Tune keeps max_concurrent trials training itself (its paused ones hold no worker)
                           max_concurrent=None if s.algo == "hypertune" else s.max_concurrent, verbose=s.verbose, max_failures=s.failures_allowed(),
                           progress=(s.num_samples * s.space.grid_size(), f"{s.algo} r={s.ratio}", s.rungs()),
                           search_alg=search, scheduler=scheduler, time_budget_s=budget["time_budget_s"],
                           stop=stop, callbacks=[WallTimeRecorder(experiment), SignedState(experiment),
                                                 *tracking_callbacks(s, name)],
                           keep_checkpoints=KEEP_CHECKPOINTS)
    grid = fit_interruptibly(tuner, experiment)
    wall = recorded_wall_time(experiment) or time.perf_counter() - start
    trials, histories = collect_trials(grid, s)
    if len(trials) and (trials["status"] == "ERROR").all():
        raise RunFailed(f"all {len(trials)} trials failed; the first: {trials['error'].iloc[0]} "
                              f"(full tracebacks under {grid.experiment_path})")
    ok = trials[trials["status"] != "ERROR"]
    best = ok.loc[ok["best_val_accuracy"].idxmax()] if len(ok) and ok["best_val_accuracy"].notna().any() else None
    if best is None:
        spent = budget["time_budget_s"] or budget["data_passes"]
        raise RunFailed(f"no trial reported a validation score{' within the budget' if spent else ''} "
                        f"({len(trials)} trials; time budget {budget['time_budget_s']} s, data passes "
                        f"{budget['data_passes']}, both after x{budget['scale']:g}): give a larger budget; nothing "
                        "was committed")
    trust = proxy_trust(s.rungs(), histories)
    summary = {
        "algo": s.algo, "ratio": s.ratio, "ratio_schedule": s.ratio_schedule, "metric": s.resolved_metric(),
        "space": s.space.name, "seed": s.seed,
        "best_config": None if best is None else {p.name: _plain(best[f"config/{p.name}"]) for p in s.space.params},
        "best_val_accuracy": None if best is None else float(best["best_val_accuracy"]),
        "best_trial_id": None if best is None else best["trial_id"],
        "num_trials": int(len(trials)),
        "num_failed": int((trials["status"] == "ERROR").sum()),
        "wall_time_s": wall,
        "data_passes_total": float(trials["data_passes"].fillna(0).sum()),
        "epochs_total": int(trials["epochs"].fillna(0).sum()),
        "trial_seconds": {k: float(trials[c].fillna(0).sum()) for k, c in
                          (("startup", "startup_seconds"), ("training", "seconds"), ("validation", "val_seconds"))}
        | {"proxy_model": proxy_model_seconds(trials)},
        "first_epoch_full": s.trial_config().first_epoch_full,
        "validation_epochs": s.validation_epochs() or "every",
        "budget": budget,
        "experiment_path": grid.experiment_path,
        "fixed": s.space.fixed,
        "proxy_trust": None if trust is None else trust.summary(),
    }
    if s.rung_ratios is not None:
        summary["rung_ratios"] = list(s.ratios())
    if s.algo == "hypertune":
        summary["hypertune"] = hypertune_summary(grid.experiment_path, s)
    if trust is not None and trust.warning():
        print(f"[asp-tune] warning: {trust.warning()}", file=sys.stderr)
    return HpoResult(trials, summary, histories)


def hypertune_summary(experiment_path: str, s: HpoSettings) -> dict[str, Any] | None:
    """Hyper-Tune's brackets and promotions, from the state it saved with the experiment (plain JSON)."""
    from asp_tune.tune.hypertune import HyperTune

    states = sorted(Path(experiment_path).glob("searcher-state-*.pkl"), key=lambda p: p.stat().st_mtime)
    if not states:
        return None
    state = HyperTune(s.epochs, num_samples=s.num_samples, max_concurrent=s.max_concurrent,
                      grace_period=min(s.grace_period, s.epochs), eta=s.reduction_factor, seed=s.seed)
    state.load_state_dict(json.loads(states[-1].read_text()))
    return state.summary()


def tracking_callbacks(s: HpoSettings, name: str) -> list:
    """Ray Tune's own tracking callback for ``s.tracking`` (every trial's reports, config and status)."""
    if s.tracking == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return [MLflowLoggerCallback(tracking_uri=s.tracking_uri, experiment_name=name)]
    if s.tracking == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        return [TBXLoggerCallback()]
    if s.tracking == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        return [WandbLoggerCallback(project=s.tracking_uri or name)]
    return []


def proxy_trust(rungs: tuple[int, ...] | None, histories: dict[str, pd.DataFrame]):
    """The :class:`~asp_tune.tune.trust.RungRecord` of a finished early-stopping search, from the trials'
    own reports (so a resumed search counts every part); None without early stopping."""
    if rungs is None:
        return None
    from asp_tune.tune.trust import RungRecord

    record = RungRecord(rungs)
    for trial, hist in histories.items():
        if "epoch" in hist and METRIC in hist:
            record.add_history(trial, hist["epoch"], hist[METRIC])
    return record


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def error_line(error: BaseException) -> str:
    """``Type: message`` of the exception a trial raised, unwrapped from Ray's task error."""
    cause = getattr(error, "cause", None) or error
    lines = [ln for ln in str(cause).strip().splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {(lines[-1] if lines else '')[:300]}"


def check_shared_storage(storage_path: str | None) -> None:
    """On a cluster of several nodes, trials and their checkpoints must live where every node sees
    them; without ``--storage-path`` each node would keep its own, and a trial moved to another node
    could not resume. Refused before any trial starts."""
    import ray

    nodes = sum(1 for node in ray.nodes() if node.get("Alive"))
    if nodes > 1 and storage_path is None:
        raise ConfigError("storage_path", None, f"a folder every one of the {nodes} nodes sees (NFS) or a bucket "
                                                "URI (s3://, gs://): a search on several nodes needs shared storage")


def make_tuner(trainable, param_space: dict[str, Any], *, name: str, storage: str, num_samples: int,
               max_concurrent: int | None, verbose: int, max_failures: int, progress: tuple[int, str],
               search_alg=None, scheduler=None, time_budget_s: float | None = None, stop=None,
               callbacks: list | None = None, keep_checkpoints: int | None = 1,
               tune_config_extra: dict[str, Any] | None = None):
    """A Tuner as every asp_tune experiment sets one up: reused workers, Ray's console output only at
    ``verbose`` 2, one progress bar (``progress``: total trials and its label) at ``verbose`` 1."""
    from ray import tune

    from asp_tune.tune.progress import FreshTrialLogs, SearchProgress

    bar = [SearchProgress(*progress)] if verbose == 1 else []  # (total, label, rungs whose agreement it shows)
    return tune.Tuner(
        trainable,
        param_space=param_space,
        tune_config=tune.TuneConfig(search_alg=search_alg, scheduler=scheduler, num_samples=num_samples,
                                    max_concurrent_trials=max_concurrent, time_budget_s=time_budget_s,
                                    reuse_actors=REUSE_ACTORS, **(tune_config_extra or {})),
        run_config=tune.RunConfig(
            name=name, storage_path=storage, storage_filesystem=ray_filesystem(storage), stop=stop,
            verbose=2 if verbose >= 2 else 0,
            callbacks=(callbacks or []) + [FreshTrialLogs()] + bar,
            failure_config=tune.FailureConfig(max_failures=max_failures),
            checkpoint_config=tune.CheckpointConfig(num_to_keep=keep_checkpoints)),
    )


def last_values(hist: pd.DataFrame | None) -> dict[str, float] | None:
    """A trial's totals from its last report (None when it reported nothing)."""
    if hist is None or not len(hist) or METRIC not in hist:
        return None
    last = hist.iloc[-1]
    return {"data_passes": float(last["data_passes"]), "seconds": float(last["train_seconds_total"]),
            "val_seconds": float(last.get("val_seconds_total", 0.0)),
            "startup_seconds": float(last.get("startup_seconds", 0.0)),
            "node_id": str(last.get("node_id", "")),
            "proxy_seconds": float(last.get("proxy_seconds", 0.0) or 0.0),
            "proxy_key": str(last.get("proxy_key", "") or ""),
            "proxy_computed": bool(last.get("proxy_computed") == True),  # noqa: E712 - a NumPy bool, or NaN
            "assigned_gpus": str(last.get("assigned_gpus", "") or ""), "device": str(last.get("device", "") or ""),
            "final_val_accuracy": float(hist[METRIC].dropna().iloc[-1]) if hist[METRIC].notna().any() else math.nan}


def proxy_model_seconds(trials: pd.DataFrame) -> float:
    """Seconds spent training static proxies' scoring models: each distinct proxy counted once,
    however many trials shared it (0 without a static proxy that needs one)."""
    if "proxy_key" not in trials or not len(trials):
        return 0.0
    used = trials[trials["proxy_key"].fillna("").astype(str) != ""]
    return float(used.groupby("proxy_key")["proxy_seconds"].max().sum())


def reported_epochs(hist: pd.DataFrame | None) -> pd.DataFrame:
    """A trial's reports, one per epoch: a trial resumed from a checkpoint older than its last report
    (a driver killed between Ray's state saves) reports those epochs again; the later report counts."""
    if hist is None or not len(hist):
        return pd.DataFrame()
    if "epoch" not in hist:
        return hist
    return hist.drop_duplicates("epoch", keep="last").sort_values("epoch", kind="stable").reset_index(drop=True)


def collect_trials(grid, s: HpoSettings) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    rows, histories = [], {}
    for result in grid:
        hist = reported_epochs(result.metrics_dataframe)
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or (Path(result.path).name if result.path else f"trial{len(rows)}")
        row: dict[str, Any] = {"trial_id": trial_id}
        for p in s.space.params:
            row[f"config/{p.name}"] = _plain(result.config.get(p.name)) if result.config else None
        last = last_values(hist)
        has = last is not None
        epochs = int(hist["epoch"].max()) if has else 0
        row.update({
            "best_val_accuracy": float(hist[METRIC].max()) if has else math.nan,
            "final_val_accuracy": last["final_val_accuracy"] if has else math.nan,
            "epochs": epochs,
            **({k: last[k] for k in ("data_passes", "seconds", "startup_seconds", "node_id", "val_seconds",
                                     "assigned_gpus", "device", "proxy_seconds", "proxy_key")} if has
               else {"data_passes": 0.0, "seconds": 0.0, "startup_seconds": 0.0, "node_id": "", "val_seconds": 0.0,
                     "assigned_gpus": "", "device": "", "proxy_seconds": 0.0, "proxy_key": ""}),
            "status": "ERROR" if result.error else ("TERMINATED" if epochs >= s.epochs else "STOPPED"),
            "error": "" if not result.error else error_line(result.error),
        })
        rows.append(row)
        if has:
            histories[trial_id] = hist[[c for c in hist.columns
                                        if c in ("epoch", METRIC, "data_passes", "train_loss", "reported_at")]]
    return pd.DataFrame(rows), histories


def settings_dict(s: HpoSettings) -> dict[str, Any]:
    d = asdict(s)
    d["space"] = {"name": s.space.name, "fixed": s.space.fixed, "params": [asdict(p) for p in s.space.params]}
    return d
