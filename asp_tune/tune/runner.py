"""Running one HPO experiment on Ray Tune with proxy-data trials and a rescaled budget."""

from __future__ import annotations

import math
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import pandas as pd

from asp_tune.config import TrainConfig
from asp_tune.errors import ConfigError
from asp_tune.schedules import METRIC_CHOICES, RATIO_SCHEDULES
from asp_tune.tune.space import SearchSpace
from asp_tune.tune.trainable import proxy_trial

ALGORITHMS = ("hyperband", "bohb", "asha", "tpe", "random")
EARLY_STOPPING = ("none", "asha")
METRIC = "val_accuracy"


@dataclass
class HpoSettings:
    """One experiment. Budgets are given as for full data and rescaled by ``ratio``."""

    space: SearchSpace
    algo: str = "asha"
    ratio: float = 1.0
    ratio_schedule: str = "constant"
    metric: str = "none"
    num_samples: int = 8
    max_epochs: int | None = None  # default: the space's fixed epochs
    max_concurrent: int = 2
    cpus_per_trial: float = 1.0
    gpus_per_trial: float = 0.0
    time_budget_s: float | None = None
    data_passes_budget: float | None = None
    early_stop: str = "none"  # for tpe / random: add ASHA early stopping
    grace_period: int = 1
    reduction_factor: int = 3
    seed: int = 0
    device: str = "auto"
    address: str | None = None
    storage_path: str | None = None
    name: str | None = None
    verbose: int = 1

    def validate(self) -> "HpoSettings":
        if self.algo not in ALGORITHMS:
            raise ConfigError("algo", self.algo, ALGORITHMS)
        if self.metric not in METRIC_CHOICES:
            raise ConfigError("metric", self.metric, METRIC_CHOICES)
        if self.ratio_schedule not in RATIO_SCHEDULES:
            raise ConfigError("ratio_schedule", self.ratio_schedule, RATIO_SCHEDULES)
        if self.early_stop not in EARLY_STOPPING:
            raise ConfigError("early_stop", self.early_stop, EARLY_STOPPING)
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
        for name in ("time_budget_s", "data_passes_budget"):
            v = getattr(self, name)
            if v is not None and not (isinstance(v, (int, float)) and v > 0):
                raise ConfigError(name, v, "a number > 0")
        if self.space.has_grid and self.algo in ("tpe", "bohb"):
            raise ConfigError("algo", self.algo, "random, hyperband or asha for a space with grid parameters")
        if self.address is not None and not (self.address == "auto" or self.address.startswith(("ray://", "localhost", "127.")) or ":" in self.address):
            raise ConfigError("address", self.address, "'auto', ray://HOST:PORT or HOST:PORT")
        self.trial_config()  # the fixed settings plus the run's flags must make a valid TrainConfig
        return self

    @property
    def epochs(self) -> int:
        return self.max_epochs or int(self.space.fixed.get("epochs", TrainConfig.epochs))

    def run_fields(self) -> dict[str, Any]:
        """The fields every trial takes from the command rather than the space."""
        return {"ratio": self.ratio, "ratio_schedule": self.ratio_schedule, "metric": self.metric,
                "seed": self.seed, "device": self.device, "epochs": self.epochs}

    def trial_config(self) -> TrainConfig:
        first = {p.name: (p.low if p.low is not None else p.values[0]) for p in self.space.params}
        return self.space.train_config(first, **self.run_fields())

    def budget(self) -> dict[str, Any]:
        """Nominal (full-data) and rescaled budgets: at ratio r < 1 every budget becomes r times."""
        scale = self.ratio if self.ratio < 1.0 else 1.0
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


