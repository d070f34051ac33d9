"""Selection via proxy (SVP, Coleman et al. 2020), end to end, on the same data layer as ASP.

- :func:`run_coreset`: train a proxy model, score every sample, keep a fraction with a static
  strategy, train the target on it; beside the target trained on all data, with the end-to-end
  time of each (the proxy's training and the selection count in the core-set's).
- :class:`ActiveLearner`: pool-based active learning in rounds. A proxy model is retrained on the
  labelled pool each round and picks the next ``budget`` samples (least confidence, max entropy
  or k-centers), or they are drawn at random; a target is trained on the final pool.
"""

from __future__ import annotations

import dataclasses
import time
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import torch

from asp_tune.config import TrainConfig
from asp_tune.datasets import DataBundle, load_dataset_for
from asp_tune.device import synchronize
from asp_tune.errors import ConfigError
from asp_tune.static_proxies import greedy_k_centers
from asp_tune.svp_settings import ACTIVE_STRATEGIES, ActiveLearningSettings, CoresetSettings
from asp_tune.trainer import Trainer

load_data = load_dataset_for


# ----------------------------------------------------------------------------- core-sets


def run_coreset(config: TrainConfig, settings: CoresetSettings, data: DataBundle | None = None,
                on_epoch: Callable[[str, dict[str, Any]], None] | None = None,
                before_training: Callable[[], None] | None = None) -> dict[str, Any]:
    """Train ``settings.target_model`` on the core-set and (``baseline``) on all data; ``before_training`` is
    called once the settings fit the data, before the proxy model trains.

    Returns ``{"summary", "epochs", "subset"}``: the summary holds each run's accuracy and the breakdown of
    its end-to-end seconds (proxy model, selection, training and validation; the test evaluation, the same
    in both runs, is in neither), the fraction asked for and the one kept (``data_fraction``: half_classes
    keeps at most its classes, a tiny fraction at least 2 samples), whether the strategy balanced classes
    and the core-set run's ``config``; ``epochs`` the per-epoch records of both runs (``run`` column)."""
    from asp_tune.assembly import classless_strategies
    from asp_tune.build import build_trainer
    from asp_tune.svp_settings import CORESET_STRATEGIES

    settings.validate()
    data = data if data is not None else load_data(config)
    if not data.has_classes:
        allowed = classless_strategies(config.proxy_settings(), CORESET_STRATEGIES)
        if settings.strategy not in allowed:
            raise ConfigError("strategy", settings.strategy, f"a strategy that needs no classes, for data without "
                                                             f"them ({', '.join(allowed)})")
    if before_training is not None:
        before_training()
    target = config.replace(model=settings.target_model)
    runs: dict[str, dict[str, Any]] = {}
    records: list[dict[str, Any]] = []
    plans = [("coreset", target.replace(metric=settings.strategy, ratio=settings.fraction,
                                        ratio_schedule="constant"))]
    if settings.baseline:
        plans.append(("full", target.replace(metric="none", ratio=1.0, ratio_schedule="constant")))
    for name, cfg in plans:
        start = time.perf_counter()
        try:
            trainer = build_trainer(cfg, data=data)
        except ConfigError as exc:  # the core-set's strategy is this command's strategy, not a metric
            if name == "coreset" and exc.field == "metric":
                raise ConfigError("strategy", exc.value, exc.allowed) from None
            raise
        setup = time.perf_counter() - start
        summary = trainer.fit(None if on_epoch is None else (lambda rec, n=name: on_epoch(n, rec)))
        proxy = trainer.proxy_summary()
        # the proxy model's seconds as it took to train (also when read from the cache), once
        proxy_seconds = proxy.get("proxy_seconds", 0.0)
        selection = proxy.get("subset_selection_seconds", 0.0)
        summary.update(proxy)
        summary["setup_seconds"] = max(0.0, setup - (proxy_seconds if proxy.get("proxy_computed") else 0.0) - selection)
        summary["end_to_end_seconds"] = proxy_seconds + selection + summary["wall_time_s"]
        summary["end_to_end_data_passes"] = summary["data_passes"] + proxy.get("proxy_data_passes", 0)
        runs[name] = summary
        records += [{"run": name, **rec} for rec in trainer.history]
        if name == "coreset":
            subset = subset_table(trainer)
            kept_fraction = len(subset["index"]) / max(1, trainer.selector.num_samples)
            balanced = trainer.selector.strategy.class_balance  # False where the strategy chooses without it
            ran = cfg.replace(class_balance=balanced).to_dict()
            missing = data.num_classes - len(set(subset["label"])) if data.has_classes else 0
            if missing > 0 and settings.strategy == "half_classes":
                warnings.warn(f"half_classes trains on {data.num_classes - missing} of the {data.num_classes} "
                              f"classes ({kept_fraction:.3g} of the data, however large --fraction), as paper 002 "
                              "does; its validation and test scores keep every class, so they are about half those "
                              "on the classes it trained (the paper scores those only)", stacklevel=2)
            elif missing > 0:
                warnings.warn(f"the core-set ({len(subset['index'])} samples at fraction {settings.fraction:g}) "
                              f"holds no sample of {missing} of the {data.num_classes} classes: the target cannot "
                              "learn them; a larger --fraction", stacklevel=2)
    core = runs["coreset"]
    score = core["score"]  # the task's score: accuracy, or r2 for regression
    out = {"strategy": settings.strategy, "fraction": settings.fraction, "data_fraction": kept_fraction,
           "samples": len(subset["index"]), "class_balance": balanced, "config": ran,
           "target_model": settings.target_model,
           "proxy_model": core.get("proxy_model"), "data": data.describe(), "runs": runs, "score": score,
           f"coreset_test_{score}": core["final_test_score"], "coreset_test_score": core["final_test_score"],
           "coreset_end_to_end_seconds": core["end_to_end_seconds"]}
    if "full" in runs:
        full = runs["full"]
        change = core["final_test_score"] - full["final_test_score"]
        out.update({f"full_test_{score}": full["final_test_score"], "full_test_score": full["final_test_score"],
                    "full_end_to_end_seconds": full["end_to_end_seconds"],
                    f"{score}_change": change, "score_change": change,
                    "speedup": full["end_to_end_seconds"] / max(core["end_to_end_seconds"], 1e-9)})
    return {"summary": out, "epochs": records, "subset": subset}


