"""asp_tune's own proxy-data trainable as a search job: what ``asp-tune hpo``, ``compare`` and ``demo`` run.

:func:`job_from_settings` turns validated :class:`~asp_tune.tune.settings.HpoSettings` into a
:class:`~asp_tune.tune.run.SearchJob` (the data set read once here and shared through Ray's object
store, the trial function with its fixed settings, the algorithm built from its registry entry);
:func:`asp_tune.tune.run.run_search` does the rest, as for a user's own trainable.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import os
import sys
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np

from asp_tune.errors import ConfigError
from asp_tune.imports import search_paths
from asp_tune.registry import extensions
from asp_tune.tune.run import KEEP_CHECKPOINTS, SearchJob, SearchResult, experiment_name, run_search  # noqa: F401
from asp_tune.tune.settings import HpoSettings, rung_ratio_values
from asp_tune.tune.space import SearchSpace

#: Settings a resumed experiment must share with the run that started it (max_concurrent too: Ray restores the
#: search's concurrency with it, and a new value would change nothing but what summary.json says).
RESUME_FIELDS = ("algo", "ratio", "ratio_schedule", "rung_ratios", "metric", "num_samples", "max_epochs", "early_stop",
                 "grace_period", "reduction_factor", "seed", "time_budget_s", "data_passes_budget", "selection",
                 "space", "decide", "audit", "min_first_rung_steps", "max_concurrent")


def shared_arrays(s: HpoSettings) -> dict[str, Any] | None:
    """The decoded data set every trial shares, read once here (None when the space searches
    which data to read). Reading it here also checks the data before any trial starts."""
    from asp_tune.datasets import read_dataset
    from asp_tune.tune.trainable import DATA_SOURCE_FIELDS

    if any(p.name in DATA_SOURCE_FIELDS for p in s.space.params):
        return None
    cfg = s.trial_config()
    return read_dataset(cfg.dataset, cfg.data_dir, download=cfg.download, image_size=cfg.image_size)


def absolute_data_dir(space: SearchSpace) -> SearchSpace:
    data_dir = space.fixed.get("data_dir")
    if data_dir and not str(data_dir).startswith(("s3://", "gs://")):
        fixed = {**space.fixed, "data_dir": str(Path(data_dir).expanduser().resolve())}
        return SearchSpace(space.name, fixed, space.params)
    return space


def job_from_settings(settings: HpoSettings) -> SearchJob:
    """The search job of ``settings`` (validated here): asp_tune's proxy-data trial for every
    configuration of the space, under the settings' algorithm and budget."""
    s = settings.validate()
    if s.trial_config().val_fraction == 0:
        raise ConfigError("val_fraction", 0.0, "a fraction in (0, 1): every trial is scored on its validation split "
                                               "(0, no split, is for nas-retrain)")
    s.space = absolute_data_dir(s.space)
    arrays = shared_arrays(s)  # read (and checked) before Ray starts
    metric = s.score_metric(arrays is not None and np.asarray(arrays["train_y"]).dtype.kind == "f")
    check_strategy(s, arrays)
    check_own_network(s, arrays)
    n = train_samples(s, arrays)
    first_rung_change = s.fit_first_rung(n) if n is not None else None
    plan = _full_data_plan(s)
    modules = s.user_modules()
    validate_epochs = s.validation_epochs()
    choice = pack_choice(s, arrays)
    if s.pack == "auto" and choice.size == 1 and s.verbose:  # a pack size is said where the packs start
        print(f"[asp-tune] --pack auto: {choice.reason}", file=sys.stderr)
    packs = _packs(s, choice, s.run_fields(), validate_epochs, arrays, modules)
    algorithm, ctx = s.algorithm, s.context(metric, choice.size)

    def with_run(run: dict[str, Any], validate: tuple[int, ...] | None, checkpoints: tuple[int, ...] | None,
                 changes: str | None = None, packed: bool = False):
        from ray import tune

        from asp_tune.tune.trainable import proxy_trial

        if packed:
            from asp_tune.tune.pack_ray import TRIAL_RESOURCES, packed_trial

            return tune.with_resources(
                tune.with_parameters(packed_trial, checkpoint_epochs=checkpoints, changes=changes,
                                     checkpoint_every_s=s.checkpoint_every_s, run_ratio=float(run["ratio"])),
                TRIAL_RESOURCES)
        return tune.with_resources(
            tune.with_parameters(proxy_trial, space=s.space, run=run, threads=max(1, int(s.cpus_per_trial)),
                                 arrays=arrays, validate_epochs=validate, extensions=extensions(),
                                 checkpoint_epochs=checkpoints, checkpoint_every_s=s.checkpoint_every_s,
                                 changes=changes, search_paths=search_paths(modules)),
            {"cpu": s.cpus_per_trial, "gpu": s.gpus_per_trial})

    def make_trainable(changes: str | None = None):
        return with_run(s.run_fields(), validate_epochs, s.checkpoint_epochs(), changes, packs is not None)

    if plan is not None:  # an audited configuration trains as the top rung's did: one protocol for every score
        full = s if plan.top_rung_full else dataclasses.replace(s, ratio=1.0, metric="none",
                                                                ratio_schedule="constant", rung_ratios=None)
        plan.audit_trainable = lambda: with_run(full.run_fields(), (s.epochs,), (), packed=packs is not None)
        plan.audit_packs = _packs(s, choice, full.run_fields(), (s.epochs,), arrays, modules)
    summary = {"algo": s.algo, "ratio": s.ratio, "ratio_schedule": s.ratio_schedule, "metric": s.resolved_metric(),
               "space": s.space.name, "seed": s.seed, "first_epoch_full": s.trial_config().first_epoch_full,
               "validation_epochs": validate_epochs or "every", "fixed": s.space.fixed,
               "rung_ratios": None if s.rung_ratios is None else list(rung_ratio_values(s.rung_ratios)),
               "decide": s.decide, "pack": choice.summary(),
               **({"first_rung_change": first_rung_change} if first_rung_change else {}), **({} if plan is not None else {"decided_by": _unchecked(s.ratio)})}
    return SearchJob(
        make_trainable=make_trainable, built=algorithm.build(ctx),
        name=s.name or experiment_name("asp", s.space.name, s.algo, f"r{s.ratio}"),
        param_names=[p.name for p in s.space.params], epochs=s.epochs, metric=metric, mode="max",
        num_samples=s.num_samples,
        max_concurrent=None if algorithm.owns_concurrency else s.max_concurrent * choice.size,
        total_trials=s.total_trials, budget=s.budget(), rungs=s.rungs(),
        storage_path=s.storage_path, address=s.address, modules=modules, cpus_per_trial=s.cpus_per_trial,
        gpus_per_trial=s.gpus_per_trial, max_failures=s.failures_allowed(), verbose=s.verbose,
        label=f"{s.algo} r={s.ratio}", settings=s.to_dict(), resume_keys=RESUME_FIELDS, summary=summary,
        summarizers={} if algorithm.summary is None else {s.algo: lambda path: algorithm.summary(path, ctx)},
        sparse_reports=validate_epochs is not None, tracking=s.tracking, tracking_uri=s.tracking_uri,
        keep_checkpoints=s.keep_checkpoints, full_data=plan, packs=packs)


