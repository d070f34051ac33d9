"""Proxy-quality measures (asp_tune/quality.py), transcribed from the proxy-datasets paper."""

from __future__ import annotations

import math

import numpy as np
import pytest

from asp_tune.quality import cost_adjusted_r2, good_spearman, proxy_quality, r_squared, top1_regret


def test_good_spearman_follows_the_papers_footnote():
    # "if we ran 4 experiments and achieved [.92, .93, .84, .86] on the proxy, and [.95, .99, .81, ...] on the
    # target, the statistic would be Spearman([.92, .93], [.95, .99])" - the two good proxy results
    proxy, target = [0.92, 0.93, 0.84, 0.86], [0.95, 0.99, 0.81, 0.80]
    assert good_spearman(proxy, target, min_accuracy=0.9) == pytest.approx(1.0)
    assert good_spearman(proxy, [0.99, 0.95, 0.81, 0.80], min_accuracy=0.9) == pytest.approx(-1.0)
    assert good_spearman(proxy, target) == pytest.approx(1.0)  # default threshold: the median keeps the top half


def test_r2_of_target_on_normalised_proxy_is_the_explained_variance():
    rng = np.random.default_rng(0)
    proxy = rng.normal(size=50)
    assert r_squared(proxy, 3 * proxy + 7) == pytest.approx(1.0)  # normalising removes scale and offset
    target = proxy + rng.normal(size=50)
    assert r_squared(proxy, target) == pytest.approx(np.corrcoef(proxy, target)[0, 1] ** 2)
    assert math.isnan(r_squared([1, 2], [3, 4]))


def test_top1_regret_is_the_full_data_accuracy_lost_by_the_proxys_pick():
    assert top1_regret([0.5, 0.9, 0.7], [0.80, 0.85, 0.95]) == pytest.approx(0.10)
    assert top1_regret([0.5, 0.9, 0.7], [0.80, 0.95, 0.85]) == 0.0


def test_cost_adjusted_r2_is_the_residual_of_a_cubic_over_cost():
    cost = np.array([0.05, 0.1, 0.2, 0.3, 0.5, 0.7])
    on_curve = 0.2 + 0.5 * cost - 0.3 * cost ** 2 + 0.1 * cost ** 3
    np.testing.assert_allclose(cost_adjusted_r2(on_curve, cost), 0.0, atol=1e-9)
    lifted = on_curve.copy()
    lifted[2] += 0.3  # one strategy explains more than its cost buys
    residual = cost_adjusted_r2(lifted, cost)
    assert residual[2] == max(residual) and residual[2] > 0
    assert np.isnan(cost_adjusted_r2([0.5, math.nan], [0.1, 0.2])).all()
    assert np.isnan(cost_adjusted_r2([0.5, 0.7, 0.9], [0.3, 0.3, 0.3])).all()  # one cost: nothing to adjust for
    assert np.isnan(cost_adjusted_r2([0.5, 0.7], [0.30, 0.31])).all()  # a line through both: no residual to read


def test_one_record_holds_every_measure():
    q = proxy_quality([0.5, 0.9, 0.7, 0.6], [0.80, 0.85, 0.95, 0.7], proxy_cost=30.0, target_cost=300.0)
    assert set(q) >= {"kendall_tau", "pearson", "spearman", "n", "r2", "good_spearman", "top1_regret",
                      "relative_cost"}
    assert q["relative_cost"] == pytest.approx(0.1) and q["n"] == 4


def test_known_vectors_perfect_reversed_and_constant():
    target = [0.6, 0.7, 0.8, 0.9]
    perfect = proxy_quality([0.1, 0.2, 0.3, 0.4], target)
    for key in ("kendall_tau", "pearson", "spearman", "r2", "good_spearman"):
        assert perfect[key] == pytest.approx(1.0), key
    assert perfect["top1_regret"] == 0.0
    reversed_ = proxy_quality([0.4, 0.3, 0.2, 0.1], target)
    for key in ("kendall_tau", "pearson", "spearman", "good_spearman"):
        assert reversed_[key] == pytest.approx(-1.0), key
    assert reversed_["r2"] == pytest.approx(1.0)  # r^2 is blind to the sign (documented)
    assert reversed_["top1_regret"] == pytest.approx(0.3)  # it picks the worst configuration
    constant = proxy_quality([0.5, 0.5, 0.5, 0.5], target)
    for key in ("kendall_tau", "pearson", "spearman", "r2", "good_spearman", "top1_regret"):
        assert math.isnan(constant[key]), key


