"""Files someone sent you run nothing: a model file or results folder names code, and reading it imports
and calls only what is registered, what this user's own asp_tune signed, or what the user trusts."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from asp_tune import ConfigError, TrainConfig
from asp_tune.cli import main

REPO = Path(__file__).resolve().parents[1]


def crafted_model_file(path: Path, marker: Path, **names) -> Path:
    """A model.pt as someone else could write it: it names ``subprocess:run`` as the builder, with the
    command to run as the "input shape" (what load_model passed to the builder)."""
    state = {"model": {}, "config": TrainConfig(epochs=1).to_dict(), "builder": "subprocess:run", "model_args": {},
             "image_shape": [1, 8, 8], "input_shape": ["touch", str(marker)], "kind": "image",
             "classes": ["a", "b"], "mean": [0.0], "std": [1.0], **names}
    torch.save(state, path)
    return path


def test_a_model_file_naming_code_that_is_not_trusted_is_refused_before_import(tmp_path):
    from asp_tune.trainer import load_model, predict

    marker = tmp_path / "ran"
    crafted = crafted_model_file(tmp_path / "model.pt", marker)
    with pytest.raises(ConfigError, match=r"invalid builder='subprocess:run'.*not signed by you.*--trust-code"):
        load_model(crafted)
    with pytest.raises(ConfigError, match="builder='subprocess:run'"):
        predict(crafted, torch.zeros(1, 1, 8, 8))
    handed = crafted_model_file(tmp_path / "handed.pt", marker, builder=None, **{"class": "os:abort"})
    with pytest.raises(ConfigError, match=r"invalid model class='os:abort'"):
        load_model(handed)  # os.abort() would have killed this process
    assert not marker.exists()
    forged = crafted_model_file(tmp_path / "forged.pt", marker, signature="0" * 64)  # a signature not of this key
    with pytest.raises(ConfigError, match="builder='subprocess:run'"):
        load_model(forged)
    assert not marker.exists()


def test_inspect_of_a_crafted_folder_is_refused_by_name(tmp_path, capsys):
    marker = tmp_path / "ran"
    folder = tmp_path / "sent"
    folder.mkdir()
    crafted_model_file(folder / "model.pt", marker)
    (folder / "summary.json").write_text(json.dumps({"epochs": 1}))
    (folder / "samples.csv").write_text("index,label,times_selected\n0,0,1\n1,1,1\n")
    assert main(["inspect", str(folder), "--out", str(tmp_path / "pictures")]) == 2
    err = capsys.readouterr().err
    assert "builder='subprocess:run'" in err and "Traceback" not in err
    assert not marker.exists() and not (tmp_path / "pictures").exists()


def test_a_signed_model_file_of_your_own_loads_and_an_edited_one_is_refused(tmp_path):
    from asp_tune.build import build_trainer
    from asp_tune.trainer import load_model

    trainer = build_trainer(TrainConfig(dataset="digits", epochs=1, subset=100))
    trainer.fit()
    trainer.save_model(tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    assert isinstance(state["signature"], str)
    load_model(tmp_path / "model.pt")  # registered, and signed
    state["builder"], state["input_shape"] = "subprocess:run", ["touch", str(tmp_path / "ran")]
    torch.save(state, tmp_path / "edited.pt")  # the signature no longer fits what it names
    with pytest.raises(ConfigError, match="builder='subprocess:run'"):
        load_model(tmp_path / "edited.pt")
    assert not (tmp_path / "ran").exists()



def test_a_model_file_s_task_is_its_own_checked_like_its_builder_and_predict_leaves_the_inputs_alone(tmp_path):
    """predict used classification for any task it did not know by name (a regression's softmax: all 1.0)."""
    from asp_tune.build import build_trainer
    from asp_tune.trainer import load_model, predict

    trainer = build_trainer(TrainConfig(dataset="digits", epochs=1, subset=100))
    trainer.fit()
    trainer.save_model(tmp_path / "model.pt")
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    state["config"]["task"], state["task"] = "os:system", "system"  # your signed file, edited to name code
    torch.save(state, tmp_path / "task.pt")  # the signature covers the task: it no longer fits
    with pytest.raises(ConfigError, match=r"invalid task='os:system'.*not signed by you"):
        load_model(tmp_path / "task.pt")
    state["config"]["task"] = "auto"  # a name nothing registers: refused by name, never read as classification
    torch.save(state, tmp_path / "unknown.pt")
    with pytest.raises(ConfigError, match="invalid task='system'"):
        predict(tmp_path / "unknown.pt", trainer.data.test.images[:1])
    images = trainer.data.test.images[:4]
    floats = images.float()
    before = floats.clone()
    with pytest.raises(ConfigError, match=r"invalid inputs='torch.float32 images': allowed uint8 images"):
        predict(tmp_path / "model.pt", floats / 255)
    from asp_tune.feeding import Normalizer

    Normalizer([0.5], [0.25], torch.device("cpu"))(floats)
    assert torch.equal(floats, before)  # it divided the caller's tensor in place
    assert predict(tmp_path / "model.pt", images).shape == (4, 10)


MODULE = '''
import pathlib
pathlib.Path(__file__).with_name("imported").write_text("the module ran")
from torch import nn

def net(input_shape, num_classes):
    return nn.Sequential(nn.Flatten(), nn.Linear(64, num_classes))
'''


@pytest.mark.parametrize("names", [
    {"model": "subprocess:getoutput"},
    {"metric": "builtins:exit"},
    {"dataset": "this:s"},
    {"model": "shipped:net"},  # a module sent beside the summary, imported when run from that folder
])
def test_train_config_of_a_results_folder_someone_sent_runs_nothing(tmp_path, names):
    folder = tmp_path / "sent"
    folder.mkdir()
    (folder / "shipped.py").write_text(MODULE)
    config = {**TrainConfig(epochs=1, subset=100).to_dict(), **names}
    (folder / "summary.json").write_text(json.dumps({"config": config}))
    run = subprocess.run([sys.executable, "-m", "asp_tune", "train", "--config", ".", "--out", str(tmp_path / "out"),
                          "--quiet"], cwd=folder, capture_output=True, text=True, timeout=120)
    (field, value), = names.items()
    assert run.returncode == 2, run.stderr[-2000:]
    assert f"invalid {field}='{value}'" in run.stderr and "not signed by you" in run.stderr
    assert "Traceback" not in run.stderr
    assert not (folder / "imported").exists() and not (tmp_path / "out").exists()


def test_trust_code_lets_a_foreign_file_name_your_own_module(tmp_path):
    folder = tmp_path / "sent"
    folder.mkdir()
    (tmp_path / "mine.py").write_text(MODULE)
    config = {**TrainConfig(epochs=1, subset=100).to_dict(), "model": "mine:net"}
    (folder / "summary.json").write_text(json.dumps({"config": config}))
    command = [sys.executable, "-m", "asp_tune", "train", "--config", str(folder), "--quiet"]
    refused = subprocess.run([*command, "--out", str(tmp_path / "a")], cwd=tmp_path, capture_output=True, text=True,
                             timeout=120)
    assert refused.returncode == 2 and "invalid model='mine:net'" in refused.stderr
    assert not (tmp_path / "imported").exists()
    trusted = subprocess.run([*command, "--trust-code", "mine", "--out", str(tmp_path / "b")], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert trusted.returncode == 0, trusted.stderr[-2000:]
    assert (tmp_path / "imported").exists()
    bad = subprocess.run([*command, "--trust-code", "not a module", "--out", str(tmp_path / "c")], cwd=tmp_path,
                         capture_output=True, text=True, timeout=120)
    assert bad.returncode == 2 and "invalid trust_code='not a module'" in bad.stderr


def test_your_own_results_folder_is_signed_and_an_edited_summary_is_not(tmp_path):
    from asp_tune.run_dir import summary_signed

    out = tmp_path / "run"
    assert main(["train", "--epochs", "1", "--subset", "100", "--quiet", "--out", str(out)]) == 0
    assert summary_signed(out / "summary.json")
    summary = json.loads((out / "summary.json").read_text())
    summary["config"]["model"] = "subprocess:getoutput"
    (out / "summary.json").write_text(json.dumps(summary))
    assert not summary_signed(out / "summary.json")
    assert main(["train", "--config", str(out), "--quiet", "--out", str(tmp_path / "again")]) == 2


def test_a_signed_search_s_module_folders_are_searched_only_while_yours_alone_and_a_pipe_is_refused(tmp_path,
                                                                                                 monkeypatch):
    """`train --config` of a search you ran imports from where the search did (summary.json's search_paths),
    read from the bytes whose signature was checked: a pipe could answer the check and the parse differently."""
    import os

    from asp_tune.cli import config_from_file
    from asp_tune.run_dir import RESULTS_SIGNATURE, SUMMARY, summary_identity, write_marker
    from asp_tune.signatures import sign_payload

    mine, shared, gone = tmp_path / "mine", tmp_path / "shared", tmp_path / "gone"
    mine.mkdir()
    shared.mkdir()
    shared.chmod(0o777)  # another user could put a module there
    folder = tmp_path / "hpo"
    folder.mkdir()
    summary = {"best_config": {"lr": 0.01}, "fixed": {"dataset": "digits", "model": "mlp", "epochs": 2},
               "search_paths": [str(mine), str(shared), str(gone)]}
    (folder / SUMMARY).write_text(json.dumps(summary))
    write_marker(folder, "results", [SUMMARY],
                 summary_signature=sign_payload(RESULTS_SIGNATURE, summary_identity(folder / SUMMARY)))
    monkeypatch.setattr(sys, "path", list(sys.path))
    assert config_from_file(str(folder)).lr == 0.01
    assert str(mine) in sys.path and str(shared) not in sys.path and str(gone) not in sys.path
    sys.path.remove(str(mine))
    (folder / SUMMARY).write_text(json.dumps({**summary, "search_paths": [str(mine)]}))  # edited: no longer signed
    config_from_file(str(folder))
    assert str(mine) not in sys.path
    piped = tmp_path / "piped"
    piped.mkdir()
    os.mkfifo(piped / SUMMARY)
    with pytest.raises(ConfigError, match="allowed a results folder or summary.json"):
        config_from_file(str(piped))


def test_every_setting_that_may_name_code_is_checked_in_a_file_s_config():
    """task was declared as an import path but left out of import_fields: train --config of another's folder
    imported the task it named, and an edited signed model file kept its signature."""
    import dataclasses

    from asp_tune.config import check_file_config, import_fields

    naming_code = {f.name for f in dataclasses.fields(TrainConfig) if f.metadata.get("imports")}
    assert naming_code <= set(import_fields())
    with pytest.raises(ConfigError, match=r"invalid task='os:system'.*not signed by you"):
        check_file_config({"task": "os:system"}, (), "results file x (not signed by you)")
