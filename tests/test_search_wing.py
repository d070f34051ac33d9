"""One search path for every caller: algorithms from a registry (one of the user's own too), every setting
declared once and checked through that declaration, the same results whoever runs the search."""

from __future__ import annotations

import dataclasses
import json
import sys
import textwrap
from pathlib import Path

import pytest

from asp_tune import ConfigError
from asp_tune.constraints import Boolean, Check, Interval, OneOf, declared

REPO = Path(__file__).resolve().parents[1]


def _settings_classes():
    """Every settings class with declared constraints, and a valid instance of each."""
    from asp_tune.config import TrainConfig
    from asp_tune.proxy_settings import ProxySettings
    from asp_tune.svp_settings import ActiveLearningSettings, CoresetSettings
    from asp_tune.tune.compare_settings import CompareSettings, CorrelateSettings
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space
    from nas.genotypes import Genotype
    from nas.settings import EvolutionSettings, NasSettings, RetrainSettings, SeedsSettings

    space = parse_space({"name": "s", "fixed": {"dataset": "digits", "epochs": 3},
                         "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}})
    return [ProxySettings(), TrainConfig(), HpoSettings(space=space), CompareSettings(), CorrelateSettings(),
            CoresetSettings(), ActiveLearningSettings(), EvolutionSettings(), NasSettings(), SeedsSettings(),
            RetrainSettings(genotype=Genotype.parse("darts_v2"))]


def _cases():
    for settings in _settings_classes():
        for field, check in declared(type(settings)).items():
            for bad in check.invalid_examples():
                yield pytest.param(settings, field, bad, id=f"{type(settings).__name__}.{field}={bad!r}")


@pytest.mark.parametrize("settings, field, bad", list(_cases()))
def test_every_declared_constraint_refuses_its_invalid_values_by_name(settings, field, bad):
    wrong = dataclasses.replace(settings, **{field: bad})
    with pytest.raises(ConfigError) as err:
        wrong.validate() if hasattr(wrong, "validate") else wrong.check_proxy()
    assert err.value.field == field


def test_every_settings_class_declares_its_constraints_and_only_known_kinds():
    for settings in _settings_classes():
        found = declared(type(settings))
        assert found, type(settings).__name__
        assert all(isinstance(c, (Interval, OneOf, Boolean, Check)) for c in found.values())
        assert all(c.invalid_examples() for c in found.values())


def test_a_range_taken_outside_its_dataclass_is_checked_by_its_declaration():
    from asp_tune.schedules import RatioSchedule
    from asp_tune.selection import SelectionRule
    from asp_tune.strategies import InfoBatchPruning
    from asp_tune.tune.hypertune import HyperTune

    with pytest.raises(ConfigError, match=r"invalid top10_mass=0.05: allowed a number in \[0.1, 1.0\)"):
        SelectionRule(top10_mass=0.05)  # accepted before while ProxySettings refused it
    with pytest.raises(ConfigError, match="invalid temperature=inf"):
        SelectionRule(temperature=float("inf"))
    with pytest.raises(ConfigError, match="invalid infobatch_prune=1.0"):
        InfoBatchPruning(prune=1.0)
    with pytest.raises(ConfigError, match="invalid reduction_factor=1: allowed an integer >= 2"):
        HyperTune(9, num_samples=4, eta=1)
    with pytest.raises(ConfigError, match="invalid ratio_schedule='sometimes'"):
        RatioSchedule(0.3, 10, "sometimes")


def test_the_strategy_flag_is_strategy_everywhere_with_metric_as_its_alias():
    from asp_tune.cli import build_parser, load_extensions

    load_extensions()
    for command in ("train", "hpo", "compare", "nas"):
        extra = {"hpo": ["--space", "s.yaml"], "compare": ["--space", "s.yaml"]}.get(command, [])
        for flag in ("--strategy", "--metric"):
            args = build_parser(command).parse_args([command, *extra, flag, "loss", "--out", "x"])
            assert args.metric == "loss", (command, flag)


TOY = textwrap.dedent('''
    """A search algorithm of the user's own: every configuration to the end, in a fixed order."""
    from asp_tune.tune.algorithms import RANDOM, Algorithm, Built


    def build(ctx):
        from ray.tune.schedulers import FIFOScheduler
        from ray.tune.search import BasicVariantGenerator

        return Built(FIFOScheduler(), BasicVariantGenerator(random_state=ctx.seed + 1), dict(ctx.param_space))


    IN_ORDER = Algorithm(build, "the toy algorithm of a test")
''')


@pytest.mark.slow
def test_an_algorithm_of_your_own_runs_through_hpo_by_import_path(tmp_path, monkeypatch, command_here):
    (tmp_path / "toy_algos.py").write_text(TOY)
    space = tmp_path / "s.yaml"
    space.write_text("name: toy\nfixed: {dataset: digits, model: mlp, epochs: 2, subset: 300}\n"
                     "params:\n  lr: {type: loguniform, low: 0.02, high: 0.3}\n")
    monkeypatch.chdir(tmp_path)  # the folder the command runs in, where the module is
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        run = command_here("hpo", "--space", space, "--algo", "toy_algos:IN_ORDER", "--num-samples", "2",
                           "--strategy", "loss", "--verbose", "0", "--out", "out")
    finally:
        sys.modules.pop("toy_algos", None)
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert summary["algo"] == "toy_algos:IN_ORDER" and summary["num_trials"] == 2 and summary["metric"] == "loss"
    assert summary["proxy_trust"] is None  # it has no rungs: nothing to measure between them
    assert (tmp_path / ".out.ray").is_dir()  # Ray's experiment beside the results


def test_register_algorithm_adds_a_name_the_command_line_lists():
    from asp_tune.tune.algorithms import ALGORITHMS, RANDOM, get_algorithm, register_algorithm

    register_algorithm("again", RANDOM)
    try:
        assert get_algorithm("again") is RANDOM and "again" in ALGORITHMS
        from asp_tune.cli import build_parser, load_extensions

        load_extensions()
        assert build_parser("hpo").parse_args(["hpo", "--space", "s", "--algo", "again", "--out", "x"]).algo == "again"
    finally:
        ALGORITHMS.unregister("again")
    with pytest.raises(ConfigError, match="invalid algo='again'"):
        get_algorithm("again")


@pytest.mark.slow
def test_a_users_trainable_writes_the_same_results_as_the_command_line_and_nothing_in_home(tmp_path):
    results = Path.home() / "ray_results"  # the session's temporary home: Ray keeps its token there
    before = set(results.iterdir()) if results.is_dir() else set()
    from ray import tune

    import asp_tune.tune
    from asp_tune.tune.session import ensure_ray

    sys.path.insert(0, str(REPO / "tests"))
    try:
        from test_user_trainable import EPOCHS, trainable

        ensure_ray(num_cpus=2)
        result = asp_tune.tune.search(trainable, {"lr": tune.loguniform(1e-3, 1.0)}, epochs=EPOCHS, ratio=0.5,
                                      num_samples=4, out=tmp_path / "api")
    finally:
        sys.path.remove(str(REPO / "tests"))
    assert (set(results.iterdir()) if results.is_dir() else set()) == before  # Ray's experiment sits beside out
    assert (tmp_path / ".api.ray").is_dir() and Path(result.summary["experiment_path"]).parent == tmp_path / ".api.ray"
    written = json.loads((tmp_path / "api" / "summary.json").read_text())
    space = tmp_path / "s.yaml"
    space.write_text("name: s\nfixed: {dataset: digits, model: mlp, epochs: 2, subset: 300}\n"
                     "params:\n  lr: {type: loguniform, low: 0.02, high: 0.3}\n")
    from asp_tune.cli import main

    assert main(["hpo", "--space", str(space), "--num-samples", "2", "--min-first-rung-steps", "0", "--verbose", "0",
                 "--out", str(tmp_path / "cli")]) == 0
    cli = json.loads((tmp_path / "cli" / "summary.json").read_text())
    assert set(written) == set(cli) and "proxy_trust" in written
    assert written["proxy_trust"] is not None and written["proxy_trust"]["rungs"] == [1, 3, 4]
    assert {p.name for p in (tmp_path / "api").iterdir()} >= {"trials.csv", "trial_epochs.csv", "summary.json"}
    import pandas as pd

    nodes = [pd.read_csv(tmp_path / name / "trials.csv", keep_default_na=False)["node_id"] for name in ("api", "cli")]
    assert all(len(n) and (n.str.len() == 56).all() for n in nodes)  # each trial's Ray node, yours as ours


def _reports_another(config):
    from ray import tune

    tune.report({"acc": 0.5, "epoch": 1})


def _reports_plainly(config):
    from ray import tune

    tune.report({"val_accuracy": 0.5})  # Ray's own report: no epoch, no data passes


def _reports_nan(config):
    from ray import tune

    tune.report({"val_accuracy": float("nan"), "epoch": 1})


def _reports_words(config):
    from ray import tune

    tune.report({"val_accuracy": "high", "epoch": 1})


@pytest.mark.slow
def test_a_users_trainable_and_arguments_are_checked_at_the_api_edge(tmp_path, capsys):
    from ray import tune

    import asp_tune.tune
    from asp_tune.tune.session import ensure_ray

    ensure_ray(num_cpus=2)
    for bad, says in ((dict(num_samples=0), "invalid num_samples=0"), (dict(cpus_per_trial=64), "invalid cpus_per_trial=64"),
                      (dict(epochs=0), r"invalid epochs=0: allowed an integer >= 1$"),
                      (dict(scheduler="nope"), "invalid scheduler='nope'")):
        with pytest.raises(ConfigError, match=says):
            asp_tune.tune.search(_reports_another, {"lr": 0.1}, **{"epochs": 2, **bad})
    with pytest.raises(ConfigError, match="invalid strategy='entrophy': allowed one of 'random', 'loss'"):
        asp_tune.tune.search(_reports_another, {"lr": 0.1}, epochs=2, strategy="entrophy")
    with pytest.raises(ConfigError, match=r"invalid argument='top10mass': allowed one of search\(\)'s own \(epochs, "
                                          r"ratio, strategy, .*\) or a proxy setting \(class_balance, .*top10_mass"):
        asp_tune.tune.search(_reports_another, {"lr": 0.1}, epochs=2, top10mass=0.2)
    with pytest.raises(ConfigError, match=r"invalid grace_period=10: allowed an integer below the epochs \(4\)"):
        asp_tune.tune.search(_reports_another, {"lr": 0.1}, epochs=4, grace_period=10)
    with pytest.raises(ConfigError, match=r"invalid search_alg='tpe': allowed a searcher that takes grid parameters "
                                          r"\('random'\) for a space with grid_search \(lr\)"):
        asp_tune.tune.search(_reports_another, {"lr": tune.grid_search([0.1, 0.2])}, epochs=4, search_alg="tpe")
    with pytest.raises(ConfigError, match=r"invalid audit=2: allowed none or 0 with decide='proxy'"):
        asp_tune.tune.search(_reports_another, {"lr": 0.1}, epochs=4, decide="proxy", audit=2)
    with pytest.raises(ConfigError, match="invalid trainable='no_such_module:fn'"):
        asp_tune.tune.search("no_such_module:fn", {"lr": 0.1}, epochs=2)
    with pytest.raises(ConfigError, match=r"invalid metric='val_accuracy': allowed a score every report of the "
                                          r"trainable carries \(a report held only: acc, epoch, "):
        asp_tune.tune.search(_reports_another, {"lr": 0.1}, epochs=2, num_samples=1, storage_path=str(tmp_path))
    with pytest.raises(ConfigError, match="invalid metric='val_accuracy': allowed a number in every report"):
        asp_tune.tune.search(_reports_words, {"lr": 0.1}, epochs=2, num_samples=1, storage_path=str(tmp_path))
    capsys.readouterr()
    plain = asp_tune.tune.search(_reports_plainly, {"lr": 0.1}, epochs=2, num_samples=1, scheduler="fifo",
                                 decide="proxy", storage_path=str(tmp_path))
    assert plain.summary["num_trials"] == 1 and "warning: no report named its epoch" in capsys.readouterr().err
    from asp_tune.errors import RunFailed

    with pytest.raises(RunFailed, match=r"no trial reported a number for val_accuracy: 2 of 2 trials reported epochs, "
                                        r"each with val_accuracy NaN \(a diverged network"):
        asp_tune.tune.search(_reports_nan, {"lr": tune.grid_search([0.1, 0.2])}, epochs=2, num_samples=1,
                             scheduler="fifo", decide="proxy", storage_path=str(tmp_path))


def test_import_paths_in_a_space_resolve_from_its_own_folder_first(tmp_path, monkeypatch):
    from asp_tune.tune.space import load_space

    project = tmp_path / "project"
    project.mkdir()
    (project / "near_models.py").write_text("from torch import nn\n\ndef net(input_shape, num_classes):\n"
                                            "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    (project / "s.yaml").write_text("name: s\nfixed: {dataset: digits, model: 'near_models:net', epochs: 1}\n"
                                    "params:\n  lr: {type: loguniform, low: 0.01, high: 0.1}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the command runs from another folder
    monkeypatch.setattr(sys, "path", list(sys.path))
    try:
        space = load_space(project / "s.yaml")
        assert space.fixed["model"] == "near_models:net"
        assert str(project) in sys.path
    finally:
        sys.modules.pop("near_models", None)


@pytest.mark.parametrize("decide, algo, scale", [("full", "asha", (9 * 0.3 + 3 * 1.0) / 12), ("proxy", "asha", 0.3),
                                                  ("full", "random", (1 + 11 * 0.3) / 12)])
def test_the_command_line_and_search_rescale_budgets_by_one_rule(decide, algo, scale):
    """Budgets are rescaled by the data share of a trial's epoch: the ratio, or the mean of its schedule
    where the top rung trains on all the data, or where a search without early stopping takes a full first
    epoch (it was scaled by the ratio alone: about half the trials). The API once scaled by the ratio alone
    (0.3 against 0.475)."""
    from asp_tune.tune.builtin import job_from_settings
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.user import user_job

    def trainable(config):
        pass

    cli = job_from_settings(HpoSettings(REPO / "search_spaces" / "digits_mlp.yaml", algo=algo, ratio=0.3,
                                        decide=decide, time_budget_s=100, data_passes_budget=40).validate())
    api = user_job(trainable, {"lr": {"grid_search": [0.1]}} if algo == "random" else {"lr": 0.1}, epochs=12,
                   ratio=0.3, strategy="auto", metric="val_accuracy", mode="max", scheduler=algo, search_alg=None,
                   num_samples=8, max_concurrent=2, reduction_factor=3, grace_period=1, time_budget_s=100,
                   data_passes_budget=40, seed=0, cpus_per_trial=1, gpus_per_trial=0, storage_path=None,
                   address=None, name=None, verbose=0, proxy_settings={}, decide=decide)
    for job in (cli, api):
        assert job.budget["scale"] == pytest.approx(scale)
        assert job.budget["time_budget_s"] == pytest.approx(100 * scale)
        assert job.budget["data_passes"] == pytest.approx(40 * scale)


def test_ray_scheduler_objects_stop_early_as_their_names_do():
    """Ray's schedulers all derive from FIFOScheduler, which once made every one of them "no early stopping":
    a full first epoch, and for Ray's Hyperband no top rung on all the data."""
    from ray.tune.schedulers import FIFOScheduler, HyperBandScheduler, MedianStoppingRule

    from asp_tune.tune.user import user_job

    def trainable(config):
        pass

    def job(scheduler):
        return user_job(trainable, {"lr": 0.1}, epochs=9, ratio=0.3, strategy="auto", metric="val_accuracy",
                        mode="max", scheduler=scheduler, search_alg=None, num_samples=6, max_concurrent=2,
                        reduction_factor=3, grace_period=1, time_budget_s=None, data_passes_budget=None, seed=0,
                        cpus_per_trial=1, gpus_per_trial=0, storage_path=None, address=None, name=None, verbose=0,
                        proxy_settings={})

    named, ray_own = job("hyperband"), job(HyperBandScheduler(max_t=9, reduction_factor=3))
    for built in (named, ray_own):
        assert built.rungs == (1, 3, 9) and built.full_data.top_rung_full
        assert built.summary["first_epoch_full"] is False and built.summary["ratio_schedule"] == "steps:3=1"
    median = job(MedianStoppingRule(grace_period=2))
    assert median.summary["first_epoch_full"] is False and not median.full_data.top_rung_full  # an audit decides
    fifo = job(FIFOScheduler())
    assert fifo.summary["first_epoch_full"] is True and fifo.summary["ratio_schedule"] == "constant"


def test_a_searchers_name_as_scheduler_searches_with_it():
    """scheduler='tpe' ran random search (TPE's FIFO scheduler beside a random searcher), without a word."""
    from ray.tune.search import BasicVariantGenerator
    from ray.tune.search.optuna import OptunaSearch

    from asp_tune.tune.algorithms import Context, compose

    ctx = Context(9, num_samples=4, max_concurrent=2, grace_period=1, reduction_factor=3, seed=0,
                  metric="val_accuracy", mode="max", param_space={"lr": 0.1})
    assert isinstance(compose("tpe", None, ctx)[0].searcher, OptunaSearch)
    assert isinstance(compose("fifo", "tpe", ctx)[0].searcher, OptunaSearch)
    assert isinstance(compose("asha", None, ctx)[0].searcher, BasicVariantGenerator)
    assert isinstance(compose("tpe", "random", ctx)[0].searcher, BasicVariantGenerator)  # random, as asked


def test_a_registered_algorithm_keeps_its_own_scheduler_and_only_fifo_runs_every_trial_to_the_end():
    from ray.tune.schedulers import FIFOScheduler, MedianStoppingRule

    from asp_tune.tune.algorithms import ALGORITHMS, Algorithm, Built, Context, compose
    from asp_tune.tune.user import user_job

    def median(ctx):
        return Built(MedianStoppingRule(grace_period=1), None, dict(ctx.param_space or {}))

    class MyFifo(FIFOScheduler):  # a scheduler of one's own may stop trials: counted as one that does
        pass

    ctx = Context(9, num_samples=4, max_concurrent=2, grace_period=1, reduction_factor=3, seed=0,
                  metric="val_accuracy", mode="max", param_space={"lr": 0.1})
    ALGORITHMS.register("my_median", Algorithm(median, "median stopping"))
    try:
        assert isinstance(compose("my_median", None, ctx)[0].scheduler, MedianStoppingRule)

        def first_epoch_full(scheduler, search_alg=None):
            return user_job(lambda config: None, {"lr": 0.1}, epochs=9, ratio=0.3, strategy="auto",
                            metric="val_accuracy", mode="max", scheduler=scheduler, search_alg=search_alg,
                            num_samples=4, max_concurrent=2, reduction_factor=3, grace_period=1,
                            time_budget_s=None, data_passes_budget=None, seed=0, cpus_per_trial=1, gpus_per_trial=0,
                            storage_path=None, address=None, name=None, verbose=0,
                            proxy_settings={}).summary["first_epoch_full"]

        assert first_epoch_full("tpe") is first_epoch_full("fifo", "tpe") is first_epoch_full("fifo") is True
        assert first_epoch_full("my_median") is first_epoch_full(MyFifo()) is first_epoch_full("asha") is False
    finally:
        ALGORITHMS.unregister("my_median")


def test_rungs_read_from_ray_s_scheduler_objects_are_its_own_in_epochs_or_none():
    """Ray's Hyperband's milestones as its successive halving raises them; none where its resource is not the
    epoch or it stops trials before the search's last epoch (its top rung would never train on full data)."""
    from ray.tune.schedulers import ASHAScheduler, HyperBandScheduler

    from asp_tune.tune.algorithms import Context, _rungs_of

    def rungs(scheduler, epochs):
        ctx = Context(epochs, num_samples=4, max_concurrent=2, grace_period=1, reduction_factor=3, seed=0,
                      metric="m", mode="max")
        found = _rungs_of(scheduler, ctx)
        return None if found is None else found(ctx)

    assert rungs(HyperBandScheduler(max_t=12, reduction_factor=3), 12) == (1, 3, 4, 9, 12)  # brackets 1-3-9, 4-12
    assert rungs(HyperBandScheduler(max_t=9, reduction_factor=2), 9) == (1, 2, 4, 8, 9)
    assert rungs(ASHAScheduler(max_t=12, grace_period=1, reduction_factor=3), 12) == (1, 3, 9, 12)
    assert rungs(HyperBandScheduler(max_t=9), 12) is None  # stops every trial at 9 of 12 epochs
    assert rungs(HyperBandScheduler(time_attr="time_total_s", max_t=12), 12) is None  # seconds, not epochs
    assert rungs(ASHAScheduler(time_attr="time_total_s", max_t=12), 12) is None


def test_tpe_gets_optuna_s_own_space_and_names_its_study_in_memory(caplog):
    """Every TPE search printed Ray's warning that the searcher was handed unresolved search space definitions
    (read as the user's mistake), and Optuna named the study in memory 'optuna'."""
    import logging

    from asp_tune.tune.settings import HpoSettings

    settings = HpoSettings(REPO / "search_spaces" / "digits_mlp.yaml", algo="tpe", name="asp-digits-r0.3").validate()
    with caplog.at_level(logging.WARNING):
        built = settings.algorithm.build(settings.context())
        built.searcher.set_search_properties("val_accuracy", "max", {})  # as Tune does when the search starts
    assert not [r for r in caplog.records if "unresolved search space" in r.getMessage()]
    assert built.searcher._ot_study.study_name == "asp-digits-r0.3"  # noqa: SLF001
    assert built.searcher.suggest("t1").keys() == {"lr", "momentum", "weight_decay", "label_smoothing"}


def test_a_static_subset_s_budget_is_scaled_by_its_ratio_alone():
    """A static subset takes no full first epoch: scaling its budget as a strategy's that does gave 0.175 where
    its epochs take 0.1 (auto at r = 0.1 is fixed_random)."""
    from asp_tune.tune.settings import HpoSettings

    space = REPO / "search_spaces" / "digits_mlp.yaml"
    static = HpoSettings(space, algo="random", ratio=0.1).validate()
    assert static.trial_config().metric == "fixed_random" and static.data_scale() == pytest.approx(0.1)
    loss = HpoSettings(space, algo="random", ratio=0.1, metric="loss").validate()
    assert loss.data_scale() == pytest.approx((1 + 11 * 0.1) / 12)  # a full first epoch, then 0.1


def test_search_runs_each_configuration_of_a_space_that_draws_nothing_once():
    """search() ran a grid-only param_space 8 times over, every trial seeded alike (the command line ran it once)."""
    from ray import tune

    from asp_tune.tune.user import trials_of_space

    assert trials_of_space({"lr": tune.grid_search([0.1, 0.2]), "wd": 0.0}, None) == 1
    assert trials_of_space({"lr": tune.grid_search([0.1, 0.2]), "m": tune.uniform(0, 1)}, None) == 8
    assert trials_of_space({"opt": {"lr": tune.loguniform(1e-3, 1)}}, None) == 8  # nested: still drawn
    assert trials_of_space({"lr": tune.grid_search([0.1, 0.2])}, 3) == 3  # given: as Ray Tune's
