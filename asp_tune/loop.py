"""Proxy data in any PyTorch training loop: wrap the data set, use its sampler, pass the loss through.

::

    proxy = asp_tune.ProxyData(train_set, epochs=E, ratio=0.3)         # any map-style Dataset
    loader = DataLoader(proxy, batch_size=128, sampler=proxy.sampler)  # yields (indices, sample)
    for epoch in range(E):
        proxy.set_epoch(epoch)
        for idx, (x, y) in loader:
            logits = model(x)
            loss = proxy.update(idx, F.cross_entropy(logits, y, reduction="none"), logits=logits, targets=y)
            loss.backward(); optimizer.step(); optimizer.zero_grad()

The model, loss, optimiser and data are the user's; nothing of PyTorch is patched. Under
``torch.distributed`` every rank draws the same subset (same seed, same memory), takes its own
shard of it as ``DistributedSampler`` does, and the memory learns from every rank's batches
(gathered), so the ranks never drift apart. ``state_dict`` holds everything: a loop resumed from
it makes the same selections as one that never stopped.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
import warnings
from typing import Any, Iterator, Sequence

import torch
from torch.utils.data import Dataset, Sampler

from asp_tune.config import TrainConfig
from asp_tune.constraints import check_value
from asp_tune.device import host_values
from asp_tune.errors import ConfigError
from asp_tune.feeding import batch_slices
from asp_tune.memory import to_memory
from asp_tune.proxy import ProxySelector
from asp_tune.proxy_settings import ProxySettings, auto_strategy, check_steps_within
from asp_tune.strategies import EpochPlan, Importance, InfoBatchPruning, SubsetStrategy, make_strategy


def _find_labels(dataset: Any) -> torch.Tensor | None:
    """Integer class labels the data set declares (``targets``, as torchvision's do, or ``labels``,
    or the integer second tensor of a ``TensorDataset(x, y)``; a ``Subset``'s are its parent's), else None
    (said when it declared labels it cannot use: for other samples, or negative ones). A ``TensorDataset`` of
    three tensors or more is not read: its last integer tensor is as likely a sample, group or domain id."""
    if isinstance(dataset, torch.utils.data.Subset):  # its parent's labels, at its indices
        parent = _find_labels(dataset.dataset)
        return None if parent is None else parent[torch.as_tensor(dataset.indices, dtype=torch.long)]
    unfit = []
    for name in ("targets", "labels"):
        values = getattr(dataset, name, None)
        if values is not None:
            try:
                tensor = torch.as_tensor(values)
            except (TypeError, ValueError, RuntimeError):  # names, say: not labels per sample
                continue
            if tensor.dim() == 1 and not tensor.is_floating_point() and tensor.numel() == len(dataset):
                if _negative(tensor):
                    unfit.append(f"dataset.{name} holds negative labels (such as {int(tensor.min())})")
                    continue
                return tensor.long()
            if tensor.dim() == 1 and not tensor.is_floating_point():
                unfit.append(f"dataset.{name} holds {tensor.numel()} labels for {len(dataset)} samples")
    tensors = getattr(dataset, "tensors", None)
    if tensors and len(tensors) == 2 and tensors[-1].dim() == 1 and not tensors[-1].is_floating_point():
        if not _negative(tensors[-1]):
            return tensors[-1].long()
        unfit.append(f"the data set's last tensor holds negative integers (such as {int(tensors[-1].min())})")
    if unfit:
        warnings.warn(f"{' and '.join(unfit)}: not used as class labels, so selection is not balanced by class; pass "
                      "labels= (one class label >= 0 per sample) to balance it", stacklevel=3)
    return None


def _reason(exc: Exception) -> str:
    """Why a state did not load: our own words where we gave them, else the error, shortened."""
    text = str(exc)[:160]
    return text if text.startswith("it was saved") else f"this one does not fit ({type(exc).__name__}: {text})"


def _negative(labels: torch.Tensor) -> bool:
    return bool(labels.numel()) and int(labels.min()) < 0


def _distributed() -> tuple[int, int]:
    """(world size, rank) of the default process group, or (1, 0) without one."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        return torch.distributed.get_world_size(), torch.distributed.get_rank()
    return 1, 0


