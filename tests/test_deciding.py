"""How a finished search ends on full data (asp_tune.tune.deciding), and how a comparison judges a pick, on
constructed searches: no Ray session, the audit's search handed in."""

import json

import numpy as np
import pandas as pd
import pytest
import torch

from asp_tune.tune.compare import compare_runs
from asp_tune.tune.deciding import AUDIT_FILE, AUDIT_INDEX, FullDataPlan, announce, decide
from asp_tune.tune.job import SearchJob, SearchResult


def _job(top_rung_full: bool, audit=None, rungs=(1, 3, 4), num_samples=8):
    plan = FullDataPlan(top_rung_full=top_rung_full, first_rung=rungs[0] if top_rung_full else None, audit=audit,
                        audit_trainable=lambda: None, ratio=0.3)
    return SearchJob(make_trainable=lambda: None, built=None, name="search", param_names=["x"], epochs=rungs[-1],
                     rungs=rungs if top_rung_full else None, num_samples=num_samples, full_data=plan)


def _search(proxy: dict[str, float], full: dict[str, float], epochs=4, first=1):
    """Trials t0..: proxy scores at the first rung; those in ``full`` reached the (full-data) top rung."""
    rows, histories = [], {}
    for i, (trial, score) in enumerate(proxy.items()):
        reached = epochs if trial in full else first
        hist = pd.DataFrame({"epoch": [first, epochs] if trial in full else [first],
                             "val_accuracy": [score, full[trial]] if trial in full else [score],
                             "data_passes": [0.3, 1.6] if trial in full else [0.3],
                             "train_seconds_total": [1.0, 4.0] if trial in full else [1.0]})
        histories[trial] = hist
        rows.append({"trial_id": trial, "config/x": float(i), "best_score": hist["val_accuracy"].max(),
                     "final_score": hist["val_accuracy"].iloc[-1], "status": "TERMINATED" if trial in full else
                     "STOPPED", "epochs": reached, "seconds": hist["train_seconds_total"].iloc[-1]})
    trials = pd.DataFrame(rows)
    best = trials.loc[trials["best_score"].idxmax()]
    summary = {"best_trial_id": best["trial_id"], "best_config": {"x": best["config/x"]},
               "best_score": best["best_score"], "wall_time_s": 10.0, "data_passes_total": 5.0}
    return trials, histories, summary


def _no_audit(*args, **kwargs):
    raise AssertionError("no audit was asked for")


def test_the_top_rung_on_full_data_picks_the_best_there_and_pairs_it_with_the_first_rung(tmp_path, capsys):
    proxy = {"t0": 0.50, "t1": 0.60, "t2": 0.70, "t3": 0.40}
    trials, histories, summary = _search(proxy, {"t1": 0.90, "t2": 0.80})
    trials, summary = decide(_job(True, audit=0), trials, histories, summary, str(tmp_path), _no_audit)
    assert summary["decided_by"] == "full data" and summary["best_trial_id"] == "t1"
    assert summary["best_score"] == 0.90 and summary["best_config"] == {"x": 1.0}
    section = summary["full_data"]
    assert (section["pairs"], section["top_rung_trials"], section["audited"]) == (2, 2, 0)
    assert section["regret_of_proxy_pick"] == pytest.approx(0.10)  # the first rung preferred t2
    assert section["measured"] is False and section["trusted"] is None
    assert section["cost"]["data_passes"] == pytest.approx(2 * 1.3) and section["cost"]["top_rung_train_seconds"] == 6
    assert trials.set_index("trial_id")["full_data_from"].to_dict() == {"t0": "", "t1": "top rung", "t2": "top rung",
                                                                       "t3": ""}
    assert "full data decided the pick" in capsys.readouterr().err


class _AuditSearch:
    """The audit's search: full-data scores by configuration ``x``, and the jobs it was handed."""

    def __init__(self, full_by_x: dict[float, float], last_ratio_by_x: dict[float, float] | None = None):
        self.full_by_x, self.jobs, self.resumes = full_by_x, [], []
        self.last_ratio_by_x = last_ratio_by_x or {}  # the ratio an audited configuration's last epoch reported

    def __call__(self, job, resume=None):
        self.jobs.append(job)
        self.resumes.append(resume)
        configs = job.settings["configs"]
        trials = pd.DataFrame([{"trial_id": f"a{i}", f"config/{AUDIT_INDEX}": i, "config/x": c["x"],
                                "final_score": self.full_by_x[c["x"]], "status": "TERMINATED"}
                               for i, c in enumerate(configs)])
        histories = {f"a{i}": pd.DataFrame({"epoch": [job.epochs],
                                            "proxy_ratio": [self.last_ratio_by_x.get(c["x"], 1.0)]})
                     for i, c in enumerate(configs)}
        return SearchResult(trials, {"wall_time_s": 3.0, "data_passes_total": 4.0 * len(configs),
                                     "epochs_total": 4 * len(configs), "experiment_path": "audit"},
                            histories=histories)


def test_a_pick_tied_for_best_on_full_data_stays_and_a_repeated_configuration_is_one_pair(tmp_path):
    """A tie moved the pick to the first tied trial (pick_changed with regret 0); a grid repeated twice counted
    16 pairs of 8 configurations, narrowing the interval and calling the proxy trusted."""
    proxy = {"t0": 0.5, "t1": 0.7, "t2": 0.6, "t3": 0.4}
    trials, histories, summary = _search(proxy, {"t0": 0.9, "t1": 0.9, "t2": 0.8})
    summary.update(best_trial_id="t1", best_config={"x": 1.0})  # the search's own pick, after t0 in order
    trials, summary = decide(_job(True, audit=0), trials, histories, summary, str(tmp_path), _no_audit)
    assert summary["best_trial_id"] == "t1" and not summary["full_data"]["pick_changed"]
    assert summary["full_data"]["regret_of_proxy_pick"] == 0.0
    proxy = {f"t{i}": 0.5 + 0.01 * (i % 4) for i in range(8)}  # t4..t7 repeat t0..t3
    trials, histories, summary = _search(proxy, {f"t{i}": 0.6 + 0.05 * (i % 4) for i in range(8)})
    trials["config/x"] = [float(i % 4) for i in range(8)]
    trials, summary = decide(_job(True, audit=0), trials, histories, summary, str(tmp_path), _no_audit)
    assert summary["full_data"]["pairs"] == 4


