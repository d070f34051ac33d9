"""The loop API (asp_tune.ProxyData) in a user's own loop: tabular floats, token sequences, regression."""

from __future__ import annotations

import math
import warnings

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, Dataset, TensorDataset

import asp_tune
from asp_tune import ConfigError, ProxyData
from asp_tune.proxy_scores import ProxyScores
from asp_tune.registry import STATIC_PROXY_NAMES
from asp_tune.strategies import EpochPlan, Importance, InfoBatchPruning, SubsetStrategy

N, CLASSES = 240, 3


def tabular(n: int = N) -> TensorDataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 6, generator=g)
    y = (x[:, 0] + 0.5 * x[:, 1] > 0).long() + (x[:, 2] > 1).long()
    return TensorDataset(x, y)


class Tokens(Dataset):
    """Integer token sequences of varying content; label = which of 3 marker tokens occurs most."""

    def __init__(self, n: int = N):
        g = torch.Generator().manual_seed(1)
        self.seqs = torch.randint(0, 20, (n, 12), generator=g)
        self.targets = torch.stack([(self.seqs == k).sum(1) for k in range(CLASSES)], 1).argmax(1)

    def __len__(self) -> int:
        return len(self.seqs)

    def __getitem__(self, i):
        return self.seqs[i], self.targets[i]


def fake_scores(n: int = N) -> ProxyScores:
    g = torch.Generator().manual_seed(2)
    return ProxyScores(loss=torch.rand(n, generator=g), entropy=torch.rand(n, generator=g),
                       least_confidence=torch.rand(n, generator=g),
                       forgetting=torch.randint(0, 4, (n,), generator=g).float(),
                       features=torch.randn(n, 5, generator=g).half(), seconds=0.1, model="mlp", epochs=1,
                       val_accuracy=0.5)


def run_loop(proxy: ProxyData, model: nn.Module, epochs: int, batch_size: int = 32, with_logits: bool = True,
             start: int = 0) -> list[list[int]]:
    opt = torch.optim.SGD(model.parameters(), lr=0.05)
    loader = DataLoader(proxy, batch_size=batch_size, sampler=proxy.sampler)
    picked = []
    for epoch in range(start, epochs):
        proxy.set_epoch(epoch)
        seen = []
        for idx, (x, y) in loader:
            logits = model(x)
            loss = proxy.update(idx, F.cross_entropy(logits, y, reduction="none"),
                                logits=logits if with_logits else None, targets=y if with_logits else None)
            loss.backward()
            opt.step()
            opt.zero_grad()
            seen += idx.tolist()
        picked.append(seen)
    return picked


def mlp() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, CLASSES))


def token_model() -> nn.Module:
    torch.manual_seed(0)

    class Bag(nn.Module):
        def __init__(self):
            super().__init__()
            self.embed = nn.EmbeddingBag(20, 8)
            self.head = nn.Linear(8, CLASSES)

        def forward(self, x):
            return self.head(self.embed(x))

    return Bag()


ASP_STRATEGIES = ("random", "loss", "entropy", "gradient", "logit_gradient", "prediction", "mixture")


@pytest.mark.parametrize("strategy", ASP_STRATEGIES + ("none", "infobatch", "auto") + STATIC_PROXY_NAMES)
@pytest.mark.parametrize("data", ["tabular", "tokens"])
def test_every_strategy_runs_in_a_users_loop(strategy, data):
    dataset, model = (tabular(), mlp()) if data == "tabular" else (Tokens(), token_model())
    ratio = 1.0 if strategy in ("none", "infobatch") else 0.25
    scores = fake_scores() if strategy in STATIC_PROXY_NAMES else None
    proxy = ProxyData(dataset, epochs=4, ratio=ratio, strategy=strategy, seed=3, proxy_scores=scores)
    sizes = proxy.epoch_sizes()
    picked = run_loop(proxy, model, 4)
    for epoch, seen in enumerate(picked):
        assert len(seen) == len(set(seen))  # no sample twice in an epoch
        if sizes[epoch] is not None:
            assert len(seen) == sizes[epoch]  # known before the epoch: step-based LR schedules fit
    if strategy not in ("none", "infobatch", "auto") and strategy != "fewer_epochs":
        assert all(len(s) == round(0.25 * N) for s in picked[1:])
    memory = proxy.selector.memory
    if proxy.selector.tracks_importance:  # the memory learnt from the training batches
        assert int((memory.times_trained > 0).sum()) == len(set(sum(picked, [])))
        for name in proxy.strategy.statistics():
            assert memory[name].abs().sum() > 0
    else:
        assert int(memory.times_trained.sum()) == 0  # nothing to learn: no work per batch
    assert proxy.describe()["samples_seen"] == sum(map(len, picked))
    if strategy == "random":  # no statistic to weigh: the selection rule plays no part and is not named
        assert proxy.describe()["rule"] == "uniform"
    elif strategy in ("loss", "mixture"):
        assert proxy.describe()["rule"] == "calibrated"


def test_the_returned_loss_carries_the_strategys_weights():
    proxy = ProxyData(tabular(), epochs=3, ratio=0.3, strategy="loss", reweight=True, seed=1)
    model = mlp()
    run_loop(proxy, model, 1)  # epoch 0 is full: weight 1
    plan = proxy.set_epoch(1)
    assert plan.weights is not None
    idx = plan.indices[:10].cpu()
    losses = torch.rand(10)
    expected = (losses * plan.weights[idx]).mean()
    assert torch.allclose(proxy.update(idx, losses), expected)
    # InfoBatch: kept low-loss samples are scaled by 1 / (1 - prune)
    ib = asp_tune.InfoBatch(tabular(), 4, prune_ratio=0.5, delta=0.75)
    run_loop(ib, mlp(), 1)
    plan = ib.set_epoch(1)
    assert set(plan.weights.unique().tolist()) <= {1.0, 2.0} and plan.count < N


def test_strategies_that_need_class_probabilities_say_so_without_logits():
    proxy = ProxyData(tabular(), epochs=3, ratio=0.3, strategy="entropy")
    proxy.set_epoch(0)
    with pytest.raises(ConfigError, match=r"without logits.*strategy 'entropy' reads entropy"):
        proxy.update(torch.arange(4), torch.rand(4))
    gradient = ProxyData(tabular(), epochs=3, ratio=0.3, strategy="gradient")
    gradient.set_epoch(0)
    with pytest.raises(ConfigError, match="without logits and targets"):
        gradient.update(torch.arange(4), torch.rand(4))
    # loss-only strategies need nothing but the per-sample loss
    loss_only = ProxyData(tabular(), epochs=3, ratio=0.3, strategy="loss")
    run_loop(loss_only, mlp(), 3, with_logits=False)
    assert loss_only.selector.memory["loss"].abs().sum() > 0
    with pytest.raises(ConfigError, match="reduction='none'"):
        loss_only.update(torch.arange(4), torch.tensor(1.0))


