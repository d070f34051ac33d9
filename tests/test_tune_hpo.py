"""End to end on Ray Tune with tiny budgets (digits MLP)."""

import json
from pathlib import Path

import pytest
import torch

from asp_tune import ConfigError
from asp_tune.cli import main
from asp_tune.tune.builtin import run_hpo
from asp_tune.tune.settings import HpoSettings
from asp_tune.tune.space import parse_space
from asp_tune.tune.trainable import CHECKPOINT_FILE, proxy_trial


SPACE = {"name": "tiny", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 3, "subset": 600, "batch_size": 64},
         "params": {"lr": {"type": "loguniform", "low": 0.02, "high": 0.3},
                    "momentum": {"type": "uniform", "low": 0.5, "high": 0.9}}}


@pytest.mark.parametrize("algo", ["hyperband", "bohb", "asha", "hypertune", "tpe", "random"])
def test_each_algorithm_runs_with_a_rescaled_budget(algo, ray_session, tmp_path):
    space = {**SPACE, "params": {**SPACE["params"], "label_smoothing": {"type": "choice", "values": [0.0, 0.1]}}}
    s = HpoSettings(space=parse_space(space), algo=algo, ratio=0.5, ratio_schedule="dynamic", metric="mixture",
                    num_samples=3, max_concurrent=2, time_budget_s=600, data_passes_budget=40,
                    storage_path=str(tmp_path), verbose=0, min_first_rung_steps=0, decide="proxy")
    res = run_hpo(s)
    t, summary = res.trials, res.summary
    assert len(t) == 3 and summary["num_trials"] == 3 and summary["num_failed"] == 0
    assert set(t["status"]) <= {"TERMINATED", "STOPPED"}
    scale = (1 + 0.505 + 0.01) / 3  # the mean of the dynamic schedule's ratios at r = 0.5 over 3 epochs
    assert summary["budget"]["time_budget_s"] == pytest.approx(600 * scale)
    assert summary["budget"]["nominal_time_budget_s"] == 600 and summary["budget"]["data_passes"] == pytest.approx(40 * scale)
    assert summary["best_val_accuracy"] == pytest.approx(t["best_val_accuracy"].max())
    assert set(summary["best_config"]) == {"lr", "momentum", "label_smoothing"}
    assert 0.02 <= summary["best_config"]["lr"] <= 0.3 and summary["best_config"]["label_smoothing"] in (0.0, 0.1)
    # one report per epoch: a trial that ran all 3 epochs at r=0.5 dynamic used 1 + ratios[1:] passes
    done = t[t["epochs"] == 3]
    assert len(done) >= 1
    assert done["data_passes"].iloc[0] == pytest.approx(1 + 0.505 + 0.01, abs=0.01)
    assert summary["data_passes_total"] == pytest.approx(t["data_passes"].sum())


def test_a_bohb_trial_resumes_from_its_checkpoint_whatever_searcher_drew_its_choices(tmp_path):
    """ConfigSpace draws a choice as a NumPy scalar; the checkpoint kept it, and a paused or restarted BOHB
    trial failed to load it (``weights_only`` refuses NumPy scalars). Ours hands out Python values, and a
    trial makes any searcher's plain (a TuneBOHB object of your own)."""
    import contextlib
    import shutil

    from ray.tune.search.bohb import TuneBOHB

    from asp_tune.tune.bohb_search import PlainBOHB

    space = parse_space({**SPACE, "fixed": {**SPACE["fixed"], "epochs": 2, "subset": 300},
                         "params": {"lr": {"type": "choice", "values": [0.05, 0.1]},
                                    "nesterov": {"type": "choice", "values": [True, False]},
                                    "label_smoothing": {"type": "choice", "values": [0.0, 0.1]}}})
    drawn = [searcher(space=space.to_configspace(0), seed=0, metric="val_score", mode="max").suggest("t")
             for searcher in (PlainBOHB, TuneBOHB)]
    assert {type(v) for v in drawn[0].values()} <= {float, bool}  # ours: Python values
    assert {type(v).__module__ for v in drawn[1].values()} == {"numpy"}  # Ray's: what a trial must handle
    import collections

    import numpy as np

    from asp_tune.tune.space import plain_values

    pair = collections.namedtuple("pair", "low high")
    plain = plain_values({"betas": np.array([0.9, 0.99]), "model_args": {"width": np.int64(8)},
                          "ends": pair(np.float32(0.5), np.bool_(True)), "name": np.str_("a")})
    assert plain == {"betas": [0.9, 0.99], "model_args": {"width": 8}, "ends": pair(0.5, True), "name": "a"}
    assert [type(v) for v in (plain["model_args"]["width"], *plain["ends"], plain["name"])] == [int, float, bool, str]

    class Saved:
        def __init__(self, folder):
            self.folder = folder

        def as_directory(self):
            return contextlib.nullcontext(str(self.folder))

    run = {"ratio": 0.5, "metric": "loss", "seed": 0, "device": "cpu"}
    for i, config in enumerate(drawn):
        kept, reports = tmp_path / f"kept{i}", []
        proxy_trial(config, space=space, run=run, report=lambda m, checkpoint=None: reports.append(m),
                    get_checkpoint=lambda: None, checkpoint_epochs=(1,),
                    make_checkpoint=lambda folder: kept.exists() or shutil.copytree(folder, kept))
        proxy_trial(config, space=space, run=run, report=lambda m, checkpoint=None: reports.append(m),
                    get_checkpoint=lambda: Saved(kept), make_checkpoint=lambda folder: None)
        assert [r["epoch"] for r in reports] == [1, 2, 2] and reports[-1].get("restored_epoch") == 1


