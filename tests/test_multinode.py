"""A search on a Ray cluster of several nodes, simulated on one machine (ray.cluster_utils.Cluster)."""

from __future__ import annotations

import pytest

from asp_tune.tune.builtin import run_hpo
from asp_tune.tune.settings import HpoSettings
from asp_tune.tune.space import parse_space
from asp_tune.tune.storage import trial_reports

pytestmark = pytest.mark.slow

SPACE = {"name": "tiny", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 4, "subset": 400, "batch_size": 64},
         "params": {"lr": {"type": "loguniform", "low": 0.02, "high": 0.3}}}


def test_half_a_gpu_per_trial_packs_four_trials_on_two_logical_gpus(local_cluster, tmp_path):
    """Two logical GPUs (no CUDA here): at 0.5 GPU per trial four trials run at once, two per GPU id,
    each recording the id Ray assigned it; without CUDA each says so and trains on the CPU."""
    cluster = local_cluster({"num_cpus": 4, "num_gpus": 2})
    space = parse_space({**SPACE, "fixed": {**SPACE["fixed"], "epochs": 60}})
    settings = HpoSettings(space=space, algo="random", num_samples=4, max_concurrent=4, cpus_per_trial=1,
                           gpus_per_trial=0.5, address=cluster.address, storage_path=str(tmp_path), verbose=0,
                           name="gpus", decide="proxy")
    trials = run_hpo(settings).trials
    assert (trials["status"] == "TERMINATED").all()
    assert sorted(trials["assigned_gpus"].astype(str)) == ["0", "0", "1", "1"]
    import torch

    if not torch.cuda.is_available():
        assert set(trials["device"]) == {"cpu"}
    spans = []
    for folder in (tmp_path / "gpus").glob("proxy_trial_*"):
        rows = trial_reports(folder)
        start = rows[0]["trial_started_at"]
        spans.append((start, start + rows[-1]["time_total_s"]))
    latest_start, earliest_end = max(s for s, _ in spans), min(e for _, e in spans)
    assert latest_start < earliest_end  # all four were running at once


@pytest.fixture(scope="module")
def three_node_cluster(module_cluster):
    """Shared by the tests after the first (which starts a cluster of its own, before this one starts)."""
    return module_cluster({"num_cpus": 1}, workers=2)


def test_trials_spread_over_the_nodes_and_record_them(three_node_cluster, tmp_path):
    settings = HpoSettings(space=parse_space(SPACE), algo="random", ratio=0.5, metric="loss", num_samples=6,
                           max_concurrent=3, cpus_per_trial=1, address=three_node_cluster.address,
                           storage_path=str(tmp_path), verbose=0, decide="proxy")
    result = run_hpo(settings)
    trials = result.trials
    assert result.summary["num_failed"] == 0 and len(trials) == 6
    nodes = set(trials["node_id"])
    assert "" not in nodes and len(nodes) >= 2  # 3 one-CPU nodes, 3 trials at a time


def test_a_cluster_search_without_shared_storage_is_refused_before_any_trial(three_node_cluster, tmp_path):
    from asp_tune.errors import ConfigError

    settings = HpoSettings(space=parse_space(SPACE), algo="random", num_samples=2, address=three_node_cluster.address,
                           verbose=0, name="refused")
    with pytest.raises(ConfigError, match=r"invalid storage_path=None: allowed a folder every one of the 3 nodes"):
        run_hpo(settings)
    assert settings.failures_allowed() == 3  # on a cluster a lost node is retried by default


def test_storage_may_be_a_uri(three_node_cluster, tmp_path):
    """A bucket URI works like a folder (file:// here: the same pyarrow file-system path as s3://, gs://)."""
    settings = HpoSettings(space=parse_space(SPACE), algo="random", num_samples=2, max_concurrent=2,
                           address=three_node_cluster.address, storage_path=tmp_path.as_uri(), verbose=0, name="uri")
    result = run_hpo(settings)
    assert result.summary["num_failed"] == 0 and result.summary["wall_time_s"] > 0
    assert (tmp_path / "uri" / "asp_tune_settings.json").is_file()
    assert (tmp_path / "uri" / "asp_tune_progress.json").is_file()
