"""The one function that runs a search, whoever's trainable it runs.

A search is: settings, then objects (a :class:`SearchJob`: the trainable, the algorithm's scheduler
and searcher, the budget), then :func:`run_search`. The command line (``asp-tune hpo``, ``compare``,
``demo``) builds its job from :class:`~asp_tune.tune.settings.HpoSettings` (:mod:`asp_tune.tune.builtin`);
a user's own trainable gets its job from :func:`asp_tune.tune.search` (:mod:`asp_tune.tune.user`).
Everything after that is here, once: Ray's session, the experiment folder beside the results (or a
resume from its signed copy), the progress bar, the signed state, the wall time of all parts,
the trials table, the pick and the proxy's trust; :mod:`asp_tune.tune.results` writes the results
folder (``trials.csv``, ``trial_epochs.csv``, ``summary.json``, ``trust.png``).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
import time
import uuid
import warnings
from pathlib import Path
from typing import Any

import pandas as pd

from asp_tune.errors import ConfigError, RunFailed
from asp_tune.flags import both_spellings
from asp_tune.imports import search_paths
from asp_tune.run_dir import jsonable
from asp_tune.tune.algorithms import Built
from asp_tune.tune.job import SearchJob, SearchResult  # noqa: F401 - part of this module's API
from asp_tune.tune.collect import (best_trial, collect_trials, plain, proxy_model_seconds, proxy_model_total,
                                   proxy_trust)
from asp_tune.tune.storage import (SETTINGS_FILE, join, make_dirs, ray_filesystem, read_text,  # noqa: F401
                                   settle_experiment, storage_root, unfinished_experiments, write_text)

#: Checkpoints a trial keeps (its latest ones); Ray saves the experiment's state at the latest when a
#: trial has made this many since the last save, so the one a saved state names is on disk.
KEEP_CHECKPOINTS = 5
#: Trials reuse a worker process whose resources match (a trainable rebuilds itself from its config
#: and checkpoint each time, so a reused worker behaves exactly like a fresh one).
REUSE_ACTORS = True


def experiment_name(*parts: Any) -> str:
    """A unique, file-system-safe experiment name from ``parts`` (two runs started in the same second
    never share a folder)."""
    text = "-".join(str(p) for p in parts if p not in (None, ""))
    safe = re.sub(r"[^A-Za-z0-9._-]+", "_", text)[:120]
    return f"{safe}-{time.strftime('%Y%m%d-%H%M%S')}-{uuid.uuid4().hex[:6]}"


def experiments_folder(out: str | Path | None, storage_path: str | None, address: str | None) -> str | None:
    """``storage_path``, or for a local run with a results folder ``.OUT.ray`` beside it: Ray's experiment
    folders stay with the run (not in ``~/ray_results``), outside the results folder that is only moved
    into place when the run succeeds, so an interrupted search can still be resumed from there."""
    if storage_path is not None or address is not None or not out:
        return storage_path
    target = Path(out).expanduser().resolve()
    return str(target.with_name(f".{target.name}.ray"))


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


def make_tuner(trainable, param_space: dict[str, Any], *, name: str, storage: str, num_samples: int,
               max_concurrent: int | None, verbose: int, max_failures: int, progress: tuple,
               search_alg=None, scheduler=None, time_budget_s: float | None = None, stop=None,
               callbacks: list | None = None, checkpoints_to_keep: int | None = 1,
               tune_config_extra: dict[str, Any] | None = None):
    """A Tuner as every asp_tune experiment sets one up: reused workers, Ray's console output only at
    ``verbose`` 2, one progress bar (``progress``: total trials, label, rungs) at ``verbose`` 1."""
    from ray import tune

    from asp_tune.tune.progress import FreshTrialLogs, SearchProgress

    bar = [SearchProgress(*progress)] if verbose == 1 else []
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
            checkpoint_config=tune.CheckpointConfig(num_to_keep=checkpoints_to_keep)),
    )


def tracking_callbacks(tracking: str, uri: str | None, name: str) -> list:
    """Ray Tune's own tracking callback for ``tracking`` (every trial's reports, config and status)."""
    if tracking == "mlflow":
        from ray.air.integrations.mlflow import MLflowLoggerCallback

        return [MLflowLoggerCallback(tracking_uri=uri, experiment_name=name)]
    if tracking == "tensorboard":
        from ray.tune.logger import TBXLoggerCallback

        return [TBXLoggerCallback()]
    if tracking == "wandb":
        from ray.air.integrations.wandb import WandbLoggerCallback

        return [WandbLoggerCallback(project=uri or name)]
    return []


def _experiments_within(folder: str) -> str:
    """Where the experiment folders are when ``folder`` is a storage folder (``.OUT.ray``) or a results folder
    beside one, for the refusal of a resume given either."""
    from asp_tune.tune.storage import unfinished_experiments

    local = Path(folder)
    storage = local.with_name(f".{local.name}.ray") if (local / "summary.json").is_file() else local
    found = unfinished_experiments(str(storage)) or (sorted(p for p in storage.iterdir() if (p / SETTINGS_FILE)
                                                            .is_file()) if storage.is_dir() else [])
    return f"; the experiment folders are within {storage}: {', '.join(str(p) for p in found[:3])}" if found else ""


def check_resume_settings(experiment: str, settings: dict[str, Any], keys: tuple[str, ...],
                          arguments: bool = False) -> None:
    """Refuse to resume ``experiment`` with settings other than those it was started with (in ``keys``, whose
    first names the kind of search every folder of that kind records; one an older folder did not record yet is
    not asked), naming them as flags and settings, or with ``arguments`` as a function's arguments."""
    try:
        saved = json.loads(read_text(join(experiment, SETTINGS_FILE)))
    except (OSError, ValueError):
        raise ConfigError("resume", experiment, "an experiment folder written by 'asp-tune hpo' or "
                                                f"asp_tune.tune.search (no readable {SETTINGS_FILE}"
                                                f"{_experiments_within(experiment)})") from None
    if not isinstance(saved, dict):
        raise ConfigError("resume", experiment, f"an experiment folder whose {SETTINGS_FILE} holds a mapping")
    if saved.get("audit_of") and "audit_of" not in settings:
        raise ConfigError("resume", experiment, f"the search's own folder: this is the full-data audit of "
                                                f"{saved['audit_of']!r}, which resumes with it (give that folder)")
    saved_jsonable = {k: saved.get(k) for k in keys}
    given = json.loads(json.dumps(jsonable({k: settings.get(k) for k in keys})))
    if keys and keys[0] not in saved:  # the kind of search (algo, trainable): another kind's folder
        raise ConfigError("resume", experiment, f"an experiment of this kind of search (its {SETTINGS_FILE} has no "
                                                f"{keys[0]!r}: it was written by "
                                                f"{'asp_tune.tune.search' if 'trainable' in saved else 'asp-tune hpo'})")
    differ = [k for k in keys if k in saved and saved_jsonable.get(k) != given.get(k)]
    if differ:
        def said(key: str) -> str:
            value = saved_jsonable.get(key)
            started = f"{key}={value!r}" if arguments else both_spellings(key, value)
            return f"{started} (this {'call' if arguments else 'one'}'s: {given.get(key)!r})"

        spaces = {"space": "the same search space", "param_space": "the same param_space"}
        detail = "; ".join([said(k) for k in differ if k not in spaces] + [spaces[k] for k in differ if k in spaces])
        raise ConfigError("resume", experiment, f"the settings the run was started with (give the "
                                                f"{'arguments' if arguments else 'flags or settings'} it was started "
                                                f"with; a setting the search adjusted, such as a ratio raised for the "
                                                f"first rung, follows from them): {detail}")


