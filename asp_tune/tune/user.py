"""Your own Ray Tune function trainable on proxy data: :func:`search` runs it, :func:`proxy_data` and
:func:`report` are the two calls inside it.

::

    def trainable(config):
        proxy = asp_tune.tune.proxy_data(config, train_set, epochs=E)   # ratio and strategy from the search
        model = ...; optimizer = ...
        if proxy.restored:                                              # a paused or restarted trial
            model.load_state_dict(proxy.restored["model"])
        for epoch in range(proxy.epoch + 1, E):
            proxy.set_epoch(epoch)
            for idx, (x, y) in proxy.loader(batch_size=128): ...        # the loop API
            asp_tune.tune.report({"val_accuracy": validate(model)}, proxy, model=model.state_dict())

    result = asp_tune.tune.search(trainable, {"lr": tune.loguniform(1e-4, 1e-1)}, ratio=0.3, epochs=E,
                                  scheduler=ASHAScheduler(...), search_alg=OptunaSearch(...))

asp_tune puts the ratio, the strategy and the seed in each trial's config (``config["asp_tune"]``),
rescales the budgets by the ratio, and collects ``trials.csv`` and ``summary.json`` as for its own
trainable; :func:`compare_trainable` sets the search beside the same search on full data, retrains each pick on
full data and reports the rank agreement.
"""

from __future__ import annotations

import math
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from asp_tune.errors import ConfigError, RunFailed
from asp_tune.imports import add_search_paths, by_reference, import_object, search_paths, user_modules
from asp_tune.proxy_settings import ProxySettings

#: The trial-config key under which asp_tune passes a trial its proxy settings.
TRIAL_KEY = "asp_tune"
CHECKPOINT_FILE = "proxy_trial.pt"
SCHEDULERS = ("asha", "hyperband", "hypertune", "fifo")
SEARCHERS = ("random", "tpe")


def proxy_data(config: dict[str, Any], dataset, epochs: int, **settings: Any):
    """The trial's :class:`~asp_tune.loop.ProxyData` over ``dataset``, with the ratio, strategy and seed
    the search gave it (``settings`` override them), restored from the trial's checkpoint when Ray
    resumes it: ``proxy.epoch`` is then the last epoch done and ``proxy.restored`` holds what
    :func:`report` saved beside the proxy state (the model's and optimiser's, say); else ``{}``."""
    import torch

    from asp_tune.loop import ProxyData

    given = dict(config.get(TRIAL_KEY) or {})
    seed = given.pop("seed", 0)
    proxy = ProxyData(dataset, epochs, seed=seed, **{**given, **settings})
    proxy.restored = {}
    try:
        from ray import tune

        checkpoint = tune.get_checkpoint()
    except Exception:  # noqa: BLE001 - outside a Ray trial: a fresh run
        checkpoint = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
        proxy.load_state_dict(state.pop("proxy"))
        proxy.restored = state
    return proxy


def report(metrics: dict[str, Any], proxy, **state: Any) -> None:
    """One ``ray.tune.report`` for the epoch just trained: ``metrics`` plus the proxy's own (``epoch``,
    ``data_passes``, ``proxy_ratio``, ``metric_used``), with a checkpoint of the proxy state and of
    ``state`` (tensors and plain values: ``model=model.state_dict()``, ...), so a paused, stopped or
    restarted trial continues exactly (:func:`proxy_data` restores it)."""
    import torch
    from ray import tune

    described = proxy.describe()
    plan = proxy.plan
    extra = {"epoch": proxy.epoch + 1, "data_passes": described["data_passes"],
             "proxy_ratio": plan.count / described["num_samples"] if plan is not None else 1.0,
             "metric_used": plan.metric if plan is not None else ""}
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"proxy": proxy.state_dict(), **state}, Path(folder) / CHECKPOINT_FILE)
        tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(folder))


