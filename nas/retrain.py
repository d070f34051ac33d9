"""Train the network a DARTS genotype describes from scratch (optionally on ASP proxy data).

The ordinary :class:`~asp_tune.trainer.Trainer` loop with DARTS's evaluation extras: drop-path
whose probability rises linearly over the epochs, an auxiliary head whose loss is added with
weight ``aux_weight``, cutout (``TrainConfig.cutout``) and gradient clipping. An epoch's
``train_loss`` is the main head's loss; with the auxiliary head, ``train_aux_loss`` is that
head's loss, unweighted (the weights are trained on ``train_loss + aux_weight * train_aux_loss``).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import pandas as pd
import torch
import torch.nn.functional as F

from asp_tune.datasets import DataBundle
from asp_tune.device import autocast
from asp_tune.models import count_parameters
from asp_tune.build import scores_factory
from asp_tune.trainer import Observed, StepOutput, Trainer
from nas.checkpoint import train_resumably
from nas.darts_space import DartsEvalNetwork
from nas.settings import RetrainSettings
from nas.spaces import require_images


class RetrainTrainer(Trainer):
    """Trainer for :class:`DartsEvalNetwork`: drop-path schedule, auxiliary loss, clipping. With
    ``val_fraction`` 0 it trains on the whole training split and validates nothing (DARTS's evaluation)."""

    validates = False

    def __init__(self, settings: RetrainSettings, data: DataBundle | None = None):
        def network(loaded: DataBundle) -> DartsEvalNetwork:
            require_images(loaded, "a DARTS network")
            return DartsEvalNetwork(settings.genotype, settings.channels, settings.layers, loaded.num_classes,
                                    loaded.image_shape[0], auxiliary=settings.auxiliary)

        super().__init__(settings.train, data, network, grad_clip=settings.grad_clip,
                         scores=scores_factory(settings.train),
                         size_field=("channels", settings.channels))
        self.settings = settings
        self.aux_loss_sum = torch.zeros((), device=self.device)  # this epoch's auxiliary loss, summed over samples
        self.aux_samples = 0

    def train_epoch(self) -> dict[str, Any]:
        self.model.drop_path_prob = self.settings.drop_path_prob * self.epoch / self.config.epochs
        self.aux_loss_sum, self.aux_samples = torch.zeros((), device=self.device), 0
        record = super().train_epoch()
        record["drop_path_prob"] = self.model.drop_path_prob
        if self.settings.auxiliary:
            record["train_aux_loss"] = float(self.aux_loss_sum) / max(self.aux_samples, 1)
        return record

    def train_step(self, batch: Any) -> StepOutput:
        x, y, idx = batch
        with autocast(self.device, self.config.amp):
            out = self.model(x)
        logits, aux = out if isinstance(out, tuple) else (out, None)
        loss = self.training_loss(logits, y, idx)
        if aux is None:
            self.optimizer_step(loss)
        else:
            aux_loss = F.cross_entropy(aux.float(), y)
            self.optimizer_step(loss + self.settings.aux_weight * aux_loss)
            self.aux_loss_sum += aux_loss.detach() * y.shape[0]
            self.aux_samples += y.shape[0]
        # the loss reported as train_loss is the main head's
        return StepOutput(Observed(logits, y, idx, self.feature_tap.take(y.shape[0])), loss)


def run_retrain(settings: RetrainSettings, checkpoint: str | Path | None = None,
                on_epoch: Callable[[dict[str, Any]], None] | None = None) -> tuple[dict[str, Any], pd.DataFrame]:
    """Train to the end (resuming from ``checkpoint`` if it exists); returns (summary, epochs)."""
    settings.validate()
    trainer = RetrainTrainer(settings)
    trainer.validate_each_epoch = settings.train.val_fraction > 0
    run = train_resumably(trainer, settings.to_dict(), checkpoint, on_epoch)
    summary = trainer.summary(wall_time_s=run.seconds)
    summary["resumed_from_epoch"] = run.resumed_from_epoch
    summary["validation"] = "held-out split" if trainer.validate_each_epoch else "none (val_fraction 0: trained on " \
                                                                                 "the whole training split)"
    summary.update({"genotype": settings.genotype.to_dict(), "genotype_str": str(settings.genotype),
                    "channels": settings.channels, "layers": settings.layers, "auxiliary": settings.auxiliary,
                    "drop_path_prob": settings.drop_path_prob, "parameters": count_parameters(trainer.model, exclude=("auxiliary_head",)),
                    "config": settings.train.to_dict()})
    return summary, pd.DataFrame(trainer.history)
