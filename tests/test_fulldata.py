"""Full data decides: the agreement of a proxy with full data, the audit's size, the live watch that raises
the ratio, the first rung's length, and the pick made on full-data scores (no Ray)."""

import json
import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from asp_tune.tune import fulldata
from asp_tune.tune.fulldata import (CHANGES_FILE, MIN_PAIRS, FullDataAgreement, ProxyWatch, at_chance, audit_size,
                                    bootstrap_interval, choose_audit, expected_top, first_rung_steps, fit_first_rung,
                                    measurement_notice, regret_allowed, started_ratio, tau_b, verdict_lines)


def test_tau_b_is_scipys_kendall_tau_b_with_ties():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 4, 9).astype(float), rng.integers(0, 4, 9).astype(float)
        expected = stats.kendalltau(x, y).statistic
        assert tau_b(x, y) == pytest.approx(expected, nan_ok=True)


def test_the_interval_holds_the_tau_and_narrows_with_more_configurations():
    rng = np.random.default_rng(1)
    x = rng.random(40)
    y = x + 0.3 * rng.random(40)
    low, high = bootstrap_interval(x, y)
    assert low < tau_b(x, y) < high <= 1.0
    few_low, few_high = bootstrap_interval(x[:8], y[:8])
    assert few_high - few_low > high - low
    assert all(math.isnan(v) for v in bootstrap_interval(x[:2], y[:2]))  # too few to resample
    order = rng.permutation(8)  # the same pairs listed otherwise: the same interval (it moved 0.21 .. 0.29)
    assert bootstrap_interval(x[:8][order], y[:8][order]) == (few_low, few_high)


def test_an_agreement_below_six_pairs_is_never_trusted_and_says_how_to_measure():
    agreement = FullDataAgreement(more="audit=N")
    for i in range(MIN_PAIRS - 1):
        agreement.add(f"t{i}", i, i, "top rung")
    summary = agreement.summary()
    assert (summary["measured"], summary["trusted"], summary["misranks"]) == (False, None, False)
    assert summary["interval"] == [None, None]
    assert "5 configurations have both scores, 6 are needed (audit=N adds" in agreement.line()


def test_scores_that_all_tie_are_said_in_words_never_as_nan():
    alike = FullDataAgreement()  # every configuration reaches 100% on full data: nothing to rank
    for i in range(8):
        alike.add(f"t{i}", 0.1 * i, 1.0, "audit")
    summary = alike.summary()
    assert not alike.measured and summary["trusted"] is None and not summary["misranks"]
    assert summary["kendall_tau"] is None and summary["regret_of_proxy_pick"] == 0.0
    assert "all 8 configurations with both scores score 1 on full data" in alike.line() and "nan" not in alike.line()
    chance = FullDataAgreement()  # the proxy never left chance: it scores them all alike where full data does not
    for i in range(8):
        chance.add(f"t{i}", 0.1, 0.5 + 0.05 * i, "audit")
    assert chance.measured and chance.kendall_tau() == 0.0 and chance.interval() == (0.0, 0.0)
    assert chance.misranks() and chance.summary()["trusted"] is False
    assert "misranks (it scores every one of them the same" in chance.line() and "nan" not in chance.line()
    few = FullDataAgreement()  # a tau over too few pairs is not reported as if measured
    for i in range(3):
        few.add(f"t{i}", 0.1 * i, 0.5 - 0.1 * i, "audit")
    assert few.summary()["kendall_tau"] is None and few.summary()["measured"] is False


def test_a_reversed_proxy_misranks_and_its_pick_regret_is_the_full_data_gap():
    agreement = FullDataAgreement()
    full = [0.9, 0.8, 0.7, 0.6, 0.5, 0.4, 0.3, 0.2]
    for i, score in enumerate(full):
        agreement.add(f"t{i}", -score, score, "audit")  # the proxy ranks them backwards
    assert agreement.kendall_tau() == pytest.approx(-1.0)
    assert agreement.misranks() and agreement.summary()["trusted"] is False
    assert agreement.regret() == pytest.approx(0.9 - 0.2)
    assert agreement.line().startswith("the proxy misranks: Kendall tau -1.00")
    lines = verdict_lines(agreement, agreement.regret())
    assert len(lines) == 2 and "lost 0.7000 of full-data score" in lines[1]