def test_a_resumed_bohb_searcher_takes_events_of_trials_its_saved_state_never_knew():
    """Ray's TuneBOHB raised KeyError (which stopped a resumed search) for a trial whose configuration its
    restored state did not hold; ours leaves such a trial's results out of BOHB's model."""
    from ray.tune.search.bohb import TuneBOHB

    from asp_tune.tune.bohb_search import PlainBOHB

    space = parse_space(SPACE)
    result = {"val_score": 0.5, "hyperband_info": {"budget": 3}}
    with pytest.raises(KeyError):
        TuneBOHB(space=space.to_configspace(0), seed=0, metric="val_score", mode="max").on_trial_complete("x")
    ours = PlainBOHB(space=space.to_configspace(0), seed=0, metric="val_score", mode="max")
    ours.suggest("known")
    ours.on_trial_result("unknown", result)
    ours.on_trial_result("known", result)
    assert ours.running == {"known", "unknown"}
    ours.on_trial_complete("unknown", result)
    ours.on_trial_complete("known", result)
    assert ours.running == set() and ours.trial_to_params == {}
    from ray.tune.schedulers import HyperBandForBOHB

    from asp_tune.tune.algorithms import Context, compose

    theirs = TuneBOHB(space=space.to_configspace(0), seed=0, metric="val_score", mode="max")
    built, _ = compose(HyperBandForBOHB(metric="val_score", mode="max"), theirs,
                       Context(metric="val_score", mode="max", epochs=3, seed=0))
    assert type(built.searcher) is PlainBOHB and type(theirs) is TuneBOHB  # one handed in runs as ours


def test_failing_trial_is_recorded_and_the_experiment_goes_on(ray_session, tmp_path):
    space = {**SPACE, "fixed": {**SPACE["fixed"], "momentum": 0.0, "weight_decay": 0.0},
             "params": {"lr": {"type": "grid", "values": [0.1, 1.0e7]}}}
    res = run_hpo(HpoSettings(space=parse_space(space), algo="random", ratio=1.0, metric="none",
                              num_samples=1, storage_path=str(tmp_path), verbose=0))
    t = res.trials.set_index("config/lr")
    assert t.loc[1.0e7, "status"] == "ERROR" and "TrainingDiverged" in t.loc[1.0e7, "error"]
    assert t.loc[0.1, "status"] == "TERMINATED" and t.loc[0.1, "best_val_accuracy"] > 0.5
    assert res.summary["num_failed"] == 1 and res.summary["best_config"] == {"lr": 0.1}


def test_resume_restores_an_experiment(ray_session, tmp_path):
    s = HpoSettings(space=parse_space(SPACE), algo="random", ratio=0.5, metric="loss", num_samples=2,
                    storage_path=str(tmp_path), name="resumable", verbose=0, decide="proxy")
    first = run_hpo(s)
    again = run_hpo(s, resume=first.summary["experiment_path"])
    assert sorted(again.trials["trial_id"]) == sorted(first.trials["trial_id"])
    assert again.trials["best_val_accuracy"].sum() == pytest.approx(first.trials["best_val_accuracy"].sum())
    with pytest.raises(ConfigError, match="resume="):
        run_hpo(s, resume=str(tmp_path / "nothing-here"))
    import dataclasses

    with pytest.raises(ConfigError, match=r"ratio=0.5 or --ratio 0.5 \(this one's: 0.3\)"):
        run_hpo(dataclasses.replace(s, ratio=0.3), resume=first.summary["experiment_path"])


def test_a_copied_experiment_folder_resumes_into_itself(ray_session, tmp_path):
    import shutil

    from asp_tune.tune.progress import PROGRESS_FILE
    from asp_tune.tune.signing import SIGNED_COPY

    s = HpoSettings(space=parse_space(SPACE), algo="random", ratio=0.5, metric="loss", num_samples=2,
                    storage_path=str(tmp_path / "a"), name="original", verbose=0, decide="proxy")
    original = Path(run_hpo(s).summary["experiment_path"])
    copy = tmp_path / "b" / "copied"
    shutil.copytree(original, copy)
    before = {name: ((original / name).read_bytes(), (original / name).stat().st_mtime_ns)
              for name in (PROGRESS_FILE, SIGNED_COPY)}
    copied_wall = json.loads((copy / PROGRESS_FILE).read_text())["wall_time_s"]
    again = run_hpo(s, resume=str(copy))
    assert again.summary["experiment_path"] == str(copy)
    for name, (data, mtime) in before.items():  # the callbacks were pickled with the original's path
        assert (original / name).read_bytes() == data and (original / name).stat().st_mtime_ns == mtime
    assert json.loads((copy / PROGRESS_FILE).read_text())["wall_time_s"] > copied_wall
    assert (copy / SIGNED_COPY).stat().st_mtime_ns > before[SIGNED_COPY][1]


