import numpy as np
import pytest

from asp_tune import ConfigError, MetricSchedule, RatioSchedule
from asp_tune.schedules import MIXTURE_ORDERS, METRIC_GROUPS


def algorithm2(kind, r, i, n):
    """Direct transcription of the paper's Algorithm 2 for one epoch."""
    if kind == "constant":
        return r
    if r <= 0.5:
        return np.linspace(1, 0.01, n)[i] * 2 * r
    return np.linspace(1, 2 * r - 1, n)[i]


@pytest.mark.parametrize("kind", ["constant", "dynamic"])
@pytest.mark.parametrize("r", [0.1, 0.3, 0.5, 0.7, 0.85, 1.0])
@pytest.mark.parametrize("n", [1, 7, 50])
def test_ratio_schedule_equals_algorithm2(kind, r, n):
    s = RatioSchedule(r, n, kind, first_epoch_full=False)
    expected = [algorithm2(kind, r, i, n) for i in range(n)]
    np.testing.assert_allclose(s.ratios(), expected, rtol=0, atol=1e-12)


def test_dynamic_known_values():
    s = RatioSchedule(0.3, 5, "dynamic", first_epoch_full=False)
    np.testing.assert_allclose(s.ratios(), [0.6, 0.4515, 0.303, 0.1545, 0.006])
    s = RatioSchedule(0.7, 3, "dynamic", first_epoch_full=False)
    np.testing.assert_allclose(s.ratios(), [1.0, 0.7, 0.4])
    # the dynamic schedule spends about the same data as the constant one
    assert RatioSchedule(0.3, 200, "dynamic", first_epoch_full=False).ratios().mean() == pytest.approx(0.303)


def test_first_epoch_full_is_switchable():
    on = RatioSchedule(0.1, 10, "constant", first_epoch_full=True)
    off = RatioSchedule(0.1, 10, "constant", first_epoch_full=False)
    assert on.ratio_at(0) == 1.0 and off.ratio_at(0) == pytest.approx(0.1)
    assert on.count_at(1, 1000) == 100 == off.count_at(0, 1000)


@pytest.mark.parametrize("bad", [0.0, -0.1, 1.01, float("nan"), "half"])
def test_ratio_out_of_range(bad):
    with pytest.raises(ConfigError, match=r"ratio=.*allowed a number in \(0(\.0)?, 1(\.0)?\]"):  # the declared range
        RatioSchedule(bad, 10)


def test_unknown_schedule_names_allowed_values():
    with pytest.raises(ConfigError, match="ratio_schedule='linear'.*'constant', 'dynamic'"):
        RatioSchedule(0.5, 10, "linear")


@pytest.mark.parametrize("order", MIXTURE_ORDERS)
def test_mixture_peaks_at_the_right_epochs(order):
    epochs = 100
    s = MetricSchedule("mixture", epochs, order=order, width=0.1)
    names = ("random", "prediction", "gradient", "loss", "entropy")
    dens = np.array([[s.densities(e)[m] for m in names] for e in range(epochs)])
    probs = np.array([[s.probabilities(e)[m] for m in names] for e in range(epochs)])
    groups = [int(c) for c in order[1:]]
    for slot, group in enumerate(groups):
        centre = (slot + 1) / 4 * epochs
        for metric in METRIC_GROUPS[group]:
            col = names.index(metric)
            # the metric's Gaussian peaks at its group's centre (epoch midpoints: 24.5 -> 24 or 25)...
            assert abs(int(np.argmax(dens[:, col])) - centre) <= 1
            # ...and its group dominates there
            shares = {g: sum(s.probabilities(int(centre))[m] for m in METRIC_GROUPS[g]) for g in range(3)}
            assert max(shares, key=shares.get) == group
    np.testing.assert_allclose(probs.sum(axis=1), 1.0)


def test_mixture_default_order_is_g012():
    s = MetricSchedule("mixture", 40)
    assert s.order == "g012"
    assert s.probabilities(9)["random"] > 0.5
    assert s.probabilities(19)["prediction"] + s.probabilities(19)["gradient"] > 0.5
    assert s.probabilities(30)["loss"] + s.probabilities(30)["entropy"] > 0.5


def test_mixture_draws_follow_probabilities_and_are_seeded():
    a = MetricSchedule("mixture", 40, seed=3)
    b = MetricSchedule("mixture", 40, seed=3)
    draws_a = [a.draw(e) for e in range(40)]
    assert draws_a == [b.draw(e) for e in range(40)]
    many = MetricSchedule("mixture", 4, seed=0)
    counts = {}
    for _ in range(4000):
        m = many.draw(1)
        counts[m] = counts.get(m, 0) + 1
    for m, p in many.probabilities(1).items():
        assert counts.get(m, 0) / 4000 == pytest.approx(p, abs=0.03)


