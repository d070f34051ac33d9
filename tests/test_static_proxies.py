"""Static proxies and SVP (asp_tune/static_proxies.py, proxy_scores.py, svp.py): each strategy on a
constructed case, the cached proxy model, active learning's pool, pictures and bad input."""

from __future__ import annotations

import json
import threading
import time

import numpy as np
import pandas as pd
import pytest
import torch

from asp_tune import proxy_scores as scores_module
from asp_tune.config import TrainConfig
from asp_tune.errors import ConfigError
from asp_tune.proxy import ProxySelector
from asp_tune.proxy_scores import ProxyScores, proxy_scores
from asp_tune.registry import STATIC_PROXY_NAMES
from asp_tune.static_proxies import ForgettingEvents, greedy_k_centers
from asp_tune.svp import ActiveLearner, load_data
from asp_tune.svp_settings import ActiveLearningSettings, CoresetSettings
from asp_tune.build import build_trainer
from tests.test_cli import run_cli

N, CLASSES = 200, 10


def fake_scores(n: int = N, seed: int = 0) -> ProxyScores:
    g = torch.Generator().manual_seed(seed)
    return ProxyScores(loss=torch.rand(n, generator=g), entropy=torch.rand(n, generator=g),
                       least_confidence=torch.rand(n, generator=g), forgetting=torch.randint(0, 5, (n,), generator=g).float(),
                       features=torch.randn(n, 8, generator=g).half(), seconds=1.5, model="mlp", epochs=1,
                       val_accuracy=0.5, key="k")


def selector(metric: str, ratio: float = 0.3, scores: ProxyScores | None = None, class_balance: bool = False,
             epochs: int = 4) -> ProxySelector:
    labels = torch.arange(N) % CLASSES
    return ProxySelector(N, epochs, ratio=ratio, metric=metric, seed=3, labels=labels,
                         selection_rule="calibrated", class_balance=class_balance, proxy_scores=scores)


@pytest.mark.parametrize("metric", sorted(STATIC_PROXY_NAMES))
def test_every_strategy_gives_the_requested_number_of_distinct_indices(metric):
    sel = selector(metric, 0.3, fake_scores())
    plans = [sel.plan(e) for e in range(4)]
    for plan in plans:
        assert plan.count == 60 and plan.indices.unique().numel() == 60
        assert plan.metric == metric
    if metric != "fewer_epochs":  # fixed for the run: the same samples every epoch
        assert all(set(p.indices.tolist()) == set(plans[0].indices.tolist()) for p in plans)
    assert not sel.tracks_importance  # no memory updates: the subset never changes


def test_easiest_and_hardest_are_the_lowest_and_highest_proxy_losses():
    scores = fake_scores()
    order = torch.argsort(scores.loss)
    assert set(selector("easiest", 0.1, scores).strategy.subset.fixed.tolist()) == set(order[:20].tolist())
    assert set(selector("hardest", 0.1, scores).strategy.subset.fixed.tolist()) == set(order[-20:].tolist())
    balanced = selector("hardest", 0.1, scores, class_balance=True).strategy.subset.fixed
    labels = torch.arange(N) % CLASSES
    assert torch.bincount(labels[balanced], minlength=CLASSES).tolist() == [2] * CLASSES
    for k in range(CLASSES):  # within each class, its two highest losses
        mine = torch.nonzero(labels == k).squeeze(1)
        top = mine[torch.argsort(scores.loss[mine], descending=True)[:2]]
        assert set(top.tolist()) <= set(balanced.tolist())


@pytest.mark.parametrize("metric,score", [("max_entropy", "entropy"), ("least_confidence", "least_confidence"),
                                          ("forgetting", "forgetting")])
def test_svp_uncertainty_strategies_keep_the_top_scores(metric, score):
    scores = fake_scores()
    values = scores.score(score)
    chosen = selector(metric, 0.25, scores).strategy.subset.fixed
    assert values[chosen].min() >= torch.topk(values, 50).values.min()


def test_half_classes_keeps_exactly_half_of_the_classes():
    sel = selector("half_classes", 0.5)
    labels = torch.arange(N) % CLASSES
    kept = labels[sel.strategy.subset.fixed].unique()
    assert kept.numel() == CLASSES // 2
    assert sel.strategy.subset.fixed.numel() == 100  # ratio 0.5 of balanced classes: every sample of the kept half
    assert set(sel.strategy.subset.fixed.tolist()) == set(torch.nonzero(torch.isin(labels, kept)).squeeze(1).tolist())
    small = selector("half_classes", 0.2).strategy.subset.fixed
    assert labels[small].unique().numel() <= CLASSES // 2 and small.numel() == 40


