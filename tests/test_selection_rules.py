"""Selection rules, floor, class balance, unbiased reweighting, last-layer gradient, InfoBatch."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from asp_tune import TrainConfig, Trainer, load_dataset
from asp_tune.cli import main
from asp_tune.errors import ConfigError
from asp_tune.memory import FeatureNormTap, ProxyMemory, memory_metrics
from asp_tune.proxy import ProxySelector
from asp_tune.strategies import InfoBatchPruning
from asp_tune.selection import (SelectionRule, class_quotas, normalise, select_subset, systematic_sample,
                                top_share, water_fill)


def plain_rule(rule: str = "zscore", **settings) -> SelectionRule:
    """A rule with no floor, class balance or reweighting unless asked (the rule alone, as the tests transcribe it)."""
    return SelectionRule(rule, **{"uniform_floor": 0.0, "class_balance": False, "reweight": False, **settings})


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def trained_memory() -> ProxyMemory:
    """The memory of a partly trained digits MLP: every metric with its real distribution."""
    cfg = TrainConfig(epochs=3, ratio=1.0, metric="loss", first_epoch_full=True, lr=0.05)
    trainer = Trainer(cfg, data=load_dataset("digits"))
    for _ in range(2):
        trainer.train_epoch()
    return trainer.selector.memory


# ---------------------------------------------------------------------------------- rules


def test_paper_rule_equals_zscore_rule_at_temperature_one_over_std():
    v = torch.tensor([0.3, 2.0, -1.0, 5.5, 0.0, 1.2, 7.0, -3.0])
    std = float(v.std(unbiased=False))
    paper = plain_rule("paper", temperature=1.0).probabilities(v)
    zscore = plain_rule("zscore", temperature=1.0 / std).probabilities(v)
    torch.testing.assert_close(paper, zscore, rtol=1e-6, atol=1e-12)
    torch.testing.assert_close(paper, torch.softmax(v.double(), 0))


@pytest.mark.parametrize("target", [0.15, 0.3, 0.5, 0.8])
def test_calibrated_rule_hits_its_target_mass_for_every_metric(trained_memory, target):
    for metric in memory_metrics():
        values = trained_memory[metric]
        share = top_share(plain_rule("calibrated", top10_mass=target).probabilities(values))
        # ties cap what any temperature can reach: the cumulative prediction score takes few values,
        # and when t > k samples tie at the top, the top k can hold at most k / t of the mass
        k = math.ceil(0.1 * values.numel())
        reachable = k / int((values >= torch.topk(values, k).values.min()).sum())
        assert share == pytest.approx(min(target, reachable), abs=0.01), metric
    # the floor is part of the calibration: the final share is the target
    share = top_share(plain_rule("calibrated", top10_mass=0.4, uniform_floor=0.3)
                      .probabilities(trained_memory["loss"]))
    assert share == pytest.approx(0.4, abs=0.01)


def test_zscore_rule_greediness_differs_between_metrics_and_calibration_removes_that(trained_memory):
    shares = {m: top_share(plain_rule("zscore").probabilities(trained_memory[m])) for m in memory_metrics()}
    assert max(shares.values()) - min(shares.values()) > 0.05
    calibrated = [top_share(plain_rule("calibrated", top10_mass=0.3).probabilities(trained_memory[m]))
                  for m in memory_metrics()]
    assert max(calibrated) - min(calibrated) < 0.02


def test_uniform_floor_bounds_the_minimum_probability():
    v = torch.arange(1000.0)
    n, m, f = 1000, 100, 0.2
    rule = plain_rule("zscore", temperature=0.05, uniform_floor=f)
    p = rule.probabilities(v)
    assert float(p.min()) >= f / n * (1 - 1e-9) and float(p.sum()) == pytest.approx(1.0)
    sel = select_subset(v, m, rule, gen())
    assert float(sel.inclusion.min()) >= m * f / n * (1 - 1e-6)
    assert float(sel.inclusion.sum()) == pytest.approx(m, abs=1e-3)
    no_floor = select_subset(v, m, plain_rule("zscore", temperature=0.05), gen())
    assert float(no_floor.inclusion.min()) < 1e-3  # without a floor the rest nearly starve


def test_water_fill_caps_at_one_and_sums_to_count():
    p = torch.tensor([0.5, 0.3, 0.1, 0.05, 0.05]).double()
    pi = water_fill(p, 3)
    assert float(pi.sum()) == pytest.approx(3.0)
    assert pi[:2].tolist() == [1.0, 1.0]  # 3 x 0.5 and 3 x 0.3 exceed 1
    torch.testing.assert_close(pi[2:], torch.tensor([0.5, 0.25, 0.25], dtype=torch.float64))


def test_systematic_sampling_realises_the_inclusion_probabilities():
    pi = torch.tensor([1.0, 0.9, 0.6, 0.3, 0.2, 0.0, 0.5, 0.5]).double()  # sums to 4
    hits = torch.zeros(8)
    g = gen(3)
    for _ in range(6000):
        idx = systematic_sample(pi, 4, g)
        assert idx.numel() == 4 and idx.unique().numel() == 4
        hits[idx] += 1
    torch.testing.assert_close(hits / 6000, pi.float(), atol=0.02, rtol=0)


def test_class_balance_matches_class_sizes_within_one():
    labels = torch.cat([torch.full((n,), c) for c, n in enumerate([500, 300, 150, 50])])
    values = torch.randn(1000, generator=gen(1)) + 3.0 * (labels == 3)  # class 3 looks "important"
    for rule in (plain_rule("zscore", class_balance=True), plain_rule("calibrated", top10_mass=0.6,
                                                                           class_balance=True),
                 plain_rule("zscore", temperature=0.0, class_balance=True)):
        sel = select_subset(values, 137, rule, gen(2), labels=labels)
        assert sel.indices.unique().numel() == 137
        got = torch.bincount(labels[sel.indices], minlength=4).double()
        expected = torch.tensor([500, 300, 150, 50]).double() * 137 / 1000
        assert ((got - expected).abs() <= 1).all(), (rule, got)
    assert class_quotas(labels, 137, 4).sum() == 137


# ---------------------------------------------------------------------------------- reweighting


def test_reweighted_subset_gradient_is_unbiased_for_the_full_data_gradient():
    """Logistic regression: the Monte-Carlo mean of the weighted subset gradient approaches the
    full-data gradient; the unweighted subset gradient does not."""
    torch.manual_seed(0)
    n, d, m = 300, 4, 30
    x = torch.randn(n, d)
    y = (x[:, 0] + 0.5 * torch.randn(n) > 0).long()
    w = torch.randn(d, 2, requires_grad=True)
    losses = F.cross_entropy(x @ w, y, reduction="none")
    per_sample = torch.stack([torch.autograd.grad(losses[i], w, retain_graph=True)[0] for i in range(n)])
    full = per_sample.mean(0)
    rule = plain_rule("zscore", temperature=0.5, reweight=True)
    g = gen(7)
    weighted, plain = torch.zeros_like(full), torch.zeros_like(full)
    draws = 3000
    for _ in range(draws):
        sel = select_subset(losses.detach(), m, rule, g)
        idx = sel.indices
        weighted += (sel.weights[idx, None, None] * per_sample[idx]).mean(0)
        plain += per_sample[idx].mean(0)
    weighted, plain = weighted / draws, plain / draws
    scale = float(full.norm())
    assert float((weighted - full).norm()) / scale < 0.05
    assert float((plain - full).norm()) / scale > 0.3  # importance sampling alone is biased


def test_class_balance_trains_classes_whose_share_is_below_one_pick_and_stays_unbiased():
    """A long tail: 10 classes of 30 samples and 100 classes of 1-3 samples (shares of 0.3-0.9 picks). The
    rounding of the quotas was deterministic: the same 40 small classes lost it in every epoch (inclusion
    probability 0), and the reweighted subset loss missed their part of the full-data loss."""
    sizes = torch.tensor([30] * 10 + [1 + k % 3 for k in range(100)])
    labels = torch.repeat_interleave(torch.arange(110), sizes)
    n, count = labels.numel(), labels.numel() * 3 // 10
    values, loss = torch.randn(n, generator=gen(1)), torch.rand(n, generator=gen(2)) + (labels >= 10).double()
    rule = plain_rule("calibrated", top10_mass=0.3, uniform_floor=0.3, class_balance=True, reweight=True)
    g, draws = gen(3), 600
    picked, weighted = torch.zeros(110), 0.0
    for _ in range(draws):
        sel = select_subset(values, count, rule, g, labels=labels)
        assert sel.indices.unique().numel() == count and bool((sel.inclusion > 0).all())
        picked += torch.bincount(labels[sel.indices], minlength=110)
        weighted += float((sel.weights[sel.indices] * loss[sel.indices]).sum()) / count
    share = sizes.double() * count / n
    assert bool((picked > 0).all())  # every class trained
    torch.testing.assert_close(picked.double() / draws, share, atol=0.1, rtol=0.0)  # expected quota = share
    assert weighted / draws == pytest.approx(float(loss.mean()), rel=0.01)  # Horvitz-Thompson: unbiased
    quotas = class_quotas(labels, count, 110, [gen(4)])
    assert int(quotas.sum()) == count and bool((quotas == quotas.round()).all())


def test_reweighting_uniform_picks_gives_weight_one():
    sel = select_subset(None, 10, plain_rule(reweight=True), gen(), num_samples=40)
    torch.testing.assert_close(sel.weights, torch.ones(40))


# ---------------------------------------------------------------------------------- last-layer gradient


def test_confident_samples_keep_their_gradient_norm_and_masked_classes_their_entropy():
    """sum(p^2) - 2 p_y + 1 cancelled to exactly 0 in float32 from a logit margin of 12 (late in training most
    samples tied at 0); a class masked with a logit of -inf made the entropy NaN, so the sample kept 0."""
    margins = torch.tensor([8.0, 12.0, 16.0, 24.0])
    logits = torch.zeros(4, 5)
    logits[:, 0] = margins
    memory = ProxyMemory(4)
    memory.update(torch.arange(4), logits, torch.zeros(4, dtype=torch.long))
    p = logits.double().softmax(1)
    others = p[:, 1:]
    exact = ((others ** 2).sum(1) + others.sum(1) ** 2).sqrt()  # the same norm without the cancellation
    assert torch.allclose(memory["logit_gradient"].double(), exact, rtol=1e-4) and bool((exact > 0).all())
    masked = torch.tensor([[1.0, 2.0, float("-inf")], [0.0, 0.0, float("-inf")]])
    memory = ProxyMemory(2)
    memory.update(torch.arange(2), masked, torch.tensor([0, 1]))
    expected = [float(torch.special.entr(row[:2].softmax(0)).sum()) for row in masked]
    assert memory["entropy"].tolist() == pytest.approx(expected)  # 0.582 and log 2


def test_a_head_registered_before_its_projection_is_not_taken_for_the_last_layer():
    """The last Linear registered was taken as the one giving the logits: a network registering its head first
    had its projection's input tapped, and the gradient metric was off by up to 100%."""
    class HeadFirst(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.out = torch.nn.Linear(8, 3)
            self.proj = torch.nn.Linear(6, 8)

        def forward(self, x):
            return self.out(torch.relu(self.proj(x)))

    model = HeadFirst()
    tap = FeatureNormTap(model)
    logits = model(torch.randn(5, 6))
    with pytest.warns(UserWarning, match=r"gives 8 outputs where the network gives 3: the gradient metric leaves"):
        assert tap.take(5, logits.shape[-1]) is None  # logit_gradient then, not a wrong norm
    model(torch.randn(5, 6))
    assert tap.take(5) is not None  # without the logits' size: as before
    regression = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 1))
    tap = FeatureNormTap(regression)
    values = regression(torch.randn(16, 6)).squeeze(-1)  # (N,) regression values: no logits' size to compare
    assert values.dim() == 1 and tap.take(16, values.shape[-1] if values.dim() == 2 else None) is not None