def pack_choice(s: HpoSettings, arrays: dict[str, Any] | None):
    """How many configurations each pack of ``s`` trains (:func:`auto_pack_size` for ``auto``)."""
    from asp_tune.pack import PackChoice

    total = s.total_trials
    epochs = expected_epochs(total, s.epochs, s.rungs(), s.reduction_factor)
    choice = auto_pack_size(s.pack, s.trial_config(), arrays, total, epochs, s.max_concurrent, s.cpus_per_trial,
                            s.gpus_per_trial, others=lambda measure: s.space.sizing_configs(s.run_fields(), measure))
    smallest = s.smallest_pack_for_all_trials()
    if choice.size > 1 and smallest is not None and choice.size < smallest:  # auto's choice (K given is checked)
        return PackChoice(1, f"one trial per process: {s.algo} starts all {total} trials together in packs, and "
                             f"packs of {choice.size} x {s.max_concurrent} cannot hold them ({choice.reason})")
    return choice


def auto_pack_size(requested: str, config, arrays: dict[str, Any] | None, trials: int, epochs_total: int,
                   max_concurrent: int, cpus_per_trial: float, gpus_per_trial: float, others: Sequence | Callable = ()):
    """The pack size of a search of ``trials`` configurations like ``config`` training ``epochs_total`` epochs
    in all: ``requested``, or for ``auto`` :func:`~asp_tune.pack.choose_pack_size` (the network measured on this
    machine with a trial's threads, in the memory one of ``max_concurrent`` pack workers has: a GPU's share
    ``gpus_per_trial``, or on the host a share of its memory; the largest footprint of ``config`` and ``others``,
    the search's other kinds of pack), kept only where :func:`worth_packing`."""
    import torch

    from asp_tune.pack import PackChoice, choose_pack_size

    if requested != "auto":  # choose_pack_size holds it to the trials there are, and says so
        return choose_pack_size(int(requested), trials, None) if int(requested) > 1 and trials > 1 else \
            PackChoice(1, "one trial per process" + (" (as asked)" if int(requested) == 1 else " (one trial)"))
    if gpus_per_trial > 0 and not torch.cuda.is_available():  # measured here, the CPU would speak for the GPUs
        return PackChoice(1, "one trial per process: the trials run on GPUs, and this machine has none to measure "
                             "a pack on (--pack K trains K configurations per pack)")
    from asp_tune.build import build_trainer

    threads = torch.get_num_threads()
    torch.set_num_threads(max(1, int(cpus_per_trial)))
    try:
        trainer = build_trainer(config, arrays=arrays)
        share = min(1.0, gpus_per_trial) if trainer.device.type == "cuda" and gpus_per_trial > 0 else 1 / max_concurrent
        choice = choose_pack_size("auto", trials, trainer, device_share=share, others=others)
    finally:
        torch.set_num_threads(threads)
    if choice.size == 1:
        return choice
    steps = math.ceil(len(trainer.data.train) * min(1.0, config.ratio) / config.batch_size)
    return worth_packing(choice, steps * epochs_total, max_concurrent, trials)


