"""The benchmarks' own run functions, on tiny settings: a bench that cannot run its cells measures nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture()
def baselines(monkeypatch, tmp_path):
    monkeypatch.setenv("ASP_TUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(BENCH))
    import baselines

    return baselines


@pytest.mark.parametrize("strategy", ["forgetting", "easiest", "asp"])
def test_the_baselines_bench_runs_a_cell_of_every_kind(baselines, strategy):
    """Its ranking part built trainers with Trainer(), which refuses a static proxy that needs a scoring model:
    easiest, hardest, k-centers and forgetting could not run."""
    key = {"strategy": strategy, "ratio": 0.3, "config": 0, "seed": 0}
    row = baselines.ranking_task({"key": key, "config": {"dataset": "digits", "model": "mlp", "epochs": 3,
                                                         "subset": 300, "ratio": 0.3, "seed": 0,
                                                         **baselines.STRATEGIES[strategy]}})
    assert {k: row[k] for k in key} == key and 0.0 < row["val_accuracy"] <= 1.0
    assert 0.5 < row["data_passes"] < 3 * 0.3 + 1.0  # three epochs at 0.3, a full first one at most
    assert (row["proxy_data_passes"] > 0) == (strategy != "asp")  # a static proxy's scoring model, counted


@pytest.fixture()
def bench_path(monkeypatch):
    monkeypatch.syspath_prepend(str(BENCH))


def test_one_mean_std_for_every_bench(bench_path):
    """Three definitions of std were in use (ddof 0 in most scripts); one value printed '± 0.00'."""
    from _common import mean_std

    assert mean_std([1.0, 2.0, 3.0]) == "2.000 ± 1.000"  # the sample std (ddof 1)
    assert mean_std([0.596], 2, scale=100) == "59.60 (n=1)"  # one value measures no spread
    assert mean_std([float("nan"), 0.5], 2) == "0.50 (n=1)" and mean_std([]) == "-"
    assert mean_std([0.1, 0.2], 2, signed=True) == "+0.15 ± 0.07"


def test_proxy_quality_scores_full_data_leave_one_out(bench_path):
    """Full data's regret (the noise ceiling) was taken against a reference that held the same seed."""
    import numpy as np
    import proxy_quality

    acc = np.array([[0.5, 0.6, 0.4], [0.6, 0.5, 0.4], [0.6, 0.5, 0.4]])  # seed x config
    rows = [{"strategy": "full data", "ratio": 1.0, "seed": s, "config": c, "val_accuracy": acc[s, c],
             "data_passes": 1.0, "seconds": 1.0} for s in range(3) for c in range(3)]
    row = proxy_quality.hpo_table(rows, [0, 1, 2], 3)[0]
    # seed 0 picks config 1; the other seeds' mean scores config 0 at 0.6 and config 1 at 0.5: 10 points lost
    assert row["regret_per_seed"][0] == pytest.approx(10.0)
    assert row["regret_std"] == pytest.approx(float(np.std(row["regret_per_seed"], ddof=1)))


def test_baselines_mark_cost_ratios_across_invocations(baselines):
    """--reuse divided one invocation's seconds by another's (another machine, another day) without a word."""
    rows = []
    for seed in (1, 2):
        for c in range(3):
            for strategy, ratio, inv in (("full data", 1.0, 0), ("fixed_random", 0.3, 0), ("forgetting", 0.3, 1)):
                rows.append({"strategy": strategy, "ratio": ratio, "config": c, "seed": seed, "invocation": inv,
                             "val_accuracy": 0.1 * c + 0.01 * seed, "seconds": 1.0, "data_passes": 1.0,
                             "proxy_seconds": 0.0, "proxy_key": "", "subset_selection_seconds": 0.0})
    table = {(r["strategy"], r["ratio"]): r for r in baselines.ranking_table(rows, [1, 2], 3, 8)}
    assert table[("forgetting", 0.3)]["relative_cost_across_invocations"] == [True, True]
    assert table[("fixed_random", 0.3)]["relative_cost_across_invocations"] == [False, False]
    text = "\n".join(baselines.ranking_markdown(list(table.values()), {"num_configs": 3, "model": "m", "data": "d",
                                                                        "epochs": 8, "seeds": [1, 2]}))
    assert "| 1.00† |" in text and "† relative cost across invocations" in text


def test_packed_study_reports_seeds_and_refuses_a_problem_it_cannot_run(bench_path, monkeypatch):
    """One seed printed '± 0.00'; a mean whose spread covers 1.0 counted as a met target; CIFAR-10 asked for
    without its archive crashed with StopIteration."""
    pytest.importorskip("optuna")
    import packed_study

    arm = lambda w, t: {"wall_s": w, "startup_s": 0.1, "train_s": t, "study_s": 0.1, "trial_epochs": 100,  # noqa: E731
                        "pack": 8, "pick_full_data_score": 0.5}
    rows = [{"problem": "p", "pruner": "asha", "seed": s, "trials": 16, "arms": {"one at a time": arm(w, w),
             "packs": arm(1.0, 1.0)}, "wall_ratio": w, "train_ratio": w} for s, w in ((0, 2.4), (1, 1.25), (2, 1.3))]
    text = packed_study.markdown(rows)
    assert "2.40 / 1.25 / 1.30 | 1 of 3 |" in text
    assert "± 0.0" not in packed_study.markdown(rows[:1]) and "(n=1)" in packed_study.markdown(rows[:1])
    monkeypatch.setenv("ASP_TUNE_SHARED_DATA", "/nonexistent")
    monkeypatch.setattr(sys, "argv", ["packed_study.py", "--problems", "cifar10-resnet8", "--quick"])
    with pytest.raises(SystemExit) as stopped:
        packed_study.main()
    assert stopped.value.code == 2


def test_trust_cache_is_keyed_by_code_and_settings(bench_path, tmp_path):
    """The curve cache was keyed by problem, seed, ratio, configuration and arm only: a cache of other code was
    replayed as today's."""
    import trust

    assert len(trust.code_hash()) == 16 and trust.code_hash() == trust.code_hash()
    key = trust.curve_key("digits-s0-r0.3", 1, "random subset", "c0de", {"a": 1}, {"lr": 0.1}, {"ratio": 0.3})
    assert key.startswith("digits-s0-r0.3-c1-random_subset-c0de-")
    assert key != trust.curve_key("digits-s0-r0.3", 1, "random subset", "c0df", {"a": 1}, {"lr": 0.1}, {"ratio": 0.3})
    assert key != trust.curve_key("digits-s0-r0.3", 1, "random subset", "c0de", {"a": 1}, {"lr": 0.2}, {"ratio": 0.3})
    assert key != trust.curve_key("digits-s0-r0.3", 1, "random subset", "c0de", {"a": 1}, {"lr": 0.1}, {"ratio": 0.1})
    (tmp_path / "k.json").write_text('{"epochs": [], "test": 0.5, "constant": 0.1}')
    hit = trust.train_curve(("digits", True, {}, {}, "k", str(tmp_path), True))
    assert hit["cached"] is True and hit["test"] == 0.5