def test_fewer_epochs_streams_whole_passes():
    sel = selector("fewer_epochs", 0.25, epochs=8)
    plans = [sel.plan(e).indices for e in range(8)]
    for first in (0, 4):  # every 1/r = 4 epochs are exactly one pass over all the data
        assert sorted(torch.cat(plans[first:first + 4]).tolist()) == list(range(N))


def test_k_centers_picks_one_point_per_cluster_first():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [50.0, 0.0], [0.0, 50.0], [50.0, 50.0], [25.0, 100.0]])
    points = torch.cat([c + torch.randn(30, 2, generator=g) for c in centres])
    cluster = torch.arange(5).repeat_interleave(30)
    picks = greedy_k_centers(points, 12, generator=torch.Generator().manual_seed(1))
    assert picks.unique().numel() == 12
    assert sorted(cluster[picks[:5]].tolist()) == [0, 1, 2, 3, 4]
    # from a labelled pool inside cluster 0, the next four picks cover the other four clusters
    pool = torch.arange(5)
    after = greedy_k_centers(points, 4, initial=pool)
    assert sorted(cluster[after].tolist()) == [1, 2, 3, 4] and not set(after.tolist()) & set(pool.tolist())
    with pytest.raises(ConfigError, match="count"):
        greedy_k_centers(points, 150, initial=pool)


def test_forgetting_events_on_a_scripted_prediction_history():
    events = ForgettingEvents(4)
    history = [  # correct? per step for samples 0..3 (all trained each step)
        [1, 0, 1, 0],
        [0, 1, 1, 0],  # sample 0 forgets
        [1, 0, 1, 0],  # sample 1 forgets
        [0, 1, 1, 0],  # sample 0 forgets again
        [1, 1, 0, 0],  # sample 2 forgets
    ]
    for step in history:
        events.update(torch.arange(4), torch.tensor(step, dtype=torch.bool))
    assert events.events.tolist() == [2, 1, 1, 0]
    assert events.scores().tolist() == [2.0, 1.0, 1.0, 3.0]  # sample 3 was never learned: max + 1
    partial = ForgettingEvents(3)  # only the trained samples change
    partial.update(torch.tensor([0, 2]), torch.tensor([True, True]))
    partial.update(torch.tensor([0]), torch.tensor([False]))
    assert partial.events.tolist() == [1, 0, 0]


def test_the_static_subset_survives_a_checkpoint():
    a = selector("kcenters", 0.3, fake_scores())
    a.plan(0)
    b = selector("kcenters", 0.3, fake_scores(seed=9))  # a different cache would give another subset
    b.load_state_dict(a.state_dict())
    assert torch.equal(a.strategy.subset.fixed, b.strategy.subset.fixed)
    assert torch.equal(a.plan(1).indices, b.plan(1).indices)


def test_proxy_scores_are_computed_once_and_shared_by_every_trial(monkeypatch):
    calls = []
    real = scores_module.compute_proxy_scores

    def counted(config, data):
        calls.append(config)
        time.sleep(0.3)  # long enough for the other trials to queue on the lock
        return real(config, data)

    monkeypatch.setattr(scores_module, "compute_proxy_scores", counted)
    base = TrainConfig(metric="forgetting", ratio=0.3, epochs=8, subset=300)
    trials = [base.replace(lr=lr, weight_decay=wd) for lr, wd in ((0.1, 5e-4), (0.05, 0.0), (0.2, 1e-3))]
    data = load_data(base)
    results: list[ProxyScores] = []
    threads = [threading.Thread(target=lambda c=c: results.append(proxy_scores(c, data))) for c in trials]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(calls) == 1  # one proxy for the whole search, whatever each trial's learning rate
    assert sum(r.computed_here for r in results) == 1 and len({r.key for r in results}) == 1
    assert all(torch.equal(r.loss, results[0].loss) for r in results)
    assert calls[0].lr == TrainConfig.lr and calls[0].epochs == 2  # default optimisation, a quarter of the epochs
    # a trial reports the proxy it shared; a hit leaves the global random state as a miss does
    torch.manual_seed(5)
    trainer = build_trainer(trials[0], data=data)
    summary = trainer.fit()
    assert summary["proxy_computed"] is False and summary["proxy_seconds"] == pytest.approx(results[0].seconds)
    assert len(calls) == 1
    other = TrainConfig(metric="forgetting", ratio=0.3, epochs=4, subset=300, proxy_epochs=3)
    proxy_scores(other, data)
    assert len(calls) == 2  # another proxy model is another cache entry


