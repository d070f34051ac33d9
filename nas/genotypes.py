"""The DARTS cells without their networks: operations' names and genotypes (the space object is
:mod:`nas.space_darts`).

A cell has two input nodes (the outputs of the two previous cells) and four intermediate nodes;
each intermediate node takes two earlier nodes through one operation each. A genotype names
these (operation, input) pairs for the normal and the reduction cell. The networks live in
:mod:`nas.darts_space` and are imported only when built.
"""

from __future__ import annotations

import ast
import itertools
import json
import re
from dataclasses import dataclass
from pathlib import Path
from random import Random

from asp_tune.errors import ConfigError

PRIMITIVES = ("none", "max_pool_3x3", "avg_pool_3x3", "skip_connect", "sep_conv_3x3", "sep_conv_5x5",
              "dil_conv_3x3", "dil_conv_5x5")
STEPS = 4  # intermediate nodes per cell
NUM_EDGES = sum(2 + i for i in range(STEPS))  # 14


Edge = tuple[str, int]  # (operation, input node): nodes 0 and 1 are the cell inputs


@dataclass(frozen=True)
class Genotype:
    """A derived DARTS architecture: two (op, input) pairs per intermediate node, per cell type."""

    normal: tuple[Edge, ...]
    reduce: tuple[Edge, ...]
    normal_concat: tuple[int, ...] = tuple(range(2, 2 + STEPS))
    reduce_concat: tuple[int, ...] = tuple(range(2, 2 + STEPS))

    def __post_init__(self) -> None:
        for field in ("normal", "reduce"):
            edges = getattr(self, field)
            if len(edges) != 2 * STEPS:
                raise ConfigError(f"genotype.{field}", edges, f"{2 * STEPS} (op, input) pairs, two per node")
            for k, (op, node) in enumerate(edges):
                if op not in PRIMITIVES or op == "none":
                    raise ConfigError(f"genotype.{field} op", op, PRIMITIVES[1:])
                if not (isinstance(node, int) and 0 <= node < 2 + k // 2):
                    raise ConfigError(f"genotype.{field} input of node {2 + k // 2}", node,
                                      f"an earlier node 0..{1 + k // 2}")
        for field in ("normal_concat", "reduce_concat"):
            nodes = getattr(self, field)
            if not nodes or any(not (isinstance(n, int) and 0 <= n < 2 + STEPS) for n in nodes):
                raise ConfigError(f"genotype.{field}", list(nodes), f"a non-empty list of nodes in 0..{1 + STEPS}")

    def to_dict(self) -> dict:
        return {"normal": [list(e) for e in self.normal], "normal_concat": list(self.normal_concat),
                "reduce": [list(e) for e in self.reduce], "reduce_concat": list(self.reduce_concat)}

    @classmethod
    def from_dict(cls, d: dict) -> "Genotype":
        try:
            fields = {"normal": tuple((str(op), _index(i)) for op, i in d["normal"]),
                      "reduce": tuple((str(op), _index(i)) for op, i in d["reduce"]),
                      "normal_concat": tuple(_index(i) for i in d.get("normal_concat", range(2, 2 + STEPS))),
                      "reduce_concat": tuple(_index(i) for i in d.get("reduce_concat", range(2, 2 + STEPS)))}
        except (KeyError, TypeError, ValueError, AttributeError) as exc:
            raise ConfigError("genotype", d, "normal and reduce lists of [op, input] pairs") from exc
        return cls(**fields)

    def __str__(self) -> str:
        def concat(c: tuple[int, ...]) -> str:
            return f"range({c[0]}, {c[-1] + 1})" if list(c) == list(range(c[0], c[-1] + 1)) else str(list(c))
        return (f"Genotype(normal={list(self.normal)}, normal_concat={concat(self.normal_concat)}, "
                f"reduce={list(self.reduce)}, reduce_concat={concat(self.reduce_concat)})")

    @classmethod
    def parse(cls, text: str) -> "Genotype":
        """A genotype from a known name, its ``Genotype(...)`` repr, JSON, or a file holding either
        (a ``summary.json`` of a DARTS search works: its ``genotype`` entry is used; its run folder too).
        A search of several seeds holds one genotype per seed: ``RUN/summary.json#seed=S`` takes seed S's."""
        text = text.strip()
        if text.lower() in KNOWN_GENOTYPES:
            return KNOWN_GENOTYPES[text.lower()]
        seed, source = None, text
        if not text.startswith(("{", "Genotype(")):
            match = re.fullmatch(r"(.*)#seed=(-?\d+)", text)
            if match:
                text, seed = match.group(1), int(match.group(2))
            path = Path(text).expanduser()
            try:
                if path.is_dir() and (path / "summary.json").is_file():  # a search's results folder
                    path = path / "summary.json"
                is_file = path.is_file() and path.stat().st_size <= 10_000_000  # a summary is a few kB
            except (OSError, ValueError):  # a name too long for a path, a NUL byte: not a file
                is_file = False
            if is_file:
                try:
                    text = path.read_text().strip()
                except (OSError, UnicodeDecodeError) as exc:
                    raise ConfigError("genotype", str(path), f"a readable text file ({type(exc).__name__})") from None
        if text.startswith("{"):
            try:
                data = json.loads(text, parse_constant=_no_constant)
            except (json.JSONDecodeError, ValueError) as exc:
                raise ConfigError("genotype", text[:80], f"valid JSON ({exc})") from None
            except RecursionError:
                raise ConfigError("genotype", text[:80], "JSON nested a few levels deep, not thousands") from None
            if isinstance(data, dict):
                data = _one_seeds(data, seed, source)
            if isinstance(data, dict) and isinstance(data.get("genotype"), dict):
                data = data["genotype"]
            if not isinstance(data, dict):
                raise ConfigError("genotype", text[:80], "a JSON object {\"normal\": [...], \"reduce\": [...]}")
            if "normal" not in data and ("space" in data or "arch" in data or "correlations" in data):
                what = (f"the summary of a search of the {data['space']} space (architecture {data.get('arch')})"
                        if "space" in data else "a summary without a DARTS genotype")
                raise ConfigError("genotype", what, "a DARTS-space genotype: the summary.json of a search with "
                                                    "--space darts, a known name, Genotype(...) or its JSON")
            return cls.from_dict(data)
        if text.startswith("Genotype("):
            return cls.from_dict(_parse_repr(text))
        raise ConfigError("genotype", text[:80], f"one of {sorted(KNOWN_GENOTYPES)}, 'Genotype(...)', JSON, "
                                                 "or a file holding one (e.g. a search's summary.json)")


def _one_seeds(summary: dict, seed: int | None, source: str) -> dict:
    """``summary`` as one seed's: a search of several seeds keeps each seed's genotype in ``runs``, and ``seed``
    (``#seed=S`` after the file's name) picks one; a summary of one seed is itself, ``seed`` checked against it."""
    runs = summary.get("runs") if "genotype" not in summary else None
    by_seed = {r.get("seed"): r for r in runs or () if isinstance(r, dict) and isinstance(r.get("genotype"), dict)}
    where = source.split("#seed=")[0]
    if by_seed:
        if seed in by_seed:
            return by_seed[seed]
        given = f"{where}#seed={seed}" if seed is not None else f"{where} (a search of {len(by_seed)} seeds)"
        raise ConfigError("genotype", given, "one seed's genotype: " + ", ".join(f"{where}#seed={s}" for s in by_seed))
    if seed is not None and summary.get("seed", seed) != seed:
        raise ConfigError("genotype", f"{where}#seed={seed}", f"the seed that search ran: {where}#seed="
                                                               f"{summary.get('seed')}, or {where}")
    return summary


def _index(value) -> int:
    """A node index: an integer (1.7 or "1" is an error, not 1)."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise ValueError(f"{value!r} is not a node index")
    return value


def _no_constant(name: str) -> None:
    raise ValueError(f"{name} is not a number a genotype can hold")


def _parse_repr(text: str) -> dict:
    try:
        call = ast.parse(text, mode="eval").body
        if not isinstance(call, ast.Call):
            raise ValueError("not a call")
        out = {}
        for kw in call.keywords:
            node = kw.value
            if isinstance(node, ast.Call) and getattr(node.func, "id", "") == "range":
                nodes = list(itertools.islice(range(*[ast.literal_eval(a) for a in node.args]), 3 + STEPS))
                if len(nodes) > 2 + STEPS:  # checked before the list is built: range(0, 10**9) would fill memory
                    raise ValueError(f"{kw.arg}: a cell has {2 + STEPS} nodes, the range holds more")
                out[kw.arg] = nodes
            else:
                out[kw.arg] = ast.literal_eval(node)
        return out
    except (SyntaxError, ValueError, TypeError) as exc:
        raise ConfigError("genotype", text[:80], f"a Genotype(normal=[...], reduce=[...]) expression ({exc})") from None


#: Published genotypes by name (DARTS paper, second order on CIFAR-10).
KNOWN_GENOTYPES = {
    "darts_v2": Genotype(
        normal=(("sep_conv_3x3", 0), ("sep_conv_3x3", 1), ("sep_conv_3x3", 0), ("sep_conv_3x3", 1),
                ("sep_conv_3x3", 1), ("skip_connect", 0), ("skip_connect", 0), ("dil_conv_3x3", 2)),
        reduce=(("max_pool_3x3", 0), ("max_pool_3x3", 1), ("skip_connect", 2), ("max_pool_3x3", 1),
                ("max_pool_3x3", 0), ("skip_connect", 2), ("skip_connect", 2), ("max_pool_3x3", 1))),
}


def _random_cell(rng: Random) -> tuple[Edge, ...]:
    edges: list[Edge] = []
    for node in range(STEPS):
        for src in sorted(rng.sample(range(2 + node), 2)):
            edges.append((rng.choice(PRIMITIVES[1:]), src))
    return tuple(edges)


def _mutate_edge(edges: list[Edge], k: int, rng: Random) -> None:
    """Give edge ``k`` another operation or, where its node has a free input, another input."""
    op, src = edges[k]
    sibling = edges[k ^ 1][1]
    free = [i for i in range(2 + k // 2) if i not in (src, sibling)]
    if free and rng.random() < 0.5:
        edges[k] = (op, rng.choice(free))
    else:
        edges[k] = (rng.choice([o for o in PRIMITIVES[1:] if o != op]), src)
