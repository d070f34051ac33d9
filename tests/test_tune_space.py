import pytest
import yaml

from asp_tune import ConfigError
from asp_tune.tune.space import load_space, parse_space

BASE = {"name": "t", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 3},
        "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.5},
                   "momentum": {"type": "uniform", "low": 0.5, "high": 0.9},
                   "batch_size": {"type": "int", "low": 32, "high": 64},
                   "label_smoothing": {"type": "choice", "values": [0.0, 0.1]},
                   "flip_p": {"type": "grid", "values": [0.25, 0.75]}}}


def tiny_space() -> dict:
    """A one-parameter digits MLP space of 4 epochs, fresh for each test to change."""
    return {"name": "tiny", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 4},
            "params": {"lr": {"type": "loguniform", "low": 0.01, "high": 0.1}}}


def test_translation_to_tune():
    from ray import tune
    from ray.tune.search.sample import Categorical, Float, Integer

    space = parse_space(BASE).to_tune()
    assert isinstance(space["lr"], Float) and space["lr"].lower == 0.01 and space["lr"].upper == 0.5
    assert type(space["lr"].get_sampler()).__name__ == "_LogUniform"
    assert isinstance(space["momentum"], Float) and space["momentum"].upper == 0.9
    assert isinstance(space["batch_size"], Integer) and space["batch_size"].upper == 65  # inclusive high
    assert isinstance(space["label_smoothing"], Categorical) and space["label_smoothing"].categories == [0.0, 0.1]
    assert space["flip_p"] == tune.grid_search([0.25, 0.75])


def test_translation_to_configspace():
    import ConfigSpace as CS

    cs = parse_space(BASE).to_configspace(seed=1)
    lr = cs["lr"]
    assert isinstance(lr, CS.UniformFloatHyperparameter) and lr.log and lr.lower == 0.01 and lr.upper == 0.5
    assert isinstance(cs["batch_size"], CS.UniformIntegerHyperparameter) and cs["batch_size"].upper == 64
    assert list(cs["label_smoothing"].choices) == [0.0, 0.1]
    assert list(cs["flip_p"].choices) == [0.25, 0.75]  # grid -> categorical for BOHB
    sample = dict(cs.sample_configuration())
    assert 0.01 <= sample["lr"] <= 0.5 and 32 <= sample["batch_size"] <= 64


def test_shipped_spaces_validate():
    from pathlib import Path

    spaces = Path(__file__).resolve().parents[1] / "search_spaces"
    names = {p.stem for p in spaces.glob("*.yaml")}
    assert {"digits_mlp", "resnet8_cifar10_cpu", "resnet18_cifar10", "table5_grid"} <= names
    for p in spaces.glob("*.yaml"):
        load_space(p)
    grid = load_space(spaces / "table5_grid.yaml")
    configs = grid.grid_configs()
    assert len(configs) == 36 and grid.fixed["model"] == "resnet20"
    assert {c["lr"] for c in configs} == {0.05, 0.1, 0.2} and {c["momentum"] for c in configs} == {0.8, 0.9}


@pytest.mark.parametrize("mutate,pattern", [
    (lambda d: d["params"].update(lr={"type": "lognormal", "low": 1, "high": 2}),
     r"params.lr.type='lognormal': allowed one of 'loguniform'"),
    (lambda d: d["params"].update(lr={"type": "loguniform", "low": 0.0, "high": 0.5}),
     r"params.lr.low=0.0: allowed a number > 0 for loguniform"),
    (lambda d: d["params"].update(lr={"type": "uniform", "low": 0.5, "high": 0.1}),
     r"params.lr.high=0.1: allowed a number > low"),
    (lambda d: d["params"].update(lrate={"type": "uniform", "low": 0.1, "high": 0.5}),
     r"params.lrate='lrate': allowed a TrainConfig field"),
    (lambda d: d["params"].update(label_smoothing={"type": "choice", "values": []}),
     r"params.label_smoothing.values=\[\]: allowed a non-empty list"),
    (lambda d: d["params"].update(batch_size={"type": "int", "low": 1.5, "high": 8}),
     r"params.batch_size.low=1.5: allowed an integer"),
    (lambda d: d["fixed"].update(model="vgg"), r"fixed.model='vgg'"),
    (lambda d: d["fixed"].update(ratio=0.5), r"fixed.ratio=0.5: allowed not settable in a space"),
    (lambda d: d["fixed"].update(colour="red"), r"fixed.colour='colour'"),
    (lambda d: d["params"].update(momentum={"type": "uniform", "low": 0.5, "high": 1.5}),
     r"params.momentum=1.5: allowed a number in \[0.0, 1.0\)"),
    (lambda d: d.update(extra=1), r"t: key='extra'"),
    (lambda d: d["params"].update(val_fraction={"type": "choice", "values": [0.2, 0.0]}),  # nas-retrain's alone
     r"params.val_fraction=0.0: allowed a fraction in \(0, 1\): a search scores every trial on a held-out split"),
])
def test_bad_spaces_name_the_field(mutate, pattern):
    import copy

    data = copy.deepcopy(BASE)
    mutate(data)
    with pytest.raises(ConfigError, match=pattern):
        parse_space(data, name="t")