def _preflight(job: SearchJob, resume: str | None) -> tuple[str, str | None]:
    """Everything checked before Ray starts: the storage place, signing, a resume's settings."""
    from asp_tune.tune.session import quiet_ray_logs
    from asp_tune.tune.signing import signing_problem
    from asp_tune.tune.storage import check_location

    storage = storage_root(job.storage_path)
    if resume:  # first: a refused resume makes no folder
        resume = storage_root(resume, "resume")  # Ray reads a relative path as a URI
        check_resume_settings(resume, job.settings, job.resume_keys, job.settings_are_arguments)
    check_location(storage)  # a bad place is one named error, before Ray starts (it makes the folder)
    quiet_ray_logs(job.verbose)
    unsigned = signing_problem()
    if unsigned:  # said aloud: this search runs, but its --resume would be refused as unsigned
        print(f"[asp-tune] warning: this search cannot be signed for --resume ({unsigned}); resuming it will "
              f"need {both_spellings('resume_unsigned')}", file=sys.stderr)
    return storage, resume


def _restored_tuner(job: SearchJob, trainable, resume: str, resume_unsigned: bool):
    from ray import tune

    if not tune.Tuner.can_restore(resume):
        raise ConfigError("resume", resume, "a Ray Tune experiment folder written by 'asp-tune hpo' or "
                                            "asp_tune.tune.search")
    if not resume_unsigned:
        from asp_tune.tune.signing import restore_signed

        changed = restore_signed(resume)
        if changed:
            warnings.warn(f"resuming from the signed copy of the experiment's state: {', '.join(changed)} "
                          "changed after it was signed (a driver killed while Ray wrote its state, or a "
                          "change by someone else); the files set aside end in .unsigned", stacklevel=3)
    # the space again: Ray saved its functions (tune.sample_from, the audit's configurations) as placeholders,
    # and a trial that had not started would otherwise run with a placeholder as its configuration
    try:
        return tune.Tuner.restore(resume, trainable, resume_unfinished=True, resume_errored=False,
                                  restart_errored=False, param_space=job.built.param_space,
                                  storage_filesystem=ray_filesystem(resume))
    except ValueError as exc:  # Ray compares the space's keys with those it saved
        if "param_space" not in str(exc):
            raise
        said = "; ".join(line.strip() for line in str(exc).splitlines()[-2:] if line.strip())
        raise ConfigError("resume", resume, f"the search space and settings the run was started with (its "
                                            f"parameters and proxy settings differ: {said})") from None