def expected_epochs(trials: int, epochs: int, rungs: tuple[int, ...] | None, eta: int) -> int:
    """The epochs a search of ``trials`` trains in all: every trial to ``epochs``, or under early stopping at
    ``rungs`` the ``1/eta`` best going on past each rung."""
    if not rungs:
        return trials * epochs
    total, alive, before = 0, trials, 0
    for rung in [r for r in rungs if r < epochs] + [epochs]:
        total += alive * (rung - before)
        alive, before = max(1, math.ceil(alive / eta)), rung
    return total


def worth_packing(choice, steps_total: int, max_concurrent: int, trials: int | None = None):
    """``choice`` when packs save more of a search's training (``steps_total`` optimiser steps of its
    configurations in all, ``max_concurrent`` packs at once) than starting their trials' processes costs (a
    packed trial is a process of its own beside its pack worker; at most ``trials`` of them), else one trial
    per process; both estimates in the reason. The saving per step is the one measured, at the run's batch
    size (:func:`~asp_tune.pack.choose_pack_size`), per configuration timed."""
    from asp_tune.pack import AUTO_MEASURED_MEMBERS, PackChoice
    from asp_tune.tune.pack_ray import PROCESS_START_CPU_S

    per_step = (choice.alone_step_s - choice.pack_step_s) / min(choice.size, AUTO_MEASURED_MEMBERS)
    saved = per_step * steps_total / max_concurrent
    at_once = min(choice.size * max_concurrent, trials or choice.size * max_concurrent)
    workers = pack_workers(max_concurrent, at_once, choice.size)
    processes = at_once + 1
    cost = processes * PROCESS_START_CPU_S / max(1, os.cpu_count() or 1)
    if saved <= cost:
        return PackChoice(1, f"one trial per process: {choice.reason.split(': ', 1)[-1]}, but packs of {choice.size} "
                             f"would save about {saved:.1f} s of this search's training against about {cost:.1f} s "
                             f"to start {processes} more processes ({at_once} trials at once in "
                             f"{workers} pack worker{'s' if workers > 1 else ''})", choice.alone_step_s,
                          choice.pack_step_s, choice.memory)
    return PackChoice(choice.size, f"{choice.reason}; about {saved:.0f} s of training saved against {cost:.0f} s "
                                   f"to start {processes} more processes", choice.alone_step_s, choice.pack_step_s,
                      choice.memory)


