"""Proxy trust: rung agreement from scripted results equals a direct Kendall tau; the warning fires
below the threshold with enough pairs, and not above it."""

from __future__ import annotations

import math

import pytest
from scipy import stats

from asp_tune.tune.trust import RungRecord, rung_epochs


def test_rung_epochs_are_ashas_decision_points():
    assert rung_epochs(1, 3, 12) == (1, 3, 9, 12)
    assert rung_epochs(2, 2, 8) == (2, 4, 8)
    assert rung_epochs(1, 3, 1) == (1,)


def test_rung_agreement_equals_a_direct_kendall_tau_on_the_configurations_that_reached_both():
    record = RungRecord((1, 3, 9))
    low = {"a": 0.1, "b": 0.4, "c": 0.3, "d": 0.9, "e": 0.5, "f": 0.2, "g": 0.8}
    high = {"a": 0.2, "b": 0.5, "c": 0.1, "d": 0.7, "e": 0.9, "f": 0.3}  # g stopped at rung 1
    for trial, score in low.items():
        record.add(trial, 1, score)
        record.add(trial, 2, 0.0)  # not a rung: ignored
    for trial, score in high.items():
        record.add(trial, 3, score)
    first, second = record.agreements()
    both = sorted(high)
    assert first.pairs == 6 and (first.low, first.high) == (1, 3)
    assert first.kendall_tau == pytest.approx(stats.kendalltau([low[t] for t in both], [high[t] for t in both])[0])
    assert second.pairs == 0 and second.trusted is None and math.isnan(second.kendall_tau)


def test_the_warning_fires_below_the_threshold_with_enough_pairs_and_not_above():
    reversed_ = RungRecord((1, 4))
    agreeing = RungRecord((1, 4))
    few = RungRecord((1, 4))
    for i in range(8):  # a learning-rate grid whose early ranking reverses
        reversed_.add(f"t{i}", 1, i / 10)
        reversed_.add(f"t{i}", 4, 1 - i / 10)
        agreeing.add(f"t{i}", 1, i / 10)
        agreeing.add(f"t{i}", 4, i / 10 + 0.05)
    for i in range(4):  # reversed too, but too few configurations to say
        few.add(f"t{i}", 1, i)
        few.add(f"t{i}", 4, -i)
    assert reversed_.agreements()[0].kendall_tau == pytest.approx(-1.0) and reversed_.agreements()[0].trusted is False
    line = reversed_.warning()
    assert line is not None and "rungs 1->4 epochs" in line and "-1.00 over 8 configurations" in line
    assert "\n" not in line and reversed_.summary()["trusted"] is False
    assert agreeing.warning() is None and agreeing.summary()["trusted"] is True and agreeing.summary()["measured"]
    assert few.warning() is None and few.agreements()[0].trusted is None and not few.summary()["measured"]
    assert reversed_.latest() == "-1.00(1->4)"


@pytest.mark.slow
def test_an_asha_search_records_its_rung_agreement_and_warns_when_the_proxy_misranks(tmp_path, capsys):
    """A grid of learning rates whose short runs rank unlike the long ones (high rates win early on a
    tiny proxy, then diverge or stall): the search measures it from its own reports and warns."""
    from asp_tune.tune.runner import HpoSettings, ensure_ray, proxy_trust, run_hpo
    from asp_tune.tune.space import parse_space

    ensure_ray(num_cpus=2)
    space = parse_space({"name": "lrs", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 9, "subset": 500,
                                                  "batch_size": 64, "momentum": 0.0, "weight_decay": 0.0},
                         "params": {"lr": {"type": "grid", "values": [0.002, 0.005, 0.01, 0.03, 0.1, 0.3, 1.0, 3.0]}}})
    result = run_hpo(HpoSettings(space=space, algo="asha", ratio=0.3, num_samples=1, grace_period=1,
                                 reduction_factor=3, max_concurrent=2, storage_path=str(tmp_path), verbose=0))
    trust = result.summary["proxy_trust"]
    assert trust["rungs"] == [1, 3, 9] and trust["pairs"][0]["pairs"] >= 2
    # the recorded agreement is the one a direct computation on the trials' reports gives
    again = proxy_trust((1, 3, 9), result.histories)
    assert again.summary() == trust
    # the one-line warning is printed exactly when a measured rung pair ranks unlike the next rung
    assert ("[asp-tune] warning: the proxy misranks: rungs" in capsys.readouterr().err) == (not trust["trusted"])
