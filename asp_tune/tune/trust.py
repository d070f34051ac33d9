"""Proxy trust: how well a multi-fidelity search's low rungs rank configurations like its next rung.

An early-stopping search (ASHA, Hyperband, BOHB) decides at its rungs from scores a short, cheap
run gave. Whether those scores rank configurations as the longer runs do depends on the problem,
and on a small image problem an r = 0.3 ASHA search picked its worst configuration without a word.
:class:`RungRecord` keeps every trial's score at each rung and measures, for each pair of
consecutive rungs, the Kendall tau between the two rungs' scores over the configurations that
reached both. It uses only results the search already has, so it adds no training. Below
``threshold`` with at least ``min_pairs`` configurations the pair is *untrusted*: the search warns in
one line naming the rungs, and its summary marks the pick.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import Any, Iterable, Sequence

# a rung pair ranks too unlike the next rung below the full-data audit's threshold over as many configurations
from asp_tune.tune.fulldata import MIN_PAIRS, THRESHOLD


def rung_epochs(grace_period: int, reduction_factor: int, max_epochs: int) -> tuple[int, ...]:
    """The epochs where ASHA (and, per bracket, Hyperband) decides: ``grace * eta^k`` below the
    last epoch, and the last epoch."""
    rungs, epoch = [], max(1, grace_period)
    while epoch < max_epochs:
        rungs.append(epoch)
        epoch *= reduction_factor
    return tuple(rungs) + (max_epochs,)


def kendall_tau(x: Sequence[float], y: Sequence[float]) -> float:
    """Kendall's tau-b of paired scores (NaN with fewer than 2 pairs or no variation)."""
    from scipy import stats

    if len(x) < 2 or len(set(x)) < 2 or len(set(y)) < 2:
        return math.nan
    return float(stats.kendalltau(x, y).statistic)


@dataclass(frozen=True)
class RungAgreement:
    low: int  # epoch of the lower rung
    high: int  # epoch of the next rung
    kendall_tau: float
    pairs: int  # configurations that reached both rungs
    trusted: bool | None  # None: too few pairs to say

    def line(self) -> str:
        return (f"rungs {self.low}->{self.high} epochs rank alike with Kendall tau {self.kendall_tau:.2f} over "
                f"{self.pairs} configurations")


class RungRecord:
    """Each trial's score at each rung, and the agreement of consecutive rungs."""

    def __init__(self, rungs: Iterable[int], threshold: float = THRESHOLD, min_pairs: int = MIN_PAIRS):
        self.rungs = tuple(sorted(set(int(r) for r in rungs)))
        self.threshold, self.min_pairs = float(threshold), int(min_pairs)
        self.scores: dict[int, dict[str, float]] = {r: {} for r in self.rungs}

    def add(self, trial: str, epoch: int, score: Any) -> None:
        """Record ``score`` if ``epoch`` is a rung (NaN and missing scores are ignored)."""
        if int(epoch) in self.scores and isinstance(score, (int, float)) and score == score:
            self.scores[int(epoch)][str(trial)] = float(score)

    def add_history(self, trial: str, epochs: Iterable[int], scores: Iterable[Any]) -> None:
        for epoch, score in zip(epochs, scores):
            self.add(trial, epoch, score)

    def agreements(self) -> list[RungAgreement]:
        out = []
        for low, high in zip(self.rungs[:-1], self.rungs[1:]):
            both = sorted(set(self.scores[low]) & set(self.scores[high]))
            tau = kendall_tau([self.scores[low][t] for t in both], [self.scores[high][t] for t in both])
            trusted = None if len(both) < self.min_pairs or tau != tau else tau >= self.threshold
            out.append(RungAgreement(low, high, tau, len(both), trusted))
        return out

    def untrusted(self) -> list[RungAgreement]:
        return [a for a in self.agreements() if a.trusted is False]

    def warning(self) -> str | None:
        """One line naming the rung pairs that rank unlike the next rung, or None."""
        bad = self.untrusted()
        if not bad:
            return None
        pairs = "; ".join(a.line() for a in bad)
        return (f"the proxy misranks: {pairs} (below {self.threshold} over >= {self.min_pairs}); early stopping "
                "decided on scores that do not predict the longer runs, so the pick is not to be trusted: "
                "compare it on full data (asp-tune compare) or use a larger ratio or grace period")

    def lowest(self) -> str:
        """The lowest agreement of a rung pair with at least 2 configurations so far, for a progress line."""
        known = [a for a in self.agreements() if a.pairs >= 2 and a.kendall_tau == a.kendall_tau]
        worst = min(known, key=lambda a: a.kendall_tau, default=None)
        return "-" if worst is None else f"{worst.kendall_tau:+.2f}({worst.low}->{worst.high})"

    def summary(self) -> dict[str, Any]:
        """The pairs, and whether the pick is trusted: False where a measured pair ranks unlike its next rung, True
        only where every pair was measured and agrees (the pair into the top rung, which the pick comes from,
        often has too few configurations under ASHA), else None."""
        agreements = self.agreements()
        verdicts = [a.trusted for a in agreements]
        return {"rungs": list(self.rungs), "threshold": self.threshold, "min_pairs": self.min_pairs,
                "pairs": [asdict(a) for a in agreements],
                "trusted": False if False in verdicts else (True if verdicts and None not in verdicts else None),
                "measured": any(v is not None for v in verdicts)}