@dataclass
class SearchResult:
    trials: pd.DataFrame
    summary: dict[str, Any]


def _scheduler(scheduler: Any, epochs: int, reduction_factor: int):
    from ray.tune.schedulers import ASHAScheduler, FIFOScheduler, HyperBandScheduler, TrialScheduler

    if isinstance(scheduler, TrialScheduler):
        return scheduler
    if scheduler == "asha":
        return ASHAScheduler(time_attr="training_iteration", max_t=epochs, grace_period=1,
                             reduction_factor=reduction_factor)
    if scheduler == "hyperband":
        return HyperBandScheduler(time_attr="training_iteration", max_t=epochs, reduction_factor=reduction_factor)
    if scheduler in (None, "fifo"):
        return FIFOScheduler()
    raise ConfigError("scheduler", scheduler, f"one of {', '.join(SCHEDULERS)} or a Ray Tune TrialScheduler")


def _searcher(search_alg: Any, seed: int):
    from ray.tune.search import BasicVariantGenerator, Searcher, SearchAlgorithm

    if isinstance(search_alg, (Searcher, SearchAlgorithm)):
        return search_alg
    if search_alg in (None, "random"):
        return BasicVariantGenerator(random_state=seed)
    if search_alg == "tpe":
        import optuna
        from ray.tune.search.optuna import OptunaSearch

        return OptunaSearch(sampler=optuna.samplers.TPESampler(seed=seed))
    raise ConfigError("search_alg", search_alg, f"one of {', '.join(SEARCHERS)} or a Ray Tune Searcher")


def _has_own_target(obj: Any) -> bool:
    return getattr(obj, "metric", None) is not None or getattr(obj, "_metric", None) is not None