def test_a_search_where_every_trial_fails_exits_non_zero_with_the_first_error(ray_session, tmp_path, capsys):
    import yaml

    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump({**SPACE, "fixed": {**SPACE["fixed"], "momentum": 0.0, "weight_decay": 0.0},
                                     "params": {"lr": {"type": "grid", "values": [1.0e7, 2.0e7]}}}))
    out = tmp_path / "out"
    code = main(["hpo", "--space", str(space), "--algo", "random", "--ratio", "1.0", "--metric", "none",
                 "--num-samples", "1", "--out", str(out), "--storage-path", str(tmp_path / "ray"), "--verbose", "0"])
    err = capsys.readouterr().err
    assert code == 1
    ours = [line for line in err.splitlines() if line.startswith("asp-tune")]
    assert len(ours) == 1 and "all 2 trials failed; the first: TrainingDiverged: training loss" in ours[0]
    assert not out.exists() and not list(tmp_path.glob(".out.partial-*"))


def test_resources_no_node_has_fail_before_any_trial(ray_session, capsys, tmp_path):
    from asp_tune.tune.session import check_resources

    with pytest.raises(ConfigError, match="invalid cpus_per_trial=64: allowed at most 2"):
        check_resources(64, 0)
    with pytest.raises(ConfigError, match="no node of this Ray cluster has a GPU"):
        check_resources(1, 0.5)
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml"
    assert main(["hpo", "--space", str(space), "--cpus-per-trial", "64", "--out", str(tmp_path / "o")]) == 2
    assert "cpus_per_trial=64" in capsys.readouterr().err and not (tmp_path / "o").exists()


def test_a_gpu_node_the_autoscaler_may_start_counts_and_so_do_its_nodes_for_shared_storage(ray_session, monkeypatch):
    """cluster/aws.yaml starts no GPU node before a trial asks for one: a search with --gpus-per-trial 1 was
    refused on its head node alone. The node types the cluster reports to Ray count (as Ray Train reads them)."""
    from ray._private.state import state
    from ray.core.generated import autoscaler_pb2

    from asp_tune.tune.session import check_resources, check_shared_storage

    with pytest.raises(ConfigError, match=r"no node of this Ray cluster has a GPU\)$"):
        check_resources(1, 1)  # a local search: no word of autoscalers
    with pytest.raises(ConfigError, match="no node of this Ray cluster has a GPU; an autoscaling cluster whose "
                                          r"launcher does not report its node types to Ray counts only the nodes up now"):
        check_resources(1, 1, cluster=True)
    check_shared_storage(None)  # one local node, no autoscaler
    config = autoscaler_pb2.ClusterConfig()
    for name, resources, count in (("head", {"CPU": 8}, 1), ("gpu_worker", {"CPU": 8, "GPU": 1}, 8)):
        group = config.node_group_configs.add(name=name, max_count=count)
        group.resources.update(resources)
    monkeypatch.setattr(state, "get_cluster_config", lambda: config)
    check_resources(8, 1)  # a gpu_worker the autoscaler adds takes it
    with pytest.raises(ConfigError, match="invalid gpus_per_trial=2.0: allowed at most 1"):
        check_resources(1, 2.0)
    with pytest.raises(ConfigError, match="a folder every one of the nodes its autoscaler may start sees"):
        check_shared_storage(None)
    check_shared_storage("/shared/nfs")


class _Checkpoint:
    def __init__(self, folder):
        self.folder = folder

    def as_directory(self):
        import contextlib

        return contextlib.nullcontext(self.folder)


class _Pause(Exception):
    pass


def _run_trial(tmp_path, config, run, pause_after=None, resume_from=None):
    """Drive the trainable as Tune would; keep every checkpoint; optionally 'pause' after N epochs."""
    import shutil

    reports = []

    def report(metrics, checkpoint):
        keep = tmp_path / f"ckpt-{len(list(tmp_path.glob('ckpt-*')))}"
        shutil.copytree(checkpoint.path, keep)
        reports.append((metrics, keep))
        if pause_after is not None and len(reports) == pause_after:
            raise _Pause

    try:
        proxy_trial(config, space=parse_space(SPACE), run=run, report=report,
                    get_checkpoint=lambda: None if resume_from is None else _Checkpoint(resume_from))
    except _Pause:
        pass
    return reports


def test_paused_trial_resumes_with_the_same_memory_and_selections(tmp_path):
    config = {"lr": 0.1, "momentum": 0.9}
    run = {"ratio": 0.4, "ratio_schedule": "dynamic", "metric": "mixture", "seed": 5, "device": "cpu", "epochs": 3}
    straight = _run_trial(tmp_path / "a", config, run)
    (tmp_path / "b").mkdir()
    paused = _run_trial(tmp_path / "b", config, run, pause_after=1)
    resumed = _run_trial(tmp_path / "c", config, run, resume_from=paused[-1][1])
    assert len(straight) == 3 and len(paused) == 1 and len(resumed) == 2
    for (m1, c1), (m2, c2) in zip(straight[1:], resumed):
        for key in ("epoch", "selected", "metric_used", "val_accuracy", "data_passes"):
            assert m1[key] == m2[key]
        s1 = torch.load(Path(c1) / CHECKPOINT_FILE, weights_only=True)["selector"]
        s2 = torch.load(Path(c2) / CHECKPOINT_FILE, weights_only=True)["selector"]
        for k in ("latest", "counts"):
            assert torch.allclose(s1["memory"][k], s2["memory"][k], atol=1e-6)
        assert torch.equal(s1["generator"], s2["generator"])