def test_metric_schedule_state_round_trip():
    a = MetricSchedule("mixture", 30, seed=1)
    [a.draw(e) for e in range(10)]
    state = a.state_dict()
    rest = [a.draw(e) for e in range(10, 30)]
    b = MetricSchedule("mixture", 30, seed=99)
    b.load_state_dict(state)
    assert [b.draw(e) for e in range(10, 30)] == rest


def test_single_metric_and_bad_names():
    assert MetricSchedule("loss", 5).draw(3) == "loss"
    from asp_tune.strategies import make_strategy

    with pytest.raises(ConfigError, match="metric='gradnorm'.*'random', 'loss'"):
        make_strategy("gradnorm")
    with pytest.raises(ConfigError, match="mixture_order='g013'.*'g012'"):
        MetricSchedule("mixture", 5, order="g013")


def test_a_step_a_run_never_reaches_is_refused_where_the_run_is_configured(tmp_path, capsys):
    from asp_tune.cli import main
    from asp_tune.config import TrainConfig

    assert TrainConfig(epochs=3, ratio_schedule="steps:2=1").validate().ratio_schedule == "steps:2=1"
    with pytest.raises(ConfigError, match=r"invalid ratio_schedule='steps:1=0.5,3=1': allowed steps after fewer epochs "
                                          r"than the run's 3 \(a run of 3 epochs has ended after 3: that step never "
                                          r"applies\)"):
        TrainConfig(epochs=3, ratio_schedule="steps:1=0.5,3=1").validate()
    assert main(["train", "--epochs", "2", "--ratio-schedule", "steps:5=1", "--quiet", "--out", str(tmp_path / "x")]) == 2
    assert "invalid ratio_schedule='steps:5=1'" in capsys.readouterr().err and not (tmp_path / "x").exists()


@pytest.mark.parametrize("ratio, schedule, expected", [
    (1.0, "constant", "none"), (0.3, "constant", "loss"), (0.1, "constant", "fixed_random"),
    (0.1, "dynamic", "random"), (0.3, "dynamic", "loss"), (1.0, "steps:2=0.1", "random"),
    (0.1, "steps:2=0.5", "random"),
    (1.0, "steps:2=0.3", "loss")])
def test_auto_follows_the_ratio_schedule_and_never_takes_a_fixed_subset_that_would_ignore_it(ratio, schedule, expected):
    """auto took fixed_random (one subset of the base ratio) under any schedule: at ratio 1 with steps:2=0.1 it
    trained on all the data every epoch, at 0.1 dynamic on the same 10% every epoch."""
    from asp_tune.build import build_trainer
    from asp_tune.config import TrainConfig
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space

    config = TrainConfig(ratio=ratio, ratio_schedule=schedule, epochs=4, subset=400, seed=1)
    assert config.resolved().metric == expected
    trainer = build_trainer(config)
    fractions = []
    while not trainer.done:
        fractions.append(trainer.train_epoch()["selected"] / trainer.selector.num_samples)
    planned = RatioSchedule(ratio, 4, schedule, first_epoch_full=expected not in ("none", "fixed_random")).ratios()
    np.testing.assert_allclose(fractions, planned, atol=0.01)  # what the schedule says, epoch by epoch
    space = parse_space({"name": "s", "fixed": {"dataset": "digits", "epochs": 4},
                         "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}})
    search = HpoSettings(space=space, algo="random", ratio=ratio, ratio_schedule=schedule).validate()
    assert search.resolved_metric() == expected and search.run_fields()["metric"] == expected


def test_a_schedule_a_strategy_would_ignore_is_refused_by_name():
    from asp_tune.config import TrainConfig

    with pytest.raises(ConfigError, match="invalid ratio_schedule='dynamic': allowed constant with the static proxy "
                                          "'fixed_random'"):
        TrainConfig(metric="fixed_random", ratio=0.3, ratio_schedule="dynamic").validate()
    with pytest.raises(ConfigError, match="invalid ratio_schedule='steps:2=0.3': allowed one that stays at 1.0 with "
                                          "metric 'none'"):
        TrainConfig(metric="none", ratio=1.0, ratio_schedule="steps:2=0.3").validate()
    TrainConfig(metric="none", ratio=1.0, ratio_schedule="dynamic").validate()  # dynamic at 1 stays at 1


def test_correlate_cells_of_full_data_and_static_proxies_keep_one_subset_under_the_search_s_schedule():
    from asp_tune.tune.cells import cell_fields, cells
    from asp_tune.tune.space import parse_space

    space = parse_space({"name": "s", "fixed": {"dataset": "digits", "epochs": 4},
                         "params": {"lr": {"type": "grid", "values": [0.01, 0.1]}}})
    for schedule in ("dynamic", "steps:2=0.05"):
        for name in cells([0.1], ["loss", "fixed_random", "easiest"]):
            fields = cell_fields({"cell": name})
            config = space.train_config({"lr": 0.01}, **{"ratio_schedule": schedule, **fields})  # none refused
            static = fields["metric"] in ("none", "fixed_random", "easiest")
            assert config.ratio_schedule == ("constant" if static else schedule), name
