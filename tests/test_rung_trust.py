"""Rung agreement (``proxy_trust``): a pick is trusted only where every pair of rungs was measured and agrees."""

from __future__ import annotations

from asp_tune.tune.trust import RungRecord


def record(scores: dict[int, list[float]]) -> RungRecord:
    rungs = RungRecord(scores)
    for epoch, values in scores.items():
        for trial, value in enumerate(values):
            rungs.add(f"t{trial}", epoch, value)
    return rungs


def test_every_pair_measured_and_agreeing_is_trusted():
    summary = record({1: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3: [0.2, 0.3, 0.4, 0.5, 0.6, 0.7],
                      9: [0.3, 0.4, 0.5, 0.6, 0.7, 0.8]}).summary()
    assert (summary["trusted"], summary["measured"]) == (True, True)


def test_a_pair_into_the_top_rung_with_too_few_configurations_leaves_the_pick_unjudged():
    """What a small ASHA search measures: its low rungs agree over 6 configurations, and the 4 that reached the
    top rung rank in reverse; 4 are too few to say, so the pick is neither trusted nor distrusted."""
    rungs = record({1: [0.1, 0.2, 0.3, 0.4, 0.5, 0.6], 3: [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], 4: [0.9, 0.8, 0.7, 0.6]})
    summary = rungs.summary()
    assert [p["trusted"] for p in summary["pairs"]] == [True, None]
    assert (summary["trusted"], summary["measured"]) == (None, True) and rungs.warning() is None


def test_a_measured_pair_that_ranks_unlike_its_next_rung_is_distrusted_and_named():
    rungs = record({1: [0.6, 0.5, 0.4, 0.3, 0.2, 0.1], 3: [0.2, 0.3, 0.4, 0.5, 0.6, 0.7], 9: [0.5]})
    summary = rungs.summary()
    assert (summary["trusted"], summary["measured"]) == (False, True)
    assert rungs.warning().startswith("the proxy misranks: rungs 1->3 epochs rank alike with Kendall tau -1.00")


def test_nothing_measured_is_neither():
    summary = record({1: [0.1, 0.2], 3: [0.3]}).summary()
    assert (summary["trusted"], summary["measured"]) == (None, False)
