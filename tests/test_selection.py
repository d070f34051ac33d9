import math

import pytest
import torch

from asp_tune import ProxyMemory, ProxySelector, normalise, select, selection_probabilities, top_mass
from asp_tune.memory import MemoryStack


def gen(seed=0):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def test_select_returns_m_distinct_indices():
    v = torch.randn(1000)
    for m in (1, 10, 500, 1000):
        idx = select(v, m, 1.0, gen())
        assert idx.numel() == m and idx.unique().numel() == m
        assert int(idx.min()) >= 0 and int(idx.max()) < 1000
    idx = select(None, 300, 1.0, gen(), num_samples=1000)
    assert idx.numel() == 300 and idx.unique().numel() == 300


def test_temperature_zero_is_top_m():
    v = torch.randn(5000, generator=gen(1))
    idx = select(v, 250, 0.0, gen())
    assert set(idx.tolist()) == set(torch.topk(v, 250).indices.tolist())


def test_low_temperature_approaches_top_m():
    v = torch.randn(5000, generator=gen(1))
    top = set(torch.topk(v, 250).indices.tolist())
    overlap = len(top & set(select(v, 250, 0.01, gen()).tolist())) / 250
    assert overlap > 0.95


def test_single_draw_frequencies_match_softmax():
    """With m=1 the pick is exactly categorical(softmax(normalise(v)/T))."""
    v = torch.tensor([0.0, 1.0, 2.0, 3.0, 4.0])
    p = selection_probabilities(v, 1.0)
    g = gen(5)
    counts = torch.zeros(5)
    for _ in range(20000):
        counts[select(v, 1, 1.0, g)] += 1
    torch.testing.assert_close(counts / 20000, p, atol=0.01, rtol=0)


