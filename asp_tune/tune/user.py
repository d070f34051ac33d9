"""Your own Ray Tune function trainable on proxy data: :func:`search` runs it, :func:`proxy_data` and
:func:`report` are the two calls inside it.

::

    def trainable(config):
        proxy = asp_tune.tune.proxy_data(config, train_set, epochs=E)   # ratio and strategy from the search
        model = ...; optimizer = ...
        if proxy.restored:                                              # a paused or restarted trial
            model.load_state_dict(proxy.restored["model"])
        for epoch in range(proxy.next_epoch, E):
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

import inspect
import math
import tempfile
import time
from pathlib import Path
from typing import Any, Callable

import pandas as pd

from asp_tune.constraints import check_value
from asp_tune.errors import ConfigError, RunInterrupted
from asp_tune.imports import add_search_paths, by_reference, import_object, search_paths, user_modules
from asp_tune.proxy_settings import ProxySettings, search_proxy_fields
from asp_tune.tune.results import search_into
from asp_tune.tune.algorithms import SAMPLED_TRIALS
from asp_tune.tune.run import SearchJob, SearchResult, experiment_name, experiments_folder, run_search
from asp_tune.tune.settings import SEARCH_RATIO, HpoSettings, check_audit, data_scale, rescaled_budget

#: The trial-config key under which asp_tune passes a trial its proxy settings.
TRIAL_KEY = "asp_tune"
CHECKPOINT_FILE = "proxy_trial.pt"
#: The checkpoint's entry for the seconds the user's trainable ran before it (its parts before a restart).
SECONDS_KEY = "asp_tune_seconds"
#: When this worker's running trial called the user's trainable (None: no trial of search() runs here).
_CALLED_AT: float | None = None
#: What a resumed search must share with the one it resumes.
RESUME_KEYS = ("trainable", "param_space", "ratio", "strategy", "epochs", "num_samples", "seed", "metric", "mode",
               "decide", "audit", "proxy_settings", "max_concurrent")


def proxy_data(config: dict[str, Any], dataset, epochs: int, **settings: Any):
    """The trial's :class:`~asp_tune.loop.ProxyData` over ``dataset``, with the ratio, strategy and seed
    the search gave it (``settings`` add others; one the search set too must agree with it: a full-data baseline or
    a control of ``compare_trainable`` trains as its search says), restored from the trial's checkpoint when Ray
    resumes it: ``proxy.next_epoch`` is then the epoch to go on with and ``proxy.restored`` holds what
    :func:`report` saved beside the proxy state (the model's and optimiser's, say); else ``{}``."""
    import torch

    from asp_tune.loop import ProxyData

    try:
        from ray import tune

        checkpoint = tune.get_checkpoint()
    except Exception:  # noqa: BLE001 - outside a Ray trial: a fresh run
        checkpoint = None
    state = None
    if checkpoint is not None:
        with checkpoint.as_directory() as folder:
            state = torch.load(Path(folder) / CHECKPOINT_FILE, map_location="cpu", weights_only=True)
    from asp_tune.strategies import SubsetStrategy

    if isinstance(settings.get("strategy"), SubsetStrategy):
        raise ConfigError("strategy", type(settings["strategy"]).__name__,
                          "a strategy's name in a search (register yours with asp_tune.register_strategy and give "
                          "search(strategy=NAME)): the search sets each trial's ratio, its schedule to full data and "
                          "its first epoch, which an object keeps as it was built")
    trial = dict((state or {}).pop(TRIAL_KEY, None) or config.get(TRIAL_KEY) or {})  # a restart keeps its ratio
    given = dict(trial)
    own = {}  # the settings the search left to the trainable
    for name, value in settings.items():
        key = "metric" if name == "strategy" else name
        if key not in given:
            own[key] = value
        elif value != given[key] and not (key == "metric" and value == "auto"):  # auto: the search's choice
            # compare's full-data baseline, controls and retrains train as their search says
            raise ConfigError(name, value, f"left out, or {given[key]!r}: the search set it for this trial, and its "
                                           "full-data runs and controls train as it says (set it in search(...))")
    seed = given.pop("seed", 0)
    proxy = ProxyData(dataset, epochs, seed=seed, **{**given, **own})
    proxy.trial_settings, proxy.restored, proxy.seconds = trial, {}, {"train": 0.0, "reports": 0.0}
    if state is not None:
        proxy.load_state_dict(state.pop("proxy"))
        proxy.seconds = {k: float(v) for k, v in dict(state.pop(SECONDS_KEY, None) or proxy.seconds).items()}
        proxy.restored = state
    proxy.seconds["since"] = _CALLED_AT  # this part of the trial's training started then (None: no search())
    return proxy


def report(metrics: dict[str, Any], proxy, **state: Any) -> None:
    """One ``ray.tune.report`` for the epoch just trained: ``metrics`` plus the proxy's own (``epoch``,
    ``data_passes``, ``proxy_ratio``, ``metric_used``), with a checkpoint of the proxy state and of
    ``state`` (tensors and plain values: ``model=model.state_dict()``, ...), so a paused, stopped or
    restarted trial continues exactly (:func:`proxy_data` restores it). Reporting the constant predictor's
    score as ``val_constant`` (chance accuracy) lets the search tell proxy trials that learnt nothing.
    In a trial of :func:`search`, ``train_seconds_total`` is the seconds the trainable has run but for its
    reports (its parts before a restart included; ``report_seconds_total``: the reports' saving of their
    checkpoints; their waiting for Ray's controller is neither, as in Ray's ``time_total_s``): the rest of
    Ray's time in the trial is its start-up (imports, Ray's worker)."""
    import torch
    from ray import tune

    from asp_tune.tune.trainable import _assigned_gpus, _node_id

    entered = time.perf_counter()

    described = proxy.describe()
    plan = proxy.plan
    trial = getattr(proxy, "trial_settings", {})
    extra = {"epoch": proxy.epoch + 1, "data_passes": described["data_passes"],
             "proxy_ratio": plan.count / described["num_samples"] if plan is not None else 1.0,
             "metric_used": plan.metric if plan is not None else "", "start_ratio": trial.get("ratio", 1.0),
             "node_id": _node_id(), "assigned_gpus": ",".join(_assigned_gpus())}  # as a built-in trial records
    seconds = getattr(proxy, "seconds", {})
    timed = {}
    if seconds.get("since") is not None:  # reports so far: all their time is not training, their saving is theirs
        train = entered - seconds["since"] - seconds.get("inside_here", 0.0)
        extra.update(train_seconds_total=seconds["train"] + train, report_seconds_total=seconds["reports"]
                     + seconds.get("saving_here", 0.0))
        timed[SECONDS_KEY] = {"train": extra["train_seconds_total"], "reports": extra["report_seconds_total"]}
    with tempfile.TemporaryDirectory() as folder:
        torch.save({"proxy": proxy.state_dict(), TRIAL_KEY: trial, **state, **timed}, Path(folder) / CHECKPOINT_FILE)
        saved = time.perf_counter()
        tune.report({**metrics, **extra}, checkpoint=tune.Checkpoint.from_directory(folder))  # and waits for Ray
    if seconds.get("since") is not None:
        seconds["saving_here"] = seconds.get("saving_here", 0.0) + saved - entered
        seconds["inside_here"] = seconds.get("inside_here", 0.0) + time.perf_counter() - entered


def _check_arguments(trainable: Any, param_space: Any, epochs: Any, mode: str, knobs: dict[str, Any]) -> None:
    """The API's edge: every argument checked by the declaration the command line's flag uses."""
    if isinstance(trainable, str):
        trainable = import_object(trainable, "trainable")  # named now, not in every trial
    if not callable(trainable):
        raise ConfigError("trainable", trainable, "a function trainable(config) (or its import path)")
    if not isinstance(param_space, dict):
        raise ConfigError("param_space", type(param_space).__name__, "a mapping of parameter names to Ray Tune "
                                                                   "domains or values")
    if TRIAL_KEY in param_space:
        raise ConfigError("param_space", TRIAL_KEY, "a space without the key asp_tune (asp_tune fills it)")
    if mode not in ("max", "min"):
        raise ConfigError("mode", mode, ("max", "min"))
    if not isinstance(epochs, int) or isinstance(epochs, bool) or epochs < 1:  # the flag's "none" is not the API's
        raise ConfigError("epochs", epochs, "an integer >= 1")
    check_value(HpoSettings, "max_epochs", epochs, "epochs")
    for name, value in knobs.items():
        check_value(HpoSettings, name, value)
    check_audit(knobs.get("decide", "full"), knobs.get("audit"), "decide='proxy'")


def grid_size(param_space: dict[str, Any]) -> int:
    """How many configurations one sample of ``param_space`` expands to (the product of its grid searches)."""
    return math.prod(len(v["grid_search"]) for v in param_space.values()
                     if isinstance(v, dict) and isinstance(v.get("grid_search"), (list, tuple)))


def trials_of_space(param_space: dict[str, Any], num_samples: int | None) -> int:
    """``num_samples`` where given; else :data:`SAMPLED_TRIALS`, or 1 where ``param_space`` draws nothing (only
    grid searches and constants): every trial is seeded with the search's one seed, so a repeat of the grid
    trains each configuration again alike."""
    from ray.tune.search.sample import Domain

    if num_samples is not None:
        return num_samples

    def draws(value: Any) -> bool:
        if isinstance(value, Domain):
            return True
        if isinstance(value, dict) and "grid_search" not in value:
            return any(draws(v) for v in value.values())
        return False

    return SAMPLED_TRIALS if draws(param_space) else 1


def described_space(value: Any) -> Any:
    """``param_space`` as plain data that two equal spaces share in any process: Ray Tune's sampling domains by
    their bounds and sampler (``float[0.001, 0.1] LogUniform``), choices by their values, numbers, strings and
    containers as given (sets sorted), any other object (an ``ObjectRef`` put again for a resume) by its type."""
    from ray.tune.search.sample import Categorical, Domain, Function

    if isinstance(value, dict):
        return {str(k): described_space(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [described_space(v) for v in value]
    if isinstance(value, (set, frozenset)):  # in no order a process keeps
        return sorted((described_space(v) for v in value), key=repr)
    if hasattr(value, "item") and getattr(value, "ndim", None) == 0:  # a NumPy or torch scalar
        return described_space(value.item())
    if isinstance(value, Categorical):
        return {"choice": described_space(list(value.categories))}
    if isinstance(value, Function):
        return f"sample_from({getattr(value.func, '__qualname__', type(value.func).__name__)})"
    if isinstance(value, Domain):
        return f"{type(value).__name__.lower()}[{value.lower}, {value.upper}] {_sampler_text(value.sampler)}"
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    return f"{type(value).__module__}.{type(value).__qualname__}"  # an object (an ObjectRef, a dataset): its kind


def _sampler_text(sampler: Any) -> str:
    inner = getattr(sampler, "sampler", None)
    own = ", ".join(f"{k}={v}" for k, v in sorted(vars(sampler).items()) if k != "sampler")
    return (type(sampler).__name__.lstrip("_") + (f"({own})" if own else "")
            + (f" of {_sampler_text(inner)}" if inner is not None else ""))


def user_job(trainable: Callable[[dict], None], param_space: dict[str, Any], *, epochs: int, ratio: float,
             strategy: str, metric: str, mode: str, scheduler: Any, search_alg: Any, num_samples: int,
             max_concurrent: int, reduction_factor: int, grace_period: int, time_budget_s: float | None,
             data_passes_budget: float | None, seed: int, cpus_per_trial: float, gpus_per_trial: float,
             storage_path: str | None, address: str | None, name: str | None, verbose: int,
             proxy_settings: dict[str, Any], decide: str = "full", audit: int | None = None) -> SearchJob:
    """The :class:`~asp_tune.tune.run.SearchJob` of a user's trainable (what :func:`search` runs)."""
    from asp_tune.pack import PackChoice
    from asp_tune.tune.fulldata import full_data_top_rung, no_full_data_top_rung
    from asp_tune.tune.algorithms import Context, check_grace_period, compose, plain_fifo

    _check_arguments(trainable, param_space, epochs, mode, {
        "ratio": ratio, "num_samples": num_samples, "max_concurrent": max_concurrent, "grace_period": grace_period,
        "reduction_factor": reduction_factor, "time_budget_s": time_budget_s,
        "data_passes_budget": data_passes_budget, "seed": seed, "cpus_per_trial": cpus_per_trial,
        "gpus_per_trial": gpus_per_trial, "address": address, "verbose": verbose, "decide": decide, "audit": audit})
    ctx = Context(epochs, num_samples=num_samples, max_concurrent=max_concurrent, grace_period=grace_period,
                  reduction_factor=reduction_factor, seed=seed, metric=metric, mode=mode, name=name)
    composed, algorithm = compose(scheduler, search_alg, ctx)  # names checked before anything is built
    early = algorithm.multi_fidelity or not plain_fifo(composed.scheduler)  # any scheduler but FIFO's may stop trials
    proxy_fields = set(vars(ProxySettings())) - {"ratio", "metric"}  # search's own ratio and strategy
    unknown = sorted(set(proxy_settings) - proxy_fields)
    if unknown:
        own = [n for n, p in inspect.signature(search).parameters.items() if p.kind is inspect.Parameter.KEYWORD_ONLY]
        raise ConfigError("argument", unknown[0], f"one of search()'s own ({', '.join(own)}) or a proxy setting "
                                                  f"({', '.join(sorted(proxy_fields))})")
    check_value(ProxySettings, "metric", strategy, "strategy")
    # the strategy made concrete as the command line's (auto: a uniform pick of never-seen samples when trials
    # start at the ratio), in every trial's config: a trial's ProxyData resolving "auto" alone would not know
    given = {"ratio": ratio, **proxy_settings,
             **search_proxy_fields(ratio, strategy, early, set(proxy_settings),
                                   proxy_settings.get("ratio_schedule", "constant"))}
    rungs = algorithm.rung_epochs(ctx)
    check_grace_period(grace_period, epochs, rungs if early else None, "a search without early stopping has "
                                                                       "scheduler='fifo'")
    settings = ProxySettings(**given)
    settings.check_proxy()  # named errors before anything starts
    why = no_full_data_top_rung(settings, rungs if early else None, decide,
                                scheduler=type(composed.scheduler).__name__ if early and not rungs else None)
    schedule = full_data_top_rung(settings, rungs, decide)  # the top rung on all the data, as the command line's
    top = schedule is not None
    if top:
        given["ratio_schedule"] = schedule
        settings = ProxySettings(**given)
    space = {**param_space, TRIAL_KEY: {**{k: v for k, v in vars(settings).items() if k in given}, "seed": seed}}
    built, algorithm = compose(scheduler, search_alg, Context(**{**vars(ctx), "param_space": space}))
    shipped = by_reference(trainable)  # imported in the worker after its folder is on the path
    modules = user_modules([shipped])
    label = getattr(trainable, "__name__", str(trainable))

    def make_trainable(changes: str | None = None):
        from ray import tune

        runner = tune.with_parameters(_user_trial, user_trainable=shipped, search_paths=search_paths(modules),
                                      changes=changes)
        return tune.with_resources(runner, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})

    plan = None
    if decide == "full" and ratio < 1.0:
        from asp_tune.tune.deciding import FullDataPlan

        plan = FullDataPlan(top_rung_full=top, first_rung=rungs[0] if top else None, audit=audit,
                            audit_trainable=make_trainable, ratio=ratio, seed=seed, flag="audit=", no_top_rung=why,
                            audit_fixed={TRIAL_KEY: space[TRIAL_KEY] if top else {"ratio": 1.0, "metric": "none",
                                                                                   "seed": seed}})
    summary = {"algo": f"{type(built.scheduler).__name__} + {type(built.searcher).__name__}", "ratio": ratio,
               "ratio_schedule": settings.ratio_schedule, "metric": settings.metric, "space": label, "seed": seed,
               "first_epoch_full": settings.first_epoch_full, "validation_epochs": "every", "fixed": {},
               "rung_ratios": None, "decide": decide,
               "pack": PackChoice(1, "one trial per process: a trainable of your own runs its own loop, which a "
                                     "pack cannot take over").summary(),
               **({} if plan is not None else {"decided_by": "full data (every trial trained on all of it)"
                                               if ratio >= 1.0 else "proxy (not checked against full data)"})}
    record = {"trainable": str(shipped) if isinstance(shipped, str) else label,
              "param_space": described_space(param_space), "ratio": ratio, "strategy": strategy,
              "epochs": epochs, "num_samples": num_samples, "seed": seed, "metric": metric, "mode": mode,
              "proxy_settings": proxy_settings, "decide": decide, "audit": audit, "max_concurrent": max_concurrent}
    return SearchJob(
        make_trainable=make_trainable, built=built, name=name or experiment_name("asp-user", label, f"r{ratio}"),
        param_names=list(param_space), epochs=epochs, metric=metric, mode=mode, num_samples=num_samples,
        total_trials=num_samples * grid_size(param_space),
        max_concurrent=None if algorithm.owns_concurrency else max_concurrent,
        budget=rescaled_budget(data_scale(settings, epochs), time_budget_s, data_passes_budget, num_samples, epochs),
        rungs=rungs, storage_path=storage_path, address=address, modules=modules,
        cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, verbose=verbose, label=f"search r={ratio}",
        settings=record, resume_keys=RESUME_KEYS, settings_are_arguments=True, summary=summary,
        summarizers={} if algorithm.summary is None or not isinstance(scheduler, str) else
        {scheduler: lambda path: algorithm.summary(path, ctx)}, full_data=plan)


