"""NAS searches end to end: SPOS + ASP on NAS-Bench-201, DARTS, resuming, the CLI."""

import dataclasses
import json
import math
from pathlib import Path

import pandas as pd
import pytest
import torch

from asp_tune.cli import main
from asp_tune.config import TrainConfig
from asp_tune.errors import AspTuneError, ConfigError, DataError
from nas.nb201 import Arch, GroundTruth
from nas.space_nb201 import Nb201Space
from nas.search import aggregate, run_search
from nas.settings import EvolutionSettings, NasSettings
from nas.spos import SposTrainer, evolutionary_search

TINY_EVOLUTION = EvolutionSettings(candidates=8, population=6, generations=2, parents=4, mutations=3, crossovers=3)


def tiny_settings(**changes) -> NasSettings:
    train = TrainConfig(dataset="digits", epochs=3, batch_size=64, ratio=0.5, metric="mixture", lr=0.05,
                        subset=600, test_subset=40, val_fraction=0.25, seed=3)
    base = dict(space="nb201", searcher="spos", train=train, channels=4, cells=1,
                evolution=TINY_EVOLUTION if changes.get("searcher", "spos") == "spos" else EvolutionSettings())
    base.update(changes)
    return NasSettings(**base)


def table_path(shared_data: Path) -> str:
    return str(shared_data / "nb201" / "nb201_test_accuracy.csv")


def test_evolution_scores_distinct_archs_and_finds_the_optimum_of_a_known_score():
    target = Arch(("nor_conv_3x3",) * 6)

    def score(arch: Arch) -> float:  # closer to the target is better
        return sum(a == b for a, b in zip(arch.ops, target.ops)) / 6

    records = evolutionary_search(Nb201Space(), score, EvolutionSettings(candidates=30, generations=15, mutation_prob=0.3), seed=0)
    archs = [r["arch"] for r in records]
    assert len(set(archs)) == len(archs)
    assert {r["phase"] for r in records} == {"random", "mutation", "crossover"}
    random_best = max(r["score"] for r in records if r["phase"] == "random")
    assert max(r["score"] for r in records) == 1.0 > random_best


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore:the ground truth has no accuracies measured on 'digits'")
def test_tiny_spos_search_with_asp_returns_an_arch_from_the_table(shared_data):
    settings = tiny_settings(ground_truth=table_path(shared_data))
    result = run_search(settings)
    s = result.summary
    table = GroundTruth.load(settings.ground_truth)
    assert Arch.parse(s["arch"]) in table
    assert s["nb201_cifar10_test"] == table.lookup(s["arch"])["cifar10_test"]
    for key in ("space", "searcher", "arch", "search_time_s", "data_passes", "nb201_cifar100_test",
                "nb201_imagenet16_120_test", "kendall_tau"):
        assert key in s
    # first epoch on all data, then half: 1 + 0.5 + 0.5 passes
    assert s["data_passes"] == pytest.approx(2.0, abs=0.01)
    assert list(result.epochs["metric_used"])[0] == "all" and s["strategy"] == "mixture"
    assert len(result.candidates) == s["candidates_scored"] == 8 + 2 * 6
    assert -1.0 <= s["kendall_tau"] <= 1.0 and s["tau_pairs"] == 50  # the uniform rank sample
    assert s["tau_pairs_candidates"] == len(result.candidates)
    assert s["supernet_val_accuracy"] == result.candidates["score"].max()


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore:the ground truth has no accuracies measured on 'digits'")
def test_kendall_tau_ranks_one_uniform_sample_per_seed_whatever_the_ratio_and_the_candidates_apart(shared_data):
    from asp_tune.quality import proxy_quality

    table = GroundTruth.load(table_path(shared_data))
    base = tiny_settings(ground_truth=table_path(shared_data), rank_sample=30)
    proxy = run_search(base)
    full = run_search(dataclasses.replace(base, train=base.train.replace(ratio=1.0, metric="none")))
    assert list(proxy.rank_sample["arch"]) == list(full.rank_sample["arch"])  # the same archs for every variant
    assert len(set(proxy.rank_sample["arch"])) == 30
    for result in (proxy, full):
        s, sample, cands = result.summary, result.rank_sample, result.candidates
        truth = [table.lookup(a)["cifar10_test"] for a in sample["arch"]]
        assert s["kendall_tau"] == pytest.approx(proxy_quality(sample["score"].to_numpy(), truth)["kendall_tau"])
        own = proxy_quality(cands["score"].to_numpy(), cands["nb201_cifar10_test"].to_numpy())
        assert s["kendall_tau_candidates"] == pytest.approx(own["kendall_tau"])
        assert (s["tau_pairs"], s["tau_pairs_candidates"], s["rank_sample_size"]) == (30, len(cands), 30)
        assert s["rank_sample_s"] > 0 and s["search_time_s"] == pytest.approx(
            s["supernet_train_s"] + s["selection_s"] + s["static_proxy_s"])  # scoring the sample counted apart
    # an arch scored as a candidate keeps its candidate's score
    both = proxy.rank_sample.merge(proxy.candidates, on="arch", suffixes=("", "_cand"))
    assert (both["score"] == both["score_cand"]).all()
    skipped = run_search(dataclasses.replace(base, rank_sample=0)).summary
    assert "kendall_tau" not in skipped and "kendall_tau_candidates" in skipped and "rank_sample_s" in skipped