def test_a_tie_on_full_data_is_broken_by_the_proxy_score_never_by_the_trials_order(tmp_path, capsys):
    """Two configurations tied on full data and the pick was the first in the trials' order: a resumed search
    (which lists them otherwise) reported the other one, with identical scores."""
    proxy, full = {"t0": 0.5, "t1": 0.7, "t2": 0.6, "t3": 0.8}, {"t0": 0.9, "t1": 0.9, "t2": 0.9, "t3": 0.8}
    picks = []
    for order in ([0, 1, 2, 3], [3, 2, 1, 0]):
        trials, histories, summary = _search(proxy, full)
        trials = trials.iloc[order].reset_index(drop=True)
        summary.update(best_trial_id="t3", best_config={"x": 3.0})  # the search's pick lost on full data
        _, decided = decide(_job(True, audit=0), trials, histories, summary, str(tmp_path), _no_audit)
        picks.append(decided["best_trial_id"])
        assert decided["full_data"]["tied_for_best"] == 3
    assert picks == ["t1", "t1"]  # the best proxy score among the tied
    assert "3 configurations tie for the best full-data score (0.9000): the pick is the best proxy score's" \
        in capsys.readouterr().err


def test_a_proxy_that_ranks_well_but_whose_pick_loses_is_warned(tmp_path, capsys):
    """'the proxy ranks like full data' stood alone where its own pick lost 9 points on full data."""
    full = {f"t{i}": 0.5 + 0.05 * i for i in range(10)}
    proxy = {**{f"t{i}": 0.3 + 0.02 * i for i in range(10)}, "t8": 0.9}  # t8 first: tau high, t9 lost
    trials, histories, summary = _search(proxy, full)
    summary.update(best_trial_id="t8", best_config={"x": 8.0})
    _, decided = decide(_job(True, audit=0), trials, histories, summary, str(tmp_path), _no_audit)
    err = capsys.readouterr().err
    assert decided["full_data"]["trusted"] and decided["best_trial_id"] == "t9"
    assert "warning: the proxy's best among the configurations with both scores lost 0.0500 of full-data score" in err


def test_the_audit_s_trial_seconds_join_the_search_s_breakdown(tmp_path):
    proxy = {f"t{i}": 0.9 - 0.05 * i for i in range(8)}
    trials, histories, summary = _search(proxy, {}, epochs=4, first=4)
    summary["trial_seconds"] = {"startup": 1.0, "training": 2.0, "validation": 0.5, "proxy_model": 0.0}
    summary["epochs_total"] = 10  # the audit's 8 x 4 epochs join them, as its data passes do

    class Timed(_AuditSearch):
        def __call__(self, job, resume=None):
            result = super().__call__(job, resume)
            result.summary["trial_seconds"] = {"startup": 3.0, "training": 4.0, "validation": 1.0, "proxy_model": 0.0}
            return result

    _, decided = decide(_job(False, audit=8), trials, histories, summary, str(tmp_path),
                        Timed({float(i): 0.5 for i in range(8)}))
    assert decided["trial_seconds"] == {"startup": 4.0, "training": 6.0, "validation": 1.5, "proxy_model": 0.0}
    assert decided["epochs_total"] == 10 + 8 * 4


def test_an_audit_measures_a_misranking_proxy_and_full_data_picks(tmp_path):
    proxy = {f"t{i}": 0.9 - 0.05 * i for i in range(8)}  # the proxy prefers t0
    full_by_x = {float(i): 0.5 + 0.05 * i for i in range(8)}  # full data prefers t7
    trials, histories, summary = _search(proxy, {}, epochs=4, first=4)
    search = _AuditSearch(full_by_x)
    job = _job(False, audit=8)
    trials, summary = decide(job, trials, histories, summary, str(tmp_path), search)
    assert len(search.jobs) == 1
    assert search.jobs[0].epochs == 4 and search.jobs[0].total_trials == 8
    assert summary["best_trial_id"] == "t7" and summary["best_score"] == pytest.approx(0.85)
    section = summary["full_data"]
    assert section["measured"] and section["misranks"] and section["trusted"] is False
    assert section["kendall_tau"] == pytest.approx(-1.0) and section["pick_changed"]
    assert section["search_pick"]["trial_id"] == "t0" and section["search_pick"]["full_data_score"] == 0.5
    assert summary["wall_time_s"] == 13.0 and summary["data_passes_total"] == 5.0 + 32.0
    assert section["cost"]["audit_wall_time_s"] == 3.0


def test_a_resumed_search_finishes_the_audit_it_recorded(tmp_path):
    experiment = tmp_path / "search"
    experiment.mkdir()
    recorded = {"name": "search-full-data", "trials": ["t5", "t6"], "configs": [{"x": 5.0}, {"x": 6.0}]}
    (experiment / AUDIT_FILE).write_text(json.dumps(recorded))
    trials, histories, summary = _search({f"t{i}": 0.5 for i in range(8)}, {}, epochs=4, first=4)
    search = _AuditSearch({float(i): 0.1 * i for i in range(8)})
    trials, summary = decide(_job(False, audit=3), trials, histories, summary, str(experiment), search)
    assert search.jobs[0].settings["configs"] == recorded["configs"] and search.jobs[0].name == "search-full-data"
    assert trials.set_index("trial_id")["full_data_from"].eq("audit").sum() == 2
    assert summary["best_trial_id"] == "t6"


def test_an_interrupted_audit_says_to_resume_the_search_and_failed_audit_trials_are_said(tmp_path, capsys):
    from asp_tune.errors import RunInterrupted

    experiment = tmp_path / "search"
    experiment.mkdir()
    trials, histories, summary = _search({f"t{i}": 0.5 + 0.01 * i for i in range(8)}, {}, epochs=4, first=4)

    def interrupted(job, resume=None):
        raise RunInterrupted("interrupted by SIGINT; no results were committed", str(tmp_path / job.name))

    with pytest.raises(RunInterrupted) as caught:  # --resume takes the search's folder, not the audit's
        decide(_job(False, audit=3), trials, histories, summary, str(experiment), interrupted)
    assert caught.value.experiment_path == str(experiment)

    class OneFails(_AuditSearch):
        def __call__(self, job, resume=None):
            result = super().__call__(job, resume)
            result.trials.loc[0, ["status", "final_score"]] = ["ERROR", float("nan")]
            result.trials["error"] = ["ValueError: invalid optimizer", "", ""]
            return result

    trials, summary = decide(_job(False, audit=3), trials, histories, summary, str(experiment),
                             OneFails({float(i): 0.1 * i for i in range(8)}))
    assert summary["full_data"]["audited"] == 2 and summary["full_data"]["audit_failed"] == 1
    assert "1 of the audit's trials failed on full data and decide nothing (the first: ValueError: invalid " \
           "optimizer)" in capsys.readouterr().err