def test_the_regret_a_pick_may_lose_unwarned_follows_the_scale_of_the_score():
    """A point of accuracy or R²; 1% of a loss, small or large (an MSE of 50 warned at 0.01 on every search, a
    cross-entropy of 0.010 went unwarned at 0.019)."""
    assert regret_allowed(0.93) == regret_allowed(-0.4) == regret_allowed(None) == 0.01
    assert regret_allowed(35.0) == pytest.approx(0.35)  # a larger maximised score: 1% of it
    assert regret_allowed(50.0, "min") == regret_allowed(-50.0, "min") == pytest.approx(0.5)
    assert regret_allowed(0.010, "min") == pytest.approx(0.0001)
    losses = FullDataAgreement(mode="min")  # lower is better: the best full-data loss is 50
    for i, (proxy, full) in enumerate([(1.0, 50.3), (2.0, 50.0), (3.0, 51.0)]):
        losses.add(f"t{i}", proxy, full, "audit")
    assert losses.regret() == pytest.approx(0.3)
    assert verdict_lines(losses, losses.regret()) == []
    assert verdict_lines(losses, 0.6) == ["the pick lost 0.6000 of full-data score against the best configuration "
                                          "on full data (more than 0.5)"]
    small = FullDataAgreement(mode="min")
    for i, (proxy, full) in enumerate([(1.0, 0.019), (2.0, 0.012), (3.0, 0.010)]):
        small.add(f"t{i}", proxy, full, "audit")
    assert small.regret() == pytest.approx(0.009) and "(more than 0.0001)" in verdict_lines(small, small.regret())[0]
    assert verdict_lines(FullDataAgreement(), 0.02, best=0.9)[0].endswith("(more than 0.01)")


def test_mode_min_agreement_reads_lower_as_better():
    agreement = FullDataAgreement(mode="min")
    for i in range(8):
        agreement.add(f"t{i}", i, i, "audit")  # losses: the proxy's lowest is full data's lowest
    assert agreement.kendall_tau() == pytest.approx(1.0) and agreement.regret() == 0.0
    assert agreement.summary()["trusted"] is True


def test_non_numbers_and_nan_make_no_pair():
    agreement = FullDataAgreement()
    agreement.add("a", math.nan, 0.5, "audit")
    agreement.add("b", 0.5, None, "audit")
    agreement.add("c", "0.5", 0.5, "audit")
    assert agreement.pairs == {}


def test_the_audit_measures_a_large_search_and_checks_the_best_few_of_a_small_one():
    assert audit_size(None, 8, 0.0) == 3  # small, no top rung: the proxy's best 3
    assert audit_size(None, 8, 1.0) == 0  # small, a full-data top rung decides
    assert audit_size(None, 27, 3.0) == 3  # large: enough for six pairs with the top rung
    assert audit_size(None, 18, 0.0) == MIN_PAIRS
    assert audit_size(4, 8, 1.0) == 4 and audit_size(10, 5, 0.0) == 5  # asked: at most every configuration


def test_a_search_too_small_to_measure_says_so_with_what_it_would_need():
    line = measurement_notice(8, expected_top(8, (1, 3, 9)), (1, 3, 9), "--audit")
    assert line.startswith("the pick is made on full data, but how well the proxy ranks cannot be measured")
    assert "about 1 of this search's 8 configurations" in line and "6 are needed" in line
    assert "about 54 configurations" in line and "--audit 6" in line and "on all the data for all" in line
    line = measurement_notice(8, expected_top(8, (1, 3, 9)), (1, 3, 9), "--audit", top_rung_full=True)
    assert "--audit 6 to train up to that many to the end as promoted trials (the top rung on all the data)" in line
    assert measurement_notice(27, 6.0, (1, 3, 9), "--audit") is None
    assert "search give" not in measurement_notice(8, 3, None, "--audit")  # no rungs: only the audit helps
    unchecked = measurement_notice(8, 0.0, (1, 3, 9), "--audit")  # nothing on full data: the pick is the proxy's
    assert unchecked.startswith("how well the proxy ranks cannot be measured: about 0 of")


def test_choose_audit_takes_the_best_half_first_then_draws_the_rest():
    candidates = pd.DataFrame({"trial_id": [f"t{i}" for i in range(10)], "proxy_score": np.arange(10.0)})
    chosen = choose_audit(candidates, 6, "max", seed=0, score="proxy_score")
    assert chosen[:3] == ["t9", "t8", "t7"] and len(set(chosen)) == 6
    assert set(chosen[3:]) <= {f"t{i}" for i in range(7)}
    assert choose_audit(candidates, 6, "min", seed=0, score="proxy_score")[:3] == ["t0", "t1", "t2"]
    assert choose_audit(candidates, 6, "max", seed=0, score="proxy_score") == chosen  # seeded
    assert choose_audit(candidates, 3, "max", seed=0, score="proxy_score", top_only=True) == ["t9", "t8", "t7"]


