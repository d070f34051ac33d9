"""An Optuna study trained in packs in one process (asp_tune.tune.optimize_in_packs)."""

from __future__ import annotations

import warnings

import optuna
import pytest

from asp_tune.errors import ConfigError, UserCodeError
from asp_tune.tune.packed_study import optimize_in_packs

optuna.logging.set_verbosity(optuna.logging.WARNING)
COMPLETE, PRUNED, FAIL = (optuna.trial.TrialState.COMPLETE, optuna.trial.TrialState.PRUNED,
                          optuna.trial.TrialState.FAIL)


def space(**params) -> dict:
    return {"name": "tiny", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 3, "model_args": {"hidden": 32}},
            "params": params or {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}}


def study(pruner=None, direction="maximize", seed=0) -> optuna.Study:
    return optuna.create_study(direction=direction, sampler=optuna.samplers.RandomSampler(seed=seed),
                               pruner=pruner or optuna.pruners.NopPruner())


class OddOnesOut(optuna.pruners.BasePruner):
    """Prunes the odd-numbered trials after their first epoch; records how many trials had reported the step
    of each judgement."""

    def __init__(self):
        self.seen: list[int] = []

    def prune(self, study, trial) -> bool:
        step = trial.last_step
        self.seen.append(sum(1 for t in study.get_trials(deepcopy=False) if step in t.intermediate_values))
        return trial.number % 2 == 1 and step >= 1


def test_trials_in_a_pack_get_the_values_and_records_they_get_one_at_a_time():
    alone, packed = study(), study()
    one = optimize_in_packs(alone, space(), n_trials=4, pack_size=1, decide="proxy")  # the search alone
    four = optimize_in_packs(packed, space(), n_trials=4, pack_size=4, decide="proxy")
    assert (one.pack.size, one.fused_epochs, one.alone_epochs) == (1, 0, 12)
    assert (four.pack.size, four.fused_epochs, four.alone_epochs) == (4, 12, 0)
    for a, b in zip(alone.trials, packed.trials):
        assert a.state == b.state == COMPLETE and a.params == b.params
        assert b.value == pytest.approx(a.value, abs=1e-6)
        assert list(b.intermediate_values) == [1, 2, 3]
        assert b.user_attrs["epoch"] == 3 and b.user_attrs["data_passes"] == pytest.approx(a.user_attrs["data_passes"])
    assert "4 trials (4 complete)" in four.line() and "100% of their epochs trained in packs" in four.line()
    assert set(four.breakdown) == {"startup_s", "train_s", "study_s"} and four.breakdown["train_s"] > 0


def test_a_pruned_trial_leaves_its_pack_after_every_member_reported_and_the_next_takes_its_place():
    pruner = OddOnesOut()
    s = study(pruner)
    ended: list[int] = []
    packed = optimize_in_packs(s, space(), n_trials=6, pack_size=2, callbacks=[lambda st, t: ended.append(t.number)])
    states = [t.state for t in s.trials]
    assert states == [COMPLETE, PRUNED] * 3 and sorted(ended) == list(range(6))
    assert all(len(t.intermediate_values) == 1 for t in s.trials if t.state == PRUNED)
    # 3 trials of 3 epochs and 3 of 1; never more than 2 at once: 6 rounds of at most 2 members
    assert packed.fused_epochs + packed.alone_epochs == 12
    first_round = pruner.seen[:2]
    assert first_round == [2, 2]  # both members had reported epoch 1 before the first was judged


def test_a_diverging_trial_fails_alone_and_the_others_keep_their_values():
    def run(lrs):
        s = study()
        for lr in lrs:
            s.enqueue_trial({"lr": lr})
        optimize_in_packs(s, space(lr={"type": "loguniform", "low": 0.01, "high": 1e12}), n_trials=len(lrs),
                          pack_size=len(lrs), ratio=1.0)
        return s

    with_it, without = run([0.05, 1e12, 0.02]), run([0.05, 0.02])
    assert [t.state for t in with_it.trials] == [COMPLETE, FAIL, COMPLETE]
    assert "TrainingDiverged" in with_it.trials[1].user_attrs["error"]
    assert with_it.trials[0].value == pytest.approx(without.trials[0].value, abs=1e-6)
    assert with_it.trials[2].value == pytest.approx(without.trials[1].value, abs=1e-6)


