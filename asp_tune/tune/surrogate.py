"""Hyper-Tune's surrogate (:mod:`asp_tune.tune.hypertune`): a Ray Tune search space as points of the unit
cube, and the MFES-HB ensemble of one random forest per rung, combined by the rungs' ranking-loss weights."""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from asp_tune.errors import ConfigError

#: Fewer top-rung results than this: brackets keep Hyperband's proportions, the ensemble its top model.
MIN_TOP = 4

def discordant_pairs(prediction: np.ndarray, truth: np.ndarray) -> float:
    """Pairs the prediction orders against the truth; a pair the prediction ties counts half (pairs
    tied in the truth do not count)."""
    dp = np.sign(prediction[:, None] - prediction[None, :])
    dt = np.sign(truth[:, None] - truth[None, :])
    upper = np.triu(np.ones_like(dt, dtype=bool), 1) & (dt != 0)
    return float(np.sum(upper & (dp == -dt)) + 0.5 * np.sum(upper & (dp == 0)))


def ranking_loss_weights(predictions: Sequence[Sequence[float]], truth: Sequence[float],
                         rng: np.random.Generator, samples: int = 200) -> np.ndarray:
    """MFES-HB's weights: for each level, the probability that its ``predictions`` of ``truth`` have
    the fewest discordant pairs, estimated over bootstrap resamples of the points (ties share).

    A level that orders the points as the truth does gets most of the weight; one that reverses them
    gets none. Levels with a NaN prediction are judged on the points they predict.
    """
    truth = np.asarray(truth, float)
    preds = np.asarray(predictions, float).reshape(len(predictions), len(truth))
    wins = np.zeros(len(preds))
    n = len(truth)
    for _ in range(samples):
        pick = rng.integers(0, n, n)
        losses = []
        for p in preds:
            ok = pick[~np.isnan(p[pick])]
            losses.append(discordant_pairs(p[ok], truth[ok]) / max(1, len(ok) * (len(ok) - 1) / 2)
                          if len(ok) >= 2 else 1.0)
        losses = np.asarray(losses)
        best = losses == losses.min()
        wins[best] += 1.0 / best.sum()
    return wins / samples



