"""The NAS-Bench-201 cell space: architectures as strings, enumeration, and the ground-truth table.

A cell has 4 nodes; node ``j`` sums one operation applied to every earlier node ``i``, so there
are 6 edges, always in the order 1<-0, 2<-0, 2<-1, 3<-0, 3<-1, 3<-2. With 5 operations the space
holds 5**6 = 15,625 architectures, written in the standard form
``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``.
"""

from __future__ import annotations

import itertools
import warnings
from random import Random
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Sequence

import numpy as np
import pandas as pd

from asp_tune.errors import ConfigError, DataError

NB201_OPS = ("none", "skip_connect", "nor_conv_1x1", "nor_conv_3x3", "avg_pool_3x3")
NUM_NODES = 4
#: ``(to, from)`` of each edge, in the standard order.
EDGES = tuple((j, i) for j in range(1, NUM_NODES) for i in range(j))
NUM_ARCHS = len(NB201_OPS) ** len(EDGES)
#: Ground-truth columns, keyed by the data set a search runs on (others fall back to CIFAR-10).
GROUND_TRUTH_COLUMNS = {"cifar10": "cifar10_test", "cifar100": "cifar100_test",
                        "imagenet16_120": "imagenet16_120_test"}


@dataclass(frozen=True, order=True)
class Arch:
    """One cell: the operation name on each of the 6 edges, in :data:`EDGES` order."""

    ops: tuple[str, ...]

    def __post_init__(self) -> None:
        if len(self.ops) != len(EDGES):
            raise ConfigError("arch", self.ops, f"{len(EDGES)} operations, one per edge")
        for op in self.ops:
            if op not in NB201_OPS:
                raise ConfigError("arch operation", op, NB201_OPS)

    @classmethod
    def parse(cls, text: str) -> "Arch":
        """Read ``|op~0|+|op~0|op~1|+|op~0|op~1|op~2|``; errors say what is wrong and where."""
        nodes = text.strip().split("+")
        if len(nodes) != NUM_NODES - 1:
            raise ConfigError("arch", text, f"{NUM_NODES - 1} nodes joined by '+', e.g. {EXAMPLE}")
        ops: list[str] = []
        for j, node in enumerate(nodes, start=1):
            if not (node.startswith("|") and node.endswith("|")):
                raise ConfigError("arch", text, f"each node wrapped in '|', e.g. {EXAMPLE}")
            inputs = node[1:-1].split("|")
            if len(inputs) != j:
                raise ConfigError("arch", text, f"node {j} with {j} inputs, e.g. {EXAMPLE}")
            for i, item in enumerate(inputs):
                op, sep, source = item.partition("~")
                if not sep or source != str(i):
                    raise ConfigError("arch", text, f"'op~{i}' as input {i} of node {j}, e.g. {EXAMPLE}")
                if op not in NB201_OPS:
                    raise ConfigError("arch operation", op, NB201_OPS)
                ops.append(op)
        return cls(tuple(ops))

    def __str__(self) -> str:
        nodes = []
        k = 0
        for j in range(1, NUM_NODES):
            nodes.append("|" + "|".join(f"{self.ops[k + i]}~{i}" for i in range(j)) + "|")
            k += j
        return "+".join(nodes)

    @property
    def indices(self) -> tuple[int, ...]:
        return tuple(NB201_OPS.index(op) for op in self.ops)

    @classmethod
    def from_indices(cls, indices: Sequence[int]) -> "Arch":
        return cls(tuple(NB201_OPS[int(i)] for i in indices))


EXAMPLE = "|nor_conv_3x3~0|+|nor_conv_3x3~0|nor_conv_3x3~1|+|skip_connect~0|nor_conv_3x3~1|nor_conv_1x1~2|"


def all_archs() -> Iterator[Arch]:
    """Every architecture of the space, in a fixed order."""
    for ops in itertools.product(NB201_OPS, repeat=len(EDGES)):
        yield Arch(ops)


def random_arch(rng: Random) -> Arch:
    return Arch(tuple(rng.choice(NB201_OPS) for _ in EDGES))


def mutate(arch: Arch, rng: Random, edge_prob: float) -> Arch:
    """Resample each edge's operation with probability ``edge_prob`` (at least one edge changes)."""
    ops = list(arch.ops)
    changed = False
    for e in range(len(ops)):
        if rng.random() < edge_prob:
            ops[e] = rng.choice([op for op in NB201_OPS if op != ops[e]])
            changed = True
    if not changed:
        e = rng.randrange(len(ops))
        ops[e] = rng.choice([op for op in NB201_OPS if op != ops[e]])
    return Arch(tuple(ops))