def test_last_layer_gradient_norm_equals_autograd_per_sample_norm():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(6, 8), torch.nn.ReLU(), torch.nn.Linear(8, 3))
    tap = FeatureNormTap(model)
    x, y = torch.randn(5, 6), torch.tensor([0, 2, 1, 1, 0])
    logits = model(x)
    memory = ProxyMemory(5)
    memory.update(torch.arange(5), logits, y, tap.take(5))
    last = model[2]
    for i in range(5):
        loss = F.cross_entropy(logits[i:i + 1], y[i:i + 1])
        gw, gb = torch.autograd.grad(loss, [last.weight, last.bias], retain_graph=True)
        expected = torch.sqrt((gw ** 2).sum() + (gb ** 2).sum())
        assert float(memory["gradient"][i]) == pytest.approx(float(expected), rel=1e-5)
        p = logits[i].softmax(0).detach()
        assert float(memory["logit_gradient"][i]) == pytest.approx(float((p - F.one_hot(y[i], 3)).norm()), rel=1e-5)


def test_trainer_feeds_the_last_layer_features_from_the_training_forward(trained_memory):
    grad, logit = trained_memory["gradient"], trained_memory["logit_gradient"]
    assert bool((grad > logit).all())  # sqrt(||h||^2 + 1) > 1 once features were seen
    rank = lambda v: v.argsort().argsort().double()  # noqa: E731
    corr = torch.corrcoef(torch.stack([rank(grad), rank(trained_memory["loss"])]))[0, 1]
    assert corr < 0.999  # it does not rank exactly like loss


