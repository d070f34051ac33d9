"""A local search while another Ray cluster runs on the machine (a user's `ray start --head`)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import pytest
import yaml

pytestmark = pytest.mark.slow

CLUSTER = textwrap.dedent("""
    import sys
    from ray.cluster_utils import Cluster
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 1})
    print(cluster.address, flush=True)
    sys.stdin.read()  # until the test closes our standard input
    cluster.shutdown()
""")


def test_a_search_without_address_starts_its_own_ray_beside_a_running_cluster(tmp_path):
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    other = subprocess.Popen([sys.executable, "-c", CLUSTER], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                             text=True, env=env)
    try:
        address = other.stdout.readline().strip()
        assert ":" in address, "the other cluster did not start"
        space = tmp_path / "s.yaml"
        space.write_text(yaml.safe_dump({"name": "beside", "fixed": {"dataset": "digits", "model": "mlp", "epochs": 2,
                                                                     "subset": 300, "batch_size": 64},
                                         "params": {"lr": {"type": "grid", "values": [0.05, 0.1]}}}))
        out = tmp_path / "out"
        run = subprocess.run([sys.executable, "-m", "asp_tune", "hpo", "--space", str(space), "--algo", "random",
                              "--num-samples", "1", "--cpus-per-trial", "1", "--out", str(out),
                              "--storage-path", str(tmp_path / "ray"), "--verbose", "0"],
                             capture_output=True, text=True, env={**env, "RAY_ADDRESS": address}, timeout=300)
        assert run.returncode == 0, run.stderr[-2000:]
        assert "Traceback" not in run.stderr
        summary = json.loads((out / "summary.json").read_text())
        assert summary["num_trials"] == 2 and summary["num_failed"] == 0
        # the search did not run on the other cluster: it has one CPU and saw no job of ours
        assert other.poll() is None
    finally:
        other.stdin.close()
        other.wait(timeout=60)