def crossover(a: Arch, b: Arch, rng: Random) -> Arch:
    """Each edge's operation from either parent, with equal chance."""
    return Arch(tuple(x if rng.random() < 0.5 else y for x, y in zip(a.ops, b.ops)))


class GroundTruth:
    """NAS-Bench-201 test accuracies (percent) per architecture, read from a CSV.

    The CSV needs an ``arch`` column of standard strings and one or more of
    ``cifar10_test``, ``cifar100_test``, ``imagenet16_120_test``.
    """

    def __init__(self, frame: pd.DataFrame, source: str = "<frame>"):
        if "arch" not in frame.columns:
            raise DataError(f"{source}: no 'arch' column (columns: {list(frame.columns)})")
        columns = [c for c in GROUND_TRUTH_COLUMNS.values() if c in frame.columns]
        if not columns:
            raise DataError(f"{source}: none of the accuracy columns {list(GROUND_TRUTH_COLUMNS.values())} "
                            f"(columns: {list(frame.columns)})")
        keys: list[tuple[str, ...]] = []
        for row, text in enumerate(frame["arch"].astype(str), start=2):
            try:
                keys.append(Arch.parse(text).ops)
            except ConfigError as exc:
                raise DataError(f"{source}, line {row}: not a NAS-Bench-201 arch string: {exc}") from None
        values = frame[columns].apply(pd.to_numeric, errors="coerce")
        bad = values.isna().any(axis=1).to_numpy()
        bad = bad | ~np.isfinite(values.to_numpy(dtype=float)).all(axis=1)
        if bad.any():
            row = int(np.flatnonzero(bad)[0]) + 2
            raise DataError(f"{source}, line {row}: accuracy missing or not a finite number")
        if not keys:
            raise DataError(f"{source}: no architectures (a header without rows)")
        if len(set(keys)) != len(keys):
            raise DataError(f"{source}: an architecture appears more than once")
        self.columns = tuple(columns)
        self.source = source
        self._rows = {k: tuple(float(v) for v in vals)
                      for k, vals in zip(keys, values.itertuples(index=False, name=None))}

    @classmethod
    def load(cls, path: str | Path) -> "GroundTruth":
        path = Path(path).expanduser()
        if not path.is_file():
            raise ConfigError("ground_truth", str(path), "an existing CSV file (e.g. nb201_test_accuracy.csv)")
        try:
            frame = pd.read_csv(path)
        except (ValueError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:  # ParserError is a ValueError
            reason = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
            raise DataError(f"{path}: not a readable CSV table: {reason[:160]}") from None
        table = cls(frame, str(path))
        if len(table) < NUM_ARCHS:
            warnings.warn(f"{path} holds {len(table)} of the {NUM_ARCHS} NAS-Bench-201 architectures: one outside "
                          "it has no known accuracy (reported as NaN)", stacklevel=2)
        return table

    def __len__(self) -> int:
        return len(self._rows)

    def __contains__(self, arch: Arch | str) -> bool:
        return (Arch.parse(arch) if isinstance(arch, str) else arch).ops in self._rows

    def matches(self, dataset: str) -> bool:
        """Whether the table holds accuracies measured on ``dataset``."""
        return GROUND_TRUTH_COLUMNS.get(dataset) in self.columns

    def lookup(self, arch: Arch | str) -> dict[str, float]:
        """All accuracies of ``arch``; an unknown architecture is an error that names it."""
        if isinstance(arch, str):
            arch = Arch.parse(arch)
        row = self._rows.get(arch.ops)
        if row is None:
            raise DataError(f"architecture {arch} is not in the ground-truth table {self.source} "
                            f"({len(self)} architectures)")
        return dict(zip(self.columns, row))

    def column_for(self, dataset: str) -> str:
        """The accuracy column of a search on ``dataset`` (the first column for any other data set: see
        :meth:`matches`)."""
        column = GROUND_TRUTH_COLUMNS.get(dataset, "cifar10_test")
        return column if column in self.columns else self.columns[0]

    def accuracy(self, arch: Arch | str, dataset: str = "cifar10") -> float:
        """Test accuracy of ``arch`` in the column matching ``dataset``."""
        return self.lookup(arch)[self.column_for(dataset)]

    def best(self, dataset: str = "cifar10") -> tuple[Arch, float]:
        """The architecture with the highest accuracy for ``dataset`` and that accuracy."""
        k = self.columns.index(self.column_for(dataset))
        ops, row = max(self._rows.items(), key=lambda item: item[1][k])
        return Arch(ops), row[k]