def test_trials_started_on_all_the_data_are_no_proxy_in_the_agreement(tmp_path):
    """After the ratio is raised to 1, the trials started then report full-data scores at the first rung:
    counted as the proxy's, they made 'measured' from pairs that measured nothing."""
    proxy = {f"t{i}": 0.375 for i in range(4)} | {f"t{i}": 0.5 + 0.05 * i for i in range(4, 8)}
    full = {f"t{i}": 0.5 + 0.05 * i for i in range(8)}
    trials, histories, summary = _search(proxy, full, epochs=4, first=1)
    for i, trial in enumerate(proxy):
        histories[trial]["start_ratio"] = 0.3 if i < 4 else 1.0
    trials, summary = decide(_job(True, audit=0), trials, histories, summary, str(tmp_path), _no_audit)
    section = summary["full_data"]
    assert section["pairs"] == 4 and not section["measured"]
    assert trials.set_index("trial_id")["proxy_score"].notna().sum() == 4
    # trained on all the data from their start, not as the top rung's promoted trials: said so
    assert (trials.set_index("trial_id")["full_data_from"] == "all the data").sum() == 4
    assert (section["top_rung_trials"], section["trained_on_all_data"]) == (4, 4)


def test_a_top_rung_trained_on_a_subset_is_no_full_data_score(tmp_path, capsys):
    """A strategy that keeps its own subset (a static proxy) ignores the ratio schedule's step to 1: its top
    rung's scores, reported at ratio 0.1, were called full data's and decided the pick."""
    proxy = {"t0": 0.50, "t1": 0.60, "t2": 0.70, "t3": 0.40}
    trials, histories, summary = _search(proxy, {"t1": 0.90, "t2": 0.80})
    histories["t1"]["proxy_ratio"] = [0.1, 1.0]
    histories["t2"]["proxy_ratio"] = [0.1, 0.1]  # its last epoch on a tenth of the data
    trials, summary = decide(_job(True, audit=0), trials, histories, summary, str(tmp_path), _no_audit)
    assert trials.set_index("trial_id")["full_data_from"].to_dict() == {"t0": "", "t1": "top rung", "t2": "",
                                                                       "t3": ""}
    assert summary["full_data"]["top_rung_trials"] == 1 and summary["best_trial_id"] == "t1"
    assert ("warning: 1 trial ended the top rung on a subset of the data (ratio 0.1 at the last epoch"
            in capsys.readouterr().err)


def test_an_audited_configuration_that_ended_on_a_subset_is_no_full_data_score(tmp_path, capsys):
    proxy = {f"t{i}": 0.9 - 0.05 * i for i in range(4)}
    trials, histories, summary = _search(proxy, {}, epochs=4, first=4)
    search = _AuditSearch({float(i): 0.5 + 0.05 * i for i in range(4)}, last_ratio_by_x={3.0: 0.1})
    trials, summary = decide(_job(False, audit=4), trials, histories, summary, str(tmp_path), search)
    assert trials.set_index("trial_id")["full_data_from"].to_dict() == {"t0": "audit", "t1": "audit", "t2": "audit",
                                                                       "t3": ""}
    assert summary["best_trial_id"] == "t2"  # t3's better score came from a tenth of the data
    assert "1 trial ended the audit on a subset of the data (ratio 0.1" in capsys.readouterr().err


def test_a_static_strategy_gets_no_top_rung_on_full_data_it_would_never_reach():
    """A static proxy keeps the subset it chose once: the step to ratio 1 never reached all the data, so its
    search ends with an audit on all of it instead."""
    static = _settings(algo="asha", ratio=0.3, metric="fixed_random")
    assert static.rungs() == (1, 3, 9) and not static.end_on_full_data() and static.ratio_schedule == "constant"
    assert _settings(algo="asha", ratio=0.3, metric="random").end_on_full_data()


def test_a_pick_whose_full_data_score_is_at_chance_is_said_to_be_no_better_than_chance(tmp_path, capsys):
    proxy = {"t0": 0.11, "t1": 0.12, "t2": 0.10, "t3": 0.09}
    trials, histories, summary = _search(proxy, {"t0": 0.11, "t1": 0.105, "t2": 0.115})
    for hist in histories.values():
        hist["val_constant"] = 0.1
    trials, summary = decide(_job(True, audit=0), trials, histories, summary, str(tmp_path), _no_audit)
    assert summary["full_data"]["nothing_learnt"] is True and summary["best_trial_id"] == "t2"
    assert ("no configuration learnt, on full data either: all 3 full-data scores are within 0.02 of the constant "
            "predictor's (0.1000)" in capsys.readouterr().err)
    trials, histories, summary = _search(proxy, {"t0": 0.12, "t1": 0.11, "t2": 0.35})
    for hist in histories.values():
        hist["val_constant"] = 0.1
    _, summary = decide(_job(True, audit=0), trials, histories, summary, str(tmp_path), _no_audit)
    assert summary["full_data"]["nothing_learnt"] is False  # one learnt: the pick is worth something


@pytest.mark.parametrize("audit", [0, 2])
def test_trials_trained_on_all_the_data_to_the_end_are_full_data_scores_in_a_search_without_rungs(tmp_path, audit):
    """A search without rungs raises its ratio too: the trials started then trained on all the data to their
    end, so their scores are full data's (they were dropped, and a worse configuration was picked)."""
    proxy = {f"t{i}": 0.10 for i in range(4)} | {f"t{i}": 0.80 + 0.02 * i for i in range(4, 8)}
    trials, histories, summary = _search(proxy, {}, epochs=4, first=4)
    for i, trial in enumerate(proxy):
        histories[trial]["start_ratio"] = 0.3 if i < 4 else 1.0
    search = _no_audit if audit == 0 else _AuditSearch({float(i): 0.2 for i in range(8)})
    trials, summary = decide(_job(False, audit=audit), trials, histories, summary, str(tmp_path), search)
    assert summary["decided_by"] == "full data" and summary["best_trial_id"] == "t7"
    assert summary["full_data"]["trained_on_all_data"] == 4 and summary["full_data"]["audited"] == audit
    by_id = trials.set_index("trial_id")
    assert by_id.loc["t7", "full_data_from"] == "all the data" and by_id.loc["t7", "proxy_score"] != \
        by_id.loc["t7", "proxy_score"]  # no proxy score: not paired
    if audit:  # the audit draws from the trials with proxy scores only
        assert set(search.jobs[0].settings["configs"][i]["x"] for i in range(2)) <= {0.0, 1.0, 2.0, 3.0}


