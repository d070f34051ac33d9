"""Several runs' selections drawn in one vectorised pass (a pack's members) are each run's own, and greedy
rules' inclusion probabilities sum to what they must."""

from __future__ import annotations

import itertools

import pytest
import torch

from asp_tune.proxy import ProxySelector
from asp_tune.selection import SelectionRule, class_quotas, inclusion_probabilities, select_subset, select_subsets

N, COUNT = 1257, 377
LABELS = torch.randint(0, 10, (N,), generator=torch.Generator().manual_seed(1))


def _values(seed: int) -> torch.Tensor:
    return torch.randn(N, generator=torch.Generator().manual_seed(100 + seed)) ** 3  # heavy tails: greedy rules


def _same(a, b) -> bool:
    return (torch.equal(a.indices, b.indices) and a.top10_mass == b.top10_mass
            and all((x is None and y is None) or torch.equal(x, y)
                    for x, y in ((a.inclusion, b.inclusion), (a.weights, b.weights))))


@pytest.mark.parametrize("rule,temperature,floor,balance", [
    ("calibrated", 1.0, 0.3, True), ("calibrated", 1.0, 0.0, False), ("zscore", 0.05, 0.0, True),
    ("zscore", 1.0, 0.3, False), ("paper", 0.05, 0.0, True), ("paper", 1.0, 0.0, False), ("zscore", 0.0, 0.3, True)])
def test_each_row_of_a_batch_selects_what_it_selects_alone(rule, temperature, floor, balance):
    selection = SelectionRule(rule, temperature=temperature, uniform_floor=floor, class_balance=balance)
    values = [None if s % 4 == 0 else _values(s) for s in range(9)]  # uniform rows mixed in
    labels = [LABELS[torch.randperm(N, generator=torch.Generator().manual_seed(s))] for s in range(9)]
    alone = [select_subset(v, COUNT, selection, torch.Generator().manual_seed(s), labels[s], num_samples=N)
             for s, v in enumerate(values)]
    together = select_subsets(values, COUNT, selection, [torch.Generator().manual_seed(s) for s in range(9)],
                              labels, N)
    assert all(_same(a, b) for a, b in zip(alone, together))
    assert all(sel.indices.unique().numel() == COUNT for sel in together)


@pytest.mark.parametrize("rule,temperature,balance", list(itertools.product(["paper", "zscore"], [1.0, 0.05, 0.01],
                                                                              [True, False])))
def test_greedy_rules_inclusion_probabilities_sum_to_the_count_in_every_class(rule, temperature, balance):
    """A greedy rule leaves most samples' probabilities underflowed or denormal; the fill used to take their
    tail mass as a difference of two sums near 1 and gave NaN, or sums off by up to 558 of 377."""
    selection = SelectionRule(rule, temperature=temperature, uniform_floor=0.0, class_balance=balance)
    for seed in range(12):
        probs = selection.probabilities(_values(seed))
        if balance:
            quotas = class_quotas(LABELS, COUNT, 10)
            pi = inclusion_probabilities(probs, COUNT, LABELS, quotas)
            sums = torch.zeros(10, dtype=torch.float64).index_add_(0, LABELS, pi)
            torch.testing.assert_close(sums, quotas, rtol=0, atol=1e-9)
        else:
            pi = inclusion_probabilities(probs, COUNT)
            assert abs(float(pi.sum()) - COUNT) < 1e-9
        assert bool(((pi >= 0) & (pi <= 1)).all())


@pytest.mark.parametrize("metric,first_full", [("loss", False), ("mixture", True), ("random", False),
                                               ("gradient", False)])
def test_selectors_planned_together_plan_what_they_plan_alone(metric, first_full):
    """Every epoch (unseen-first epochs included), with memories that differ: the same plans, and the
    generators, seen samples and selection counts left the same."""
    def selectors():
        made = []
        for k in range(5):
            s = ProxySelector(N, 8, seed=7, labels=LABELS, metric=metric, ratio=0.3, first_epoch_full=first_full)
            memory_values = torch.rand(N, 10, generator=torch.Generator().manual_seed(k))
            s.memory.update(torch.arange(N), logits=memory_values * 5, targets=LABELS)
            made.append(s)
        return made

    alone, together = selectors(), selectors()
    for epoch in range(8):
        plans_alone = [s.plan(epoch) for s in alone]
        plans_together = ProxySelector.plan_together(together, [epoch] * len(together))
        for a, b in zip(plans_alone, plans_together):
            assert torch.equal(a.indices, b.indices) and a.metric == b.metric and a.top10_mass == b.top10_mass
            assert (a.weights is None) == (b.weights is None)
            if a.weights is not None:
                assert torch.equal(a.weights, b.weights)
    for a, b in zip(alone, together):
        assert torch.equal(a.generator.get_state(), b.generator.get_state())
        assert torch.equal(a.seen, b.seen) and torch.equal(a.times_selected, b.times_selected)
    if metric != "random":  # the memories made their selections differ
        assert len({tuple(s.plan(7).indices[:5].tolist()) for s in alone}) > 1


def test_a_greedy_rule_without_class_balance_trains_without_a_false_divergence():
    """The NaN inclusion probabilities gave NaN loss weights: the run stopped at epoch 4 with "training loss
    became nan ... lower the learning rate", a learning rate that was not the cause."""
    from asp_tune.build import build_trainer
    from asp_tune.config import TrainConfig

    config = TrainConfig(dataset="digits", model="mlp", batch_size=64, epochs=6, ratio=0.3, metric="loss",
                         selection_rule="zscore", temperature=0.05, uniform_floor=0.0, class_balance=False, seed=0)
    trainer = build_trainer(config)
    for _ in range(6):
        trainer.train_epoch()
    assert all(torch.isfinite(torch.tensor(r["train_loss"])) for r in trainer.history)
    assert trainer.sample_weights is not None and bool(torch.isfinite(trainer.sample_weights).all())


def test_runs_planned_together_that_plan_their_own_way_or_share_a_generator_plan_as_alone():
    """A subclass overriding ``plan`` is asked itself; two runs drawing from one generator draw one after the
    other, as they do when each plans alone."""
    from asp_tune.strategies import EpochPlan, Importance

    class FirstSamples(Importance):
        def plan(self, epoch):
            return EpochPlan(epoch, torch.arange(COUNT), "first", 0.3, 0.1)

    def selectors(shared: bool):
        made = [ProxySelector(N, 8, (FirstSamples if k == 1 else Importance)("loss", first_epoch_full=False),
                              seed=k, labels=LABELS) for k in range(3)]
        if shared:  # the third draws from the first one's generator
            made[2].strategy.run.generator = made[0].generator
        return made

    for shared in (False, True):
        alone, together = selectors(shared), selectors(shared)
        plans_alone = [s.plan(0) for s in alone]
        plans_together = Importance.plan_together([s.strategy for s in together], [0, 0, 0])
        assert plans_together[1].metric == "first" and plans_together[0].metric == "loss+unseen"
        assert all(torch.equal(a.indices, b.indices) for a, b in zip(plans_alone, plans_together))
