"""Full data decides: how well a search's proxy ranks configurations against their full-data scores.

A search on proxy data gets full-data scores for some of its configurations: those its top rung trains
on all the data (multi-fidelity searches), and those an audit trains on full data after the search
(searches without rungs, or too few at the top). :class:`FullDataAgreement` holds the pairs (the
proxy's score, the full-data score) and measures them: Kendall tau with a bootstrap confidence
interval, and the regret the proxy's own pick would have had. Below :data:`MIN_PAIRS` nothing is
measured, and an unmeasured search is never called trusted. This module is plain computation: the
search wing (:mod:`asp_tune.tune.run`) feeds it.
"""

from __future__ import annotations

import json
import math
import numbers
import time
import zlib
from dataclasses import asdict, dataclass, field
from typing import Any, Iterable, Sequence

import numpy as np
import pandas as pd

#: Fewer pairs than this measure nothing (a tau over 5 configurations says almost nothing).
MIN_PAIRS = 6
#: The agreement a proxy must be able to reach: an interval wholly below this misranks.
THRESHOLD = 0.3
#: The confidence level of the interval (two-sided), and the bootstrap resamples behind it.
LEVEL, RESAMPLES = 0.9, 2000
#: Full-data score a pick may lose before a search or a comparison warns: a point of accuracy or R² (of a
#: larger maximised score, this share of the best one), and this share of the best loss (:func:`regret_allowed`).
REGRET_WARN = 0.01
#: Configurations an audit trains on full data when the search is too small to measure its proxy: the
#: proxy's best few, so full data still decides among them.
TOP_AUDIT = 3
#: A search of at least this many configurations (times MIN_PAIRS) audits enough of them to measure.
MEASURABLE_FACTOR = 3
#: A rung's scores within this of the constant predictor's (chance; R² 0) did not learn.
CHANCE_MARGIN = 0.02
#: Trials a rung needs before its scores are judged at chance.
CHANCE_TRIALS = 3
#: A correction multiplies the ratio by this (at most to 1).
RAISE = 2.0
#: The file in the experiment folder where a search records its ratio changes; trials read it as they start.
CHANGES_FILE = "ratio_changes.json"
#: The audit's record in the search's experiment folder (its experiment's name, the trials it trains and their
#: configurations), so a resumed search finishes the same audit.
AUDIT_FILE = "full_data_audit.json"


def tau_b(x: np.ndarray, y: np.ndarray) -> float:
    """Kendall's tau-b of paired scores (NaN with fewer than 2 pairs or no variation)."""
    return float(_taus(np.arange(len(x))[None, :], np.sign(x[:, None] - x[None, :]),
                       np.sign(y[:, None] - y[None, :]))[0]) if len(x) >= 2 else math.nan


def _taus(idx: np.ndarray, sx: np.ndarray, sy: np.ndarray) -> np.ndarray:
    """Tau-b of each resample (a row of ``idx``), from the pairs' sign matrices, all at once."""
    a, b = np.triu_indices(idx.shape[1], 1)
    px, py = sx[idx[:, a], idx[:, b]], sy[idx[:, a], idx[:, b]]
    concord = (px * py).sum(axis=1)
    norm = np.sqrt((px != 0).sum(axis=1) * (py != 0).sum(axis=1).astype(float))
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm > 0, concord / norm, np.nan)