def test_an_audit_record_that_names_other_configurations_is_drawn_again(tmp_path, capsys):
    experiment = tmp_path / "search"
    experiment.mkdir()
    planted = {"name": "search-full-data", "trials": ["t5"], "configs": [{"x": "my_module:evil"}]}
    (experiment / AUDIT_FILE).write_text(json.dumps(planted))
    trials, histories, summary = _search({f"t{i}": 0.5 for i in range(8)}, {}, epochs=4, first=4)
    search = _AuditSearch({float(i): 0.1 * i for i in range(8)})
    decide(_job(False, audit=3), trials, histories, summary, str(experiment), search)
    assert "does not name this search's trials" in capsys.readouterr().err
    drawn = search.jobs[0].settings["configs"]
    assert {"x": "my_module:evil"} not in drawn and len(drawn) == 3
    assert json.loads((experiment / AUDIT_FILE).read_text())["configs"] == search.jobs[0].settings["configs"]


def test_a_small_search_says_up_front_it_cannot_measure(capsys):
    lines = announce(_job(True, rungs=(1, 3, 9), num_samples=8))
    assert len(lines) == 1 and "how well the proxy ranks cannot be measured" in lines[0] and "--audit 6" in lines[0]
    assert announce(_job(True, rungs=(1, 3, 9), num_samples=54)) == []
    assert "cannot be measured" in capsys.readouterr().err


def _result(trials: list[dict], summary: dict) -> SearchResult:
    base = {"metric": "m", "algo": "asha", "num_trials": len(trials), "num_failed": 0, "wall_time_s": 10.0,
            "data_passes_total": 5.0, "best_val_accuracy": None, "best_config": {"x": 0}, "experiment_path": "",
            "mode": "max", "budget": {"max_epochs_per_trial": 4}}
    return SearchResult(pd.DataFrame(trials), {**base, **summary})


def test_an_audit_that_costs_more_than_full_data_is_said_up_front(capsys):
    """--audit 6 of 6 configurations cost 51 data passes against 36 for the same search on full data, unsaid."""
    job = _job(False, audit=6, rungs=(6,), num_samples=6)
    job.budget = {"scale": (1 + 5 * 0.3) / 6}  # a full first epoch, then 0.3 (data_scale)
    lines = announce(job)
    assert any(line.startswith("--audit 6 of 6 configurations trains them again on all the data: about 51 data "
                               "passes in all, against 36 for the same search on full data") for line in lines)
    job.full_data.audit = 2
    assert not any("saves nothing" in line for line in announce(job))  # 6 x 2.5 + 2 x 6 = 27 < 36
    capsys.readouterr()


def test_compare_judges_a_pick_by_its_retrain_never_by_an_early_stopped_score(capsys):
    # the full-data search: ASHA cut x=1 after one epoch (0.30), x=0 ran to the end (0.80)
    full = _result([{"config/x": 0, "best_score": 0.80, "final_score": 0.80, "status": "TERMINATED", "epochs": 4},
                    {"config/x": 1, "best_score": 0.30, "final_score": 0.30, "status": "STOPPED", "epochs": 1}],
                   {"best_score": 0.80})
    proxy = _result([{"config/x": 0, "best_score": 0.40, "final_score": 0.40, "status": "STOPPED", "epochs": 1},
                     {"config/x": 1, "best_score": 0.60, "final_score": 0.60, "status": "TERMINATED", "epochs": 4}],
                    {"best_score": 0.60, "best_config": {"x": 1}})
    retrained = {1.0: [{"seed": 0, "score": 0.90}], 0.3: [{"seed": 0, "score": 0.85}]}
    table, _ = compare_runs({1.0: full, 0.3: proxy}, retrained, ["x"])
    row = table.set_index("ratio").loc[0.3]
    assert row["regret"] == pytest.approx(0.05)  # the retrained gap, not 0.80 - 0.30 from the cut search
    assert row["pairs"] == 1  # only x=0 has a full-data final score
    assert "lost 0.0500 of full-data score" in row["warning"]
    assert "warning: the ratio-0.3 pick lost 0.0500" in capsys.readouterr().err
    assert "top1_regret" not in table
    from asp_tune.tune.compare import comparison_markdown

    lines = comparison_markdown(table, "t").splitlines()
    full_row, proxy_row = (next(line for line in lines if line.startswith(f"| {r} |")) for r in (1.0, 0.3))
    assert "| - | - | - | - | - | - |" in full_row  # full data against itself: nothing to correlate
    assert "±" not in proxy_row  # one retrain: no spread
    # one pair is no measurement: no correlation is reported (it read "0.000 (not measured: ...)", csv 0.0)
    assert "| - (not measured: 1 of 6 pairs) | - | - | - | - | 1 |" in proxy_row
    assert row[["kendall_tau", "pearson", "spearman", "r2", "good_spearman"]].isna().all() and not row["measured"]


def test_the_compare_report_shows_the_wall_time_s_parts_and_a_score_that_is_no_accuracy_as_it_is():
    from asp_tune.tune.compare import comparison_markdown

    rows = [{"config/x": i, "best_score": 0.5, "final_score": 0.5, "status": "TERMINATED", "epochs": 4}
            for i in range(2)]
    parts = {"trial_seconds": {"startup": 6.2, "training": 1.1, "validation": 0.3}}
    audited = {"full_data": {"cost": {"wall_time_s": 2.5}}}
    table, _ = compare_runs({1.0: _result(rows, {"best_score": 0.5, **parts}),
                             0.3: _result(rows, {"best_score": 0.5, **parts, **audited})},
                            {1.0: [{"seed": 0, "score": 0.9784}], 0.3: [{"seed": 0, "score": 0.95}]}, ["x"])
    assert table.set_index("ratio").loc[0.3, ["startup_s", "training_s", "validation_s", "full_data_wall_s"]].tolist() \
        == [6.2, 1.1, 0.3, 2.5]
    r2 = comparison_markdown(table, "t", "retrained test R²")
    proxy_row = next(line for line in r2.splitlines() if line.startswith("| 0.3 |"))
    assert "| 10.0 | 2.5 | 6.2 / 1.1 / 0.3 |" in proxy_row and "| 0.9500 | 0.0284 |" in proxy_row
    assert "x 100" not in r2 and "shown as it is" in r2
    accuracy = comparison_markdown(table, "t", "retrained test accuracy")
    assert "| 95.00 | 2.84 |" in accuracy and "shown x 100 (accuracy in percent)" in accuracy