def test_the_proxy_trains_with_default_optimisation_and_its_cache_knows_everything_its_run_takes():
    """The proxy trained with a trial's optimiser (Adam at SGD's learning rate) and the target's model_args
    (given to another network too), while its cache key held neither: an SGD run reused Adam's scores."""
    from asp_tune.proxy_scores import cache_key, proxy_train_config

    base = TrainConfig(metric="forgetting", ratio=0.3, epochs=8, subset=300, model_args={"hidden": 32})
    adam = proxy_train_config(base.replace(optimizer="adam", betas=(0.8, 0.9)))
    assert (adam.optimizer, adam.betas) == (TrainConfig.optimizer, TrainConfig.betas)
    assert adam.model_args == {"hidden": 32}  # the target network itself: its own arguments
    other = proxy_train_config(base.replace(proxy_model="resnet8"))
    assert (other.model, other.model_args) == ("resnet8", {})  # another network: not the target's arguments
    data = load_data(base)
    keys = {cache_key(c, data) for c in (base, base.replace(optimizer="adam"), base.replace(lr=0.01))}
    assert len(keys) == 1  # trials differing in optimisation share one proxy
    assert cache_key(base.replace(model_args={"hidden": 64}), data) != cache_key(base, data)
    assert cache_key(base.replace(amp=False), data) != cache_key(base, data)


def test_the_proxy_cache_knows_the_training_inputs_so_edited_data_with_the_same_labels_is_scored_again():
    import dataclasses

    cfg = TrainConfig(metric="easiest", ratio=0.3, epochs=4, subset=300, proxy_epochs=1)
    data = load_data(cfg)
    first = proxy_scores(cfg, data)
    edited = data.train.images.clone()
    edited[:50] = edited[:50].flip(0)  # other inputs under the same labels, sizes and names
    changed = dataclasses.replace(data, train=dataclasses.replace(data.train, images=edited))
    assert changed.describe() == data.describe() and torch.equal(changed.train.labels, data.train.labels)
    again = proxy_scores(cfg, changed)
    assert again.computed_here and again.key != first.key
    assert not proxy_scores(cfg, data).computed_here  # the first data's scores are still its own
    from asp_tune.proxy_scores import _digest

    halves = torch.arange(6.0).to(torch.bfloat16)  # any dtype's bytes (numpy has no bfloat16)
    assert _digest(halves) == _digest(halves.clone()) != _digest(halves.flip(0))


def test_the_scores_key_follows_data_edited_in_place_and_an_edited_builder_of_your_own(tmp_path, monkeypatch):
    """The data's digest was kept by the tensor's id, so data zeroed in place reused the old scores; a builder of
    your own was named by its import path alone, so an edited network reused the old network's scores."""
    from asp_tune.proxy_scores import _builder_code, _digest

    values = torch.arange(10.0)
    before = _digest(values)
    values[:5] = 0  # in place: same tensor, same id
    assert _digest(values) != before and _digest(values) == _digest(values.clone())
    monkeypatch.syspath_prepend(str(tmp_path))
    module = tmp_path / "edited_builder.py"
    module.write_text("import torch\ndef build(shape, classes):\n    return torch.nn.Linear(8, classes)\n")
    first = _builder_code("edited_builder:build")
    module.write_text("import torch\ndef build(shape, classes):\n    return torch.nn.Linear(32, classes)\n")
    assert first and _builder_code("edited_builder:build") not in ("", first)
    assert _builder_code("mlp") == ""  # asp_tune's own: the key's version covers it
    with torch.inference_mode():  # features a loader made under inference mode: no version counter
        made = torch.arange(6.0)
    assert _digest(made) == _digest(made.clone())


def test_ties_among_the_top_scores_are_broken_at_random_not_by_position():
    """950 tied values (never-learnt samples, forgetting counts) in a set stored class by class: by position
    the top 300 were the first three classes' samples alone."""
    from asp_tune.static_proxies import top_indices

    values = torch.cat([torch.full((950,), 3.0), torch.linspace(0, 1, 50)])
    labels = torch.arange(1000) // 100
    for balanced in (False, True):
        chosen = top_indices(values, 300, labels, balanced, torch.Generator().manual_seed(0))
        counts = torch.bincount(labels[chosen], minlength=10)
        assert len(chosen.unique()) == 300 and bool((chosen < 950).all())  # only tied top values
        assert int((counts > 0).sum()) == 10 and int(counts.max()) <= 45  # spread over every class
        in_class = chosen % 100  # by position, a class's first samples: within every class, ties drawn at random
        assert float(in_class.float().mean()) > 35
    again = top_indices(values, 300, labels, False, torch.Generator().manual_seed(0))
    assert torch.equal(again, top_indices(values, 300, labels, False, torch.Generator().manual_seed(0)))


