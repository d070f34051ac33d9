"""Every TrainConfig field has one flag, generated from the dataclass, with the command's defaults."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest

from asp_tune.cli import load_extensions, build_parser, config_from_args, train_config
from asp_tune.config import SELECTION_FIELDS, TrainConfig


def parse(*argv: str):
    load_extensions()
    return build_parser().parse_args(list(argv))


def test_train_flags_cover_every_field_with_the_dataclass_defaults():
    args = parse("train", "--out", "x")
    assert train_config(args) == TrainConfig()
    for f in dataclasses.fields(TrainConfig):
        assert hasattr(args, f.name), f"no flag for {f.name}"


def test_flags_parse_into_the_config():
    args = parse("train", "--out", "x", "--milestones", "0.3,0.6", "--subset", "none", "--reweight", "yes",
                 "--selection-rule", "calibrated", "--top10-mass", "0.4", "--lr-min", "0.002")
    cfg = train_config(args)
    assert cfg.milestones == (0.3, 0.6) and cfg.subset is None and cfg.reweight is True
    assert config_from_args(parse("nas", "--out", "x", "--reweight", "yes")).reweight is True
    assert cfg.selection_rule == "calibrated" and cfg.top10_mass == 0.4 and cfg.lr_min == 0.002


def test_a_yes_or_no_flag_alone_means_yes_and_still_takes_a_word():
    assert parse("demo", "--keep-checkpoints").keep_checkpoints is True  # as the notices write it
    assert parse("demo", "--keep-checkpoints", "--num-samples", "3").keep_checkpoints is True
    assert parse("demo", "--keep-checkpoints", "false").keep_checkpoints is False
    assert parse("demo").keep_checkpoints is False
    assert train_config(parse("train", "--out", "x", "--reweight")).reweight is True
    with pytest.raises(SystemExit):
        parse("demo", "--keep-checkpoints", "maybe")


def test_nas_without_flags_trains_with_the_nas_defaults():
    from nas.settings import supernet_train_config

    cfg = config_from_args(parse("nas", "--out", "x"))
    nas = supernet_train_config()
    assert (cfg.lr, cfg.lr_min, cfg.weight_decay, cfg.batch_size) == (nas.lr, nas.lr_min, nas.weight_decay,
                                                                      nas.batch_size) == (0.025, 0.001, 3e-4, 64)


def test_hpo_selection_flags_reach_every_trial_only_when_given(tmp_path):
    from asp_tune.tune.cli import hpo_settings_from_args

    space = tmp_path / "s.yaml"
    space.write_text("fixed: {dataset: digits, uniform_floor: 0.3}\nparams:\n  lr: {type: uniform, low: 0.01, "
                     "high: 0.1}\n")
    plain = hpo_settings_from_args(parse("hpo", "--space", str(space), "--out", "x", "--ratio", "0.3"), 0.3)
    assert plain.selection == {} and plain.trial_config().uniform_floor == 0.3  # the space's value stands
    given = hpo_settings_from_args(parse("hpo", "--space", str(space), "--out", "x", "--selection-rule", "calibrated",
                            "--uniform-floor", "0.1", "--reweight", "true"), 0.3)
    assert given.selection == {"selection_rule": "calibrated", "uniform_floor": 0.1, "reweight": True}
    cfg = given.trial_config()
    assert (cfg.selection_rule, cfg.uniform_floor, cfg.reweight) == ("calibrated", 0.1, True)
    assert set(given.selection) <= set(SELECTION_FIELDS)


@pytest.mark.parametrize("command", ["train", "nas", "nas-retrain", "hpo", "compare", "correlate"])
def test_help_shows_defaults(command, capsys):
    with pytest.raises(SystemExit):
        parse(command, "--help")
    out = capsys.readouterr().out
    assert "[default:" in out


def _flagged(cls) -> list[str]:
    from asp_tune.flags import flag_fields

    return [f.name for f in flag_fields(cls)]


def test_hpo_flags_come_from_hpo_settings_with_the_commands_defaults_given_once(tmp_path):
    from asp_tune.tune.cli import hpo_settings_from_args
    from asp_tune.tune.settings import HpoSettings

    space = tmp_path / "s.yaml"
    space.write_text("fixed: {dataset: digits}\nparams:\n  lr: {type: uniform, low: 0.01, high: 0.1}\n")
    args = parse("hpo", "--space", str(space), "--out", "x")
    for name in _flagged(HpoSettings):
        assert hasattr(args, name), f"hpo has no flag for HpoSettings.{name}"
    settings = hpo_settings_from_args(args, args.ratio)
    api = HpoSettings(space=settings.space).validate()
    for f in dataclasses.fields(HpoSettings):
        if f.name not in ("space", "selection", "storage_path"):
            assert getattr(settings, f.name) == getattr(api, f.name), f.name  # one set of defaults
    assert settings.ratio == 0.3 and settings.ratio_schedule == "constant"
    # a local run keeps Ray's experiments beside its results, not in ~/ray_results
    assert settings.storage_path == str(Path("x").resolve().with_name(".x.ray")) and api.storage_path is None


def test_nas_flags_come_from_the_settings_dataclasses():
    from nas.cli import settings_from_args
    from nas.settings import EvolutionSettings, NasSettings

    args = parse("nas", "--out", "x")
    for cls in (NasSettings, EvolutionSettings):
        for name in _flagged(cls):
            assert hasattr(args, name), f"nas has no flag for {cls.__name__}.{name}"
    settings = settings_from_args(args)
    assert settings.evolution == EvolutionSettings()
    defaults = NasSettings()
    assert (settings.channels, settings.order, settings.arch_lr, settings.grad_clip, settings.monitor) == \
        (defaults.channels, defaults.order, defaults.arch_lr, defaults.grad_clip, defaults.monitor)
    assert settings.searcher == "spos"  # the space's own
    assert parse("nas", "--out", "x", "--nb201-table", "t.csv").ground_truth == "t.csv"  # the old flag name


@pytest.mark.parametrize("command, registry_choices", [
    ("hpo", "{hyperband,bohb,asha,hypertune,tpe,random}"), ("nas", "{nb201,darts}"), ("nas", "{spos,darts}"),
    ("train", "{cifar10,cifar100,digits,image_folder}"),
])
def test_help_choices_come_from_the_registries(command, registry_choices, capsys):
    with pytest.raises(SystemExit):
        parse(command, "--help")
    assert registry_choices in capsys.readouterr().out


@pytest.mark.parametrize("command", ["", "train", "hpo", "compare", "correlate", "demo", "nas", "nas-retrain",
                                     "coreset", "active-learn", "inspect"])
def test_help_imports_neither_torch_nor_ray(command):
    """--help answers at once: no heavy import while the parsers are built (measured: 0.1-0.7 s)."""
    import subprocess
    import sys

    argv = [command, "--help"] if command else ["--help"]
    code = ("import sys\nfrom asp_tune.cli import main\ntry:\n    main(%r)\nexcept SystemExit:\n    pass\n"
            "print(sorted(m for m in ('torch', 'ray', 'scipy') if m in sys.modules))" % argv)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert "[default:" in out or command == ""
    assert out.strip().splitlines()[-1] == "[]"


def test_the_demo_runs_one_trial_at_a_time_on_at_most_two_of_the_cpus_ray_has():
    import os

    from asp_tune.tune.cli import demo_search

    search = demo_search()  # Ray's CPUs, or those it would be started with
    assert search["max_concurrent"] == 1 and 1 <= search["cpus_per_trial"] <= min(2, os.cpu_count())


def test_a_shortened_flag_is_an_unknown_flag_not_a_guess(capsys):
    from asp_tune.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["hpo", "--space", "search_spaces/digits_mlp.yaml", "--num-sample", "4", "--out", "unused"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "unrecognized arguments: --num-sample 4" in err
    assert "did you mean --num-samples?" in err and "usage: asp-tune hpo" in err  # the sub-command's usage


def test_an_unknown_flag_far_from_every_flag_gets_no_guess(capsys):
    from asp_tune.cli import main

    with pytest.raises(SystemExit) as exited:
        main(["demo", "--zzz", "--out", "unused"])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and "asp-tune demo: error: unrecognized arguments: --zzz" in err
    assert "did you mean" not in err


@pytest.mark.parametrize("command, resumes", [("hpo", True), ("correlate", False), ("compare", False)])
def test_an_interrupted_search_says_resume_only_where_the_command_can(command, resumes, monkeypatch, capsys):
    from asp_tune import cli
    from asp_tune.errors import RunInterrupted

    def interrupted(args):
        raise RunInterrupted("interrupted by SIGINT; no results were committed", "/runs/.out.ray/asp-x")

    cli.load_extensions()  # every command registered, so the stand-in is not replaced
    monkeypatch.setitem(cli.COMMANDS, command, interrupted)
    assert cli.main([command, "--space", "search_spaces/digits_mlp.yaml", "--out", "unused"]) == 130
    err = capsys.readouterr().err
    assert ("Resume with --resume /runs/.out.ray/asp-x, the same flags beside it: asp-tune " + command +
            " --space search_spaces/digits_mlp.yaml --out unused --resume /runs/.out.ray/asp-x" in err) is resumes
    assert ("run the command again to start over (Ray's experiment is left in /runs/.out.ray/asp-x)" in err) \
        is not resumes


def test_search_resumes_an_unsigned_experiment_when_told_to_as_its_message_says(monkeypatch):
    from asp_tune import ConfigError
    from asp_tune.tune import user
    from asp_tune.tune.signing import UNSIGNED

    told = []
    monkeypatch.setattr(user, "run_search", lambda job, **kwargs: told.append(kwargs))
    assert UNSIGNED.startswith("resume_unsigned=True or")  # what the refusal says a search() caller may give
    user.search(lambda config: None, {"lr": 0.1}, epochs=2, verbose=0, resume="/runs/x", resume_unsigned=True)
    assert told == [{"resume": "/runs/x", "resume_unsigned": True, "say_unfinished": True}]
    with pytest.raises(ConfigError, match="invalid resume_unsigned='yes': allowed True or False"):
        user.search(lambda config: None, {"lr": 0.1}, epochs=2, resume_unsigned="yes")


def test_run_hpo_asks_for_more_full_data_runs_in_python_s_words(monkeypatch):
    from asp_tune.tune import builtin
    from asp_tune.tune.deciding import announce
    from asp_tune.tune.settings import HpoSettings

    jobs = []
    monkeypatch.setattr(builtin, "run_search", lambda job, **kwargs: jobs.append(job))
    settings = HpoSettings("search_spaces/digits_mlp.yaml", algo="asha", num_samples=4, verbose=0)
    builtin.run_hpo(settings)
    said = " ".join(announce(jobs[0]))
    assert "give audit=6 to train" in said and "--audit" not in said
    assert "give --audit 6 to train" in " ".join(announce(builtin.job_from_settings(settings)))  # the command line's


def test_a_search_without_a_top_rung_on_full_data_says_why_before_it_starts(monkeypatch):
    """hpo.md's first example (BOHB, a dynamic ratio) never trained its top rung on full data, and said nothing:
    the audit decided, unannounced. Every reason is now said, by the command line and search() alike."""
    from asp_tune.tune import builtin, user
    from asp_tune.tune.deciding import announce
    from asp_tune.tune.settings import HpoSettings

    def said(**changes):
        settings = HpoSettings("search_spaces/digits_mlp.yaml", **{"algo": "asha", "num_samples": 18, "max_epochs": 9,
                                                                   "ratio": 0.3, "verbose": 0, **changes})
        return " ".join(announce(builtin.job_from_settings(settings)))

    assert "no top rung" not in said()
    assert "no top rung on all the data (ratio schedule 'dynamic' does not reach 1 by the last proxy rung (epoch 3)" \
           "; constant or steps:3=1 does): after the search, an audit trains" in said(ratio_schedule="dynamic")
    assert "(strategy 'fixed_random' keeps its own subset)" in said(metric="fixed_random")
    assert "no top rung" not in said(decide="proxy") and "no top rung" not in said(algo="random")
    assert "(--rung-ratios end at 0.5; ending them in 1 (e.g. 0.1,0.3,1) does)" in \
        said(algo="hypertune", rung_ratios="0.1,0.3,0.5")  # steps:3=1 is refused beside them
    assert "constant or steps:3=1 does): with no audit either, the proxy's best is the pick, unchecked" in \
        said(ratio_schedule="dynamic", audit=0)
    jobs = []
    monkeypatch.setattr(user, "run_search", lambda job, **kwargs: jobs.append(job))
    user.search(lambda config: None, {"lr": 0.1}, epochs=9, num_samples=18, ratio=0.3, ratio_schedule="dynamic",
                verbose=0)
    assert "no top rung on all the data (ratio schedule 'dynamic'" in " ".join(announce(jobs[0]))
    from ray.tune.schedulers import MedianStoppingRule

    user.search(lambda config: None, {"lr": 0.1}, epochs=9, num_samples=18, ratio=0.3, verbose=0,
                scheduler=MedianStoppingRule())
    assert "no top rung on all the data (MedianStoppingRule stops trials at epochs asp_tune cannot know in " \
           "advance): after the search, an audit trains" in " ".join(announce(jobs[1]))


def test_the_resume_command_is_the_command_again_with_one_resume():
    from asp_tune.cli import resume_command

    assert resume_command(["hpo", "--space", "my space.yaml", "--resume", "/old", "--ratio", "0.3",
                           "--resume=/older"], "/runs/x") == \
        "asp-tune hpo --space 'my space.yaml' --ratio 0.3 --resume /runs/x"
    assert resume_command(["hpo", "--resume-unsigned"], "/x") == "asp-tune hpo --resume-unsigned --resume /x"


def test_an_interrupted_run_names_its_experiment_from_python_too():
    import pickle

    from asp_tune.errors import RunInterrupted

    exc = RunInterrupted("interrupted by SIGINT; no results were committed", "/runs/x")
    assert str(exc) == "interrupted by SIGINT; no results were committed (Ray's experiment: /runs/x)"
    assert exc.resume_hint("resume=") == ("interrupted by SIGINT; no results were committed. Resume with "
                                          "resume='/runs/x'")
    again = pickle.loads(pickle.dumps(exc))
    assert str(again) == str(exc) and again.experiment_path == "/runs/x"


def test_search_and_run_hpo_say_how_to_resume_and_keep_the_experiment_for_the_caller(monkeypatch):
    import pickle

    from asp_tune.errors import RunInterrupted
    from asp_tune.tune import builtin, user
    from asp_tune.tune.settings import HpoSettings

    def interrupted(job, **kwargs):
        raise RunInterrupted("interrupted by SIGINT; no results were committed", "/runs/x")

    monkeypatch.setattr(builtin, "run_search", interrupted)
    monkeypatch.setattr(user, "run_search", interrupted)
    said = "interrupted by SIGINT; no results were committed. Resume with resume='/runs/x'"
    with pytest.raises(RunInterrupted) as by_settings:
        builtin.run_hpo(HpoSettings("search_spaces/digits_mlp.yaml", num_samples=2, verbose=0))
    with pytest.raises(RunInterrupted) as by_trainable:
        user.search(lambda config: None, {"lr": 0.1}, epochs=2, num_samples=2, verbose=0)
    for caught in (by_settings.value, by_trainable.value):
        assert str(caught) == said and caught.experiment_path == "/runs/x"  # a program can resume from it
        again = pickle.loads(pickle.dumps(caught))
        assert str(again) == said and again.experiment_path == "/runs/x"
        assert caught.resume_hint("--resume ") == ("interrupted by SIGINT; no results were committed. Resume with "
                                                   "--resume /runs/x")  # said once, in the command line's words


def test_each_search_of_a_comparison_gets_its_own_scheduler_and_searcher(monkeypatch):
    """compare_trainable handed one ASHAScheduler and one OptunaSearch to every ratio's search: the proxy
    search started from the rungs and the study the full-data search left in them."""
    from ray.tune.schedulers import ASHAScheduler
    from ray.tune.search.optuna import OptunaSearch

    import asp_tune.tune.compare as compare
    from asp_tune.tune import user

    built = {}
    monkeypatch.setattr(user, "_job", lambda trainable, space, **kw: built.setdefault(kw["ratio"], kw))
    monkeypatch.setattr(compare, "run_comparison", lambda jobs, retrain, seeds, **kw: [job(None) for job in jobs.values()])
    scheduler, searcher = ASHAScheduler(max_t=4, grace_period=1), OptunaSearch(seed=0)
    user.compare_trainable(lambda config: None, {"lr": 0.1}, epochs=4, ratios=(1.0, 0.3), scheduler=scheduler,
                           search_alg=searcher)
    objects = [(kw["scheduler"], kw["search_alg"]) for kw in built.values()]
    assert sorted(built) == [0.3, 1.0] and len({id(o) for pair in objects for o in pair}) == 4
    assert all(type(a) is type(scheduler) and type(b) is OptunaSearch and a is not scheduler and b is not searcher
               for a, b in objects)
    built.clear()
    user.compare_trainable(lambda config: None, {"lr": 0.1}, epochs=4, ratios=(1.0, 0.3), scheduler="asha")
    assert built[0.3]["scheduler"] == "asha"  # a name stays a name
    with pytest.warns(UserWarning, match="search_alg given as an object keeps the seed it was built with"):
        user.compare_trainable(lambda config: None, {"lr": 0.1}, epochs=4, ratios=(1.0, 0.3), search_alg=searcher,
                               seeds=[0, 1])


@pytest.mark.parametrize("text", ["1_0", "1,,2", "1,", "\u0663", "a", "--1", "1.5"])
def test_seeds_are_plain_decimal_integers(text):
    """'1_0' ran seed 10, '1,,2' and a trailing comma were taken, and Arabic-Indic digits read as 3."""
    import argparse

    from asp_tune.flags import parse_seeds

    with pytest.raises(argparse.ArgumentTypeError, match="expected comma-separated integers"):
        parse_seeds(text)
    assert parse_seeds("1, 2,3") == [1, 2, 3] and parse_seeds("-1") == [-1]  # a negative one is checked by name later
