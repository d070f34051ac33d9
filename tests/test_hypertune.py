"""Hyper-Tune's parts on scripted results: D-ASHA promotions, bracket weights, ensemble weights, state."""

import json
from pathlib import Path


import numpy as np
import pytest

from asp_tune.errors import ConfigError
from asp_tune.trainer import load_state
from asp_tune.tune.hypertune import (DelayedPromotion, HyperTune, MultiFidelityEnsemble, UnitSpace,
                                     discordant_pairs, hyperband_prior, ranking_loss_weights, stream)


def test_d_asha_promotes_only_after_eta_times_as_many_results():
    state = HyperTune(9, num_samples=10, eta=3)  # rungs 1, 3, 9
    assert state.rungs == (1, 3, 9)
    log = stream(state, [("a", 1, 0.5), ("b", 1, 0.6)])
    assert log == [("a", "pause"), ("b", "pause")]  # two results: nothing is promoted yet
    log = stream(state, [("c", 1, 0.4)])
    assert log == [("c", "pause"), ("b", "promoted from rung 0")]  # best of 3
    # ASHA would promote d now (it is in the top floor(4/3) = 1 and not promoted); D-ASHA waits for 6
    log = stream(state, [("d", 1, 0.9)])
    assert log == [("d", "pause")]
    assert stream(state, [("e", 1, 0.1)]) == [("e", "pause")]
    log = stream(state, [("f", 1, 0.2)])
    assert log == [("f", "pause"), ("d", "promoted from rung 0")]  # best waiting of the top 2
    # the promoted trials continue; at rung 3 they wait again until 3 results are there
    log = stream(state, [("b", 2, 0.61), ("b", 3, 0.7), ("d", 3, 0.8)])
    assert log == [("b", "continue"), ("b", "pause"), ("d", "pause")]
    assert state.waiting == {"a", "b", "c", "d", "e", "f"}
    assert stream(state, [("d", 9, 0.9)]) == [("d", "stop")]  # a trial at the top rung is done


def test_a_trial_that_diverges_stops_where_it_reports_nan_at_a_rung_or_between():
    """A NaN went on as 'continue' at every epoch: never judged, trained to the top rung on promotion budget."""
    state = HyperTune(9, num_samples=10, eta=3)
    assert stream(state, [("a", 1, float("nan"))]) == [("a", "stop")]
    assert stream(state, [("b", 1, 0.5), ("c", 1, 0.6), ("d", 1, 0.7)])[-1] == ("d", "promoted from rung 0 at once")
    assert stream(state, [("d", 2, float("inf"))]) == [("d", "stop")]
    assert "a" not in state.active and "d" not in state.active and "a" not in state.record.scores[1]

def test_a_result_that_is_due_for_promotion_continues_without_a_pause():
    state = HyperTune(9, num_samples=10, eta=3)
    log = stream(state, [("x", 1, 0.1), ("y", 1, 0.2), ("z", 1, 0.9)])
    assert log == [("x", "pause"), ("y", "pause"), ("z", "promoted from rung 0 at once")]
    assert state.waiting == {"x", "y"} and state.active == {"z"}
    assert stream(state, [("z", 2, 0.91), ("z", 3, 0.95)]) == [("z", "continue"), ("z", "pause")]


def test_final_promotion_sends_the_best_of_a_short_rung_to_the_top():
    bracket = DelayedPromotion(3, 3)
    for trial, score in (("a", 0.1), ("b", 0.3)):
        bracket.record(trial, 0, score)
    assert bracket.promotion() is None  # 2 < 3 results
    assert bracket.final_promotion() == ("b", 0)
    bracket.promote("b", 0)
    assert bracket.final_promotion() is None  # max(1, 2 // 3) = 1 promoted already
    bracket.record("b", 1, 0.5)
    assert bracket.final_promotion() == ("b", 1)  # the highest rung first


def test_a_bracket_starting_higher_scores_low_rungs_without_judging_them():
    state = HyperTune(9, num_samples=4, eta=3)
    state.bracket_of["x"], state.active = 2, {"x"}  # bracket 2 starts at the top rung
    log = stream(state, [("x", 1, 0.2), ("x", 3, 0.4), ("x", 9, 0.6)])
    assert log == [("x", "continue"), ("x", "continue"), ("x", "stop")]
    assert state.record.scores == {1: {"x": 0.2}, 3: {"x": 0.4}, 9: {"x": 0.6}}


