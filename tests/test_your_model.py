"""A newcomer's own network and data, defined only in a temporary folder: import paths in a YAML space
and on the command line, registrations in the driver, model files that reload as the user's class."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch
import yaml

from asp_tune import ConfigError, TrainConfig
from asp_tune.errors import AspTuneError

MODULE = textwrap.dedent('''
    import numpy as np
    from torch import nn


    class TinyCNN(nn.Module):
        def __init__(self, channels, num_classes, width=8):
            super().__init__()
            self.features = nn.Sequential(nn.Conv2d(channels, width, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(2))
            self.head = nn.Linear(4 * width, num_classes)

        def forward(self, x):
            return self.head(self.features(x).flatten(1))


    def tiny_cnn(input_shape, num_classes, width=8):
        return TinyCNN(input_shape[0], num_classes, width)


    def shapes(seed=0):
        """12x12 grey images: a bright square in one of four quadrants (the label)."""
        rng = np.random.default_rng(123)
        y = rng.integers(0, 4, 480)
        x = rng.integers(0, 60, (480, 1, 12, 12)).astype(np.uint8)
        for i, q in enumerate(y):
            r, c = divmod(int(q), 2)
            x[i, 0, r * 6 + 1:r * 6 + 5, c * 6 + 1:c * 6 + 5] = 220
        return x, y


    def tabular(data_dir=None, seed=0):
        rng = np.random.default_rng(seed)
        x = rng.normal(size=(300, 5)).astype(np.float32)
        return {"train": (x, (x[:, 0] > 0).astype(np.int64)), "classes": ["neg", "pos"]}
''')

SPACE = {"name": "mine", "fixed": {"model": "my_models:tiny_cnn", "dataset": "my_models:shapes", "epochs": 3,
                                   "batch_size": 32, "lr": 0.05},
         "params": {"model_args": {"width": {"type": "grid", "values": [4, 8]}},
                    "optimizer": {"type": "grid", "values": ["sgd", "adamw"]}}}


@pytest.fixture()
def user_folder(tmp_path, monkeypatch):
    """A folder holding only the user's module, importable here (as from the folder a command runs in)."""
    folder = tmp_path / "project"
    folder.mkdir()
    (folder / "my_models.py").write_text(MODULE)
    monkeypatch.syspath_prepend(str(folder))
    yield folder
    sys.modules.pop("my_models", None)