def test_trials_a_search_started_on_all_the_data_are_no_failed_proxies():
    """A search that raised its ratio to 1 gives the trials started after it no proxy score, on purpose: they were
    ranked last as failures (tau -0.19 where the proxy ranked its own trials perfectly)."""
    full = _result([{"config/x": i, "best_score": 0.5 + 0.05 * i, "final_score": 0.5 + 0.05 * i,
                     "status": "TERMINATED", "epochs": 4} for i in range(9)], {"best_score": 0.9})
    rows = [{"config/x": i, "best_score": 0.5 + 0.05 * i, "final_score": 0.5 + 0.05 * i, "status": "TERMINATED",
             "epochs": 4, "proxy_score": 0.1 * i, "full_data_from": ""} for i in range(9)]
    for i in (6, 7, 8):  # started on all the data
        rows[i].update(proxy_score=float("nan"), full_data_from="all the data")
    rows[5].update(proxy_score=float("nan"), best_score=float("nan"))  # diverged at its first rung: failed
    table, _ = compare_runs({1.0: full, 0.3: _result(rows, {"best_score": 0.9})},
                            {1.0: [{"seed": 0, "score": 0.9}], 0.3: [{"seed": 0, "score": 0.9}]}, ["x"])
    row = table.set_index("ratio").loc[0.3]
    assert row["pairs"] == 6 and row["failed_proxy"] == 1 and row["measured"]
    assert row["spearman"] == pytest.approx(stats_spearman([0, 1, 2, 3, 4, -1], [0, 1, 2, 3, 4, 5]))


def stats_spearman(x, y):
    from scipy import stats

    return stats.spearmanr(x, y).statistic


def test_a_static_proxy_s_passes_count_its_scoring_model_once():
    rows = [{"config/x": i, "best_score": 0.5, "final_score": 0.5, "status": "TERMINATED", "epochs": 4}
            for i in range(2)]
    table, _ = compare_runs({1.0: _result(rows, {"best_score": 0.5, "data_passes_total": 8.0}),
                             0.3: _result(rows, {"best_score": 0.5, "data_passes_total": 2.4,
                                                 "proxy_model_data_passes": 3.0})},
                            {1.0: [{"seed": 0, "score": 0.9}], 0.3: [{"seed": 0, "score": 0.9}]}, ["x"])
    row = table.set_index("ratio").loc[0.3]
    assert row["data_passes_total"] == pytest.approx(5.4) and row["speedup_data_passes"] == pytest.approx(8 / 5.4)
    assert row["relative_data_passes"] == pytest.approx(5.4 / 8)  # it read 3.33x, the scoring model left out


def test_a_proxy_row_whose_first_rung_raised_its_ratio_says_at_what_ratio_it_ran(capsys):
    rows = [{"config/x": i, "best_score": 0.5, "final_score": 0.5, "status": "TERMINATED", "epochs": 4}
            for i in range(2)]
    raised = {"ratio": 1.0, "first_rung_change": {"ratio": [0.3, 1.0], "steps": [3, 8], "minimum": 16}}
    table, _ = compare_runs({1.0: _result(rows, {"best_score": 0.5, "ratio": 1.0}),
                             0.3: _result(rows, {"best_score": 0.5, **raised})},
                            {1.0: [{"seed": 0, "score": 0.9}], 0.3: [{"seed": 0, "score": 0.9}]}, ["x"])
    row = table.set_index("ratio").loc[0.3]
    assert row["ratio_run"] == 1.0
    said = ("the ratio-0.3 search ran at ratio 1: its first rung took 3 optimiser steps, 16 are needed "
            "(min_first_rung_steps=0 or --min-first-rung-steps 0 keeps the ratio); it is a full-data search, not a proxy")
    assert said in row["warning"] and said in capsys.readouterr().err
    from asp_tune.tune.compare import comparison_markdown

    assert "| 0.3 (ran at 1) |" in comparison_markdown(table, "t")


def test_a_first_rung_that_raises_the_ratio_to_1_says_the_search_is_no_proxy(capsys):
    from types import SimpleNamespace

    change = {"grace_period": [1, 1], "ratio": [0.3, 1.0], "steps": [3, 8], "minimum": 16, "train_samples": 480,
              "batch_size": 64}
    job = SimpleNamespace(full_data=None, total_trials=4, num_samples=4, rungs=(1, 3),
                          summary={"first_rung_change": change})
    line = announce(job)[0]
    assert "it takes 8 with ratio 1 (was 0.3); min_first_rung_steps=0 or --min-first-rung-steps 0 keeps them; at ratio 1 this is a " \
           "full-data search, not a proxy" in line
    change["ratio"] = [0.3, 0.6]
    assert "not a proxy" not in announce(job)[0]


def test_compare_warns_from_its_own_tau_when_the_proxy_misranks(capsys):
    rows_full = [{"config/x": i, "best_score": 0.5 + 0.05 * i, "final_score": 0.5 + 0.05 * i, "status": "TERMINATED",
                  "epochs": 4} for i in range(8)]
    rows_proxy = [{"config/x": i, "best_score": 0.9 - 0.05 * i, "final_score": 0.9 - 0.05 * i,
                   "status": "TERMINATED", "epochs": 4} for i in range(8)]
    full, proxy = _result(rows_full, {"best_score": 0.85}), _result(rows_proxy, {"best_score": 0.9})
    table, _ = compare_runs({1.0: full, 0.3: proxy}, {1.0: [{"seed": 0, "score": 0.8}],
                                                      0.3: [{"seed": 0, "score": 0.8}]}, ["x"])
    row = table.set_index("ratio").loc[0.3]
    assert row["measured"] and row["kendall_tau"] == pytest.approx(-1.0) and row["tau_high"] < 0.3
    assert row["regret"] == 0.0 and row["warning"].startswith("the proxy misranks: Kendall tau -1.00")
    assert table.set_index("ratio").loc[1.0, "warning"] == ""


def test_compare_ranks_a_failed_proxy_last_pairs_regret_by_seed_and_says_a_tied_full_data_pick(capsys):
    """The proxy run of the best configuration (x=7) diverged: dropped, the proxy read tau 1 over the rest."""
    from asp_tune.tune.compare import comparison_markdown, config_key

    rows_full = [{"config/x": 1e-7 * (i + 1), "best_score": 0.5 + 0.05 * i, "final_score": 0.5 + 0.05 * i,
                  "status": "TERMINATED", "epochs": 4} for i in range(8)]
    rows_full[6]["final_score"] = rows_full[6]["best_score"] = 0.85  # tied with x=7 at the best score
    rows_proxy = [{**row, "best_score": 0.1 + 0.05 * i, "final_score": 0.1 + 0.05 * i} for i, row in enumerate(rows_full)]
    rows_proxy[7].update(best_score=float("nan"), final_score=float("nan"))
    full, proxy = _result(rows_full, {"best_score": 0.85}), _result(rows_proxy, {"best_score": 0.4})
    retrained = {1.0: [{"seed": s, "score": v} for s, v in enumerate([0.90, 0.92, 0.94])],
                 0.3: [{"seed": s, "score": v} for s, v in enumerate([0.80, 0.90, float("nan")])]}
    table, _ = compare_runs({1.0: full, 0.3: proxy}, retrained, ["x"])
    row = table.set_index("ratio").loc[0.3]
    assert row["pairs"] == 8 and row["failed_proxy"] == 1  # 8 distinct keys: 1e-7 .. 8e-7 are no longer one
    assert row["kendall_tau"] < 0.8  # the failed best configuration ranked last, not left out (it read 1.0)
    assert row["regret"] == pytest.approx(0.06) and row["regret_std"] == pytest.approx(0.0565685, abs=1e-6)
    assert row["retrained_mean"] == pytest.approx(0.85)  # the lost retrain left out, and said
    assert "retrain gave no score with seed 2" in row["warning"]
    err = capsys.readouterr().err
    assert "2 configurations tied at the full-data search's best score 0.85" in err
    assert table.set_index("ratio").loc[1.0, "pairs"] == 0
    proxy_row = next(line for line in comparison_markdown(table, "t").splitlines() if line.startswith("| 0.3 |"))
    assert "| 6.00 ± 5.66 |" in proxy_row and "| 8 (1 failed) |" in proxy_row
    assert config_key({"config/x": 3.2e-7}, ["x"]) != config_key({"config/x": 4.1e-7}, ["x"])


