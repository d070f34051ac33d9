"""An Optuna objective with the loop API under Optuna's own HyperbandPruner."""

from __future__ import annotations

import optuna
import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import TensorDataset

import asp_tune


def test_pruned_trials_of_a_hyperband_study_never_paid_a_full_pass():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(600, 8, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    train, val_x, val_y = TensorDataset(x[:500], y[:500]), x[500:], y[500:]

    def objective(trial: optuna.Trial) -> float:
        lr = trial.suggest_float("lr", 1e-4, 1.0, log=True)
        torch.manual_seed(trial.number)
        model = nn.Linear(8, 2)
        opt = torch.optim.SGD(model.parameters(), lr=lr)
        proxy = asp_tune.ProxyData(train, epochs=9, ratio=0.2, first_epoch_full=False, seed=trial.number)
        for epoch in range(9):
            proxy.set_epoch(epoch)
            for idx, (xb, yb) in proxy.loader(batch_size=50):
                logits = model(xb)
                proxy.update(idx, F.cross_entropy(logits, yb, reduction="none"), logits=logits, targets=yb).backward()
                opt.step(); opt.zero_grad()
            trial.set_user_attr("data_passes", proxy.describe()["data_passes"])
            trial.set_user_attr("epochs", epoch + 1)
            with torch.no_grad():
                trial.report(float((model(val_x).argmax(1) == val_y).float().mean()), epoch)
            if trial.should_prune():
                raise optuna.TrialPruned()
        return float((model(val_x).argmax(1) == val_y).float().mean())

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.RandomSampler(seed=0),
                                pruner=optuna.pruners.HyperbandPruner(min_resource=1, max_resource=9))
    study.optimize(objective, n_trials=12)
    pruned = [t for t in study.trials if t.state == optuna.trial.TrialState.PRUNED]
    assert pruned, "the pruner stopped nothing"
    for t in study.trials:  # exactly r of the data per epoch, no full first pass
        assert abs(t.user_attrs["data_passes"] - 0.2 * t.user_attrs["epochs"]) < 1e-9
    early = [t for t in pruned if t.user_attrs["epochs"] < 5]
    assert early and all(t.user_attrs["data_passes"] < 1.0 for t in early)
    assert study.best_value > 0.8