def test_a_top_score_subset_follows_its_seed_alone_and_refuses_scores_that_are_not_finite():
    """Each class's rounding drew from torch's global generator: the same seed chose other subsets after other
    draws (a target network's initialisation), and moved the user's global stream; NaN scores ranked as the
    largest, so NaN samples were both the hardest and the easiest."""
    from asp_tune.static_proxies import top_indices

    values, labels = torch.rand(700, generator=torch.Generator().manual_seed(1)), torch.arange(700) % 7
    chosen = []
    for global_seed in (0, 1, 2, 3):
        torch.manual_seed(global_seed)
        chosen.append(top_indices(values, 333, labels, True, torch.Generator().manual_seed(5)))
        assert torch.equal(torch.rand(3), torch.manual_seed(global_seed) and torch.rand(3))  # not advanced
    assert all(torch.equal(chosen[0], c) for c in chosen[1:])
    values[[3, 7]] = float("nan")
    with pytest.raises(ValueError, match=r"2 of the 700 proxy scores are NaN or infinite"):
        top_indices(values, 100, labels, True, torch.Generator().manual_seed(5))


def test_a_scoring_network_is_measured_with_the_arguments_it_trains_with():
    """NAS's TrainConfig.model is a placeholder ('mlp'): a proxy_model 'mlp' counted as the target itself was
    never measured, and trained with the user's model_args (a hidden layer of 2,048)."""
    cfg = TrainConfig(dataset="digits", model="mlp", metric="kcenters", ratio=0.5, epochs=1, subset=200,
                      proxy_model="mlp", model_args={"hidden": 2048})
    with pytest.raises(ConfigError, match="proxy_model.*no bigger than the target"):
        proxy_scores(cfg, load_data(cfg), target=torch.nn.Linear(64, 10), forbid_bigger=True)


def test_the_target_network_as_its_own_proxy_is_never_bigger_than_itself(tmp_path):
    cfg = TrainConfig(dataset="digits", model="mlp", metric="kcenters", ratio=0.5, epochs=1, model_args={"hidden": 8})
    build_trainer(cfg)  # was refused: the proxy was built without its model_args (86,026 parameters against 714)


def test_a_proxy_bigger_than_the_target_is_refused_where_svp_forbids_it():
    cfg = TrainConfig(dataset="digits", model="mlp", metric="kcenters", ratio=0.5, proxy_model="resnet20", epochs=1)
    with pytest.raises(ConfigError, match="proxy_model.*no bigger than the target"):
        build_trainer(cfg)
    build_trainer(cfg.replace(metric="hardest"))  # proxy datasets: any scoring model is allowed


def test_active_learning_grows_the_pool_by_the_budget_and_never_relabels():
    cfg = TrainConfig(epochs=2, subset=400)
    data = load_data(cfg)
    for strategy in ("least_confidence", "kcenters", "max_entropy", "random"):
        learner = ActiveLearner(cfg, ActiveLearningSettings(strategy=strategy, rounds=3, budget=25, initial=30), data)
        sizes = [learner.labelled.numel()]
        for _ in range(3):
            result = learner.step()
            sizes.append(learner.labelled.numel())
            assert result.picked == 25 and result.selection_seconds >= 0
        assert sizes == [30, 55, 80, 105]
        assert learner.labelled.unique().numel() == 105  # no sample labelled twice
        assert [r.labelled for r in learner.rounds] == [30, 55, 80]


