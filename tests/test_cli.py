import json
import os
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

from asp_tune.cli import main


def run_cli(*args):
    return main([str(a) for a in args])


def test_train_end_to_end_on_digits(tmp_path, capsys):
    out = tmp_path / "run"
    code = run_cli("train", "--epochs", 5, "--ratio", 0.3, "--ratio-schedule", "dynamic",
                   "--metric", "mixture", "--out", out, "--quiet")
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    for key in ("final_val_accuracy", "final_test_accuracy", "epochs", "samples_seen", "data_passes",
                "wall_time_s", "config"):
        assert key in summary
    assert summary["epochs"] == 5 and summary["config"]["metric"] == "mixture"
    epochs = pd.read_csv(out / "epochs.csv")
    assert list(epochs["epoch"]) == [1, 2, 3, 4, 5]
    assert {"ratio", "selected", "metric_used", "train_loss", "train_accuracy", "val_accuracy",
            "epoch_seconds", "samples_seen", "data_passes"} <= set(epochs.columns)
    assert epochs["samples_seen"].iloc[-1] == summary["samples_seen"]
    assert (out / "training.png").stat().st_size > 10_000
    assert not list(tmp_path.glob(".*partial*"))
    assert "test" in capsys.readouterr().out


def test_existing_results_are_not_overwritten(tmp_path, capsys):
    out = tmp_path / "run"
    assert run_cli("train", "--epochs", 1, "--out", out, "--quiet") == 0
    before = (out / "summary.json").read_text()
    assert run_cli("train", "--epochs", 1, "--out", out, "--quiet") == 2
    assert "pass --overwrite" in capsys.readouterr().err
    assert (out / "summary.json").read_text() == before
    assert run_cli("train", "--epochs", 2, "--out", out, "--quiet", "--overwrite") == 0
    assert json.loads((out / "summary.json").read_text())["epochs"] == 2


def test_a_download_without_the_internet_is_one_named_error_and_no_results(tmp_path, capsys, monkeypatch):
    """It was a 77-line traceback ending in urllib's URLError, exit status 1."""
    import urllib.error

    import torchvision

    def offline(self, *args, **kwargs):
        raise urllib.error.URLError(OSError(-2, "Name or service not known"))

    monkeypatch.setattr(torchvision.datasets.CIFAR10, "download", offline)
    out = tmp_path / "run"
    args = ("train", "--dataset", "cifar10", "--download", "true", "--data-dir", tmp_path / "cifar", "--epochs", 1)
    assert run_cli(*args, "--out", out, "--quiet") == 2
    err = capsys.readouterr().err
    assert err.count("error:") == 1 and "Traceback" not in err
    assert "cifar10 could not be downloaded into" in err and "Name or service not known" in err
    assert "without the internet, give --data-dir (a space's data_dir) with an image-folder tree" in err
    assert not out.exists()
    assert run_cli("train", "--dataset", "cifar10", "--data-dir", tmp_path, "--epochs", 1, "--out", out) == 2
    assert "set download to true to fetch it (train's --download true; a space's fixed download: true)" in \
        capsys.readouterr().err