def search(trainable: Callable[[dict], None], param_space: dict[str, Any], *, epochs: int, ratio: float = SEARCH_RATIO,
           strategy: str = HpoSettings.metric, metric: str = "val_accuracy", mode: str = "max",
           scheduler: Any = HpoSettings.algo, search_alg: Any = None, num_samples: int | None = None,
           max_concurrent: int = HpoSettings.max_concurrent, reduction_factor: int = HpoSettings.reduction_factor,
           grace_period: int = HpoSettings.grace_period, time_budget_s: float | None = HpoSettings.time_budget_s,
           data_passes_budget: float | None = HpoSettings.data_passes_budget, seed: int = HpoSettings.seed,
           cpus_per_trial: float = HpoSettings.cpus_per_trial, gpus_per_trial: float = HpoSettings.gpus_per_trial,
           storage_path: str | None = None, address: str | None = None, name: str | None = None,
           out: str | Path | None = None, overwrite: bool = False, resume: str | None = None,
           resume_unsigned: bool = False, verbose: int = 0, keep_checkpoints: bool = HpoSettings.keep_checkpoints,
           decide: str = HpoSettings.decide, audit: int | None = HpoSettings.audit,
           **proxy_settings: Any) -> SearchResult:
    """Run the user's function ``trainable`` over ``param_space`` (Ray Tune domains) on proxy data.

    Each trial's config gets ``config["asp_tune"]`` (``ratio``, ``metric`` = ``strategy``, ``seed`` and
    any ``proxy_settings``); under an early-stopping scheduler the first epoch is not a full pass
    unless ``first_epoch_full=True``. ``num_samples``: as Ray Tune's (None: 8, or one of each configuration
    where ``param_space`` draws nothing, its trials all seeded alike). ``scheduler``: ``fifo``, the name of a registered algorithm
    (``asha``, ``hyperband``, ``hypertune`` with its own searcher, ...) or any Ray Tune
    ``TrialScheduler``; ``search_alg``: ``random``, an algorithm's name (``tpe``) or any ``Searcher``.
    Budgets are given as for full data and rescaled by the data share of an epoch
    (:func:`~asp_tune.tune.settings.data_scale`). ``out``: a results folder for
    ``trials.csv``, ``trial_epochs.csv`` and ``summary.json`` (checked before anything runs, written
    only when the search succeeds; Ray's experiment is kept in ``.OUT.ray`` beside it unless
    ``storage_path`` says otherwise). ``resume``: an experiment folder of an interrupted search to
    finish (from its signed state, as ``asp-tune hpo --resume``; ``resume_unsigned``: from Ray's own files,
    which it unpickles, at your own risk). A finished search drops its trials' checkpoints unless
    ``keep_checkpoints``.

    ``decide``: ``full`` (default) ends the search on full data: under an early-stopping scheduler the top
    rung trains on all the data (``ratio_schedule`` steps to 1 there), and ``audit`` configurations (None:
    enough to measure in a search of 18 or more, else the proxy's best 3 without such a top rung) are
    trained on full data after it (beside such a top rung, as a promoted trial is); the best on full data is
    the pick, and ``summary["full_data"]`` holds the proxy's Kendall tau against full data with its interval.
    ``proxy``: the best proxy score picks."""
    storage = experiments_folder(out, storage_path, address)
    num_samples = trials_of_space(param_space if isinstance(param_space, dict) else {}, num_samples)
    job = user_job(trainable, param_space, epochs=epochs, ratio=ratio, strategy=strategy, metric=metric, mode=mode,
                   scheduler=scheduler, search_alg=search_alg, num_samples=num_samples, max_concurrent=max_concurrent,
                   reduction_factor=reduction_factor, grace_period=grace_period, time_budget_s=time_budget_s,
                   data_passes_budget=data_passes_budget, seed=seed, cpus_per_trial=cpus_per_trial,
                   gpus_per_trial=gpus_per_trial, storage_path=storage, address=address, name=name, verbose=verbose,
                   proxy_settings=proxy_settings, decide=decide, audit=audit)
    check_value(HpoSettings, "keep_checkpoints", keep_checkpoints)
    if not isinstance(resume_unsigned, bool):
        raise ConfigError("resume_unsigned", resume_unsigned, "True or False")
    job.keep_checkpoints = keep_checkpoints
    try:
        if out is None:
            return run_search(job, resume=resume, resume_unsigned=resume_unsigned, say_unfinished=True)
        return search_into(job, out, overwrite=overwrite, resume=resume, resume_unsigned=resume_unsigned)[0]
    except RunInterrupted as exc:  # said in this function's words
        raise exc.hinted("resume=") from None