def search(trainable: Callable[[dict], None], param_space: dict[str, Any], *, epochs: int, ratio: float = 0.3,
           strategy: str = "auto", metric: str = "val_accuracy", mode: str = "max", scheduler: Any = "asha",
           search_alg: Any = None, num_samples: int = 8, max_concurrent: int = 2, reduction_factor: int = 3,
           time_budget_s: float | None = None, data_passes_budget: float | None = None, seed: int = 0,
           cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, storage_path: str | None = None,
           name: str | None = None, out: str | Path | None = None, verbose: int = 0,
           **proxy_settings: Any) -> SearchResult:
    """Run the user's function ``trainable`` over ``param_space`` (Ray Tune domains) on proxy data.

    Each trial's config gets ``config["asp_tune"]`` (``ratio``, ``metric`` = ``strategy``, ``seed`` and
    any ``proxy_settings``); under an early-stopping scheduler the first epoch is not a full pass
    unless ``first_epoch_full=True``. ``scheduler``: ``asha``, ``hyperband``, ``hypertune`` (with its own
    searcher: :mod:`asp_tune.tune.hypertune`), ``fifo`` or any Ray Tune ``TrialScheduler``;
    ``search_alg``: ``random``, ``tpe`` or any ``Searcher``. Budgets are given as
    for full data and become ``ratio`` x that. ``out``: a results folder for ``trials.csv`` and
    ``summary.json`` (written only when the search succeeds)."""
    from ray import tune

    from asp_tune.tune.runner import DataPassBudget, ensure_ray, fit_interruptibly, make_tuner
    from asp_tune.tune.storage import storage_root

    if TRIAL_KEY in param_space:
        raise ConfigError("param_space", TRIAL_KEY, "a space without the key asp_tune (asp_tune fills it)")
    if mode not in ("max", "min"):
        raise ConfigError("mode", mode, ("max", "min"))
    if not (isinstance(epochs, int) and epochs >= 1):
        raise ConfigError("epochs", epochs, "an integer >= 1")
    early = not isinstance(scheduler, str) or scheduler in ("asha", "hyperband", "hypertune")
    if scheduler == "hypertune" and search_alg not in (None, "random"):
        raise ConfigError("search_alg", search_alg, "none with scheduler 'hypertune' (it proposes its own "
                                                    "configurations from its multi-fidelity surrogate)")
    given = {"ratio": ratio, "metric": strategy, **proxy_settings}
    if early and ratio < 1.0:
        given.setdefault("first_epoch_full", False)
    settings = ProxySettings(**given)
    settings.check_proxy()  # named errors before anything starts
    shipped = by_reference(trainable)  # imported in the worker after its folder is on the path
    modules = user_modules([shipped])
    ensure_ray(modules=modules)
    if scheduler == "hypertune":
        from asp_tune.tune.hypertune import hypertune

        sched, searcher = hypertune(epochs, num_samples=num_samples, param_space=param_space,
                                    max_concurrent=max_concurrent,
                                    reduction_factor=reduction_factor, metric=metric, mode=mode, seed=seed)
    else:
        sched, searcher = _scheduler(scheduler, epochs, reduction_factor), _searcher(search_alg, seed)
    target = {} if _has_own_target(sched) or _has_own_target(searcher) else {"metric": metric, "mode": mode}
    budget = {"time_budget_s": None if time_budget_s is None else time_budget_s * ratio,
              "data_passes": None if data_passes_budget is None else data_passes_budget * ratio,
              "nominal_time_budget_s": time_budget_s, "nominal_data_passes": data_passes_budget}
    space = {**param_space, TRIAL_KEY: {**{k: v for k, v in vars(settings).items() if k in given}, "seed": seed}}
    run_name = name or (f"asp-user-{getattr(trainable, '__name__', 'trainable')}-r{ratio}-"
                        f"{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}")
    storage = storage_root(storage_path)
    runner = tune.with_parameters(_user_trial, user_trainable=shipped, search_paths=search_paths(modules))
    tuner = make_tuner(tune.with_resources(runner, {"cpu": cpus_per_trial, "gpu": gpus_per_trial}), space,
                       name=run_name, storage=storage, num_samples=num_samples,
                       max_concurrent=None if scheduler == "hypertune" else max_concurrent,
                       verbose=verbose, max_failures=0, progress=(num_samples, f"search r={ratio}"),
                       search_alg=searcher, scheduler=sched, time_budget_s=budget["time_budget_s"],
                       stop=DataPassBudget(budget["data_passes"]).stopper if budget["data_passes"] else None,
                       tune_config_extra=target)
    start = time.perf_counter()
    grid = fit_interruptibly(tuner, f"{storage}/{run_name}")
    wall = time.perf_counter() - start
    names = [k for k in param_space]
    trials = _collect(grid, names, metric, mode)
    if len(trials) and (trials["status"] == "ERROR").all():
        raise RunFailed(f"all {len(trials)} trials failed; the first: {trials['error'].iloc[0]}")
    ok = trials[(trials["status"] != "ERROR") & trials["best_score"].notna()]
    best = None if not len(ok) else ok.loc[ok["best_score"].idxmax() if mode == "max" else ok["best_score"].idxmin()]
    summary = {
        "algo": f"{type(sched).__name__} + {type(searcher).__name__}", "ratio": ratio, "metric": settings.resolved(
            early and ratio < 1.0 and not settings.first_epoch_full).metric,
        "score_metric": metric, "mode": mode, "seed": seed,
        "best_config": None if best is None else {n: best[f"config/{n}"] for n in names},
        "best_score": None if best is None else float(best["best_score"]),
        "best_trial_id": None if best is None else best["trial_id"],
        "num_trials": int(len(trials)), "num_failed": int((trials["status"] == "ERROR").sum()),
        "wall_time_s": wall, "data_passes_total": float(trials["data_passes"].fillna(0).sum()),
        "epochs_total": int(trials["epochs"].fillna(0).sum()), "first_epoch_full": settings.first_epoch_full,
        "budget": budget, "experiment_path": grid.experiment_path,
    }
    if metric == "val_accuracy":
        summary["best_val_accuracy"] = summary["best_score"]
    result = SearchResult(trials, summary)
    if out is not None:
        _write(out, result)
    return result