@pytest.mark.parametrize("args,message", [
    (["--ratio", "0"], "invalid ratio=0.0: allowed a number in (0.0, 1.0]"),
    (["--ratio", "1.2"], "invalid ratio=1.2"),
    (["--metric", "hardness"], "invalid metric='hardness': allowed one of 'random', 'loss', 'entropy'"),
    (["--mixture-order", "g0123"], "invalid mixture_order='g0123'"),
    (["--ratio-schedule", "linear"], "invalid ratio_schedule='linear': allowed one of 'constant', 'dynamic'"),
    (["--model", "vgg16"], "invalid model='vgg16'"),
    (["--dataset", "svhn"], "invalid dataset='svhn'"),
    (["--dataset", "image_folder", "--data-dir", "/no/such/dir"], "does not exist"),
    (["--dataset", "cifar10", "--data-dir", "/tmp"], "cifar10 not found under '/tmp'"),
    (["--metric", "none", "--ratio", "0.5"], "'none' only with ratio 1.0"),
    (["--seed", "18446744073709551616"], "invalid seed=18446744073709551616: allowed an integer in [0, "),
    (["--lr", "0.01", "--lr-min", "0.1"], "invalid lr_min=0.1: allowed a number in [0, lr=0.01]"),
    (["--val-fraction", "0.0001"], "invalid val_fraction=0.0001: allowed a fraction that holds out at least one"),
    (["--batch-size", "1"], "invalid batch_size=1: allowed at least 2 for a network with batch norm"),
    (["--top10-mass", "0.05"], "invalid top10_mass=0.05: allowed a number in [0.1, 1.0)"),
    (["--data-dir", "/tmp"], "invalid data_dir='/tmp': allowed none: 'digits' takes no folder"),
    (["--model", "nowhere:net"], "invalid model='nowhere:net': allowed an importable"),
    (["--dataset", "digits", "--flip-p", "2"], "invalid flip_p=2.0"),
    (["--num-workers", "2"], "invalid num_workers=2: allowed 0 with storage 'device'"),
    (["--model-args", '{"hidden": 1000000}'], "invalid model_args={'hidden': 1000000}: allowed a network that fits "
                                              "in memory: its 1,000,080 M parameters need at least"),
])
def test_bad_input_gives_one_clear_error_and_no_results(tmp_path, capsys, args, message):
    out = tmp_path / "run"
    assert run_cli("train", "--epochs", 1, "--out", out, "--quiet", *args) == 2
    err = capsys.readouterr().err
    assert message in err
    assert err.count("error:") == 1
    assert not out.exists()
    assert list(tmp_path.iterdir()) == []


def test_console_script_help_lists_train():
    res = subprocess.run([sys.executable, "-m", "asp_tune.cli", "train", "--help"], capture_output=True, text=True)
    assert res.returncode == 0 and "--ratio-schedule" in res.stdout and "--mixture-order" in res.stdout


@pytest.mark.parametrize("args,message", [
    (["--ratios", "0.5,0.5"], "invalid ratios=(0.5, 0.5): allowed distinct ratios"),
    (["--ratios", "0.5", "--metrics", "random,random"], "invalid metrics='random,random': allowed distinct metrics"),
    (["--max-configs", "2"], "invalid max_configs=2: allowed an integer >= 3"),  # 2 ran to all-NaN correlations
])
def test_correlate_refuses_repeated_cells_by_name(tmp_path, capsys, args, message):
    from pathlib import Path

    space = Path(__file__).resolve().parents[1] / "search_spaces" / "table5_grid.yaml"
    assert run_cli("correlate", "--space", space, "--out", tmp_path / "c", *args) == 2
    err = capsys.readouterr().err
    assert message in err and err.count("error:") == 1 and not (tmp_path / "c").exists()


def test_compare_with_only_the_full_data_ratio_is_refused_by_name(tmp_path, capsys):
    from pathlib import Path

    space = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml"
    assert run_cli("compare", "--space", space, "--ratios", "1.0", "--out", tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert "invalid ratios=" in err and "at least one proxy ratio below 1.0" in err
    assert not (tmp_path / "c").exists()


@pytest.mark.skipif(not os.path.isdir("/proc/self"), reason="needs Linux's /proc")
@pytest.mark.parametrize("command", [["train", "--epochs", "1"],
                                     ["hpo", "--space", str(Path(__file__).resolve().parents[1] / "search_spaces" /
                                                            "digits_mlp.yaml")]])
def test_an_output_where_nothing_can_be_created_is_one_named_error(capsys, command):
    # /proc allows root to write by its mode bits, yet nothing can be created there
    assert run_cli(*command, "--out", "/proc/asp-tune-x/run") == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "invalid out='/proc/asp-tune-x/run'" in err[0] and "Traceback" not in err[0]


def test_correlate_refuses_a_grid_too_small_to_rank_before_the_folder_opens(tmp_path, capsys):
    import yaml

    space = tmp_path / "two.yaml"
    space.write_text(yaml.safe_dump({"name": "two", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 2},
                                     "params": {"lr": {"type": "grid", "values": [0.01, 0.1]}}}))
    assert run_cli("correlate", "--space", space, "--out", tmp_path / "c") == 2
    err = capsys.readouterr().err
    assert "invalid space='2 configurations': allowed a grid of at least 3 configurations" in err
    assert not (tmp_path / "c").exists()