class ProxyData(Dataset):
    """A map-style data set whose :attr:`sampler` yields each epoch's proxy subset.

    ``strategy``: a name (``"auto"``: the best measured for ``ratio``, see
    :func:`asp_tune.proxy_settings.auto_strategy`; any ``metric`` name of ``asp-tune train``; an
    import path ``package.module:name``) or a :class:`~asp_tune.strategies.SubsetStrategy` object.
    ``settings``: any :class:`~asp_tune.proxy_settings.ProxySettings` field (``selection_rule``,
    ``top10_mass``, ``first_epoch_full``, ...), with the same defaults as ``TrainConfig``.

    ``labels`` (default: the data set's ``targets``/``labels``) are needed for class balance and for
    strategies that choose by class; when there are none and ``class_balance`` is not asked for,
    selection is not class-balanced (regression, multi-label). ``device``: where the memory and the
    selection live (default CPU; a GPU loop gains from ``device="cuda"``). ``num_replicas`` and
    ``rank`` default to the ``torch.distributed`` process group, if one is initialised.
    """

    def __init__(self, dataset: Dataset, epochs: int, ratio: float | None = None,
                 strategy: SubsetStrategy | str = "auto", *, labels: Sequence[int] | torch.Tensor | None = None,
                 seed: int = 0, device: torch.device | str = "cpu", num_replicas: int | None = None,
                 rank: int | None = None, proxy_scores: Any = None, **settings: Any):
        if not hasattr(dataset, "__getitem__") or not hasattr(dataset, "__len__"):
            raise ConfigError("dataset", type(dataset).__name__, "a map-style Dataset (with __getitem__ and __len__)")
        self.dataset = dataset
        size = len(dataset)  # type: ignore[arg-type]
        if size < 1:
            raise ConfigError("dataset", f"{size} samples", "a data set with at least 1 sample")
        if labels is not None:
            try:
                given = torch.as_tensor(labels)
            except (TypeError, ValueError, RuntimeError):
                first = labels[0] if len(labels) else labels
                raise ConfigError("labels", f"{type(first).__name__} values such as {first!r}"[:80],
                                  "integer class labels of shape (samples,)") from None
            if given.dim() != 1 or given.is_floating_point() or given.dtype == torch.bool:
                raise ConfigError("labels", f"{given.dtype} of shape {tuple(given.shape)}", "integer class labels of "
                                                                                           "shape (samples,)")
        label_tensor = given.long() if labels is not None else _find_labels(dataset)
        if label_tensor is not None and label_tensor.numel() != size:
            raise ConfigError("labels", f"{label_tensor.numel()} labels", f"one per sample ({size})")
        if labels is not None and _negative(label_tensor):
            raise ConfigError("labels", f"labels down to {int(label_tensor.min())}", "class labels >= 0, one per "
                                                                                    "sample (an ignore index such "
                                                                                    "as -100 has no class to balance: "
                                                                                    "leave labels out)")
        check_value(TrainConfig, "seed", seed)
        device = _checked_device(device)
        balance_given = "class_balance" in settings
        if isinstance(strategy, SubsetStrategy):
            if ratio is not None and abs(ratio - strategy.ratio) > 1e-12:
                raise ConfigError("ratio", ratio, f"none, or the strategy object's own ({strategy.ratio})")
            for name, value in settings.items():  # the object was built with its own settings
                raise ConfigError(name, value, f"left out beside a strategy object, which does not read it (set it "
                                               f"on the {type(strategy).__name__} object, or name the strategy: "
                                               f"strategy={strategy.name!r}, {name}=...)")
        else:
            settings["ratio"] = 1.0 if ratio is None else ratio
            check_steps_within(settings.get("ratio_schedule", "constant"), epochs)
            if "metric" in settings and strategy != "auto" and settings["metric"] != strategy:
                raise ConfigError("metric", settings["metric"], f"left out beside strategy={strategy!r} (metric is "
                                                                f"the strategy's other name), or equal to it")
            if "metric" not in settings:
                check_value(ProxySettings, "metric", strategy, "strategy")
            settings.setdefault("metric", strategy)
            if settings["metric"] == "auto" and settings.get("first_epoch_full") is False:
                # no full first pass: trials that start at the ratio (early stopping), where auto is its own
                check_value(ProxySettings, "ratio", settings["ratio"])
                chosen = auto_strategy(settings["ratio"], starts_at_ratio=True)
                settings.update({k: v for k, v in chosen.items() if k == "metric" or k not in settings})
            if label_tensor is None:
                settings.setdefault("class_balance", False)
        world, me = _distributed()
        self.num_replicas = world if num_replicas is None else _whole("num_replicas", num_replicas, 1)
        if rank is not None:
            _whole("rank", rank, 0)
        self.rank = me if rank is None else int(rank)
        if not 0 <= self.rank < self.num_replicas:
            raise ConfigError("rank", self.rank, f"an integer in [0, {self.num_replicas - 1}]")
        try:
            # "seen" means trained: marked by update() (under a process group, every rank's at sync); ranks
            # without a group cannot share what they trained, so there every planned sample counts as seen
            self.selector = ProxySelector(size, epochs, strategy if isinstance(strategy, SubsetStrategy) else None,
                                          seed=seed, device=device, labels=label_tensor, proxy_scores=proxy_scores,
                                          seen_when_planned=self.num_replicas > 1 and world == 1, **settings)
        except ConfigError as exc:  # the selector's field is this signature's strategy
            if exc.field != "metric" or "metric" in settings and settings["metric"] != strategy:
                raise
            allowed = exc.allowed
            if "scores of its proxy model" in allowed:
                allowed = ("a strategy that needs no scoring model, or proxy_scores=ProxyScores(...) "
                           "(asp_tune.proxy_scores: a scoring model's per-sample scores; asp-tune train makes them)")
            raise ConfigError("strategy", exc.value, allowed) from None
        named = None if isinstance(strategy, SubsetStrategy) else settings.get("metric", strategy)  # or metric=
        if ratio is None and named not in (None, "auto", "none") and \
                (isinstance(self.strategy, Importance) or self.strategy.kind == "static"):
            raise ConfigError("ratio", None, f"the share of the data an epoch takes, for strategy {named!r} "
                                             "(left out, every epoch took all of it and nothing was chosen; "
                                             "ratio=1.0 says so)")
        if ratio is not None and not isinstance(strategy, SubsetStrategy) and \
                abs(self.strategy.ratio - settings["ratio"]) > 1e-9:
            raise ConfigError("ratio", ratio, f"left out for strategy '{self.strategy.name}', which ignores it (its "
                                              f"own ratio is {self.strategy.ratio:g})")
        self._check_replicas(world, me)
        self.selector.memory.compute_only(self.strategy.statistics())  # the other columns cost nothing per batch
        # integer targets without labels for a strategy that would balance by class: said at the first such batch
        self._unlabelled = label_tensor is None and not balance_given and not isinstance(strategy, SubsetStrategy) \
            and make_strategy(self.selector.settings.metric,
                              dataclasses.replace(self.selector.settings, class_balance=True)).needs_labels
        self.seed = seed
        self._agreed = False  # the ranks' settings compared (data-parallel, at the first plan)
        self.epochs = epochs
        self.epoch = -1  # the epoch planned last
        self._updates: int | None = 0  # update() calls since the last plan (None: unknown, after a resume)
        self._consumed = True  # a pass over the planned epoch ended
        self._explicit = False  # the loop calls set_epoch (else each new pass plans the next epoch)
        self._passes = 0  # passes begun over the planned epoch
        self._replay_said = False
        self._labels_checked = False  # targets against the logits' columns, once on a device
        # labels found in the data set and used (class balance, a strategy by class): compared with the first
        # integer targets once; unused ones (a target transform may have made them other classes) are not checked
        self._labels_found = labels is None and label_tensor is not None and self.strategy.needs_labels
        self._nonfinite: torch.Tensor | None = None  # whether update() was given NaN/inf losses (on their device)
        self._nonfinite_said = False
        self._trained = 0  # samples this rank gave update() since the epoch was planned
        self._largest = 0  # its largest batch
        self._left_early = False  # the last pass over the loader was left before its end (a break)
        self._exact_pass = False  # the last pass was proxy.loader's (its batches cover the shard exactly)
        self._in_shard = torch.zeros(size, dtype=torch.bool)  # this rank's samples of the planned epoch (CPU)
        self.plan: EpochPlan | None = None
        self._pending: list[torch.Tensor] = []  # data-parallel: this rank's batches not yet shared
        self.sampler = ProxySampler(self)
        self.samples_seen = 0  # trained (given to update()), over all ranks (data-parallel: as of the last sync)

    # ------------------------------------------------------------------ Dataset

    def __len__(self) -> int:
        return len(self.dataset)  # type: ignore[arg-type]

    def _check_replicas(self, world: int, me: int) -> None:
        """``num_replicas``/``rank`` that the process group (or its absence) can serve."""
        if world > 1 and self.num_replicas > 1 and (self.num_replicas, self.rank) != (world, me):
            field, value, group = (("num_replicas", self.num_replicas, f"world size ({world})")
                                   if self.num_replicas != world else ("rank", self.rank, f"rank for this process ({me})"))
            raise ConfigError(field, value, f"the process group's {group}, or left out (num_replicas=1: each rank a "
                                            "run of its own)")
        if world == 1 and self.num_replicas > 1 and self.selector.tracks_importance:
            raise ConfigError("num_replicas", self.num_replicas,
                              f"1 without an initialised torch.distributed process group: strategy "
                              f"'{self.strategy.name}' reads the memory, which learns every rank's batches through "
                              "the group (without it the ranks learn apart and draw different subsets); call "
                              "init_process_group first, or use a strategy that reads no memory (random, "
                              "fixed_random)")

    def __getitem__(self, index: int) -> tuple[int, Any]:
        return index, self.dataset[index]

    def __getitems__(self, indices: list[int]) -> list[tuple[int, Any]]:
        """A batch's ``(index, sample)`` pairs, fetched at once where the wrapped data set can
        (its own ``__getitems__``, as Hugging Face ``datasets`` have), else sample by sample."""
        fetch = getattr(self.dataset, "__getitems__", None)
        samples = fetch(indices) if fetch is not None else [self.dataset[i] for i in indices]
        return list(zip(indices, samples))

    # ------------------------------------------------------------------ epochs

    @property
    def strategy(self) -> SubsetStrategy:
        return self.selector.strategy

    def set_epoch(self, epoch: int) -> EpochPlan:
        """Plan ``epoch`` (the epochs must come in order, as a loop runs them); returns its plan. Every pass
        over the loader until the next ``set_epoch`` gives this epoch's subset."""
        epoch = _whole("epoch", epoch, 0)
        self._explicit = True
        if epoch == self.epoch and self.plan is not None:  # this epoch again (after a peek at the loader, say)
            self._consumed, self._passes = False, 0
            self._start_counting()
        return self._plan(epoch)

    @property
    def next_epoch(self) -> int:
        """The epoch a loop starts (or, after ``load_state_dict``, resumes) with: ``for epoch in
        range(proxy.next_epoch, E)``. A state saved during an epoch resumes that epoch from its start, with
        the same subset; one saved after its pass ended, the epoch after."""
        return self.epoch if self.plan is not None and not self._epoch_done() else self.epoch + 1

    def _epoch_done(self) -> bool:
        """Whether the planned epoch was trained, decided on the training side: its pass over the loader ended
        and ``update()`` was given the pass's batches (all of ``proxy.loader``'s; all but less than a batch of a
        plain ``DataLoader``'s, which ``drop_last`` may drop), or the loop left the pass early (a ``break``), or
        no ``update()`` came at all (a pass that trains nothing). Loader workers read ahead: the sampler's
        pass may end while batches still wait to be trained, and those are not done."""
        if self.plan is None or not self._consumed:
            return False
        if self._left_early or self._trained == 0:
            return True
        missing = int(self._shard.numel()) - self._trained
        return missing <= 0 if self._exact_pass else missing < self._largest

    def _start_counting(self) -> None:
        """Forget what was trained of the planned epoch (it is planned, or begins again)."""
        self._trained, self._largest, self._left_early = 0, 0, False

    def _end_pass(self, ended: bool, exact: bool) -> None:
        """A pass over the sampler ended (``ended``: at its last index; else the loop left it); ``exact``: it
        gave proxy.loader's batches."""
        self._consumed, self._left_early, self._exact_pass = True, not ended, exact

    def _begin_pass(self) -> list[int]:
        """This rank's indices for a pass that begins now: the planned epoch's (a loop without ``set_epoch``:
        the next epoch's, planned now, once a pass over the last one ended)."""
        if self.plan is None or (not self._explicit and (self._passes > 0 or self._consumed)):
            self._plan(self.epoch + 1)
        self._passes += 1
        return self._shard.tolist()

    def _plan(self, epoch: int) -> EpochPlan:
        if epoch == self.epoch and self.plan is not None:
            return self.plan
        if epoch != self.epoch + 1:
            raise ConfigError("epoch", epoch, f"the next epoch, {self.epoch + 1} (epochs are planned in order; "
                                              "resume with load_state_dict)")
        if epoch >= self.epochs:
            raise ConfigError("epoch", epoch, f"an epoch below epochs={self.epochs}")
        if len(self.dataset) != self.selector.num_samples:  # type: ignore[arg-type]
            raise ConfigError("dataset", f"{len(self.dataset)} samples",  # type: ignore[arg-type]
                              f"the {self.selector.num_samples} samples it held when the ProxyData was made "
                              "(make a new ProxyData for a data set that grew or shrank)")
        if self._shared and not self._agreed:
            self._agree()
        self.sync()
        if epoch > 0 and self._updates == 0 and self.selector.tracks_importance:
            warnings.warn(f"no proxy.update() call in epoch {epoch - 1}: the memory learnt nothing, so strategy "
                          f"'{self.strategy.name}' chose epoch {epoch}'s subset without it; pass each batch's "
                          "per-sample losses through update()", stacklevel=3)
        if self._nonfinite is not None and not self._nonfinite_said and bool(self._nonfinite):  # one read an epoch
            self._nonfinite_said = True
            warnings.warn(f"update() was given NaN or infinite losses (by epoch {epoch - 1}): the memory kept those "
                          "samples' previous values, so selection goes on from the finite ones (under AMP, "
                          "overflowing half-precision logits give them: compute the loss in float32)", stacklevel=3)
        self._updates = 0
        self.plan = self.selector.plan(epoch)
        self.epoch = epoch
        self._consumed, self._passes = False, 0
        self._start_counting()
        self._set_shard(self._rank_shard(self.plan.indices))
        return self.plan

    def _set_shard(self, shard: torch.Tensor) -> None:
        """This rank's indices of the planned epoch, and their mask (on the CPU, where a loader's indices are)."""
        self._shard = shard
        self._in_shard = torch.zeros(self.selector.num_samples, dtype=torch.bool)
        self._in_shard[shard] = True

    def _agree(self) -> None:
        """Refuse ranks that would draw different subsets (another seed, ratio, strategy, data set or epochs):
        one collective, at the first plan."""
        mine = {"seed": self.seed, "ratio": self.strategy.ratio, "strategy": self.strategy.name,
                "dataset": f"{len(self)} samples", "epochs": self.epochs}
        every: list[Any] = [None] * self.num_replicas
        torch.distributed.all_gather_object(every, mine)
        self._agreed = True
        for other, theirs in enumerate(every):
            for name, value in mine.items():
                if theirs[name] != value:
                    raise ConfigError(name, value, f"the same on every rank (rank {other} has {theirs[name]!r}): "
                                                   "the ranks draw one subset and each takes its shard of it (seed "
                                                   "each rank's model, not its ProxyData)")

    def _rank_shard(self, indices: torch.Tensor) -> torch.Tensor:
        """This rank's share of the epoch's subset: every ``num_replicas``-th index from ``rank``,
        padded (by repeating the first ones) so every rank has the same number, as DistributedSampler."""
        indices = indices.cpu()
        if self.num_replicas == 1:
            return indices
        per_rank = math.ceil(indices.numel() / self.num_replicas)
        total = per_rank * self.num_replicas
        if total > indices.numel():
            repeats = math.ceil(total / indices.numel())
            indices = torch.cat([indices] * repeats)[:total]
        return indices[self.rank:total:self.num_replicas]

    def epoch_size(self, epoch: int | None = None) -> int | None:
        """Samples this rank trains on in ``epoch`` (default: the current one, or the first), known
        before the epoch starts; None where the strategy cannot know in advance (InfoBatch's pruned
        epochs)."""
        if epoch is None:
            epoch = max(self.epoch, 0)
        if epoch == self.epoch and self.plan is not None:
            return int(self._shard.numel())
        size = self.selector.epoch_size(epoch)
        return None if size is None else math.ceil(size / self.num_replicas)

    def epoch_sizes(self) -> list[int | None]:
        """:meth:`epoch_size` of every epoch of the run."""
        return [self.epoch_size(e) for e in range(self.epochs)]

    def steps_per_epoch(self, batch_size: int, drop_last: bool = False, merge_last: bool = True) -> list[int]:
        """Optimiser steps of each epoch of :meth:`loader`, whose small last batch joins the one before (with
        ``merge_last=False``: of a ``DataLoader(proxy, batch_size=B, sampler=proxy.sampler)``, which keeps it;
        with ``drop_last``: of one with ``drop_last=True``), for step-based LR schedules such as
        ``OneCycleLR``: ``total_steps=sum(...)``. Where an epoch's size is unknown in advance (InfoBatch),
        the full data set's steps are an upper bound, so a schedule never runs out."""
        check_value(TrainConfig, "batch_size", batch_size)
        full = math.ceil(len(self) / self.num_replicas)
        sizes = [full if s is None else s for s in self.epoch_sizes()]
        if drop_last:
            return [s // batch_size for s in sizes]
        return [len(batch_slices(s, batch_size)) if merge_last else math.ceil(s / batch_size) for s in sizes]

    def loader(self, batch_size: int, **kwargs: Any) -> "torch.utils.data.DataLoader":
        """A ``DataLoader`` over this epoch's subset in batches of ``batch_size`` (a small last batch
        merged into the one before, see :class:`ProxyBatchSampler`), yielding ``(indices, batch)``;
        ``kwargs`` go to the loader (``num_workers``, ``pin_memory``...; a ``collate_fn`` collates the
        plain samples, as it would without the proxy)."""
        from torch.utils.data import DataLoader

        for name in ("shuffle", "sampler", "batch_sampler", "drop_last"):
            if name in kwargs:
                raise ConfigError(name, kwargs[name], "left out: the proxy chooses and orders each epoch's samples "
                                                      "(for drop_last: DataLoader(proxy, batch_size=B, "
                                                      "sampler=proxy.sampler, drop_last=True))")
        if kwargs.get("collate_fn") is not None:  # the user's collate sees plain samples, as without the proxy
            kwargs["collate_fn"] = _IndexedCollate(kwargs["collate_fn"])
        return DataLoader(self, batch_sampler=ProxyBatchSampler(self, batch_size), **kwargs)

    # ------------------------------------------------------------------ learning

    def update(self, indices: torch.Tensor | Sequence[int], losses: torch.Tensor, logits: torch.Tensor | None = None,
               targets: torch.Tensor | None = None, feature_norms: torch.Tensor | None = None,
               mask: torch.Tensor | None = None) -> torch.Tensor:
        """Learn from one trained batch and return the loss to backpropagate: the mean of the
        per-sample ``losses`` (``reduction="none"``; extra dimensions are averaged per sample, over the
        positions where ``mask``, of the losses' shape, is nonzero: padding left out), each weighted by the
        strategy's weight for this epoch (unbiased reweighting, InfoBatch rescaling).

        ``indices`` are the loader's (this epoch's samples; on the CPU they are checked against the epoch's
        subset). ``logits``/``targets`` feed the statistics that need class probabilities (entropy, gradient,
        prediction) and class balance; a strategy that reads them says so when they are missing.
        Under ``torch.distributed`` each rank computes its batch's statistics now; the ranks exchange
        them at the next ``set_epoch`` (or :meth:`sync`), so every rank's memory learns the same values."""
        if self.plan is None:
            raise ConfigError("update", "before set_epoch", "a call after set_epoch(epoch) planned the epoch")
        if not isinstance(losses, torch.Tensor) or losses.dim() == 0:
            raise ConfigError("losses", type(losses).__name__ if not isinstance(losses, torch.Tensor) else "a scalar",
                              "per-sample losses, shape (batch, ...): compute the loss with reduction='none'")
        if not losses.is_floating_point():
            raise ConfigError("losses", str(losses.dtype), "floating-point per-sample losses")
        per_sample = _per_sample(losses, mask)
        batch = per_sample.shape[0]
        if self._updates is not None:
            self._updates += 1
        if feature_norms is not None and (not isinstance(feature_norms, torch.Tensor)
                                          or feature_norms.shape != per_sample.shape):
            raise ConfigError("feature_norms", tuple(feature_norms.shape) if isinstance(feature_norms, torch.Tensor)
                              else type(feature_norms).__name__,
                              f"one norm per sample, shape ({batch},): the norm of each sample's "
                              "penultimate features, which the gradient statistic scales by")
        given = self._checked_indices(indices, batch)  # where the loader left them (the CPU)
        _check_batch(logits, targets, batch)
        if logits is not None and targets is not None and (targets.device.type == "cpu" or not self._labels_checked):
            _check_labels_fit(logits, targets)  # on the CPU every batch; on a device the first batch only
            self._labels_checked = True
        if self._unlabelled and logits is not None and targets is not None:
            self._unlabelled = False
            warnings.warn("update() is given integer class targets, but ProxyData found no class labels in the data "
                          "set (its targets or labels, or the second tensor of a TensorDataset(x, y)), so selection "
                          "is not balanced by class; pass labels= (one class label per sample) to balance it",
                          stacklevel=2)
        if self._passes > 1 and not self._replay_said:
            self._replay_said = True
            warnings.warn(f"epoch {self.epoch}'s subset is trained again (a second pass over the loader without "
                          f"set_epoch({self.epoch + 1}) before it); call set_epoch each epoch", stacklevel=2)
        # the indices go to the selector's device once (without waiting: from pinned memory, a loader's
        # pin_memory=True, the copy overlaps), for the memory, the seen mask and the weights alike
        idx = to_memory(given, self.selector.device)
        if self._labels_found and targets is not None and targets.dim() == 1 and not targets.is_floating_point():
            self._labels_found = False
            self._check_found_labels(idx, targets)  # once: one read from a device
        self._trained += batch
        self._largest = max(self._largest, batch)
        detached = per_sample.detach()
        if self.selector.tracks_importance:
            finite = torch.isfinite(detached).all()  # told at the next plan: no wait here
            self._nonfinite = ~finite if self._nonfinite is None else self._nonfinite | ~finite
        if self._shared:  # shared with the other ranks at the next sync: the memory, seen samples and counts
            self._share(idx, detached, logits, targets, feature_norms)
        else:
            self.samples_seen += batch
            self.selector.mark_trained(idx)
            if self.selector.tracks_importance:
                self.selector.observe(idx, logits, targets, feature_norms, detached)
        if self.plan.weights is not None:  # the batch's B weights, gathered on their device
            weights = self.plan.weights.index_select(0, idx)
            per_sample = per_sample * to_memory(weights, per_sample.device).to(per_sample.dtype)
        return per_sample.mean()

    def _check_found_labels(self, idx: torch.Tensor, targets: torch.Tensor) -> None:
        """The labels found in the data set are the targets ``update()`` is given (else they are not labels:
        an id column, say, or a target transform)."""
        found = self.selector.labels.index_select(0, idx).to(targets.device)
        if not torch.equal(found, targets.long()):
            wrong = int(torch.nonzero(found != targets.long())[0, 0])
            raise ConfigError("labels", f"the class labels found in the data set (sample {int(idx[wrong])}: "
                                        f"{int(found[wrong])}, but update() got target {int(targets[wrong])})",
                              "labels= (one class label >= 0 per sample: the targets update() is given), or "
                              "class_balance=False with a strategy that needs no labels")

    def _checked_indices(self, indices: Any, batch: int) -> torch.Tensor:
        """The batch's sample indices, one per loss, in range and of this epoch's subset (checked where they
        are: on the CPU, as a loader yields them, without a device round trip)."""
        idx = torch.as_tensor(indices)
        if idx.dim() != 1 or idx.is_floating_point() or idx.dtype == torch.bool:
            raise ConfigError("indices", f"{idx.dtype} of shape {tuple(idx.shape)}", "integer sample indices of "
                                                                                     "shape (batch,)")
        if idx.shape[0] != batch:
            raise ConfigError("indices", f"{idx.shape[0]} indices for {batch} losses",
                              f"one per loss ({batch}): the batch's indices with its per-sample losses (unreduced, "
                              "reduction='none'), both of every sample of the batch")
        n = self.selector.num_samples
        if idx.device.type == "cpu" and idx.numel():
            if int(idx.min()) < 0 or int(idx.max()) >= n:
                raise ConfigError("indices", f"{int(idx.min())}..{int(idx.max())}", f"indices in [0, {n - 1}] (the "
                                                                                       "ones the loader yields)")
            outside = ~self._in_shard[idx]
            if bool(outside.any()):
                raise ConfigError("indices", f"{int(outside.sum())} of {batch} outside epoch {self.epoch}'s subset "
                                             f"(such as {int(idx[outside][0])})",
                                  "this epoch's samples, as DataLoader(proxy, batch_size=B, sampler=proxy.sampler) "
                                  "or proxy.loader(B) yields them (a DataLoader with shuffle=True instead of "
                                  "sampler=proxy.sampler trains on all the data)")
        return idx.long()

    @property
    def _shared(self) -> bool:
        return self.num_replicas > 1 and torch.distributed.is_available() and torch.distributed.is_initialized()

    def _share(self, idx: torch.Tensor, losses: torch.Tensor, logits: torch.Tensor | None,
               targets: torch.Tensor | None, feature_norms: torch.Tensor | None) -> None:
        """Data-parallel: this rank's batch as one row per sample (index, latest values, sums, computed
        columns), recorded by every rank at the next :meth:`sync` (a strategy without statistics: the index)."""
        memory = self.selector.memory
        if not self.selector.tracks_importance:
            self._pending.append(torch.cat([idx[:, None].double(), torch.zeros(
                idx.numel(), self._row_width() - 1, dtype=torch.float64, device=idx.device)], dim=1))
            return
        self.selector.check_inputs(logits, targets, losses)
        idx, latest, computed, sums = memory.batch_columns(idx, logits, targets, feature_norms, losses)
        columns = host_values(computed.tolist(), torch.float64, idx.device)  # made on the host: no wait
        self._pending.append(torch.cat([idx[:, None].double(), latest.double(), sums.double(),
                                        columns.expand(idx.numel(), -1)], dim=1))

    def _row_width(self) -> int:
        memory = self.selector.memory
        return 1 + len(memory.latest_columns) + len(memory.sum_columns) + len(memory.latest_columns)

    def sync(self) -> None:
        """Under ``torch.distributed``: record every rank's not yet shared batches in every rank's
        memory (a collective: all ranks call it). ``set_epoch`` does it before planning; call it before
        one rank alone saves ``state_dict`` mid-run."""
        if not self._shared:
            return
        memory = self.selector.memory
        local = torch.cat(self._pending) if self._pending else torch.zeros(0, self._row_width(), dtype=torch.float64,
                                                                           device=memory.device)
        self._pending = []
        gathered = _gather(local.to(self._collective_device()), self.num_replicas)
        if not gathered.shape[0]:
            return
        gathered = gathered.to(memory.device)
        latest_width = len(memory.latest_columns)
        idx = gathered[:, 0].long()
        self.samples_seen += int(gathered.shape[0])  # every rank's trained samples
        self.selector.mark_trained(idx)
        if not self.selector.tracks_importance:
            return
        latest = gathered[:, 1:1 + latest_width].float()
        sums = gathered[:, 1 + latest_width:1 + latest_width + len(memory.sum_columns)].float()
        computed = gathered[:, 1 + latest_width + len(memory.sum_columns):] > 0.5
        for value in torch.unique(computed, dim=0):  # batches that computed the same columns, together
            rows = (computed == value).all(dim=1)
            memory.apply(idx[rows], latest[rows], value.cpu(), sums[rows])

    def _collective_device(self) -> torch.device:
        """Gloo exchanges CPU tensors, NCCL CUDA ones."""
        backend = torch.distributed.get_backend()
        return torch.device("cuda", torch.cuda.current_device()) if backend == "nccl" else torch.device("cpu")

    # ------------------------------------------------------------------ state

    def state_dict(self) -> dict:
        """Everything a resumed loop needs. Under ``torch.distributed`` it holds this rank's batches
        not yet shared, and its rank (each rank saving its own state resumes exactly; else :meth:`sync`
        first: loading another rank's unshared batches is warned)."""
        return {"selector": self.selector.state_dict(), "epoch": self.epoch, "samples_seen": self.samples_seen,
                "pending": [p.cpu().clone() for p in self._pending], "rank": self.rank,
                "num_replicas": self.num_replicas,
                "plan": None if self.plan is None else {
                    "epoch": self.plan.epoch, "indices": self.plan.indices.cpu().clone(), "metric": self.plan.metric,
                    "target_ratio": self.plan.target_ratio, "top10_mass": self.plan.top10_mass,
                    "weights": None if self.plan.weights is None else self.plan.weights.cpu().clone()},
                "consumed": self._epoch_done(), "explicit": self._explicit}

    def load_state_dict(self, state: dict) -> None:
        """Continue exactly where ``state`` (from :meth:`state_dict`) left off: the next ``set_epoch``
        makes the selection an uninterrupted loop would have made. A state of another data set, or not a
        ProxyData state at all, is one named error."""
        try:
            self._load_state(state)
        except (KeyError, TypeError, ValueError, AttributeError, RuntimeError, IndexError) as exc:
            raise ConfigError("state_dict", type(state).__name__,
                              f"a ProxyData.state_dict() saved by one like this ({self.selector.num_samples} samples, "
                              f"strategy '{self.strategy.name}', ratio {self.strategy.ratio:g}, {self.epochs} epochs); "
                              f"{_reason(exc)}") from None

    def _load_state(self, state: dict) -> None:
        if int(state["epoch"]) >= self.epochs:  # checked before anything changes
            raise ValueError(f"it was saved at epoch {int(state['epoch'])}, and this ProxyData has {self.epochs} "
                             "epochs")
        self.selector.load_state_dict(state["selector"])
        self.epoch, self.samples_seen, self._consumed = int(state["epoch"]), int(state["samples_seen"]), state["consumed"]
        self._explicit, self._passes, self._updates = bool(state.get("explicit", False)), 0, None
        self._start_counting()
        pending = list(state.get("pending", []))
        saved = (int(state.get("rank", self.rank)), int(state.get("num_replicas", self.num_replicas)))
        if pending and saved != (self.rank, self.num_replicas):  # another rank's batches: that rank shares them
            warnings.warn(f"this state holds {sum(int(p.shape[0]) for p in pending)} samples' statistics that rank "
                          f"{saved[0]} of {saved[1]} had not yet shared with the other ranks; loaded on rank "
                          f"{self.rank} of {self.num_replicas}, the batches of the other ranks since the last sync "
                          "are missing, so the selections differ from a run that never stopped: call proxy.sync() "
                          "on every rank before one rank saves state_dict", stacklevel=3)
            pending = []
        self._pending = [p.to(self.selector.memory.device) for p in pending]
        plan = state.get("plan")
        if plan is None:
            self.plan = None
            return
        device = self.selector.device
        self.plan = EpochPlan(plan["epoch"], plan["indices"].to(device), plan["metric"], plan["target_ratio"],
                              plan["top10_mass"], None if plan["weights"] is None else plan["weights"].to(device))
        self._set_shard(self._rank_shard(self.plan.indices))

    def describe(self) -> dict[str, Any]:
        """The strategy, and the data used so far: samples trained (given to ``update()``, over all ranks; under
        ``torch.distributed`` as of the last sync) and the data passes they make."""
        n = len(self)
        if self._shared and self._pending:
            warnings.warn(f"describe() counts every rank's samples as of the last sync; this rank holds "
                          f"{len(self._pending)} batches not yet shared: call proxy.sync() on every rank first "
                          "(after the last epoch, say)", stacklevel=2)
        return {**self.selector.describe(), "num_samples": n, "epochs": self.epochs,
                "samples_seen": self.samples_seen, "data_passes": self.samples_seen / n}


class _IndexedCollate:
    """A user's ``collate_fn`` over a batch of ``(index, sample)`` pairs: ``(indices, collate_fn(samples))``
    (a class, not a closure: loader workers started by spawn pickle it)."""

    def __init__(self, collate_fn: Any):
        self.collate_fn = collate_fn

    def __call__(self, pairs: list[tuple[int, Any]]) -> tuple[torch.Tensor, Any]:
        return torch.as_tensor([i for i, _ in pairs], dtype=torch.long), self.collate_fn([s for _, s in pairs])


class ProxyBatchSampler(Sampler[list[int]]):
    """This rank's share of the epoch in batches of ``batch_size``; a small trailing batch (below a
    quarter of the size) joins the one before (:func:`asp_tune.feeding.batch_slices`), which batch
    norm needs: a tiny last batch every epoch corrupts its running statistics."""

    def __init__(self, proxy: ProxyData, batch_size: int):
        check_value(TrainConfig, "batch_size", batch_size)
        self.proxy, self.batch_size = proxy, batch_size

    def __iter__(self) -> Iterator[list[int]]:
        order = self.proxy._begin_pass()  # on the first batch asked for, not when iter() is called
        ended = False
        try:
            for part in batch_slices(len(order), self.batch_size):
                yield order[part]
            ended = True
        finally:  # its last batch given, or the loop left it (a break): the pass ended
            self.proxy._end_pass(ended, exact=True)

    def __len__(self) -> int:
        return len(batch_slices(len(ProxySampler(self.proxy)), self.batch_size))


class ProxySampler(Sampler[int]):
    """The epoch's selected indices (this rank's shard); its length is known before the epoch.

    A pass over it begins when its first index is asked for (a ``DataLoader`` with workers calls ``iter`` twice
    and uses the second) and ends when its last one was given or the loop left it. After
    :meth:`ProxyData.set_epoch`, every pass in the epoch gives the epoch's subset; a loop that never calls
    ``set_epoch`` gets the next epoch's subset with each new pass (there, ``len`` inside the loop holds only
    without loader workers, which may end the pass early by reading ahead)."""

    def __init__(self, proxy: ProxyData):
        self.proxy = proxy

    def __iter__(self) -> Iterator[int]:
        order = self.proxy._begin_pass()
        ended = False
        try:
            yield from order
            ended = True
        finally:
            self.proxy._end_pass(ended, exact=False)

    def __len__(self) -> int:
        proxy = self.proxy
        if proxy.plan is not None and not (proxy._consumed and not proxy._explicit):
            return int(proxy._shard.numel())
        size = proxy.epoch_size(proxy.epoch + 1) if proxy.epoch + 1 < proxy.epochs else 0
        return math.ceil(len(proxy) / proxy.num_replicas) if size is None else size  # unknown: an upper bound


def _gather(tensor: torch.Tensor, replicas: int) -> torch.Tensor:
    """Every rank's ``tensor`` (first dimension may differ), concatenated in rank order, from a process group of
    ``replicas`` ranks."""
    dist = torch.distributed
    if dist.get_world_size() != replicas:
        raise ConfigError("num_replicas", replicas, f"the process group's world size ({dist.get_world_size()}): the "
                                                    "group changed since the ProxyData was made")
    size = torch.tensor([tensor.shape[0]], device=tensor.device)
    sizes = [torch.zeros_like(size) for _ in range(dist.get_world_size())]
    dist.all_gather(sizes, size)
    longest = int(max(s.item() for s in sizes))
    padded = torch.zeros((longest, *tensor.shape[1:]), dtype=tensor.dtype, device=tensor.device)
    padded[:tensor.shape[0]] = tensor
    out = [torch.zeros_like(padded) for _ in sizes]
    dist.all_gather(out, padded)
    return torch.cat([part[: int(s.item())] for part, s in zip(out, sizes)])


def InfoBatch(dataset: Dataset, num_epochs: int, prune_ratio: float = 0.5, delta: float = 0.875,
              **kwargs: Any) -> ProxyData:
    """InfoBatch's own signature (Qin et al. 2024): ``prune_ratio`` of the below-mean-loss samples
    dropped each epoch, rescaled, in epochs ``1 .. floor(num_epochs * delta)``; epoch 0 and the later ones
    train on all data, as in the reference implementation. A
    :class:`ProxyData`: use its ``sampler``, and ``update(indices, losses)`` for the loss."""
    for name, own in (("infobatch_prune", "prune_ratio="), ("infobatch_anneal", "delta= (1 - delta of the epochs on "
                                                                                "all data)")):
        if name in kwargs:
            raise ConfigError(name, kwargs[name], f"left out: asp_tune.InfoBatch's {own} sets it")
    if isinstance(delta, bool) or not isinstance(delta, (int, float)) or not 0.0 <= delta <= 1.0:
        raise ConfigError("delta", delta, "a number in [0, 1]: the share of the epochs that prune (the rest train on "
                                          "all data)")
    return ProxyData(dataset, num_epochs, strategy=InfoBatchPruning(prune_ratio, 1.0 - delta), **kwargs)


def _whole(field: str, value: Any, low: int) -> int:
    """``value`` as an integer >= ``low`` (not a float, text or bool: those were truncated)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < low:
        raise ConfigError(field, value, f"an integer >= {low}")
    return int(value)


def _checked_device(device: Any) -> torch.device:
    try:
        found = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError("device", device, f"a torch device: cpu, cuda, cuda:N ({str(exc)[:100]})") from None
    if found.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device", device, "'cpu' (no CUDA device is available here)")
    return found


def _per_sample(losses: torch.Tensor, mask: torch.Tensor | None) -> torch.Tensor:
    """One loss per sample: ``losses`` (batch,) as given; of more dimensions, the mean over each sample's
    positions, only those where ``mask`` is nonzero when given (weighted by it; a sample with none: 0)."""
    if mask is None:
        return losses if losses.dim() == 1 else losses.flatten(1).mean(dim=1)
    if not isinstance(mask, torch.Tensor) or mask.shape != losses.shape:
        raise ConfigError("mask", f"shape {tuple(getattr(mask, 'shape', ()))}" if isinstance(mask, torch.Tensor)
                          else type(mask).__name__, f"a tensor of the losses' shape {tuple(losses.shape)}: nonzero "
                                                    "(True) where a position counts, 0 at padding")
    weights = mask.to(losses.device, losses.dtype).reshape(losses.shape[0], -1)
    kept = torch.where(weights != 0, losses.reshape(losses.shape[0], -1) * weights, 0.0)  # NaN at padding: left out
    return kept.sum(dim=1) / weights.sum(dim=1).clamp_min(torch.finfo(losses.dtype).tiny)


def _check_labels_fit(logits: torch.Tensor, targets: torch.Tensor) -> None:
    """Every target names one of the logits' columns (else a gather fails deep inside, or a GPU asserts)."""
    if not targets.numel():
        return
    low, high = torch.stack([targets.min(), targets.max()]).tolist()  # one round trip from a device
    if low < 0 or high >= logits.shape[1]:
        raise ConfigError("targets", f"labels {low}..{high}",
                          f"class labels in [0, {logits.shape[1] - 1}]: the logits have {logits.shape[1]} "
                          "columns, one per class (does the model's last layer have one output per class?)")


def _check_batch(logits: torch.Tensor | None, targets: torch.Tensor | None, batch: int) -> None:
    """Logits ``(batch, classes)`` and targets ``(batch,)`` when given (their values are the statistics')."""
    if logits is not None and (not isinstance(logits, torch.Tensor) or logits.dim() != 2 or logits.shape[0] != batch):
        raise ConfigError("logits", f"shape {tuple(getattr(logits, 'shape', ()))}", f"(batch, classes) with batch "
                                                                                   f"{batch}, one row per loss")
    if targets is not None and (not isinstance(targets, torch.Tensor) or targets.shape[:1] != (batch,)):
        raise ConfigError("targets", f"shape {tuple(getattr(targets, 'shape', ()))}", f"one target per loss "
                                                                                     f"({batch})")
    if logits is not None and targets is not None and (targets.dim() != 1 or targets.is_floating_point()):
        raise ConfigError("targets", f"{targets.dtype} {tuple(targets.shape)}", "integer class labels (batch,) "
                                                                               "beside logits")