def test_discordant_pairs_counts_inversions_and_half_ties():
    truth = np.array([1.0, 2.0, 3.0, 4.0])
    assert discordant_pairs(truth, truth) == 0
    assert discordant_pairs(-truth, truth) == 6
    assert discordant_pairs(np.array([1.0, 1.0, 3.0, 4.0]), truth) == 0.5


def test_ranking_loss_weights_favour_the_level_that_agrees():
    rng = np.random.default_rng(0)
    truth = np.arange(10.0)
    noisy = truth + rng.normal(0, 2.0, 10)
    weights = ranking_loss_weights([truth[::-1], noisy, truth], truth, rng)
    assert weights.sum() == pytest.approx(1.0)
    assert weights[2] > 0.9 and weights[0] == 0.0


def test_bracket_weights_move_to_the_rung_that_ranks_like_the_top():
    state = HyperTune(9, num_samples=20, eta=3, seed=1)
    prior = hyperband_prior(3, 3)
    assert np.allclose(state.bracket_probabilities(), prior)  # nothing measured: Hyperband's shares
    rng = np.random.default_rng(0)
    for i in range(8):
        trial, quality = f"t{i}", i / 8
        state.configs[trial] = list(rng.random(2))
        state.record.add(trial, 1, 1 - quality)  # rung 1 reverses the ranking
        state.record.add(trial, 3, quality + 0.01 * rng.normal())  # rung 3 agrees
        state.record.add(trial, 9, quality)
    p = state.bracket_probabilities()
    assert p.sum() == pytest.approx(1.0)
    assert p[1] > p[0] and p[1] > prior[1]
    assert p[0] == pytest.approx(0.1 * prior[0], abs=0.02)  # only the kept prior share


def test_ensemble_weights_come_from_each_surrogates_ranking_loss():
    rng = np.random.default_rng(0)
    x_top = rng.random((12, 1))
    f = lambda x: x[:, 0]  # noqa: E731 - the true objective
    x_low = rng.random((30, 1))
    reversing = (x_low, -f(x_low))
    agreeing = (x_low, f(x_low))
    ensemble = MultiFidelityEnsemble(seed=0).fit([reversing, agreeing, (x_top, f(x_top))], rng)
    w = ensemble.weights
    assert w.sum() == pytest.approx(1.0)
    assert w[1] > w[0] and w[0] < 0.05
    mean, var = ensemble.predict(np.array([[0.1], [0.9]]))
    assert mean[1] > mean[0] and (var > 0).all()
    # too few top results: the highest rung with a model takes all the weight
    few = MultiFidelityEnsemble(seed=0).fit([reversing, agreeing, (x_top[:2], f(x_top[:2]))], rng)
    assert few.weights.tolist() == [0.0, 0.0, 1.0]


def test_unit_space_round_trip():
    from ray import tune

    space = UnitSpace({"lr": tune.loguniform(1e-4, 1e-1), "width": tune.randint(8, 33),
                       "opt": tune.choice(["sgd", "adam"]), "fixed": 3, "nested": {"wd": tune.uniform(0, 0.1)}})
    config = space.decode([0.5, 0.0, 0.99, 1.0])
    assert config["lr"] == pytest.approx(10 ** -2.5) and config["width"] == 8 and config["opt"] == "adam"
    assert config["fixed"] == 3 and config["nested"]["wd"] == pytest.approx(0.1)
    assert space.decode(space.encode(config)) == config
    with pytest.raises(ConfigError, match="grid"):
        UnitSpace({"lr": tune.grid_search([0.1, 0.2])})