def run_cli(folder: Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    return subprocess.run([sys.executable, "-m", "asp_tune", *args], cwd=folder, capture_output=True, text=True,
                          env=env, timeout=600)


def test_import_paths_are_accepted_and_bad_ones_are_named(user_folder):
    config = TrainConfig(model="my_models:tiny_cnn", dataset="my_models:shapes", model_args={"width": 4}).validate()
    assert config.model == "my_models:tiny_cnn"
    with pytest.raises(ConfigError, match=r"invalid model='nowhere:net': allowed an importable .*ModuleNotFound"):
        TrainConfig(model="nowhere:net").validate()
    with pytest.raises(ConfigError, match=r"invalid model='resnet99': allowed one of 'mlp', .* or an import path"):
        TrainConfig(model="resnet99").validate()


def test_a_loader_may_return_a_mapping_and_the_data_is_split_as_for_built_in_sets(user_folder):
    from asp_tune.build import build_trainer

    trainer = build_trainer(TrainConfig(dataset="my_models:tabular", epochs=2, ratio=0.5))
    data = trainer.data
    assert data.kind == "features" and data.classes == ["neg", "pos"]
    assert len(data.train) + len(data.val) + len(data.test) == 300 and len(data.test) == 60  # 20% held out
    trainer.fit()


def test_a_space_searches_model_args_and_the_optimiser(user_folder):
    from asp_tune.tune.space import parse_space

    space = parse_space(SPACE)
    assert [p.name for p in space.params] == ["model_args.width", "optimizer"]
    config = space.train_config({"model_args.width": 8, "optimizer": "adamw"})
    assert config.model_args == {"width": 8} and config.optimizer == "adamw"
    from asp_tune.build import build_trainer

    trainer = build_trainer(config)
    assert isinstance(trainer.optimizer, torch.optim.AdamW) and trainer.model.head.in_features == 32
    with pytest.raises(ConfigError, match=r"invalid params.optimizer='rmsprop'"):
        parse_space({**SPACE, "params": {"optimizer": {"type": "grid", "values": ["sgd", "rmsprop"]}}})
    with pytest.raises(ConfigError, match="model_args"):
        build_trainer(config.replace(model_args={"depth": 3}))  # the builder takes no such argument


@pytest.mark.slow
def test_hpo_compare_train_config_and_load_model_with_a_module_only_in_a_temporary_folder(user_folder, tmp_path,
                                                                                            monkeypatch, command_here):
    (user_folder / "s.yaml").write_text(yaml.safe_dump(SPACE))
    run = run_cli(user_folder, "hpo", "--space", "s.yaml", "--algo", "random", "--num-samples", "1",
                  "--ratio", "0.5", "--out", "hpo", "--storage-path", "ray", "--verbose", "0", "--decide", "proxy")
    assert run.returncode == 0, run.stderr[-3000:]
    summary = json.loads((user_folder / "hpo" / "summary.json").read_text())
    assert summary["num_trials"] == 4 and summary["num_failed"] == 0  # every trial imported the user's module
    elsewhere = tmp_path / "elsewhere"  # the search's own folders are where its model is found
    elsewhere.mkdir()
    run = run_cli(elsewhere, "train", "--config", str(user_folder / "hpo"), "--out", str(user_folder / "best"),
                  "--quiet")
    assert run.returncode == 0, run.stderr[-3000:]
    trained = json.loads((user_folder / "best" / "summary.json").read_text())
    assert trained["search_paths"] == [str(user_folder.resolve())]  # where its model was imported from
    run = run_cli(elsewhere, "inspect", str(user_folder / "best"), "--out", str(elsewhere / "pictures"))
    assert run.returncode == 0, run.stderr[-3000:]  # "No module named 'my_models'" from another folder
    best = summary["best_config"]
    assert trained["config"]["model_args"] == {"width": best["model_args.width"]}
    assert trained["config"]["optimizer"] == best["optimizer"]
    monkeypatch.chdir(user_folder)  # compare in this process (hpo's processes imported the module already)
    run = command_here("compare", "--space", "s.yaml", "--algo", "random", "--ratios", "1.0,0.5", "--num-samples",
                       "1", "--out", "cmp", "--storage-path", "ray", "--verbose", "0", "--control", "false")
    assert run.returncode == 0, run.stderr[-3000:]
    assert (user_folder / "cmp" / "report.md").is_file()

    from asp_tune.datasets import load_dataset
    from asp_tune.trainer import load_model, predict

    model, config, info = load_model(user_folder / "best" / "model.pt")
    import my_models

    assert type(model) is my_models.TinyCNN and info["input_shape"] == [1, 12, 12]
    test = load_dataset("my_models:shapes", val_fraction=config.val_fraction, seed=config.seed).test
    accuracy = float((predict(user_folder / "best" / "model.pt", test.images).argmax(1) == test.labels)
                     .float().mean())
    assert accuracy == pytest.approx(trained["final_test_accuracy"])  # predicts as it did after training


def test_a_worker_imports_the_driver_s_module_not_a_namesake_in_the_folder_it_runs_in(tmp_path, monkeypatch):
    """A Ray worker's first ``sys.path`` entry is the folder the command runs in: a ``my_models.py`` there was
    imported by every trial in place of the one beside the space, which the driver had checked."""
    from asp_tune.imports import add_search_paths, import_object

    beside_space, here = tmp_path / "project", tmp_path / "here"
    for folder in (beside_space, here):
        folder.mkdir()
        (folder / "my_models.py").write_text(f"WHERE = {folder.name!r}\n")
    monkeypatch.chdir(here)
    monkeypatch.setattr(sys, "path", [str(here), *(p for p in sys.path if p not in ("", os.getcwd()))])
    monkeypatch.delitem(sys.modules, "my_models", raising=False)
    try:
        add_search_paths([str(beside_space)])  # what a trial does with the driver's folders
        assert import_object("my_models:WHERE") == "project"
        assert sys.path.index(str(beside_space)) < sys.path.index(str(here))
    finally:
        sys.modules.pop("my_models", None)


def test_a_model_file_whose_class_cannot_be_imported_is_a_named_error(user_folder, tmp_path):
    from asp_tune.build import build_trainer
    from asp_tune.trainer import load_model

    trainer = build_trainer(TrainConfig(model="my_models:tiny_cnn", dataset="my_models:shapes", epochs=1))
    trainer.fit()
    trainer.save_model(tmp_path / "model.pt")
    sys.modules.pop("my_models")
    sys.path.remove(str(user_folder))
    with pytest.raises(AspTuneError, match=r"written by builder 'my_models:tiny_cnn', which cannot be used here"):
        load_model(tmp_path / "model.pt")
    # a network handed to the trainer is recorded by its class: rebuilt without arguments (an empty
    # Sequential here, which the weights do not fit: a named error), or loaded into one the caller passes
    from torch import nn

    handed = build_trainer(TrainConfig(dataset="digits", epochs=1, subset=100),
                           model=nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    handed.save_model(tmp_path / "handed.pt")
    with pytest.raises(AspTuneError, match="do not fit this network"):
        load_model(tmp_path / "handed.pt")
    loaded, _, _ = load_model(tmp_path / "handed.pt", model=nn.Sequential(nn.Flatten(), nn.Linear(64, 10)))
    assert torch.equal(loaded[1].weight, handed.model[1].weight.cpu())


SCRIPT = textwrap.dedent('''
    import json, sys
    import numpy as np
    from torch import nn
    from asp_tune import DATASETS, MODELS
    from asp_tune.tune.builtin import run_hpo
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space

    def stripes(seed=0):  # defined in __main__: it reaches the workers by value
        rng = np.random.default_rng(0)
        y = rng.integers(0, 2, 300)
        x = (rng.random((300, 1, 8, 8)) * 50).astype(np.uint8)
        x[y == 1, :, ::2, :] = 200
        return x, y

    def flat_net(input_shape, num_classes, hidden=16):
        return nn.Sequential(nn.Flatten(), nn.Linear(int(np.prod(input_shape)), hidden), nn.ReLU(),
                             nn.Linear(hidden, num_classes))

    MODELS.register("flat_net", flat_net)
    DATASETS.register("stripes", stripes)
    space = parse_space({"name": "reg", "fixed": {"model": "flat_net", "dataset": "stripes", "epochs": 2},
                         "params": {"lr": {"type": "grid", "values": [0.05, 0.1]}}})
    result = run_hpo(HpoSettings(space=space, algo="random", num_samples=1, storage_path=sys.argv[1], verbose=0,
                                 decide="proxy"))
    print(json.dumps({"failed": result.summary["num_failed"], "trials": result.summary["num_trials"]}))
''')


@pytest.mark.slow
def test_registrations_made_in_the_driver_reach_every_ray_worker(tmp_path):
    (tmp_path / "driver.py").write_text(SCRIPT)
    run = subprocess.run([sys.executable, str(tmp_path / "driver.py"), str(tmp_path / "ray")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-3000:]
    assert json.loads(run.stdout.strip().splitlines()[-1]) == {"failed": 0, "trials": 2}


@pytest.mark.slow
def test_import_paths_reach_the_workers_of_a_local_multi_node_cluster(user_folder, tmp_path, local_cluster):
    from asp_tune.tune.builtin import run_hpo
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space

    cluster = local_cluster({"num_cpus": 0}, workers=2)
    space = parse_space({**SPACE, "params": {"model_args": {"width": {"type": "grid", "values": [4, 6, 8, 10]}}}})
    result = run_hpo(HpoSettings(space=space, algo="random", max_concurrent=2,
                                 address=cluster.address, storage_path=str(tmp_path / "ray"), verbose=0,
                                 decide="proxy"))
    assert result.summary["num_failed"] == 0 and result.summary["num_trials"] == 4
    assert len(set(result.trials["node_id"])) == 2  # both worker nodes imported the module sent to them


def test_silent_traps_are_named_errors(tmp_path):
    from asp_tune.cli import main

    code = main(["train", "--data-dir", str(tmp_path), "--epochs", "1", "--out", str(tmp_path / "o")])
    assert code == 2 and not (tmp_path / "o").exists()
    from asp_tune.datasets import load_dataset

    with pytest.raises(ConfigError, match=r"invalid data_dir=.*: allowed none: 'digits' takes no folder"):
        load_dataset("digits", str(tmp_path))


def test_installed_packages_register_through_entry_points(tmp_path, monkeypatch):
    """A package that declares [project.entry-points."asp_tune.models"] is found without any call."""
    site = tmp_path / "site"
    (site / "plugin_nets").mkdir(parents=True)
    (site / "plugin_nets" / "__init__.py").write_text(
        "from torch import nn\n\ndef wide(input_shape, num_classes):\n"
        "    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))\n")
    info = site / "plugin_nets-1.0.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: plugin-nets\nVersion: 1.0\n")
    (info / "entry_points.txt").write_text("[asp_tune.models]\nplugin_wide = plugin_nets:wide\n")
    monkeypatch.syspath_prepend(str(site))
    from asp_tune.registry import MODELS

    MODELS.rescan()
    try:
        assert "plugin_wide" in MODELS and "plugin_wide" not in MODELS.added()  # installed, not shipped
        from asp_tune.build import build_trainer

        trainer = build_trainer(TrainConfig(model="plugin_wide", epochs=1, subset=100))
        assert trainer.model[1].in_features == 64
    finally:
        monkeypatch.undo()
        MODELS.unregister("plugin_wide")
        sys.modules.pop("plugin_nets", None)