def test_compare_sets_a_proxy_beside_its_uniform_control_of_the_same_cost_paired_by_seed(capsys):
    from asp_tune.tune.compare import comparison_markdown

    rows = [{"config/x": i, "best_score": 0.5 + 0.05 * i, "final_score": 0.5 + 0.05 * i, "status": "TERMINATED",
             "epochs": 4} for i in range(8)]
    full = _result(rows, {"best_score": 0.85})
    proxy = _result(rows, {"best_score": 0.85, "metric": "loss"})
    control = _result([{**r, "best_score": 1 - r["best_score"]} for r in rows], {"best_score": 0.5, "metric": "random"})
    seeds = {1.0: [0.90, 0.92, 0.94], 0.3: [0.80, 0.86, 0.86], "control": [0.85, 0.90, 0.88]}
    retrained = {r: [{"seed": i, "score": v} for i, v in enumerate(seeds[r])] for r in (1.0, 0.3)}
    table, scatter = compare_runs({1.0: full, 0.3: proxy}, retrained, ["x"], {0.3: control},
                                  {0.3: [{"seed": i, "score": v} for i, v in enumerate(seeds["control"])]})
    assert list(zip(table["ratio"], table["arm"])) == [(1.0, "full data"), (0.3, "proxy"), (0.3, "control")]
    row = table.iloc[1]
    assert row["gain_over_control"] == pytest.approx(-0.0366667, abs=1e-6)  # -0.05, -0.04, -0.02
    assert row["gain_over_control_std"] == pytest.approx(0.0152753, abs=1e-6)
    assert row["kendall_tau"] == pytest.approx(1.0) and row["control_kendall_tau"] == pytest.approx(-1.0)
    assert "retrained 0.0367 below the pick of a uniformly random subset of the same size (random)" in row["warning"]
    assert list(scatter) == [0.3]  # the figure's pairs are the proxies'
    report = comparison_markdown(table, "t")
    assert "| 0.3 control | random |" in report
    assert "- r = 0.3: loss against random: -3.67 ± 1.53 points; tau 1.00 against -1.00" in report
    capsys.readouterr()


def test_a_comparison_retrains_from_its_own_seed_and_runs_a_control_only_beside_a_strategy_that_is_not_uniform(
        monkeypatch, capsys):
    from types import SimpleNamespace

    import asp_tune.tune.compare as compare

    rows = [{"config/x": i, "best_score": 0.5 + 0.05 * i, "final_score": 0.5 + 0.05 * i, "status": "TERMINATED",
             "epochs": 4} for i in range(3)]
    monkeypatch.setattr(compare, "run_search", lambda job: _result(rows, {**job.summary, "best_score": 0.6}))
    jobs = {r: (lambda seed, m=m: SimpleNamespace(summary={"metric": m, "seed": 5 if seed is None else seed}))
            for r, m in [(1.0, "none"), (0.3, "loss"), (0.1, "random"), (0.05, "easiest")]}
    asked, seeds = [], []

    def control(ratio, strategy, seed):
        asked.append((ratio, strategy, seed))
        return SimpleNamespace(summary={"metric": strategy, "seed": seed})

    comparison = compare.run_comparison(
        jobs, lambda pick, given: seeds.append(given) or [{"seed": s, "score": 0.9} for s in given], seeds=2,
        say=lambda line: None, control=control)
    assert asked == [(0.3, "random", None), (0.05, "fixed_random", None)]  # none beside random: its own control
    assert seeds == [[10, 11]] * 6  # every pick, controls too: search seed 5's block of 2 (it was 0, 1 for any seed)
    assert list(comparison["table"]["arm"]) == ["full data", "proxy", "proxy", "proxy", "control", "control"]
    assert set(comparison["table"]["search_seed"]) == {5}
    capsys.readouterr()


def test_a_comparison_over_seeds_pairs_each_seed_s_own_figures_and_writes_them_with_every_seed_s_table(
        monkeypatch, capsys, tmp_path):
    from types import SimpleNamespace

    import asp_tune.tune.compare as compare

    scores = {(1.0, 0): 0.90, (0.3, 0): 0.85, (1.0, 1): 0.92, (0.3, 1): 0.86, (1.0, 2): 0.91, (0.3, 2): 0.81}

    def run_search(job):
        ratio, seed = job.summary["ratio"], job.summary["seed"]
        rows = [{"config/x": i, "best_score": 0.5 + 0.05 * i, "final_score": 0.5 + 0.05 * i, "status": "TERMINATED",
                 "epochs": 4} for i in range(3)]
        wall = {1.0: 10.0, 0.3: 4.0 + seed}[ratio]
        return _result(rows, {**job.summary, "best_score": 0.6, "best_config": {"x": ratio}, "wall_time_s": wall})

    monkeypatch.setattr(compare, "run_search", run_search)
    jobs = {r: (lambda seed, r=r: SimpleNamespace(summary={"metric": "random" if r < 1 else "none", "ratio": r,
                                                           "seed": seed})) for r in (1.0, 0.3)}
    comparison = compare.run_comparison(
        jobs, lambda pick, given: [{"seed": s, "score": scores[(pick["x"], s)]} for s in given],
        say=lambda line: None, search_seeds=(0, 1, 2))
    assert list(comparison["table"]["search_seed"]) == [0, 0, 1, 1, 2, 2]
    over = comparison["over_seeds"].set_index("ratio")
    assert over.loc[0.3, "seeds"] == 3
    assert over.loc[0.3, "regret_mean"] == pytest.approx(0.07)  # 0.05, 0.06, 0.10: each seed's own pair
    assert over.loc[0.3, "regret_std"] == pytest.approx(0.0264575, abs=1e-6)
    assert over.loc[0.3, "speedup_wall_mean"] == pytest.approx((10 / 4 + 10 / 5 + 10 / 6) / 3)
    assert over.loc[0.3, "kendall_tau_n"] == 0  # 3 pairs measure nothing in any seed

    class Folder:
        def write_table(self, name, frame):
            frame.to_csv(tmp_path / name, index=False)

        def file(self, name):
            return tmp_path / name

    summary = compare.write_comparison(Folder(), comparison, "t", "retrained test accuracy")
    assert summary["search_seeds"] == [0, 1, 2] and len(summary["over_seeds"]) == 2 and len(summary["rows"]) == 6
    # every seed's searches, not the first seed's alone
    assert {s: b["runs"]["0.3"]["wall_time_s"] for s, b in summary["by_seed"].items()} == {"0": 4.0, "1": 5.0, "2": 6.0}
    assert (tmp_path / "trials_r0.3_s2.csv").is_file() and (tmp_path / "comparison_over_seeds.csv").is_file()
    report = (tmp_path / "report.md").read_text()
    assert "Over 3 seeds (0, 1, 2)" in report and "| 0.3 | random | 3 |" in report and "| 7.00 ± 2.65 |" in report
    assert report.count("## seed ") == 3
    capsys.readouterr()