def _new_tuner(job: SearchJob, trainable, storage: str):
    from asp_tune.tune.progress import SignedState, WallTimeRecorder

    experiment = join(storage, job.name)
    make_dirs(experiment)
    write_text(join(experiment, SETTINGS_FILE), json.dumps(jsonable(job.settings), indent=1) + "\n")
    stop = DataPassBudget(job.budget["data_passes"]).stopper if job.budget.get("data_passes") else None
    target = {} if _has_own_target(job.built) else {"metric": job.metric, "mode": job.mode}
    callbacks = [WallTimeRecorder(experiment), SignedState(experiment), *_watch(job, experiment),
                 *tracking_callbacks(job.tracking, job.tracking_uri, job.name), *_membership(job)]
    plan = job.full_data
    full_pairs = (plan.first_rung, job.epochs) if plan is not None and plan.top_rung_full and plan.first_rung else None
    tuner = make_tuner(trainable, job.built.param_space, name=job.name, storage=storage, num_samples=job.num_samples,
                       max_concurrent=job.max_concurrent, verbose=job.verbose, max_failures=job.max_failures,
                       progress=(job.total_trials or job.num_samples, job.label, job.rungs, job.metric, full_pairs,
                                 job.mode),
                       search_alg=job.built.searcher, scheduler=job.built.scheduler,
                       time_budget_s=job.budget.get("time_budget_s"), stop=stop, callbacks=callbacks,
                       checkpoints_to_keep=KEEP_CHECKPOINTS, tune_config_extra=target)
    return tuner, experiment


def _watch(job: SearchJob, experiment: str) -> list:
    """The live watch of the search's proxy, when it can raise the ratio of trials not yet started."""
    watch = None if job.full_data is None else job.full_data.watch(job.rungs, job.epochs, job.mode)
    if watch is None:
        return []
    from asp_tune.tune.fulldata_ray import FullDataWatch

    return [FullDataWatch(experiment, watch, job.metric)]