def test_an_error_fails_every_running_trial_and_is_raised():
    def boom(st, trial):
        raise RuntimeError("a callback failed")

    s = study()
    with pytest.raises(RuntimeError, match="a callback failed"):
        optimize_in_packs(s, space(), n_trials=4, pack_size=4, callbacks=[boom])
    assert [t.state for t in s.trials] == [COMPLETE, FAIL, FAIL, FAIL]  # none left running
    assert "a callback failed" in s.trials[-1].user_attrs["error"]


FAILING_MODEL = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self, features, classes, fail):
        super().__init__()
        self.layer, self.fail = nn.Linear(features, classes), fail

    def forward(self, x):
        if self.fail:
            raise ValueError("this network fails")
        return self.layer(x.flatten(1))


def net(input_shape, num_classes, fail=False):
    return Net(int(torch.tensor(input_shape).prod()), num_classes, fail)
"""


def failing_space(tmp_path, monkeypatch, epochs: int) -> dict:
    """A space over ``model_args.fail`` of :data:`FAILING_MODEL`, importable from ``tmp_path``."""
    (tmp_path / "failing_model.py").write_text(FAILING_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    return {"name": "failing", "fixed": {"dataset": "digits", "model": "failing_model:net", "epochs": epochs},
            "params": {"model_args.fail": {"type": "choice", "values": [False, True]}}}


def test_catch_fails_the_trials_that_raise_it_and_the_study_goes_on(tmp_path, monkeypatch):
    failing = failing_space(tmp_path, monkeypatch, epochs=2)

    def run(**kwargs):
        s = study()
        for fail in (False, True, False):
            s.enqueue_trial({"model_args.fail": fail})
        optimize_in_packs(s, failing, n_trials=3, pack_size=3, **kwargs)
        return s

    with pytest.raises(UserCodeError, match=r"failing_model:net failed \(ValueError: this network fails\)"):
        run()
    caught = run(catch=(ValueError,))
    assert [t.state for t in caught.trials] == [COMPLETE, FAIL, COMPLETE]
    assert "(ValueError: this network fails)" in caught.trials[1].user_attrs["error"]


def test_a_minimising_study_gets_the_validation_loss_and_choices_of_lists_are_asked_by_their_repr():
    s = study(direction="minimize")
    packed = optimize_in_packs(s, space(milestones={"type": "choice", "values": [[0.3], [0.6]]}), n_trials=3,
                               pack_size=3, lr_schedule="multistep")
    assert all(t.state == COMPLETE for t in s.trials) and packed.report == "val_loss"
    assert {t.params["milestones"] for t in s.trials} <= {"[0.3]", "[0.6]"}
    assert packed.config(s.trials[0].params).milestones in ((0.3,), (0.6,))
    assert all(t.value == pytest.approx(t.intermediate_values[3]) and t.value > 0 for t in s.trials)


def test_with_a_pruner_trials_start_at_the_ratio_and_the_audit_trains_on_all_the_data(monkeypatch):
    import asp_tune.build

    built = []
    monkeypatch.setattr(asp_tune.build, "build_trainer", lambda cfg, _b=asp_tune.build.build_trainer: built.append(
        cfg.ratio) or _b(cfg))
    s = study(optuna.pruners.SuccessiveHalvingPruner(min_resource=1))
    packed = optimize_in_packs(s, space(), n_trials=4, pack_size=4, ratio=0.3)
    assert packed.run["first_epoch_full"] is False and packed.run["metric"] == "random"
    assert packed.config(s.best_params).ratio == 0.3
    epochs = {t.number: t.user_attrs["epoch"] for t in s.trials}
    assert all(t.user_attrs["data_passes"] == pytest.approx(0.3 * epochs[t.number], abs=0.01) for t in s.trials)
    assert built.count(1.0) == 3 and len(packed.full_data.table) == 3  # its own audit: a small study's best 3
    built.clear()
    audit = packed.audit(count=4)
    assert len(audit.table) == 4 and all(0 < v <= 1 for v in audit.table.full_data_score)
    assert audit.best_params in [t.params for t in s.trials]
    assert built == [1.0]  # only the configuration the first audit left out trained: the others' scores are kept
    packed.run["seed"] = 1  # another run of the same configurations: trained again
    packed.audit(count=1)
    assert built == [1.0, 1.0]


@pytest.mark.parametrize("pruner, setting", [(optuna.pruners.SuccessiveHalvingPruner(), "min_resource"),
                                             (optuna.pruners.HyperbandPruner(), "max_resource")])
def test_a_pruner_that_learns_its_resource_from_a_finished_trial_is_named(pruner, setting):
    with pytest.warns(UserWarning, match=f"{setting}='auto' prunes nothing until a trial finishes"):
        packed = optimize_in_packs(study(pruner), space(), n_trials=3, pack_size=3)
    assert any("the first 3 trials (one pack) all train to their last epoch" in n for n in packed.notes)
    assert all(t.state == COMPLETE for t in packed.study.trials)
    with warnings.catch_warnings(record=True) as caught:  # the study now holds finished trials: learnt at once
        warnings.simplefilter("always")
        again = optimize_in_packs(packed.study, space(), n_trials=3, pack_size=3)
    assert not [w for w in caught if "prunes nothing until" in str(w.message)]
    assert not any("prunes nothing until" in n for n in again.notes)


def test_the_timeout_and_study_stop_start_no_more_trials_and_let_the_running_ones_finish():
    s = study()
    packed = optimize_in_packs(s, space(), n_trials=50, pack_size=2, timeout=1e-9)
    assert len(s.trials) == 0 and packed.line().startswith("0 trials")

    def stop_after_the_first(st, trial):
        st.stop()

    s = study()
    optimize_in_packs(s, space(), n_trials=50, pack_size=2, callbacks=[stop_after_the_first])
    assert [t.state for t in s.trials] == [COMPLETE, COMPLETE]  # the pack's second trial was already running
    s = study()
    optimize_in_packs(s, space(), n_trials=50, pack_size=2, callbacks=[optuna.study.MaxTrialsCallback(3)])
    assert [t.state for t in s.trials] == [COMPLETE] * 4  # stopped at 3 ended; the 4th was running: it finishes


def test_optunas_grid_sampler_crosses_a_choice_and_stops_the_study():
    s = optuna.create_study(direction="maximize", sampler=optuna.samplers.GridSampler({"lr": [0.02, 0.05, 0.1]}))
    optimize_in_packs(s, space(lr={"type": "choice", "values": [0.02, 0.05, 0.1]}), n_trials=10, pack_size=3)
    assert sorted(t.params["lr"] for t in s.trials) == [0.02, 0.05, 0.1]
    assert all(t.state == COMPLETE for t in s.trials)


def test_a_trial_whose_network_cannot_be_built_fails_alone_under_catch(tmp_path, monkeypatch):
    (tmp_path / "picky_model.py").write_text(
        "from torch import nn\n\n"
        "def net(input_shape, num_classes, width=8):\n"
        "    if width == 13:\n"
        "        raise ValueError('13 is unlucky')\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    picky = {"name": "picky", "fixed": {"dataset": "digits", "model": "picky_model:net", "epochs": 2},
             "params": {"model_args.width": {"type": "choice", "values": [8, 13, 16]}}}

    def run(s, catch=()):
        for width in (8, 13, 16):
            s.enqueue_trial({"model_args.width": width})
        optimize_in_packs(s, picky, n_trials=3, pack_size=1, catch=catch)
        return s

    with pytest.raises(Exception, match="13 is unlucky"):
        run(failed := study())
    assert [t.state for t in failed.trials][:2] == [COMPLETE, FAIL]  # the failed build is told, not left RUNNING
    caught = run(study(), catch=ValueError)  # one class, as Optuna takes it
    assert [t.state for t in caught.trials] == [COMPLETE, FAIL, COMPLETE]
    assert "13 is unlucky" in caught.trials[1].user_attrs["error"]


def test_the_line_says_why_part_of_the_epochs_trained_alone():
    widths = space(**{"lr": {"type": "loguniform", "low": 0.01, "high": 0.1},
                      "model_args.hidden": {"type": "choice", "values": [16, 32]}})
    s = study()
    for hidden in (16, 16, 32):  # two of one network pack together, the third has no partner
        s.enqueue_trial({"lr": 0.05, "model_args.hidden": hidden})
    packed = optimize_in_packs(s, widths, n_trials=3, pack_size=3, decide="proxy")
    assert "67% of their epochs trained in packs (the rest alone: a pack takes trials at the same epoch that " \
           "differ in nothing but lr," in packed.line()


def test_a_field_the_space_searches_cannot_be_set_for_every_trial():
    for field, value in (("lr", 0.1), ("model_args", {"dropout": 0.1})):
        searched = space(**{"lr": {"type": "loguniform", "low": 0.01, "high": 0.1},
                            "model_args.hidden": {"type": "choice", "values": [16, 32]}})
        with pytest.raises(ConfigError, match=rf"invalid {field}=.*: allowed a field the space does not search "
                                              r"\(it searches lr, model_args.hidden\)"):
            optimize_in_packs(study(), searched, 2, **{field: value})


def test_an_uncaught_error_is_raised_after_the_finished_members_are_recorded(tmp_path, monkeypatch):
    failing = failing_space(tmp_path, monkeypatch, epochs=1)
    s = study()
    for fail in (False, True):
        s.enqueue_trial({"model_args.fail": fail})
    with pytest.raises(UserCodeError, match="this network fails"):
        optimize_in_packs(s, failing, n_trials=2, pack_size=2)
    assert [t.state for t in s.trials] == [COMPLETE, FAIL]  # trial 0 finished in the same round: kept


def test_strategy_is_taken_as_proxy_data_and_search_take_it():
    packed = optimize_in_packs(study(optuna.pruners.NopPruner()), space(), n_trials=2, pack_size=2, strategy="loss")
    assert packed.run["metric"] == "loss" and "strategy" not in packed.run


@pytest.mark.parametrize("call, field, allowed", [
    (lambda: optimize_in_packs(optuna.create_study(directions=["maximize", "minimize"]), space(), 2), "study",
     "single-objective"),
    (lambda: optimize_in_packs(study(), space(lr={"type": "grid", "values": [0.1, 0.2]}), 2), "params.lr.type",
     "GridSampler"),
    (lambda: optimize_in_packs(study(), space(), 2, ratios=0.3), "ratios", "TrainConfig field"),
    (lambda: optimize_in_packs(study(), space(), 0), "n_trials", ">= 1"),
    (lambda: optimize_in_packs(study(), space(), 2, pack_size=0), "pack_size", "'auto'"),
    (lambda: optimize_in_packs(study(), space(), 2, ratio=1.5), "ratio", ""),
    (lambda: optimize_in_packs(study(), space(), 2, ratio="0.3"), "ratio", ""),
    (lambda: optimize_in_packs(study(), space(), 2, catch=[3]), "catch", "an exception class"),
    (lambda: optimize_in_packs(study(), space(), 2, strategy="los"), "strategy", "'loss'"),
    (lambda: optimize_in_packs(study(), space(), 2, strategy="loss", metric="loss"), "strategy", "not both"),
])
def test_bad_input_is_named_before_any_trial_starts(call, field, allowed):
    with pytest.raises(ConfigError) as raised:
        call()
    assert raised.value.field == field and allowed in raised.value.allowed


PICKY_MODEL = """
from torch import nn