def subset_table(trainer) -> dict[str, list]:
    """The kept samples (training-split index, label) with the strategy's proxy score when it has one."""
    strategy = trainer.selector.strategy
    chosen = strategy.subset.fixed.cpu()
    table = {"index": chosen.tolist(), "label": trainer.data.train.labels[chosen].tolist()}
    score = getattr(strategy.proxy, "score", None)
    if score is not None and trainer.proxy_scores is not None:
        table[f"proxy_{score}"] = trainer.proxy_scores.score(score)[chosen].tolist()
    return table


# ----------------------------------------------------------------------------- active learning


@dataclass
class RoundResult:
    """One labelling round of one strategy."""

    strategy: str
    round: int
    labelled: int  # pool size this round's model trained on
    picked: int
    model_test_error: float  # of the model trained on the labelled pool this round
    train_seconds: float  # training that model (the proxy)
    scoring_seconds: float  # scoring the unlabelled pool
    pick_seconds: float  # choosing from the scores (k-centers: the greedy loop)

    @property
    def selection_seconds(self) -> float:
        """What choosing cost: the proxy's training, scoring and picking; only the draw for ``random``
        (its model is trained only to report the round's error)."""
        if self.strategy == "random":
            return self.pick_seconds
        return self.train_seconds + self.scoring_seconds + self.pick_seconds


class PoolTrainer(Trainer):
    """The trainer of active learning's models: judged on the test split, so no validation split is carved out
    of the pool (``val_fraction`` 0 is allowed)."""

    validates = False


