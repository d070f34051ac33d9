"""Proxy memory (PMM): one value per training sample for each registered statistic, on the device.

Values are updated in place from what the training forward pass already produced (the per-sample
loss, the logits, the targets, the last layer's input norms), so computing them costs no extra
forward pass; samples that are not trained in an epoch keep their old values, which is what lets
a deactivated sample come back later (ASP paper section 3.4).

A statistic is one :class:`Statistic` in :data:`STATISTICS`; the memory keeps one column for each
statistic registered when it is made, and its ``state_dict`` names the columns. Registering one
(``register_statistic``) makes it a memory column and a selectable importance metric at once.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from typing import Callable, Iterable, Sequence

import torch
import torch.nn.functional as F

from asp_tune.device import host_values
from asp_tune.registry import STATISTICS

#: What a statistic may need from a batch.
INPUTS = ("loss", "logits", "targets")


class BatchView:
    """One trained batch as a statistic sees it; softmax terms are computed once and shared."""

    def __init__(self, losses: torch.Tensor | None, logits: torch.Tensor | None, targets: torch.Tensor | None,
                 feature_norms: torch.Tensor | None):
        self.losses, self.logits, self.targets, self.feature_norms = losses, logits, targets, feature_norms
        self._log_p: torch.Tensor | None = None

    @property
    def log_p(self) -> torch.Tensor:
        if self._log_p is None:
            self._log_p = F.log_softmax(self.logits.float(), dim=1)
        return self._log_p

    @property
    def log_p_true(self) -> torch.Tensor:
        return self.log_p.gather(1, self.targets[:, None]).squeeze(1)

    def loss(self) -> torch.Tensor:
        """The given per-sample loss, else the cross-entropy of the logits."""
        return self.losses.float() if self.losses is not None else -self.log_p_true


@dataclass(frozen=True)
class Statistic:
    """A per-sample value the memory keeps.

    ``compute(view) -> (B,)`` from a :class:`BatchView`; ``needs`` names what it reads (a subset of
    :data:`INPUTS`, where ``loss`` is met by a given loss or by logits and targets); ``cumulative``
    adds each batch's value to the running sum instead of keeping the latest one; ``per_row``: a row's
    value depends on that row alone (not on the batch's mean, say), so that a pack may compute its members'
    batches as one (:meth:`ProxyMemory.update_stacked`).
    """

    name: str
    compute: Callable[[BatchView], torch.Tensor]
    needs: frozenset[str]
    cumulative: bool = False
    description: str = ""
    per_row: bool = False

    def available(self, view: BatchView) -> bool:
        given = available_inputs(view.losses, view.logits, view.targets)
        return all(given[n] for n in self.needs)


def available_inputs(losses: torch.Tensor | None, logits: torch.Tensor | None,
                     targets: torch.Tensor | None) -> dict[str, bool]:
    """Which of :data:`INPUTS` a batch gives: the loss is given by ``losses``, or by logits and targets (their
    cross-entropy)."""
    return {"loss": losses is not None or (logits is not None and targets is not None),
            "logits": logits is not None, "targets": targets is not None}


def _entropy(v: BatchView) -> torch.Tensor:
    p = v.log_p.exp()  # a class masked with a logit of -inf: 0 log 0 = 0 (it gave NaN, and the sample no value)
    return -torch.where(p > 0, p * v.log_p, 0.0).sum(dim=1)


def _logit_gradient(v: BatchView) -> torch.Tensor:
    # ||p - e_y||^2 = sum_{k != y} p_k^2 + (1 - p_y)^2, with 1 - p_y the other classes' sum: written as
    # sum(p^2) - 2 p_y + 1 it cancelled to exactly 0 in float32 for a logit margin of 12 or more
    others = v.log_p.exp().scatter(1, v.targets[:, None], 0.0)
    return ((others * others).sum(dim=1) + others.sum(dim=1).square()).sqrt()


def _gradient(v: BatchView) -> torch.Tensor:
    # z = W h + b: dW = (p - e_y) h^T, db = p - e_y, so the joint norm is ||p - e_y|| sqrt(||h||^2 + 1)
    g = _logit_gradient(v)
    if v.feature_norms is None:
        return g
    h = v.feature_norms.float()
    return g * (h * h + 1.0).sqrt()


def _prediction(v: BatchView) -> torch.Tensor:
    return 2.0 * (v.logits.argmax(dim=1) != v.targets).float() - 1.0  # eq. 1: +1 wrong, -1 right


LOSS = Statistic("loss", lambda v: v.loss(), frozenset({"loss"}), description="latest per-sample loss",
                 per_row=True)
ENTROPY = Statistic("entropy", _entropy, frozenset({"logits"}), description="latest entropy of the softmax",
                    per_row=True)
GRADIENT = Statistic("gradient", _gradient, frozenset({"logits", "targets"}),
                     description="latest last-layer gradient norm ||softmax(z) - onehot(y)|| sqrt(||h||^2 + 1)",
                     per_row=True)
LOGIT_GRADIENT = Statistic("logit_gradient", _logit_gradient, frozenset({"logits", "targets"}),
                           description="latest ||softmax(z) - onehot(y)||", per_row=True)
PREDICTION = Statistic("prediction", _prediction, frozenset({"logits", "targets"}), cumulative=True,
                       description="cumulative score: +1 when trained and predicted wrong, -1 when right (eq. 1)",
                       per_row=True)


def register_statistic(name: str, compute: Callable[[BatchView], torch.Tensor], needs: Iterable[str] = ("loss",),
                       cumulative: bool = False, description: str = "", per_row: bool = False) -> Statistic:
    """Register a statistic (a memory column and an importance metric named ``name``). ``per_row=True``
    declares that a sample's value depends on its own row alone, which lets a pack compute its members'
    batches at once (else it updates their memories one by one)."""
    needs = frozenset(needs)
    if not needs <= set(INPUTS):
        raise ValueError(f"needs must be a subset of {INPUTS}, got {sorted(needs)}")
    statistic = Statistic(name, compute, needs, cumulative, description, per_row)
    STATISTICS.register(name, statistic)
    return statistic


def memory_metrics() -> tuple[str, ...]:
    """The names of every registered statistic (the memory's columns)."""
    return tuple(STATISTICS)


class ProxyMemory:
    """Per-sample values of the registered statistics for ``num_samples`` training samples.

    Built in: ``loss`` (latest per-sample loss: the one given to :meth:`update`, else the
    cross-entropy of the logits), ``entropy``, ``gradient`` (last-layer per-sample gradient norm;
    without feature norms it equals ``logit_gradient``), ``logit_gradient`` and the cumulative
    ``prediction`` score of eq. 1. All values start at zero (Algorithm 1); ``times_trained`` counts
    how often each sample was trained. A batch costs one ``index_put`` and one ``index_add``.
    """

    def __init__(self, num_samples: int, device: torch.device | str = "cpu", columns: Iterable[str] | None = None):
        self.num_samples = int(num_samples)
        self.device = torch.device(device)
        names = tuple(STATISTICS) if columns is None else tuple(columns)
        unknown = [n for n in names if n not in STATISTICS]
        if unknown:
            raise ValueError(f"unknown statistics {unknown}; registered: {sorted(STATISTICS)}")
        self.statistics = tuple(STATISTICS[n] for n in names)
        self.latest_columns = tuple(s.name for s in self.statistics if not s.cumulative)
        self.sum_columns = tuple(s.name for s in self.statistics if s.cumulative) + ("times_trained",)
        # latest values and running sums (the last sum is times trained): two tables per batch update
        self._latest = torch.zeros(self.num_samples, len(self.latest_columns), dtype=torch.float32, device=self.device)
        self._counts = torch.zeros(self.num_samples, len(self.sum_columns), dtype=torch.float32, device=self.device)
        self._partial: dict[tuple, torch.Tensor] = {}  # the columns a batch could compute, on the device
        self._stack: tuple[MemoryStack, int] | None = None  # (the stack its tables are a row of, that row)
        self._computed: tuple[Statistic, ...] | None = None  # the statistics a batch computes (None: all)
        self._bind(self._latest, self._counts)

    def _bind(self, latest: torch.Tensor, counts: torch.Tensor) -> None:
        """Keep the values in ``latest`` and ``counts`` (tables of this memory's shapes) from now on."""
        self._latest, self._counts = latest, counts
        self.values: dict[str, torch.Tensor] = {
            **{n: self._latest[:, i] for i, n in enumerate(self.latest_columns)},
            **{n: self._counts[:, i] for i, n in enumerate(self.sum_columns[:-1])},
        }

    @property
    def columns(self) -> tuple[str, ...]:
        return tuple(s.name for s in self.statistics)

    def compute_only(self, names: Iterable[str]) -> None:
        """Compute only the statistics ``names`` from each batch (a strategy's own); the other columns are
        kept, unchanged, so states and checkpoints are those of a memory computing them all."""
        wanted = set(names)
        self._computed = tuple(s for s in self.statistics if s.name in wanted)

    @property
    def nbytes(self) -> int:
        """Bytes of its tables."""
        return self._latest.nbytes + self._counts.nbytes

    @property
    def times_trained(self) -> torch.Tensor:
        return self._counts[:, -1].to(torch.int32)

    def __getitem__(self, metric: str) -> torch.Tensor:
        return self.values[metric]

    @torch.no_grad()
    def update(self, indices: torch.Tensor, logits: torch.Tensor | None = None, targets: torch.Tensor | None = None,
               feature_norms: torch.Tensor | None = None, losses: torch.Tensor | None = None) -> None:
        """Record one trained batch (vectorised, no host synchronisation). Statistics whose inputs
        are missing (no logits for a regression loss, say) keep their values."""
        self.apply(*self.batch_columns(indices, logits, targets, feature_norms, losses))

    @torch.no_grad()
    def batch_columns(self, indices: torch.Tensor, logits: torch.Tensor | None = None,
                      targets: torch.Tensor | None = None, feature_norms: torch.Tensor | None = None,
                      losses: torch.Tensor | None = None) -> tuple:
        """``(indices, latest (B, L), computed (L,) bool, sums (B, S + 1))`` of one batch, not yet recorded
        (:meth:`apply` records them; data-parallel loops exchange them between ranks first)."""
        indices = to_memory(indices, self.device)
        move = lambda t: None if t is None else to_memory(t, self.device)  # noqa: E731
        view = BatchView(move(losses), move(logits), move(targets), move(feature_norms))
        latest, sums = _columns_fn(self.device, self.statistics, self._computed)(view)
        if latest is None:
            latest = (torch.zeros(indices.numel(), 0, device=self.device), torch.zeros(0, dtype=torch.bool))
        return indices, latest[0], latest[1], sums

    @torch.no_grad()
    def update_stacked(self, others: Sequence["ProxyMemory"], indices: Sequence[torch.Tensor],
                       logits: torch.Tensor | None = None, targets: torch.Tensor | None = None,
                       feature_norms: torch.Tensor | None = None, losses: torch.Tensor | None = None) -> None:
        """:meth:`update` for K memories at once (this one and ``others``, with equal columns): batch k is row k
        of the stacked ``(K, B, ...)`` inputs and ``indices[k]``. Where every statistic is ``per_row``, they run
        once over all K batches and each memory records its own rows; else each memory updates from its own
        batch. Either way a memory ends as :meth:`update` would leave it. A pack's step calls it once."""
        memories = [self, *others]
        if any(m.statistics != self.statistics or m.device != self.device for m in memories):
            raise ValueError("update_stacked needs memories with the same statistics on the same device")
        given = {"logits": logits, "targets": targets, "feature_norms": feature_norms, "losses": losses}
        batch = indices[0].numel() if len(indices) else 0
        if len(indices) != len(memories) or any(i.numel() != batch for i in indices) or any(
                t is not None and tuple(t.shape[:2]) != (len(memories), batch) for t in given.values()):
            raise ValueError(f"update_stacked needs {len(memories)} batches of one size, stacked (K, B, ...) and "
                             f"with one set of indices each; got {len(indices)} sets of indices and shapes "
                             f"{ {k: tuple(t.shape) for k, t in given.items() if t is not None} }")
        if not all(s.per_row for s in self.statistics):  # a statistic of the whole batch: each batch alone
            for k, (memory, mine) in enumerate(zip(memories, indices)):
                memory.update(mine, **{n: None if t is None else t[k] for n, t in given.items()})
            return
        rows, latest, computed, sums = self.batch_columns(torch.cat(list(indices)),
                                                          **{n: _rows(t) for n, t in given.items()})
        stack = self._stack[0] if self._stack is not None else None
        if stack is not None and all(m._stack is not None and m._stack[0] is stack for m in memories):
            stack.record([m._stack[1] for m in memories], batch, rows, latest, computed, sums)  # one write for all
            return
        for k, (memory, mine) in enumerate(zip(memories, indices)):
            part = slice(k * batch, (k + 1) * batch)
            memory.apply(rows[part], latest[part], computed, sums[part])

    @torch.no_grad()
    def apply(self, indices: torch.Tensor, latest: torch.Tensor, computed: torch.Tensor, sums: torch.Tensor) -> None:
        """Record :meth:`batch_columns`' output: latest values replace, sums add up."""
        _record(self._latest, self._counts, indices, latest, self._columns_of(computed), sums)

    def _columns_of(self, computed: torch.Tensor) -> torch.Tensor | bool:
        """The latest columns a batch computed: True (all), False (none) or their indices on the device."""
        computed = computed.cpu()  # made on the host (_columns): deciding on it waits for no device
        if not computed.numel() or bool(computed.all()):
            return bool(computed.numel())
        if not bool(computed.any()):
            return False
        key = tuple(computed.tolist())
        if key not in self._partial:
            self._partial[key] = host_values(torch.nonzero(computed).squeeze(1).tolist(), torch.long, self.device)
        return self._partial[key]

    def state_dict(self) -> dict:
        return {"latest_columns": list(self.latest_columns), "sum_columns": list(self.sum_columns),
                "latest": self._latest.cpu().clone(), "counts": self._counts.cpu().clone()}

    @staticmethod
    def fingerprint(state: dict) -> str:
        """A short hash of a memory state (``state_dict()``): equal states, equal fingerprints.
        Fault-tolerance records use it to show that a restored trial's memory is the checkpoint's."""
        digest = hashlib.sha256()
        for name in ("latest", "counts"):
            digest.update(state[name].detach().cpu().contiguous().numpy().tobytes())
        return digest.hexdigest()[:16]

    def load_state_dict(self, state: dict) -> None:
        for key, mine in (("latest_columns", self.latest_columns), ("sum_columns", self.sum_columns)):
            theirs = tuple(state.get(key, ()))
            if theirs != mine:
                raise ValueError(f"proxy memory columns {list(theirs)} in the checkpoint differ from this run's "
                                 f"{list(mine)} (a statistic registered or removed since it was written)")
        for name, table in (("latest", self._latest), ("counts", self._counts)):
            if tuple(state[name].shape) != tuple(table.shape):
                raise ValueError(f"proxy memory '{name}' has shape {tuple(state[name].shape)}, "
                                 f"expected {tuple(table.shape)} for {self.num_samples} samples")
            table.copy_(state[name])


ColumnsFn = Callable[[BatchView], tuple]


def _record(latest_table: torch.Tensor, counts_table: torch.Tensor, rows: torch.Tensor, latest: torch.Tensor,
            columns: torch.Tensor | bool, sums: torch.Tensor) -> None:
    """Write one batch's values into the tables' ``rows``: latest values replace (only ``columns``: True all,
    False none, else their indices), sums add up (``index_add_``: no wait for a GPU). A NaN or infinite value
    (an overflowed loss) is not recorded: a latest value keeps the one before, a sum adds 0, so one bad
    batch cannot turn every later selection uniform."""
    if columns is True:
        latest_table[rows] = torch.where(torch.isfinite(latest), latest, latest_table[rows])
    elif columns is not False:
        where = (rows[:, None], columns[None, :])
        chosen = latest[:, columns]
        latest_table[where] = torch.where(torch.isfinite(chosen), chosen, latest_table[where])
    counts_table.index_add_(0, rows, torch.where(torch.isfinite(sums), sums, 0.0))


class MemoryStack:
    """The tables of K memories (equal columns, sizes and device) kept as rows of one stacked table, so that a pack
    records all its members' batches with one write (:meth:`ProxyMemory.update_stacked` finds the stack). Each
    memory goes on working alone on its row, before, during and after; its values are unchanged."""

    def __init__(self, memories: Sequence[ProxyMemory]):
        first = memories[0]
        if any(m.columns != first.columns or m.num_samples != first.num_samples or m.device != first.device
               for m in memories):
            raise ValueError("a memory stack needs memories with the same columns and sizes on one device")
        self.latest = torch.stack([m._latest for m in memories])  # noqa: SLF001 - the memories' own tables
        self.counts = torch.stack([m._counts for m in memories])  # noqa: SLF001
        for k, memory in enumerate(memories):
            memory._bind(self.latest[k], self.counts[k])  # noqa: SLF001
            memory._stack = (self, k)  # noqa: SLF001
        self._columns_of = first._columns_of  # noqa: SLF001 - the column indices, made once
        self._owners: dict[tuple, torch.Tensor] = {}

    def release(self, memories: Sequence[ProxyMemory]) -> None:
        """Give ``memories`` (of this stack) tables of their own again, their values kept: a memory that left
        the pack no longer holds the whole stacked table."""
        for memory in memories:
            if memory._stack is not None and memory._stack[0] is self:  # noqa: SLF001
                memory._bind(memory._latest.clone(), memory._counts.clone())  # noqa: SLF001
                memory._stack = None  # noqa: SLF001

    def record(self, slots: list[int], batch: int, rows: torch.Tensor, latest: torch.Tensor, computed: torch.Tensor,
               sums: torch.Tensor) -> None:
        """Write the batches of the memories at ``slots``, ``batch`` rows each, in their order."""
        key = (tuple(slots), batch)
        if key not in self._owners:  # where each memory's row starts in the flattened tables
            samples = self.latest.shape[1]
            starts = host_values([slot * samples for slot in slots], torch.long, rows.device)
            self._owners[key] = starts.repeat_interleave(batch)
        _record(self.latest.flatten(0, 1), self.counts.flatten(0, 1), self._owners[key] + rows, latest,
                self._columns_of(computed), sums)


def _rows(stacked: torch.Tensor | None) -> torch.Tensor | None:
    """``(K, B, ...)`` as ``(K * B, ...)``."""
    return None if stacked is None else stacked.flatten(0, 1)


def to_memory(tensor: torch.Tensor, device: torch.device) -> torch.Tensor:
    """``tensor``, detached, on the memory's ``device``: a copy from the host to a device overlaps
    (``non_blocking``); one to the host blocks, as the host reads it at once (a non-blocking copy
    from a GPU to the host may still be under way then: PyTorch's non_blocking guide)."""
    return tensor.detach().to(device, non_blocking=_non_blocking(tensor.device, device))


def _non_blocking(source: torch.device, destination: torch.device) -> bool:
    """Whether a copy from ``source`` to ``destination`` may run without waiting: host to device only."""
    return source.type == "cpu" and destination.type != "cpu"


def _columns(statistics: tuple[Statistic, ...], view: BatchView,
             only: tuple[Statistic, ...] | None = None) -> tuple:
    """``((latest (B, L), computed mask (L,)) or None, sums (B, S + 1))`` for one batch; statistics not
    among ``only`` (default: all) are left out as if their inputs were missing."""
    batch = next(t for t in (view.losses, view.logits, view.targets) if t is not None).shape[0]
    device = next(t for t in (view.losses, view.logits, view.targets) if t is not None).device
    zeros = torch.zeros(batch, device=device)
    latest, computed, sums = [], [], []
    for s in statistics:
        ok = (only is None or s in only) and s.available(view)
        value = s.compute(view).float() if ok else zeros
        if s.cumulative:
            sums.append(value)
        else:
            latest.append(value)
            computed.append(ok)
    sums.append(torch.ones(batch, device=device))
    table = (torch.stack(latest, dim=1), torch.tensor(computed, dtype=torch.bool)) if latest else None
    return table, torch.stack(sums, dim=1)


_COMPILED: dict[tuple, ColumnsFn] = {}


def _columns_fn(device: torch.device, statistics: tuple[Statistic, ...],
                only: tuple[Statistic, ...] | None = None) -> ColumnsFn:
    """:func:`_columns` for these statistics (computing those of ``only``), fused by ``torch.compile``
    on CUDA.

    Eager mode launches ~20 small kernels per batch, which shows on a fast GPU; set
    ``ASP_TUNE_COMPILE=0`` to stay eager. On the CPU eager is already cheap.
    """
    eager = lambda view: _columns(statistics, view, only)  # noqa: E731
    if device.type != "cuda" or os.environ.get("ASP_TUNE_COMPILE", "1") == "0":
        return eager
    key = (tuple(id(s) for s in statistics), None if only is None else tuple(id(s) for s in only))
    if key not in _COMPILED:
        try:
            _COMPILED[key] = torch.compile(eager, dynamic=True)
        except Exception:  # noqa: BLE001 - no compiler available: eager is correct, only slower
            _COMPILED[key] = eager
    return _COMPILED[key]


class FeatureNormTap:
    """Records ``||h||`` per sample of the input to a model's last linear layer on every forward.

    A forward pre-hook on that layer: the features come from the forward pass training already
    does, so the last-layer gradient norm costs one vector norm per batch and no extra pass.
    """

    def __init__(self, model: torch.nn.Module):
        self.layer = output_layer(model)
        self.norms: torch.Tensor | None = None
        self.handle = None if self.layer is None else self.layer.register_forward_pre_hook(self._hook)

    def _hook(self, module: torch.nn.Module, inputs: tuple) -> None:
        self.norms = inputs[0].detach().float().flatten(1).norm(dim=1)

    def take(self, batch: int, outputs: int | None = None) -> torch.Tensor | None:
        """The norms of the last forward when it had ``batch`` samples (else None); None too where the tapped
        layer does not give the network's ``outputs`` logits (:meth:`feeds`)."""
        norms, self.norms = self.norms, None
        if outputs is not None and not self.feeds(outputs):
            return None
        return norms if norms is not None and norms.shape[0] == batch else None

    def feeds(self, outputs: int) -> bool:
        """Whether the tapped layer can be the one that gives the network's ``outputs`` logits. The last Linear
        registered need not be the last applied (a network that registers its head before a projection): its
        input's norms then made the ``gradient`` metric wrong, by up to 100%. Where it cannot be, ``gradient``
        is ``logit_gradient`` (said once: an ``output_layer()`` method names the layer)."""
        if self.layer is None or self.layer.out_features == outputs:
            return True
        if not getattr(self, "_said", False):
            self._said = True
            import warnings

            warnings.warn(f"the layer taken as the network's last ({self.layer}) gives {self.layer.out_features} "
                          f"outputs where the network gives {outputs}: the gradient metric leaves out the features' "
                          "norm (it is logit_gradient); a model.output_layer() method returning the layer that "
                          "gives the logits mends it", stacklevel=3)
        return False

    def remove(self) -> None:
        if self.handle is not None:
            self.handle.remove()


def output_layer(model: torch.nn.Module) -> torch.nn.Linear | None:
    """The layer that produces the logits: ``model.output_layer()`` if defined, else the
    registered ``classifier`` or ``head`` Linear, else the last Linear module."""
    if hasattr(model, "output_layer"):
        return model.output_layer()
    for name in ("classifier", "head"):
        layer = getattr(model, name, None)
        if isinstance(layer, torch.nn.Linear):
            return layer
    linears = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    return linears[-1] if linears else None