# ----------------------------------------------------------------------------- settings and trials


def _settings(**kw):
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space

    space = parse_space({"name": "t", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 9, "batch_size": 64,
                                                "subset": 600},
                         "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}})
    return HpoSettings(space=space, device="cpu", **kw).validate()


def test_an_early_stopping_search_ends_its_top_rung_on_full_data_unless_the_proxy_decides():
    settings = _settings(algo="asha", ratio=0.3)
    assert settings.rungs() == (1, 3, 9) and settings.end_on_full_data()
    assert settings.ratio_schedule == "steps:3=1"
    proxy = _settings(algo="asha", ratio=0.3, decide="proxy")
    assert not proxy.end_on_full_data() and proxy.ratio_schedule == "constant"
    ending_in_one = _settings(algo="asha", rung_ratios="0.1,0.3,1")
    assert ending_in_one.end_on_full_data() and ending_in_one.ratio_schedule == "steps:1=0.3,3=1"
    assert not _settings(algo="random", ratio=0.3).end_on_full_data()  # no rungs: an audit instead


def test_a_first_rung_too_short_to_learn_gets_a_longer_grace_period(tmp_path):
    settings = _settings(algo="asha", ratio=0.3)  # 540 training samples: 3 steps of 64 per epoch at r = 0.3
    change = settings.fit_first_rung(540)
    # a grace period of 3 (9 // 3, the longest that still stops trials) gives 9 steps; the ratio rises for the rest
    assert change["steps"] == [3, 18] and change["grace_period"] == [1, 3] and change["ratio"] == [0.3, 0.63]
    assert (settings.grace_period, settings.ratio, settings.rungs()) == (3, 0.63, (3, 9))  # 0.6: 324 samples, 5
    # batches of 64 and 4 that join the fifth
    kept = _settings(algo="asha", ratio=0.3, min_first_rung_steps=0)
    assert kept.fit_first_rung(540) is None and kept.grace_period == 1
    longer = _settings(algo="asha", ratio=0.3, min_first_rung_steps=12)
    assert longer.fit_first_rung(540)["ratio"] == [0.3, 0.39]
    job = _job(True, rungs=(3, 9), num_samples=54)
    job.summary = {"first_rung_change": {**change, "ratio": [0.3, 0.3]}}  # a longer grace period sufficed
    line = announce(job)[0]
    assert "it takes 18 with grace period 3 (was 1);" in line and "ratio" not in line.split("it takes")[1]


def test_a_full_data_search_gets_a_longer_first_rung_where_it_is_too_short_too():
    """A full-data search's first rung of 9 steps was kept (the rule skipped ratio 1), where a proxy's gets 16:
    in compare the two then stopped trials on unlike evidence."""
    full = _settings(algo="asha", ratio=1.0)
    change = full.fit_first_rung(540)
    assert change["grace_period"] == [1, 2] and change["ratio"] == [1.0, 1.0] and change["steps"] == [9, 18]
    assert full.ratio == 1.0 and full.rungs() == (2, 6, 9)
    job = _job(True, rungs=full.rungs(), num_samples=54)
    job.summary = {"first_rung_change": change}
    line = announce(job)[0]
    assert "it takes 18 with grace period 2 (was 1);" in line and "ratio" not in line.split("it takes")[1]


def test_a_fresh_trial_starts_on_the_searchs_latest_ratio_and_a_restarted_one_keeps_its_own(tmp_path):
    import contextlib
    from pathlib import Path

    from asp_tune.tune.fulldata import CHANGES_FILE
    from asp_tune.tune.trainable import START_FILE, proxy_trial

    settings = _settings(algo="asha", ratio=0.3, min_first_rung_steps=0)
    changes = tmp_path / CHANGES_FILE
    changes.write_text(json.dumps({"ratio": 0.6, "changes": []}))
    folder, reports = tmp_path / "ckpt", []

    class Stop(Exception):
        pass

    def report(metrics, checkpoint=None):
        reports.append(metrics)
        if checkpoint is not None:
            folder.mkdir(exist_ok=True)
            for f in Path(checkpoint).iterdir():
                (folder / f.name).write_bytes(f.read_bytes())
            raise Stop

    class Checkpoint:
        def as_directory(self):
            return contextlib.nullcontext(str(folder))

    given = {"space": settings.space, "run": dict(settings.run_fields(), epochs=3), "report": report,
             "make_checkpoint": lambda f: f, "changes": str(changes), "checkpoint_epochs": (1,)}
    with pytest.raises(Stop):
        proxy_trial({"lr": 0.05}, get_checkpoint=lambda: None, **given)
    assert reports[0]["start_ratio"] == 0.6 and reports[0]["proxy_ratio"] == pytest.approx(0.6, abs=0.01)
    assert json.loads((folder / START_FILE).read_text()) == {"ratio": 0.6}
    changes.write_text(json.dumps({"ratio": 1.0, "changes": []}))  # raised again while the trial waited
    with contextlib.suppress(Stop):
        proxy_trial({"lr": 0.05}, get_checkpoint=Checkpoint, **given)
    assert reports[-1]["start_ratio"] == 0.6 and reports[-1]["restored_epoch"] == 1


def test_the_optuna_recipe_finishes_a_study_on_full_data():
    import optuna

    from asp_tune.errors import ConfigError
    from asp_tune.tune import audit_study

    study = optuna.create_study(direction="maximize")
    for i in range(20):  # the proxy's value falls with x; full data's rises
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)}, value=1.0 - 0.01 * i,
                                                  distributions={"x": optuna.distributions.FloatDistribution(0, 19)}))
    trained = []

    def full(params):
        trained.append(params["x"])
        return 0.5 + 0.02 * params["x"]

    with pytest.warns(UserWarning) as warned:  # warned, not only kept for whoever asks
        audit = audit_study(study, full, seed=0)
    assert len(trained) == 6 and trained[:3] == [0.0, 1.0, 2.0]  # the study's best three first, then drawn
    assert audit.best_params == {"x": max(trained)} and audit.pick_changed
    assert audit.agreement.misranks() and audit.agreement.kendall_tau() == pytest.approx(-1.0)
    assert audit.warnings()[0].startswith("the proxy misranks") and "study's own pick lost" in audit.warnings()[1]
    assert [str(w.message) for w in warned] == audit.warnings()
    kept = study.user_attrs["asp_tune_full_data"]
    assert kept["best_params"] == audit.best_params and kept["full_data_scores"]["0"] == 0.5
    seven = optuna.create_study(direction="maximize")  # too few to measure: the default audit guards the pick
    for i, value in enumerate([0.405, 0.935, 0.79, 0.89, 0.735, 0.885, 0.865]):
        seven.add_trial(optuna.trial.create_trial(params={"x": float(i)}, value=value,
                                                  distributions={"x": optuna.distributions.FloatDistribution(0, 9)}))
    assert audit_study(seven, lambda p: p["x"]).table["number"].tolist() == [1, 3, 5]  # the proxy's best 3
    small = optuna.create_study()
    small.add_trial(optuna.trial.create_trial(params={"x": 1.0}, value=0.3,
                                              distributions={"x": optuna.distributions.FloatDistribution(0, 2)}))
    assert audit_study(small, lambda p: 0.1).line().startswith("the proxy was not measured")  # count=N
    said = audit_study(small, lambda p: 0.1, count=6).line()  # all of its one trial audited: count=N adds none
    assert "(completing more trials of the study, then count=N, adds full-data runs)" in said
    for one in (torch.tensor(0.25), torch.tensor([0.25]), np.array([0.25]), np.float32(0.25)):  # one value: a number
        assert audit_study(small, lambda p, v=one: v).best_full_score == 0.25
    for returned in (None, {"acc": 0.5}, "0.5", True, torch.tensor([0.2, 0.3])):
        with pytest.raises(ConfigError, match=r"invalid train_full=.* for trial 0.: allowed a function that returns "
                                              r"the full-data score as a number"):
            audit_study(small, lambda p, r=returned: r)
    with pytest.raises(ConfigError, match="count"):
        audit_study(study, full, count=0)
    for seed in (-1, "a", 1.5):
        with pytest.raises(ConfigError, match=r"invalid seed=.*: allowed an integer >= 0"):
            audit_study(study, full, seed=seed)
    assert len(audit_study(study, full, count=np.int64(2)).table) == 2  # NumPy's integers are integers
    with pytest.raises(ConfigError, match="completed trial"):
        audit_study(optuna.create_study(), full)
    later = audit_study(study, full, count=2, trials=study.trials[10:])  # among some trials: their own best first
    assert later.table["number"].tolist()[0] == 10 and later.proxy_best_params == {"x": 10.0}
    for bad in ("x", [1, 2], study):
        with pytest.raises(ConfigError, match=r"invalid trials=.*: allowed some of the study's trials"):
            audit_study(study, full, trials=bad)
    with pytest.raises(ConfigError, match="completed trial among the trials audited"):
        audit_study(study, full, trials=[])


