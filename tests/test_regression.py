"""Regression through every command: a user's loader returning float targets trains, searches and compares,
reports R², and its model file predicts values; a task of the user's own plugs in the same way."""

from __future__ import annotations

import json
import sys
import textwrap

import pytest
import torch

from asp_tune import ConfigError
from asp_tune.tasks import CLASSIFICATION, REGRESSION, task_for

MODULE = textwrap.dedent('''
    import numpy as np
    import torch


    def linear(seed=0):
        """y = x . w + noise: 600 samples of 8 features."""
        rng = np.random.default_rng(0)
        x = rng.normal(size=(600, 8)).astype(np.float32)
        return x, (x @ np.linspace(-1, 1, 8) + 0.1 * rng.normal(size=600)).astype(np.float32)


    class AbsoluteError:
        """A task of the user's own: mean absolute error, scored as minus the mean absolute error."""

        name, score_name, has_classes = "absolute", "neg_mae", False

        def check_targets(self, targets, where):
            pass

        def loss(self, outputs, targets, label_smoothing=0.0):
            return (outputs.float().reshape(targets.shape[0], -1) - targets.float().reshape(targets.shape[0], -1)
                    ).abs().mean(dim=1)

        def batch_sums(self, outputs, targets):
            return torch.stack([self.loss(outputs, targets).sum().double()])

        def finish(self, sums, count):
            return -float(sums[0]) / count, float(sums[0]) / count

        def predict(self, outputs):
            return outputs.float()

        def constant_score(self, train_targets, targets):
            return -float((targets - train_targets.float().mean()).abs().mean())


    ABSOLUTE = AbsoluteError()
''')


@pytest.fixture()
def folder(tmp_path, monkeypatch):
    """The user's folder, holding their module, as the folder the commands run in (in this process, by
    ``command_here``: tests/test_your_model.py runs them in processes of their own)."""
    (tmp_path / "my_reg.py").write_text(MODULE)
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    monkeypatch.delitem(sys.modules, "my_reg", raising=False)
    yield tmp_path
    sys.modules.pop("my_reg", None)


def test_the_task_decides_loss_score_and_the_constant_predictor():
    y = torch.tensor([0, 0, 0, 1])
    assert task_for("auto", y) is CLASSIFICATION and task_for("auto", y.float()) is REGRESSION
    assert CLASSIFICATION.constant_score(y, y) == 0.75  # always the majority class
    values = torch.tensor([1.0, 2.0, 3.0, 4.0])
    assert REGRESSION.constant_score(values, values) == pytest.approx(0.0)  # the training mean: R² 0
    perfect = REGRESSION.finish(REGRESSION.batch_sums(values[:, None], values), 4)
    assert perfect == (pytest.approx(1.0), 0.0)
    # R² summed over batches equals R² of the whole
    halves = REGRESSION.batch_sums(values[:2] + 0.5, values[:2]) + REGRESSION.batch_sums(values[2:], values[2:])
    assert REGRESSION.finish(halves, 4)[0] == pytest.approx(1 - 0.5 / 5.0)
    with pytest.raises(ConfigError, match="invalid task='classification'.*float32"):
        task_for("classification", values)
    with pytest.raises(ConfigError, match="finite targets"):
        task_for("regression", torch.tensor([1.0, float("nan")]))


def _predicted_r2(folder, run: str) -> float:
    """R² of the predictions of ``folder/run/model.pt`` on the loader's data, its module importable meanwhile."""
    sys.path.insert(0, str(folder))
    try:
        from asp_tune.trainer import predict
        from my_reg import linear

        x, y = linear()
        values = predict(folder / run / "model.pt", x).squeeze(1).numpy()
    finally:
        sys.path.remove(str(folder))
        sys.modules.pop("my_reg", None)
    return float(1 - ((values - y) ** 2).sum() / ((y - y.mean()) ** 2).sum())


def test_train_a_regression_loader_reports_r2_and_its_model_file_predicts_values(folder, command_here):
    run = command_here("train", "--dataset", "my_reg:linear", "--epochs", "30", "--lr", "0.01", "--batch-size",
                       "32", "--ratio", "0.5", "--quiet", "--out", "out")
    assert run.returncode == 0, run.stderr[-2000:]
    assert "test R²" in run.stdout and "1 regression target" in run.stderr
    summary = json.loads((folder / "out" / "summary.json").read_text())
    assert summary["task"] == "regression" and summary["final_test_r2"] > 0.9
    assert abs(summary["constant_test_score"]) < 0.1  # the mean predicts nothing
    assert summary["config"]["metric"] == "auto" and summary["data_fraction"] < 0.6  # a proxy: loss-only strategy
    assert _predicted_r2(folder, "out") > 0.9


def test_a_task_of_your_own_by_import_path_and_strategies_that_need_classes_are_refused(folder, command_here):
    run = command_here("train", "--dataset", "my_reg:linear", "--task", "my_reg:ABSOLUTE", "--epochs", "20",
                       "--lr", "0.01", "--batch-size", "32", "--quiet", "--out", "own")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((folder / "own" / "summary.json").read_text())
    assert summary["task"] == "absolute" and summary["final_test_neg_mae"] > summary["constant_test_score"]
    assert _predicted_r2(folder, "own") > 0.5  # predict resolves the run's own task (it gave a softmax: all 1.0)
    pictures = command_here("inspect", "own", "--out", "pictures")  # it scored samples by class logits: a traceback
    assert pictures.returncode == 0, pictures.stderr[-2000:]
    assert (folder / "pictures" / "selection_frequency.png").is_file()
    refused = command_here("train", "--dataset", "my_reg:linear", "--ratio", "0.5", "--metric", "entropy",
                           "--quiet", "--out", "refused")
    assert refused.returncode == 2 and "invalid metric='entropy'" in refused.stderr
    assert "regression task" in refused.stderr and not (folder / "refused").exists()