def test_state_round_trips_through_json():
    state = HyperTune(9, num_samples=10, eta=3, seed=3)
    for t in "abcdef":
        state.add(t)
    stream(state, [(t, 1, s) for t, s in zip("abcdef", (0.1, 0.5, 0.3, 0.9, 0.2, 0.4))])
    copy = HyperTune(9, num_samples=10, eta=3, seed=3)
    copy.load_state_dict(json.loads(json.dumps(state.state_dict())))
    assert copy.state_dict() == state.state_dict()
    assert copy.add("g") == state.add("g")  # the same draw: the random state came along
    with pytest.raises(ConfigError, match="rungs"):
        HyperTune(27, num_samples=10, eta=3).load_state_dict(state.state_dict())


@pytest.mark.parametrize("kwargs, field", [({"max_t": 0}, "max_t"), ({"eta": 1}, "reduction_factor"),
                                           ({"num_samples": 0}, "num_samples"), ({"mode": "up"}, "mode")])
def test_bad_settings_are_named(kwargs, field):
    args = {"max_t": 9, "num_samples": 4, **kwargs}
    with pytest.raises(ConfigError) as err:
        HyperTune(args.pop("max_t"), **args)
    assert err.value.field == field


class Paused(Exception):
    """What a scheduler's PAUSE is to a function trainable: the run stops after a report."""


def test_a_ratio_rung_resumes_from_its_checkpoint_on_a_larger_subset_with_the_same_memory(tmp_path):
    import contextlib

    from asp_tune.memory import ProxyMemory
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space
    from asp_tune.tune.trainable import CHECKPOINT_FILE, proxy_trial

    space = parse_space({"name": "rungs", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 9, "subset": 400},
                         "params": {"lr": {"type": "choice", "values": [0.05]}}})
    settings = HpoSettings(space=space, algo="hypertune", rung_ratios="0.2,0.5,1", metric="loss",
                           device="cpu").validate()
    assert (settings.ratio, settings.ratio_schedule) == (0.2, "steps:1=0.5,3=1")
    folder = tmp_path / "ckpt"
    reports, saved = [], {}

    class Checkpoint:
        def as_directory(self):
            return contextlib.nullcontext(str(folder))

    def report(metrics, checkpoint):
        reports.append(metrics)
        folder.mkdir(exist_ok=True)
        (folder / CHECKPOINT_FILE).write_bytes((Path(checkpoint) / CHECKPOINT_FILE).read_bytes())
        if metrics["epoch"] in (1, 3):  # the rungs: the trial waits for its promotion there
            saved[metrics["epoch"]] = ProxyMemory.fingerprint(
                load_state(folder / CHECKPOINT_FILE, "selector", "a trial checkpoint")["selector"]["memory"])
            raise Paused

    run = dict(settings.run_fields(), device="cpu")
    given = {"space": space, "run": run, "report": report, "make_checkpoint": lambda f: f}
    with pytest.raises(Paused):
        proxy_trial({"lr": 0.05}, get_checkpoint=lambda: None, **given)
    for rung in (1, 3):  # promoted: resumed from the checkpoint of the rung
        with contextlib.suppress(Paused):
            proxy_trial({"lr": 0.05}, get_checkpoint=Checkpoint, **given)
        resumed = reports[-1] if rung == 3 else reports[1]
        assert resumed["restored_epoch"] == rung and resumed["restored_memory"] == saved[rung]
    by_epoch = {r["epoch"]: r for r in reports}
    assert sorted(by_epoch) == list(range(1, 10))
    selected = [by_epoch[e]["selected"] for e in range(1, 10)]
    n = selected[-1]  # the training part of the subset
    assert 300 < n < 400
    assert selected[0] == round(0.2 * n) and selected[1:3] == [round(0.5 * n)] * 2 and selected[3:] == [n] * 6
    passes = [by_epoch[e]["data_passes"] for e in range(1, 10)]
    assert passes[-1] == pytest.approx(0.2 + 2 * 0.5 + 6 * 1.0, abs=0.01)


def test_hypertune_s_state_runs_without_ray():
    """Plain state, thin Ray adapters: the surrogate's Ray import made the whole module need Ray."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['ray'] = None\n"  # any 'import ray...' now fails
            "from asp_tune.tune.hypertune import HyperTune, stream\n"
            "print(stream(HyperTune(9, num_samples=4, eta=3), [('a', 1, 0.5)]))")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "[('a', 'pause')]"
