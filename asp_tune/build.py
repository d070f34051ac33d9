"""Turning a config into the objects of a run: data, task, network, strategy, selector, feeders, scoring model.

The one place above the trainer: :func:`build_trainer` builds the run's parts once
(:func:`asp_tune.assembly.build_parts`: the data loaded, or taken, the task, the seeded network, the
strategy and the feeders) and, when the strategy needs a scoring model, hands the trainer the factory
that trains it (or reads it from the cache, :mod:`asp_tune.proxy_scores`). The trainer itself never
trains a proxy model, so the data layer has no import circle.
"""

from __future__ import annotations

from typing import Any

from asp_tune.assembly import build_parts
from asp_tune.config import TrainConfig
from asp_tune.datasets import DataBundle
from asp_tune.strategies import SubsetStrategy
from asp_tune.trainer import Trainer


def scores_factory(config: TrainConfig):
    """``(trainer, strategy) -> ProxyScores`` for ``config``: the cached scores of the strategy's proxy model
    on the trainer's training split (SVP strategies refuse a proxy bigger than the trainer's network)."""
    def scores(trainer: Trainer, strategy: SubsetStrategy):
        from asp_tune.proxy_scores import proxy_scores

        proxy = getattr(strategy, "proxy", None)
        return proxy_scores(config, trainer.data, trainer.model,
                            forbid_bigger=bool(getattr(proxy, "proxy_no_bigger", False)))

    return scores


def build_trainer(config: TrainConfig, data: DataBundle | None = None, model: Any = None,
                  trainer_cls: type[Trainer] = Trainer, arrays: dict | None = None, **kwargs: Any) -> Trainer:
    """A ``trainer_cls`` for ``config``, with its parts built once (its data: ``data``, or loaded from
    ``arrays`` or the source) and, where the strategy needs one, its scoring model."""
    config = config.validate()
    parts = build_parts(config, data, model, arrays=arrays)
    return trainer_cls(config, parts=parts, scores=scores_factory(config), **kwargs)