@pytest.mark.slow
def test_a_tpe_search_keeps_its_study_in_an_optuna_journal_file(ray_session, tmp_path):
    from asp_tune.tune.builtin import run_hpo
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space

    space = parse_space({"name": "j", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 2, "subset": 300},
                         "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.3}}})
    journal = tmp_path / "study.log"
    result = run_hpo(HpoSettings(space=space, algo="tpe", ratio=0.5, num_samples=3, optuna_storage=str(journal),
                                 name="journal", storage_path=str(tmp_path / "ray"), verbose=0, decide="proxy"))
    assert result.summary["num_failed"] == 0
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    study = optuna.load_study(study_name="journal", storage=JournalStorage(JournalFileBackend(str(journal))))
    assert len(study.trials) == 3  # what optuna-dashboard shows
    told = sorted((t.params["lr"], t.value) for t in study.trials)  # each trial's best epoch, as trials.csv has it
    shown = sorted(zip(result.trials["config/lr"], result.trials["best_score"]))
    assert [v for pair in told for v in pair] == pytest.approx([v for pair in shown for v in pair])
    from asp_tune import ConfigError

    with pytest.raises(ConfigError, match="invalid optuna_storage"):
        HpoSettings(space=space, algo="asha", optuna_storage=str(journal)).validate()


def test_the_tpe_searcher_tells_optuna_each_trial_s_best_epoch_and_keeps_it_across_a_resume(tmp_path):
    import pickle

    from ray import tune

    from asp_tune.tune.tpe_search import BestEpochOptunaSearch

    searcher = BestEpochOptunaSearch(space={"x": tune.uniform(0, 1)}, metric="val_accuracy", mode="max",
                                     sampler=optuna.samplers.TPESampler(seed=0))
    for trial, scores in (("a", [0.9, 0.5, None]), ("b", [0.2, 0.4, 0.7])):
        searcher.suggest(trial)
        for step, score in enumerate(scores, 1):  # an epoch that did not validate reports no score
            searcher.on_trial_result(trial, {"training_iteration": step, **({} if score is None else
                                                                              {"val_accuracy": score})})
        if trial == "a":
            searcher.save(str(tmp_path / "searcher.pkl"))  # the driver killed here: the search resumed
            searcher = BestEpochOptunaSearch(space={"x": tune.uniform(0, 1)}, metric="val_accuracy", mode="max",
                                             sampler=optuna.samplers.TPESampler(seed=0))
            searcher.restore(str(tmp_path / "searcher.pkl"))
        searcher.on_trial_complete(trial, {"training_iteration": 3, "val_accuracy": scores[-1] or 0.5})
    assert [t.value for t in searcher._ot_study.trials] == [0.9, 0.7]  # Ray's own would say 0.5 and 0.7
    assert type(pickle.loads(pickle.dumps(searcher))) is BestEpochOptunaSearch
    searcher.suggest("c")  # never a finite score: failed, not left running in the study
    searcher.on_trial_result("c", {"training_iteration": 1, "val_accuracy": float("nan")})
    searcher.on_trial_complete("c", {"training_iteration": 1, "val_accuracy": float("nan")})
    assert searcher._ot_study.trials[-1].state == optuna.trial.TrialState.FAIL
    lowest = BestEpochOptunaSearch(space={"x": tune.uniform(0, 1)}, metric="loss", mode="min")
    lowest.suggest("d")
    for step, loss in enumerate([0.8, 0.3, 0.6], 1):
        lowest.on_trial_result("d", {"training_iteration": step, "loss": loss})
    lowest.on_trial_complete("d", {"training_iteration": 3, "loss": 0.6})
    assert lowest._ot_study.trials[0].value == 0.3 and lowest._best_scores == {}


def test_an_audit_says_when_the_study_s_own_pick_does_not_train_on_full_data():
    """Its NaN was left out of the pairs without a word: regret 0.0, no warning, the study's size blamed."""
    import math

    import optuna
    from optuna.distributions import FloatDistribution

    from asp_tune.tune import audit_study

    study = optuna.create_study(direction="maximize")
    for i in range(20):
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)}, value=0.9 - 0.01 * i,
                                                  distributions={"x": FloatDistribution(0, 100)}))
    audit = audit_study(study, lambda p: math.nan if p["x"] == 0 else 0.85 - 0.01 * p["x"])
    assert audit.own_pick_failed and audit.best_params == {"x": 1.0}
    assert audit.warnings()[0].startswith("the study's own pick has no finite score on full data")
    assert audit.summary()["regret_of_proxy_pick"] is None
    healthy = audit_study(study, lambda p: 0.85 - 0.01 * p["x"])
    assert not healthy.own_pick_failed and healthy.summary()["regret_of_proxy_pick"] == 0.0


def test_numpy_scores_are_finite_to_the_tpe_searcher_and_told_as_floats():
    """np.float32 was neither int nor float: the trial had no best score and was told FAIL."""
    import numpy as np
    from ray import tune

    from asp_tune.tune.fulldata import finite
    from asp_tune.tune.tpe_search import BestEpochOptunaSearch

    assert finite(np.float32(0.5)) and finite(np.int64(2)) and finite(0.5)
    assert not finite(np.float32("nan")) and not finite(float("inf")) and not finite(True) and not finite("0.5")
    searcher = BestEpochOptunaSearch(space={"x": tune.uniform(0, 1)}, metric="val_accuracy", mode="max")
    for trial, kind in (("a", np.float32), ("b", np.float64)):
        searcher.suggest(trial)
        for step, score in enumerate([0.75, 0.5], 1):
            searcher.on_trial_result(trial, {"training_iteration": step, "val_accuracy": kind(score)})
        searcher.on_trial_complete(trial, {"training_iteration": 2, "val_accuracy": kind(0.5)})
    for told in searcher._ot_study.trials:
        assert told.state == optuna.trial.TrialState.COMPLETE and told.value == 0.75 and type(told.value) is float