def test_active_learning_labels_the_least_confident_and_highest_entropy_samples_it_is_shown(monkeypatch):
    """A constructed case: the scores a round's model gives are known, so the picks are too (a sign flip, the
    most confident, would pick the other end)."""
    import asp_tune.proxy_scores as module

    cfg = TrainConfig(epochs=1, subset=300)
    data = load_data(cfg)
    n = len(data.train)
    confidence = torch.linspace(0.05, 0.95, n)[torch.randperm(n, generator=torch.Generator().manual_seed(0))]
    entropy = 1.0 - confidence  # the least confident are the most uncertain here too

    def known(trainer, arrays=None):
        chosen = torch.as_tensor([int(torch.nonzero(torch.all(data.train.images.flatten(1) == row, dim=1))[0])
                                  for row in arrays.images.flatten(1)])
        return torch.zeros(len(chosen)), entropy[chosen], confidence[chosen], torch.zeros(len(chosen), 4)

    monkeypatch.setattr(module, "score_samples", known)
    for strategy in ("least_confidence", "max_entropy"):
        learner = ActiveLearner(cfg, ActiveLearningSettings(strategy=strategy, rounds=1, budget=20, initial=30), data)
        unlabelled = learner.unlabelled
        learner.step()
        picked = learner.labelled[30:]
        expected = unlabelled[torch.argsort(confidence[unlabelled])[:20]]
        assert sorted(picked.tolist()) == sorted(expected.tolist()), strategy


def test_k_centers_from_a_labelled_pool_picks_the_farthest_cluster_first_and_refuses_non_finite_features():
    from asp_tune.errors import DataError

    features = torch.cat([torch.zeros(10, 2), torch.full((5, 2), 10.0), torch.full((5, 2), -3.0)])
    features += 0.01 * torch.randn(20, 2, generator=torch.Generator().manual_seed(0))
    picks = greedy_k_centers(features, 2, initial=torch.arange(10))  # the pool sits in the first cluster
    assert 10 <= int(picks[0]) < 15 and 15 <= int(picks[1]) < 20
    bad = features.clone()
    bad[3, 1] = float("nan")
    with pytest.raises(DataError, match="1 of 20 feature rows hold NaN or infinity"):
        greedy_k_centers(bad, 5)


def test_a_scoring_model_that_diverges_keeps_no_scores_and_says_so(monkeypatch):
    import asp_tune.proxy_scores as module
    from asp_tune.errors import RunFailed

    real = module.score_samples

    def diverged(trainer, arrays=None):
        loss, entropy, confidence, features = real(trainer, arrays)
        assert features.dtype == torch.float32  # not half: an activation above 65,504 would become infinite
        loss = loss.clone()
        loss[7] = float("nan")
        return loss, entropy, confidence, features

    monkeypatch.setattr(module, "score_samples", diverged)
    cfg = TrainConfig(metric="easiest", ratio=0.3, epochs=4, subset=300, proxy_epochs=1, seed=11)
    with pytest.raises(RunFailed, match=r"gave 1 of \d+ samples a NaN or infinite loss: it diverged"):
        proxy_scores(cfg, load_data(cfg))
    assert not list(module.cache_dir().glob(f"{module.cache_key(cfg, load_data(cfg))}*.pt"))


def test_active_learning_trains_each_round_with_the_users_settings_on_the_whole_training_split(tmp_path, capsys):
    cfg = TrainConfig(epochs=4, subset=300, lr=0.013, optimizer="adamw", batch_size=32, model_args={"hidden": 512})
    data = load_data(cfg.replace(val_fraction=0.0))
    settings = ActiveLearningSettings(strategy="kcenters", rounds=1, budget=20, initial=30)
    learner = ActiveLearner(cfg, settings, data)  # the target as its own proxy: was refused as bigger than itself
    assert (learner.round_config.lr, learner.round_config.optimizer, learner.round_config.batch_size) == (
        0.013, "adamw", 32)
    assert learner.round_config.epochs == 1 and learner.round_config.model_args == {"hidden": 512}
    trainer = learner.train_on_pool(learner.round_config)
    assert trainer.optimizer.param_groups[0]["initial_lr"] == pytest.approx(0.013) and len(data.val) == 0
    # the command has no flags that would do nothing there, and its pool is the whole training split
    with pytest.raises(SystemExit):
        run_cli("active-learn", "--class-balance", "false", "--out", tmp_path / "x")
    assert "unrecognized arguments: --class-balance" in capsys.readouterr().err
    out = tmp_path / "al"
    assert run_cli("active-learn", "--strategy", "random", "--subset", 300, "--rounds", 1, "--budget", 20,
                   "--epochs", 1, "--out", out, "--quiet") == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["config"]["val_fraction"] == 0.0 and "/ 0 val /" in summary["data"]