def _membership(job: SearchJob) -> list:
    """The callback telling a packed search's workers which trials stopped asking for epochs; on every search,
    so that one started without packs and resumed with them has it too (it does nothing without a pool)."""
    from asp_tune.tune.pack_ray import PackMembership

    return [PackMembership(job.name)]


def _has_own_target(built: Built) -> bool:
    """Whether the scheduler or searcher was given its metric already (Ray refuses it twice)."""
    return any(getattr(o, "metric", None) is not None or getattr(o, "_metric", None) is not None
               for o in (built.scheduler, built.searcher))


def run_search(job: SearchJob, resume: str | None = None, resume_unsigned: bool = False,
               say_unfinished: bool = False) -> SearchResult:
    """Run (or resume) ``job``; one row per trial, the pick and its summary.

    ``resume``: an experiment folder to finish; only from the copy of its state this user's key signed
    (:mod:`asp_tune.tune.signing`) unless ``resume_unsigned``, which lets Ray unpickle whatever the folder
    holds. ``say_unfinished`` (a search its caller can resume): a new search says which searches in its storage
    folder stopped before they finished, and how to finish them. Raises :class:`~asp_tune.errors.RunInterrupted`
    on SIGINT/SIGTERM (the experiment stays resumable) and :class:`~asp_tune.errors.RunFailed` when no trial
    scored.
    """
    from asp_tune.tune.progress import recorded_wall_time
    from asp_tune.tune.session import check_resources, check_shared_storage, ensure_ray

    from asp_tune.tune.fulldata import CHANGES_FILE

    storage, resume = _preflight(job, resume)
    for experiment in unfinished_experiments(storage) if say_unfinished and not resume else ():
        print(f"[asp-tune] note: {experiment} holds a search that stopped before it finished; "
              f"{both_spellings('resume', str(experiment))} finishes it (this search is a new one)", file=sys.stderr)
    ray_start = time.perf_counter()
    ensure_ray(job.address, modules=job.modules)
    ray_start = time.perf_counter() - ray_start  # the user waits for it too; not the search's (once a process)
    check_resources(job.cpus_per_trial, job.gpus_per_trial, cluster=job.address is not None)
    check_shared_storage(job.storage_path)
    if not resume:
        from asp_tune.tune.deciding import announce

        announce(job)
    if job.full_data is None:
        trainable = job.make_trainable()
    else:
        trainable = job.make_trainable(changes=join(resume or join(storage, job.name), CHANGES_FILE))
    start = time.perf_counter()
    with _pack_pool(job, Path(resume).name if resume else job.name) as packed:
        if not resume:
            tuner, experiment = _new_tuner(job, trainable, storage)
            grid = _fit(job, tuner, experiment)
        else:
            experiment = resume
            try:
                grid = _fit(job, _restored_tuner(job, trainable, resume, resume_unsigned), resume)
            except (AttributeError, KeyError, TypeError, IndexError) as exc:  # Ray reading a state it cannot use
                raise ConfigError("resume", resume, f"an experiment whose saved state Ray can read "
                                                    f"({type(exc).__name__}: {str(exc)[:160]})") from None
    wall = recorded_wall_time(experiment) or time.perf_counter() - start
    trials, histories = collect_trials(grid, job.param_names, job.metric, job.mode, job.epochs)
    summary = {**_summary(job, trials, histories, wall, grid.experiment_path), "ray_start_s": ray_start}
    if packed:
        summary["packs"] = packed
    if job.full_data is not None:
        from asp_tune.tune.deciding import decide

        trials, summary = decide(job, trials, histories, summary, grid.experiment_path, run_search)
    else:
        summary.setdefault("decided_by", "proxy (not checked against full data)")
    summary["experiment"] = settle_experiment(grid.experiment_path, job.keep_checkpoints, job.verbose)
    return SearchResult(trials, summary, histories)


