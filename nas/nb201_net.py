"""NAS-Bench-201 networks: the macro skeleton around one repeated searchable cell.

Skeleton: a 3x3 stem with ``C`` channels, three stages of ``N`` cells with ``C``, ``2C`` and
``4C`` channels joined by residual reduction blocks (stride 2), then BN-ReLU, global pooling and
a linear head. Every cell in the network shares one choice per edge, given to ``forward`` as
either op indices (a single path: only the chosen op runs on each edge, as SPOS needs, and edges
whose result cannot reach the cell output are skipped) or a
``(6, 5)`` weight matrix (the DARTS mixture of all ops).

Batch norm: searched networks use ``track_running_stats=False``, so training and evaluation both
normalise with the current batch's statistics. A sampled sub-network is therefore scored with
the weights it inherits and needs no BN recalibration (NAS-Bench-201's own search code makes
the same choice); evaluation batches must hold more than a handful of samples.
"""

from __future__ import annotations

import functools
from typing import Sequence

import torch
from torch import nn

from nas.nb201 import EDGES, NUM_NODES, NB201_OPS, Arch


def _bn(channels: int, affine: bool, track: bool) -> nn.BatchNorm2d:
    return nn.BatchNorm2d(channels, affine=affine, track_running_stats=track)


class Nb201ReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, affine: bool, track: bool):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_out, kernel, stride, padding=kernel // 2, bias=False),
                         _bn(c_out, affine, track))


def make_op(name: str, channels: int, affine: bool, track: bool) -> nn.Module | None:
    """One NAS-Bench-201 operation at stride 1; ``none`` is ``None`` (contributes nothing)."""
    if name == "none":
        return None
    if name == "skip_connect":
        return nn.Identity()
    if name == "nor_conv_1x1":
        return Nb201ReLUConvBN(channels, channels, 1, 1, affine, track)
    if name == "nor_conv_3x3":
        return Nb201ReLUConvBN(channels, channels, 3, 1, affine, track)
    if name == "avg_pool_3x3":
        return nn.AvgPool2d(3, stride=1, padding=1, count_include_pad=False)
    raise ValueError(f"unknown NAS-Bench-201 operation {name!r}")


@functools.lru_cache(maxsize=None)
def live_edges(path: tuple[int, ...], none: int) -> tuple[bool, ...]:
    """Which edges of a single path reach the cell output: an edge into a node whose result only
    flows through ``none`` edges is dead, and skipping it changes nothing but the cost."""
    live_nodes = {NUM_NODES - 1}
    for node in range(NUM_NODES - 2, 0, -1):
        if any(path[e] != none and j in live_nodes and i == node for e, (j, i) in enumerate(EDGES)):
            live_nodes.add(node)
    return tuple(path[e] != none and j in live_nodes for e, (j, _) in enumerate(EDGES))


class Nb201Cell(nn.Module):
    """A cell holding every operation on every edge; the forward call chooses which run."""

    def __init__(self, channels: int, affine: bool, track: bool, ops: Sequence[str] = NB201_OPS):
        super().__init__()
        self.op_names = tuple(ops)
        self.edges = nn.ModuleList(
            nn.ModuleList(make_op(op, channels, affine, track) or nn.Identity() for op in self.op_names)
            for _ in EDGES)
        self._none = self.op_names.index("none") if "none" in self.op_names else -1

    def forward(self, x: torch.Tensor, choice: Sequence[int] | torch.Tensor) -> torch.Tensor:
        nodes = [x]
        weighted = isinstance(choice, torch.Tensor)
        live = None if weighted else live_edges(tuple(int(k) for k in choice), self._none)
        e = 0
        for j in range(1, NUM_NODES):
            total: torch.Tensor | None = None
            for i in range(j):
                if weighted:
                    out = sum(choice[e, k] * op(nodes[i]) for k, op in enumerate(self.edges[e])
                              if k != self._none)
                else:
                    out = self.edges[e][int(choice[e])](nodes[i]) if live[e] else None
                if out is not None:
                    total = out if total is None else total + out
                e += 1
            nodes.append(torch.zeros_like(x) if total is None else total)
        return nodes[-1]


class ResNetReduction(nn.Module):
    """The residual block between stages: two 3x3 convs (first at stride 2) plus a pooled shortcut."""

    def __init__(self, c_in: int, c_out: int, affine: bool, track: bool):
        super().__init__()
        self.a = Nb201ReLUConvBN(c_in, c_out, 3, 2, affine, track)
        self.b = Nb201ReLUConvBN(c_out, c_out, 3, 1, affine, track)
        self.shortcut = nn.Sequential(nn.AvgPool2d(2, stride=2), nn.Conv2d(c_in, c_out, 1, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.shortcut(x) + self.b(self.a(x))


class Nb201Skeleton(nn.Module):
    """Stem, three stages of ``cells_per_stage`` search cells, reductions, head."""

    def __init__(self, channels: int = 16, cells_per_stage: int = 5, num_classes: int = 10,
                 in_channels: int = 3, affine: bool = False, track_running_stats: bool = False):
        super().__init__()
        self.channels, self.cells_per_stage = channels, cells_per_stage
        self.stem = nn.Sequential(nn.Conv2d(in_channels, channels, 3, padding=1, bias=False),
                                  _bn(channels, True, track_running_stats))
        layers: list[nn.Module] = []
        c_prev = channels
        for stage in range(3):
            c = channels * 2 ** stage
            if stage > 0:
                layers.append(ResNetReduction(c_prev, c, True, track_running_stats))
            layers.extend(Nb201Cell(c, affine, track_running_stats) for _ in range(cells_per_stage))
            c_prev = c
        self.layers = nn.ModuleList(layers)
        self.head = nn.Sequential(_bn(c_prev, True, track_running_stats), nn.ReLU(inplace=False),
                                  nn.AdaptiveAvgPool2d(1), nn.Flatten())
        self.classifier = nn.Linear(c_prev, num_classes)

    def run(self, x: torch.Tensor, choice: Sequence[int] | torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        for layer in self.layers:
            x = layer(x, choice) if isinstance(layer, Nb201Cell) else layer(x)
        return self.classifier(self.head(x))


class Nb201Supernet(Nb201Skeleton):
    """Single-path one-shot supernet (SPOS): ``set_arch`` picks the path every cell runs."""

    arch: Arch | None = None

    def set_arch(self, arch: Arch) -> None:
        self.arch = arch
        self._path = arch.indices

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch is None:
            raise RuntimeError("Nb201Supernet.forward needs set_arch(arch) first")
        return self.run(x, self._path)

    def path_modules(self, arch: Arch) -> list[nn.Module]:
        """The operation modules ``arch`` runs, every cell's (``none`` and dead edges left out)."""
        live = live_edges(arch.indices, NB201_OPS.index("none"))
        return [cell.edges[e][k] for cell in self.layers if isinstance(cell, Nb201Cell)
                for e, k in enumerate(arch.indices) if live[e]]


class Nb201DartsNetwork(Nb201Skeleton):
    """DARTS on the NAS-Bench-201 space: each edge mixes all ops by ``softmax(alpha)``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.alpha = nn.Parameter(1e-3 * torch.randn(len(EDGES), len(NB201_OPS)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.run(x, torch.softmax(self.alpha, dim=-1))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for name, p in self.named_parameters() if name != "alpha"]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alpha]

    def derive(self) -> Arch:
        """The op with the largest weight on each edge (``none`` included, as NAS-Bench-201's DARTS does)."""
        return Arch.from_indices(self.alpha.detach().argmax(dim=-1).tolist())