def test_bad_settings_give_named_errors():
    with pytest.raises(ConfigError, match="fraction"):
        CoresetSettings(fraction=0.0).validate()
    with pytest.raises(ConfigError, match="fraction"):
        CoresetSettings(fraction=1.5).validate()
    with pytest.raises(ConfigError, match="strategy='fewer_epochs'"):
        CoresetSettings(strategy="fewer_epochs").validate()
    with pytest.raises(ConfigError, match="budget=500: allowed at most 250:"):  # the initial pool is a budget too
        ActiveLearningSettings(budget=500, rounds=3).check_pool(1000)
    ActiveLearningSettings(budget=250, rounds=3).check_pool(1000)  # the bound said fits
    with pytest.raises(ConfigError, match="budget=500: allowed at most 300:"):
        ActiveLearningSettings(budget=500, rounds=3, initial=100).check_pool(1000)
    with pytest.raises(ConfigError, match=r"invalid initial=5000: allowed at most 997: the initial pool"):
        ActiveLearningSettings(budget=100, rounds=3, initial=5000).check_pool(1000)  # was "budget=100 ... at most 0"
    with pytest.raises(ConfigError, match="budget=2: allowed at most 1:"):  # an initial pool of 2 and 4 of 1 fit
        ActiveLearningSettings(budget=2, rounds=4).check_pool(6)
    ActiveLearningSettings(budget=1, rounds=4).check_pool(6)
    with pytest.raises(ConfigError, match="invalid rounds=4: allowed at most 2:"):  # no budget fits: the rounds
        ActiveLearningSettings(budget=3, rounds=4).check_pool(4)