class UnitSpace:
    """A Ray Tune ``param_space`` as points of the unit cube: floats and integers linearly (logarithmically
    under a log sampler), categories by index. Constants pass through; grid searches are refused."""

    def __init__(self, param_space: dict[str, Any]):
        from ray.tune.search.sample import Categorical, Domain, Float, Integer  # a space of Ray's domains: Ray is there

        self.dims: list[tuple[tuple[str, ...], Any]] = []
        self.constants: list[tuple[tuple[str, ...], Any]] = []

        def walk(node: dict[str, Any], prefix: tuple[str, ...]) -> None:
            for key, value in node.items():
                path = prefix + (key,)
                if isinstance(value, dict) and "grid_search" in value:
                    raise ConfigError("algo", "hypertune", "a space without grid parameters (hypertune proposes "
                                                           "its own configurations)")
                if isinstance(value, dict):
                    walk(value, path)
                elif isinstance(value, (Float, Integer, Categorical)):
                    self.dims.append((path, value))
                elif isinstance(value, Domain):
                    raise ConfigError("algo", "hypertune", f"parameters drawn from uniform, loguniform, randint "
                                                           f"or choice ({'.'.join(path)} is not)")
                else:
                    self.constants.append((path, value))

        walk(param_space, ())

    @staticmethod
    def _log(domain) -> bool:
        from ray.tune.search.sample import LogUniform

        sampler = domain.get_sampler()
        return isinstance(getattr(sampler, "sampler", sampler), LogUniform)

    def decode(self, unit: Sequence[float]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for path, value in self.constants:
            _put(out, path, value)
        for (path, domain), u in zip(self.dims, unit):
            u = float(min(max(u, 0.0), 1.0))
            if _categorical(domain):
                value = domain.categories[min(int(u * len(domain.categories)), len(domain.categories) - 1)]
            else:
                low, high = float(domain.lower), float(domain.upper)
                if _integer(domain):  # Ray's randint excludes the upper bound
                    value = int(min(math.floor(low + u * (high - low)), high - 1))
                elif self._log(domain):
                    value = float(math.exp(math.log(low) + u * (math.log(high) - math.log(low))))
                else:
                    value = float(low + u * (high - low))
            _put(out, path, value)
        return out

    def encode(self, config: dict[str, Any]) -> np.ndarray:
        unit = []
        for path, domain in self.dims:
            value = _get(config, path)
            if _categorical(domain):
                unit.append((list(domain.categories).index(value) + 0.5) / len(domain.categories))
            else:
                low, high = float(domain.lower), float(domain.upper)
                if _integer(domain):
                    unit.append((value - low + 0.5) / (high - low))
                elif self._log(domain):
                    unit.append((math.log(value) - math.log(low)) / (math.log(high) - math.log(low)))
                else:
                    unit.append((value - low) / (high - low))
        return np.clip(np.asarray(unit, float), 0.0, 1.0)


def _put(out: dict, path: tuple[str, ...], value: Any) -> None:
    for key in path[:-1]:
        out = out.setdefault(key, {})
    out[path[-1]] = value


def _get(config: dict, path: tuple[str, ...]) -> Any:
    for key in path:
        config = config[key]
    return config


# ------------------------------------------------------------------------------------------ MFES-HB
class MultiFidelityEnsemble:
    """One random forest per rung over unit-cube configurations, combined by a generalised product of
    experts whose weights are :func:`ranking_loss_weights` on the top rung's observations (the top
    rung's own forest judged by its cross-validated predictions)."""

    def __init__(self, seed: int = 0, trees: int = 16):
        self.seed, self.trees = int(seed), int(trees)
        self.models: list[Any] = []
        self.weights = np.zeros(0)

    def _forest(self, x: np.ndarray, y: np.ndarray):
        from sklearn.ensemble import RandomForestRegressor

        return RandomForestRegressor(n_estimators=self.trees, min_samples_leaf=1, max_features=1.0,
                                     random_state=self.seed).fit(x, y)

    def fit(self, levels: Sequence[tuple[np.ndarray, np.ndarray]], rng: np.random.Generator) -> "MultiFidelityEnsemble":
        """``levels``: (configurations, scores) per rung, lowest first; higher scores are better."""
        self.models = [self._forest(x, y) if len(y) >= 2 else None for x, y in levels]
        top_x, top_y = levels[-1]
        usable = [i for i, m in enumerate(self.models) if m is not None]
        if len(top_y) < MIN_TOP or not usable:
            self.weights = np.zeros(len(levels))
            if usable:
                self.weights[usable[-1]] = 1.0  # the highest rung with a model
            return self
        preds = []
        for i, model in enumerate(self.models):
            if model is None:
                preds.append(np.full(len(top_y), np.nan))
            elif i == len(levels) - 1:
                preds.append(self.cross_validated(top_x, top_y))
            else:
                preds.append(model.predict(top_x))
        self.weights = ranking_loss_weights(preds, top_y, rng)
        return self

    def cross_validated(self, x: np.ndarray, y: np.ndarray, folds: int = 3) -> np.ndarray:
        out = np.empty(len(y))
        order = np.arange(len(y)) % min(folds, len(y))
        for fold in np.unique(order):
            held = order == fold
            out[held] = self._forest(x[~held], y[~held]).predict(x[held]) if (~held).sum() >= 2 else y[~held].mean()
        return out

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and variance of the combined prediction at ``x``."""
        precision, weighted = np.zeros(len(x)), np.zeros(len(x))
        for w, model in zip(self.weights, self.models):
            if model is None or w <= 0:
                continue
            per_tree = np.stack([tree.predict(x) for tree in model.estimators_])
            mean, var = per_tree.mean(0), per_tree.var(0) + 1e-6
            precision += w / var
            weighted += w * mean / var
        if not precision.any():
            return np.zeros(len(x)), np.ones(len(x))
        return weighted / precision, 1.0 / precision

    def expected_improvement(self, x: np.ndarray, best: float) -> np.ndarray:
        from scipy.stats import norm

        mean, var = self.predict(x)
        std = np.sqrt(var)
        z = (mean - best) / std
        return (mean - best) * norm.cdf(z) + std * norm.pdf(z)


# ------------------------------------------------------------------------------------- shared state


def _categorical(domain: Any) -> bool:
    from ray.tune.search.sample import Categorical

    return isinstance(domain, Categorical)


def _integer(domain: Any) -> bool:
    from ray.tune.search.sample import Integer

    return isinstance(domain, Integer)