def test_selection_favours_high_importance_in_proportion():
    # two classes of samples whose first-draw probabilities differ by a factor e^2 (z = +-1, T = 1)
    n = 2000
    v = torch.cat([torch.ones(n // 2), -torch.ones(n // 2)])
    assert normalise(v)[0].item() == pytest.approx(1.0)
    freq_hi, freq_lo = 0.0, 0.0
    g = gen(2)
    for _ in range(200):
        idx = select(v, 20, 1.0, g)
        freq_hi += (idx < n // 2).sum().item()
        freq_lo += (idx >= n // 2).sum().item()
    # m << N, so the share follows the single-draw odds e^2 : 1
    assert freq_hi / freq_lo == pytest.approx(math.e ** 2, rel=0.15)


def test_uniform_values_select_uniformly_and_spread_reads_fraction():
    v = torch.zeros(1000)
    assert top_mass(v, 1.0) == pytest.approx(0.1)
    assert top_mass(None, 1.0) == pytest.approx(0.1)
    hot = torch.randn(1000, generator=gen(0))
    assert top_mass(hot, 0.1) > top_mass(hot, 1.0) > 0.1


def test_normalise_puts_metrics_on_one_scale():
    loss = torch.rand(100) * 0.01
    score = torch.randint(-50, 50, (100,)).float()
    for v in (loss, score):
        z = normalise(v)
        assert z.mean().abs() < 1e-5 and z.std(unbiased=False) == pytest.approx(1.0, abs=1e-4)


def test_select_rejects_bad_counts():
    with pytest.raises(ValueError, match="count must be in"):
        select(torch.zeros(5), 6)
    with pytest.raises(ValueError, match="temperature"):
        select(torch.zeros(5), 2, -1.0)


def test_memory_update_semantics():
    mem = ProxyMemory(6)
    logits = torch.tensor([[5.0, 0.0], [0.0, 5.0], [0.0, 0.0]])
    targets = torch.tensor([0, 0, 1])
    mem.update(torch.tensor([0, 1, 2]), logits, targets)
    ce = torch.nn.functional.cross_entropy(logits, targets, reduction="none")
    torch.testing.assert_close(mem["loss"][:3], ce)
    p = logits.softmax(1)
    torch.testing.assert_close(mem["entropy"][:3], -(p * p.log()).sum(1))
    onehot = torch.nn.functional.one_hot(targets, 2).float()
    torch.testing.assert_close(mem["gradient"][:3], (p - onehot).norm(dim=1))
    # eq. 1: -1 when right, +1 when wrong (a tie counts as predicting class 0)
    assert mem["prediction"][:3].tolist() == [-1.0, 1.0, 1.0]
    # untrained samples keep their values (zeros here)
    assert mem["loss"][3:].tolist() == [0.0, 0.0, 0.0]
    # a second visit overwrites loss but accumulates prediction; stale values of others are kept
    mem.update(torch.tensor([1]), torch.tensor([[5.0, 0.0]]), torch.tensor([0]))
    assert mem["prediction"][:3].tolist() == [-1.0, 0.0, 1.0]
    assert mem["loss"][1].item() == pytest.approx(ce[0].item())
    assert mem["loss"][2].item() == pytest.approx(ce[2].item())
    assert mem.times_trained.tolist() == [1, 2, 1, 0, 0, 0]


@pytest.mark.parametrize("in_one_table", [False, True])
def test_stacked_updates_record_what_one_update_per_memory_records(in_one_table):
    """Memories updated together, whether or not their tables are rows of one :class:`MemoryStack` (a pack's
    members: one write for all), end as each updated alone; a stacked memory also updates alone, on its row."""
    generator = torch.Generator().manual_seed(0)
    stacked = [ProxyMemory(10) for _ in range(3)]
    alone = [ProxyMemory(10) for _ in range(3)]
    if in_one_table:
        for memory in (*stacked, *alone):  # values before stacking are kept
            memory.update(torch.tensor([7]), torch.ones(1, 5), torch.tensor([2]))
        stack = MemoryStack(stacked)
        assert stack.latest.shape[0] == 3 and stacked[1]._latest.data_ptr() == stack.latest[1].data_ptr()
    for step in range(3):  # cumulative columns add up, latest ones are replaced
        if step == 2:  # the middle one left the pack: it goes on alone, the others together
            stacked[1].update(torch.tensor([0, 9]), torch.ones(2, 5), torch.tensor([1, 3]))
            alone[1].update(torch.tensor([0, 9]), torch.ones(2, 5), torch.tensor([1, 3]))
            stacked, alone = [stacked[0], stacked[2]], [alone[0], alone[2]]
        members = len(stacked)
        logits = torch.randn(members, 4, 5, generator=generator)
        targets = torch.randint(0, 5, (members, 4), generator=generator)
        norms = torch.rand(members, 4, generator=generator)
        indices = [torch.randperm(10, generator=generator)[:4] for _ in range(members)]
        stacked[0].update_stacked(stacked[1:], indices, logits, targets, norms)
        for k, memory in enumerate(alone):
            memory.update(indices[k], logits[k], targets[k], norms[k])
    for ours, theirs in zip(stacked, alone):
        for column in theirs.values:
            assert torch.equal(ours[column], theirs[column]), column
        assert torch.equal(ours.times_trained, theirs.times_trained)
    losses = torch.rand(2, 3)  # a regression task's memory learns from given per-sample losses
    given = [ProxyMemory(5, columns=["loss"]) for _ in range(2)]
    given[0].update_stacked(given[1:], [torch.tensor([0, 1, 2]), torch.tensor([4, 3, 2])], losses=losses)
    assert given[1]["loss"].tolist() == pytest.approx([0.0, 0.0, losses[1, 2].item(), losses[1, 1].item(),
                                                       losses[1, 0].item()])
    with pytest.raises(ValueError, match="same statistics"):
        given[0].update_stacked([ProxyMemory(5)], [torch.tensor([0]), torch.tensor([1])], losses=torch.rand(2, 1))
    with pytest.raises(ValueError, match="2 batches of one size"):  # a batch per memory, indices to match
        given[0].update_stacked(given[1:], [torch.tensor([0, 1]), torch.tensor([2])], losses=torch.rand(2, 2))
    with pytest.raises(ValueError, match="2 batches of one size"):
        given[0].update_stacked(given[1:], [torch.tensor([0]), torch.tensor([1])], losses=torch.rand(3, 1))


def test_a_statistic_of_the_whole_batch_is_computed_for_each_batch_alone():
    from asp_tune.memory import register_statistic
    from asp_tune.registry import STATISTICS

    register_statistic("relative_loss", lambda view: view.loss() / view.loss().mean())  # not per_row
    try:
        losses = torch.tensor([[1.0, 3.0], [10.0, 30.0]])
        memories = [ProxyMemory(2, columns=["loss", "relative_loss"]) for _ in range(2)]
        memories[0].update_stacked(memories[1:], [torch.tensor([0, 1])] * 2, losses=losses)
        for memory in memories:  # each batch's own mean: 0.5 and 1.5 in both, not over the four losses
            assert memory["relative_loss"].tolist() == [0.5, 1.5]
    finally:
        STATISTICS.unregister("relative_loss")


def test_memory_state_round_trip_and_shape_check():
    mem = ProxyMemory(4)
    mem.update(torch.tensor([2]), torch.tensor([[0.0, 3.0]]), torch.tensor([0]))
    other = ProxyMemory(4)
    other.load_state_dict(mem.state_dict())
    for k in mem.values:
        assert torch.equal(mem[k], other[k])
    with pytest.raises(ValueError, match="expected \\(5, 4\\)"):
        ProxyMemory(5).load_state_dict(mem.state_dict())


def _drive(selector, epochs, start=0):
    """Plan epochs, feeding fake logits derived from the indices so memory changes."""
    picks = []
    for e in range(start, epochs):
        plan = selector.plan(e)
        idx = plan.indices
        logits = torch.stack([torch.sin(idx.float() * (e + 1)), torch.cos(idx.float())], 1) * 3
        selector.observe(idx, logits, idx % 2)
        picks.append((plan.metric, plan.indices.tolist()))
    return picks


def test_selector_state_round_trip_gives_identical_next_selections():
    kw = dict(num_samples=500, epochs=12, ratio=0.3, ratio_schedule="dynamic", metric="mixture", seed=7)
    a = ProxySelector(**kw)
    _drive(a, 5)
    state = a.state_dict()
    rest = _drive(a, 12, start=5)
    b = ProxySelector(**{**kw, "seed": 123})
    b.load_state_dict(state)
    assert _drive(b, 12, start=5) == rest


def test_selector_same_seed_same_selections_and_counts_follow_schedule():
    kw = dict(num_samples=1000, epochs=10, ratio=0.3, ratio_schedule="dynamic", metric="loss", seed=1)
    a, b = ProxySelector(**kw), ProxySelector(**kw)
    pa, pb = _drive(a, 10), _drive(b, 10)
    assert pa == pb
    expected = a.strategy.schedule.ratios()
    assert [len(ix) for _, ix in pa] == [max(2, round(r * 1000)) for r in expected]
    assert pa[0][0] == "all"


def test_selection_only_of_chosen_metric_and_shuffled():
    s = ProxySelector(num_samples=200, epochs=3, ratio=0.5, metric="loss", temperature=0.0,
                      first_epoch_full=False, unseen_first=False)
    s.memory.values["loss"].copy_(torch.arange(200.0))
    plan = s.plan(0)
    assert sorted(plan.indices.tolist()) == list(range(100, 200))
    assert plan.indices.tolist() != sorted(plan.indices.tolist())  # batches are not importance-ordered


def test_unseen_samples_are_picked_first_and_all_are_seen_after_ceil_one_over_r_epochs():
    n, r = 1000, 0.3
    s = ProxySelector(num_samples=n, epochs=10, ratio=r, metric="loss", first_epoch_full=False, seed=4)
    seen: set[int] = set()
    for epoch in range(math.ceil(1 / r)):
        before = set(seen)
        plan = s.plan(epoch)
        picked = set(plan.indices.tolist())
        unseen_before = n - len(before)
        # every never-seen sample is taken before any seen one
        assert len(picked - before) == min(plan.count, unseen_before)
        s.observe(plan.indices, torch.randn(plan.count, 2), plan.indices % 2)
        seen |= picked
    assert len(seen) == n and bool(s.seen.all())
    plan = s.plan(4)  # warm-up over: the rule picks among all samples again
    assert plan.metric == "loss"


def test_a_memory_stack_records_only_the_columns_a_batch_computes():
    """Given per-sample losses only (a regression task), the other latest columns keep their values."""
    stacked, alone = [ProxyMemory(6) for _ in range(2)], [ProxyMemory(6) for _ in range(2)]
    for memory in (*stacked, *alone):
        memory.update(torch.arange(6), torch.randn(6, 3, generator=torch.Generator().manual_seed(1)),
                      torch.tensor([0, 1, 2, 0, 1, 2]))
    MemoryStack(stacked)
    losses, indices = torch.rand(2, 3), [torch.tensor([0, 1, 2]), torch.tensor([5, 3, 1])]
    stacked[0].update_stacked(stacked[1:], indices, losses=losses)
    for k, memory in enumerate(alone):
        memory.update(indices[k], losses=losses[k])
    for ours, theirs in zip(stacked, alone):
        for column in theirs.values:
            assert torch.equal(ours[column], theirs[column]), column
        assert torch.equal(ours.times_trained, theirs.times_trained)
    assert stacked[1]["entropy"][5] > 0 and stacked[1]["loss"][5] == losses[1, 0]