def _packs(s: HpoSettings, choice, run: dict[str, Any], validate: tuple[int, ...] | None,
           arrays: dict[str, Any] | None, modules: list):
    from asp_tune.tune.pack_ray import pack_job

    return pack_job(choice, s.space, run, validate, arrays, pack_workers(s.max_concurrent, s.total_trials, choice.size),
                    s.cpus_per_trial, s.gpus_per_trial,
                    extensions(), search_paths(modules))


def pack_workers(max_concurrent: int, trials: int, size: int) -> int:
    """Pack workers a search starts: ``max_concurrent``, but none left idle (nor refused for want of room)."""
    return min(max_concurrent, math.ceil(trials / max(1, size)))


def _unchecked(ratio: float) -> str:
    return "full data (every trial trained on all of it)" if ratio >= 1.0 else "proxy (not checked against full data)"


def check_strategy(s: HpoSettings, arrays: dict[str, Any] | None) -> None:
    """The search's strategy (one for all its trials: a space cannot search it), checked against the data's
    task before Ray starts (one that needs classes on regression targets failed every trial); nothing when
    the space searches which data to read."""
    if arrays is None:
        return
    import torch

    from asp_tune.assembly import strategy_for_task
    from asp_tune.tasks import task_for

    cfg = s.trial_config()
    strategy_for_task(cfg, task_for(cfg.task, torch.as_tensor(np.asarray(arrays["train_y"]))))


def check_own_network(s: HpoSettings, arrays: dict[str, Any] | None) -> None:
    """A network of the user's own (an import path, or one registered in this process) built once for the
    space's first configuration before Ray starts, on the host, with a forward of two zero samples: a builder
    that fails or returns no network, or a network with too few outputs, is one error, not every trial's. Nothing for asp_tune's own networks, when the space searches which data to
    read, or where the trials run elsewhere than this host's CPU (GPU trials, a cluster: a builder may need
    what only they have); the random states are left as they were."""
    from asp_tune.imports import is_import_path
    from asp_tune.registry import MODELS

    cfg = s.trial_config()
    if (arrays is None or s.gpus_per_trial > 0 or s.address is not None or str(cfg.device) not in ("auto", "cpu")
            or not (is_import_path(cfg.model) or cfg.model in MODELS.added())):
        return
    import torch

    from asp_tune.assembly import build_network
    from asp_tune.datasets import load_dataset_for
    from asp_tune.proxy_scores import preserved_rng

    from asp_tune.models import zero_forward
    from asp_tune.tasks import task_for
    from asp_tune.trainer import check_outputs

    with preserved_rng():
        data = load_dataset_for(cfg, arrays=arrays)
        network, _ = build_network(cfg, data, torch.device("cpu"))
        try:  # too few outputs: one error now, not every trial's after Ray started
            logits = zero_forward(network, tuple(data.input_shape))
        except Exception:  # noqa: BLE001 - a forward that needs real samples: the trials' first batch says
            return
    if isinstance(logits, torch.Tensor) and logits.dim() == 2:
        task = task_for(cfg.task, torch.as_tensor(np.asarray(arrays["train_y"]))).name
        check_outputs(logits.shape[-1], data.num_classes, task, cfg.model)