def _finished_study(trials: int) -> "optuna.Study":
    """A study of ``trials`` completed trials: x = 0, 1, ..., their values falling with x (the best first)."""
    from optuna.distributions import FloatDistribution

    study = optuna.create_study(direction="maximize")
    for i in range(trials):
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)}, value=0.9 - 0.01 * i,
                                                  distributions={"x": FloatDistribution(0, 100)}))
    return study


def test_an_audit_keeps_each_full_data_score_as_it_arrives_and_catch_scores_a_failed_run_nan():
    """A train_full that raised on the k-th trial lost the k-1 full-data runs already paid for."""
    import math

    from asp_tune import ConfigError
    from asp_tune.tune import audit_study
    from asp_tune.tune.optuna_audit import SCORES_ATTR

    study = _finished_study(20)
    calls = []

    def full(params, fail_at=None):
        calls.append(params["x"])
        if params["x"] == fail_at:
            raise ValueError("out of memory")
        return 0.85 - 0.01 * params["x"]

    audit_study(study, full, count=3)  # nothing kept: which configuration the seed draws beside the best 2
    drawn = calls[2]
    assert calls[:2] == [0.0, 1.0] and drawn not in (0.0, 1.0) and SCORES_ATTR not in study.user_attrs
    calls.clear()
    with pytest.raises(ValueError, match="out of memory"):
        audit_study(study, lambda p: full(p, fail_at=drawn), count=3, keep_as="full")
    assert calls == [0.0, 1.0, drawn] and len(study.user_attrs[SCORES_ATTR]["full"]) == 2  # the best 2, 1 drawn
    calls.clear()
    rerun = audit_study(study, full, count=3, keep_as="full")  # the two paid for are reused
    assert calls == [drawn] and rerun.table["full_data_score"].tolist() == pytest.approx([0.85, 0.84, 0.85 - 0.01 * drawn])
    assert rerun.table["reused"].tolist() == [True, True, False]
    calls.clear()
    caught = audit_study(study, lambda p: full(p, fail_at=1.0), count=3, catch=ValueError, keep_as="other")
    assert calls == [0.0, 1.0, drawn] and math.isnan(caught.table["full_data_score"][1])
    assert caught.table["error"][1] == "ValueError: out of memory" and caught.table["error"].notna().sum() == 1
    assert caught.best_params == {"x": 0.0} and not caught.own_pick_failed
    assert sorted(study.user_attrs[SCORES_ATTR]["other"]) == sorted(['{"x": 0.0}', f'{{"x": {drawn}}}'])  # a failure trains again
    for bad in ({"catch": [3]}, {"keep_as": 3}):
        with pytest.raises(ConfigError, match=f"invalid {next(iter(bad))}="):
            audit_study(study, full, **bad)


def test_a_larger_audit_trains_only_what_the_smaller_did_not_and_keeps_every_score_paid_for():
    """A larger count drew its random half again: of 6 configurations paid for, 2 were dropped and 6 trained anew."""
    from asp_tune.tune import audit_study

    study = _finished_study(30)
    calls = []

    def full(params):
        calls.append(params["x"])
        return 0.85 - 0.01 * params["x"]

    small = audit_study(study, full, count=6, keep_as="full")
    first = set(calls)
    assert len(first) == 6 and set(small.table["number"]) == {int(x) for x in first}
    calls.clear()
    large = audit_study(study, full, count=10, keep_as="full")
    assert len(calls) == 4 and not set(calls) & first  # the 6 paid for are reused, 4 more trained
    assert set(large.table["number"]) >= set(small.table["number"]) and len(large.table) == 10
    calls.clear()
    guard = audit_study(study, full, count=2, keep_as="full")  # a smaller one trains nothing: all 10 join it
    assert calls == [] and len(guard.table) == 10 and guard.table["reused"].all()
    assert guard.agreement.summary()["pairs"] == 10