def ensure_ray(address: str | None = None, num_cpus: int | None = None) -> None:
    """Start (or connect to) Ray once per process."""
    import ray

    if ray.is_initialized():
        return
    os.environ.setdefault("RAY_CHDIR_TO_TRIAL_DIR", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")
    kwargs: dict[str, Any] = {"include_dashboard": False, "logging_level": "ERROR", "log_to_driver": False}
    if address:
        ray.init(address=address, **kwargs)
    else:
        ray.init(num_cpus=num_cpus or os.cpu_count(), **kwargs)


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
    if s.algo == "bohb":
        from ray.tune.search.bohb import TuneBOHB

        search = TuneBOHB(space=s.space.to_configspace(s.seed), seed=s.seed, **target)
        scheduler = HyperBandForBOHB(time_attr="training_iteration", max_t=epochs,
                                     reduction_factor=s.reduction_factor, **target)
        return search, scheduler, {}
    if s.algo == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        search = OptunaSearch(space=s.space.to_tune(), sampler=optuna.samplers.TPESampler(seed=s.seed), **target)
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


def run_hpo(settings: HpoSettings, resume: str | None = None) -> HpoResult:
    """Run (or resume) one experiment and collect one row per trial."""
    from ray import tune

    s = settings.validate()
    s.space = _absolute_data_dir(s.space)
    ensure_ray(s.address)
    budget = s.budget()
    trainable = tune.with_resources(
        tune.with_parameters(proxy_trial, space=s.space, run=s.run_fields(), threads=max(1, int(s.cpus_per_trial))),
        {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})
    start = time.perf_counter()
    if resume:
        if not tune.Tuner.can_restore(resume):
            raise ConfigError("resume", resume, "a Ray Tune experiment folder written by 'asp-tune hpo'")
        tuner = tune.Tuner.restore(resume, trainable, resume_unfinished=True, resume_errored=False,
                                   restart_errored=False)
    else:
        search, scheduler, param_space = build_search(s)
        stop = DataPassBudget(budget["data_passes"]).stopper if budget["data_passes"] else None
        storage = str(Path(s.storage_path or Path.home() / "ray_results").expanduser().resolve())
        tuner = tune.Tuner(
            trainable,
            param_space=param_space,
            tune_config=tune.TuneConfig(
                search_alg=search, scheduler=scheduler,
                num_samples=s.num_samples, max_concurrent_trials=s.max_concurrent,
                time_budget_s=budget["time_budget_s"], reuse_actors=False),
            run_config=tune.RunConfig(
                name=s.name or f"asp-{s.space.name}-{s.algo}-r{s.ratio}-{time.strftime('%Y%m%d-%H%M%S')}",
                storage_path=storage, stop=stop, verbose=s.verbose,
                failure_config=tune.FailureConfig(max_failures=0),
                checkpoint_config=tune.CheckpointConfig(num_to_keep=2)),
        )
    grid = tuner.fit()
    wall = time.perf_counter() - start
    trials, histories = collect_trials(grid, s)
    ok = trials[trials["status"] != "ERROR"]
    best = ok.loc[ok["best_val_accuracy"].idxmax()] if len(ok) and ok["best_val_accuracy"].notna().any() else None
    summary = {
        "algo": s.algo, "ratio": s.ratio, "ratio_schedule": s.ratio_schedule, "metric": s.metric,
        "space": s.space.name, "seed": s.seed,
        "best_config": None if best is None else {p.name: _plain(best[f"config/{p.name}"]) for p in s.space.params},
        "best_val_accuracy": None if best is None else float(best["best_val_accuracy"]),
        "best_trial_id": None if best is None else best["trial_id"],
        "num_trials": int(len(trials)),
        "num_failed": int((trials["status"] == "ERROR").sum()),
        "wall_time_s": wall,
        "data_passes_total": float(trials["data_passes"].fillna(0).sum()),
        "epochs_total": int(trials["epochs"].fillna(0).sum()),
        "budget": budget,
        "experiment_path": grid.experiment_path,
        "fixed": s.space.fixed,
    }
    return HpoResult(trials, summary, histories)


def _plain(value: Any) -> Any:
    if hasattr(value, "item"):
        return value.item()
    return value


def collect_trials(grid, s: HpoSettings) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    rows, histories = [], {}
    for result in grid:
        hist = result.metrics_dataframe if result.metrics_dataframe is not None else pd.DataFrame()
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or (Path(result.path).name if result.path else f"trial{len(rows)}")
        row: dict[str, Any] = {"trial_id": trial_id}
        for p in s.space.params:
            row[f"config/{p.name}"] = _plain(result.config.get(p.name)) if result.config else None
        has = len(hist) and METRIC in hist
        epochs = int(hist["epoch"].max()) if has else 0
        row.update({
            "best_val_accuracy": float(hist[METRIC].max()) if has else math.nan,
            "final_val_accuracy": float(hist[METRIC].iloc[-1]) if has else math.nan,
            "epochs": epochs,
            "data_passes": float(hist["data_passes"].iloc[-1]) if has else 0.0,
            "seconds": float(hist["train_seconds_total"].iloc[-1]) if has else 0.0,
            "status": "ERROR" if result.error else ("TERMINATED" if epochs >= s.epochs else "STOPPED"),
            "error": "" if not result.error else f"{type(result.error).__name__}: {str(result.error).strip().splitlines()[-1][:300]}",
        })
        rows.append(row)
        if has:
            histories[trial_id] = hist[[c for c in hist.columns if c in ("epoch", METRIC, "data_passes", "train_loss")]]
    return pd.DataFrame(rows), histories


def settings_dict(s: HpoSettings) -> dict[str, Any]:
    d = asdict(s)
    d["space"] = {"name": s.space.name, "fixed": s.space.fixed, "params": [asdict(p) for p in s.space.params]}
    return d