@pytest.mark.parametrize("args,message", [
    (["--algo", "grid"], "invalid algo='grid': allowed one of 'hyperband', 'bohb', 'asha', 'hypertune', 'tpe', 'random'"),
    (["--ratio", "2"], "invalid ratio=2.0"),
    (["--metric", "loud"], "invalid metric='loud'"),
    (["--max-concurrent", "0"], "invalid max_concurrent=0"),
    (["--gpus-per-trial", "-1"], "invalid gpus_per_trial=-1.0"),
    (["--early-stop", "median"], "invalid early_stop='median'"),
    (["--space", "missing.yaml"], "invalid space='missing.yaml'"),
    (["--algo", "hypertune", "--rung-ratios", "0.5,0.3,1"], "invalid rung_ratios='0.5,0.3,1': allowed increasing"),
    (["--algo", "hypertune", "--rung-ratios", "0.1,0.3,1.5"], "invalid rung_ratios='0.1,0.3,1.5': allowed increasing"),
    (["--algo", "hypertune", "--rung-ratios", "0.1,x"], "invalid rung_ratios='0.1,x'"),
    (["--algo", "hypertune", "--max-epochs", "9", "--rung-ratios", "0.1,1"],
     "invalid rung_ratios='0.1,1': allowed 3 ratios, one per rung at epochs 1, 3, 9"),
    (["--algo", "random", "--rung-ratios", "0.1,0.3,1"], "invalid rung_ratios='0.1,0.3,1': allowed none unless --algo"),
    (["--algo", "hypertune", "--max-epochs", "9", "--rung-ratios", "0.1,0.3,1", "--ratio-schedule", "dynamic"],
     "invalid ratio_schedule='dynamic': allowed constant with --rung-ratios"),
    (["--algo", "hypertune", "--max-epochs", "9", "--ratio", "1.0", "--strategy", "none", "--rung-ratios", "0.1,0.3,1"],
     "invalid metric='none': allowed a strategy that selects subsets: rung_ratios='0.1,0.3,1' or --rung-ratios "
     "0.1,0.3,1 trains the first rung at ratio 0.1"),  # it said "'none' only with ratio 1.0" to --ratio 1.0
    (["--algo", "hypertune", "--reduction-factor", "1"], "invalid reduction_factor=1"),
    (["--algo", "hypertune", "--early-stop", "asha"], "invalid early_stop='asha': allowed none with --algo hypertune"),
    (["--ratio-schedule", "steps:3=0.5,2=1"], "invalid ratio_schedule='steps:3=0.5,2=1'"),
])
def test_bad_flags_name_the_field_and_write_nothing(tmp_path, capsys, args, message):
    space = Path(__file__).resolve().parents[1] / "search_spaces" / "digits_mlp.yaml"
    out = tmp_path / "out"
    argv = ["hpo", "--space", str(space), "--out", str(out), *args]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_bad_yaml_via_cli_leaves_no_output(tmp_path, capsys):
    bad = tmp_path / "bad.yaml"
    bad.write_text("fixed: {dataset: digits}\nparams:\n  lr: {type: loguniform, low: -1, high: 1}\n")
    out = tmp_path / "out"
    assert main(["hpo", "--space", str(bad), "--out", str(out)]) == 2
    assert "params.lr.low=-1" in capsys.readouterr().err
    assert not out.exists()


def test_run_hpo_takes_a_space_file_and_writes_the_results_folder_the_command_line_writes(ray_session, tmp_path):
    import yaml

    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    out = tmp_path / "out"
    result = run_hpo(HpoSettings(str(space), algo="random", num_samples=2, max_epochs=2, verbose=0, decide="proxy"),
                     out=out)
    assert result.summary["num_trials"] == 2
    assert json.loads((out / "summary.json").read_text())["best_config"] == result.summary["best_config"]
    assert {"trials.csv", "trial_epochs.csv"} <= {p.name for p in out.iterdir()}
    assert Path(result.summary["experiment_path"]).parent == tmp_path / ".out.ray"  # beside it, not in ~/ray_results
    with pytest.raises(ConfigError, match=r"invalid out=.*overwrite=True from Python"):
        run_hpo(HpoSettings(str(space), algo="random", num_samples=1, max_epochs=1, verbose=0), out=out)


