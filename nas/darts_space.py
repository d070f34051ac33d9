"""The DARTS search space: operations, genotypes, the mixed-op search network and the evaluation network.

A cell has two input nodes (the outputs of the two previous cells) and four intermediate nodes;
each intermediate node may take every earlier node as input, giving 2 + 3 + 4 + 5 = 14 edges.
A normal cell keeps the resolution; a reduction cell (at 1/3 and 2/3 of the depth) halves it and
doubles the channels. The cell's output concatenates the four intermediate nodes.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from nas.genotypes import NUM_EDGES, PRIMITIVES, STEPS, Edge, Genotype

# ---------------------------------------------------------------------------------------- operations

class DartsReLUConvBN(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool):
        super().__init__(nn.ReLU(inplace=False), nn.Conv2d(c_in, c_out, kernel, stride, padding, bias=False),
                         nn.BatchNorm2d(c_out, affine=affine))


class DilConv(nn.Sequential):
    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, dilation: int,
                 affine: bool):
        super().__init__(nn.ReLU(inplace=False),
                         nn.Conv2d(c_in, c_in, kernel, stride, padding, dilation=dilation, groups=c_in, bias=False),
                         nn.Conv2d(c_in, c_out, 1, bias=False), nn.BatchNorm2d(c_out, affine=affine))


class SepConv(nn.Sequential):
    """Two stacked depthwise-separable convolutions (the first may stride)."""

    def __init__(self, c_in: int, c_out: int, kernel: int, stride: int, padding: int, affine: bool):
        super().__init__(DilConv(c_in, c_in, kernel, stride, padding, 1, affine),
                         DilConv(c_in, c_out, kernel, 1, padding, 1, affine))


class Zero(nn.Module):
    def __init__(self, stride: int):
        super().__init__()
        self.stride = stride

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x[:, :, ::self.stride, ::self.stride].mul(0.0)


class FactorizedReduce(nn.Module):
    """Halve the resolution with two offset stride-2 1x1 convolutions, concatenated."""

    def __init__(self, c_in: int, c_out: int, affine: bool):
        super().__init__()
        self.relu = nn.ReLU(inplace=False)
        self.conv_a = nn.Conv2d(c_in, c_out // 2, 1, stride=2, bias=False)
        self.conv_b = nn.Conv2d(c_in, c_out - c_out // 2, 1, stride=2, bias=False)
        self.bn = nn.BatchNorm2d(c_out, affine=affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu(x)
        shifted = F.pad(x[:, :, 1:, 1:], (0, 1, 0, 1))
        return self.bn(torch.cat([self.conv_a(x), self.conv_b(shifted)], dim=1))


DARTS_OPS: dict[str, Callable[[int, int, bool], nn.Module]] = {
    "none": lambda c, stride, affine: Zero(stride),
    "max_pool_3x3": lambda c, stride, affine: nn.MaxPool2d(3, stride, padding=1),
    "avg_pool_3x3": lambda c, stride, affine: nn.AvgPool2d(3, stride, padding=1, count_include_pad=False),
    "skip_connect": lambda c, stride, affine: nn.Identity() if stride == 1 else FactorizedReduce(c, c, affine),
    "sep_conv_3x3": lambda c, stride, affine: SepConv(c, c, 3, stride, 1, affine),
    "sep_conv_5x5": lambda c, stride, affine: SepConv(c, c, 5, stride, 2, affine),
    "dil_conv_3x3": lambda c, stride, affine: DilConv(c, c, 3, stride, 2, 2, affine),
    "dil_conv_5x5": lambda c, stride, affine: DilConv(c, c, 5, stride, 4, 2, affine),
}


def _preprocess(c_prev_prev: int, c_prev: int, c: int, reduction_prev: bool, affine: bool) -> tuple[nn.Module, nn.Module]:
    first = FactorizedReduce(c_prev_prev, c, affine) if reduction_prev else DartsReLUConvBN(c_prev_prev, c, 1, 1, 0, affine)
    return first, DartsReLUConvBN(c_prev, c, 1, 1, 0, affine)


def reduction_layers(layers: int) -> tuple[int, ...]:
    return (layers // 3, 2 * layers // 3)


def derive_genotype(alphas_normal: torch.Tensor, alphas_reduce: torch.Tensor) -> Genotype:
    """Per intermediate node keep the two incoming edges whose best non-``none`` weight is largest,
    each with that best non-``none`` op (the DARTS rule; ``none`` is never picked)."""
    none = PRIMITIVES.index("none")

    def cell(weights: torch.Tensor) -> tuple[Edge, ...]:
        w = torch.softmax(weights.detach().float().cpu(), dim=-1)
        w[:, none] = -1.0
        edges: list[Edge] = []
        start = 0
        for node in range(STEPS):
            rows = w[start:start + 2 + node]
            strength, best = rows.max(dim=-1)
            top = sorted(torch.topk(strength, 2).indices.tolist())
            edges.extend((PRIMITIVES[int(best[j])], int(j)) for j in top)
            start += 2 + node
        return tuple(edges)

    return Genotype(normal=cell(alphas_normal), reduce=cell(alphas_reduce))


# ------------------------------------------------------------------------------------ search network

class MixedOp(nn.Module):
    def __init__(self, c: int, stride: int):
        super().__init__()
        ops = []
        for name in PRIMITIVES:
            op = DARTS_OPS[name](c, stride, False)
            if "pool" in name:
                op = nn.Sequential(op, nn.BatchNorm2d(c, affine=False))
            ops.append(op)
        self.ops = nn.ModuleList(ops)

    def forward(self, x: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        return sum(w * op(x) for w, op in zip(weights, self.ops))


class DartsMixedCell(nn.Module):
    """A search cell whose every edge mixes all operations by the weights given to ``forward``."""

    def __init__(self, c_prev_prev: int, c_prev: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.out_channels = STEPS * c
        self.pre0, self.pre1 = _preprocess(c_prev_prev, c_prev, c, reduction_prev, affine=False)
        self.edges = nn.ModuleList(MixedOp(c, 2 if reduction and j < 2 else 1)
                                   for i in range(STEPS) for j in range(2 + i))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        e = 0
        for _ in range(STEPS):
            node = sum(self.edges[e + j](h, weights[e + j]) for j, h in enumerate(states))
            e += len(states)
            states.append(node)
        return torch.cat(states[-STEPS:], dim=1)


def stack_cells(channels: int, layers: int, in_channels: int, make_cell: Callable[..., nn.Module],
                stem_multiplier: int = 3) -> tuple[nn.Module, nn.ModuleList]:
    """The DARTS macro skeleton: a stem, then ``layers`` cells, reductions (channels doubled) at 1/3
    and 2/3 of the depth. ``make_cell(c_prev_prev, c_prev, c, reduction, reduction_prev)`` builds
    each cell, which tells its ``out_channels``."""
    c_curr = stem_multiplier * channels
    stem = nn.Sequential(nn.Conv2d(in_channels, c_curr, 3, padding=1, bias=False), nn.BatchNorm2d(c_curr))
    c_prev_prev, c_prev, c_curr = c_curr, c_curr, channels
    cells: list[nn.Module] = []
    reduction_prev = False
    for i in range(layers):
        reduction = i in reduction_layers(layers)
        if reduction:
            c_curr *= 2
        cells.append(make_cell(c_prev_prev, c_prev, c_curr, reduction, reduction_prev))
        reduction_prev = reduction
        c_prev_prev, c_prev = c_prev, cells[-1].out_channels
    return stem, nn.ModuleList(cells)


class DartsSearchNetwork(nn.Module):
    """The DARTS supernet: every edge a softmax-weighted mixture of the 8 operations."""

    def __init__(self, channels: int = 16, layers: int = 8, num_classes: int = 10, in_channels: int = 3,
                 stem_multiplier: int = 3):
        super().__init__()
        self.channels, self.num_layers = channels, layers
        self.stem, self.cells = stack_cells(channels, layers, in_channels, DartsMixedCell, stem_multiplier)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.cells[-1].out_channels, num_classes)
        self.alphas_normal = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, len(PRIMITIVES)))
        self.alphas_reduce = nn.Parameter(1e-3 * torch.randn(NUM_EDGES, len(PRIMITIVES)))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        normal = torch.softmax(self.alphas_normal, dim=-1)
        reduce = torch.softmax(self.alphas_reduce, dim=-1)
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, reduce if cell.reduction else normal)
        return self.classifier(self.pool(s1).flatten(1))

    def weight_parameters(self) -> list[nn.Parameter]:
        return [p for n, p in self.named_parameters() if not n.startswith("alphas_")]

    def arch_parameters(self) -> list[nn.Parameter]:
        return [self.alphas_normal, self.alphas_reduce]

    def derive(self) -> Genotype:
        return derive_genotype(self.alphas_normal, self.alphas_reduce)


# ------------------------------------------------------------------------------- single-path supernet

def batch_statistics_only(module: nn.Module) -> nn.Module:
    """Make every batch norm in ``module`` normalise with the current batch, in training and
    evaluation alike: running statistics mixed over many paths fit none of them, so a sampled
    path is scored with the weights it inherits and needs no recalibration."""
    for m in module.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.track_running_stats = False
            m.running_mean = m.running_var = m.num_batches_tracked = None
    return module


class DartsSinglePathCell(nn.Module):
    """A search cell holding every operation on every edge; ``forward`` runs only a genotype's
    two (op, input) pairs per node, as SPOS needs."""

    def __init__(self, c_prev_prev: int, c_prev: int, c: int, reduction: bool, reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.out_channels = STEPS * c
        self.pre0, self.pre1 = _preprocess(c_prev_prev, c_prev, c, reduction_prev, affine=False)
        self.edges = nn.ModuleList(
            nn.ModuleDict({op: DARTS_OPS[op](c, 2 if reduction and j < 2 else 1, False)
                           for op in PRIMITIVES if op != "none"})
            for i in range(STEPS) for j in range(2 + i))

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, edges: Sequence[Edge]) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        first = 0  # index of the current node's first incoming edge
        for i in range(STEPS):
            node = sum(self.edges[first + src][op](states[src]) for op, src in edges[2 * i:2 * i + 2])
            first += 2 + i
            states.append(node)
        return torch.cat(states[-STEPS:], dim=1)


class DartsSinglePathSupernet(nn.Module):
    """SPOS on the DARTS space: ``set_arch(genotype)`` picks the path every normal and every
    reduction cell runs (its ``normal`` and ``reduce`` edges; all four nodes are concatenated)."""

    def __init__(self, channels: int = 16, layers: int = 8, num_classes: int = 10, in_channels: int = 3,
                 stem_multiplier: int = 3):
        super().__init__()
        self.stem, self.cells = stack_cells(channels, layers, in_channels, DartsSinglePathCell, stem_multiplier)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.cells[-1].out_channels, num_classes)
        batch_statistics_only(self)
        self.arch: Genotype | None = None

    def set_arch(self, genotype: Genotype) -> None:
        self.arch = genotype

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.arch is None:
            raise RuntimeError("DartsSinglePathSupernet.forward needs set_arch(genotype) first")
        s0 = s1 = self.stem(x)
        for cell in self.cells:
            s0, s1 = s1, cell(s0, s1, self.arch.reduce if cell.reduction else self.arch.normal)
        return self.classifier(self.pool(s1).flatten(1))


# -------------------------------------------------------------------------------- evaluation network

def drop_path(x: torch.Tensor, drop_prob: float) -> torch.Tensor:
    """Zero whole samples of a branch with probability ``drop_prob``, rescaling the rest."""
    if drop_prob <= 0.0:
        return x
    keep = 1.0 - drop_prob
    mask = torch.empty(x.shape[0], 1, 1, 1, device=x.device, dtype=x.dtype).bernoulli_(keep)
    return x * mask / keep


class EvalCell(nn.Module):
    def __init__(self, genotype: Genotype, c_prev_prev: int, c_prev: int, c: int, reduction: bool,
                 reduction_prev: bool):
        super().__init__()
        self.reduction = reduction
        self.pre0, self.pre1 = _preprocess(c_prev_prev, c_prev, c, reduction_prev, affine=True)
        edges = genotype.reduce if reduction else genotype.normal
        self.concat = genotype.reduce_concat if reduction else genotype.normal_concat
        self.out_channels = len(self.concat) * c
        self.inputs = [node for _, node in edges]
        self.ops = nn.ModuleList(DARTS_OPS[op](c, 2 if reduction and node < 2 else 1, True) for op, node in edges)

    def forward(self, s0: torch.Tensor, s1: torch.Tensor, drop_prob: float) -> torch.Tensor:
        states = [self.pre0(s0), self.pre1(s1)]
        for i in range(STEPS):
            branches = []
            for k in (2 * i, 2 * i + 1):
                h = self.ops[k](states[self.inputs[k]])
                if self.training and not isinstance(self.ops[k], nn.Identity):
                    h = drop_path(h, drop_prob)
                branches.append(h)
            states.append(branches[0] + branches[1])
        return torch.cat([states[i] for i in self.concat], dim=1)


class AuxiliaryHead(nn.Module):
    """Classifier on the features after the second reduction (pooled to 2x2, as DARTS's head on 8x8)."""

    def __init__(self, c: int, num_classes: int):
        super().__init__()
        self.features = nn.Sequential(
            # not in place: its input is the cell's output, which the next cell (or the main head) reads
            nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Conv2d(c, 128, 1, bias=False), nn.BatchNorm2d(128),
            nn.ReLU(inplace=True), nn.Conv2d(128, 768, 2, bias=False), nn.BatchNorm2d(768), nn.ReLU(inplace=True))
        self.classifier = nn.Linear(768, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x).flatten(1))