def test_the_demo_with_packs_says_it_is_no_longer_the_same_every_time(tmp_path, capsys, monkeypatch):
    import asp_tune.tune.cli as tune_cli

    def stop(args):
        raise SystemExit(7)  # before any search: what was said up to here is what is tested

    monkeypatch.setattr(tune_cli, "results_folder", stop)
    for pack, said in (("4", True), ("1", False)):
        with pytest.raises(SystemExit):
            run_cli("demo", "--pack", pack, "--out", tmp_path / "d")
        err = capsys.readouterr().err
        assert ("--pack 4: a pack's trials run at once" in err) is said


def test_train_config_from_a_comparison_takes_the_pick_that_retrained_best_by_the_score_s_mode():
    """It read retrained_test_mean, a column summary.json no longer keeps: the first row (full data's) always won."""
    from asp_tune.cli import best_retrained

    rows = [{"ratio": 1.0, "best_config": {"lr": 0.01}, "retrained_mean": 0.90},
            {"ratio": 0.3, "best_config": {"lr": 0.03}, "retrained_mean": 0.95},
            {"ratio": 0.3, "arm": "control", "best_config": {"lr": 0.1}, "retrained_mean": float("nan")}]
    assert best_retrained({"rows": rows, "runs": {"1.0": {"mode": "max"}}})["best_config"] == {"lr": 0.03}
    assert best_retrained({"rows": rows, "runs": {"1.0": {"mode": "min"}}})["best_config"] == {"lr": 0.01}  # a loss
    old = [{"ratio": 1.0, "best_config": {"lr": 0.01}, "retrained_test_mean": 0.9},
           {"ratio": 0.3, "best_config": {"lr": 0.03}, "retrained_test_mean": 0.95}]
    assert best_retrained({"rows": old})["best_config"] == {"lr": 0.03}  # a folder written before


def test_train_records_its_data_folder_as_found_from_anywhere_and_checks_trust_code_always(tmp_path, monkeypatch,
                                                                                         capsys):
    import numpy as np
    from PIL import Image

    for split, n in (("train", 8), ("test", 2)):
        for c in ("a", "b"):
            (tmp_path / "tree" / split / c).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(np.full((8, 8, 3), 100 * (c == "b"), np.uint8)).save(tmp_path / "tree" / split / c / f"{i}.png")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("ASP_TUNE_CACHE", str(tmp_path / "cache"))
    assert run_cli("train", "--dataset", "image_folder", "--data-dir", "tree", "--epochs", "1", "--quiet",
                   "--out", "run") == 0
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["config"]["data_dir"] == str(tmp_path / "tree")  # it was 'tree': --config from elsewhere failed
    for i in range(4):  # the data changed since: inspect's pictures would mislabel it (or an IndexError)
        Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "tree" / "train" / "a" / f"new{i}.png")
    assert run_cli("inspect", "run", "--out", "pictures") == 2
    assert "a run whose data is still what it trained on" in capsys.readouterr().err
    assert run_cli("train", "--trust-code", "1bad", "--epochs", "1", "--quiet", "--out", "other") == 2
    assert "invalid trust_code='1bad'" in capsys.readouterr().err and not (tmp_path / "other").exists()