def test_hpo_cli_writes_trials_and_summary(ray_session, tmp_path, capsys):
    space = tmp_path / "s.yaml"
    import yaml

    space.write_text(yaml.safe_dump(SPACE))
    out = tmp_path / "out"
    code = main(["hpo", "--space", str(space), "--algo", "asha", "--ratio", "0.3", "--num-samples", "2",
                 "--min-first-rung-steps", "0", "--out", str(out), "--storage-path", str(tmp_path / "ray")])
    assert code == 0
    captured = capsys.readouterr()  # the default: one progress bar, one result line, none of Ray's output
    assert captured.out.count("\n") == 1 and captured.out.startswith("best val")
    assert "trial" in captured.err and "View detailed results" not in captured.err + captured.out
    summary = json.loads((out / "summary.json").read_text())
    for key in ("algo", "ratio", "metric", "best_config", "best_val_accuracy", "num_trials", "wall_time_s",
                "data_passes_total", "budget", "proxy_trust", "ray_start_s"):
        assert key in summary
    assert summary["ray_start_s"] == pytest.approx(0.0, abs=0.5)  # the session's Ray, joined: nothing started
    assert summary["proxy_trust"]["rungs"] == [1, 3] and (out / "trust.png").is_file()  # ASHA's rungs, drawn
    import pandas as pd

    trials = pd.read_csv(out / "trials.csv")
    assert len(trials) == 2 and {"config/lr", "best_val_accuracy", "final_val_accuracy", "epochs",
                                 "data_passes", "seconds", "startup_seconds", "val_seconds",
                                 "status"} <= set(trials.columns)
    assert summary["first_epoch_full"] is False and summary["validation_epochs"] == [1, 3]


def test_compare_cli_reports_speedups_and_retrained_accuracy(ray_session, tmp_path):
    import pandas as pd
    import yaml

    space = tmp_path / "s.yaml"
    space.write_text(yaml.safe_dump(SPACE))
    out = tmp_path / "cmp"
    code = main(["compare", "--space", str(space), "--algo", "random", "--ratios", "1.0,0.3", "--num-samples", "3",
                 "--metric", "loss", "--decide", "proxy", "--out", str(out), "--storage-path", str(tmp_path / "ray"), "--verbose", "0"])
    assert code == 0
    table = pd.read_csv(out / "comparison.csv")
    # loss at 0.3 is no uniform subset: the same search on a uniformly random one of the same cost runs beside it
    assert list(table["ratio"]) == [1.0, 0.3, 0.3] and list(table["arm"]) == ["full data", "proxy", "control"]
    proxy, control = table.iloc[1], table.iloc[2]
    assert (proxy["metric"], control["metric"], proxy["control_metric"]) == ("loss", "random", "random")
    assert control["data_passes_total"] == pytest.approx(proxy["data_passes_total"])  # the same cost
    assert proxy["gain_over_control"] == pytest.approx(proxy["retrained_test_mean"] - control["retrained_test_mean"])
    assert (out / "trials_r0.3_control.csv").is_file()
    assert "- r = 0.3: loss against random: " in (out / "report.md").read_text()
    # same seed and random search: the same three configurations, so all three pair up; 3 of 6 pairs measure
    # nothing, so no correlation is reported (it was a tau from three points)
    assert proxy["corr_n"] == 3 and not proxy["measured"]
    assert all(proxy[c] != proxy[c] for c in ("corr_kendall_tau", "corr_spearman", "corr_pearson", "r2"))
    full = table.iloc[0]  # against itself: nothing to correlate, at cost 1 and no regret
    assert (full["regret"], full["relative_cost"]) == (0.0, 1.0)
    assert all(full[c] != full[c] for c in ("r2", "corr_kendall_tau", "corr_spearman", "corr_pearson", "tau_low",
                                            "tau_high")) and not full["measured"]  # NaN: nothing measured
    # the one regret column: the full-data pick's retrained score less this pick's
    assert proxy["regret"] == pytest.approx(full["retrained_test_mean"] - proxy["retrained_test_mean"])
    assert proxy["relative_data_passes"] == pytest.approx(1 / proxy["speedup_data_passes"])
    assert proxy["data_passes_total"] < table.iloc[0]["data_passes_total"]
    assert proxy["speedup_data_passes"] == pytest.approx(table.iloc[0]["data_passes_total"] / proxy["data_passes_total"])
    assert (table["retrained_test_mean"] > 0.5).all()
    retrained = pd.read_csv(out / "retrained.csv")  # every seed's retrain is kept
    assert sorted(retrained["arm"]) == ["control", "full data", "proxy"]
    assert {"seed", "test_accuracy", "seconds"} <= set(retrained.columns)
    assert (out / "report.md").read_text().count("|") > 20 and (out / "comparison.png").exists()