# ---------------------------------------------------------------------------------- InfoBatch


def test_infobatch_keeps_every_above_mean_sample_and_is_unbiased():
    loss = torch.rand(2000, generator=gen(4)) ** 3 * 5
    ib = InfoBatchPruning(prune=0.6)
    g = gen(5)
    total = torch.zeros(())
    high = set(torch.nonzero(loss >= loss.mean()).squeeze(1).tolist())
    for _ in range(1500):
        kept, weights = ib.prune_plan(loss, g)
        assert high <= set(kept.tolist())
        total += (weights[kept] * loss[kept]).sum()
    assert float(total / 1500) == pytest.approx(float(loss.sum()), rel=0.01)


def test_infobatch_run_prunes_then_anneals_to_full_data():
    cfg = TrainConfig(epochs=8, metric="infobatch", infobatch_prune=0.5, infobatch_anneal=0.25)
    t = Trainer(cfg, data=load_dataset("digits"))
    t.fit()
    used = [r["metric_used"] for r in t.history]
    # InfoBatch's own rule (delta = 1 - anneal = 0.75): epochs 1 .. floor(8 * 0.75) = 6 prune, epoch 7 is full
    assert used[0] == "all" and used[-1:] == ["all"] and set(used[1:7]) == {"infobatch"}
    n = len(t.data.train)
    assert all(r["selected"] < n for r in t.history[1:7]) and t.history[-1]["selected"] == n
    assert t.history[-1]["val_accuracy"] > 0.8