def bootstrap_interval(x: Sequence[float], y: Sequence[float], level: float = LEVEL, resamples: int = RESAMPLES,
                       seed: int = 0) -> tuple[float, float]:
    """The percentile bootstrap interval of Kendall's tau-b over resampled pairs (NaN, NaN when too few); the
    pairs are put in one order first (by their values), so the same pairs give the same interval however they
    were listed."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    n = len(x)
    if n < 3:
        return math.nan, math.nan
    order = np.lexsort((y, x))
    x, y = x[order], y[order]
    rng = np.random.default_rng(seed)
    taus = _taus(rng.integers(0, n, (resamples, n)), np.sign(x[:, None] - x[None, :]), np.sign(y[:, None] - y[None, :]))
    taus = taus[np.isfinite(taus)]
    if not taus.size:
        return math.nan, math.nan
    low, high = np.quantile(taus, [(1 - level) / 2, 1 - (1 - level) / 2])
    return float(low), float(high)


@dataclass
class FullDataAgreement:
    """Configurations with both a proxy score and a full-data score (higher is better, as ``mode`` says),
    and what they tell: tau with its interval, the proxy pick's regret, whether to trust the proxy."""

    mode: str = "max"
    min_pairs: int = MIN_PAIRS
    threshold: float = THRESHOLD
    pairs: dict[str, tuple[float, float]] = field(default_factory=dict)  # id -> (proxy, full)
    sources: dict[str, str] = field(default_factory=dict)  # id -> "top rung" or "audit"
    more: str = "--audit N"  # how the caller asks for more full-data runs, in its own words

    def add(self, key: str, proxy: Any, full: Any, source: str) -> None:
        if finite(proxy) and finite(full):
            sign = 1.0 if self.mode == "max" else -1.0
            self.pairs[str(key)] = (sign * float(proxy), sign * float(full))
            self.sources[str(key)] = source

    def add_failed(self, key: str, full: Any, source: str) -> None:
        """A configuration with a full-data score whose proxy run failed or diverged: the proxy ranked it last
        (left out, a proxy that failed on the best configuration would look perfect)."""
        if finite(full):
            self.pairs[str(key)] = (-math.inf, (1.0 if self.mode == "max" else -1.0) * float(full))
            self.sources[str(key)] = source

    @property
    def measured(self) -> bool:
        """Enough configurations with both scores, and full data tells them apart (where every one scores the
        same on full data there is no ranking to match: nothing to measure, and no pick among them loses)."""
        return len(self.pairs) >= self.min_pairs and not self.full_scores_alike()

    def full_scores_alike(self) -> bool:
        return bool(self.pairs) and bool(np.ptp(self.arrays()[1]) == 0)

    def proxy_scores_alike(self) -> bool:
        """The proxy scores every configuration the same (at chance, say): it ranks them no better than chance."""
        return bool(self.pairs) and bool(np.ptp(self.arrays()[0]) == 0)

    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """(proxy, full), higher is better; a failed proxy score below every other (:func:`asp_tune.quality.ranked_last`)."""
        from asp_tune.quality import ranked_last

        values = np.asarray(list(self.pairs.values()), float).reshape(-1, 2)
        return ranked_last(values[:, 0])[0], values[:, 1]

    def kendall_tau(self) -> float:
        """Tau-b of proxy against full scores; 0 where the proxy scores them all alike and full data does not
        (no information: the rank of chance), NaN where full data scores them all alike."""
        if len(self.pairs) >= 2 and self.proxy_scores_alike() and not self.full_scores_alike():
            return 0.0
        return tau_b(*self.arrays())

    def interval(self, seed: int = 0) -> tuple[float, float]:
        if len(self.pairs) >= 3 and self.proxy_scores_alike() and not self.full_scores_alike():
            return 0.0, 0.0
        return bootstrap_interval(*self.arrays(), seed=seed)

    def regret(self) -> float:
        """Full-data score lost by the proxy's own pick among these configurations (0: it was the best)."""
        if not self.pairs:
            return math.nan
        x, y = self.arrays()
        return float(y.max() - y[int(np.argmax(x))])

    def misranks(self) -> bool:
        """Whether the interval lies wholly below the threshold (only once measured)."""
        return self.measured and self.interval()[1] < self.threshold

    def summary(self) -> dict[str, Any]:
        low, high = self.interval() if self.measured else (math.nan, math.nan)
        tau = self.kendall_tau() if self.measured else math.nan  # a tau over too few pairs is not a measurement
        return {"pairs": len(self.pairs), "min_pairs": self.min_pairs, "kendall_tau": _plain(tau),
                "interval": [_plain(low), _plain(high)], "level": LEVEL, "threshold": self.threshold,
                "regret_of_proxy_pick": _plain(self.regret()), "measured": self.measured,
                "trusted": None if not self.measured else bool(low >= self.threshold),
                "misranks": self.misranks(),
                "from": {s: sum(1 for v in self.sources.values() if v == s) for s in sorted(set(self.sources.values()))}}

    def line(self) -> str:
        """One line for a person: the agreement and what it means."""
        n = len(self.pairs)
        if len(self.pairs) >= self.min_pairs and self.full_scores_alike():
            full = (1.0 if self.mode == "max" else -1.0) * float(self.arrays()[1][0])
            return (f"the proxy was not measured against full data: all {n} configurations with both scores score "
                    f"{full:.4g} on full data, so there is no ranking to match, and no pick among them loses")
        if not self.measured:
            return (f"the proxy was not measured against full data: {n} configuration{'s have' if n != 1 else ' has'} "
                    f"both scores, {self.min_pairs} are needed ({self.more} adds full-data runs)")
        low, high = self.interval()
        what = "misranks" if high < self.threshold else ("ranks like full data" if low >= self.threshold
                                                          else "cannot be told apart from a misranking proxy")
        alike = " (it scores every one of them the same: no ranking at all)" if self.proxy_scores_alike() else ""
        return (f"the proxy {what}{alike}: Kendall tau {self.kendall_tau():+.2f} against full data over {n} "
                f"configurations ({int(LEVEL * 100)}% interval {low:+.2f} .. {high:+.2f}); its own pick would have lost "
                f"{self.regret():.4f} of full-data score")