class ActiveLearner:
    """Pool-based active learning on ``data``'s training split (its labels revealed when picked).

    ``step()`` trains the proxy on the labelled pool, scores the unlabelled samples and labels the
    next ``budget``: the ``budget`` least confident or highest-entropy samples, the greedy k-centers
    from the labelled pool on penultimate features, or a uniform draw. ``labelled`` only grows.
    """

    def __init__(self, config: TrainConfig, settings: ActiveLearningSettings, data: DataBundle,
                 strategy: str | None = None, seed: int | None = None):
        from asp_tune.proxy_scores import proxy_train_config

        self.config, self.settings, self.data = config, settings.validate(), data
        #: what each round's model trains with: the proxy network and epochs, the user's optimisation settings
        self.round_config = proxy_train_config(config, own_optimisation=True)
        self.strategy = strategy or settings.strategy
        if self.strategy not in ACTIVE_STRATEGIES:
            raise ConfigError("strategy", self.strategy, ACTIVE_STRATEGIES)
        pool = len(data.train)
        settings.check_pool(pool)
        if self.strategy != "random":  # SVP: a proxy bigger than the target defeats the purpose
            from asp_tune.models import build_model
            from asp_tune.proxy_scores import check_proxy_smaller

            target = build_model(settings.target_model, data.input_shape, data.num_classes, **config.model_args)
            proxy = self.round_config
            check_proxy_smaller(proxy.model, data, target, self.strategy, proxy.model_args)
        self.generator = torch.Generator().manual_seed(config.seed if seed is None else seed)
        self.labelled = torch.randperm(pool, generator=self.generator)[: settings.initial_size]
        self.rounds: list[RoundResult] = []

    @property
    def unlabelled(self) -> torch.Tensor:
        mask = torch.ones(len(self.data.train), dtype=torch.bool)
        mask[self.labelled] = False
        return torch.nonzero(mask).squeeze(1)

    def train_on_pool(self, config: TrainConfig):
        """A trainer fitted on the labelled pool only (test split unchanged; nothing validates)."""
        pool = dataclasses.replace(self.data, train=self.data.train.take(self.labelled))
        trainer = PoolTrainer(config, data=pool)
        trainer.validate_each_epoch = False
        while not trainer.done:
            trainer.train_epoch()
        return trainer

    def step(self) -> RoundResult:
        """One round: train the proxy on the labelled pool, then label ``budget`` more samples."""
        from asp_tune.proxy_scores import score_samples

        start = time.perf_counter()
        trainer = self.train_on_pool(self.round_config)
        trained = time.perf_counter() - start
        error = 1.0 - trainer.evaluate("test")[0]
        budget, candidates = self.settings.budget, self.unlabelled
        start = time.perf_counter()
        if self.strategy == "random":
            scored = time.perf_counter()
            picks = candidates[torch.randperm(candidates.numel(), generator=self.generator)[:budget]]
        elif self.strategy == "kcenters":
            features = score_samples(trainer, self.data.train)[3].to(trainer.device)
            self._check(features=features)
            synchronize(trainer.device)
            scored = time.perf_counter()
            picks = greedy_k_centers(features, budget, initial=self.labelled.to(trainer.device)).cpu()
        else:
            _, entropy, confidence, _ = score_samples(trainer, self.data.train.take(candidates))
            self._check(entropy=entropy, confidence=confidence)
            scored = time.perf_counter()
            values = entropy if self.strategy == "max_entropy" else 1.0 - confidence
            picks = candidates[torch.topk(values, budget).indices]
        picked = time.perf_counter()
        result = RoundResult(self.strategy, len(self.rounds) + 1, int(self.labelled.numel()), budget, error,
                             trained, scored - start, picked - scored)
        self.labelled = torch.cat([self.labelled, picks.long()])
        self.rounds.append(result)
        return result

    def _check(self, **scores: torch.Tensor) -> None:
        from asp_tune.proxy_scores import check_finite

        check_finite(scores, f"round {len(self.rounds) + 1}'s model ({self.round_config.model}, "
                             f"{self.round_config.epochs} epochs)",
                     "it diverged under the optimisation flags given (a smaller --lr, or fewer --proxy-epochs)")

    def final_target(self) -> dict[str, Any]:
        """The target trained on the final labelled pool: its test error and seconds."""
        start = time.perf_counter()
        cfg = self.config.replace(model=self.settings.target_model, metric="none", ratio=1.0,
                                  ratio_schedule="constant")
        trainer = self.train_on_pool(cfg)
        accuracy = trainer.evaluate("test")[0]
        return {"strategy": self.strategy, "labelled": int(self.labelled.numel()), "target_test_error": 1.0 - accuracy,
                "error_is": f"1 - {trainer.task.score_name}", "target_seconds": time.perf_counter() - start}


def active_learning_config(config: TrainConfig, settings: ActiveLearningSettings) -> TrainConfig:
    """The run an active learner trains with: the target network, and no validation split carved out of the
    pool (no model of it validates)."""
    return config.replace(model=settings.target_model, val_fraction=0.0)


def run_active_learning(config: TrainConfig, settings: ActiveLearningSettings, data: DataBundle | None = None,
                        on_round: Callable[[RoundResult], None] | None = None) -> dict[str, Any]:
    """Every round of ``settings.strategy`` and (``baseline``) of random labelling from the same
    initial pool. The pool is the whole training split (``val_fraction`` 0: no model of it validates).
    Returns ``{"rounds": [...], "finals": [...], "summary": {...}}``."""
    settings.validate()
    config = active_learning_config(config, settings)
    data = data if data is not None else load_data(config)
    if not data.has_classes and settings.strategy != "random":
        raise ConfigError("strategy", settings.strategy, "random for a regression task (the others pick by a "
                                                         "classifier's class probabilities or features)")
    settings.check_pool(len(data.train))
    strategies = [settings.strategy] + (["random"] if settings.baseline and settings.strategy != "random" else [])
    rounds, finals = [], []
    # one untimed epoch first: the process's one-off start-up (first model and feeder built, allocator warmed)
    # would land in the first strategy's first round and make its selection look dearer than random's
    warm = ActiveLearner(config, settings, data, strategy="random", seed=config.seed)
    warm.train_on_pool(warm.round_config.replace(epochs=1))
    for strategy in strategies:
        learner = ActiveLearner(config, settings, data, strategy=strategy, seed=config.seed)
        for _ in range(settings.rounds):
            result = learner.step()
            rounds.append({**dataclasses.asdict(result), "selection_seconds": result.selection_seconds})
            if on_round is not None:
                on_round(result)
        finals.append(learner.final_target())
    summary = {"strategy": settings.strategy, "rounds": settings.rounds, "budget": settings.budget,
               "initial": settings.initial_size, "target_model": settings.target_model,
               "proxy_model": config.proxy_model or config.model, "data": data.describe(),
               "error_is": finals[0]["error_is"], "final": {f["strategy"]: f for f in finals},
               "config": config.to_dict()}
    if len(finals) == 2:
        summary["error_change_vs_random"] = finals[0]["target_test_error"] - finals[1]["target_test_error"]
    return {"rounds": rounds, "finals": finals, "summary": summary}