def _user_trial(config: dict[str, Any], *, user_trainable: Any, search_paths: list[str]) -> None:
    """Run the user's trainable in a Ray worker: its module's folder on the path first (the same
    machine; a cluster gets the module itself through ``py_modules``), then the function."""
    add_search_paths(search_paths)
    fn = import_object(user_trainable, "trainable") if isinstance(user_trainable, str) else user_trainable
    fn(config)


def _collect(grid, names: list[str], metric: str, mode: str) -> pd.DataFrame:
    from asp_tune.tune.runner import reported_epochs

    rows = []
    for result in grid:
        hist = reported_epochs(result.metrics_dataframe)
        scores = hist[metric].dropna() if metric in hist else pd.Series(dtype=float)
        config = result.config or {}
        row = {"trial_id": (result.metrics or {}).get("trial_id", Path(result.path).name if result.path else ""),
               **{f"config/{n}": _plain(config.get(n)) for n in names},
               "best_score": (scores.max() if mode == "max" else scores.min()) if len(scores) else math.nan,
               "final_score": scores.iloc[-1] if len(scores) else math.nan,
               "epochs": int(hist["epoch"].max()) if "epoch" in hist and len(hist) else 0,
               "data_passes": float(hist["data_passes"].iloc[-1]) if "data_passes" in hist and len(hist) else 0.0,
               "status": "ERROR" if result.error else "TERMINATED",
               "error": "" if not result.error else _error_line(result.error)}
        rows.append(row)
    return pd.DataFrame(rows)


