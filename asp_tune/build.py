"""Turning a config into the objects of a run: data, network, scoring model, strategy and selector.

The one place above the trainer: :func:`build_trainer` loads the data (or takes it), and when the
config's strategy needs a scoring model it hands the trainer the factory that trains it (or reads
it from the cache, :mod:`asp_tune.proxy_scores`). The trainer itself never trains a proxy model,
so the data layer has no import circle.
"""

from __future__ import annotations

from typing import Any

from asp_tune.config import TrainConfig
from asp_tune.datasets import DataBundle, load_dataset_for
from asp_tune.strategies import make_strategy
from asp_tune.trainer import Trainer


def scores_factory(config: TrainConfig):
    """``trainer -> ProxyScores`` for ``config``'s strategy: the cached scores of its proxy model on the
    trainer's training split (SVP strategies refuse a proxy bigger than the trainer's network)."""
    def scores(trainer: Trainer):
        from asp_tune.proxy_scores import proxy_scores

        proxy = getattr(make_strategy(config.metric, config), "proxy", None)
        return proxy_scores(config, trainer.data, trainer.model,
                            forbid_bigger=bool(getattr(proxy, "proxy_no_bigger", False)))

    return scores


def build_trainer(config: TrainConfig, data: DataBundle | None = None, model: Any = None,
                  trainer_cls: type[Trainer] = Trainer, arrays: dict | None = None, **kwargs: Any) -> Trainer:
    """A ``trainer_cls`` for ``config``, with its data (``data``, or loaded once from ``arrays`` or the
    source) and, where the strategy needs one, its scoring model."""
    config = config.validate()
    if data is None:
        data = load_dataset_for(config, arrays=arrays)
    return trainer_cls(config, data, model, scores=scores_factory(config), **kwargs)