@pytest.mark.parametrize("command,args,message", [
    ("coreset", ["--fraction", "0"], "invalid fraction=0.0: allowed a number in (0, 1]"),
    ("coreset", ["--fraction", "1.5"], "invalid fraction=1.5"),
    ("coreset", ["--strategy", "kcenters", "--proxy-model", "resnet20", "--target-model", "mlp"],
     "invalid proxy_model='resnet20'"),
    ("active-learn", ["--budget", "5000"], "invalid budget=5000: allowed at most"),
    ("active-learn", ["--strategy", "kcenters", "--proxy-model", "resnet20"], "invalid proxy_model='resnet20'"),
])
def test_bad_command_input_exits_2_and_writes_nothing(tmp_path, capsys, command, args, message):
    out = tmp_path / "run"
    assert run_cli(command, "--epochs", 1, "--out", out, "--quiet", *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("command", ["coreset", "active-learn"])
def test_an_unknown_strategy_is_named(tmp_path, capsys, command):
    assert run_cli(command, "--strategy", "hardness", "--out", tmp_path / "run") == 2
    assert "invalid strategy='hardness': allowed one of" in capsys.readouterr().err
    assert not list(tmp_path.iterdir())


def test_coreset_end_to_end_against_full_data(tmp_path):
    out = tmp_path / "cs"
    assert run_cli("coreset", "--strategy", "forgetting", "--fraction", 0.5, "--epochs", 4, "--out", out,
                   "--quiet") == 0
    s = json.loads((out / "summary.json").read_text())
    core, full = s["runs"]["coreset"], s["runs"]["full"]
    assert core["data_fraction"] == pytest.approx(0.5, abs=0.01) and full["data_fraction"] == 1.0
    # the proxy model's and the selection's seconds are part of the core-set's cost
    assert core["end_to_end_seconds"] == pytest.approx(core["proxy_seconds"] + core["subset_selection_seconds"]
                                                       + core["wall_time_s"])
    assert s["speedup"] == pytest.approx(full["end_to_end_seconds"] / core["end_to_end_seconds"])
    # and its data passes: the proxy's training epochs and one scoring pass
    assert core["end_to_end_data_passes"] == pytest.approx(core["data_passes"] + core["proxy_epochs"] + 1)
    assert full["end_to_end_data_passes"] == full["data_passes"]
    subset = pd.read_csv(out / "subset.csv")
    assert len(subset) == round(0.5 * int(s["data"].split(":")[1].split()[0])) and subset["index"].is_unique
    assert set(pd.read_csv(out / "epochs.csv")["run"]) == {"coreset", "full"}
    assert (out / "coreset.png").stat().st_size > 5_000


def test_a_core_set_says_what_it_kept_and_ran(tmp_path, capsys):
    """half_classes at --fraction 0.9 trained on half the data while summary and line said 0.9 and the warning
    advised a larger --fraction; kcenters ignores class balance and the summary said true; the summary's
    config was the command's defaults (metric auto, ratio 1), not the core-set's run."""
    out = tmp_path / "half"
    with pytest.warns(UserWarning, match=r"half_classes trains on 5 of the 10 classes \(0.5\d* of the data, however "
                                         r"large --fraction\)") as caught:
        assert run_cli("coreset", "--strategy", "half_classes", "--fraction", 0.9, "--epochs", 1, "--subset", 400,
                       "--baseline", "false", "--out", out, "--quiet") == 0
    assert not [w for w in caught if "a larger --fraction" in str(w.message)]
    captured = capsys.readouterr()
    s = json.loads((out / "summary.json").read_text())
    assert s["fraction"] == 0.9 and 0.4 < s["data_fraction"] < 0.6 and s["samples"] == len(pd.read_csv(out / "subset.csv"))
    assert f"(half_classes, 0.9, {s['data_fraction']:.3g} kept)" in captured.out
    assert (s["config"]["metric"], s["config"]["ratio"]) == ("half_classes", 0.9) and s["class_balance"] is False
    from asp_tune.static_proxies import KCENTERS, StaticStrategy

    assert StaticStrategy(KCENTERS, 0.5, class_balance=True).class_balance is False  # it chooses without it


def test_active_learn_command_writes_rounds_beside_random(tmp_path):
    out = tmp_path / "al"
    assert run_cli("active-learn", "--strategy", "least_confidence", "--rounds", 2, "--budget", 40, "--epochs", 2,
                   "--out", out, "--quiet") == 0
    rounds = pd.read_csv(out / "rounds.csv")
    assert list(rounds["strategy"]) == ["least_confidence"] * 2 + ["random"] * 2
    assert list(rounds["labelled"]) == [40, 80, 40, 80]
    s = json.loads((out / "summary.json").read_text())
    assert set(s["final"]) == {"least_confidence", "random"} and s["error_is"] == "1 - accuracy"
    assert all(f["labelled"] == 120 for f in s["final"].values())
    assert (out / "rounds.png").is_file()


def test_pictures_of_a_tiny_run(tmp_path):
    run = tmp_path / "run"
    assert run_cli("train", "--epochs", 3, "--ratio", 0.3, "--metric", "loss", "--out", run, "--quiet",
                   "--inspect") == 0
    pictures = ("importance_trajectories.png", "examples.png", "examples_per_class.png", "selection_frequency.png")
    for name in pictures:
        assert (run / name).stat().st_size > 5_000, name
    samples = pd.read_csv(run / "samples.csv")
    epochs = pd.read_csv(run / "epochs.csv")
    assert samples["times_selected"].sum() == epochs["selected"].sum()
    trajectories = pd.read_csv(run / "trajectories.csv")
    assert sorted(trajectories["epoch"].unique()) == [1, 2, 3] and trajectories["sample"].nunique() == 32
    assert run_cli("inspect", run) == 0  # the same pictures from the results folder alone
    assert sorted(p.name for p in (tmp_path / "run-inspect").glob("*.png")) == sorted(pictures)


def test_proxy_vs_target_picture_of_a_correlate_folder(tmp_path):
    folder = tmp_path / "corr"
    folder.mkdir()
    rng = np.random.default_rng(0)
    full = rng.uniform(0.5, 0.9, 8)
    rows = [{"config": i, "ratio": 1.0, "metric": "none", "val_accuracy": a} for i, a in enumerate(full)]
    rows += [{"config": i, "ratio": 0.3, "metric": m, "val_accuracy": a - 0.1 + rng.normal(0, 0.02)}
             for m in ("loss", "fixed_random") for i, a in enumerate(full)]
    pd.DataFrame(rows).to_csv(folder / "scores.csv", index=False)
    (folder / "summary.json").write_text("{}")
    assert run_cli("inspect", folder, "--out", tmp_path / "pics") == 0
    assert (tmp_path / "pics" / "proxy_vs_target.png").stat().st_size > 5_000


def test_inspect_refuses_a_folder_that_is_no_run(tmp_path, capsys):
    assert run_cli("inspect", tmp_path) == 2
    assert "invalid run_dir" in capsys.readouterr().err


def test_static_proxies_are_accepted_where_asp_metrics_are(tmp_path):
    from asp_tune.tune.space import parse_space

    space = parse_space({"name": "s", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 2, "subset": 300,
                                               "proxy_model": "mlp", "proxy_epochs": 2},
                         "params": {"lr": {"type": "grid", "values": [0.05, 0.1]}}})
    cfg = space.train_config({"lr": 0.05}, metric="least_confidence", ratio=0.3, seed=0, device="cpu")
    assert (cfg.metric, cfg.proxy_model, cfg.proxy_epochs) == ("least_confidence", "mlp", 2)
    assert build_trainer(cfg).fit()["proxy_epochs"] == 2
    out = tmp_path / "nas"
    assert run_cli("nas", "--epochs", 2, "--channels", 4, "--cells", 1, "--subset", 300, "--test-subset", 40,
                   "--candidates", 4, "--generations", 1, "--mutations", 2, "--crossovers", 2, "--quiet",
                   "--ratio", 0.5, "--metric", "hardest", "--proxy-model", "mlp", "--out", out) == 0
    assert run_cli("nas", "--epochs", 1, "--subset", 300, "--quiet", "--metric", "kcenters", "--ratio", 0.5,
                   "--out", tmp_path / "nas2") == 2  # which network scores samples must be said in NAS
    s = json.loads((out / "summary.json").read_text())
    assert s["metric"] == "hardest" and s["data_passes"] == pytest.approx(1.0)  # 2 epochs at 0.5
    assert s["static_proxy_s"] == pytest.approx(s["proxy_seconds"] + s["subset_selection_seconds"])
    assert s["search_time_s"] >= s["supernet_train_s"] + s["static_proxy_s"]