def test_hpo_refuses_a_strategy_that_needs_classes_on_regression_data_before_ray_starts(folder, monkeypatch):
    """It started Ray, failed every trial and exited 1; ``train`` refused the same input at once."""
    from asp_tune.tune.builtin import job_from_settings
    from asp_tune.tune.settings import HpoSettings
    from asp_tune.tune.space import parse_space

    monkeypatch.syspath_prepend(str(folder))
    monkeypatch.delitem(sys.modules, "my_reg", raising=False)
    space = {"name": "reg", "fixed": {"dataset": "my_reg:linear", "model": "mlp", "epochs": 3},
             "params": {"lr": {"type": "loguniform", "low": 0.001, "high": 0.1}}}
    with pytest.raises(ConfigError, match=r"invalid metric='entropy': allowed a strategy that needs no classes for "
                                          r"the regression task"):
        job_from_settings(HpoSettings(space=parse_space(space), metric="entropy"))
    for strategy in ("auto", "random", "fixed_random", "loss"):  # those that need no classes (no class balance)
        job_from_settings(HpoSettings(space=parse_space(space), metric=strategy))


@pytest.mark.slow
def test_hpo_and_compare_search_a_regression_space_by_r2(folder, command_here):
    (folder / "reg.yaml").write_text("name: reg\nfixed: {dataset: 'my_reg:linear', model: mlp, epochs: 9, "
                                     "batch_size: 32}\nparams:\n  lr: {type: loguniform, low: 0.001, high: 0.1}\n")
    run = command_here("hpo", "--space", "reg.yaml", "--num-samples", "4", "--verbose", "0", "--out", "hpo")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((folder / "hpo" / "summary.json").read_text())
    assert summary["score_metric"] == "val_r2" and summary["best_score"] > 0.5
    assert summary["best_val_accuracy"] is None and summary["proxy_trust"] is not None
    header = (folder / "hpo" / "trials.csv").read_text().splitlines()[0].split(",")
    assert "best_score" in header and not any("accuracy" in c for c in header)  # no columns it could never fill
    run = command_here("compare", "--space", "reg.yaml", "--ratios", "1.0,0.3", "--num-samples", "3",
                       "--algo", "random", "--verbose", "0", "--out", "cmp")
    assert run.returncode == 0, run.stderr[-2000:]
    import pandas as pd

    table = pd.read_csv(folder / "cmp" / "comparison.csv")
    assert (table["retrained_mean"] > 0.5).all()  # retrained test R²
    assert "retrained test R²" in (folder / "cmp" / "report.md").read_text()
    retrained = pd.read_csv(folder / "cmp" / "retrained.csv")
    assert "test_r2" in retrained.columns


def test_a_regression_core_set_reports_r2_and_active_learning_takes_only_random_picks(folder, command_here):
    run = command_here("coreset", "--dataset", "my_reg:linear", "--strategy", "fixed_random", "--fraction", "0.5",
                       "--epochs", "3", "--lr", "0.01", "--out", "cs", "--quiet")
    assert run.returncode == 0, run.stderr[-2000:]
    summary = json.loads((folder / "cs" / "summary.json").read_text())
    assert summary["score"] == "r2" and summary["coreset_test_r2"] == summary["coreset_test_score"]
    assert "test r2" in run.stdout and "(one seed)" in run.stdout
    refused = command_here("active-learn", "--dataset", "my_reg:linear", "--epochs", "2", "--budget", "30",
                           "--rounds", "2", "--out", "al", "--quiet")
    assert refused.returncode == 2 and "invalid strategy='least_confidence': allowed random for a regression " \
                                       "task" in refused.stderr
    assert not (folder / "al").exists()
    run = command_here("active-learn", "--dataset", "my_reg:linear", "--strategy", "random", "--epochs", "2",
                       "--lr", "0.01", "--budget", "30", "--rounds", "2", "--out", "al", "--quiet")
    assert run.returncode == 0, run.stderr[-2000:]  # its error is the share of variance left, and says so
    summary = json.loads((folder / "al" / "summary.json").read_text())
    assert summary["error_is"] == "1 - r2" and "target error (1 - r2)" in run.stdout
    refused = command_here("coreset", "--dataset", "my_reg:linear", "--strategy", "forgetting", "--epochs", "2",
                           "--out", "cf", "--quiet")  # the flag given is named, not the trainer's metric
    assert refused.returncode == 2 and "invalid strategy='forgetting': allowed a strategy that needs no classes, " \
                                       "for data without them (fixed_random)" in refused.stderr
    assert "will score samples" not in refused.stderr  # refused before its scoring model was announced
    assert not (folder / "cf").exists()
    # the round models take the flags given: at --lr 0.01 they learn (at the default 0.1 they diverge)
    import pandas as pd

    rounds = pd.read_csv(folder / "al" / "rounds.csv")
    assert (rounds["model_test_error"] < 1.0).all(), rounds