def _user_trial(config: dict[str, Any], *, user_trainable: Any, search_paths: list[str],
                changes: str | None = None) -> None:
    """Run the user's trainable in a Ray worker: its module's folder on the path first (the same
    machine; a cluster gets the module itself through ``py_modules``), then the function, with torch, NumPy and
    ``random`` seeded from the search's ``seed`` (as asp_tune's own trials are: the same configuration trains
    the same way in every trial and retrain, whatever ran in the reused worker before). A fresh trial takes
    the search's latest ratio (``changes``, :mod:`asp_tune.tune.fulldata`)."""
    add_search_paths(search_paths)
    trial = config.get(TRIAL_KEY)
    if isinstance(trial, dict) and trial.get("seed") is not None:
        from asp_tune.assembly import seed_everything

        seed_everything(int(trial["seed"]))
    if changes and isinstance(config.get(TRIAL_KEY), dict):
        from ray import tune

        from asp_tune.tune.fulldata import started_ratio

        if tune.get_checkpoint() is None:
            trial = config[TRIAL_KEY]
            config = {**config, TRIAL_KEY: {**trial, "ratio": started_ratio(changes, trial.get("ratio", 1.0))}}
    fn = import_object(user_trainable, "trainable") if isinstance(user_trainable, str) else user_trainable
    global _CALLED_AT
    _CALLED_AT = time.perf_counter()
    try:
        fn(config)
    finally:
        _CALLED_AT = None