def net(input_shape, num_classes, width=8):
    if width < 12:
        raise ValueError(f"width {width} too small")
    return nn.Sequential(nn.Flatten(), nn.Linear(64, width), nn.ReLU(), nn.Linear(width, num_classes))
"""


def test_auto_measures_on_the_first_trial_that_builds_when_the_spaces_first_configuration_cannot(tmp_path,
                                                                                                   monkeypatch):
    (tmp_path / "picky_net.py").write_text(PICKY_MODEL)
    monkeypatch.syspath_prepend(str(tmp_path))
    picky = {"name": "picky", "fixed": {"dataset": "digits", "model": "picky_net:net", "epochs": 2},
             "params": {"model_args.width": {"type": "int", "low": 8, "high": 64}}}
    s = study()
    for width in (9, 20, 30, 40):
        s.enqueue_trial({"model_args.width": width})
    packed = optimize_in_packs(s, picky, n_trials=4, pack_size="auto", catch=ValueError)
    assert [t.state for t in s.trials] == [FAIL, COMPLETE, COMPLETE, COMPLETE]
    assert any("the space's first configuration could not be built (building the network with picky_net:net "
               "failed (ValueError: width 8 too small)" in n for n in packed.notes)
    assert "no two trials trained together" in packed.notes[-1]  # each width is its own network: its own pack
    with pytest.raises(UserCodeError, match="width 8 too small"):  # without catch the error is the user's to see
        optimize_in_packs(study(), picky, n_trials=2, pack_size="auto")


def test_a_study_resumed_with_other_settings_is_said_and_the_line_counts_this_calls_trials():
    s = study()
    first = optimize_in_packs(s, space(), n_trials=2, pack_size=2, ratio=0.5)
    tag = s.trials[0].user_attrs["asp_tune_run"]
    assert s.user_attrs["asp_tune_run"][tag]["ratio"] == 0.5 and first.line().startswith("2 trials (2 complete)")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        optimize_in_packs(s, space(), n_trials=1, pack_size=1, ratio=0.5)  # the same settings: unsaid
    with pytest.warns(UserWarning, match=r"3 of this study's trials were trained with other settings \(metric, "
                                         r"ratio differ\)"):
        again = optimize_in_packs(s, space(), n_trials=1, pack_size=1, ratio=1.0)
    assert again.line().startswith("1 trials (1 complete) in") and "; the study holds 4;" in again.line()
    with pytest.warns(UserWarning, match="3 of this study's trials were trained with other settings"):
        optimize_in_packs(s, space(), n_trials=1, pack_size=1, ratio=1.0)  # still mixed: said again, where the
    assert len({t.user_attrs["asp_tune_run"] for t in s.trials}) == 2  # last call's settings alone kept it silent
    old = study()  # a study an older asp_tune kept its last settings in, untagged
    old.set_user_attr("asp_tune_run", {"ratio": 0.5})
    old.add_trial(optuna.trial.create_trial(params={"lr": 0.01}, distributions={
        "lr": optuna.distributions.FloatDistribution(0.001, 0.1, log=True)}, value=0.5))
    with pytest.warns(UserWarning, match="1 of this study's trials were trained with other settings"):
        optimize_in_packs(old, space(), n_trials=1, pack_size=1, ratio=1.0)


def test_the_audit_of_a_study_resumed_with_other_settings_takes_this_runs_trials_only():
    s = study()
    optimize_in_packs(s, space(), n_trials=3, pack_size=3, ratio=0.5, decide="proxy")
    with pytest.warns(UserWarning, match="3 of this study's trials were trained with other settings"):
        packed = optimize_in_packs(s, space(), n_trials=2, pack_size=2, ratio=0.3, decide="proxy")
    audit = packed.audit(count=5)  # no more than this run's two: the first run's proxy values are not comparable
    ours = {t.number: t for t in packed.trials}
    assert sorted(audit.table["number"]) == sorted(ours) == [3, 4]
    assert audit.proxy_best_params == max(ours.values(), key=lambda t: t.value).params  # its best, not the study's
    assert s.user_attrs["asp_tune_full_data"]["audited"] == 2


def test_running_trials_stopped_by_another_trials_error_say_so(tmp_path, monkeypatch):
    failing = failing_space(tmp_path, monkeypatch, epochs=3)
    s = study()
    for fail in (False, True):
        s.enqueue_trial({"model_args.fail": fail})
    with pytest.raises(UserCodeError):
        optimize_in_packs(s, failing, n_trials=2, pack_size=2)
    assert s.trials[0].user_attrs["error"] == "not finished: the study stopped when trial 1 failed (UserCodeError)"
    assert s.trials[1].user_attrs["error"].startswith("UserCodeError: the first training batch with failing_model")
    assert "traceback" not in s.trials[1].user_attrs["error"]


@pytest.mark.parametrize("kwargs, field", [({"callbacks": lambda st, t: None}, "callbacks"),
                                           ({"callbacks": [1]}, "callbacks"), ({"timeout": True}, "timeout")])
def test_callbacks_and_timeout_are_checked_before_any_trial(kwargs, field):
    s = study()
    with pytest.raises(ConfigError) as raised:
        optimize_in_packs(s, space(), 2, **kwargs)
    assert raised.value.field == field and not s.trials
    with pytest.raises(ConfigError, match="invalid study='NoneType': allowed an optuna.Study"):
        optimize_in_packs(None, space(), 2)


def test_full_data_decides_the_pick_unless_told_the_proxy_does():
    s = study()
    packed = optimize_in_packs(s, space(), n_trials=4, pack_size=4)  # ratio 0.3, decide="full"
    assert packed.full_data is not None and len(packed.full_data.table) == 3  # a small study: its best 3
    assert packed.best_params == packed.full_data.best_params and packed.breakdown["full_data_s"] > 0
    assert "; picked on full data: " in packed.line() and "asp_tune_full_data" in s.user_attrs
    unchecked = optimize_in_packs(study(), space(), n_trials=2, pack_size=2, decide="proxy")
    assert unchecked.full_data is None and unchecked.best_params == unchecked.study.best_params
    assert "the pick rests on proxy scores alone" in unchecked.line()
    audit = unchecked.audit(count=1)  # asked for afterwards: kept, and the pick is its own (it was not)
    assert unchecked.full_data is audit and unchecked.best_params == audit.best_params
    assert "picked on full data: " in unchecked.line() and "count=N" not in unchecked.line().replace(
        "packed.audit(count=N)", "")  # the hint names this object's keyword
    best = unchecked.study.best_params  # a pick that loses on full data is warned, as the command line says it
    unchecked.full_data_score = lambda params: 0.1 if params == best else 0.9
    unchecked.run["seed"] = 1  # other settings: the scores kept of the real full-data runs are not theirs
    with pytest.warns(UserWarning, match="the study's own pick lost 0.8000 of full-data score"):
        unchecked.audit(count=2)
    with pytest.raises(ConfigError, match="invalid decide='nope'"):
        optimize_in_packs(study(), space(), 2, decide="nope")


def test_a_study_resumed_with_other_fixed_settings_is_warned_and_its_audit_keeps_to_this_calls_trials(monkeypatch):
    """The tag hashed the keyword settings alone: a space training other epochs joined the earlier trials
    unsaid, and the audit retrained their params with this space, pairing proxy and full data of unlike runs."""
    import asp_tune.build

    built = []
    monkeypatch.setattr(asp_tune.build, "build_trainer", lambda cfg, _b=asp_tune.build.build_trainer: built.append(
        (cfg.ratio, cfg.epochs)) or _b(cfg))
    s = study()
    optimize_in_packs(s, space(), n_trials=2, pack_size=2, decide="proxy")  # 3 epochs
    shorter = space()
    shorter["fixed"]["epochs"] = 1
    built.clear()
    with pytest.warns(UserWarning, match=r"2 of this study's trials were trained with other settings \(epochs "
                                         r"differ\)"):
        packed = optimize_in_packs(s, shorter, n_trials=2, pack_size=2)
    assert sorted(packed.full_data.table["number"]) == [2, 3]  # the 3-epoch trials are not this run's
    assert [b for b in built if b[0] == 1.0] == [(1.0, 1), (1.0, 1)]
    kept = s.user_attrs["asp_tune_run"][packed.run_tag]
    assert kept["epochs"] == 1 and kept["model_args"] == {"hidden": 32} and "lr" not in kept  # less the searched


def test_a_study_resumed_elsewhere_or_with_another_evaluation_batch_is_the_same_run(recwarn):
    """The tag held every setting: another data folder, evaluation batch or test subset made the earlier trials
    "not comparable" and left them out of the audit."""
    s = study()
    first = optimize_in_packs(s, space(), n_trials=2, pack_size=2, decide="proxy")
    moved = space()
    moved["fixed"].update(eval_batch_size=64, test_subset=100)
    again = optimize_in_packs(s, moved, n_trials=2, pack_size=2, decide="proxy")
    assert again.run_tag == first.run_tag
    assert not [w for w in recwarn if "other settings" in str(w.message)]


def test_a_later_call_on_the_same_study_reuses_the_full_data_scores_its_audits_kept(monkeypatch):
    """Each call audited with an empty cache: the configurations an earlier call trained on full data, the
    dearest runs of all, trained again."""
    import asp_tune.build

    built = []
    monkeypatch.setattr(asp_tune.build, "build_trainer", lambda cfg, _b=asp_tune.build.build_trainer: built.append(
        (cfg.ratio, cfg.lr)) or _b(cfg))
    s = study()
    first = optimize_in_packs(s, space(), n_trials=3, pack_size=3)
    scores = dict(zip(first.full_data.table["number"], first.full_data.table["full_data_score"]))
    assert sorted(scores) == [0, 1, 2] and sum(1 for b in built if b[0] == 1.0) == 3
    built.clear()
    later = optimize_in_packs(s, space(), n_trials=1, pack_size=1)  # the study resumed: one more trial
    table = later.full_data.table
    again = [n for n in table["number"] if n in scores]
    assert len(table) == 3 and again  # its best 3 of 4 hold earlier ones: not trained again, the same scores
    assert sum(1 for b in built if b[0] == 1.0) == 3 - len(again)
    assert all(table.set_index("number").loc[n, "full_data_score"] == scores[n] for n in again)


def test_each_trial_that_ends_is_logged_as_study_optimize_logs_it_under_optunas_verbosity():
    """study.tell logs nothing: an Optuna user saw a silent study."""
    import logging

    lines: list[tuple[int, str]] = []
    handler = logging.Handler()
    handler.emit = lambda record: lines.append((record.levelno, record.getMessage()))
    logging.getLogger("optuna").addHandler(handler)
    try:
        for verbosity in (optuna.logging.INFO, optuna.logging.WARNING):
            optuna.logging.set_verbosity(verbosity)
            s = study(OddOnesOut())
            for lr in (0.05, 0.02, 1e12):
                s.enqueue_trial({"lr": lr})
            optimize_in_packs(s, space(lr={"type": "loguniform", "low": 0.01, "high": 1e12}), n_trials=3,
                              pack_size=3, ratio=1.0, decide="proxy")
    finally:
        logging.getLogger("optuna").removeHandler(handler)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
    lines = [(level, text) for level, text in lines if text.startswith("Trial ")]  # not "A new study created"
    said = [text for _, text in lines]
    assert (f"Trial 0 finished with value: {s.trials[0].value} and parameters: {{'lr': 0.05}}. "
                              f"Best is trial 0 with value: {s.trials[0].value}.") in said
    assert "Trial 1 pruned at epoch 1." in said
    failed = [(level, text) for level, text in lines if text.startswith("Trial 2 failed with parameters: "
                                                                         "{'lr': 1000000000000.0} because of the "
                                                                         "following error: TrainingDiverged(")]
    assert len(failed) == 2 and all(level == logging.WARNING for level, _ in failed)  # once at each verbosity
    assert len(lines) == 4  # at WARNING only the failure


def test_optunas_default_pruner_counts_as_pruning_and_the_notes_say_which_strategy_it_chose():
    """optuna.create_study() gets MedianPruner: the strategy changed without a word."""
    tiny = {**space(), "fixed": {**space()["fixed"], "epochs": 1}}
    median = optimize_in_packs(optuna.create_study(direction="maximize"), tiny, n_trials=1, pack_size=1,
                               decide="proxy")
    said = [n for n in median.notes if "MedianPruner prunes" in n]
    assert median.run["metric"] == "random" and median.run["first_epoch_full"] is False
    assert len(said) == 1 and "metric='random', first_epoch_full=False" in said[0] and "NopPruner()" in said[0]
    plain = optimize_in_packs(study(), tiny, n_trials=1, pack_size=1, decide="proxy")  # NopPruner
    assert plain.run["metric"] != "random" and not [n for n in plain.notes if "prunes, so" in n]