def test_the_fit_line_of_a_reversed_proxy_says_it_falls():
    from asp_tune.plots import pyplot, regression_line

    fig, ax = pyplot().subplots()
    r2 = regression_line(ax, [1.0, 2.0, 3.0, 4.0], [0.9, 0.7, 0.5, 0.2])
    rising = regression_line(ax, [1.0, 2.0, 3.0, 4.0], [0.2, 0.5, 0.7, 0.9])
    labels = [line.get_label() for line in ax.get_lines() if line.get_label().startswith("fit")]
    assert r2 > 0.9 and rising > 0.9
    assert labels == [f"fit: r² {r2:.2f}, falling: ranks reversed", f"fit: r² {rising:.2f}"]
    pyplot().close(fig)


def test_the_spread_beside_a_mean_over_seeds_is_the_sample_standard_deviation():
    from asp_tune.quality import seed_spread

    assert seed_spread([1.0, 2.0, 3.0]) == pytest.approx(1.0)  # population std: 0.816
    assert math.isnan(seed_spread([0.9])) and math.isnan(seed_spread([]))  # one seed measures no spread


def test_a_proxy_that_failed_on_the_best_configuration_ranks_it_last_and_pays_its_regret():
    """Dropping the failed pair made this proxy perfect: tau 1 and regret 0 over the three it finished."""
    full, proxy = [0.5, 0.6, 0.7, 0.95], [0.4, 0.5, 0.6, math.nan]
    q = proxy_quality(proxy, full)
    assert q["n"] == 4 and q["failed"] == 1
    assert q["top1_regret"] == pytest.approx(0.25)  # it picked 0.7 where 0.95 was there
    assert q["kendall_tau"] == pytest.approx(0.0)  # 3 concordant pairs, 3 discordant (the failed one last)
    assert q["pearson"] == pytest.approx(1.0)  # over the finite pairs only
    # a failure on the worst configuration costs nothing: the proxy would have ranked it last anyway
    q = proxy_quality([math.nan, 0.5, 0.6, 0.7], [0.3, 0.6, 0.7, 0.95])
    assert q["kendall_tau"] == pytest.approx(1.0) and q["top1_regret"] == 0.0 and q["failed"] == 1
    # a pair without a target score is no pair; two pairs measure nothing
    q = proxy_quality([0.4, 0.5, 0.9], [0.5, 0.6, math.nan])
    assert q["n"] == 2 and math.isnan(q["top1_regret"]) and math.isnan(q["kendall_tau"])


def test_losses_are_ranked_lower_is_better_with_mode_min():
    proxy, full = [0.1, 0.5, 0.9], [0.2, 1.0, 0.6]  # the proxy's pick (0.1) has the best full-data loss
    assert top1_regret(proxy, full, mode="min") == 0.0
    assert top1_regret(proxy, full) == pytest.approx(0.4)  # read as accuracies it picked 0.6 of 1.0
    assert top1_regret([0.9, 0.5, 0.1], full, mode="min") == pytest.approx(0.4)  # picks 0.6 where 0.2 was best
    q = proxy_quality([0.1, 0.5, math.inf, 0.9], [0.2, 1.0, 0.1, 0.6], mode="min")  # a diverged loss: failed
    assert q["failed"] == 1 and q["top1_regret"] == pytest.approx(0.1)
    with pytest.raises(ValueError, match="mode"):
        top1_regret(proxy, full, mode="maximise")


def test_good_spearman_never_counts_a_failed_configuration_among_the_good_ones():
    """With half or more failed the median was the failures' floor, and every configuration counted as good."""
    proxy, full = [0.9, math.nan, math.nan, math.nan, 0.5], [0.8, 0.9, 0.95, 0.99, 0.6]
    assert math.isnan(good_spearman(proxy, full))  # one good configuration (0.9 of 0.9, 0.5): it read -0.894
    proxy, full = [0.9, math.nan, math.nan, math.nan, 0.5, 0.7], [0.8, 0.9, 0.95, 0.99, 0.6, 0.7]
    assert good_spearman(proxy, full) == pytest.approx(1.0)  # 0.9 and 0.7, at or above the finite median 0.7
    assert math.isnan(good_spearman([math.nan] * 3, [0.1, 0.2, 0.3]))