def test_a_damaged_proxy_cache_is_computed_again_with_a_warning():
    cfg = TrainConfig(metric="easiest", ratio=0.3, epochs=4, subset=300, proxy_epochs=3)
    data = load_data(cfg)
    first = proxy_scores(cfg, data)
    cached = scores_module.cache_dir() / f"{first.key}.pt"
    cached.write_bytes(b"not a checkpoint")
    with pytest.warns(UserWarning, match="is unreadable"):
        again = proxy_scores(cfg, data)
    assert again.computed_here and torch.equal(again.loss, first.loss)  # deterministic: the same scores
    assert not proxy_scores(cfg, data).computed_here  # and the cache is whole again


def test_a_proxy_cache_for_another_split_or_with_edited_metadata_is_computed_again():
    cfg = TrainConfig(metric="easiest", ratio=0.3, epochs=4, subset=300, proxy_epochs=3)
    data = load_data(cfg)
    first = proxy_scores(cfg, data)
    cached = scores_module.cache_dir() / f"{first.key}.pt"
    state = torch.load(cached, weights_only=True)
    torch.save({**state, "loss": state["loss"][:10]}, cached)  # scores of another (smaller) split
    with pytest.warns(UserWarning, match=r"does not fit: its loss holds \(10,\) values"):
        again = proxy_scores(cfg, data)
    assert again.computed_here and torch.equal(again.loss, first.loss)
    state = torch.load(cached, weights_only=True)
    torch.save({**state, "key": "edited"}, cached)
    with pytest.warns(UserWarning, match="it was made for key 'edited'"):
        assert proxy_scores(cfg, data).computed_here


def test_a_cache_folder_that_cannot_be_made_only_costs_the_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "a-file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("ASP_TUNE_CACHE", str(blocker))
    cfg = TrainConfig(metric="easiest", ratio=0.3, epochs=2, subset=200, proxy_epochs=1)
    data = load_data(cfg)
    with pytest.warns(UserWarning, match="not usable.*set ASP_TUNE_CACHE to a writable folder"):
        scores = proxy_scores(cfg, data)
    assert scores.computed_here and len(scores.loss) == len(data.train)


def test_a_core_set_without_some_classes_is_said(tmp_path):
    with pytest.warns(UserWarning, match=r"the core-set \(4 samples at fraction 0.003\) holds no sample of [0-9] of "
                                         r"the 10 classes"):
        assert run_cli("coreset", "--strategy", "fixed_random", "--fraction", 0.003, "--epochs", 1,
                       "--out", tmp_path / "tiny", "--quiet") == 0


def test_forgetting_trains_its_scoring_model_two_epochs_at_least_and_says_when_told_one():
    from asp_tune.proxy_scores import proxy_epochs

    assert proxy_epochs(TrainConfig(metric="forgetting", ratio=0.5, epochs=4)) == 2  # a quarter would be 1
    assert proxy_epochs(TrainConfig(metric="hardest", ratio=0.5, epochs=4)) == 1
    config = TrainConfig(dataset="digits", metric="forgetting", ratio=0.5, epochs=4, proxy_epochs=1, subset=200)
    with pytest.warns(UserWarning, match="'forgetting' counts a sample's forgetting events between consecutive "
                                         "epochs"):
        proxy_scores(config, load_data(config))