def test_a_trial_its_scheduler_stopped_is_told_pruned_and_one_that_ran_its_epochs_complete():
    """Ray tells the searcher of a trial ASHA stopped as of one that finished: Optuna was told COMPLETE."""
    from ray import tune

    from asp_tune.tune.algorithms import ASHA, TPE, Context
    from asp_tune.tune.tpe_search import BestEpochOptunaSearch

    ctx = Context(3, param_space={"x": tune.uniform(0, 1)}, space=object())
    assert TPE.build(ctx).searcher._epochs == TPE.stopped_by(ASHA).build(ctx).searcher._epochs == 3
    searcher = BestEpochOptunaSearch(space={"x": tune.uniform(0, 1)}, metric="val_accuracy", mode="max", epochs=3)
    for trial, scores in (("stopped", [0.4]), ("finished", [0.5, 0.7, 0.6])):
        searcher.suggest(trial)
        for step, score in enumerate(scores, 1):
            searcher.on_trial_result(trial, {"training_iteration": step, "val_accuracy": score})
        searcher.on_trial_complete(trial, {"training_iteration": len(scores), "val_accuracy": scores[-1]})
    stopped, finished = searcher._ot_study.trials
    assert stopped.state == optuna.trial.TrialState.PRUNED and stopped.intermediate_values == {1: 0.4}
    assert finished.state == optuna.trial.TrialState.COMPLETE and finished.value == 0.7


def test_a_later_search_joining_a_kept_study_is_warned_of_other_settings_and_refused_in_the_other_direction(
        tmp_path):
    """A second search of the same name joined the study silently: other epochs, even another direction."""
    import warnings

    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    from asp_tune import ConfigError
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space
    from asp_tune.tune.tpe_search import BestEpochOptunaSearch

    journal = tmp_path / "study.log"

    def search(epochs: int):
        space = parse_space({"name": "j", "fixed": {"dataset": "digits", "model": "mlp", "epochs": epochs},
                             "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.3}}})
        settings = HpoSettings(space=space, algo="tpe", ratio=0.5, optuna_storage=str(journal))
        searcher = settings.algorithm.build(settings.context("val_accuracy")).searcher
        searcher.suggest(f"trial-{epochs}")
        return searcher

    first = search(2)
    kept = first._ot_study.user_attrs["asp_tune_run"][first._tag]
    assert first._study_name == "asp-j-r0.5" and first._ot_study.trials[0].user_attrs["asp_tune_run"] == first._tag
    assert kept["epochs"] == 2 and kept["algo"] == "tpe" and kept["objective"] == "val_accuracy" and "lr" not in kept
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        search(2)  # the same settings: unsaid
    with pytest.warns(UserWarning, match=r"2 of this study's trials were trained with other settings \(epochs "
                                         r"differ\)"):
        search(3)
    with pytest.raises(ConfigError, match=r"invalid optuna_storage=\"study 'asp-j-r0.5'\": allowed a storage whose "
                                          r"study 'asp-j-r0.5' is to minimize loss \(mode min\); the one it holds is "
                                          r"to maximize: give another --optuna-storage"):
        BestEpochOptunaSearch(space=first._space, metric="loss", mode="min", study_name="asp-j-r0.5",
                              storage=JournalStorage(JournalFileBackend(str(journal))))


def test_an_audit_of_a_minimising_study_picks_the_lowest_full_data_loss_and_says_its_pick_lost():
    from optuna.distributions import FloatDistribution

    from asp_tune.tune import audit_study

    study = optuna.create_study(direction="minimize")  # the proxy's loss is x; full data's is lowest at x = 1
    for i in range(10):
        study.add_trial(optuna.trial.create_trial(params={"x": float(i)}, value=float(i),
                                                  distributions={"x": FloatDistribution(0, 100)}))
    with pytest.warns(UserWarning, match=r"the study's own pick lost 1.0000 of full-data score"):
        audit = audit_study(study, lambda p: (p["x"] - 1) ** 2 + 0.5, count=10)
    assert audit.proxy_best_params == {"x": 0.0} and audit.best_params == {"x": 1.0} and audit.pick_changed
    assert audit.best_full_score == 0.5 and audit.agreement.regret() == pytest.approx(1.0)
    assert audit.agreement.kendall_tau() > 0.8  # the proxy ranks the rest as full data does: no misranking said
