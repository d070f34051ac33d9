"""Data-parallel loop API: two processes on gloo draw the same subset, shard it, and keep one memory."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.multiprocessing as mp

import ddp_worker


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.slow
def test_two_ranks_share_the_subset_shard_it_and_keep_equal_memories(tmp_path):
    mp.spawn(ddp_worker.worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert [r["world"] for r in ranks] == [2, 2]  # the process group was detected
    for epoch in range(3):
        a, b = (r["epochs"][epoch] for r in ranks)
        assert a["subset"] == b["subset"]  # both ranks drew the same subset
        subset = set(a["subset"])
        assert set(a["shard"]) | set(b["shard"]) == subset  # the shards cover it
        overlap = len(a["shard"]) + len(b["shard"]) - len(subset)
        assert overlap == (-len(subset)) % 2  # disjoint but for DistributedSampler's padding
        assert len(a["shard"]) == len(b["shard"])
        for key in ("latest", "counts"):  # the memory learnt from both ranks' batches
            assert torch.equal(a["memory"][key], b["memory"][key])
    # the memory counted every batch of both ranks: after the full epoch 0, 2 x 102 trainings (one padded)
    trained = ranks[0]["epochs"][0]["memory"]["counts"][:, -1]
    assert int(trained.sum()) == 204 and int((trained > 0).sum()) == 203
    # epoch 0 is full; the later ones at r = 0.3 of 203 samples: 61, split 31 + 31 (one repeated)
    assert len(ranks[0]["epochs"][1]["subset"]) == 61 and len(ranks[0]["epochs"][1]["shard"]) == 31
    # seen = trained by some rank, and samples_seen counts every rank's trained samples (after sync)
    for epoch in range(3):
        a, b = (r["epochs"][epoch] for r in ranks)
        counts = a["memory"]["counts"][:, -1]
        assert torch.equal(a["seen"], b["seen"]) and torch.equal(a["seen"], counts > 0)
        assert a["samples_seen"] == b["samples_seen"] == int(counts.sum())
    a, b = (r["epochs"][-1] for r in ranks)  # random, never-seen first, drop_last: 31-sample shards, 16 trained
    assert a["uniform_subset"] == b["uniform_subset"] and torch.equal(a["uniform_seen"], b["uniform_seen"])
    assert a["uniform_samples_seen"] == 3 * 2 * 16 == int(a["uniform_seen"].sum())  # 96 distinct samples
    before = ranks[0]["epochs"][-2]  # describe() before the last sync: two epochs counted, and it says why
    assert before["unsynced"] == 2 * 2 * 16 and any("call proxy.sync() on every rank" in s for s in before["said"])


def test_ranks_that_would_draw_different_subsets_or_replicas_the_group_lacks_are_refused(tmp_path):
    mp.spawn(ddp_worker.disagreeing_worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=True) for r in range(2)]
    assert ranks[0]["seed"].startswith("invalid seed=0: allowed the same on every rank (rank 1 has 1)")
    assert ranks[1]["seed"].startswith("invalid seed=1: allowed the same on every rank (rank 0 has 0)")
    assert "seed each rank's model, not its ProxyData" in ranks[1]["seed"]
    for rank, said in enumerate(ranks):
        assert said["replicas"].startswith("invalid num_replicas=3: allowed the process group's world size (2)")
        assert said["rank"].startswith(f"invalid rank={1 - rank}: allowed the process group's rank for this "
                                       f"process ({rank})")
        assert said["gather"].startswith("invalid num_replicas=3: allowed the process group's world size (2)")