def test_correlate_cli_table(ray_session, tmp_path):
    import pandas as pd
    import yaml

    grid = {**SPACE, "fixed": {**SPACE["fixed"], "epochs": 2},
            "params": {"lr": {"type": "grid", "values": [0.01, 0.05, 0.2]}}}
    space = tmp_path / "g.yaml"
    space.write_text(yaml.safe_dump(grid))
    out = tmp_path / "corr"
    # the paper's dynamic schedule: its proxy cells follow it, full data and the static cells keep their one subset
    code = main(["correlate", "--space", str(space), "--ratios", "0.5", "--metrics", "loss,random,easiest,hardest",
                 "--proxy-epochs", "3", "--ratio-schedule", "dynamic", "--out", str(out),
                 "--storage-path", str(tmp_path / "ray"), "--verbose", "0"])
    assert code == 0
    scores = pd.read_csv(out / "scores.csv")
    assert len(scores) == 3 * 5 and set(scores["metric"]) == {"none", "loss", "random", "easiest", "hardest"}
    # six trials (3 configs x easiest, hardest) share one proxy model: trained by exactly one of them
    static = scores[scores["metric"].isin(["easiest", "hardest"])]
    assert static["proxy_key"].nunique() == 1 and static["proxy_computed"].sum() == 1
    assert (scores.loc[~scores.index.isin(static.index), "proxy_seconds"] == 0).all()
    corr = pd.read_csv(out / "correlation.csv").set_index("metric")
    assert set(corr.index) == {"loss", "random", "easiest", "hardest"} and (corr["ratio"] == 0.5).all()
    assert corr.loc["easiest", "kind"] == "static" and corr.loc["loss", "kind"] == "ASP"
    # each static cell's cost holds the shared proxy model's seconds once
    proxy_seconds = static["proxy_seconds"].iloc[0]
    assert corr.loc["easiest", "proxy_model_seconds"] == pytest.approx(proxy_seconds)
    assert corr.loc["loss", "proxy_model_seconds"] == 0
    # and its data passes: 3 proxy epochs and one scoring pass, once per cell (they were left out)
    assert corr.loc["easiest", "proxy_model_data_passes"] == 4 and corr.loc["loss", "proxy_model_data_passes"] == 0
    easiest = scores[scores["metric"] == "easiest"]
    assert corr.loc["easiest", "data_passes_mean"] == pytest.approx((easiest["data_passes"].sum() + 4) / 3)
    assert corr.loc["random", "kind"] == "ASP control"
    table = (out / "table.md").read_text()
    assert "| random | ASP control |" in table and "passes, n 3" in table and "No uniform random" not in table
    corr = corr.reset_index()
    assert (corr["n"] == 3).all()
    assert {"r2", "good_spearman", "top1_regret", "relative_cost", "cost_adjusted_r2"} <= set(corr.columns)
    assert ((corr["top1_regret"] >= 0) & (corr["relative_cost"] > 0)).all()
    table = (out / "table.md").read_text()
    assert "| loss |" in table and "r = 0.5" in table


def test_a_correlation_cell_s_cost_counts_each_trial_s_choosing_of_its_subset():
    """k-centers chose each trial's subset in 1.7-2.2 s against 1.2-1.4 s of training: left out, a cell that
    cost twice full data's read 0.92 of it."""
    import pandas as pd

    from asp_tune.tune.correlate import correlations

    rows = [{"config": c, "cell": cell, "ratio": ratio, "metric": metric, "score": 0.5 + 0.1 * c, "data_passes": ratio,
             "seconds": 1.0, "selection_seconds": 2.0 if metric == "kcenters" else 0.0, "proxy_seconds": 0.5,
             "proxy_key": "k" if metric == "kcenters" else "", "status": "TERMINATED"}
            for cell, (ratio, metric) in enumerate([(0.5, "kcenters"), (1.0, "none")]) for c in range(4)]
    row = correlations(pd.DataFrame(rows)).iloc[0]
    assert row["selection_seconds"] == 8.0 and row["proxy_model_seconds"] == 0.5
    assert row["relative_cost"] == pytest.approx((4 * 1.0 + 8.0 + 0.5) / 4.0)


def test_a_correlation_with_failed_trials_says_so_and_records_each_error(tmp_path, capsys):
    import json

    import pandas as pd

    from asp_tune.tune.correlate import correlations, write_correlation

    class Folder:
        def write_table(self, name, frame):
            frame.to_csv(tmp_path / name, index=False)

        def file(self, name):
            return tmp_path / name

    rows = [{"config": c, "cell": cell, "ratio": ratio, "metric": metric, "score": 0.5 + 0.1 * c, "val_accuracy": 0.5,
             "data_passes": ratio, "seconds": 1.0, "proxy_seconds": 0.0, "status": "TERMINATED", "error": None}
            for cell, (ratio, metric) in enumerate([(0.5, "loss"), (1.0, "none")]) for c in range(4)]
    rows[1].update(status="ERROR", score=float("nan"), error="ValueError: hidden must be positive")
    scores = pd.DataFrame(rows)
    run = {"scores": scores, "correlations": correlations(scores), "num_configs": 4, "wall_time_s": 1.0,
           "experiment_path": "/ray/x"}
    summary = write_correlation(Folder(), run, "t", {})
    assert summary["num_failed"] == 1 and summary["num_trials"] == 8
    assert summary["first_error"] == "ValueError: hidden must be positive"
    assert "1 of 8 trials failed (the first: configuration 1 in cell 0.5/loss: ValueError: hidden must be " \
           "positive)" in capsys.readouterr().err
    assert pd.read_csv(tmp_path / "scores.csv")["error"].dropna().tolist() == ["ValueError: hidden must be positive"]
    json.dumps(summary)  # summary.json takes it as it is


def _per_trial(result):
    t = result.trials.sort_values("config/lr")
    return list(zip(t["config/lr"].round(8), t["epochs"], t["final_val_accuracy"].round(6)))


class _Trial:
    def __init__(self, trial_id: str):
        self.trial_id = trial_id