def finite(value: Any) -> bool:
    """Whether ``value`` is a finite real number: a Python or NumPy one (``np.float32`` too), not a bool."""
    return isinstance(value, numbers.Real) and not isinstance(value, bool) and math.isfinite(float(value))


def _plain(value: float) -> float | None:
    return None if value != value else round(float(value), 6)


def top_rung_pairs(histories: dict[str, pd.DataFrame], proxy_epoch: int, final_epoch: int,
                   metric: str) -> dict[str, tuple[float, float]]:
    """Each trial's score at ``proxy_epoch`` (the last epoch on proxy data) and at ``final_epoch`` (after
    the top rung on all the data), for the trials that reached the end."""
    out = {}
    for trial, hist in histories.items():
        if "epoch" not in hist or metric not in hist:
            continue
        scores = dict(zip(hist["epoch"], hist[metric]))
        if proxy_epoch in scores and final_epoch in scores:
            out[trial] = (scores[proxy_epoch], scores[final_epoch])
    return out


def choose_audit(candidates: pd.DataFrame, count: int, mode: str, seed: int, score: str = "best_score",
                 top_only: bool = False) -> list[str]:
    """The trials an audit trains on full data: the best half of ``count`` by proxy score (column ``score``;
    the proxy's pick first), the rest drawn at random from the others, so the pairs span good and poor
    configurations; ``top_only``: the best ``count`` (an audit that only guards the pick). The draw gives each
    trial a random key from ``seed`` and its id and takes the lowest keys, so a larger ``count`` of the same
    candidates holds every trial a smaller one chose (what a smaller audit trained is not drawn away)."""
    if count <= 0 or not len(candidates):
        return []
    ranked = candidates.sort_values(score, ascending=mode != "max", kind="stable")["trial_id"].tolist()
    top = ranked[:count if top_only else max(1, (count + 1) // 2)]
    rest = [t for t in ranked if t not in top]
    keys = {t: np.random.default_rng([seed, zlib.crc32(str(t).encode())]).random() for t in rest}
    drawn = set(sorted(rest, key=keys.__getitem__)[:max(0, count - len(top))])
    return top + [t for t in rest if t in drawn]


def first_rung_steps(ratio: float, grace: int, train_samples: int, batch_size: int) -> int:
    """Optimiser steps a trial takes before its first rung decides: ``grace`` epochs of ``ratio`` of the
    training samples in batches of ``batch_size``, counted as the feeders make them (a small last batch joins
    the one before: 449 samples in batches of 64 are 7 steps, not 8)."""
    from asp_tune.feeding import TRAINING_SMALLEST, batch_slices

    selected = min(train_samples, max(2, round(ratio * train_samples)))
    return grace * max(1, len(batch_slices(selected, batch_size, TRAINING_SMALLEST)))


def fit_first_rung(ratio: float, grace: int, eta: int, epochs: int, train_samples: int, batch_size: int,
                   minimum: int) -> tuple[int, float]:
    """The (grace period, ratio) whose first rung takes at least ``minimum`` optimiser steps: the grace
    period lengthened first (up to ``epochs // eta``, so early stopping still decides), then the ratio
    raised (two decimals, at most 1). As given when already long enough; at most (that grace, 1) when even
    that is shorter."""
    if minimum <= 0 or first_rung_steps(ratio, grace, train_samples, batch_size) >= minimum:
        return grace, ratio
    longest = max(grace, epochs // eta)
    for longer in range(grace, longest + 1):
        if first_rung_steps(ratio, longer, train_samples, batch_size) >= minimum:
            return longer, ratio
    for hundredths in range(math.ceil(ratio * 100), 101):
        if first_rung_steps(hundredths / 100, longest, train_samples, batch_size) >= minimum:
            return longest, hundredths / 100
    return longest, 1.0


def expected_top(num_samples: int, rungs: Iterable[int]) -> float:
    """About how many of ``num_samples`` configurations an ASHA-like search promotes to its top rung."""
    rungs = list(rungs)
    if len(rungs) < 2:
        return float(num_samples)
    eta = max(2.0, rungs[1] / rungs[0]) if rungs[0] else 3.0
    return num_samples / eta ** (len(rungs) - 1)


def audit_size(audit: int | None, configurations: int, top_rung_pairs: float) -> int:
    """Configurations trained on full data after the search: ``audit`` when given; by default enough to
    measure (:data:`MIN_PAIRS` with what the top rung gives) in a search of at least
    ``MEASURABLE_FACTOR * MIN_PAIRS`` configurations; in a smaller one the proxy's best
    :data:`TOP_AUDIT` (none when a full-data top rung already decides)."""
    if audit is not None:
        return min(int(audit), configurations)
    if configurations >= MEASURABLE_FACTOR * MIN_PAIRS:
        return min(configurations, max(0, math.ceil(MIN_PAIRS - top_rung_pairs)))
    return 0 if top_rung_pairs > 0 else min(TOP_AUDIT, configurations)


def guards_only(audit: int | None, configurations: int) -> bool:
    """Whether the default audit of a search of ``configurations`` is too small to measure the proxy, so it
    trains the proxy's best (:data:`TOP_AUDIT`) rather than spanning good and poor ones."""
    return audit is None and configurations < MEASURABLE_FACTOR * MIN_PAIRS


def full_data_top_rung(settings: Any, rungs: Sequence[int] | None, decide: str) -> str | None:
    """The ratio schedule under which an early-stopping search whose ``decide`` is full trains its top rung on all
    the data (a promoted trial goes on from its checkpoint at ratio 1): ``settings``' own (proxy settings) where it
    steps to 1 by the last proxy rung, a step to 1 there where it is constant; None where no top rung is on full
    data (ratio 1, fewer than two rungs, another schedule, or a strategy that keeps its own subset and never
    reaches all the data: an audit decides then)."""
    from asp_tune.proxy_settings import ratio_steps, steps_schedule
    from asp_tune.strategies import follows_ratio_schedule  # torch: imported only here, not for --help

    if decide != "full" or settings.ratio >= 1.0 or not rungs or len(rungs) < 2 \
            or not follows_ratio_schedule(settings):
        return None
    constant = settings.ratio_schedule == "constant"
    schedule = steps_schedule([(rungs[-2], 1.0)]) if constant else settings.ratio_schedule
    steps = ratio_steps(schedule)
    return schedule if steps and steps[-1][1] >= 1.0 and steps[-1][0] <= rungs[-2] else None


def no_full_data_top_rung(settings: Any, rungs: Sequence[int] | None, decide: str,
                          rung_ratios: Sequence[float] | None = None, scheduler: str | None = None) -> str:
    """Why an early-stopping search that decides on full data gets no top rung on all the data ("" where it
    gets one, or where it stops no trial early or has no proxy): the pick is then an audit's, after the search.
    ``rung_ratios``: the search's ratio per rung, where it gives them; ``scheduler``: the name of a scheduler
    whose rungs are unknown (``rungs`` None)."""
    from asp_tune.strategies import follows_ratio_schedule

    if decide != "full" or settings.ratio >= 1.0:
        return ""
    if not rungs:
        return f"{scheduler} stops trials at epochs asp_tune cannot know in advance" if scheduler else ""
    if full_data_top_rung(settings, rungs, decide):
        return ""
    if len(rungs) < 2:
        return f"its only rung is its last (epoch {rungs[0]})"
    if not follows_ratio_schedule(settings):
        return f"strategy {settings.metric!r} keeps its own subset"
    if rung_ratios:
        return f"--rung-ratios end at {rung_ratios[-1]:g}; ending them in 1 (e.g. 0.1,0.3,1) does"
    return (f"ratio schedule {settings.ratio_schedule!r} does not reach 1 by the last proxy rung (epoch {rungs[-2]}); "
            f"constant or steps:{rungs[-2]}=1 does")


def measurement_notice(configurations: int, pairs: float, rungs: Sequence[int] | None, flag: str,
                       top_rung_full: bool = False) -> str | None:
    """The line a search says before it starts when it cannot measure its proxy (None when it can), first
    saying that the pick is still made on full data where any configuration will have a full-data score;
    ``top_rung_full``: its top rung trains on all the data (an audit then trains as a promoted trial)."""
    if pairs >= MIN_PAIRS:
        return None
    more = ""
    if rungs and len(rungs) > 1:
        needed = math.ceil(MIN_PAIRS * configurations / max(pairs, 1e-9)) if pairs > 0 else None
        more = f"search about {needed} configurations, or " if needed else ""
    how = ("to the end as promoted trials (the top rung on all the data)" if top_rung_full
           else "on all the data for all their epochs")
    lead = "the pick is made on full data, but " if pairs > 0 else ""
    return (f"{lead}how well the proxy ranks cannot be measured: about {pairs:.0f} of this search's "
            f"{configurations} configurations will have full-data scores and {MIN_PAIRS} are needed; {more}give "
            f"{flag}{'' if flag.endswith('=') else ' '}{MIN_PAIRS} to train up to that many {how} after it")


def at_chance(scores: Sequence[float], constants: Sequence[float], mode: str = "max",
              margin: float = CHANCE_MARGIN) -> bool:
    """Whether every score is within ``margin`` of its constant predictor's (at least :data:`CHANCE_TRIALS`)."""
    pairs = [(s, c) for s, c in zip(scores, constants) if finite(s) and finite(c)]
    if len(pairs) < CHANCE_TRIALS:
        return False
    sign = 1.0 if mode == "max" else -1.0
    return all(sign * (s - c) <= margin + 1e-9 for s, c in pairs)


def regret_allowed(best: float | None, mode: str = "max") -> float:
    """The full-data score a pick may lose unwarned, where ``best`` is the best full-data score: of a maximised
    score, :data:`REGRET_WARN` of ``max(1, |best|)`` (a point of accuracy or R²); of a minimised one (a loss),
    :data:`REGRET_WARN` of ``|best|`` (1%, whatever the loss's scale)."""
    if best is None or not finite(best):
        return REGRET_WARN
    return REGRET_WARN * (max(1.0, abs(best)) if mode == "max" else abs(best))


def verdict_lines(agreement: "FullDataAgreement", regret: float | None, what: str = "the pick",
                  best: float | None = None) -> list[str]:
    """The warnings a search and a comparison give, in the same words: a proxy that misranks against full
    data, and a pick that lost more than :func:`regret_allowed` of full-data score (``best``: the best full-data
    score, by default the best among the agreement's configurations)."""
    lines = []
    if agreement.misranks():
        lines.append(agreement.line())
    if best is None and agreement.pairs:
        best = float(agreement.arrays()[1].max())  # signed as the agreement keeps it: |best| is the same
    allowed = regret_allowed(best, agreement.mode)
    if regret is not None and finite(regret) and regret > allowed:
        lines.append(f"{what} lost {regret:.4f} of full-data score against the best configuration on full data "
                     f"(more than {allowed:.4g})")
    return lines


# ----------------------------------------------------------------------------- corrections while a search runs


@dataclass
class RatioChange:
    """One correction: from which ratio to which, why, on what evidence, after how many trials had started."""

    before: float
    after: float
    why: str
    evidence: dict[str, Any]
    trials_started: int
    at: float = field(default_factory=time.time)

    def line(self) -> str:
        return (f"{self.why}: configurations started from now on train on ratio {self.after:g} (was {self.before:g}; "
                f"{self.trials_started} started before)")


@dataclass
class ProxyWatch:
    """What a search learns about its proxy as reports arrive, and when to raise the ratio of the
    configurations not yet started: when the first rung's proxy scores are at chance (and full data's, if
    any yet, are not), or when the first rung's scores misrank against the full-data top rung. Only
    trials started at the current ratio count as evidence for the next change. Plain state: the Ray
    callback (:mod:`asp_tune.tune.fulldata_ray`) feeds it and writes :data:`CHANGES_FILE`."""

    ratio: float
    first_rung: int
    final_epoch: int
    mode: str = "max"
    top_rung_full: bool = True
    changes: list[RatioChange] = field(default_factory=list)
    first: dict[str, tuple[float, float, float]] = field(default_factory=dict)  # trial -> (score, constant, ratio)
    final: dict[str, float] = field(default_factory=dict)
    started: set[str] = field(default_factory=set)

    def observe(self, trial: str, epoch: int, score: Any, constant: Any, start_ratio: Any) -> RatioChange | None:
        """File one report; the change it calls for, if any (already applied to ``ratio``)."""
        self.started.add(trial)
        ratio = float(start_ratio) if finite(start_ratio) else self.ratio
        if epoch == self.first_rung and finite(score):
            self.first[trial] = (float(score), float(constant) if finite(constant) else math.nan, ratio)
        if epoch == self.final_epoch and self.top_rung_full and finite(score):
            self.final[trial] = float(score)
        if self.ratio >= 1.0:
            return None
        now = {t: v for t, v in self.first.items() if abs(v[2] - self.ratio) <= 1e-6}
        change = self._chance(now) or self._misranks(now)
        if change is not None:
            self.changes.append(change)
            self.ratio = change.after
        return change

    def _raised(self, why: str, evidence: dict[str, Any]) -> RatioChange:
        return RatioChange(self.ratio, min(1.0, round(self.ratio * RAISE, 6)), why, evidence, len(self.started))

    def _chance(self, now: dict[str, tuple[float, float, float]]) -> RatioChange | None:
        scores, constants = [v[0] for v in now.values()], [v[1] for v in now.values()]
        if not at_chance(scores, constants, self.mode):
            return None
        full = [(score, self.first[t][1]) for t, score in self.final.items() if t in self.first]
        if at_chance([f for f, _ in full], [c for _, c in full], self.mode):
            return None  # full data does not learn either: a larger ratio would not help
        best = max(scores) if self.mode == "max" else min(scores)
        return self._raised(f"the proxy's scores at the first rung (epoch {self.first_rung}) are at chance",
                            {"rung": self.first_rung, "trials": len(scores), "best_score": best,
                             "constant_score": constants[scores.index(best)], "margin": CHANCE_MARGIN})

    def _misranks(self, now: dict[str, tuple[float, float, float]]) -> RatioChange | None:
        agreement = FullDataAgreement(self.mode)
        for trial, full in self.final.items():
            if trial in now:
                agreement.add(trial, now[trial][0], full, "top rung")
        if not agreement.misranks():
            return None
        low, high = agreement.interval()
        return self._raised(f"the proxy misranks against full data (Kendall tau {agreement.kendall_tau():+.2f}, "
                            f"{int(LEVEL * 100)}% interval {low:+.2f} .. {high:+.2f})",
                            {"pairs": len(agreement.pairs), "kendall_tau": agreement.kendall_tau(),
                             "interval": [low, high], "threshold": THRESHOLD})

    def record(self) -> dict[str, Any]:
        """What :data:`CHANGES_FILE` holds: the ratio new trials take, and every change."""
        return {"ratio": self.ratio, "changes": [asdict(c) for c in self.changes]}

    def restore(self, record: dict[str, Any]) -> None:
        """Continue from a recorded file (a resumed search keeps its changes)."""
        ratio = record.get("ratio")
        if finite(ratio) and 0.0 < float(ratio) <= 1.0:
            self.ratio = float(ratio)
        self.changes = [RatioChange(**c) for c in record.get("changes", []) if isinstance(c, dict)]


def read_changes(path: str | None) -> dict[str, Any]:
    """The changes file at ``path`` ({} when there is none or it cannot be read)."""
    if not path:
        return {}
    from asp_tune.tune.storage import read_text

    try:
        record = json.loads(read_text(path))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def started_ratio(path: str | None, ratio: float) -> float:
    """The ratio a trial starting now trains on: the latest correction's, else ``ratio``."""
    value = read_changes(path).get("ratio")
    return float(value) if finite(value) and 0.0 < float(value) <= 1.0 else ratio