def test_labels_a_data_set_declares_for_other_samples_are_said_to_be_unused():
    class Rows(Dataset):
        targets = torch.zeros(35, dtype=torch.long)  # not one per sample

        def __len__(self):
            return 40

        def __getitem__(self, i):
            return torch.zeros(2), 0

    with pytest.warns(UserWarning, match=r"dataset.targets holds 35 labels for 40 samples: not used as class "
                                         r"labels, so selection is not balanced by class; pass labels="):
        proxy = ProxyData(Rows(), epochs=3, ratio=0.3, strategy="loss")
    assert proxy.selector.labels is None
    Rows.targets = ["cat", "dog"]  # class names, not labels per sample: looked past
    assert ProxyData(Rows(), epochs=3, ratio=0.3, strategy="loss").selector.labels is None
    Rows.targets, Rows.labels = torch.zeros(5, dtype=torch.long), torch.arange(40) % 2  # labels fit: used, unsaid
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert ProxyData(Rows(), epochs=3, ratio=0.3, strategy="loss").selector.labels.tolist()[:4] == [0, 1, 0, 1]


def test_a_misspelled_strategy_is_named_as_the_strategy():
    with pytest.raises(ConfigError, match="invalid strategy='los': allowed one of 'random', 'loss'"):
        ProxyData(tabular(), epochs=3, ratio=0.3, strategy="los")


def test_targets_that_name_no_column_of_the_logits_are_a_named_error():
    proxy = ProxyData(tabular(), epochs=3, ratio=0.3, strategy="loss")
    proxy.set_epoch(0)
    logits = torch.randn(4, 1, requires_grad=True)  # one output for a three-class problem
    with pytest.raises(ConfigError, match=r"invalid targets='labels 0..2': allowed class labels in \[0, 0\]: the "
                                          r"logits have 1 columns, one per class \(does the model's last layer"):
        proxy.update(torch.arange(4), torch.rand(4), logits=logits, targets=torch.tensor([0, 1, 2, 1]))
    with pytest.raises(ConfigError, match=r"labels -1..1"):
        proxy.update(torch.arange(4), torch.rand(4), logits=torch.randn(4, 3), targets=torch.tensor([0, 1, -1, 1]))
    proxy.update(torch.arange(4), torch.rand(4), logits=torch.randn(4, 3), targets=tabular().tensors[1][:4])


def test_regression_and_multi_label_losses_work_with_loss_only_strategies():
    g = torch.Generator().manual_seed(5)
    x = torch.randn(N, 4, generator=g)
    y = x @ torch.tensor([1.0, -2.0, 0.5, 0.0]) + 0.1 * torch.randn(N, generator=g)
    data = TensorDataset(x, y)  # float targets: no labels, so no class balance
    for strategy in ("loss", "random", "infobatch", "fixed_random"):
        proxy = ProxyData(data, epochs=5, ratio=1.0 if strategy == "infobatch" else 0.3, strategy=strategy)
        model = nn.Linear(4, 1)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for epoch in range(5):
            proxy.set_epoch(epoch)
            for idx, (xb, yb) in DataLoader(proxy, batch_size=32, sampler=proxy.sampler):
                loss = proxy.update(idx, (model(xb).squeeze(1) - yb) ** 2)
                loss.backward(); opt.step(); opt.zero_grad()
        with torch.no_grad():
            assert float(((model(x).squeeze(1) - y) ** 2).mean()) < float((y ** 2).mean())
    # multi-label: per-sample losses with a class dimension are averaged per sample
    proxy = ProxyData(data, epochs=2, ratio=0.5, strategy="loss")
    proxy.set_epoch(0)
    out = proxy.update(torch.arange(3), torch.ones(3, 5))
    assert float(out) == pytest.approx(1.0) and proxy.selector.memory["loss"][:3].tolist() == [1.0, 1.0, 1.0]
    with pytest.raises(ConfigError, match="invalid labels"):
        ProxyData(data, epochs=2, ratio=0.5, strategy="loss", class_balance=True)


def test_a_resumed_loop_makes_the_same_selections_and_reaches_the_same_weights():
    def fresh():
        return ProxyData(Tokens(), epochs=6, ratio=0.3, strategy="mixture", seed=7), token_model()

    straight, model_a = fresh()
    first = run_loop(straight, model_a, 3)
    state = straight.state_dict()
    weights = {k: v.clone() for k, v in model_a.state_dict().items()}
    rest = run_loop(straight, model_a, 6, start=3)
    resumed, model_b = fresh()
    resumed.load_state_dict(state)
    model_b.load_state_dict(weights)
    again = run_loop(resumed, model_b, 6, start=3)
    assert again == rest and first[0] != first[1]
    for k, v in model_a.state_dict().items():
        assert torch.allclose(v, model_b.state_dict()[k])
    # the state survives torch.save with weights_only (what a checkpoint does)
    import io

    buffer = io.BytesIO()
    torch.save(state, buffer)
    buffer.seek(0)
    assert torch.load(buffer, weights_only=True)["epoch"] == 2


def test_epoch_sizes_are_known_in_advance_for_onecycle():
    proxy = ProxyData(tabular(), epochs=5, ratio=0.25, strategy="loss", first_epoch_full=False)
    steps = proxy.steps_per_epoch(32)
    model = mlp()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=sum(steps))
    loader = proxy.loader(batch_size=32)  # a small last batch merged into the one before
    taken = 0
    for epoch in range(5):
        proxy.set_epoch(epoch)
        assert len(loader) == steps[epoch]
        for idx, (x, y) in loader:
            proxy.update(idx, F.cross_entropy(model(x), y, reduction="none")).backward()
            opt.step(); opt.zero_grad(); schedule.step(); taken += 1
    assert taken == sum(steps)  # exactly the steps announced: no "Tried to step N times"
    plain = proxy.steps_per_epoch(32, drop_last=True)
    assert plain == [len(DataLoader(list(range(s)), batch_size=32, drop_last=True)) for s in proxy.epoch_sizes()]
    ib = asp_tune.InfoBatch(tabular(), 4)
    assert ib.epoch_sizes()[1] is None and ib.steps_per_epoch(32)[1] == math.ceil(N / 32)  # an upper bound