def test_chance_is_every_score_within_the_margin_of_the_constant_predictor():
    assert at_chance([0.26, 0.25, 0.27], [0.25, 0.25, 0.25])
    assert not at_chance([0.26, 0.25, 0.40], [0.25, 0.25, 0.25])
    assert not at_chance([0.25, 0.25], [0.25, 0.25])  # too few to say
    assert at_chance([0.01, -0.01, 0.0], [0.0, 0.0, 0.0])  # R² about 0


def test_the_first_rung_gets_a_longer_grace_period_then_a_larger_ratio():
    assert first_rung_steps(0.3, 1, 960, 128) == 3
    assert fit_first_rung(0.3, 1, 3, 12, 960, 128, 8) == (3, 0.3)  # grace 3 (12 // 3 = 4 at most) suffices
    assert fit_first_rung(0.3, 1, 3, 4, 960, 128, 8) == (1, 0.97)  # grace at most 1: the ratio rises (0.94: 902
    # samples are 7 batches of 128 and 6, which join the seventh)
    assert first_rung_steps(0.94, 1, 960, 128) == 7 and first_rung_steps(0.97, 1, 960, 128) == 8
    assert fit_first_rung(0.3, 1, 3, 4, 960, 128, 100) == (1, 1.0)  # as far as it goes
    assert fit_first_rung(0.3, 1, 3, 4, 960, 128, 0) == (1, 0.3)  # 0: as given
    assert fit_first_rung(0.3, 2, 3, 4, 60000, 128, 16) == (2, 0.3)  # long enough already


def _watch(**kw):
    return ProxyWatch(ratio=0.3, first_rung=1, final_epoch=4, **kw)


def test_the_watch_raises_the_ratio_when_the_first_rung_is_at_chance():
    watch = _watch()
    assert watch.observe("a", 1, 0.25, 0.25, 0.3) is None
    assert watch.observe("b", 1, 0.26, 0.25, 0.3) is None
    change = watch.observe("c", 1, 0.24, 0.25, 0.3)
    assert change is not None and (change.before, change.after, watch.ratio) == (0.3, 0.6, 0.6)
    assert change.evidence["trials"] == 3 and change.trials_started == 3
    assert "at chance" in change.line() and "ratio 0.6 (was 0.3" in change.line()
    # the evidence of trials started at the old ratio is spent: three more at the new one are needed
    assert watch.observe("d", 1, 0.25, 0.25, 0.3) is None
    assert watch.observe("e", 1, 0.25, 0.25, 0.6) is None and watch.observe("f", 1, 0.25, 0.25, 0.6) is None
    assert watch.observe("g", 1, 0.25, 0.25, 0.6).after == 1.0
    assert watch.observe("h", 1, 0.25, 0.25, 1.0) is None  # all the data: nothing left to raise


def test_the_watch_leaves_the_ratio_when_full_data_does_not_learn_either():
    watch = _watch()
    for t in "abc":
        watch.observe(t, 4, 0.25, 0.25, 0.3)  # the full-data top rung: at chance too
    for t in "abc":
        assert watch.observe(t, 1, 0.25, 0.25, 0.3) is None
    assert watch.ratio == 0.3


def test_the_watch_raises_the_ratio_when_the_first_rung_misranks_against_the_top_rung():
    watch = _watch()
    for i in range(8):
        watch.observe(f"t{i}", 1, 0.5 + 0.01 * i, math.nan, 0.3)  # proxy: t7 best
    changes = [watch.observe(f"t{i}", 4, 0.9 - 0.01 * i, math.nan, 0.3) for i in range(8)]  # full: t0 best
    made = [c for c in changes if c is not None]
    assert len(made) == 1 and "misranks against full data" in made[0].why and watch.ratio == 0.6
    assert made[0].evidence["kendall_tau"] == pytest.approx(-1.0)


def test_the_watch_record_round_trips_and_trials_read_the_ratio_from_it(tmp_path):
    watch = _watch()
    for t in "abc":
        watch.observe(t, 1, 0.25, 0.25, 0.3)
    path = tmp_path / CHANGES_FILE
    path.write_text(json.dumps(watch.record()))
    again = _watch()
    again.restore(json.loads(path.read_text()))
    assert again.ratio == 0.6 and [c.after for c in again.changes] == [0.6]
    assert started_ratio(str(path), 0.3) == 0.6
    assert started_ratio(str(tmp_path / "none.json"), 0.3) == 0.3
    path.write_text(json.dumps({"ratio": 7}))  # out of range: ignored
    assert started_ratio(str(path), 0.3) == 0.3
    path.write_text("not json")
    assert started_ratio(str(path), 0.3) == 0.3 and fulldata.read_changes(str(path)) == {}