def _asha_decisions(epochs_validated, curves, grace=1, rf=3, max_t=9):
    """Feed Ray's own ASHAScheduler the same asynchronous stream of results (round-robin over the
    trials, epoch by epoch); validation metrics only at ``epochs_validated`` (None: every epoch)."""
    from ray.tune.schedulers import ASHAScheduler, TrialScheduler

    scheduler = ASHAScheduler(time_attr="training_iteration", metric="val_accuracy", mode="max", max_t=max_t,
                              grace_period=grace, reduction_factor=rf)
    trials = [_Trial(f"t{i}") for i in range(len(curves))]
    for trial in trials:
        scheduler.on_trial_add(None, trial)
    stopped, live = {}, set(range(len(trials)))
    for epoch in range(1, max_t + 1):
        for i, trial in enumerate(trials):
            if i not in live:
                continue
            result = {"training_iteration": epoch}
            if epochs_validated is None or epoch in epochs_validated:
                result["val_accuracy"] = curves[i][epoch - 1]
            if scheduler.on_trial_result(None, trial, result) == TrialScheduler.STOP:
                live.discard(i)
                stopped[i] = epoch
    return stopped


def test_rung_only_validation_gives_asha_the_same_decisions():
    import numpy as np

    space = parse_space({**SPACE, "fixed": {**SPACE["fixed"], "epochs": 9}})
    s = HpoSettings(space=space, algo="asha", ratio=1.0, metric="none", reduction_factor=3)
    assert s.validation_epochs() == (1, 3, 9)
    rng = np.random.default_rng(0)
    curves = np.cumsum(rng.uniform(0, 0.1, size=(12, 9)), axis=1)  # 12 trials, rising accuracies
    every, rungs = _asha_decisions(None, curves), _asha_decisions(s.validation_epochs(), curves)
    assert rungs == every and len(every) > 0 and set(every.values()) <= {1, 3, 9}


def test_reports_between_rungs_carry_no_validation_metrics():
    from asp_tune.tune.trainable import trial_metrics

    record = {"epoch": 2, "ratio": 0.3, "val_accuracy": float("nan"), "val_loss": float("nan"), "train_loss": 1.0}
    assert "val_accuracy" not in trial_metrics(record) and trial_metrics(record)["train_loss"] == 1.0
    assert trial_metrics({**record, "val_accuracy": 0.5, "val_loss": 1.2})["val_accuracy"] == 0.5


def test_rung_only_validation_runs_under_ray(ray_session, tmp_path):
    space = parse_space({**SPACE, "fixed": {**SPACE["fixed"], "epochs": 9, "subset": 300}})
    s = HpoSettings(space=space, algo="asha", ratio=1.0, metric="none", num_samples=4, max_concurrent=2,
                    reduction_factor=3, storage_path=str(tmp_path), verbose=0,
                    min_first_rung_steps=0)  # 5 steps an epoch: a first rung of 16 steps would start at epoch 3
    result = run_hpo(s)
    assert list(result.summary["validation_epochs"]) == [1, 3, 9] and result.summary["num_failed"] == 0
    for history in result.histories.values():  # validated exactly at the rungs it reached
        validated = set(history.loc[history["val_accuracy"].notna(), "epoch"])
        assert validated == {e for e in (1, 3, 9) if e <= history["epoch"].max()}
    assert result.trials["final_val_accuracy"].notna().all()


def test_a_reused_worker_gives_the_same_trial_results_as_a_fresh_one(ray_session, tmp_path, monkeypatch):
    import dataclasses

    from asp_tune.tune import run as search

    s = HpoSettings(space=parse_space(SPACE), algo="random", ratio=0.5, metric="loss", num_samples=3,
                    max_concurrent=1, storage_path=str(tmp_path), verbose=0, seed=4, decide="proxy")  # no audit
    reused = run_hpo(s)
    monkeypatch.setattr(search, "REUSE_ACTORS", False)
    fresh = run_hpo(dataclasses.replace(s, name="fresh"))
    assert _per_trial(reused) == _per_trial(fresh)
    assert reused.summary["trial_seconds"]["startup"] > 0


def test_an_mlflow_tracking_callback_with_a_file_store_gets_the_run(ray_session, tmp_path, monkeypatch):
    mlflow = pytest.importorskip("mlflow")
    monkeypatch.setenv("MLFLOW_ALLOW_FILE_STORE", "true")  # MLflow 3 keeps its file store behind a switch
    uri = (tmp_path / "mlruns").as_uri()
    s = HpoSettings(space=parse_space(SPACE), algo="random", ratio=0.5, metric="loss", num_samples=2,
                    storage_path=str(tmp_path / "ray"), name="tracked", tracking="mlflow", tracking_uri=uri, verbose=0,
                    decide="proxy")
    run_hpo(s)
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tracked"])
    assert len(runs) == 2 and runs["metrics.val_accuracy"].notna().all()
    assert runs["params.lr"].astype(float).between(0.02, 0.3).all()  # each trial's config was logged
    with pytest.raises(ConfigError, match="invalid tracking='neptune'"):
        HpoSettings(space=parse_space(SPACE), tracking="neptune").validate()


def test_a_budget_too_small_for_any_result_fails_by_name_and_commits_nothing(ray_session, tmp_path):
    from asp_tune.errors import RunFailed

    s = HpoSettings(space=parse_space(SPACE), algo="random", ratio=0.5, num_samples=2, time_budget_s=0.002,
                    storage_path=str(tmp_path / "ray"), verbose=0)
    with pytest.raises(RunFailed, match="no trial reported a validation score within the budget"):
        run_hpo(s)