def test_the_picture_of_the_proxy_against_full_data(tmp_path):
    from asp_tune.plots import plot_full_data_agreement

    trials = pd.DataFrame({"trial_id": ["a", "b", "c", "d"], "proxy_score": [0.9, 0.8, 0.7, 0.6],
                           "full_data_score": [0.5, 0.7, None, 0.9], "full_data_from": ["audit", "audit", "", "top rung"]})
    section = {"kendall_tau": -1.0, "interval": [-1.0, -1.0], "level": 0.9, "measured": True, "min_pairs": 3}
    path = plot_full_data_agreement(trials, section, tmp_path / "full_data.png", "t")
    assert path.stat().st_size > 1000
    unmeasured = plot_full_data_agreement(trials, {"measured": False, "min_pairs": 6}, tmp_path / "u.png")
    assert unmeasured.is_file()


def test_the_pictures_draw_chance_and_label_every_rung_pair(tmp_path, monkeypatch):
    """Scores at chance looked spread out on a zoomed axis with no chance line; a rung pair's label was
    drawn white inside a bar of height 0, on nothing."""
    import asp_tune.plots as plots

    figures = []
    monkeypatch.setattr(plots, "save_figure", lambda fig, path: figures.append(fig) or path)
    trials = pd.DataFrame({"trial_id": ["a", "b"], "proxy_score": [0.11, 0.09], "full_data_score": [0.12, 0.1],
                           "full_data_from": ["top rung", "top rung"]})
    plots.plot_full_data_agreement(trials, {"measured": False, "min_pairs": 6, "constant_score": 0.1}, "f.png")
    legend = [t.get_text() for t in figures[-1].axes[0].get_legend().get_texts()]
    assert "chance (0.1)" in legend
    trust = {"threshold": 0.3, "pairs": [{"low": 1, "high": 3, "kendall_tau": 0.0, "pairs": 5, "trusted": False},
                                         {"low": 3, "high": 9, "kendall_tau": 0.8, "pairs": 6, "trusted": True}]}
    plots.plot_rung_agreement(trust, "t.png")
    labels = {t.get_text(): t.get_color() for t in figures[-1].axes[0].texts}
    assert labels == {"5 configs": "black", "6 configs": "white"}  # beside the flat bar, inside the tall one


def test_a_tie_among_the_searchs_own_scores_is_broken_by_the_configuration():
    """Tied on the proxy's scores, the search's pick was the first in the trials' order (other after a resume)."""
    from asp_tune.tune.collect import best_trial

    trials = pd.DataFrame({"trial_id": ["a", "b", "c"], "config/x": [0.3, 0.1, 0.2], "best_score": [0.9, 0.9, 0.5],
                           "status": ["TERMINATED"] * 3})
    assert best_trial(trials)["trial_id"] == "b" == best_trial(trials.iloc[::-1])["trial_id"]
    assert best_trial(trials, "min")["trial_id"] == "c"