class DartsEvalNetwork(nn.Module):
    """The network a genotype describes, trained from scratch; in training mode with an auxiliary
    head it returns ``(logits, aux_logits)``."""

    def __init__(self, genotype: Genotype, channels: int = 36, layers: int = 20, num_classes: int = 10,
                 in_channels: int = 3, auxiliary: bool = False, stem_multiplier: int = 3):
        super().__init__()
        self.drop_path_prob = 0.0

        def make_cell(c_prev_prev: int, c_prev: int, c: int, reduction: bool, reduction_prev: bool) -> EvalCell:
            return EvalCell(genotype, c_prev_prev, c_prev, c, reduction, reduction_prev)

        self.stem, self.cells = stack_cells(channels, layers, in_channels, make_cell, stem_multiplier)
        self.aux_after = 2 * layers // 3 if auxiliary else -1
        self.auxiliary_head = AuxiliaryHead(self.cells[self.aux_after].out_channels, num_classes) if auxiliary else None
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Linear(self.cells[-1].out_channels, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        aux = None
        s0 = s1 = self.stem(x)
        for i, cell in enumerate(self.cells):
            s0, s1 = s1, cell(s0, s1, self.drop_path_prob)
            if i == self.aux_after and self.training and self.auxiliary_head is not None:
                aux = self.auxiliary_head(s1)
        logits = self.classifier(self.pool(s1).flatten(1))
        return (logits, aux) if aux is not None else logits