def test_a_search_a_budget_ended_says_so(ray_session, tmp_path, capsys):
    """A data-passes budget stopped a 40-trial search at 9 trials and nothing said why."""
    s = HpoSettings(space=parse_space(SPACE), algo="random", ratio=0.5, num_samples=6, max_concurrent=1,
                    data_passes_budget=6, storage_path=str(tmp_path / "ray"), verbose=0, decide="proxy")
    summary = run_hpo(s).summary
    assert summary["num_trials"] < 6 and summary["ended_by_budget"]
    assert f"ended the search after {summary['num_trials']} of 6 trials" in capsys.readouterr().err


def test_trials_checkpoint_where_their_scheduler_decides_at_the_end_and_on_the_interval():
    space = parse_space({**SPACE, "fixed": {**SPACE["fixed"], "epochs": 9}})

    def settings(algo, **kw):
        return HpoSettings(space=space, algo=algo, ratio=0.5, metric="loss", reduction_factor=3, **kw).validate()

    assert settings("asha").checkpoint_epochs() == (1, 3, 9)
    assert settings("hypertune").checkpoint_epochs() == (1, 3, 9)
    assert settings("random", early_stop="asha").checkpoint_epochs() == (1, 3, 9)
    assert settings("random").checkpoint_epochs() == () and settings("tpe").checkpoint_epochs() == ()
    # ASHA decides at its rungs, but Ray's OptunaSearch reads the score of every report: TPE's trials under it
    # validate every epoch (they reported none between rungs, and the search failed with KeyError)
    assert settings("random", early_stop="asha").validation_epochs() == (1, 3, 9)
    assert settings("tpe", early_stop="asha").validation_epochs() is None
    assert settings("hyperband").checkpoint_epochs() is None and settings("bohb").checkpoint_epochs() is None
    assert settings("asha", checkpoint_every_s=0).checkpoint_epochs() is None  # asked: every epoch
    for bad in (-1, float("inf"), "often"):
        with pytest.raises(ConfigError, match="invalid checkpoint_every_s"):
            settings("asha", checkpoint_every_s=bad)
    from asp_tune.tune.trainable import checkpoint_due

    due = [e for e in range(1, 10) if checkpoint_due(e, e == 9, (1, 3, 9), 0.0, 60.0)]
    assert due == [1, 3, 9]
    assert checkpoint_due(5, False, (), 61.0, 60.0) and not checkpoint_due(5, False, (), 59.0, 60.0)
    assert not checkpoint_due(5, False, (), 1e9, 0.0)  # 0 with epochs given: no interval
    assert all(checkpoint_due(e, False, None, 0.0, 60.0) for e in range(1, 9))


def test_a_trial_reports_every_epoch_and_checkpoints_only_where_asked():
    reports = []
    run = {"ratio": 0.5, "metric": "loss", "seed": 0, "device": "cpu", "epochs": 5}
    proxy_trial({"lr": 0.1, "momentum": 0.9}, space=parse_space(SPACE), run=run, checkpoint_epochs=(2,),
                checkpoint_every_s=3600.0, report=lambda metrics, checkpoint=None: reports.append(
                    (metrics["epoch"], checkpoint is not None and (Path(checkpoint.path) / CHECKPOINT_FILE).exists())),
                get_checkpoint=lambda: None, make_checkpoint=_Saved)
    assert reports == [(1, False), (2, True), (3, False), (4, False), (5, True)]


class _Saved:  # Ray's Checkpoint.from_directory, kept on disk after the trainable's temporary folder goes
    def __init__(self, folder):
        import shutil
        import tempfile

        self.path = tempfile.mkdtemp()
        shutil.copytree(folder, self.path, dirs_exist_ok=True)


def test_epochs_reported_again_after_a_resume_count_once_the_later_report():
    import pandas as pd

    from asp_tune.tune.collect import reported_epochs

    hist = pd.DataFrame({"epoch": [1, 2, 3, 2, 3, 4], "val_accuracy": [0.1, 0.2, 0.3, 0.25, 0.35, 0.4]})
    kept = reported_epochs(hist)
    assert kept["epoch"].tolist() == [1, 2, 3, 4] and kept["val_accuracy"].tolist() == [0.1, 0.25, 0.35, 0.4]
    assert reported_epochs(None).empty and reported_epochs(pd.DataFrame({"loss": [1, 1]}))["loss"].tolist() == [1, 1]


def test_the_callbacks_write_where_ray_now_keeps_the_trials():
    from types import SimpleNamespace as N

    from asp_tune.tune.progress import current_experiment

    moved = [N(storage=N(experiment_fs_path="/data/copy"))]
    assert current_experiment("/data/original", moved) == "/data/copy"
    assert current_experiment("/data/original", []) == "/data/original"  # no trial yet: as pickled
    assert current_experiment("file:///data/original", moved) == "file:///data/copy"
    assert current_experiment("s3://bucket/a?endpoint_override=h:9", [N(storage=N(experiment_fs_path="bucket/b"))]) \
        == "s3://bucket/b?endpoint_override=h:9"