def test_full_data_baseline_uses_every_sample_every_epoch():
    s = run_search(tiny_settings(train=tiny_settings().train.replace(ratio=1.0, metric="none"))).summary
    assert s["data_passes"] == pytest.approx(3.0) and "nb201_cifar10_test" not in s


@pytest.mark.parametrize("searcher_space", [("darts", "nb201"), ("darts", "darts")])
def test_darts_searches_complete(searcher_space):
    searcher, space = searcher_space
    s = run_search(tiny_settings(space=space, searcher=searcher, cells=1 if space == "nb201" else 3,
                                 train=tiny_settings().train.replace(epochs=2, subset=200))).summary
    if space == "nb201":
        Arch.parse(s["arch"])
    else:
        assert "none" not in s["genotype_str"] and len(s["genotype"]["normal"]) == 8
    assert s["data_passes"] == pytest.approx(1.5, abs=0.01)


class Stop(Exception):
    pass


def interrupted_in_epoch_two(settings, checkpoint: Path, run=run_search) -> None:
    """``run`` (a search or a retrain) stopped as its second epoch ends, before that epoch's checkpoint: only
    epoch 1's is saved."""
    def stop(record):
        if record["epoch"] == 2:
            raise Stop

    with pytest.raises(Stop):
        run(settings, checkpoint, on_epoch=stop)


