"""A search on a Ray cluster of several nodes, simulated on one machine (ray.cluster_utils.Cluster)."""

from __future__ import annotations

import pytest

from asp_tune.tune.runner import HpoSettings, run_hpo
from asp_tune.tune.space import parse_space

pytestmark = pytest.mark.slow

SPACE = {"name": "tiny", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 4, "subset": 400, "batch_size": 64},
         "params": {"lr": {"type": "loguniform", "low": 0.02, "high": 0.3}}}


@pytest.fixture()
def three_node_cluster():
    import ray
    from ray.cluster_utils import Cluster

    ray.shutdown()
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    for _ in range(2):
        cluster.add_node(num_cpus=1)
    cluster.wait_for_nodes()
    yield cluster
    ray.shutdown()
    cluster.shutdown()


def test_trials_spread_over_the_nodes_and_record_them(three_node_cluster, tmp_path):
    settings = HpoSettings(space=parse_space(SPACE), algo="random", ratio=0.5, metric="loss", num_samples=6,
                           max_concurrent=3, cpus_per_trial=1, address=three_node_cluster.address,
                           storage_path=str(tmp_path), verbose=0)
    result = run_hpo(settings)
    trials = result.trials
    assert result.summary["num_failed"] == 0 and len(trials) == 6
    nodes = set(trials["node_id"])
    assert "" not in nodes and len(nodes) >= 2  # 3 one-CPU nodes, 3 trials at a time
