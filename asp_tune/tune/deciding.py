"""Full data decides a search's pick: what is said before it starts, and how it ends.

A :class:`FullDataPlan` rides on a :class:`~asp_tune.tune.run.SearchJob` (built once for asp_tune's own
trainable and for users', :mod:`asp_tune.tune.builtin`, :mod:`asp_tune.tune.user`). An early-stopping
search trains its top rung on all the data; once the search is done, :func:`decide` gives every
configuration its full-data score where it has one (the top rung's final score, or an audit that
trains chosen configurations on full data: a second Ray experiment beside the search, resumable with
it), picks the best on full data, and measures the proxy against full data
(:class:`~asp_tune.tune.fulldata.FullDataAgreement`). The plain computation is in
:mod:`asp_tune.tune.fulldata`; this module runs the pieces around a search.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from typing import Any, Callable

import pandas as pd

from asp_tune.errors import RunInterrupted
from asp_tune.flags import both_spellings
from asp_tune.tune.collect import plain, started_on_all_data
from asp_tune.tune.fulldata import (AUDIT_FILE, CHANCE_MARGIN, CHANGES_FILE, FullDataAgreement, ProxyWatch,
                                    at_chance, audit_size, choose_audit, expected_top, guards_only,
                                    measurement_notice, read_changes, verdict_lines)
from asp_tune.tune.space import plain_values
from asp_tune.tune.storage import join, read_text, write_text

#: The audit's experiment is the search's name with this ending, beside it.
AUDIT_SUFFIX = "-full-data"
#: The column of an audit experiment's space that indexes the configurations it trains.
AUDIT_INDEX = "audit_config"


@dataclass
class FullDataPlan:
    """How a search ends on full data.

    ``top_rung_full``: its last rung trains on all the data (multi-fidelity); ``first_rung``: the epoch
    whose proxy score is paired with the full-data score (None: a trial's best proxy score);
    ``audit``: configurations trained on full data after the search (None: :func:`audit_size` decides), as a
    promoted trial is where the top rung is on full data (the proxy until the last proxy rung, then all the
    data: the top rung's and the audit's scores from one protocol), else on all the data from the start;
    ``audit_trainable()``: the trainable that trains a configuration so, and ``audit_fixed``
    the values its trials get besides the configuration; ``ratio``: the search's ratio;
    ``corrects``: raise the ratio of configurations not yet started when the proxy fails; ``seed``: of
    the audit's random draw;
    ``flag``: how the audit is asked for, in the caller's words (``--audit``, ``audit=``); ``audit_packs``: the
    audit's trials train in packs (a :class:`~asp_tune.tune.pack_ray.PackJob`; None: each alone)."""

    top_rung_full: bool
    first_rung: int | None
    audit: int | None
    audit_trainable: Callable[[], Any]
    ratio: float
    audit_fixed: dict[str, Any] = field(default_factory=dict)
    corrects: bool = True
    seed: int = 0
    flag: str = "--audit"
    audit_packs: Any = None  # a PackJob: the audit's trials train in packs (asp_tune.tune.pack_ray)
    no_top_rung: str = ""  # why an early-stopping search has no top rung on all the data (fulldata.no_full_data_top_rung)

    def expected_pairs(self, configurations: int, rungs: tuple[int, ...] | None) -> float:
        return expected_top(configurations, rungs or ()) if self.top_rung_full else 0.0

    def audit_count(self, configurations: int, rungs: tuple[int, ...] | None) -> int:
        return audit_size(self.audit, configurations, self.expected_pairs(configurations, rungs))

    def watch(self, rungs: tuple[int, ...] | None, epochs: int, mode: str) -> ProxyWatch | None:
        """The live watch of this search's proxy (None when nothing can be corrected)."""
        if not self.corrects or self.ratio >= 1.0:
            return None
        first = self.first_rung if self.first_rung is not None else epochs
        return ProxyWatch(self.ratio, first, epochs, mode, self.top_rung_full)


def say(line: str) -> None:
    print(f"[asp-tune] {line}", file=sys.stderr)


def announce(job) -> list[str]:
    """The lines said before ``job`` starts (a lengthened first rung; a search too small to measure)."""
    lines, plan = [], job.full_data
    configurations, rungs = job.total_trials or job.num_samples, job.rungs
    change = job.summary.get("first_rung_change")
    if change:
        changed = [f"grace period {change['grace_period'][1]} (was {change['grace_period'][0]})"
                   if change["grace_period"][1] != change["grace_period"][0] else "",
                   f"ratio {change['ratio'][1]:g} (was {change['ratio'][0]:g})"
                   if change["ratio"][1] != change["ratio"][0] else ""]
        lines.append(f"the first rung would take {change['steps'][0]} optimiser steps ({change['train_samples']} "
                     f"training samples, batches of {change['batch_size']}); it takes {change['steps'][1]} with "
                     f"{' and '.join(c for c in changed if c)}; {both_spellings('min_first_rung_steps', 0)} keeps them"
                     + ("; at ratio 1 this is a full-data search, not a proxy: more training data or a smaller "
                        "batch keeps a proxy" if change["ratio"][1] >= 1.0 > change["ratio"][0] else ""))
    if plan is not None:
        if plan.no_top_rung:
            audited = plan.audit_count(configurations, rungs)
            lines.append(f"no top rung on all the data ({plan.no_top_rung}): " + (
                f"after the search, an audit trains {audited} configurations on all the data from the start, and "
                "the best of them is the pick" if audited else "with no audit either, the proxy's best is the "
                "pick, unchecked"))
        pairs = plan.expected_pairs(configurations, rungs) + plan.audit_count(configurations, rungs)
        notice = measurement_notice(configurations, pairs, rungs, plan.flag, plan.top_rung_full)
        if notice:
            lines.append(notice)
        costly = _audit_outweighs_the_proxy(job, configurations)
        if costly:
            lines.append(costly)
    for line in lines:
        say(line)
    return lines


def _audit_outweighs_the_proxy(job, configurations: int) -> str:
    """One line where a search without rungs, with its audit, would train more data passes than the same search
    on full data ("" else): its trials' passes at the data share of an epoch, plus the audit's full passes."""
    plan: FullDataPlan = job.full_data
    scale = job.budget.get("scale")
    if plan.top_rung_full or job.rungs or not scale or scale >= 1.0:
        return ""
    audit, epochs = plan.audit_count(configurations, job.rungs), job.epochs
    proxy, full = configurations * epochs * scale + audit * epochs, configurations * epochs  # scale: a full first
    # epoch included (data_scale)
    if not audit or proxy < full:
        return ""
    sep = "" if plan.flag.endswith("=") else " "
    return (f"{plan.flag}{sep}{audit} of {configurations} configurations trains them again on all the data: about "
            f"{proxy:.0f} data passes in all, against {full:.0f} for the same search on full data, so the proxy "
            f"saves nothing here (a smaller {plan.flag}{sep}N, more configurations, or an early-stopping search "
            "whose top rung trains on all the data)")


def proxy_scores(trials: pd.DataFrame, histories: dict[str, pd.DataFrame], metric: str,
                 first_rung: int | None) -> dict[str, float]:
    """Each trial's proxy score: at ``first_rung``, or its best reported score. A trial started on all the data
    (the ratio raised to 1 while the search ran) has none: its scores are full data's."""
    out = {}
    on_all = started_on_all_data(histories)
    for _, row in trials[trials["status"] != "ERROR"].iterrows():
        trial = row["trial_id"]
        if trial in on_all:
            continue
        if first_rung is None:
            if row["best_score"] == row["best_score"]:
                out[trial] = float(row["best_score"])
            continue
        hist = histories.get(trial)
        if hist is not None and metric in hist and "epoch" in hist:
            at = hist[hist["epoch"] == first_rung][metric].dropna()
            if len(at):
                out[trial] = float(at.iloc[-1])
    return out


def ended_on_a_subset(histories: dict[str, pd.DataFrame], epochs: int) -> dict[str, float]:
    """The trials whose last epoch (``epochs``) trained on part of the data, by their reported ``proxy_ratio``
    there: a strategy that keeps its own subset (a static proxy) does not follow a ratio schedule to 1."""
    out = {}
    for trial, hist in histories.items():
        if "epoch" in hist and "proxy_ratio" in hist:
            last = hist[hist["epoch"] == epochs]["proxy_ratio"].dropna()
            if len(last) and float(last.iloc[-1]) < 1.0 - 1e-9:
                out[trial] = float(last.iloc[-1])
    return out


def _say_subset(subset: dict[str, float], where: str) -> None:
    """Warn that the trials of ``subset`` (trial: ratio) ended ``where`` on part of the data."""
    if subset:
        ratios = ", ".join(f"{r:g}" for r in sorted({round(r, 4) for r in subset.values()}))
        say(f"warning: {len(subset)} trial{'s' if len(subset) != 1 else ''} ended {where} on a subset of the data "
            f"(ratio {ratios} at the last epoch: a strategy that keeps its own subset ignores the ratio schedule), "
            "so their scores are the proxy's, not full data's")


def top_rung_scores(trials: pd.DataFrame, histories: dict[str, pd.DataFrame], metric: str,
                    epochs: int) -> dict[str, float]:
    """The final (full-data) score of every trial that finished the top rung."""
    out = {}
    for trial, hist in histories.items():
        if "epoch" in hist and metric in hist:
            last = hist[hist["epoch"] == epochs][metric].dropna()
            if len(last):
                out[trial] = float(last.iloc[-1])
    return out


def audit_job(job, configs: list[dict[str, Any]], search: str):
    """The audit's :class:`~asp_tune.tune.run.SearchJob` (the experiment ``search`` + :data:`AUDIT_SUFFIX`): each of
    ``configs`` trained once on full data for the search's epochs, no early stopping, as many at once as the
    search ran."""
    from ray import tune

    from asp_tune.tune.algorithms import RANDOM, Context
    from asp_tune.tune.job import SearchJob

    names = list(configs[0]) if configs else []
    space = {AUDIT_INDEX: tune.grid_search(list(range(len(configs)))), **job.full_data.audit_fixed,
             **{n: tune.sample_from(lambda spec, n=n: configs[spec.config[AUDIT_INDEX]][n]) for n in names}}
    at_once = job.full_data.audit_packs.plan.trials_at_once if job.full_data.audit_packs else job.max_concurrent or 2
    built = RANDOM.build(Context(job.epochs, seed=0, param_space=space, max_concurrent=at_once))
    return SearchJob(make_trainable=job.full_data.audit_trainable, built=built, name=search + AUDIT_SUFFIX,
                     param_names=[AUDIT_INDEX, *names], epochs=job.epochs, metric=job.metric, mode=job.mode,
                     num_samples=1, max_concurrent=at_once, total_trials=len(configs),
                     storage_path=job.storage_path, address=job.address, modules=job.modules,
                     cpus_per_trial=job.cpus_per_trial, gpus_per_trial=job.gpus_per_trial,
                     max_failures=job.max_failures, verbose=job.verbose, label="full data",
                     settings={"configs": configs, "audit_of": search}, resume_keys=("configs",),
                     summary={"audit_of": search},
                     sparse_reports=True, keep_checkpoints=job.keep_checkpoints, packs=job.full_data.audit_packs)


def _same_search(record: Any, known: dict[str, dict[str, Any]], name: str) -> bool:
    """Whether an audit record read back names trials of this search (``known``: each trial's configuration, from
    its signed state) with exactly their configurations, and the audit experiment beside it."""
    try:
        trials, configs = list(record["trials"]), list(record["configs"])
        return (record["name"] == name + AUDIT_SUFFIX and len(trials) == len(configs) > 0
                and all(t in known and json.dumps(known[t], sort_keys=True, default=str) ==
                        json.dumps(c, sort_keys=True, default=str) for t, c in zip(trials, configs)))
    except (TypeError, KeyError, ValueError):
        return False


def _audit(job, experiment: str, chosen: list[str], configs: list[dict[str, Any]], run_search: Callable,
           known: dict[str, dict[str, Any]]):
    """Run (or, when the search is resumed, finish) the audit of ``chosen`` with ``run_search``; its result.
    ``known``: every trial's configuration (an audit record read back must agree with it)."""
    from ray import tune

    record_path = join(experiment, AUDIT_FILE)
    try:
        record = json.loads(read_text(record_path))
    except (OSError, ValueError):
        record = None
    search = experiment.rstrip("/").rsplit("/", 1)[-1]  # the experiment's own name (a resumed job's is new)
    if record is not None and not _same_search(record, known, search):
        say(f"warning: {AUDIT_FILE} does not name this search's trials with their configurations (changed by "
            "someone else?): the audit is drawn again")
        record = None
    if record is None:
        record = {"name": search + AUDIT_SUFFIX, "trials": chosen, "configs": plain_values(configs)}  # True: true
        write_text(record_path, json.dumps(record, default=str))
    parent = experiment.rstrip("/").rsplit("/", 1)[0]
    audit = audit_job(job, record["configs"], search)
    audit.storage_path = parent
    target = join(parent, record["name"])
    resume = target if tune.Tuner.can_restore(target) else None
    how = "to the end as a promoted trial (the top rung on all the data)" if job.full_data.top_rung_full \
        else "on all the data"
    bounded = [flag for key, flag in (("time_budget_s", "--time-budget-s"), ("data_passes", "--data-passes-budget"))
               if (job.budget or {}).get(key)]
    beyond = f"; beyond {' and '.join(bounded)}, which bound the search alone" if bounded else ""
    say(f"full data: training {len(record['configs'])} configuration{'s' if len(record['configs']) != 1 else ''} "
        f"{how} ({'resumed' if resume else 'the audit'}{beyond})")
    try:
        return record["trials"], run_search(audit, resume=resume)
    except RunInterrupted as exc:  # the search's folder is what a resume takes; it finishes this audit
        raise RunInterrupted(exc.message, experiment) from None


def decide(job, trials: pd.DataFrame, histories: dict[str, pd.DataFrame], summary: dict[str, Any],
           experiment: str, run_search: Callable) -> tuple[pd.DataFrame, dict[str, Any]]:
    """End ``job``'s finished search on full data: full-data scores from the top rung and an audit (run by
    ``run_search``), the pick made on them, the agreement with the proxy; ``trials`` gains ``proxy_score``,
    ``full_data_score`` and ``full_data_from``, and ``summary`` the pick and its ``full_data`` section."""
    plan: FullDataPlan = job.full_data
    proxy = proxy_scores(trials, histories, job.metric, plan.first_rung)
    at_end = top_rung_scores(trials, histories, job.metric, job.epochs)
    on_all_data = started_on_all_data(histories)  # the ratio raised to 1 before they started: another protocol
    full, partial = {}, {}  # partial: the trials whose last epoch trained on a subset (no full-data score)
    if plan.top_rung_full:
        partial = ended_on_a_subset(histories, job.epochs)
        full = {t: v for t, v in at_end.items() if t not in partial and t not in on_all_data}
        _say_subset({t: r for t, r in partial.items() if t in at_end}, "the top rung")
    sources = {t: "top rung" for t in full}
    failed = set(trials.loc[trials["status"] == "ERROR", "trial_id"])
    on_all = {t: at_end[t] for t in on_all_data if t in at_end and t not in failed}
    full.update(on_all)  # trained on all the data to the end: scored without an audit
    sources.update({t: "all the data" for t in on_all})
    count = plan.audit_count(len(trials), job.rungs)
    candidates = pd.DataFrame({"trial_id": [t for t in proxy if t not in full],
                               "proxy_score": [proxy[t] for t in proxy if t not in full]})
    chosen = choose_audit(candidates, count, job.mode, plan.seed, "proxy_score",
                          top_only=guards_only(plan.audit, len(trials)))
    audit_cost = {"wall_time_s": 0.0, "data_passes": 0.0, "epochs": 0, "experiment": None, "failed": []}
    if chosen:
        by_id = trials.set_index("trial_id")
        known = {t: {n: plain(by_id.loc[t, f"config/{n}"]) for n in job.param_names} for t in by_id.index}
        chosen, result = _audit(job, experiment, chosen, [known[t] for t in chosen], run_search, known)
        subset = ended_on_a_subset(result.histories, job.epochs)
        _say_subset(subset, "the audit")
        for _, row in result.trials.iterrows():
            index = row.get(f"config/{AUDIT_INDEX}")
            if row["status"] != "ERROR" and index == index and row["final_score"] == row["final_score"] \
                    and row["trial_id"] not in subset:
                full[chosen[int(index)]] = float(row["final_score"])
                sources[chosen[int(index)]] = "audit"
        failed = result.trials[result.trials["status"] == "ERROR"]
        audit_cost = {"wall_time_s": float(result.summary["wall_time_s"]),
                      "data_passes": float(result.summary["data_passes_total"]),
                      "epochs": int(result.summary.get("epochs_total") or 0),
                      "trial_seconds": dict(result.summary.get("trial_seconds") or {}),
                      "experiment": result.summary.get("experiment_path"),
                      "failed": [str(e) for e in failed["error"]] if "error" in failed else ["?"] * len(failed)}
    agreement = FullDataAgreement(job.mode, more=f"{plan.flag}{'' if plan.flag.endswith('=') else ' '}N")
    configurations = {t: tuple(repr(v) for v in row) for t, row in zip(
        trials["trial_id"], trials[[f"config/{n}" for n in job.param_names]].itertuples(index=False))}
    paired: set[tuple] = set()
    for trial, score in full.items():  # a configuration trained twice (a grid repeated) is one pair, not two
        configuration = configurations.get(trial, (trial,))
        if trial in proxy and configuration not in paired:
            agreement.add(trial, proxy[trial], score, sources[trial])
            paired.add(configuration)
    trials = trials.assign(proxy_score=trials["trial_id"].map(proxy), full_data_score=trials["trial_id"].map(full),
                           full_data_from=trials["trial_id"].map(sources).fillna(""))
    return trials, _decided(job, trials, histories, summary, agreement, audit_cost, experiment, partial)


def _decided(job, trials: pd.DataFrame, histories: dict[str, pd.DataFrame], summary: dict[str, Any],
             agreement: FullDataAgreement, audit_cost: dict[str, Any], experiment: str,
             partial: dict[str, float]) -> dict[str, Any]:
    plan: FullDataPlan = job.full_data
    scored = trials[trials["full_data_score"].notna()]
    before = {"trial_id": summary["best_trial_id"], "config": summary["best_config"], "score": summary["best_score"]}
    top_cost = _top_rung_cost({t: h for t, h in histories.items() if t not in partial}, job.rungs) \
        if plan.top_rung_full else {"train_seconds": 0.0, "data_passes": 0.0}
    search_wall = float(summary["wall_time_s"])
    trained = float(trials["seconds"].fillna(0).sum()) or 1.0
    # the top rung's training seconds' share of the search's wall (the search's overhead shared out by training
    # time), and the audit's wall: an estimate. In three demos it read 2.7-3.3 s where the same search with the
    # proxy alone picking (its first rung as long) ran 2.1-3.1 s faster; the top rung's own training seconds
    # read 1.5-1.8 s
    full_wall = audit_cost["wall_time_s"] + top_cost["train_seconds"] * search_wall / trained
    wall = search_wall + audit_cost["wall_time_s"]
    changes = read_changes(join(experiment, CHANGES_FILE)).get("changes", [])
    section = {**agreement.summary(), "line": agreement.line(),
               "top_rung_on_full_data": plan.top_rung_full, "top_rung_trials": int((trials["full_data_from"] ==
                                                                                    "top rung").sum()),
               "audited": int((trials["full_data_from"] == "audit").sum()),
               "trained_on_all_data": int((trials["full_data_from"] == "all the data").sum()),
               "audit_experiment": audit_cost["experiment"], "audit_failed": len(audit_cost["failed"]),
               "cost": {"wall_time_s": full_wall, "share_of_wall": full_wall / wall if wall else None,
                        "audit_wall_time_s": audit_cost["wall_time_s"],
                        "top_rung_train_seconds": top_cost["train_seconds"],
                        "data_passes": audit_cost["data_passes"] + top_cost["data_passes"],
                        "note": "the top rung's share is its training seconds' share of the search's; the audit "
                                "is outside --time-budget-s and --data-passes-budget, which bound the search"},
               "ratio_changes": changes,
               "did_not_learn": _did_not_learn(trials, histories, job.metric, plan.first_rung, job.mode)}
    constants = _constant_scores(histories)
    section["constant_score"] = next(iter(constants.values()), None)
    section["nothing_learnt"] = at_chance(scored["full_data_score"].tolist(),
                                          [constants.get(t, math.nan) for t in scored["trial_id"]], job.mode)
    if audit_cost["failed"]:
        say(f"warning: {len(audit_cost['failed'])} of the audit's trials failed on full data and decide nothing "
            f"(the first: {audit_cost['failed'][0]}); see {audit_cost['experiment']}")
    seconds = dict(summary.get("trial_seconds") or {})
    for part, value in (audit_cost.get("trial_seconds") or {}).items():  # the audit's trials are the search's cost
        seconds[part] = float(seconds.get(part) or 0.0) + float(value or 0.0)
    summary = {**summary, "search_wall_time_s": search_wall, "wall_time_s": wall,
               "data_passes_total": float(summary["data_passes_total"]) + audit_cost["data_passes"],
               **({"epochs_total": int(summary["epochs_total"]) + audit_cost.get("epochs", 0)}
                  if "epochs_total" in summary else {}),
               **({"trial_seconds": seconds} if seconds else {})}
    if not len(scored):
        section["pick_changed"] = False
        summary.update(decided_by="proxy (no configuration has a full-data score)", full_data=section)
        say("no configuration has a full-data score (the top rung and the audit trained none to the end): "
            "the pick is the proxy's, not checked against full data")
        return summary
    top = scored["full_data_score"].max() if job.mode == "max" else scored["full_data_score"].min()
    tied = scored[scored["full_data_score"] == top]  # the search's own pick where it ties for the best
    best = next((row for _, row in tied.iterrows() if row["trial_id"] == before["trial_id"]), None)
    if best is None:  # else the best proxy score, then the configuration: never the trials' order (a resumed
        # search listed them otherwise and picked another of two tied configurations)
        proxy = tied["proxy_score"].fillna(-math.inf if job.mode == "max" else math.inf)
        keys = pd.DataFrame({"proxy": -proxy if job.mode == "max" else proxy,
                             "config": [repr([plain(row[f"config/{n}"]) for n in job.param_names])
                                        for _, row in tied.iterrows()]}, index=tied.index)
        best = tied.loc[keys.sort_values(["proxy", "config"], kind="stable").index[0]]
    if len(tied) > 1:
        section["tied_for_best"] = len(tied)
        say(f"{len(tied)} configurations tie for the best full-data score ({float(top):.4f}): the pick is "
            + ("the search's own" if best["trial_id"] == before["trial_id"] else "the best proxy score's among them"))
    section["pick_changed"] = best["trial_id"] != before["trial_id"]
    section["search_pick"] = {**before, "full_data_score": _known(trials, before["trial_id"])}
    summary.update(best_trial_id=best["trial_id"], best_score=float(best["full_data_score"]),
                   best_config={n: plain(best[f"config/{n}"]) for n in job.param_names},
                   decided_by="full data", full_data=section)
    if job.metric == "val_accuracy":
        summary["best_val_accuracy"] = float(best["full_data_score"])
    on_all = f", {section['trained_on_all_data']} trained on all of it" if section["trained_on_all_data"] else ""
    say(f"full data decided the pick ({section['top_rung_trials']} on the top rung, {section['audited']} "
        f"audited{on_all}; {full_wall:.0f} s, {100 * section['cost']['share_of_wall']:.0f}% of the wall time): "
        f"{agreement.line()}")
    for line in verdict_lines(agreement, agreement.regret() if agreement.measured else None,
                              "the proxy's best among the configurations with both scores"):
        say(f"warning: {line}")
    if section["did_not_learn"]:
        say(f"warning: {section['did_not_learn']}")
    if section["nothing_learnt"]:
        say(f"warning: no configuration learnt, on full data either: all {len(scored)} full-data scores are within "
            f"{CHANCE_MARGIN} of the constant predictor's ({section['constant_score']:.4f}), so the pick is no "
            "better than chance; more epochs or other ranges of the space would")
    return summary


def _constant_scores(histories: dict[str, pd.DataFrame]) -> dict[str, float]:
    """Each trial's constant predictor's score, as it reported it (``val_constant``; trials without one left out)."""
    return {t: float(h["val_constant"].dropna().iloc[-1]) for t, h in histories.items()
            if "val_constant" in h and h["val_constant"].notna().any()}


def _known(trials: pd.DataFrame, trial: str) -> float | None:
    row = trials[trials["trial_id"] == trial]
    value = row["full_data_score"].iloc[0] if len(row) else None
    return None if value is None or value != value else float(value)


def _did_not_learn(trials: pd.DataFrame, histories: dict[str, pd.DataFrame], metric: str, first_rung: int | None,
                   mode: str) -> str:
    """One line when the proxy's scores at the first rung are at chance while full data's are not ("" else)."""
    if first_rung is None:
        return ""
    scores, constants = [], []
    for hist in histories.values():
        if "val_constant" in hist and metric in hist and "epoch" in hist:
            at = hist[hist["epoch"] == first_rung]
            if len(at) and at[metric].notna().any():
                scores.append(float(at[metric].dropna().iloc[-1]))
                constants.append(float(at["val_constant"].iloc[-1]))
    full = trials["full_data_score"].dropna().tolist()
    if not at_chance(scores, constants, mode) or not constants:
        return ""
    if full and at_chance(full, [constants[0]] * len(full), mode):
        return ""
    return (f"the proxy's scores at the first rung (epoch {first_rung}) are at chance (the constant predictor's "
            f"{constants[0]:.4f}) while full data's are not: the proxy trials did not learn; a larger ratio or "
            "grace period would")


def _top_rung_cost(histories: dict[str, pd.DataFrame], rungs: tuple[int, ...] | None) -> dict[str, float]:
    """Training seconds and data passes the trials spent after the last proxy rung (on full data)."""
    seconds = passes = 0.0
    if not rungs or len(rungs) < 2:
        return {"train_seconds": 0.0, "data_passes": 0.0}
    for hist in histories.values():
        if "epoch" not in hist:
            continue
        before, after = hist[hist["epoch"] <= rungs[-2]], hist[hist["epoch"] > rungs[-2]]
        if not len(after):
            continue
        for column, total in (("train_seconds_total", "seconds"), ("data_passes", "passes")):
            if column in hist:
                start = float(before[column].dropna().iloc[-1]) if len(before) and before[column].notna().any() else 0.0
                spent = float(after[column].dropna().iloc[-1]) - start if after[column].notna().any() else 0.0
                if total == "seconds":
                    seconds += spent
                else:
                    passes += spent
    return {"train_seconds": seconds, "data_passes": passes}


