"""Hyper-Tune (Li et al., "Hyper-Tune: Towards Efficient Hyper-parameter Tuning at Scale", VLDB 2022)
on Ray Tune's scheduler and searcher interfaces.

Its three parts, each a small piece tested on its own:

- :class:`DelayedPromotion`, **D-ASHA**: asynchronous successive halving whose rung promotes only
  once it holds ``eta`` times as many results as it has promoted (plus one). ASHA promotes a new top
  result whenever one arrives, so a rung of 4 results can promote 2 (more than its 1/eta); here the
  second waits for the sixth result.
- :func:`ranking_loss_weights`, used twice. **Bracket selection**: a new configuration starts at
  rung ``s`` (bracket ``s``) with a probability learnt from how well rung ``s``'s scores rank the
  configurations that reached the top rung, against the top rung's own cross-validated surrogate.
  A proxy fidelity that misranks gets fewer new configurations, without any setting. **MFES-HB
  ensemble**: one random-forest surrogate per rung, combined with the same weights (from each
  surrogate's ranking loss on the top rung's observations) to propose configurations by expected
  improvement (:class:`MultiFidelityEnsemble`).
- :class:`HyperTune` holds the state both Ray objects share (:mod:`asp_tune.tune.hypertune_ray`, whose
  :func:`~asp_tune.tune.hypertune_ray.hypertune` makes them); the state is plain JSON, saved with Ray's searcher state, so a
  search resumed after a killed driver continues with the same brackets, rungs and promotions.

The ``openbox`` package has Hyper-Tune, but pins numpy < 2, pandas < 2.2 and scikit-learn < 1.4 and
runs its own workers, so it cannot sit on Ray Tune here; this module follows the paper instead.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterable

import numpy as np

from asp_tune.constraints import check_value
from asp_tune.errors import ConfigError
from asp_tune.tune.surrogate import (MIN_TOP, MultiFidelityEnsemble, UnitSpace, discordant_pairs,  # noqa: F401
                                     ranking_loss_weights)
from asp_tune.tune.trust import RungRecord, rung_epochs

#: Share of every bracket's probability kept from Hyperband's proportions, so no bracket stops being measured.
PRIOR_SHARE = 0.1
#: Share of new configurations drawn at random once the surrogate is in use (as BOHB does).
RANDOM_FRACTION = 0.2
INITIAL_RANDOM = 4
CANDIDATES = 512
#: The ensemble is fitted again once the results grew by this share (each new one, for the first ten).
REFIT_GROWTH = 0.1
STATE_VERSION = 1


# --------------------------------------------------------------------------------------------- D-ASHA
class DelayedPromotion:
    """D-ASHA's rungs for one bracket: the bracket's configurations start at rung ``start``.

    :meth:`record` files a result at a rung (the trial then waits there); :meth:`promotion` names the
    trial to promote now, or None. A rung ``k`` with ``n`` results of which ``p`` were promoted
    promotes only when ``n >= eta * (p + 1)``, and then its best waiting result among its top
    ``floor(n / eta)``. :meth:`final_promotion` is the end of a search (no new configurations, no
    trial running): the best waiting result of the highest rung that has promoted fewer than
    ``max(1, floor(n / eta))``, so every bracket gets a configuration to the top.
    """

    def __init__(self, num_rungs: int, eta: int, start: int = 0):
        self.num_rungs, self.eta, self.start = int(num_rungs), int(eta), int(start)
        self.results: list[dict[str, float]] = [{} for _ in range(self.num_rungs)]
        self.promoted: list[list[str]] = [[] for _ in range(self.num_rungs)]
        self.removed: set[str] = set()

    def record(self, trial: str, rung: int, score: float) -> None:
        self.results[rung][trial] = float(score)

    def _candidate(self, rung: int, cap: int) -> str | None:
        top = sorted(self.results[rung].items(), key=lambda kv: -kv[1])[:cap]
        for trial, _ in top:
            if trial not in self.promoted[rung] and trial not in self.removed:
                return trial
        return None

    def ready(self, rung: int) -> str | None:
        """The trial rung ``rung`` promotes now under the delay, or None."""
        if rung >= self.num_rungs - 1:
            return None
        n, p = len(self.results[rung]), len(self.promoted[rung])
        if n < self.eta * (p + 1):
            return None
        return self._candidate(rung, n // self.eta)

    def promotion(self) -> tuple[str, int] | None:
        """(trial, rung it leaves) of the promotion due now, highest rung first; None if none is due."""
        for rung in reversed(range(self.start, self.num_rungs - 1)):
            trial = self.ready(rung)
            if trial is not None:
                return trial, rung
        return None

    def final_promotion(self) -> tuple[str, int] | None:
        for rung in reversed(range(self.start, self.num_rungs - 1)):
            n, p = len(self.results[rung]), len(self.promoted[rung])
            if n and p < max(1, n // self.eta):
                trial = self._candidate(rung, max(1, n // self.eta))
                if trial is not None:
                    return trial, rung
        return None

    def promote(self, trial: str, rung: int) -> None:
        self.promoted[rung].append(trial)

    def state_dict(self) -> dict[str, Any]:
        return {"start": self.start, "results": self.results, "promoted": self.promoted,
                "removed": sorted(self.removed)}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.start = int(state["start"])
        self.results = [{str(k): float(v) for k, v in r.items()} for r in state["results"]]
        self.promoted = [[str(t) for t in p] for p in state["promoted"]]
        self.removed = set(state["removed"])


# ---------------------------------------------------------------------------------- ranking weights
def hyperband_prior(num_rungs: int, eta: int) -> np.ndarray:
    """Hyperband's share of new configurations per bracket (bracket ``s`` starts at rung ``s``):
    ``ceil((K + 1) / (K - s + 1) * eta^(K - s))`` with ``K`` the top rung, normalised."""
    top = num_rungs - 1
    counts = np.array([math.ceil((top + 1) / (top - s + 1) * eta ** (top - s)) for s in range(num_rungs)], float)
    return counts / counts.sum()


@dataclass
class Decision:
    """What the scheduler does with a result: continue, pause (wait at a rung) or stop."""

    action: str  # "continue", "pause", "stop"
    rung: int | None = None
    promoted: bool = False  # continues because the rung promoted it at once


class HyperTune:
    """Hyper-Tune's state, shared by its Ray scheduler and searcher (:mod:`asp_tune.tune.hypertune_ray`).

    ``max_t``: the top rung (epochs); ``grace_period * eta^k`` below it are the other rungs.
    ``num_samples``: configurations the search starts in all (it ends once they are done or stopped).
    ``max_concurrent``: trials training at once; a waiting (paused) trial holds no worker.
    """

    def __init__(self, max_t: int, *, num_samples: int, max_concurrent: int = 2, grace_period: int = 1,
                 eta: int = 3, metric: str = "val_accuracy", mode: str = "max", time_attr: str = "training_iteration",
                 seed: int = 0):
        from asp_tune.tune.settings import HpoSettings  # its declared constraints, the flags' own

        for field, name, value in (("max_epochs", "max_t", max_t), ("num_samples", "num_samples", num_samples),
                                   ("max_concurrent", "max_concurrent", max_concurrent),
                                   ("grace_period", "grace_period", grace_period),
                                   ("reduction_factor", "reduction_factor", eta)):
            check_value(HpoSettings, field, value, name)
        if max_t is None:
            raise ConfigError("max_t", max_t, "an integer >= 1")
        if mode not in ("max", "min"):
            raise ConfigError("mode", mode, ("max", "min"))
        self.rungs = rung_epochs(min(grace_period, max_t), eta, max_t)
        self.eta, self.num_samples, self.max_concurrent = eta, num_samples, max_concurrent
        self.metric, self.mode, self.time_attr, self.seed = metric, mode, time_attr, seed
        self.rng = np.random.default_rng(seed)
        self.brackets = [DelayedPromotion(len(self.rungs), eta, start) for start in range(len(self.rungs))]
        self.record = RungRecord(self.rungs)
        self.bracket_of: dict[str, int] = {}
        self.configs: dict[str, list[float]] = {}  # trial -> unit-cube point (from the searcher)
        self.active: set[str] = set()  # pending or running
        self.waiting: set[str] = set()  # paused at a rung
        self.finished: set[str] = set()
        self._cache: dict[str, tuple[int, Any]] = {}  # computed from the results: kept until new ones arrive

    def _observations(self) -> int:
        return sum(len(s) for s in self.record.scores.values())

    def _cached(self, name: str, compute, seen: int, growth: float = 0.0):
        """``compute()``, done again only once ``seen`` (a count of results) grew by more than ``growth``
        of itself: the driver fits surrogates between Ray's events, so it must stay quick."""
        if name not in self._cache or seen > self._cache[name][0] * (1 + growth):
            self._cache[name] = (seen, compute())
        return self._cache[name][1]

    # -- the pieces the scheduler and searcher call (asp_tune.tune.hypertune_ray)
    def score(self, result: dict[str, Any]) -> float | None:
        value = result.get(self.metric)
        if not isinstance(value, (int, float)) or value != value:
            return None
        return float(value) if self.mode == "max" else -float(value)

    def bracket_probabilities(self) -> np.ndarray:
        """The chance a new configuration starts at each rung: Hyperband's shares until the top rung holds
        :data:`MIN_TOP` results, then :func:`ranking_loss_weights` of each rung's observed scores (and the
        top rung's cross-validated surrogate) on the top rung's configurations, mixed with
        :data:`PRIOR_SHARE` of Hyperband's."""
        return self._cached("brackets", self._bracket_probabilities, len(self.record.scores[self.rungs[-1]]))

    def _bracket_probabilities(self) -> np.ndarray:
        prior = hyperband_prior(len(self.rungs), self.eta)
        top = self.record.scores[self.rungs[-1]]
        if len(top) < MIN_TOP:
            return prior
        trials = sorted(top)
        truth = np.array([top[t] for t in trials])
        preds = [np.array([self.record.scores[r].get(t, np.nan) for t in trials]) for r in self.rungs[:-1]]
        if all(t in self.configs for t in trials):
            x = np.array([self.configs[t] for t in trials])
            preds.append(MultiFidelityEnsemble(self.seed).cross_validated(x, truth))
        else:  # configurations from elsewhere (a user's searcher): the top rung counts as known exactly
            preds.append(truth)
        learnt = ranking_loss_weights(preds, truth, np.random.default_rng(self.seed + len(trials)))
        return (1 - PRIOR_SHARE) * learnt + PRIOR_SHARE * prior

    def add(self, trial: str) -> int:
        """A new configuration: draw its bracket."""
        p = self.bracket_probabilities()
        bracket = int(self.rng.choice(len(p), p=p))
        self.bracket_of[trial] = bracket
        self.active.add(trial)
        return bracket

    def result(self, trial: str, epoch: int, result: dict[str, Any]) -> Decision:
        """File one report; what the trial does next (a score that is NaN or infinite: the trial diverged and
        stops, never judged at a rung nor trained on to the top)."""
        value = result.get(self.metric)
        if isinstance(value, (int, float)) and not math.isfinite(value):
            return Decision("stop")
        score = self.score(result)
        if score is not None:
            self.record.add(trial, epoch, score)
        if epoch >= self.rungs[-1]:
            return Decision("stop")
        if epoch not in self.rungs or score is None:
            return Decision("continue")
        rung = self.rungs.index(epoch)
        bracket = self.brackets[self.bracket_of.get(trial, 0)]
        if rung < bracket.start:
            return Decision("continue")  # scored (for the agreement and the surrogates) but not judged
        bracket.record(trial, rung, score)
        if rung < len(self.rungs) - 1 and bracket.ready(rung) == trial:
            bracket.promote(trial, rung)  # promoted the moment it arrives: it keeps its worker, no pause
            return Decision("continue", rung, promoted=True)
        self.active.discard(trial)
        self.waiting.add(trial)
        return Decision("pause", rung)

    def next_promotion(self, final: bool = False) -> tuple[str, int, int] | None:
        """(trial, bracket, rung) due for promotion now, highest rung of any bracket first."""
        best = None
        for b, bracket in enumerate(self.brackets):
            due = bracket.final_promotion() if final else bracket.promotion()
            if due is not None and due[0] in self.waiting and (best is None or due[1] > best[2]):
                best = (due[0], b, due[1])
        return best

    def promote(self, trial: str, bracket: int, rung: int) -> None:
        self.brackets[bracket].promote(trial, rung)
        self.waiting.discard(trial)
        self.active.add(trial)

    def remove(self, trial: str) -> None:
        self.active.discard(trial)
        self.waiting.discard(trial)
        self.finished.add(trial)
        if trial in self.bracket_of:
            self.brackets[self.bracket_of[trial]].removed.add(trial)

    def promotions_due(self) -> int:
        return sum(b.ready(r) in self.waiting for b in self.brackets for r in range(b.start, b.num_rungs - 1))

    def may_start_new(self) -> bool:
        """Whether a worker is free for a new configuration (promotions go first)."""
        return len(self.active) + self.promotions_due() < self.max_concurrent and len(self.bracket_of) < self.num_samples

    def all_started(self) -> bool:
        return len(self.bracket_of) >= self.num_samples

    # -- the proposal of new configurations
    def levels(self, space: UnitSpace) -> list[tuple[np.ndarray, np.ndarray]]:
        out = []
        for rung in self.rungs:
            seen = [t for t in self.record.scores[rung] if t in self.configs]
            x = np.array([self.configs[t] for t in seen]).reshape(len(seen), len(space.dims))
            y = np.array([self.record.scores[rung][t] for t in seen])
            out.append((x, (y - y.mean()) / (y.std() or 1.0) if len(y) else y))  # rungs differ in scale
        return out

    def propose(self, space: UnitSpace) -> np.ndarray:
        """A unit-cube point: random for the first :data:`INITIAL_RANDOM` and :data:`RANDOM_FRACTION` of
        the rest, else the maximum of the ensemble's expected improvement over random and local candidates."""
        dims = len(space.dims)
        levels = self.levels(space)
        observed = sum(len(y) for _, y in levels)
        if dims == 0 or len(self.configs) < INITIAL_RANDOM or observed < 2 or self.rng.random() < RANDOM_FRACTION:
            return self.rng.random(dims)
        ensemble = self._cached("ensemble", lambda: MultiFidelityEnsemble(self.seed + observed).fit(
            levels, np.random.default_rng(self.seed + observed)), observed, REFIT_GROWTH)
        best_level = max(i for i, w in enumerate(ensemble.weights) if w > 0) if ensemble.weights.any() else 0
        x_best, y_best = levels[best_level]
        incumbent = float(y_best.max()) if len(y_best) else 0.0
        candidates = [self.rng.random((CANDIDATES, dims))]
        if len(y_best):
            top = x_best[np.argsort(-y_best)[:5]]
            local = top[self.rng.integers(0, len(top), CANDIDATES)] + self.rng.normal(0, 0.1, (CANDIDATES, dims))
            candidates.append(np.clip(local, 0.0, 1.0))
        x = np.concatenate(candidates)
        return x[int(np.argmax(ensemble.expected_improvement(x, incumbent)))]

    # -- state (plain JSON: a resumed search continues with the same brackets and promotions)
    def state_dict(self) -> dict[str, Any]:
        return {"version": STATE_VERSION, "rungs": list(self.rungs), "eta": self.eta,
                "brackets": [b.state_dict() for b in self.brackets],
                "scores": {str(r): s for r, s in self.record.scores.items()},
                "bracket_of": self.bracket_of, "configs": self.configs, "active": sorted(self.active),
                "waiting": sorted(self.waiting), "finished": sorted(self.finished),
                "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("version") != STATE_VERSION or list(state.get("rungs", [])) != list(self.rungs) \
                or state.get("eta") != self.eta:
            raise ConfigError("resume", f"rungs {state.get('rungs')}, eta {state.get('eta')}",
                              f"the rungs {list(self.rungs)} and eta {self.eta} of this search")
        for bracket, saved in zip(self.brackets, state["brackets"]):
            bracket.load_state_dict(saved)
        for rung, scores in state["scores"].items():
            self.record.scores[int(rung)] = {str(t): float(v) for t, v in scores.items()}
        self.bracket_of = {str(t): int(b) for t, b in state["bracket_of"].items()}
        self.configs = {str(t): [float(v) for v in c] for t, c in state["configs"].items()}
        # whatever ran when the driver died is started again by Ray: active, not waiting
        self.waiting = set(state["waiting"])
        self.finished = set(state["finished"])
        self.active = set(state["active"])
        self.rng.bit_generator.state = state["rng"]

    def summary(self) -> dict[str, Any]:
        """Brackets, their latest probabilities and how many configurations each started (summary.json)."""
        counts = [sum(1 for b in self.bracket_of.values() if b == s) for s in range(len(self.rungs))]
        return {"rungs": list(self.rungs), "reduction_factor": self.eta,
                "bracket_start_rungs": list(self.rungs), "configurations_per_bracket": counts,
                "bracket_probabilities": [round(p, 4) for p in self.bracket_probabilities()],
                "promotions": {f"bracket{s}": [len(p) for p in b.promoted] for s, b in enumerate(self.brackets)}}


def stream(state: HyperTune, events: Iterable[tuple[str, int, float]]) -> list[tuple[str, str]]:
    """Feed scripted ``(trial, epoch, score)`` reports to ``state`` without Ray; returns each report's
    decision and every promotion as it happens, in order (for tests and for reading the algorithm)."""
    log = []
    for trial, epoch, score in events:
        if trial not in state.bracket_of:
            state.bracket_of[trial] = 0
            state.active.add(trial)
        decision = state.result(trial, epoch, {state.metric: score, state.time_attr: epoch})
        log.append((trial, f"promoted from rung {decision.rung} at once" if decision.promoted else decision.action))
        if decision.action == "stop":
            state.remove(trial)
        while (due := state.next_promotion()) is not None:
            state.promote(*due)
            log.append((due[0], f"promoted from rung {due[2]}"))
    return log