def _retrain(trainable: Callable[[dict], None], kwargs: dict[str, Any], epochs: int, metric: str):
    """``retrain(pick, seeds)`` of a user's trainable: the trainable run at ratio 1 (strategy none) once per
    seed with the pick's parameters; each one's score is its last ``metric``."""
    kept = {k: v for k, v in kwargs.items() if k not in ("scheduler", "search_alg", "num_samples", "strategy",
                                                         "metric", "seed", "out", "resume", "resume_unsigned",
                                                         "name")}

    def retrain(pick: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
        out = []
        for seed in seeds:
            again = search(trainable, dict(pick), epochs=epochs, ratio=1.0, strategy="none", scheduler="fifo",
                           num_samples=1, metric=metric, seed=seed, **kept)
            row = again.trials.iloc[0]
            out.append({"seed": seed, "score": float(row["final_score"]), "seconds": float(row["seconds"])})
        return out

    return retrain


def compare_trainable(trainable: Callable[[dict], None], param_space: dict[str, Any], *, epochs: int,
                      ratios: tuple[float, ...] = (1.0, SEARCH_RATIO), retrain_metric: str | None = None,
                      retrain_seeds: int = 1, control: bool = True, seeds: list[int] | None = None,
                      out: str | Path | None = None, overwrite: bool = False, **search_kwargs: Any) -> dict[str, Any]:
    """The same search at ratio 1.0 (full data) and each proxy ratio, each pick retrained on full data
    (the trainable run at ratio 1 with the pick's config; its last ``retrain_metric``, default the search
    metric, is the pick's score), and the rank agreement between each proxy search and the full-data one
    on the configurations both evaluated (:mod:`asp_tune.tune.compare`); ``control``: beside each proxy ratio whose
    strategy is not uniformly random, the same search on a uniformly random subset of the same size, its pick
    retrained too; ``seeds``: the whole comparison once per seed, every figure as mean ± sample std over them
    (:class:`~asp_tune.tune.compare_settings.CompareSettings`; ``seed`` then left out). ``out``: ``comparison.csv``,
    ``retrained.csv``, each ratio's trials, ``report.md`` and ``comparison.png``, as ``asp-tune compare``."""
    from asp_tune.run_dir import RunDirectory
    from asp_tune.tune.compare import run_comparison, write_comparison
    from asp_tune.tune.compare_settings import CompareSettings

    metric = search_kwargs.get("metric", "val_accuracy")
    storage = experiments_folder(out, search_kwargs.pop("storage_path", None), search_kwargs.get("address"))

    strategy = search_kwargs.get("strategy", inspect.signature(search).parameters["strategy"].default)
    ordered = sorted(set(ratios) | {1.0})
    _fresh_objects(search_kwargs)  # objects that cannot be copied refused before anything runs

    def searched(ratio: float, chosen: str, seed: int | None) -> SearchJob:
        """One search of the comparison, with its own copies of the scheduler and searcher objects (none carried
        over from another search)."""
        given = {k: v for k, v in search_kwargs.items() if k not in ("strategy", "out", "resume")}
        if seed is not None:
            given["seed"] = seed
        return _job(trainable, param_space, epochs=epochs, ratio=ratio, strategy=chosen, storage_path=storage,
                    **{**given, **_fresh_objects(search_kwargs)})

    def job(ratio: float) -> Callable[[int | None], SearchJob]:
        return lambda seed: searched(ratio, "none" if ratio == 1.0 else strategy, seed)

    def uniform(ratio: float, control_strategy: str, seed: int | None) -> SearchJob:
        return searched(ratio, control_strategy, seed)

    check_value(CompareSettings, "retrain_seeds", retrain_seeds)
    check_value(CompareSettings, "control", control)
    check_value(CompareSettings, "seeds", seeds)
    if seeds and "seed" in search_kwargs:
        raise ConfigError("seed", search_kwargs["seed"], "left out beside seeds= (which names every seed)")
    search_seeds = tuple(seeds) if seeds else (None,)
    fixed = [n for n in ("search_alg", "scheduler") if not isinstance(search_kwargs.get(n), (str, type(None)))]
    if seeds and len(seeds) > 1 and fixed:
        import warnings

        warnings.warn(f"{' and '.join(fixed)} given as an object keep{'s' if len(fixed) == 1 else ''} the seed it was "
                      f"built with: every seed of seeds= starts from a copy of it, so the spread over seeds leaves "
                      f"out its own randomness (give it by name to draw with each seed)", stacklevel=2)
    retrain = _retrain(trainable, {**search_kwargs, "storage_path": storage}, epochs, retrain_metric or metric)
    jobs = {r: job(r) for r in ordered}
    proxy = {k: v for k, v in search_kwargs.items() if k in vars(ProxySettings()) and k not in ("ratio", "metric")}
    check_value(ProxySettings, "metric", strategy, "strategy")
    for ratio in (r for r in jobs if r < 1.0):  # each search's strategy at its ratio refused before the first runs
        ProxySettings(**proxy, ratio=ratio, metric=strategy).check_proxy()
    controls = uniform if control else None
    if out is None:
        return run_comparison(jobs, retrain, retrain_seeds, control=controls, search_seeds=search_seeds)
    with RunDirectory(str(out), overwrite=overwrite) as folder:
        comparison = run_comparison(jobs, retrain, retrain_seeds, control=controls, search_seeds=search_seeds)
        summary = write_comparison(folder, comparison, f"{getattr(trainable, '__name__', 'trainable')}: full data "
                                                       "against the proxy", f"retrained {retrain_metric or metric}")
        folder.commit(summary)
    return comparison


def _fresh_objects(search_kwargs: dict[str, Any]) -> dict[str, Any]:
    """Copies of the Ray Tune scheduler and searcher objects in ``search_kwargs`` (names stay names): one
    search of a comparison must not start from the rungs or the study another search left in them."""
    import copy

    fresh = {}
    for name in ("scheduler", "search_alg"):
        value = search_kwargs.get(name)
        if value is None or isinstance(value, str):
            continue
        try:
            fresh[name] = copy.deepcopy(value)
        except Exception as exc:  # noqa: BLE001 - whatever the object's state refuses
            raise ConfigError(name, type(value).__name__, "a name, or a Ray Tune object that can be copied (each "
                                                          f"ratio's search starts from its own copy): {exc}") from None
    return fresh


def _job(trainable: Callable[[dict], None], param_space: dict[str, Any], **kwargs: Any) -> SearchJob:
    """:func:`user_job` with :func:`search`'s defaults for what ``kwargs`` leaves out (what is not one of
    :func:`search`'s own arguments is a proxy setting)."""
    own = {k: p.default for k, p in inspect.signature(search).parameters.items()
           if p.kind is inspect.Parameter.KEYWORD_ONLY}
    given = {**own, **kwargs}
    known = set(inspect.signature(user_job).parameters) - {"trainable", "param_space", "proxy_settings"}
    job = user_job(trainable, param_space, **{k: v for k, v in given.items() if k in known},
                   proxy_settings={k: v for k, v in given.items() if k not in own})
    job.keep_checkpoints = bool(given["keep_checkpoints"])
    return job


def _user_cell_trial(config: dict[str, Any], *, user_trainable: Any, search_paths: list[str], seed: int,
                     settings: dict[str, Any]) -> None:
    """A user's trainable in one (ratio, strategy) cell of :func:`correlate_trainable`."""
    from asp_tune.tune.correlate import cell_of

    ratio, strategy = cell_of(config)
    _user_trial({**config, TRIAL_KEY: {**settings, "ratio": ratio, "metric": strategy, "seed": seed}},
                user_trainable=user_trainable, search_paths=search_paths)


def correlate_trainable(trainable: Callable[[dict], None], param_space: dict[str, Any], *, epochs: int,
                        ratios: tuple[float, ...] = (0.1, SEARCH_RATIO), strategies: tuple[str, ...] = ("random", "loss"),
                        num_samples: int = 1, seed: int = 0, max_concurrent: int = 2, cpus_per_trial: float = 1.0,
                        gpus_per_trial: float = 0.0, storage_path: str | None = None, address: str | None = None,
                        metric: str = "val_accuracy", mode: str = "max", out: str | Path | None = None,
                        overwrite: bool = False, verbose: int = 0, **proxy_settings: Any) -> pd.DataFrame:
    """Every configuration of ``param_space`` (its ``tune.grid_search`` values crossed, other domains
    sampled ``num_samples`` times) trained to the end on full data and in each (ratio, strategy) cell,
    without early stopping, in one Ray experiment; one row per cell with the rank correlations against
    full data (Kendall tau, Pearson, Spearman, r², top-1 regret) and its cost, as ``asp-tune correlate``
    gives for the built-in trainable (:mod:`asp_tune.tune.correlate`). Each trial's last ``metric`` is
    its score, higher is better unless ``mode="min"`` (a loss)."""
    from asp_tune.tune.algorithms import RANDOM, Context
    from asp_tune.tune.correlate import cell_space, cells, grid_configs, run_correlation

    from asp_tune.tune.compare_settings import check_grid_size

    _check_arguments(trainable, param_space, epochs, mode, {
        "num_samples": num_samples, "seed": seed, "max_concurrent": max_concurrent, "cpus_per_trial": cpus_per_trial,
        "gpus_per_trial": gpus_per_trial, "address": address, "verbose": verbose})
    for strategy in strategies:
        ProxySettings(ratio=min(ratios), metric=strategy, **proxy_settings).check_proxy()
    configs = grid_configs(param_space, num_samples, seed)
    check_grid_size(configs, "param_space")
    storage = experiments_folder(out, storage_path, address)
    shipped = by_reference(trainable)
    modules = user_modules([shipped])

    def make_trainable():
        from ray import tune

        runner = tune.with_parameters(_user_cell_trial, user_trainable=shipped, search_paths=search_paths(modules),
                                      seed=seed, settings=proxy_settings)
        return tune.with_resources(runner, {"cpu": cpus_per_trial, "gpu": gpus_per_trial})

    names = cells(list(ratios), list(strategies))
    label = getattr(trainable, "__name__", str(trainable))
    job = SearchJob(make_trainable=make_trainable, built=RANDOM.build(Context(epochs, seed=seed, max_concurrent=max_concurrent,
                                                                              param_space=cell_space(configs, names))),
                    name=experiment_name("asp-correlate", label), param_names=["cfg", "cell"], epochs=epochs,
                    metric=metric, mode=mode, num_samples=1, max_concurrent=max_concurrent,
                    total_trials=len(configs) * len(names),
                    storage_path=storage, address=address, modules=modules, cpus_per_trial=cpus_per_trial,
                    gpus_per_trial=gpus_per_trial, verbose=verbose, label="correlate", summary={"space": label})
    if out is None:
        return run_correlation(job, configs)["correlations"]
    from asp_tune.run_dir import RunDirectory
    from asp_tune.tune.correlate import write_correlation

    with RunDirectory(str(out), overwrite=overwrite) as folder:
        run = run_correlation(job, configs)
        folder.commit(write_correlation(folder, run, f"{label}: rank correlation with full data",
                                        {"ratios": list(ratios), "strategies": list(strategies)}))
    return run["correlations"]