# ---------------------------------------------------------------------------------- resume and input


def _drive(selector: ProxySelector, start: int, stop: int) -> list:
    picks = []
    for e in range(start, stop):
        plan = selector.plan(e)
        idx = plan.indices
        logits = torch.stack([torch.sin(idx.float() * (e + 1)), torch.cos(idx.float())], 1) * 3
        selector.observe(idx, logits, idx % 2, feature_norms=(idx % 7).float())
        picks.append((plan.metric, idx.tolist(), None if plan.weights is None else plan.weights.tolist()))
    return picks


@pytest.mark.parametrize("options", [
    dict(metric="mixture", selection_rule="calibrated", top10_mass=0.4, uniform_floor=0.2, class_balance=True,
         reweight=True),
    dict(metric="loss", selection_rule="paper", temperature=0.5, reweight=True, class_balance=False),
    dict(metric="gradient", selection_rule="zscore", temperature=0.0, class_balance=True),
    dict(metric="infobatch", ratio=1.0),
])
def test_resumed_selector_makes_the_same_selections_with_every_option(options):
    labels = torch.arange(400) % 2
    kw = {**dict(num_samples=400, epochs=10, ratio=0.3, ratio_schedule="dynamic", seed=9, labels=labels), **options}
    straight = ProxySelector(**kw)
    _drive(straight, 0, 4)
    state = straight.state_dict()
    rest = _drive(straight, 4, 10)
    resumed = ProxySelector(**{**kw, "seed": 1})
    resumed.load_state_dict(state)
    assert _drive(resumed, 4, 10) == rest