@pytest.mark.slow  # several trainings
def test_search_resumes_from_its_checkpoint(tmp_path):
    settings = tiny_settings()
    ckpt = tmp_path / "search.pt"
    interrupted_in_epoch_two(settings, ckpt)
    assert torch.load(ckpt, weights_only=True)["trainer"]["epoch"] == 1  # saved after epoch 1 only
    seen = []
    resumed = run_search(settings, ckpt, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [2, 3]
    fresh = run_search(settings)
    assert resumed.summary["arch"] == fresh.summary["arch"]
    pd.testing.assert_series_equal(resumed.epochs["train_loss"], fresh.epochs["train_loss"], rtol=1e-5)
    assert resumed.summary["data_passes"] == fresh.summary["data_passes"]
    with pytest.raises(AspTuneError, match=r"other settings \(give the ones it was started with: channels=(\d+) or "
                                           r"--channels \1 \(this one's: 6\)\)"):
        run_search(tiny_settings(channels=6), ckpt)
    faster = dataclasses.replace(tiny_settings().train, lr=0.1)
    with pytest.raises(AspTuneError, match=r": lr=([\d.]+) or --lr \1 \(this one's: 0.1\)\)"):  # the field, not "train"
        run_search(tiny_settings(train=faster), ckpt)
    # what only matters after training (selection, ground truth) may change: the trained supernet is reused
    seen = []
    fewer = EvolutionSettings(**{**dataclasses.asdict(TINY_EVOLUTION), "candidates": 3})
    again = run_search(tiny_settings(evolution=fewer), ckpt, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [] and again.summary["resumed_from_epoch"] == 3


@pytest.mark.parametrize("searcher", ["spos", "darts"])
def test_monitoring_never_changes_training_so_a_resume_may_switch_it(tmp_path, searcher):
    settings = tiny_settings(searcher=searcher, train=tiny_settings().train.replace(epochs=2, subset=200))
    ckpt = tmp_path / "search.pt"
    interrupted_in_epoch_two(settings, ckpt)
    resumed = run_search(dataclasses.replace(settings, monitor=False), ckpt)
    assert resumed.summary["resumed_from_epoch"] == 1
    watched, unwatched = run_search(settings), run_search(dataclasses.replace(settings, monitor=False))
    assert list(watched.epochs["train_loss"]) == list(unwatched.epochs["train_loss"]) \
        == list(resumed.epochs["train_loss"])
    assert watched.summary["arch"] == unwatched.summary["arch"] == resumed.summary["arch"]
    assert unwatched.epochs["val_accuracy"].isna().all() and watched.epochs["val_accuracy"].notna().all()


@pytest.mark.parametrize("changes, field", [
    ({"space": "nasbench101"}, "space"),
    ({"searcher": "enas"}, "searcher"),
    ({"space": "darts", "cells": 3, "ground_truth": "table.csv"}, "ground_truth"),
    ({"space": "darts", "cells": 2}, "cells"),
    ({"order": 3}, "order"),
    ({"cells": 0}, "cells"),
    ({"evolution": EvolutionSettings(mutation_prob=0.0)}, "mutation_prob"),
])
def test_settings_errors_name_the_field(changes, field):
    with pytest.raises(ConfigError) as err:
        tiny_settings(**changes).validate()
    assert err.value.field == field


@pytest.mark.parametrize("arch", [0, (), ""])
def test_a_falsy_architecture_is_scored_as_itself_not_replaced_by_a_random_one(arch):
    from types import SimpleNamespace

    from nas.spos import SposTrainer

    class Model:
        def set_arch(self, value):
            self.arch = value

        def __call__(self, x):
            return x

    trainer = SimpleNamespace(scored_arch=arch, model=Model(), monitor_rng=None,
                              space=SimpleNamespace(random=lambda rng: "a random path"))
    SposTrainer.forward_eval(trainer, torch.zeros(1))
    assert trainer.model.arch == arch
    trainer.scored_arch = None  # monitoring: a random path
    SposTrainer.forward_eval(trainer, torch.zeros(1))
    assert trainer.model.arch == "a random path"


def test_aggregate_gives_mean_and_std():
    out = aggregate([{"search_time_s": 1.0, "data_passes": 2.0, "dataset": "cifar10", "arch": "a"},
                     {"search_time_s": 3.0, "data_passes": 2.0, "dataset": "cifar10", "arch": "b"}])
    assert out["search_time_s_mean"] == 2.0 and out["search_time_s_std"] == pytest.approx(2 ** 0.5)  # ddof=1
    assert out["data_passes_std"] == 0.0 and out["dataset"] == "cifar10" and "arch" not in out  # alike: kept


CLI_TINY = ["--epochs", "2", "--channels", "4", "--cells", "1", "--subset", "300", "--test-subset", "40",
            "--candidates", "5", "--generations", "1", "--mutations", "2", "--crossovers", "2", "--quiet"]


@pytest.mark.shared_data
def test_nas_cli_writes_results_and_removes_checkpoints(tmp_path, shared_data, capsys):
    out = tmp_path / "search"
    with pytest.warns(UserWarning, match="the ground truth has no accuracies measured on 'digits'"):
        code = main(["nas", *CLI_TINY, "--ratio", "0.5", "--metric", "loss", "--ratio-schedule", "dynamic",
                     "--nb201-table", table_path(shared_data), "--out", str(out)])
    assert code == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["space"] == "nb201" and summary["searcher"] == "spos" and summary["ratio_schedule"] == "dynamic"
    assert "nb201_cifar10_test" in summary and summary["ground_truth_matches_dataset"] is False
    assert "Kendall tau" in (said := capsys.readouterr().out)
    assert "(against nb201_cifar10_test, measured on another data set)" in said
    assert len(pd.read_csv(out / "candidates.csv")) == 9
    assert list(pd.read_csv(out / "epochs.csv")["epoch"]) == [1, 2]
    assert (out / "search.png").stat().st_size > 10_000
    assert not (tmp_path / ".search.checkpoints").exists()


def test_an_interrupted_nas_command_says_how_to_go_on_and_the_same_command_says_it_resumes(tmp_path, capsys,
                                                                                            monkeypatch):
    """Ctrl-C said only "interrupted; no results were committed", and the resumed run said nothing."""
    from asp_tune.trainer import Trainer

    out, train_epoch = tmp_path / "search", Trainer.train_epoch

    def interrupted_in_epoch_two(self):
        record = train_epoch(self)
        if record["epoch"] == 2:
            raise KeyboardInterrupt
        return record

    argv = ["nas", *CLI_TINY, "--epochs", "3", "--out", str(out)]
    monkeypatch.setattr(Trainer, "train_epoch", interrupted_in_epoch_two)
    assert main(argv) == 130
    err = capsys.readouterr().err
    kept = tmp_path / ".search.checkpoints"
    assert f"interrupted; no results were committed. The epochs trained are kept in {kept}: the same command " \
           "again resumes from them (--restart starts over)" in err
    assert (kept / "seed0.pt").is_file() and not out.exists()
    monkeypatch.setattr(Trainer, "train_epoch", train_epoch)
    assert main(argv) == 0
    assert f"resuming from seed0.pt in {kept} (--restart starts over)" in capsys.readouterr().err
    assert json.loads((out / "summary.json").read_text())["resumed_from_epoch"] == 1 and not kept.exists()


@pytest.mark.parametrize("args, message", [
    (["--space", "nb301"], "invalid space='nb301': allowed"),
    (["--searcher", "enas"], "invalid searcher='enas': allowed one of 'spos', 'darts'"),
    (["--space", "darts", "--cells", "2"], "invalid cells=2: allowed an integer >= 3 for the darts space"),
    (["--ratio", "0.5", "--metric", "none"], "invalid metric='none'"),
    (["--nb201-table", "/nonexistent.csv"], "invalid ground_truth="),
    (["--metric", "loss", "--ratio", "0.3", "--mutation-prob", "2"], "invalid mutation_prob=2.0"),
    (["--cpus-per-search", "2"], "invalid cpus_per_search=2.0: allowed its default 1.0: --cpus-per-search acts "
                                 "only on two or more --seeds"),
    (["--seeds", "4", "--gpus-per-search", "0.5"], "invalid gpus_per_search=0.5: allowed its default 0.0: "
                                                    "--gpus-per-search acts only on two or more --seeds"),
    (["--address", "auto"], "invalid address='auto': allowed its default None: --address acts only on two or more"),
    (["--max-failures", "2"], "invalid max_failures=2: allowed its default None: --max-failures acts only"),
])
def test_nas_cli_bad_input_is_one_error_and_no_results(tmp_path, capsys, args, message):
    out = tmp_path / "search"
    assert main(["nas", *CLI_TINY, *args, "--out", str(out)]) == 2
    assert message in capsys.readouterr().err
    assert not out.exists() and list(tmp_path.iterdir()) == []


@pytest.mark.slow  # several trainings
def test_nas_retrain_cli_trains_a_searched_genotype(tmp_path, capsys):
    search = tmp_path / "search"
    assert main(["nas", "--space", "darts", "--epochs", "1", "--channels", "2", "--cells", "3", "--subset", "100",
                 "--test-subset", "40", "--quiet", "--out", str(search)]) == 0
    out = tmp_path / "retrain"
    assert main(["nas-retrain", "--genotype", str(search / "summary.json"), "--channels", "4", "--layers", "3",
                 "--auxiliary", "true", "--cutout", "4", "--drop-path-prob", "0.2", "--epochs", "2", "--subset",
                 "200", "--test-subset", "40", "--quiet", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    searched = json.loads((search / "summary.json").read_text())
    assert summary["genotype"] == searched["genotype"] and 0.0 <= summary["final_test_accuracy"] <= 1.0
    assert summary["parameters"] > 0 and summary["config"]["cutout"] == 4
    assert main(["nas-retrain", "--genotype", "not_a_genotype", "--out", str(tmp_path / "x")]) == 2
    assert "invalid genotype='not_a_genotype'" in capsys.readouterr().err


@pytest.mark.slow
@pytest.mark.shared_data
def test_several_seeds_run_as_ray_tasks_and_are_summarised(tmp_path, shared_data):
    from asp_tune.tune.session import ensure_ray

    ensure_ray(num_cpus=2)
    out = tmp_path / "seeds"
    assert main(["nas", *CLI_TINY, "--ratio", "0.5", "--metric", "mixture", "--seeds", "1,2",
                 "--nb201-table", table_path(shared_data), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["seeds"] == [1, 2] and len(summary["arch"]) == 2 and len(summary["runs"]) == 2
    for key in ("search_time_s", "data_passes", "nb201_cifar10_test", "kendall_tau"):
        assert f"{key}_mean" in summary and f"{key}_std" in summary
    assert sorted(pd.read_csv(out / "epochs.csv")["seed"].unique()) == [1, 2]


@pytest.mark.slow
@pytest.mark.shared_data
@pytest.mark.parametrize("flag, value, message", [
    ("--gpus-per-search", "1", "invalid gpus_per_search=1.0: allowed 0 (no node of this Ray cluster has a GPU)"),
    ("--cpus-per-search", "64", "invalid cpus_per_search=64.0: allowed at most"),
])
def test_seeds_with_resources_no_node_has_are_refused_up_front(tmp_path, shared_data, capsys, flag, value, message):
    import time

    from asp_tune.tune.session import ensure_ray

    ensure_ray(num_cpus=2)
    out = tmp_path / "seeds"
    started = time.monotonic()
    assert main(["nas", *CLI_TINY, "--seeds", "1,2", flag, value, "--out", str(out)]) == 2
    assert time.monotonic() - started < 60  # refused, not waiting for a node that never comes
    assert message in capsys.readouterr().err
    assert not out.exists() and not (tmp_path / ".seeds.checkpoints").exists()


def test_a_seed_s_named_error_comes_back_as_itself_with_the_seed():
    from ray.exceptions import RayTaskError

    from nas.parallel import seed_failure

    cause = ConfigError("proxy_model", None, "a network")
    wrapped = RayTaskError("_search_task", "\x1b[36mTraceback (most recent call last) ...", cause).as_instanceof_cause()
    error = seed_failure(wrapped, 3)
    assert type(error) is ConfigError and error.field == "proxy_model"
    assert str(error) == "seed 3: invalid proxy_model=None: allowed a network"
    bug = RayTaskError("_search_task", "Traceback ...", KeyError("x")).as_instanceof_cause()
    assert seed_failure(bug, 3) is bug  # not asp_tune's: Ray's traceback is the help


def test_a_failing_seed_of_several_raises_its_own_error_not_ray_s(ray_session, tmp_path):
    from nas.parallel import run_seeds

    train = TrainConfig(dataset="cifar10", data_dir=str(tmp_path / "missing"), epochs=1, subset=100, test_subset=20)
    settings = tiny_settings(train=train).validate()
    with pytest.raises(DataError) as error:
        run_seeds(settings, [1, 2], None)
    assert type(error.value) is DataError and "\x1b[" not in str(error.value)
    assert str(error.value).startswith(("seed 1: cifar10 not found under", "seed 2: cifar10 not found under"))


@pytest.mark.slow
@pytest.mark.shared_data
def test_sigterm_to_a_seeds_search_exits_130_and_commits_nothing(tmp_path, shared_data):
    import signal
    import subprocess
    import sys
    import time

    out = tmp_path / "seeds"
    tiny = list(CLI_TINY)
    tiny[tiny.index("--epochs") + 1] = "200"  # long enough to be running when the signal comes
    command = [sys.executable, "-m", "asp_tune", "nas", *tiny, "--seeds", "1,2", "--out", str(out)]
    driver = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and not list(tmp_path.glob(".seeds.checkpoints/seed*.pt")):
        time.sleep(0.5)  # both searches started and checkpointed an epoch
    assert list(tmp_path.glob(".seeds.checkpoints/seed*.pt")), "no search checkpointed in time"
    driver.send_signal(signal.SIGTERM)
    _, err = driver.communicate(timeout=60)
    assert driver.returncode == 130, err[-2000:]
    assert "interrupted; no results were committed. The epochs trained are kept in" in err
    assert "Traceback" not in err and "SIGTERM" not in err
    assert not out.exists()


def test_a_supernet_too_large_for_memory_is_refused_before_it_is_built(tmp_path, capsys):
    import time

    out = tmp_path / "wide"
    started = time.monotonic()
    assert main(["nas", *CLI_TINY, "--channels", "4096", "--dataset", "digits", "--out", str(out)]) == 2
    err = capsys.readouterr().err
    assert "invalid channels=4096: allowed a network that fits in memory: its 25,837 M parameters" in err
    assert time.monotonic() - started < 30 and list(tmp_path.iterdir()) == []  # nothing allocated, nothing left


def test_network_sizes_are_measured_without_allocating():
    from torch import nn

    from asp_tune.sizes import TRAINING_COPIES, check_fits, network_size

    assert network_size(lambda: nn.Linear(1000, 1000)) == (1_001_000, 4_004_000)
    check_fits(lambda: nn.Linear(10, 10), torch.device("cpu"), "model", "tiny")  # fits: no error
    with pytest.raises(ConfigError, match=r"invalid width=200000: allowed a network that fits in memory: its "
                                          r"40,000 M parameters need at least 447\.0 GiB"):
        check_fits(lambda: nn.Linear(200_000, 200_000, bias=False), torch.device("cpu"), "width", 200_000)
    assert TRAINING_COPIES * 40_000 * 10**6 * 4 / 2**30 == pytest.approx(447.0, abs=0.05)

    def moves_tensors_itself():  # a network of one's own that cannot be built on the meta device
        return nn.Linear(10, 10).to("cpu")

    assert network_size(moves_tensors_itself) is None  # not estimated: the real build goes ahead
    assert network_size(lambda: nn.Sequential(nn.LazyLinear(4), nn.ReLU())) is None  # sizes known after a batch
    check_fits(moves_tensors_itself, torch.device("cpu"), "model", "mine")


def test_corrupt_or_foreign_checkpoints_are_one_clear_error(tmp_path):
    bad = tmp_path / "search.pt"
    bad.write_bytes(b"not a checkpoint")
    with pytest.raises(AspTuneError, match=r"cannot read checkpoint .*search.pt.*pass --restart"):
        run_search(tiny_settings(), bad)
    torch.save({"model": {}}, bad)
    with pytest.raises(AspTuneError, match="is not an asp_tune NAS checkpoint"):
        run_search(tiny_settings(), bad)


@pytest.mark.slow  # several trainings
def test_retrain_resumes_only_its_own_checkpoint(tmp_path):
    from nas.genotypes import KNOWN_GENOTYPES, Genotype
    from nas.retrain import run_retrain
    from nas.settings import RetrainSettings

    train = TrainConfig(dataset="digits", epochs=2, batch_size=64, subset=200, test_subset=40)
    settings = RetrainSettings(KNOWN_GENOTYPES["darts_v2"], train, channels=4, layers=3)
    ckpt = tmp_path / "retrain.pt"
    interrupted_in_epoch_two(settings, ckpt, run_retrain)  # the checkpoint holds epoch 1
    seen = []
    summary, epochs = run_retrain(settings, ckpt, on_epoch=lambda r: seen.append(r["epoch"]))
    assert seen == [2] and list(epochs["epoch"]) == [1, 2] and summary["epochs"] == 2
    other = Genotype(normal=KNOWN_GENOTYPES["darts_v2"].reduce, reduce=KNOWN_GENOTYPES["darts_v2"].normal)
    with pytest.raises(AspTuneError, match=r": genotype.normal differs; genotype.reduce differs\)"):
        run_retrain(RetrainSettings(other, train, channels=4, layers=3), ckpt)


def test_a_ground_truth_table_that_is_partial_or_of_another_data_set_is_said_and_costs_no_search(tmp_path):
    from nas.search import ground_truth_summary
    from nas.spaces import get_space

    known = ["|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_3x3~2|",
             "|nor_conv_1x1~0|+|none~0|none~1|+|none~0|none~1|nor_conv_1x1~2|",
             "|none~0|+|none~0|none~1|+|none~0|none~1|none~2|"]
    path = tmp_path / "partial.csv"
    pd.DataFrame({"arch": known, "cifar10_test": [94.0, 50.0, 10.0]}).to_csv(path, index=False)
    with pytest.warns(UserWarning, match="holds 3 of the 15625 NAS-Bench-201 architectures"):
        table = GroundTruth.load(path)
    unknown = "|skip_connect~0|+|none~0|none~1|+|none~0|none~1|none~2|"
    candidates = pd.DataFrame({"arch": [known[0], unknown, known[1], known[2]], "score": [0.9, 0.5, 0.4, 0.1]})
    with pytest.warns(UserWarning, match="1 of the architectures found or scored are not in the ground-truth table"):
        s = ground_truth_summary(get_space("nb201"), table, unknown, candidates, "cifar10")
    assert math.isnan(s["nb201_cifar10_test"]) and s["ground_truth_unknown"] == 1
    assert s["kendall_tau_candidates"] == pytest.approx(1.0) and s["tau_pairs_candidates"] == 3  # the known ones
    assert s["ground_truth_matches_dataset"] and not table.matches("digits") and not table.matches("cifar100")
    with pytest.warns(UserWarning, match="1 of the architectures"):
        assert not ground_truth_summary(get_space("nb201"), table, unknown, candidates, "digits")[
            "ground_truth_matches_dataset"]


def test_an_archive_given_as_the_ground_truth_is_one_short_error(tmp_path):
    import tarfile

    archive = tmp_path / "images.tar.gz"
    folder = tmp_path / "train"
    folder.mkdir()
    for i in range(3):
        (folder / f"{i}.txt").write_text("x")
    with tarfile.open(archive, "w:gz") as tar:
        tar.add(folder, arcname="train")
    with pytest.raises(DataError, match="not a readable CSV table") as raised:
        GroundTruth.load(archive)
    assert len(str(raised.value)) < 400


@pytest.mark.parametrize("changes, field", [
    ({"train": {"epochs": 2, "nope": 1}}, "nope"), ({"evolution": {"candidates": 3, "nope": 1}}, "evolution.nope"),
    ({"train": 3}, "train"), ({"ground_truth": 5}, "ground_truth"), ({"space": 3}, "space"),
    # the second-order step unrolls plain SGD: Adam crashed in the first batch (KeyError 'momentum'), Nesterov was off
    ({"searcher": "darts", "order": 2, "train": {"optimizer": "adam", "lr": 1e-3}}, "optimizer"),
    ({"searcher": "darts", "order": 2, "train": {"nesterov": True}}, "nesterov"),
])
def test_nas_settings_of_the_wrong_type_are_named(changes, field):
    with pytest.raises(ConfigError) as raised:
        NasSettings(**changes).validate()
    assert field in (raised.value.field, raised.value.value)  # a TrainConfig's unknown key is its value


def test_a_validation_split_too_small_to_score_on_is_warned_of_before_training():
    """--eval-batch-size 16 was refused, but --val-fraction 0.05 of 300 scored every candidate on one batch of 15,
    without a word."""
    from nas.search import supernet_trainer

    settings = tiny_settings(train=tiny_settings().train.replace(subset=300, val_fraction=0.05))
    with pytest.warns(UserWarning, match=r"the validation split holds 15 samples \(val_fraction 0.05 of 300\), "
                                         r"fewer than the 32"):
        trainer = supernet_trainer(settings)
    assert trainer.epoch == 0


def test_nas_settings_take_mappings_for_train_and_evolution():
    settings = NasSettings(train={"dataset": "digits", "epochs": 2}, evolution={"candidates": 3}).validate()
    assert settings.train.epochs == 2 and settings.evolution.candidates == 3


def test_candidates_all_scored_alike_are_said():
    from nas.search import all_tied

    assert all_tied(pd.DataFrame({"arch": ["a", "b", "c"], "score": [0.1, 0.1, 0.1]})).startswith(
        "all 3 candidates scored 0.1: the supernet tells none apart")
    assert all_tied(pd.DataFrame({"arch": ["a", "b"], "score": [0.1, 0.2]})) is None
    assert all_tied(pd.DataFrame({"arch": ["a"], "score": [0.1]})) is None


def test_a_checkpoint_that_stored_more_settings_than_are_asked_resumes(tmp_path):
    from nas.checkpoint import resume_run, save_run

    settings = tiny_settings()
    trainer = supernet_trainer_for(settings)
    path = tmp_path / "ckpt.pt"
    save_run(path, {**settings.training_dict(), "evolution": {"candidates": 9}}, trainer, 1.5)  # an older layout
    assert resume_run(path, settings.training_dict(), supernet_trainer_for(settings)) == (1.5, 0.0)
    with pytest.raises(AspTuneError, match=r"started with: channels=4 or --channels 4 \(this one's: 6\)\)"):
        resume_run(path, tiny_settings(channels=6).training_dict(), trainer)


def supernet_trainer_for(settings):
    from nas.search import supernet_trainer

    return supernet_trainer(settings)


def test_the_picture_of_a_search_of_several_seeds_ranks_each_seeds_candidates_alone(tmp_path):
    """Scores of two supernets do not rank together: the picture gives each seed's tau over its own candidates
    (one perfect, one backwards here) and their mean, as the summary does, and marks each seed's pick."""
    from nas.plots import plot_search, truth_title

    candidates = pd.DataFrame({"score": [1, 2, 3, 11, 12, 13], "acc": [1, 2, 3, 3, 2, 1], "seed": [1, 1, 1, 2, 2, 2],
                               "phase": ["sampled"] * 6})
    assert truth_title(candidates, "acc") == ("candidates against ground truth: mean Kendall tau 0.00\n"
                                              "(seed 1: 1.00, seed 2: -1.00)")
    one = candidates[candidates["seed"] == 2].drop(columns="seed")
    assert truth_title(one, "acc") == "candidates against ground truth: Kendall tau -1.00 (negative: ranks backwards)"
    epochs = pd.DataFrame({"epoch": [1, 2, 1, 2], "val_accuracy": [0.1, 0.2, 0.1, 0.3], "ratio": [0.5] * 4,
                           "seed": [1, 1, 2, 2]})
    assert plot_search(epochs, candidates, tmp_path / "search.png", "t", truth_column="acc").stat().st_size > 0


@pytest.mark.parametrize("ratio, schedule, strategy", [(0.5, "constant", "random"), (0.1, "constant", "random"),
                                                       (1.0, "constant", "none"), (1.0, "steps:1=0.3", "random")])
def test_auto_in_a_search_is_uniform_random_below_ratio_1_and_the_summary_says_so(ratio, schedule, strategy):
    """At ratio 1 under a schedule that leaves it, auto was none: the schedule's subsets were never drawn."""
    from nas.search import supernet_trainer

    settings = tiny_settings(train=tiny_settings().train.replace(metric="auto", ratio=ratio, ratio_schedule=schedule))
    assert supernet_trainer(settings).selector.metric == strategy  # HPO's auto: loss at 0.5, fixed_random at 0.1
    assert TrainConfig(ratio=ratio, ratio_schedule=schedule).resolved().metric != "none" or schedule == "constant"


def test_nas_help_says_what_auto_means_there_and_a_retrain_without_validation_refuses_a_scoring_model(capsys):
    from nas.genotypes import KNOWN_GENOTYPES
    from nas.settings import NAS_AUTO_METRIC, RetrainSettings

    with pytest.raises(SystemExit):
        main(["nas", "--help"])
    shown = " ".join(capsys.readouterr().out.split())
    assert f"auto ({NAS_AUTO_METRIC} below ratio 1, none at 1" in shown and "loss at >= 0.2" not in shown
    with pytest.raises(ConfigError, match="invalid val_fraction=0.0: allowed a fraction in \\(0, 1\\) with strategy "
                                          "'forgetting': its scoring model validates on a held-out split"):
        RetrainSettings(KNOWN_GENOTYPES["darts_v2"], TrainConfig(val_fraction=0.0, ratio=0.5, metric="forgetting",
                                                                 proxy_model="mlp")).validate()


def test_a_checkpoint_of_settings_since_grown_or_shrunk_resumes_and_names_only_what_differs(tmp_path):
    """A checkpoint written before the resume key dropped a setting (test_subset) was refused as 'train differs'."""
    from nas.checkpoint import resume_run, save_run
    from nas.search import supernet_trainer

    settings = tiny_settings()
    trainer = supernet_trainer(settings)
    key = settings.training_dict()
    older = {**key, "train": {**key["train"], "test_subset": 40}}
    save_run(tmp_path / "c.pt", older, trainer, 1.5)
    assert resume_run(tmp_path / "c.pt", key, supernet_trainer(settings))[0] == 1.5
    changed = {**key, "train": {**key["train"], "lr": 0.5}}
    with pytest.raises(AspTuneError, match=r"lr=.*\(this one's: 0.5\)"):
        resume_run(tmp_path / "c.pt", changed, supernet_trainer(settings))


def test_a_search_s_summary_says_what_auto_became():
    s = run_search(tiny_settings(train=tiny_settings().train.replace(metric="auto", epochs=1, subset=200))).summary
    assert (s["metric"], s["strategy"]) == ("auto", "random") and s["auto_resolution"].startswith("random: a search")


def test_reported_training_seconds_leave_out_validation_and_checkpoints(tmp_path, monkeypatch):
    import time

    from asp_tune.trainer import Trainer
    from nas import checkpoint

    evaluate, save_run, clock = Trainer.evaluate, checkpoint.save_run, time.perf_counter
    slept = [0.0]  # validation and checkpoints take 100 s each on this clock: no real sleep, no timing race
    monkeypatch.setattr(time, "perf_counter", lambda: clock() + slept[0])

    def slow_evaluate(self, *args, **kwargs):
        slept[0] += 100.0
        return evaluate(self, *args, **kwargs)

    def slow_save(*args, **kwargs):
        slept[0] += 100.0
        return save_run(*args, **kwargs)

    settings = tiny_settings(train=tiny_settings().train.replace(epochs=2, subset=200),
                             evolution=EvolutionSettings(candidates=2, generations=0, population=2, parents=1))
    monkeypatch.setattr(checkpoint, "save_run", slow_save)
    monkeypatch.setattr(SposTrainer, "evaluate", slow_evaluate)
    import nas.search as search_module

    build = search_module.supernet_trainer

    def slow_build(*args, **kwargs):  # loading the data and building the supernet: left out of the wall time before
        slept[0] += 1000.0
        return build(*args, **kwargs)

    monkeypatch.setattr(search_module, "supernet_trainer", slow_build)
    scores = iter(range(100))
    monkeypatch.setattr(SposTrainer, "score", lambda self, arch: next(scores))  # selection without evaluating
    s = run_search(settings, tmp_path / "search.pt").summary
    assert s["monitor_s"] >= 2 * 100 and s["checkpoint_s"] >= 2 * 100  # two epochs' validation and checkpoints
    assert s["supernet_train_s"] < 100 and s["search_time_s"] < 100  # neither counted as training or search
    assert s["wall_time_s"] >= s["search_time_s"] + s["monitor_s"] + s["checkpoint_s"]
    assert 1000 <= s["setup_s"] < 1100 and s["wall_time_s"] >= s["setup_s"] + s["monitor_s"] + s["checkpoint_s"]


@pytest.mark.parametrize("searcher, changes, field", [
    ("spos", {"order": 2}, "order"),
    ("spos", {"arch_lr": 5.0}, "arch_lr"),
    ("spos", {"grad_clip": 0.001}, "grad_clip"),
    ("darts", {"score_samples": 64}, "score_samples"),
    ("darts", {"rank_sample": 10}, "rank_sample"),
    ("darts", {"evolution": EvolutionSettings(mutation_prob=0.9)}, "mutation_prob"),
    ("darts", {"evolution": EvolutionSettings(candidates=3)}, "candidates"),
])
def test_a_setting_the_chosen_searcher_does_not_read_is_refused_by_name(searcher, changes, field):
    with pytest.raises(ConfigError, match=f"acts only on --searcher (spos|darts), not {searcher}") as err:
        tiny_settings(searcher=searcher, **changes).validate()
    assert err.value.field == field


def test_the_resume_key_leaves_out_other_searchers_settings_and_the_test_split():
    spos, darts = tiny_settings().training_dict(), tiny_settings(searcher="darts").training_dict()
    assert not {"order", "arch_lr", "arch_weight_decay", "grad_clip"} & set(spos)
    assert not {"evolution", "score_samples", "rank_sample"} & set(darts) and darts["order"] == 1
    assert "test_subset" not in spos["train"]


def test_a_search_resumes_with_another_test_subset(tmp_path):
    settings = tiny_settings(train=tiny_settings().train.replace(epochs=2, subset=200))
    ckpt = tmp_path / "search.pt"
    interrupted_in_epoch_two(settings, ckpt)
    resumed = run_search(dataclasses.replace(settings, train=settings.train.replace(test_subset=80)), ckpt)
    assert resumed.summary["resumed_from_epoch"] == 1


def test_scoring_in_batches_smaller_than_the_declared_minimum_is_refused_for_batch_statistics_supernets():
    from nas.spos import SposSearch

    small = tiny_settings().train.replace(eval_batch_size=SposSearch.min_eval_batch - 1)
    with pytest.raises(ConfigError, match=r"eval_batch_size=31: allowed at least 32: the spos supernet normalises"):
        tiny_settings(train=small).validate()
    tiny_settings(train=small.replace(eval_batch_size=32)).validate()
    tiny_settings(searcher="darts", train=small).validate()  # scores no candidates


def test_seed_beside_seeds_is_refused_by_name(tmp_path, capsys):
    for seed in ("5", "0"):  # its default given too: refused for being given
        code = main(["nas", *CLI_TINY, "--seeds", "1,2", "--seed", seed, "--out", str(tmp_path / "s")])
        assert code != 0 and f"invalid seed={seed}: allowed not given beside --seeds: --seeds sets each search's " \
                             "seed" in capsys.readouterr().err
        assert not (tmp_path / "s").exists()


def test_a_search_of_several_seeds_records_the_seeds_it_ran(tmp_path, monkeypatch):
    import asp_tune.tune.session as session
    import nas.parallel

    monkeypatch.setattr(session, "ensure_ray", lambda *a, **k: None)
    monkeypatch.setattr(session, "check_resources", lambda *a, **k: None)
    monkeypatch.setattr(nas.parallel, "run_seeds", lambda settings, seeds, *a, **k:
                        [run_search(settings.with_seed(s)) for s in seeds])
    out = tmp_path / "s"
    assert main(["nas", *CLI_TINY, "--epochs", "1", "--seeds", "1,2", "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["settings"]["seeds"] == [1, 2] and summary["settings"]["train"]["seed"] is None
    assert [r["seed"] for r in summary["runs"]] == [1, 2]


def test_only_searchers_that_score_candidates_get_a_selection_bar_and_a_rank_sample():
    from nas.settings import SEARCHERS

    assert SEARCHERS["spos"].scores_candidates and not SEARCHERS["darts"].scores_candidates


@pytest.mark.shared_data
@pytest.mark.filterwarnings("ignore:the ground truth has no accuracies measured on 'digits'")
def test_darts_on_nb201_reports_known_accuracy_but_no_rank_agreement(shared_data):
    s = run_search(tiny_settings(searcher="darts", ground_truth=table_path(shared_data),
                                 train=tiny_settings().train.replace(epochs=1, subset=200))).summary
    assert "nb201_cifar10_test" in s and "kendall_tau" not in s and "kendall_tau_candidates" not in s
    assert s["candidates_scored"] == 0 and s["darts_protocol"].startswith("fixed seeded partition")
