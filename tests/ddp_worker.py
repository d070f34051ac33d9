"""A two-process data-parallel loop on the gloo backend (started by tests/test_ddp.py)."""

from __future__ import annotations

import os

import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import DataLoader, TensorDataset


def data() -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(203, 5, generator=g)  # 203: not a multiple of the world size, and 0.3 of it is odd
    return TensorDataset(x, (x[:, 0] > 0).long())


def worker(rank: int, world: int, port: int, out: str) -> None:
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    import asp_tune

    torch.manual_seed(0)
    model = torch.nn.parallel.DistributedDataParallel(torch.nn.Linear(5, 2))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    proxy = asp_tune.ProxyData(data(), epochs=3, ratio=0.3, strategy="loss", seed=11)  # detects the group
    record = []
    for epoch in range(3):
        proxy.set_epoch(epoch)
        shard = []
        for idx, (x, y) in DataLoader(proxy, batch_size=16, sampler=proxy.sampler):
            logits = model(x)
            loss = proxy.update(idx, F.cross_entropy(logits, y, reduction="none"), logits=logits, targets=y)
            loss.backward(); opt.step(); opt.zero_grad()
            shard += idx.tolist()
        proxy.sync()  # what the next set_epoch does: both ranks record both ranks' batches
        record.append({"subset": proxy.plan.indices.tolist(), "shard": shard,
                       "memory": proxy.selector.memory.state_dict(), "len": len(proxy.sampler),
                       "seen": proxy.selector.seen.clone(), "samples_seen": proxy.samples_seen})
    # a strategy without statistics, never-seen samples first: the ranks share what they trained all the same
    uniform = asp_tune.ProxyData(data(), epochs=3, ratio=0.3, strategy="random", first_epoch_full=False, seed=11)
    for epoch in range(3):
        uniform.set_epoch(epoch)
        for idx, (x, y) in DataLoader(uniform, batch_size=16, sampler=uniform.sampler, drop_last=True):
            uniform.update(idx, F.cross_entropy(model(x), y, reduction="none"))
    import warnings

    with warnings.catch_warnings(record=True) as said:  # the last epoch not shared yet: describe() says so
        warnings.simplefilter("always")
        unsynced = uniform.describe()["samples_seen"]
    uniform.sync()
    record.append({"unsynced": unsynced, "said": [str(w.message) for w in said]})
    record.append({"uniform_seen": uniform.selector.seen.clone(), "uniform_samples_seen": uniform.samples_seen,
                   "uniform_subset": uniform.plan.indices.tolist()})
    torch.save({"rank": rank, "world": proxy.num_replicas, "epochs": record}, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()
    # leave without the interpreter's teardown, where gloo's threads can abort a process in C++; once in a full
    # suite's run a rank aborted so ("terminate called without an active exception"), when is not known
    os._exit(0)


def disagreeing_worker(rank: int, world: int, port: int, out: str) -> None:
    """Each rank seeds its ProxyData with its rank; also a num_replicas the group does not have."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    dist.init_process_group("gloo", rank=rank, world_size=world)
    import asp_tune
    from asp_tune.loop import _gather

    said = {}
    for case, call in (("seed", lambda: asp_tune.ProxyData(data(), 3, ratio=0.3, strategy="random", seed=rank,
                                                           first_epoch_full=False).set_epoch(0)),
                       ("replicas", lambda: asp_tune.ProxyData(data(), 3, ratio=0.3, num_replicas=3, rank=0)),
                       ("rank", lambda: asp_tune.ProxyData(data(), 3, ratio=0.3, num_replicas=2, rank=1 - rank)),
                       ("gather", lambda: _gather(torch.zeros(1, 2), 3))):
        try:
            call()
            said[case] = ""
        except asp_tune.ConfigError as exc:
            said[case] = str(exc)
    torch.save(said, f"{out}/rank{rank}.pt")
    dist.destroy_process_group()
    os._exit(0)