def test_bad_yaml_file(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("params: [unclosed\n")
    with pytest.raises(ConfigError, match="valid YAML"):
        load_space(bad)
    with pytest.raises(ConfigError, match="an existing YAML file"):
        load_space(tmp_path / "missing.yaml")


@pytest.mark.parametrize("content, pattern", [
    (b"name: x\nparams: {lr: {type: uniform, low: 0.1, high: 1}}\nname: y\n", r"the key 'name' is given twice"),
    (b"fixed: &f {epochs: 2}\nparams: {lr: {type: uniform, low: 0.1, high: 1}}\nother: *f\n",
     r"aliases \(\*name\) are not allowed"),
    (b"name: caf\xe9\nparams: {}\n", r"a UTF-8 text file \(byte 9 is not UTF-8\)"),
    (b"params: {lr: {type: uniform, low: 0.1, high: .inf}}\n", r"params.lr.high=inf: allowed a finite number"),
    (b"params: {lr: {type: loguniform, low: .nan, high: 1}}\n", r"params.lr.low=nan: allowed a finite number"),
])
def test_a_space_file_with_a_trap_is_one_named_error(tmp_path, content, pattern):
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    with pytest.raises(ConfigError, match=pattern):
        load_space(path)


def test_a_huge_space_file_is_refused_before_it_is_parsed(tmp_path):
    path = tmp_path / "space.yaml"
    path.write_bytes(b"# " + b"x" * 1_100_000 + b"\n")
    with pytest.raises(ConfigError, match="at most 1000 kB"):
        load_space(path)


def test_settings_take_a_space_as_a_path_a_mapping_or_a_space_and_name_anything_else(tmp_path):
    from asp_tune.tune.settings import HpoSettings

    data = tiny_space()
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(data))
    for given in (str(tmp_path / "s.yaml"), tmp_path / "s.yaml", data, parse_space(data)):
        settings = HpoSettings(given, pack=4).validate()
        assert settings.space == parse_space(data) and settings.pack == "4"
    with pytest.raises(ConfigError, match=r"invalid space='int': allowed a SearchSpace, a mapping .* or the path"):
        HpoSettings(3).validate()
    with pytest.raises(ConfigError, match=r"invalid space=.*missing.yaml.*an existing YAML file"):
        HpoSettings(str(tmp_path / "missing.yaml")).validate()


def test_a_grace_period_that_leaves_no_rung_is_refused_under_early_stopping():
    from asp_tune.tune.settings import HpoSettings

    data = tiny_space()
    with pytest.raises(ConfigError, match=r"invalid grace_period=4: allowed an integer below the epochs \(4\) under "
                                          r"early stopping: at 4 or more the search has no rung before its last epoch"):
        HpoSettings(data, algo="asha", grace_period=4).validate()
    HpoSettings(data, algo="asha", grace_period=3).validate()
    HpoSettings(data, algo="random", grace_period=4).validate()  # nothing stops early: the grace is not read
    with pytest.raises(ConfigError, match=r"invalid grace_period=4"):  # its rungs are grace x eta^k too
        HpoSettings(data, algo="hyperband", grace_period=4).validate()
    with pytest.raises(ConfigError, match=r"invalid grace_period=5.*\(a search without early stopping is --algo "
                                          r"random or tpe without --early-stop\)"):
        HpoSettings(data, algo="random", early_stop="asha", grace_period=5).validate()
    HpoSettings(data, algo="asha", grace_period=4, max_epochs=1).validate()  # one epoch: nothing to stop


def test_an_audit_with_the_proxy_deciding_is_refused():
    from asp_tune.tune.settings import HpoSettings

    data = tiny_space()
    with pytest.raises(ConfigError, match=r"invalid audit=3: allowed none or 0 with --decide proxy \(the proxy "
                                          r"picks: nothing is trained on full data\)"):
        HpoSettings(data, decide="proxy", audit=3).validate()
    HpoSettings(data, decide="proxy", audit=0).validate()
    HpoSettings(data, decide="full", audit=3).validate()


def test_a_space_of_grid_parameters_only_runs_each_configuration_once_and_refuses_repeats():
    """Its trials train with the search's one seed: the default 8 repeats of a 2-point grid trained 16 trials that
    scored as 2 did."""
    from asp_tune.tune.settings import HpoSettings

    grid = {**tiny_space(), "params": {"lr": {"type": "grid", "values": [0.01, 0.1]}}}
    settings = HpoSettings(grid, algo="random").validate()
    assert (settings.num_samples, settings.total_trials) == (1, 2)
    assert HpoSettings(grid, algo="random", num_samples=1).validate().total_trials == 2
    with pytest.raises(ConfigError, match=r"invalid num_samples=3: allowed 1 or none for space 'tiny', whose "
                                          r"parameters are all grid: its trials train with the search's one --seed"):
        HpoSettings(grid, algo="asha", num_samples=3).validate()
    mixed = {**tiny_space(), "params": {**grid["params"], "momentum": {"type": "uniform", "low": 0.5, "high": 0.9}}}
    assert HpoSettings(mixed, algo="random").validate().total_trials == 16  # 8 draws of the grid
    assert HpoSettings(mixed, algo="random", num_samples=3).validate().total_trials == 6
    assert HpoSettings(tiny_space()).validate().num_samples == 8


def test_a_misspelled_model_args_key_is_named_before_any_trial():
    from asp_tune.tune.settings import HpoSettings

    data = {**tiny_space(), "params": {"model_args.widht": {"type": "choice", "values": [8, 16]}}}
    with pytest.raises(ConfigError, match=r"invalid model_args=\{'widht': 8\}: allowed arguments a builder .* 'mlp' "
                                          r"cannot be called so \(got an unexpected keyword argument 'widht'\)"):
        HpoSettings(data).validate()
    data["fixed"].pop("model")
    data["params"] = {"model_args.hidden": {"type": "choice", "values": [8, 16]},
                      "model": {"type": "choice", "values": ["mlp", "resnet8"]}}  # resnet8 takes no hidden
    with pytest.raises(ConfigError, match=r"'resnet8' cannot be called so"):
        HpoSettings(data).validate()