def train_samples(s: HpoSettings, arrays: dict[str, Any] | None) -> int | None:
    """About how many samples a trial trains on (its data set's, less the validation share); None when the
    space searches which data to read."""
    if arrays is None:
        return None
    cfg = s.trial_config()
    n = len(arrays["train_y"])
    n = min(n, cfg.subset) if cfg.subset else n
    return max(1, int(n * (1.0 - cfg.val_fraction)))


def _full_data_plan(s: HpoSettings):
    """How the search ends on full data (None: ``decide`` proxy, or a search on full data already); puts the
    top rung of an early-stopping search on all the data."""
    from asp_tune.tune.deciding import FullDataPlan
    from asp_tune.tune.fulldata import no_full_data_top_rung

    if s.decide != "full" or s.ratio >= 1.0:
        return None
    why = no_full_data_top_rung(s.trial_config(), s.rungs(), s.decide,
                                rung_ratios=rung_ratio_values(s.rung_ratios) if s.rung_ratios else None)
    top = s.end_on_full_data()
    rungs = s.rungs()
    return FullDataPlan(top_rung_full=top, first_rung=rungs[0] if top else None, audit=s.audit,
                        audit_trainable=lambda: None, ratio=s.ratio, seed=s.seed, no_top_rung=why)


def _in_python_words(job: SearchJob) -> SearchJob:
    """``job`` whose messages ask for full-data runs as a Python caller does (``audit=``, not ``--audit``)."""
    if job.full_data is not None:
        job.full_data.flag = "audit="
    return job


def run_hpo(settings: HpoSettings, resume: str | None = None, resume_unsigned: bool = False,
            out: str | Path | None = None, overwrite: bool = False) -> SearchResult:
    """Run (or resume) one experiment of asp_tune's own trainable: :func:`job_from_settings`, then
    :func:`~asp_tune.tune.run.run_search`. ``out``: a results folder written as ``asp-tune hpo --out`` writes
    it (``trials.csv``, ``summary.json``, ...; committed only when the search succeeds), with Ray's
    experiment in ``.OUT.ray`` beside it unless the settings name a ``storage_path`` or an ``address``."""
    from asp_tune.errors import RunInterrupted

    try:
        if out is None:
            return run_search(_in_python_words(job_from_settings(settings)), resume=resume,
                              resume_unsigned=resume_unsigned, say_unfinished=True)
        from asp_tune.tune.results import search_into
        from asp_tune.tune.run import experiments_folder

        storage = experiments_folder(out, settings.storage_path, settings.address)
        job = _in_python_words(job_from_settings(dataclasses.replace(settings, storage_path=storage)))
        return search_into(job, out, overwrite=overwrite, resume=resume, resume_unsigned=resume_unsigned,
                           title=f"{settings.algo} r={settings.ratio}")[0]
    except RunInterrupted as exc:  # said in this function's words
        raise exc.hinted("resume=") from None


# ----------------------------------------------------------------------------- compare and correlate


def _retrain_one(config: dict[str, Any], threads: int, extensions: dict | None = None,
                 search_paths: list[str] | None = None) -> dict[str, Any]:
    import torch

    from asp_tune.build import build_trainer
    from asp_tune.config import TrainConfig
    from asp_tune.imports import add_search_paths
    from asp_tune.registry import install_extensions

    add_search_paths(search_paths or ())
    install_extensions(extensions)
    torch.set_num_threads(max(1, threads))
    summary = build_trainer(TrainConfig.from_dict(config)).fit()
    score = summary["score"]
    return {"seed": config["seed"], "score": summary["final_test_score"], f"test_{score}": summary["final_test_score"],
            f"val_{score}": summary["final_val_score"], "constant_test_score": summary["constant_test_score"],
            "seconds": summary["train_seconds"]}