def test_reweighted_trainer_resumes_exactly(tmp_path):
    data = load_dataset("digits", subset=400)
    cfg = TrainConfig(epochs=5, ratio=0.4, metric="mixture", selection_rule="calibrated", uniform_floor=0.1,
                      class_balance=True, reweight=True, seed=2)
    straight = Trainer(cfg, data=data)
    straight.train_epoch(), straight.train_epoch()
    straight.save_checkpoint(tmp_path / "c.pt")
    rest = [straight.train_epoch() for _ in range(3)]
    resumed = Trainer(cfg, data=data)
    resumed.load_checkpoint(tmp_path / "c.pt")
    again = [resumed.train_epoch() for _ in range(3)]
    for a, b in zip(rest, again):
        assert a["metric_used"] == b["metric_used"] and a["val_accuracy"] == b["val_accuracy"]
        assert a["train_loss"] == pytest.approx(b["train_loss"], abs=1e-6)


@pytest.mark.parametrize("args, message", [
    (["--uniform-floor", "-0.1"], "invalid uniform_floor=-0.1: allowed a number in [0.0, 1.0]"),
    (["--top10-mass", "1.5"], "invalid top10_mass=1.5: allowed a number in [0.1, 1.0)"),
    (["--top10-mass", "0"], "invalid top10_mass=0.0"),
    (["--selection-rule", "greedy"], "invalid selection_rule='greedy': allowed one of 'zscore', 'paper', 'calibrated'"),
    (["--metric", "infobatch", "--ratio", "0.3"], "invalid ratio=0.3: allowed 1.0 with metric 'infobatch'"),
    (["--infobatch-prune", "1"], "invalid infobatch_prune=1.0"),
])
def test_bad_selection_settings_name_the_field_and_exit_2(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    code = main(["train", "--epochs", "1", "--metric", "loss", "--ratio", "0.5", "--quiet", "--out", str(out), *args])
    assert code == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_flag_that_is_not_a_boolean_is_refused_by_the_parser(tmp_path, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["train", "--reweight", "maybe", "--out", str(tmp_path / "run")])
    assert exit_.value.code == 2 and "expected true/false, got 'maybe'" in capsys.readouterr().err


def test_selection_rule_errors_name_the_field():
    with pytest.raises(ConfigError, match="selection_rule"):
        SelectionRule("softmax")
    with pytest.raises(ConfigError, match="uniform_floor"):
        SelectionRule(uniform_floor=2.0)
    assert math.isclose(float(normalise(torch.ones(4)).abs().sum()), 0.0)


def test_grouped_water_fill_equals_the_fill_of_each_group():
    from asp_tune.selection import grouped_water_fill

    g = gen(11)
    groups = torch.randint(0, 5, (400,), generator=g)
    p = torch.softmax(torch.randn(400, generator=g).double() * 4, 0)
    counts = torch.tensor([7.0, 20.0, 3.0, 11.0, 30.0])
    pi = grouped_water_fill(p, groups, counts)
    for c in range(5):
        members = torch.nonzero(groups == c).squeeze(1)
        torch.testing.assert_close(pi[members], water_fill(p[members], int(counts[c])))
        assert float(pi[members].sum()) == pytest.approx(float(counts[c]))