@contextlib.contextmanager
def _pack_pool(job: SearchJob, experiment: str):
    """The pack workers of ``job`` (none without packs) while its search runs; yields the dict that, after
    the search, holds what they trained how (:mod:`asp_tune.tune.pack_ray`)."""
    if job.packs is None:
        yield {}
        return
    from asp_tune.tune.pack_ray import pool_name, start_pool, stop_pool, workers_that_fit

    plan = job.packs.plan
    fit = workers_that_fit(plan)
    if plan.workers > fit:  # a worker the cluster cannot place would leave its trials waiting forever
        raise ConfigError("max_concurrent", plan.workers, f"at most {fit} packs at once: each pack worker holds one "
                                                          f"trial's resources ({plan.cpus:g} CPUs, {plan.gpus:g} GPUs), "
                                                          "on one node")
    packed = plan.summary()
    if job.verbose:
        print(f"[asp-tune] packs: {plan.reason}; {plan.workers} pack workers, {plan.trials_at_once} trials at once",
              file=sys.stderr)
    pool = start_pool(pool_name(experiment), plan, job.packs.worker_args)
    try:
        yield packed
    finally:
        from asp_tune.tune.pack_server import say_if_nothing_fused

        packed.update(say_if_nothing_fused(stop_pool(pool), plan.size))
        for note in packed["notes"] if job.verbose else ():
            print(f"[asp-tune] packs: {note}", file=sys.stderr)


@contextlib.contextmanager
def _metric_checking(strict: bool):
    """Ray's check that every report carries the score, on for this search unless its trials validate only
    where the algorithm reads (a scheduler then waits for the next score); as it was afterwards."""
    name = "TUNE_DISABLE_STRICT_METRIC_CHECKING"
    previous = os.environ.pop(name, None)
    if not strict:
        os.environ[name] = "1"
    try:
        yield
    finally:
        os.environ.pop(name, None)
        if previous is not None:
            os.environ[name] = previous


def _fit(job: SearchJob, tuner, experiment: str):
    """``tuner.fit()``; Ray Tune stopping the whole search over what a trainable reported is one named error."""
    from ray.tune.error import TuneError

    from asp_tune.tune.session import fit_interruptibly

    try:
        with _metric_checking(not job.sparse_reports):
            return fit_interruptibly(tuner, experiment)
    except TuneError as exc:
        lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
        last = lines[-1][:300] if lines else type(exc).__name__
        if "did not include the specified metric" in last:
            shown = lines[-1].split("Result: ")[-1]
            keys = _top_level_keys(shown)  # the report's names, not its numbers cut mid-way
            held = f"{', '.join(keys[:12])}{', ...' if len(keys) > 12 else ''}" if keys else shown[:160]
            raise ConfigError("metric", job.metric, f"a score every report of the trainable carries (a report held "
                                                    f"only: {held})") from None
        if last.startswith(("TypeError", "ValueError: could not convert")):  # a score that is not a number
            raise ConfigError("metric", job.metric, f"a number in every report ({last})") from None
        raise RunFailed(f"Ray Tune stopped the search: {last} (its experiment: {experiment})") from None


def _top_level_keys(text: str) -> list[str]:
    """The keys of the outermost mapping in ``text``, a dict as Python prints it (not those of the mappings in
    it, such as a report's ``config``)."""
    keys, depth = [], 0
    for match in re.finditer(r"[{}\[\]]|'([^']+)': ", text):
        token = match.group(0)
        if token in "{[":
            depth += 1
        elif token in "}]":
            depth -= 1
        elif depth == 1:
            keys.append(match.group(1))
    return keys