def test_the_batch_sampler_never_ends_an_epoch_on_a_tiny_batch():
    proxy = ProxyData(tabular(450 * 10 // 3), epochs=2, ratio=0.3, strategy="random", first_epoch_full=False)
    batches = [len(b) for b in proxy.loader(batch_size=32).batch_sampler]
    assert sum(batches) == 450 and batches[-1] == 34 and len(proxy.loader(32)) == 14  # 450 = 13 x 32 + 34


@pytest.mark.filterwarnings("ignore:no proxy.update")  # counts samples, trains nothing
def test_an_object_strategy_and_the_loop_without_set_epoch():
    proxy = ProxyData(tabular(), epochs=3, strategy=Importance("loss", ratio=0.5, first_epoch_full=False))
    sampler_epochs = [list(proxy.sampler) for _ in range(3)]  # each iteration plans the next epoch
    assert [len(e) for e in sampler_epochs] == [120, 120, 120] and proxy.epoch == 2
    with pytest.raises(ConfigError, match="invalid ratio=0.3"):
        ProxyData(tabular(), epochs=3, ratio=0.3, strategy=Importance("loss", ratio=0.5))
    with pytest.raises(ConfigError, match="invalid epoch=5"):
        ProxyData(tabular(), epochs=3, ratio=0.5).set_epoch(5)
    with pytest.raises(ConfigError, match="invalid dataset"):
        ProxyData([1, 2, 3][0], epochs=3)
    with pytest.raises(ConfigError, match="invalid infobatch_prune=1.5"):
        InfoBatchPruning(1.5)


def epochs_trained(proxy: ProxyData, loader, epochs: int, second_pass: bool = False) -> list[tuple[int, int, int]]:
    """(epoch asked, epoch planned, samples) of each epoch of a loop; ``second_pass``: the loader walked again
    in each epoch (to measure the training accuracy, say)."""
    seen = []
    for epoch in range(epochs):
        proxy.set_epoch(epoch)
        count = sum(len(idx) for idx, _ in loader)
        if second_pass:
            assert sum(len(idx) for idx, _ in loader) == count
        seen.append((epoch, proxy.epoch, count))
    return seen


@pytest.mark.parametrize("workers", [0, 1, 2])
def test_a_loader_with_workers_trains_the_epochs_it_is_asked_for(workers):
    proxy = ProxyData(tabular(300), epochs=4, ratio=0.3, strategy="random")
    loader = proxy.loader(batch_size=32, num_workers=workers, persistent_workers=workers > 0)
    assert epochs_trained(proxy, loader, 4) == [(0, 0, 300), (1, 1, 90), (2, 2, 90), (3, 3, 90)]


@pytest.mark.filterwarnings("ignore:no proxy.update")  # counts samples, trains nothing
def test_a_second_pass_in_an_epoch_gives_the_same_subset_and_is_said_when_it_trains():
    proxy = ProxyData(tabular(300), epochs=3, ratio=0.3, strategy="loss")
    loader = proxy.loader(batch_size=32)
    assert epochs_trained(proxy, loader, 3, second_pass=True) == [(0, 0, 300), (1, 1, 90), (2, 2, 90)]
    model = mlp()
    proxy = ProxyData(tabular(300), epochs=3, ratio=0.3, strategy="loss")
    loader = proxy.loader(batch_size=32)
    proxy.set_epoch(0)
    for _ in range(2):  # set_epoch(1) forgotten: the second pass trains epoch 0's subset again, said once
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            for idx, (x, y) in loader:
                proxy.update(idx, F.cross_entropy(model(x), y, reduction="none"))
    assert [str(w.message) for w in caught] == ["epoch 0's subset is trained again (a second pass over the loader "
                                                "without set_epoch(1) before it); call set_epoch each epoch"]


def test_len_of_the_loader_inside_its_loop_is_this_epochs():
    proxy = ProxyData(tabular(300), epochs=4, ratio=0.3, strategy="random")
    loader = proxy.loader(batch_size=32)
    inside = []
    for epoch in range(4):
        proxy.set_epoch(epoch)
        batches = 0
        for i, _ in enumerate(loader):
            if i == 0:
                inside.append(len(loader))
            batches += 1
        assert inside[-1] == batches
    assert inside == [10, 3, 3, 3]  # 300 and 90 samples in batches of 32


@pytest.mark.filterwarnings("ignore:no proxy.update")  # counts samples, trains nothing
def test_a_state_saved_during_an_epoch_resumes_that_epoch_with_its_subset():
    def fresh():
        return ProxyData(tabular(300), epochs=6, ratio=0.3, strategy="loss", seed=3)

    straight, model = fresh(), mlp()
    loader = straight.loader(batch_size=32)
    for epoch in range(3):
        straight.set_epoch(epoch)
        for idx, (x, y) in loader:
            straight.update(idx, F.cross_entropy(model(x), y, reduction="none"))
    assert straight.next_epoch == 3
    straight.set_epoch(3)
    subset = straight.plan.indices.tolist()
    for idx, (x, y) in loader:  # one batch of epoch 3, then a checkpoint
        straight.update(idx, F.cross_entropy(model(x), y, reduction="none"))
        state = straight.state_dict()
        break
    resumed = fresh()
    resumed.load_state_dict(state)
    assert resumed.next_epoch == 3
    loader = resumed.loader(batch_size=32)
    for epoch in range(resumed.next_epoch, 6):
        resumed.set_epoch(epoch)
        trained = [i for idx, _ in loader for i in idx.tolist()]
        if epoch == 3:
            assert sorted(trained) == sorted(subset)  # the interrupted epoch again, whole, with its subset
    assert resumed.epoch == 5 and resumed.next_epoch == 6


@pytest.mark.filterwarnings("ignore:no proxy.update")  # plans only
def test_one_strategy_object_given_to_two_proxies_serves_each_its_own_data():
    strategy = Importance("loss", ratio=0.3)
    big = ProxyData(tabular(300), epochs=4, strategy=strategy)
    small = ProxyData(tabular(50), epochs=4, strategy=strategy)
    alone = ProxyData(tabular(300), epochs=4, strategy=Importance("loss", ratio=0.3))
    for epoch in range(3):
        plans = big.set_epoch(epoch), small.set_epoch(epoch), alone.set_epoch(epoch)
        assert [p.count for p in plans] == ([300, 50, 300] if epoch == 0 else [90, 15, 90])
        assert int(plans[1].indices.max()) < 50 and torch.equal(plans[0].indices, plans[2].indices)
    assert big.strategy is strategy and small.strategy is not strategy


def test_a_strategy_that_cannot_be_copied_is_refused_for_a_second_proxy():
    import threading

    strategy = Importance("loss", ratio=0.3)
    strategy.lock = threading.Lock()  # cannot be deep-copied
    ProxyData(tabular(100), epochs=2, strategy=strategy)
    with pytest.raises(ConfigError, match="serves one already and cannot be copied"):
        ProxyData(tabular(100), epochs=2, strategy=strategy)


def test_negative_labels_are_refused_when_given_and_unused_when_found():
    x, y = tabular(300).tensors
    y = y.clone()
    y[:10] = -100  # an ignore index
    with pytest.raises(ConfigError, match=r"invalid labels='labels down to -100': allowed class labels >= 0"):
        ProxyData(TensorDataset(x), epochs=3, ratio=0.3, labels=y)
    for bad in (torch.rand(300), torch.zeros(300, 2, dtype=torch.long)):
        with pytest.raises(ConfigError, match="allowed integer class labels of shape"):
            ProxyData(TensorDataset(x), epochs=3, ratio=0.3, labels=bad)
    with pytest.warns(UserWarning, match=r"last tensor holds negative integers \(such as -100\): not used"):
        proxy = ProxyData(TensorDataset(x, y), epochs=3, ratio=0.3, strategy="loss")
    model = mlp()
    loader = proxy.loader(batch_size=64)
    for epoch in range(3):  # trains without class balance: no index error at the next epoch's selection
        proxy.set_epoch(epoch)
        for idx, (xb, yb) in loader:
            proxy.update(idx, F.cross_entropy(model(xb), yb, reduction="none", ignore_index=-100))
    assert proxy.selector.labels is None and proxy.epoch == 2


def test_an_epoch_without_update_is_said_once_per_epoch_and_a_trained_one_is_not():
    proxy = ProxyData(tabular(300), epochs=3, ratio=0.3, strategy="loss")
    loader, model = proxy.loader(batch_size=64), mlp()
    proxy.set_epoch(0)
    for idx, (x, y) in loader:
        F.cross_entropy(model(x), y).backward()  # update() forgotten
    with pytest.warns(UserWarning, match=r"no proxy.update\(\) call in epoch 0: the memory learnt nothing, so "
                                         r"strategy 'loss' chose epoch 1's subset without it"):
        proxy.set_epoch(1)
    for idx, (x, y) in loader:
        proxy.update(idx, F.cross_entropy(model(x), y, reduction="none"))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        proxy.set_epoch(2)
        ProxyData(tabular(300), epochs=3, ratio=0.3, strategy="random").set_epoch(0)


def test_misuses_of_the_loop_api_are_named():
    data = tabular(300)
    with pytest.raises(ConfigError, match=r"invalid strategy='hardest': allowed a strategy that needs no scoring "
                                          r"model, or proxy_scores="):
        ProxyData(data, epochs=3, ratio=0.3, strategy="hardest")
    for bad in ({"shuffle": True}, {"drop_last": True}, {"sampler": None}):
        with pytest.raises(ConfigError, match=r"allowed left out: the proxy chooses and orders"):
            ProxyData(data, epochs=3, ratio=0.3).loader(32, **bad)
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match=r"invalid device='cuda': allowed 'cpu' \(no CUDA device"):
            ProxyData(data, epochs=3, ratio=0.3, device="cuda")
    with pytest.raises(ConfigError, match=r"invalid labels=None: allowed the samples' class labels for strategy "
                                          r"'loss': its subsets are balanced by class \(class_balance=True"):
        ProxyData(TensorDataset(data.tensors[0]), epochs=3, ratio=0.3, strategy="loss", class_balance=True)
    proxy = ProxyData(data, epochs=3, ratio=0.3, strategy="gradient")
    proxy.set_epoch(0)
    logits = mlp()(data.tensors[0][:4])
    with pytest.raises(ConfigError, match=r"invalid feature_norms=\(4, 16\): allowed one norm per sample, shape "
                                          r"\(4,\)"):
        proxy.update(torch.arange(4), F.cross_entropy(logits, data.tensors[1][:4], reduction="none"), logits=logits,
                     targets=data.tensors[1][:4], feature_norms=torch.rand(4, 16))


@pytest.mark.filterwarnings("ignore:no proxy.update")  # plans only
def test_a_state_of_another_ratio_or_more_epochs_is_refused_with_the_reason():
    saved = ProxyData(tabular(300), epochs=6, ratio=0.3, strategy="loss")
    for epoch in range(4):
        saved.set_epoch(epoch)
    state = saved.state_dict()
    with pytest.raises(ConfigError, match=r"saved by one like this \(300 samples, strategy 'loss', ratio 0.5, 6 "
                                          r"epochs\); it was saved at ratio 0.3, not 0.5"):
        ProxyData(tabular(300), epochs=6, ratio=0.5, strategy="loss").load_state_dict(state)
    with pytest.raises(ConfigError, match=r"it was saved at epoch 3, and this ProxyData has 2 epochs"):
        ProxyData(tabular(300), epochs=2, ratio=0.3, strategy="loss").load_state_dict(state)
    with pytest.raises(ConfigError, match=r"it was saved with strategy 'loss', not 'entropy'"):
        ProxyData(tabular(300), epochs=6, ratio=0.3, strategy="entropy").load_state_dict(state)


def test_labels_of_a_subset_are_its_parents_labels_at_its_indices():
    parent = tabular(300)
    part = torch.utils.data.Subset(parent, list(range(100, 200)))
    proxy = ProxyData(part, epochs=2, ratio=0.3, strategy="loss")
    assert torch.equal(proxy.selector.labels, parent.tensors[1][100:200])


@pytest.mark.filterwarnings("ignore:no proxy.update")  # counts samples, trains nothing
def test_a_loop_without_set_epoch_that_leaves_each_pass_early_still_goes_on_epoch_by_epoch():
    proxy = ProxyData(tabular(300), epochs=3, ratio=0.3, strategy="random", first_epoch_full=False)
    loader = proxy.loader(batch_size=32)
    planned = []
    for _ in range(3):
        for i, (idx, _batch) in enumerate(loader):
            proxy.update(idx, torch.rand(len(idx)))
            if i == 1:
                break  # a step limit, say
        planned.append(proxy.epoch)
    assert planned == [0, 1, 2] and proxy.samples_seen == 3 * 2 * 32  # the samples trained, not the 270 planned


@pytest.mark.filterwarnings("ignore:no proxy.update")
def test_a_peek_at_the_loader_before_set_epoch_is_no_second_pass_and_a_break_ends_the_epoch():
    proxy = ProxyData(tabular(300), epochs=3, ratio=0.3, strategy="loss")
    loader, model = proxy.loader(batch_size=32), mlp()
    next(iter(loader))  # shape inference
    for epoch in range(2):
        proxy.set_epoch(epoch)
        with warnings.catch_warnings():
            warnings.filterwarnings("error", message="epoch .* subset is trained again")
            for i, (idx, (x, y)) in enumerate(loader):
                proxy.update(idx, F.cross_entropy(model(x), y, reduction="none"))
                if epoch == 1 and i == 0:
                    break  # the rest of the epoch skipped on purpose
    assert proxy.next_epoch == 2  # the epoch left early is done, not resumed


def test_a_refused_state_leaves_the_proxy_as_it_was():
    saved = ProxyData(tabular(300), epochs=6, ratio=0.3, strategy="random")
    for epoch in range(4):
        saved.set_epoch(epoch)
    fresh = ProxyData(tabular(300), epochs=2, ratio=0.3, strategy="random")
    with pytest.raises(ConfigError, match="saved at epoch 3"):
        fresh.load_state_dict(saved.state_dict())
    assert fresh.epoch == -1 and fresh.samples_seen == 0 and not fresh.selector.seen.any()
    assert fresh.set_epoch(0).count == 300


@pytest.mark.filterwarnings("ignore:no proxy.update")
def test_a_strategy_handed_on_from_a_proxy_or_with_run_none_in_its_init_is_taken():
    class Own(Importance):
        def __init__(self):
            super().__init__("loss", ratio=0.3)
            self.run = None  # set before any run: not bound

    first = ProxyData(tabular(100), epochs=2, strategy=Own())
    second = ProxyData(tabular(60), epochs=2, strategy=first.strategy)  # handed on: copied as it was
    third = ProxyData(tabular(80), epochs=2, strategy=second.strategy)
    assert [(p.set_epoch(0).count, p.set_epoch(1).count) for p in (first, second, third)] == [
        (100, 30), (60, 18), (80, 24)]


# ---------------------------------------------------------------- reviewed defects of the loop API


def test_copies_to_the_host_block_and_update_moves_the_batchs_weights_not_the_plans(monkeypatch):
    """A non-blocking copy from a GPU to the host may still run when the host reads it (garbage in the memory);
    and update() moved the plan's N weights to the loss's device every batch to read B of them."""
    from asp_tune.memory import _non_blocking

    assert _non_blocking(torch.device("cuda", 0), torch.device("cpu")) is False
    assert _non_blocking(torch.device("cpu"), torch.device("cuda", 0)) is True
    assert _non_blocking(torch.device("cpu"), torch.device("cpu")) is False
    proxy = ProxyData(tabular(), epochs=3, ratio=0.25, strategy="loss", first_epoch_full=False, unseen_first=False)
    plan = proxy.set_epoch(0)
    assert plan.weights is not None  # reweighted: update() reads B weights
    moves: list[tuple[int, bool]] = []
    real = torch.Tensor.to
    monkeypatch.setattr(torch.Tensor, "to", lambda self, *a, **k: moves.append(
        (self.numel(), bool(k.get("non_blocking", False)))) or real(self, *a, **k))
    idx = plan.indices[:16]
    logits = torch.randn(16, CLASSES)
    proxy.update(idx, torch.rand(16), logits=logits, targets=tabular().tensors[1][idx])
    assert moves and not any(blocking for _, blocking in moves)  # to a CPU memory: every copy blocks
    assert max(numel for numel, _ in moves) < N  # the batch's values, never the N-long weight vector


def test_settings_a_strategy_object_or_infobatch_would_ignore_are_refused_by_name():
    data = tabular()
    with pytest.raises(ConfigError, match="invalid selection_rule='zscore': allowed left out beside a strategy "
                                          "object") as err:
        ProxyData(data, 4, strategy=Importance("loss", ratio=0.3), selection_rule="zscore", first_epoch_full=False)
    assert err.value.field == "selection_rule"
    with pytest.raises(ConfigError, match="invalid infobatch_prune=0.9: allowed left out: asp_tune.InfoBatch's "
                                          "prune_ratio= sets it"):
        asp_tune.InfoBatch(data, 8, infobatch_prune=0.9)
    with pytest.raises(ConfigError, match="invalid metric='entropy': allowed left out beside a strategy object"):
        asp_tune.InfoBatch(data, 8, metric="entropy")
    assert asp_tune.InfoBatch(data, 8, prune_ratio=0.9).strategy.prune == 0.9


def test_metric_naming_another_strategy_than_strategy_is_refused():
    data = tabular()
    with pytest.raises(ConfigError, match="invalid metric='entropy': allowed left out beside strategy='loss'"):
        ProxyData(data, 5, ratio=0.3, strategy="loss", metric="entropy")
    assert ProxyData(data, 5, ratio=0.3, strategy="loss", metric="loss").strategy.name == "loss"
    assert ProxyData(data, 5, ratio=0.3, metric="entropy").strategy.name == "entropy"  # beside the default auto


def test_a_strategy_without_a_ratio_and_a_step_past_the_last_epoch_are_refused():
    """ProxyData(ds, epochs=5, strategy="mixture") trained every epoch on all the data, the memory learning for
    nothing; steps:8=1.0 over 5 epochs never stepped (TrainConfig refused both)."""
    for strategy in ("mixture", "loss", "random", "fixed_random"):
        with pytest.raises(ConfigError, match=rf"invalid ratio=None: allowed the share of the data an epoch takes, "
                                              rf"for strategy '{strategy}'"):
            ProxyData(tabular(), 5, strategy=strategy)
    with pytest.raises(ConfigError, match=r"invalid ratio=None: allowed the share of the data an epoch takes, for "
                                          r"strategy 'loss'"):
        ProxyData(tabular(), 5, metric="loss")  # its other name
    assert ProxyData(tabular(), 5, ratio=1.0, strategy="loss").epoch_size(2) == len(tabular())
    assert ProxyData(tabular(), 5).epoch_size(2) == len(tabular())  # auto at ratio 1: full data, as documented
    with pytest.raises(ConfigError, match=r"ratio_schedule"):
        ProxyData(tabular(), 5, ratio=0.3, strategy="loss", ratio_schedule="steps:8=1.0")


def test_a_ratio_a_registered_strategy_ignores_is_refused():
    from asp_tune.registry import STRATEGIES
    from asp_tune.strategies import EpochPlan, SubsetStrategy

    class EveryThird(SubsetStrategy):
        name = "every_third_loop"

        def plan(self, epoch):
            idx = torch.arange(epoch % 3, self.run.num_samples, 3)
            return EpochPlan(epoch, idx[self._shuffled(idx.numel())], self.name, 1 / 3, 0.1)

    asp_tune.register_strategy("every_third_loop", EveryThird)
    try:
        with pytest.raises(ConfigError, match="invalid ratio=0.3: allowed left out for strategy 'every_third_loop', "
                                              r"which ignores it \(its own ratio is 1\)"):
            ProxyData(tabular(), 3, ratio=0.3, strategy="every_third_loop")
        assert ProxyData(tabular(), 3, strategy="every_third_loop").strategy.ratio == 1.0  # ratio left out
    finally:
        STRATEGIES.unregister("every_third_loop")


def test_steps_per_epoch_counts_a_plain_dataloaders_batches_with_merge_last_false():
    n, batch = 110, 8
    data = TensorDataset(torch.randn(n, 4), torch.arange(n) % 2)
    proxy = ProxyData(data, epochs=4, ratio=0.3, strategy="random", first_epoch_full=False)
    assert proxy.epoch_sizes() == [33] * 4
    assert proxy.steps_per_epoch(batch) == [4] * 4  # proxy.loader: the last sample joins the batch before
    assert proxy.steps_per_epoch(batch, merge_last=False) == [5] * 4
    loader = DataLoader(proxy, batch_size=batch, sampler=proxy.sampler)
    counted = []
    for epoch in range(4):
        proxy.set_epoch(epoch)
        counted.append(sum(1 for _ in loader))
    assert counted == proxy.steps_per_epoch(batch, merge_last=False)


def test_replicas_by_hand_without_a_process_group_are_refused_for_a_strategy_that_reads_the_memory():
    data = tabular()
    with pytest.raises(ConfigError, match="invalid num_replicas=2: allowed 1 without an initialised "
                                          "torch.distributed process group: strategy 'loss' reads the memory"):
        ProxyData(data, 4, ratio=0.3, strategy="loss", num_replicas=2, rank=0)
    ranks = [ProxyData(data, 4, ratio=0.3, strategy="random", num_replicas=2, rank=r) for r in range(2)]
    plans = [p.set_epoch(0).indices.tolist() for p in ranks]
    shards = [list(p.sampler) for p in ranks]
    assert plans[0] == plans[1] and set(shards[0]) | set(shards[1]) == set(plans[0])
    assert len(set(shards[0]) & set(shards[1])) == 0  # 72 of 240: an even split, no padding


@pytest.mark.parametrize("field, value, says", [
    ("num_replicas", 0, "invalid num_replicas=0: allowed an integer >= 1"),
    ("num_replicas", 2.7, "invalid num_replicas=2.7: allowed an integer >= 1"),
    ("num_replicas", "2", "invalid num_replicas='2': allowed an integer >= 1"),
    ("rank", 0.0, "invalid rank=0.0: allowed an integer >= 0"),
    ("labels", ["a"] * N, "invalid labels=\"str values such as 'a'\": allowed integer class labels"),
])
def test_replicas_ranks_and_labels_of_the_wrong_kind_are_named(field, value, says):
    with pytest.raises(ConfigError) as err:
        ProxyData(tabular(), 5, ratio=0.3, strategy="random", **{field: value})
    assert err.value.field == field and str(err.value).startswith(says)


def test_integer_targets_without_labels_are_said_once_naming_labels():
    x, y = tabular().tensors
    unlabelled = TensorDataset(x, y, torch.rand(N))  # the last tensor is a weight, not the label

    def first_updates(proxy):
        proxy.set_epoch(0)
        with warnings.catch_warnings(record=True) as said:
            warnings.simplefilter("always")
            for _ in range(2):
                proxy.update(torch.arange(8), torch.rand(8), logits=torch.randn(8, CLASSES), targets=y[:8])
        return [str(w.message) for w in said]

    said = first_updates(ProxyData(unlabelled, 3, ratio=0.3, strategy="loss"))
    assert len(said) == 1 and "not balanced by class; pass labels=" in said[0]
    assert first_updates(ProxyData(unlabelled, 3, ratio=0.3, strategy="loss", labels=y)) == []
    assert first_updates(ProxyData(unlabelled, 3, ratio=0.3, strategy="loss", class_balance=False)) == []
    assert first_updates(ProxyData(unlabelled, 3, strategy="none")) == []  # full data: nothing to balance


def test_update_computes_only_the_statistics_the_strategy_reads_and_keeps_every_column():
    proxy = ProxyData(tabular(), 3, ratio=0.3, strategy="loss")
    proxy.set_epoch(0)
    losses, targets = torch.rand(8) + 0.5, tabular().tensors[1][:8]
    proxy.update(torch.arange(8), losses, logits=torch.randn(8, CLASSES), targets=targets)
    memory = proxy.selector.memory
    assert torch.equal(memory["loss"][:8], losses) and float(memory["entropy"].abs().sum()) == 0.0
    assert int(memory.times_trained.sum()) == 8
    assert memory.state_dict()["latest_columns"] == list(memory.latest_columns)  # checkpoints keep every column
    entropy = ProxyData(tabular(), 3, ratio=0.3, strategy="entropy")
    entropy.set_epoch(0)
    entropy.update(torch.arange(8), losses, logits=torch.randn(8, CLASSES), targets=targets)
    assert float(entropy.selector.memory["entropy"][:8].min()) > 0 and float(entropy.selector.memory["loss"].sum()) == 0


def test_auto_without_a_full_first_epoch_is_the_early_stopping_choice():
    data = TensorDataset(torch.randn(300, 4), torch.arange(300) % 3)
    proxy = ProxyData(data, 6, ratio=0.3, first_epoch_full=False)
    assert proxy.strategy.name == "random" and proxy.selector.settings.class_balance is False
    seen: set[int] = set()
    for epoch in range(4):  # never-seen samples first: 90 new ones each epoch until all 300 were trained
        plan = proxy.set_epoch(epoch)
        seen |= set(plan.indices.tolist())
        proxy.update(plan.indices, torch.rand(plan.count))
        assert len(seen) == min(90 * (epoch + 1), 300)
    assert ProxyData(data, 6, ratio=0.3, first_epoch_full=False, class_balance=True).selector.settings.class_balance
    assert ProxyData(data, 6, ratio=0.3).strategy.name == "loss"  # with a full first epoch: loss, as measured


def test_another_ranks_unshared_batches_in_a_loaded_state_are_warned_naming_sync():
    proxy = ProxyData(tabular(), 4, ratio=0.3, strategy="loss")
    proxy.set_epoch(0)
    state = proxy.state_dict()
    assert (state["rank"], state["num_replicas"]) == (0, 1)
    width = 1 + len(proxy.selector.memory.latest_columns) * 2 + len(proxy.selector.memory.sum_columns)
    state["pending"], state["rank"], state["num_replicas"] = [torch.zeros(5, width, dtype=torch.float64)], 1, 2
    fresh = ProxyData(tabular(), 4, ratio=0.3, strategy="loss")
    with pytest.warns(UserWarning, match=r"5 samples' statistics that rank 1 of 2 had not yet shared .* loaded on "
                                         r"rank 0 of 1, .* call proxy.sync\(\) on every rank"):
        fresh.load_state_dict(state)
    assert fresh._pending == []  # left to the rank that owns them
    state["rank"], state["num_replicas"] = 0, 1  # its own rank's: kept, no warning
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        fresh.load_state_dict(state)
    assert len(fresh._pending) == 1


@pytest.mark.parametrize("delta", [2, -0.5, "0.9", True])
def test_infobatch_s_delta_is_refused_in_its_own_name(delta):
    """It read "invalid infobatch_anneal=-1.0", a setting the caller never gave."""
    from asp_tune.errors import ConfigError
    from asp_tune.loop import InfoBatch

    with pytest.raises(ConfigError, match=r"invalid delta=.*allowed a number in \[0, 1\]"):
        InfoBatch(torch.utils.data.TensorDataset(torch.randn(20, 3), torch.arange(20) % 2), 5, delta=delta)


def test_infobatch_prunes_the_epochs_the_reference_implementation_prunes():
    """It put the last ceil((1 - delta) E) epochs on all data: one pruned epoch fewer than InfoBatch's own
    ``iteration <= E * delta`` (10 epochs at delta 0.875: epochs 1..7 instead of 1..8)."""
    def pruned(epochs, delta):
        ib = asp_tune.InfoBatch(tabular(), epochs, delta=delta)
        return [e for e in range(epochs) if not ib.strategy.full_epoch(e)]

    assert pruned(10, 0.875) == list(range(1, 9)) and pruned(10, 0.7) == list(range(1, 8))
    assert pruned(8, 0.75) == list(range(1, 7)) and pruned(4, 1.0) == [1, 2, 3] and pruned(4, 0.0) == []
    ib = asp_tune.InfoBatch(tabular(), 10)
    assert ib.epoch_sizes() == [N] + [None] * 8 + [N]


@pytest.mark.parametrize("epoch", [1.0, True, "1", -1])
def test_set_epoch_takes_whole_numbers_only(epoch):
    """set_epoch(1.0) and set_epoch(True) were taken: the epoch became a float or a bool in warnings and states."""
    proxy = ProxyData(tabular(), epochs=3, ratio=0.3, strategy="random")
    proxy.set_epoch(0)
    with pytest.raises(ConfigError, match=f"invalid epoch={epoch!r}: allowed an integer >= 0"):
        proxy.set_epoch(epoch)
    assert proxy.epoch == 0 and type(proxy.set_epoch(1).epoch) is int


def test_a_data_set_that_fetches_batches_is_read_a_batch_at_a_time():
    """ProxyData had no __getitems__: a data set's batched fetching became one __getitem__ call per sample."""
    class Batched(Dataset):
        def __init__(self):
            self.data, self.single, self.batched = tabular(), 0, 0

        def __len__(self):
            return len(self.data)

        def __getitem__(self, i):
            self.single += 1
            return self.data[i]

        def __getitems__(self, indices):
            self.batched += 1
            return [self.data[i] for i in indices]

    data = Batched()
    proxy = ProxyData(data, epochs=2, ratio=0.5, strategy="random")
    proxy.set_epoch(0)
    batches = [(idx, x, y) for idx, (x, y) in proxy.loader(batch_size=64)]
    assert data.single == 0 and data.batched == len(batches) == 4
    idx, x, y = batches[0]
    assert torch.equal(x, tabular().tensors[0][idx]) and torch.equal(y, tabular().tensors[1][idx])
    assert [i for i, _ in proxy.__getitems__([5, 2])] == [5, 2]


def test_the_loaders_length_before_an_epoch_of_unknown_size_is_this_ranks_upper_bound():
    """Before an epoch whose size is known only once planned (InfoBatch's pruned ones), len gave the whole
    data set's size, not this rank's ceil(N / num_replicas) that steps_per_epoch gives."""
    class Unknown(SubsetStrategy):
        name, kind = "unknown", "ASP"

        def plan(self, epoch):
            return EpochPlan(epoch, self._shuffled(self.run.num_samples), self.name, 1.0, 0.1)

    proxy = ProxyData(tabular(), 4, strategy=Unknown(), num_replicas=2, rank=1)
    assert len(proxy.sampler) == math.ceil(N / 2) == proxy.steps_per_epoch(1, merge_last=False)[0] == 120


def test_the_inputs_a_batch_gives_are_decided_in_one_place():
    from asp_tune.memory import available_inputs

    logits, targets = torch.zeros(2, 3), torch.zeros(2, dtype=torch.long)
    assert available_inputs(None, logits, targets) == {"loss": True, "logits": True, "targets": True}
    assert available_inputs(None, logits, None) == {"loss": False, "logits": True, "targets": False}
    assert available_inputs(torch.zeros(2), None, None) == {"loss": True, "logits": False, "targets": False}


def test_labels_are_found_only_in_a_two_tensor_data_set_and_checked_against_the_first_targets():
    """TensorDataset(x, y, ids): the id column was taken as 1000 singleton classes, and class balance then
    trained samples 0..m-1 in every epoch. Found labels that are not the targets update() gets are an error."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(300, 6, generator=g)
    y = (x[:, 0] > 0).long()
    with_ids = ProxyData(TensorDataset(x, y, torch.arange(300)), epochs=3, ratio=0.3)
    assert with_ids.selector.labels is None and with_ids.selector.settings.class_balance is False
    proxy = ProxyData(TensorDataset(x, y), epochs=3, ratio=0.3, strategy="loss")
    assert torch.equal(proxy.selector.labels, y)
    proxy.set_epoch(0)
    proxy.update(torch.arange(4), torch.rand(4), logits=torch.randn(4, 2), targets=y[:4])  # they agree: taken
    shifted = ProxyData(TensorDataset(x, y), epochs=3, ratio=0.3, strategy="loss")
    shifted.set_epoch(0)
    with pytest.raises(ConfigError, match=r"invalid labels='the class labels found in the data set \(sample \d+: "
                                          r"\d, but update\(\) got target \d\)': allowed labels= \(one class label"):
        shifted.update(torch.arange(4), torch.rand(4), targets=1 - y[:4])  # a target transform, say
    unused = ProxyData(TensorDataset(x, y), epochs=3, ratio=0.3, strategy="loss", class_balance=False)
    unused.set_epoch(0)  # labels nothing reads are not checked: a target transform is the loop's own business
    unused.update(torch.arange(4), torch.rand(4), logits=torch.randn(4, 2), targets=1 - y[:4])


def _trained_loop(proxy: ProxyData, loader, epochs: int, stop_after: int | None = None) -> torch.Tensor:
    """Train ``epochs`` epochs, leaving each after ``stop_after`` batches; how often each sample reached update()."""
    trained, model = torch.zeros(len(proxy), dtype=torch.long), mlp()
    for epoch in range(epochs):
        proxy.set_epoch(epoch)
        for i, (idx, (x, y)) in enumerate(loader):
            proxy.update(idx, F.cross_entropy(model(x), y, reduction="none"))
            trained[idx] += 1
            if stop_after is not None and i + 1 == stop_after:
                break
    return trained


@pytest.mark.parametrize("strategy", ["loss", "random"])
def test_seen_means_trained_with_drop_last_and_break(strategy):
    """Planned samples counted as seen: with drop_last=True (or a break) the dropped ones never trained, kept a
    memory of 0 and were not picked first; samples_seen counted 432 where 384 were trained."""
    proxy = ProxyData(tabular(), epochs=6, ratio=0.3, strategy=strategy, first_epoch_full=False)
    trained = _trained_loop(proxy, DataLoader(proxy, batch_size=32, sampler=proxy.sampler, drop_last=True), 6)
    assert int(trained.sum()) == 6 * 64 == proxy.samples_seen and proxy.describe()["data_passes"] == 384 / N
    assert torch.equal(proxy.selector.seen, trained > 0)
    if strategy == "loss":
        assert torch.equal(proxy.selector.memory.times_trained, trained.int())
    broken = ProxyData(tabular(), epochs=4, ratio=0.3, strategy=strategy, first_epoch_full=False)
    trained = _trained_loop(broken, broken.loader(batch_size=32), 4, stop_after=1)
    assert torch.equal(broken.selector.seen, trained > 0) and broken.samples_seen == int(trained.sum()) == 4 * 32
    assert int((trained > 0).sum()) == 128  # never-seen samples first: 4 x 32 distinct samples trained


def test_a_checkpoint_with_loader_workers_reading_ahead_resumes_its_epoch():
    """With workers the sampler is exhausted while batches still wait: the epoch was saved as done and resumed at
    the next one, so its last batches were never trained."""
    def fresh():
        return ProxyData(tabular(600), epochs=4, ratio=0.5, strategy="loss", seed=0)

    proxy, model = fresh(), mlp()
    loader = proxy.loader(batch_size=32, num_workers=2)
    for epoch in range(2):
        proxy.set_epoch(epoch)
        for i, (idx, (x, y)) in enumerate(loader):
            proxy.update(idx, F.cross_entropy(model(x), y, reduction="none"))
            if epoch == 1 and i == len(loader) - 3:  # 2 batches left, already asked of the workers
                assert proxy._consumed  # the sampler's pass has ended
                state = proxy.state_dict()
        if epoch == 0:
            assert proxy.next_epoch == 1
    assert proxy.next_epoch == 2  # trained to its end
    resumed = fresh()
    resumed.load_state_dict(state)
    assert resumed.next_epoch == 1
    plain = fresh()  # a plain DataLoader that drops its last batch: the epoch is done all the same
    _trained_loop(plain, DataLoader(plain, batch_size=32, sampler=plain.sampler, drop_last=True, num_workers=2), 2)
    assert plain.next_epoch == 2


def test_indices_outside_the_epochs_subset_are_refused_naming_the_sampler():
    """DataLoader(proxy, shuffle=True) without sampler=proxy.sampler trained on all the data, with the plan's
    weights on samples it never selected, and said nothing."""
    proxy = ProxyData(tabular(), epochs=3, ratio=0.3, strategy="loss", first_epoch_full=False)
    proxy.set_epoch(0)
    loader = DataLoader(proxy, batch_size=32, shuffle=True)
    idx, (x, y) = next(iter(loader))
    with pytest.raises(ConfigError, match=r"invalid indices=.* outside epoch 0's subset .*allowed this epoch's "
                                          r"samples, .*sampler=proxy.sampler"):
        proxy.update(idx, torch.rand(32))
    assert proxy.samples_seen == 0 and not bool(proxy.selector.seen.any())


def test_a_nan_loss_keeps_the_samples_previous_value_and_is_said_once():
    """One NaN (or inf) loss made every z-score NaN-poisoned: selection went uniform (mean index 510 of 1000)."""
    n = 1000
    data = TensorDataset(torch.randn(n, 3), torch.zeros(n, dtype=torch.long))
    for bad in (float("nan"), float("inf")):
        proxy = ProxyData(data, epochs=4, ratio=0.1, strategy="loss", class_balance=False, seed=0)
        proxy.set_epoch(0)
        losses = torch.arange(n, dtype=torch.float32) / n  # sample i's loss grows with i
        proxy.update(torch.arange(n), losses)
        losses[7] = bad
        proxy.update(torch.arange(n), losses)  # a second pass with one overflowed loss
        with pytest.warns(UserWarning, match="update\\(\\) was given NaN or infinite losses"):
            plan = proxy.set_epoch(1)
        memory = proxy.selector.memory["loss"]
        assert bool(torch.isfinite(memory).all()) and float(memory[7]) == pytest.approx(7 / n)
        assert float(plan.indices.double().mean()) > 600 and plan.top10_mass > 0.15  # importance, not uniform
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            proxy.update(plan.indices[:2], torch.tensor([bad, 1.0]))
            proxy.set_epoch(2)  # said once
    from asp_tune.selection import normalise

    z = normalise(torch.tensor([0.0, 1.0, 2.0, float("nan"), float("inf"), -float("inf")]))
    assert bool(torch.isfinite(z).all()) and float(z[3]) == float(z[4]) == float(z[2]) and float(z[5]) == float(z[0])


def _pad(batch):
    """An ordinary padding collate of variable-length token sequences (it knows nothing of ProxyData)."""
    tokens, labels = zip(*batch)
    lengths = torch.tensor([len(t) for t in tokens])
    return torch.nn.utils.rnn.pad_sequence(tokens, batch_first=True), lengths, torch.stack(labels)


class VariableTokens(Dataset):
    """Token sequences of 2 to 20 tokens; the label is whether token 1 occurs."""

    def __init__(self, n: int = 60):
        g = torch.Generator().manual_seed(3)
        lengths = torch.randint(2, 21, (n,), generator=g)
        self.seqs = [torch.randint(1, 6, (int(k),), generator=g) for k in lengths]
        self.targets = torch.tensor([int((s == 1).any()) for s in self.seqs])

    def __len__(self):
        return len(self.seqs)

    def __getitem__(self, i):
        return self.seqs[i], self.targets[i]


def test_a_users_padding_collate_gets_plain_samples_from_proxy_loader():
    """The collate received (index, sample) pairs: pad_sequence failed with 'expected Tensor ... got int'."""
    data = VariableTokens()
    proxy = ProxyData(data, epochs=2, ratio=0.5, strategy="random")
    proxy.set_epoch(0)
    seen = []
    for idx, (tokens, lengths, y) in proxy.loader(batch_size=8, collate_fn=_pad):
        assert idx.dtype == torch.long and tokens.shape == (len(idx), int(lengths.max()))
        for row, i in enumerate(idx.tolist()):
            assert torch.equal(tokens[row, :lengths[row]], data.seqs[i]) and int(y[row]) == int(data.targets[i])
        proxy.update(idx, torch.rand(len(idx)))
        seen += idx.tolist()
    assert sorted(seen) == list(range(60))


def test_a_mask_averages_per_token_losses_over_each_samples_own_tokens():
    """Padding counted as zeros: sample 0 (3 tokens of loss 2) was remembered at 2.0 beside a 3-token companion
    and at 0.2 beside a 30-token one; with mask= it is 2.0 beside either."""
    data = TensorDataset(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    for companion in (3, 30):
        proxy = ProxyData(data, epochs=2, strategy="loss", ratio=1.0, class_balance=False)
        proxy.set_epoch(0)
        losses = torch.zeros(2, 30)
        losses[0, :3], losses[1, :companion] = 2.0, 1.0
        mask = torch.zeros(2, 30, dtype=torch.bool)
        mask[0, :3], mask[1, :companion] = True, True
        loss = proxy.update(torch.arange(2), losses, mask=mask)
        assert float(proxy.selector.memory["loss"][0]) == 2.0 and float(proxy.selector.memory["loss"][1]) == 1.0
        assert float(loss) == 1.5  # the mean of the samples' own means
    unmasked = ProxyData(data, epochs=2, strategy="loss", ratio=1.0, class_balance=False)
    unmasked.set_epoch(0)
    assert float(unmasked.update(torch.arange(2), losses)) == pytest.approx((0.2 + 1.0) / 2)  # zeros count
    with pytest.raises(ConfigError, match=r"invalid mask='shape \(2, 29\)': allowed a tensor of the losses' shape "
                                          r"\(2, 30\)"):
        unmasked.update(torch.arange(2), losses, mask=mask[:, 1:])


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("compiled", ["0", "1"])
@pytest.mark.parametrize("strategy", ["loss", "random"])
def test_update_with_a_cuda_memory_never_waits_for_the_gpu(monkeypatch, compiled, strategy):
    """update() copied the loader's indices to the device with a blocking copy (a stream synchronisation) on every
    reweighted batch. Everything after the first batch (whose targets are checked once) runs without a sync."""
    monkeypatch.setenv("ASP_TUNE_COMPILE", compiled)
    proxy = ProxyData(tabular(), epochs=3, ratio=0.3, strategy=strategy, device="cuda", reweight=True,
                      first_epoch_full=False, unseen_first=False)
    plan = proxy.set_epoch(0)
    assert plan.weights is not None
    model = mlp().cuda()
    x, y = tabular().tensors
    batches = [plan.indices[k:k + 16].cpu().pin_memory() for k in range(0, 64, 16)]
    for step, idx in enumerate(batches):
        xb = x[idx].cuda(non_blocking=True)
        yb = y[idx].cuda(non_blocking=True)
        if step == 1:
            torch.cuda.set_sync_debug_mode("error")
        try:
            logits = model(xb)
            loss = proxy.update(idx, F.cross_entropy(logits, yb, reduction="none"), logits=logits, targets=yb)
            loss.backward()
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert int(proxy.selector.seen.sum()) == 64 and proxy.samples_seen == 64
    if strategy == "loss":
        assert int(proxy.selector.memory.times_trained.sum()) == 64