def retrain_full_data(space: SearchSpace, best_config: dict[str, Any], epochs: int, seeds: list[int],
                      device: str, cpus: float, gpus: float) -> list[dict[str, Any]]:
    """Train ``best_config`` on all training data once per seed, in parallel as Ray tasks; each one's
    score is its test accuracy."""
    import ray

    from asp_tune.imports import user_modules

    remote = ray.remote(num_cpus=cpus, num_gpus=gpus)(_retrain_one)
    configs = [space.train_config(best_config, ratio=1.0, metric="none", ratio_schedule="constant",
                                  seed=seed, device=device, epochs=epochs).to_dict() for seed in seeds]
    added = extensions()
    paths = search_paths(user_modules([configs[0]["model"], configs[0]["dataset"],
                                       *(e for entries in added.values() for e in entries.values())]))
    return ray.get([remote.remote(c, max(1, int(cpus)), added, paths) for c in configs])


def compare_settings(base: HpoSettings, ratios: list[float], retrain_seeds: int = 1, control: bool = True,
                     seeds: list[int] | None = None) -> dict[str, Any]:
    """The full-data search (ratio 1.0, strategy none) and each proxy ratio's, same seed and search, with its
    uniformly random control of the same size where ``control``, each pick retrained on full data, once per seed
    of ``seeds`` (None: ``base.seed``) (:func:`asp_tune.tune.compare.run_comparison`)."""
    from asp_tune.tune.compare import run_comparison

    def at(ratio: float, seed: int | None = None, strategy: str | None = None) -> HpoSettings:
        parts = [base.name, f"r{ratio}", None if strategy is None else "control", None if seed is None else f"s{seed}"]
        return dataclasses.replace(base, ratio=ratio, metric="none" if ratio == 1.0 else (strategy or base.metric),
                                   ratio_schedule="constant" if ratio == 1.0 else base.ratio_schedule,
                                   seed=base.seed if seed is None else seed,
                                   name=None if base.name is None else "-".join(p for p in parts if p))

    def retrain(pick: dict[str, Any], seeds: list[int]) -> list[dict[str, Any]]:
        return retrain_full_data(base.space, pick, base.epochs, seeds, base.device, base.cpus_per_trial,
                                 base.gpus_per_trial)

    base.validate()
    ordered = sorted(set(ratios) | {1.0})
    for ratio in ordered:  # every search's settings refused by name before the first one runs
        at(ratio).validate()

    def uniform(ratio: float, strategy: str, seed: int | None) -> Any:
        return job_from_settings(at(ratio, seed, strategy))

    return run_comparison({r: functools.partial(lambda r, seed: job_from_settings(at(r, seed)), r) for r in ordered},
                          retrain, retrain_seeds, control=uniform if control else None,
                          search_seeds=tuple(seeds) if seeds else (None,))


def _cell_trial(config: dict[str, Any], *, space: SearchSpace, run: dict[str, Any], threads: int = 1,
                arrays: dict[str, Any] | None = None, **shipped: Any) -> None:
    from asp_tune.tune.cells import cell_fields
    from asp_tune.tune.trainable import proxy_trial

    proxy_trial(config, space=space, run={**run, **cell_fields(config)}, threads=threads, arrays=arrays, **shipped)