def _summary(job: SearchJob, trials: pd.DataFrame, histories: dict[str, pd.DataFrame], wall: float,
             experiment_path: str) -> dict[str, Any]:
    """The summary of a finished search; a named :class:`RunFailed` when nothing can be picked."""
    if len(trials) and (trials["status"] == "ERROR").all():
        raise RunFailed(f"all {len(trials)} trials failed; the first: {trials['error'].iloc[0]} "
                        f"(full tracebacks under {experiment_path})")
    best = best_trial(trials, job.mode)
    if best is None:
        reported = int((trials["epochs"] > 0).sum()) if "epochs" in trials else 0
        failed = trials[trials["status"] == "ERROR"]
        said = [f"{reported} of {len(trials)} trials reported epochs, each with {job.metric} NaN (a diverged "
                "network, an empty validation set, a division by zero?)"] if reported and not job.sparse_reports else []
        if len(failed):
            said.append(f"{len(failed)} failed (the first: {failed['error'].iloc[0]})")
        budget = job.budget
        limits = [f"time budget {budget['time_budget_s']:g} s" if budget.get("time_budget_s") else "",
                  f"{budget['data_passes']:g} data passes" if budget.get("data_passes") else ""]
        limits = [x for x in limits if x]
        where = f"the trials' reports are under {experiment_path}; nothing was committed"
        if limits:
            raise RunFailed(f"no trial reported a validation score within the budget ({job.metric}; {len(trials)} "
                            f"trials; {', '.join(limits)}, after x{budget.get('scale', 1):g}): give a larger budget"
                            f"{''.join('; ' + x for x in said)}; {where}")
        if said and reported and not job.sparse_reports:
            raise RunFailed(f"no trial reported a number for {job.metric}: {'; '.join(said)}; {where}")
        raise RunFailed(f"no trial reported a validation score ({job.metric}; {len(trials)} trials"
                        f"{''.join('; ' + x for x in said)}); {where}")
    trust = proxy_trust(job.rungs, histories, job.metric)
    seconds = {k: float(trials[c].fillna(0).sum()) for k, c in
               (("startup", "startup_seconds"), ("training", "seconds"), ("validation", "val_seconds"))}
    summary = {
        **job.summary,
        "score_metric": job.metric, "mode": job.mode,
        "best_config": {n: plain(best[f"config/{n}"]) for n in job.param_names},
        "best_score": float(best["best_score"]),
        "best_val_accuracy": float(best["best_score"]) if job.metric == "val_accuracy" else
        (None if best["best_val_accuracy"] != best["best_val_accuracy"] else float(best["best_val_accuracy"])),
        "best_trial_id": best["trial_id"],
        "num_trials": int(len(trials)),
        "num_failed": int((trials["status"] == "ERROR").sum()),
        "wall_time_s": wall,
        "data_passes_total": float(trials["data_passes"].fillna(0).sum()),
        "epochs_total": int(trials["epochs"].fillna(0).sum()),
        "trial_seconds": seconds | {"proxy_model": proxy_model_seconds(trials)},
        "proxy_model_data_passes": proxy_model_total(trials, "proxy_data_passes"),  # a static proxy's, once
        "budget": job.budget,
        "experiment_path": experiment_path,
        "proxy_trust": None if trust is None else trust.summary(),
        # where the search imported the user's modules from: `train --config` of this folder looks there too
        "search_paths": search_paths(job.modules),
    }
    for key, read in job.summarizers.items():
        summary[key] = read(experiment_path)
    planned = job.total_trials or job.num_samples
    budget = job.budget
    if len(trials) < planned and (budget.get("data_passes") or budget.get("time_budget_s")):
        spent = [f"{budget['data_passes']:g} data passes" if budget.get("data_passes") else "",
                 f"{budget['time_budget_s']:g} s" if budget.get("time_budget_s") else ""]
        summary["ended_by_budget"] = True
        print(f"[asp-tune] the budget ({' or '.join(x for x in spent if x)}, the full-data budget "
              f"x{budget.get('scale', 1):.3g}) ended the search after {len(trials)} of {planned} trials",
              file=sys.stderr)
    proxy_picks = job.full_data is None and float(job.summary.get("ratio") or 1.0) < 1.0
    if trust is not None and trust.warning() and proxy_picks:  # else full data decides (and says so) or none is used
        print(f"[asp-tune] warning: {trust.warning()}", file=sys.stderr)
    if not (trials["epochs"] > 0).any():  # scores without an epoch: ray.tune.report called directly
        print("[asp-tune] warning: no report named its epoch, so the epochs, data passes, rungs and full-data checks "
              "of this search count nothing; report with asp_tune.tune.report(metrics, proxy), which adds them",
              file=sys.stderr)
    return summary
