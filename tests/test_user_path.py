"""A user's path: bad input named before work, search results that become a trained model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from asp_tune import load_dataset
from asp_tune.cli import main
from asp_tune.trainer import load_model

TINY = ["--epochs", "2", "--subset", "300", "--quiet"]


def test_train_writes_a_model_that_reloads_into_the_same_accuracy(tmp_path):
    out = tmp_path / "run"
    assert main(["train", *TINY, "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    model, config, info = load_model(out / "model.pt")
    assert config.to_dict() == summary["config"] and info["image_shape"] == [1, 8, 8]
    data = load_dataset("digits", subset=300, seed=config.seed)
    x = data.test.images.float().div(255)
    mean, std = torch.tensor(info["mean"]).view(1, -1, 1, 1), torch.tensor(info["std"]).view(1, -1, 1, 1)
    with torch.no_grad():
        predicted = model((x - mean) / std).argmax(1)
    accuracy = float((predicted == data.test.labels).float().mean())
    assert round(accuracy * len(data.test)) == round(summary["final_test_accuracy"] * len(data.test))


def test_train_config_from_a_train_run_and_from_an_hpo_summary(tmp_path, capsys):
    first = tmp_path / "first"
    assert main(["train", *TINY, "--lr", "0.05", "--out", str(first)]) == 0
    again = tmp_path / "again"
    assert main(["train", "--config", str(first), "--epochs", "1", "--quiet", "--out", str(again)]) == 0
    cfg = json.loads((again / "summary.json").read_text())["config"]
    assert cfg["lr"] == 0.05 and cfg["subset"] == 300 and cfg["epochs"] == 1  # the flag overrides
    hpo = tmp_path / "hpo"
    hpo.mkdir()
    (hpo / "summary.json").write_text(json.dumps({
        "best_config": {"lr": 0.2, "momentum": 0.5}, "fixed": {"dataset": "digits", "epochs": 1, "subset": 200},
        "ratio": 0.3, "metric": "mixture"}))
    best = tmp_path / "best"
    assert main(["train", "--config", str(hpo / "summary.json"), "--quiet", "--out", str(best)]) == 0
    cfg = json.loads((best / "summary.json").read_text())["config"]
    assert (cfg["lr"], cfg["momentum"], cfg["subset"], cfg["ratio"], cfg["metric"]) == (0.2, 0.5, 200, 1.0, "none")
    assert main(["train", "--config", str(tmp_path / "nothing"), "--out", str(tmp_path / "x")]) == 2
    assert "invalid config=" in capsys.readouterr().err


@pytest.mark.parametrize("argv, message", [
    (["train", *TINY, "--crop-padding", "100"], "invalid crop_padding=100: allowed at most 8 for 8x8 images"),
    (["train", *TINY, "--cutout", "1000"], "invalid cutout=1000"),
    (["train", "--subset", "100000", "--quiet"], "invalid subset=100000: allowed at most 1438"),
    (["nas", *TINY, "--population", "1", "--parents", "5"], "invalid parents=5: allowed at most the population (1)"),
    (["nas", *TINY, "--cpus-per-search", "0"], "invalid cpus_per_search=0.0"),
    (["nas", *TINY, "--gpus-per-search", "-1"], "invalid gpus_per_search=-1.0"),
    (["nas", *TINY, "--score-samples", "4"], "invalid score_samples=4"),
    (["correlate", "--space", "SPACE", "--max-configs", "0"], "invalid max_configs=0"),
    (["correlate", "--space", "SPACE", "--max-concurrent", "0"], "invalid max_concurrent=0"),
    (["correlate", "--space", "SPACE", "--metrics", ","], "invalid metrics=','"),
    (["compare", "--space", "SPACE", "--ratios", ""], "invalid ratios=()"),
    (["compare", "--space", "SPACE", "--seeds", "1,1"], "invalid seeds=[1, 1]: allowed distinct integers >= 0"),
    (["compare", "--space", "SPACE", "--seeds", "0,1", "--seed", "3"],
     "invalid seed=3: allowed left out beside --seeds 0,1 (which names every seed)"),
    (["compare", "--space", "SPACE", "--seeds", "1,2", "--seed", "0"],  # the default's value, given: was ignored
     "invalid seed=0: allowed left out beside --seeds 1,2 (which names every seed)"),
    # refused after the whole full-data search had run: each ratio's settings are checked before any search
    (["compare", "--space", "SPACE", "--strategy", "none", "--ratios", "1.0,0.3"],
     "invalid metric='none': allowed 'none' only with ratio 1.0"),
    (["hpo", "--space", "SPACE", "--device", "cuda"], "invalid device='cuda'"),
    (["nas-retrain", "--genotype", "GARBAGE", *TINY], "invalid genotype="),
])
def test_bad_input_is_one_named_error_before_any_folder(tmp_path, capsys, argv, message):
    if torch.cuda.is_available() and "cuda" in argv:
        pytest.skip("this machine has a GPU")
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml"
    garbage = tmp_path / "genotype.bin"
    garbage.write_bytes(bytes(range(256)))
    argv = [str(space) if a == "SPACE" else str(garbage) if a == "GARBAGE" else a for a in argv]
    out = tmp_path / "out"
    assert main([*argv, "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and "Traceback" not in err
    assert not out.exists() and not list(tmp_path.glob(".out*"))


def test_a_relative_data_dir_in_a_yaml_is_relative_to_the_yaml(tmp_path, monkeypatch):
    from asp_tune.tune.space import load_space

    folder = tmp_path / "spaces"
    folder.mkdir()
    (folder / "s.yaml").write_text("fixed: {dataset: image_folder, data_dir: ../data}\n"
                                   "params:\n  lr: {type: uniform, low: 0.01, high: 0.1}\n")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    assert load_space(folder / "s.yaml").fixed["data_dir"] == str((tmp_path / "data").resolve())
    shipped = load_space(Path(__file__).resolve().parents[1] / "search_spaces" / "resnet8_cifar10_cpu.yaml")
    assert shipped.fixed["data_dir"].endswith("shared/data/cifar10-jpg.tar.gz")
    assert Path(shipped.fixed["data_dir"]).parent.parent.resolve() == (Path(__file__).resolve().parents[2] / "shared").resolve()


def test_a_short_dynamic_run_reports_its_effective_fraction(tmp_path, capsys):
    out = tmp_path / "run"
    assert main(["train", "--epochs", "4", "--ratio", "0.1", "--ratio-schedule", "dynamic", "--metric", "loss",
                 "--quiet", "--out", str(out)]) == 0
    captured = capsys.readouterr()
    summary = json.loads((out / "summary.json").read_text())
    assert summary["data_fraction"] == pytest.approx(summary["data_passes"] / 4)
    assert summary["data_fraction"] > 0.25  # the full first epoch dominates a 4-epoch run
    assert "note: this run trained on" in captured.err and f"fraction {summary['data_fraction']:.3f}" in captured.out


def test_a_genotype_whose_concat_lists_missing_nodes_is_a_named_error():
    from asp_tune.errors import ConfigError
    from nas.genotypes import KNOWN_GENOTYPES, Genotype

    g = KNOWN_GENOTYPES["darts_v2"].to_dict()
    with pytest.raises(ConfigError, match=r"genotype.normal_concat=\[2, 3, 9\]"):
        Genotype.from_dict({**g, "normal_concat": [2, 3, 9]})


def test_every_choice_of_a_space_is_checked_before_any_trial(tmp_path, capsys):
    space = tmp_path / "s.yaml"
    space.write_text("fixed: {dataset: digits}\nparams:\n  lr: {type: choice, values: [0.1, -5, 0.2]}\n")
    assert main(["hpo", "--space", str(space), "--out", str(tmp_path / "out")]) == 2
    assert "invalid params.lr=-5" in capsys.readouterr().err and not (tmp_path / "out").exists()