def _plain(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value


def _error_line(error: BaseException) -> str:
    from asp_tune.tune.runner import error_line

    return error_line(error)


def _write(out: str | Path, result: SearchResult, extra: dict[str, pd.DataFrame] | None = None) -> Path:
    from asp_tune.run_dir import RunDirectory

    with RunDirectory(str(out)) as folder:
        folder.write_table("trials.csv", result.trials)
        for name, table in (extra or {}).items():
            folder.write_table(name, table)
        return folder.commit(result.summary)


def compare_trainable(trainable: Callable[[dict], None], param_space: dict[str, Any], *, epochs: int,
            ratios: tuple[float, ...] = (1.0, 0.3), retrain_metric: str | None = None, out: str | Path | None = None,
            **search_kwargs: Any) -> dict[str, Any]:
    """The same search at ratio 1.0 (full data) and each proxy ratio, each pick retrained on full data
    (the trainable run once at ratio 1 with the pick's config; its last ``retrain_metric``, default the
    search metric, is the pick's score), and the rank agreement between each proxy search and the
    full-data one on the configurations both evaluated (:func:`asp_tune.quality.proxy_quality`)."""
    from ray.tune.search import BasicVariantGenerator

    metric = search_kwargs.get("metric", "val_accuracy")
    runs = {r: search(trainable, param_space, epochs=epochs, ratio=r,
                      **{**search_kwargs, **({"strategy": "none"} if r == 1.0 else {})})
            for r in sorted(set(ratios) | {1.0}, reverse=True)}
    names = list(param_space)
    rows = []
    for r, res in runs.items():
        pick = res.summary["best_config"]
        retrained = math.nan
        if pick is not None:
            kept = {k: v for k, v in search_kwargs.items()
                    if k not in ("scheduler", "search_alg", "num_samples", "strategy", "metric")}
            again = search(trainable, {n: pick[n] for n in names}, epochs=epochs, ratio=1.0, strategy="none",
                           scheduler="fifo", search_alg=BasicVariantGenerator(), num_samples=1,
                           metric=retrain_metric or metric, **kept)
            retrained = float(again.trials["final_score"].iloc[0])
        rows.append({"ratio": r, "wall_time_s": res.summary["wall_time_s"],
                     "data_passes": res.summary["data_passes_total"], "best_score": res.summary["best_score"],
                     "retrained_score": retrained, **_agreement(res, runs[1.0], names)})
    table = pd.DataFrame(rows)
    base = table[table["ratio"] == 1.0].iloc[0]
    table["speedup_wall"] = base["wall_time_s"] / table["wall_time_s"]
    table["speedup_passes"] = base["data_passes"] / table["data_passes"].clip(lower=1e-9)
    summary = {"ratios": sorted(runs), "metric": metric, "rows": table.to_dict("records"),
               "runs": {str(r): res.summary for r, res in runs.items()}}
    if out is not None:
        from asp_tune.run_dir import RunDirectory

        with RunDirectory(str(out)) as folder:
            folder.write_table("comparison.csv", table)
            for r, res in runs.items():
                folder.write_table(f"trials_r{r}.csv", res.trials)
            folder.commit(summary)
    return {"table": table, "summary": summary, "runs": runs}


def _agreement(proxy: SearchResult, full: SearchResult, names: list[str]) -> dict[str, Any]:
    """The proxy-quality measures of ``proxy``'s scores against ``full``'s on the configurations both
    evaluated (:func:`asp_tune.quality.proxy_quality`), with their number."""
    from asp_tune.quality import proxy_quality

    key = lambda row: tuple(str(row[f"config/{n}"]) for n in names)  # noqa: E731
    reference = {key(row): row["best_score"] for _, row in full.trials.iterrows() if row["status"] != "ERROR"}
    pairs = [(row["best_score"], reference[key(row)]) for _, row in proxy.trials.iterrows()
             if row["status"] != "ERROR" and key(row) in reference]
    quality = proxy_quality([p for p, _ in pairs], [f for _, f in pairs]) if len(pairs) >= 2 else {}
    return {"pairs": len(pairs), **quality}


def correlate_trainable(trainable: Callable[[dict], None], param_space: dict[str, Any], *, epochs: int,
                        ratios: tuple[float, ...] = (0.1, 0.3), strategies: tuple[str, ...] = ("random", "loss"),
                        out: str | Path | None = None, **search_kwargs: Any) -> pd.DataFrame:
    """Every configuration of ``param_space`` (use ``tune.grid_search``; once, unless ``num_samples``) trained to
    the end on full data
    and in each (ratio, strategy) cell, without early stopping; one row per cell with the rank
    correlations against full data (Kendall tau, Pearson, Spearman, r², top-1 regret) and its cost,
    as ``asp-tune correlate`` gives for the built-in trainable."""
    kwargs = {"num_samples": 1, **{k: v for k, v in search_kwargs.items() if k not in ("scheduler", "strategy", "ratio")}}
    full = search(trainable, param_space, epochs=epochs, ratio=1.0, strategy="none", scheduler="fifo", **kwargs)
    rows = []
    for ratio in ratios:
        for strategy in strategies:
            cell = search(trainable, param_space, epochs=epochs, ratio=ratio, strategy=strategy, scheduler="fifo",
                          **kwargs)
            rows.append({"ratio": ratio, "strategy": cell.summary["metric"], "asked": strategy,
                         "wall_time_s": cell.summary["wall_time_s"], "data_passes": cell.summary["data_passes_total"],
                         "relative_wall": cell.summary["wall_time_s"] / max(full.summary["wall_time_s"], 1e-9),
                         **_agreement(cell, full, list(param_space))})
    table = pd.DataFrame(rows)
    if out is not None:
        from asp_tune.run_dir import RunDirectory

        with RunDirectory(str(out)) as folder:
            folder.write_table("correlation.csv", table)
            folder.write_table("trials_full.csv", full.trials)
            folder.commit({"ratios": list(ratios), "strategies": list(strategies), "rows": table.to_dict("records"),
                           "full": full.summary})
    return table
