"""What a network learns: the loss, the evaluation, the prediction and the score of a constant predictor.

A :class:`Task` is the one place the trainer, the model file and the searches ask what kind of problem
they train: ``classification`` (integer labels, cross-entropy, accuracy) or ``regression`` (float
targets, mean squared error, R²). ``auto`` (the default) takes classification for integer labels and
regression for float targets. A user's own task is a registered name or an import path
``package.module:TASK`` to an object with the same methods (``TASKS.register``, or the entry-point
group ``asp_tune.tasks``).

Every task reports one *score*, higher is better (``val_score``, and ``val_<score_name>``: accuracy,
R²), which is what a search optimises, and the score a constant predictor gets on the same split
(:meth:`Task.constant_score`: the majority class's share, or R² 0 for the training mean), so a
run can tell a network that learnt nothing.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

import torch
import torch.nn.functional as F

from asp_tune.errors import ConfigError
from asp_tune.imports import resolve
from asp_tune.registry import TASKS


@runtime_checkable
class Task(Protocol):
    """What the trainer asks of a problem."""

    name: str
    score_name: str  # reported as val_<score_name> (higher is better)
    #: whether the proxy memory may read class logits (entropy, gradient, prediction); else it learns the loss only
    has_classes: bool

    def check_targets(self, targets: torch.Tensor, where: str) -> None: ...

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        """Per-sample loss, shape ``(B,)``. A task whose loss also takes ``label_smoothing`` as a tensor ``(B,)``
        (one value per sample) says so with a class attribute ``smoothing_per_sample = True``: a pack whose
        members smooth differently then calls it once, not once per value."""

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """Sums of a batch that :meth:`finish` turns into (score, mean loss); added up over batches."""

    def finish(self, sums: torch.Tensor, count: int) -> tuple[float, float]: ...

    def predict(self, outputs: torch.Tensor) -> torch.Tensor: ...

    def constant_score(self, train_targets: torch.Tensor, targets: torch.Tensor) -> float: ...


class Classification:
    """Integer class labels: cross-entropy (with label smoothing), accuracy, softmax probabilities."""

    name = "classification"
    score_name = "accuracy"
    has_classes = True
    smoothing_per_sample = True

    def check_targets(self, targets: torch.Tensor, where: str) -> None:
        if targets.is_floating_point() or targets.dim() != 1:
            raise ConfigError("task", self.name, f"integer class labels of shape (N,) ({where} holds "
                                                 f"{targets.dtype} {tuple(targets.shape)}: task regression)")

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor,
             label_smoothing: float | torch.Tensor = 0.0) -> torch.Tensor:
        if isinstance(label_smoothing, torch.Tensor):  # a pack's members each with their own
            log_p = F.log_softmax(outputs.float(), dim=1)
            nll = -log_p.gather(1, targets.unsqueeze(1)).squeeze(1)
            return (1.0 - label_smoothing) * nll + label_smoothing * -log_p.mean(dim=1)
        return F.cross_entropy(outputs.float(), targets, label_smoothing=label_smoothing, reduction="none")

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        correct = (outputs.argmax(dim=1) == targets).sum().double()
        return torch.stack([correct, F.cross_entropy(outputs.float(), targets, reduction="sum").double()])

    def finish(self, sums: torch.Tensor, count: int) -> tuple[float, float]:
        return float(sums[0]) / count, float(sums[1]) / count

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return torch.softmax(outputs.float(), dim=1)

    def constant_score(self, train_targets: torch.Tensor, targets: torch.Tensor) -> float:
        """The accuracy of always predicting the training split's most frequent class."""
        if not targets.numel():
            return float("nan")
        majority = torch.bincount(train_targets.long()).argmax()
        return float((targets == majority).float().mean())


class Regression:
    """Float targets ``(N,)`` or ``(N, k)``: mean squared error, R² (over all target values), the outputs."""

    name = "regression"
    score_name = "r2"
    has_classes = False

    def check_targets(self, targets: torch.Tensor, where: str) -> None:
        if not targets.is_floating_point() or targets.dim() not in (1, 2):
            raise ConfigError("task", self.name, f"float targets of shape (N,) or (N, k) ({where} holds "
                                                 f"{targets.dtype} {tuple(targets.shape)})")
        if not bool(torch.isfinite(targets).all()):
            raise ConfigError("task", self.name, f"finite targets ({where} holds NaN or infinite values)")

    @staticmethod
    def _pair(outputs: torch.Tensor, targets: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        y = targets.float().reshape(targets.shape[0], -1)
        return outputs.float().reshape(y.shape), y

    def loss(self, outputs: torch.Tensor, targets: torch.Tensor, label_smoothing: float = 0.0) -> torch.Tensor:
        out, y = self._pair(outputs, targets)
        return ((out - y) ** 2).mean(dim=1)

    def batch_sums(self, outputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        out, y = self._pair(outputs, targets)
        out, y = out.double(), y.double()
        return torch.cat([((out - y) ** 2).sum().reshape(1), y.sum(dim=0), (y * y).sum(dim=0)])

    def finish(self, sums: torch.Tensor, count: int) -> tuple[float, float]:
        k = (sums.numel() - 1) // 2
        sse, total, squares = float(sums[0]), sums[1:1 + k], sums[1 + k:]
        spread = float((squares - total * total / count).sum())
        r2 = 1.0 - sse / spread if spread > 0 else float("nan")
        return r2, sse / (count * k)

    def predict(self, outputs: torch.Tensor) -> torch.Tensor:
        return outputs.float()

    def constant_score(self, train_targets: torch.Tensor, targets: torch.Tensor) -> float:
        """The R² of always predicting the training split's mean (about 0)."""
        if not targets.numel():
            return float("nan")
        mean = train_targets.float().reshape(train_targets.shape[0], -1).mean(dim=0)
        constant = mean.expand(targets.shape[0], -1)
        return self.finish(self.batch_sums(constant, targets), targets.shape[0])[0]


CLASSIFICATION, REGRESSION = Classification(), Regression()


def task_names() -> tuple[str, ...]:
    return ("auto", *TASKS)


def task_for(name: Any, targets: torch.Tensor) -> Task:
    """The task ``name`` (``auto``: classification for integer labels, regression for float targets),
    checked against the targets it will train on."""
    if name == "auto":
        task: Any = REGRESSION if targets.is_floating_point() else CLASSIFICATION
    else:
        task = resolve(TASKS, name, "task")
    if not isinstance(task, Task):
        raise ConfigError("task", name, "a Task: an object with loss, batch_sums, finish, predict, constant_score")
    task.check_targets(targets, "the training split")
    return task