def correlate_space(space: SearchSpace, ratios: list[float], metrics: list[str], *, ratio_schedule: str = "constant",
                    max_concurrent: int = 2, cpus_per_trial: float = 1.0, gpus_per_trial: float = 0.0, seed: int = 0,
                    device: str = "auto", address: str | None = None, storage_path: str | None = None,
                    max_configs: int | None = None, verbose: int = 1,
                    selection: dict[str, Any] | None = None, pack: str | int = HpoSettings.pack) -> dict[str, Any]:
    """Every grid configuration of ``space`` on full data and at every (ratio, metric), in one Ray
    experiment (:func:`asp_tune.tune.correlate.run_correlation`). ``ratio_schedule``: constant by default
    (``dynamic`` is the paper's, as in its Table 5, and ranked worse in bench/baselines.py); ``selection``
    holds selection settings (rule, floor, ...) applied to every proxy cell; ``pack``: configurations per pack
    (``HpoSettings.pack``; the cells of one ratio and strategy share packs)."""
    from asp_tune.config import TrainConfig
    from asp_tune.datasets import read_dataset
    from asp_tune.imports import user_modules
    from asp_tune.tune.algorithms import RANDOM, Context
    from asp_tune.tune.cells import FULL_CELL, cell_fields
    from asp_tune.tune.correlate import cell_space, cells, run_correlation

    from asp_tune.constraints import check_value

    check_value(HpoSettings, "pack", pack)
    pack = str(pack)
    from asp_tune.tune.compare_settings import check_grid_size

    configs = space.grid_configs()[:max_configs]
    check_grid_size(configs)
    names = cells(ratios, metrics)
    epochs = int(space.fixed.get("epochs", TrainConfig.epochs))
    run = {**(selection or {}), "ratio_schedule": ratio_schedule, "seed": seed, "device": device, "epochs": epochs}
    for name in names:  # every cell's settings refused by name before anything is written or started
        space.train_config(configs[0], **{**run, **cell_fields({"cell": name})})
    probe = space.train_config(configs[0], **{**run, **cell_fields({"cell": FULL_CELL})})
    arrays = read_dataset(probe.dataset, probe.data_dir, download=probe.download,  # once, shared by all cells
                          image_size=probe.image_size)
    added = extensions()
    modules = user_modules([probe.model, probe.dataset, *metrics, *(e for entries in added.values()
                                                                    for e in entries.values())])

    trials = len(configs) * len(names)
    sizing = {**run, **cell_fields({"cell": f"{min(ratios)}:{metrics[0]}"})}
    choice = auto_pack_size(pack, space.train_config(configs[0], **sizing), arrays, trials, trials * epochs,
                            max_concurrent, cpus_per_trial, gpus_per_trial,
                            others=lambda measure: space.sizing_configs(sizing, measure))  # a searched width too
    if pack == "auto" and choice.size == 1 and verbose:  # a pack size is said where the packs start
        print(f"[asp-tune] --pack auto: {choice.reason}", file=sys.stderr)
    from asp_tune.tune.pack_ray import pack_job

    packs = pack_job(choice, space, run, None, arrays, pack_workers(max_concurrent, trials, choice.size),
                     cpus_per_trial, gpus_per_trial, added, search_paths(modules))

    def make_trainable():
        from ray import tune

        if packs is not None:
            from asp_tune.tune.pack_ray import TRIAL_RESOURCES, packed_trial

            return tune.with_resources(tune.with_parameters(packed_trial, per_cell=True), TRIAL_RESOURCES)
        return tune.with_resources(
            tune.with_parameters(_cell_trial, space=space, run=run, threads=max(1, int(cpus_per_trial)),
                                 arrays=arrays, extensions=added, search_paths=search_paths(modules)),
            {"cpu": cpus_per_trial, "gpu": gpus_per_trial})

    built = RANDOM.build(Context(epochs, seed=seed, param_space=cell_space(configs, names),
                                 max_concurrent=max_concurrent * choice.size))
    job = SearchJob(make_trainable=make_trainable, built=built, name=experiment_name("asp-correlate", space.name),
                    param_names=["cfg", "cell"], epochs=epochs, num_samples=1,
                    max_concurrent=max_concurrent * choice.size, packs=packs,
                    total_trials=len(configs) * len(names), storage_path=storage_path, address=address,
                    modules=modules, cpus_per_trial=cpus_per_trial, gpus_per_trial=gpus_per_trial, verbose=verbose,
                    label="correlate", summary={"space": space.name, "pack": choice.summary()})
    return run_correlation(job, configs)
