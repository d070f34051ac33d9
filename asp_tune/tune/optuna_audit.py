"""Finish an Optuna study on full data: its best trials (and some drawn at random) trained on all the data,
the pick made there, and the proxy measured against it, as :func:`asp_tune.tune.search` does for Ray Tune.

::

    study.optimize(objective_on_proxy_data, n_trials=32)
    audit = asp_tune.tune.audit_study(study, train_on_full_data)   # train_on_full_data(params) -> score
    print(audit.line()); model_params = audit.best_params

No Ray: the full-data runs are the user's function, called one after another in this process.
"""

from __future__ import annotations

import math
import numbers
import warnings
from dataclasses import dataclass
from typing import Any, Callable, Iterable

import pandas as pd

from asp_tune.errors import ConfigError
from asp_tune.tune.fulldata import FullDataAgreement, audit_size, choose_audit, guards_only, verdict_lines


@dataclass
class StudyAudit:
    """The audit of a finished study: one row per audited trial (``number``, ``params``, ``proxy_score``: the
    study's value, ``full_data_score``), the pick on full data and the proxy's agreement with full data."""

    table: pd.DataFrame
    agreement: FullDataAgreement
    best_params: dict[str, Any]
    best_full_score: float
    proxy_best_params: dict[str, Any]

    @property
    def pick_changed(self) -> bool:
        return self.best_params != self.proxy_best_params

    def line(self) -> str:
        return self.agreement.line()

    def warnings(self) -> list[str]:
        """The search's warnings, in its words: a misranking proxy, a proxy pick that lost over a point, or one
        that did not train on full data (its score there not finite: no regret can be said)."""
        if self.own_pick_failed:
            return ["the study's own pick has no finite score on full data (it diverged there, or train_full "
                    "failed on it): the pick is the best of the others",
                    *verdict_lines(self.agreement, None, "the study's own pick")]
        return verdict_lines(self.agreement, self.agreement.regret(), "the study's own pick")

    @property
    def own_pick_failed(self) -> bool:
        """Whether the study's own pick was audited and scored no finite value on full data."""
        own = self.table[self.table["params"].map(lambda p: p == self.proxy_best_params)]
        return bool(len(own)) and not math.isfinite(float(own["full_data_score"].iloc[0]))

    def summary(self) -> dict[str, Any]:
        regret = {"regret_of_proxy_pick": None, "own_pick_failed": True} if self.own_pick_failed else {}
        return {**self.agreement.summary(), **regret, "line": self.line(), "best_params": self.best_params,
                "best_full_data_score": self.best_full_score, "proxy_best_params": self.proxy_best_params,
                "pick_changed": self.pick_changed, "audited": len(self.table),
                "full_data_scores": {str(r.number): r.full_data_score for r in self.table.itertuples()}}


def audit_study(study, train_full: Callable[[dict[str, Any]], float], count: int | None = None,
                seed: int = 0, *, count_hint: str = "count=N", trials: Iterable[Any] | None = None) -> StudyAudit:
    """Train ``count`` of ``study``'s completed trials on full data with ``train_full(params)`` (its score,
    in the study's direction): the best half by the study's value, the rest drawn at random. ``count``
    None: enough to measure the proxy (6) in a study of 18 or more completed trials, else its best 3.
    The pick is the best full-data score; the study keeps the audit as its user attribute
    ``asp_tune_full_data`` (the agreement, the pick, each audited trial's full-data score). ``count_hint``: how
    the caller asks for a larger audit, in its lines. ``trials``: those of the study's trials to audit among
    (default: all; the proxy's own pick is then the best of these)."""
    import optuna

    if not isinstance(study, optuna.Study):
        raise ConfigError("study", type(study).__name__, "an optuna.Study")
    if not callable(train_full):
        raise ConfigError("train_full", train_full, "a function train_full(params) -> full-data score")
    if count is not None and (not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 1):
        raise ConfigError("count", count, "an integer >= 1, or None")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ConfigError("seed", seed, "an integer >= 0")
    count = None if count is None else int(count)
    if trials is not None:
        trials = list(trials) if isinstance(trials, Iterable) and not isinstance(trials, (str, bytes)) else [trials]
        if not all(isinstance(t, optuna.trial.FrozenTrial) for t in trials):
            raise ConfigError("trials", trials, "some of the study's trials (optuna FrozenTrial), or None for all")
    if len(study.directions) != 1:
        raise ConfigError("study", f"{len(study.directions)} objectives", "a study with one objective")
    done = [t for t in (study.trials if trials is None else trials) if t.state == optuna.trial.TrialState.COMPLETE
            and t.value is not None and math.isfinite(t.value)]
    if not done:
        raise ConfigError("study", "no completed trial", "a study with at least one completed trial"
                          + ("" if trials is None else " among the trials audited"))
    mode = "max" if study.direction == optuna.study.StudyDirection.MAXIMIZE else "min"
    own_pick = (max if mode == "max" else min)(done, key=lambda t: t.value)  # the study's best_trial, when all
    by_number = {str(t.number): t for t in done}
    candidates = pd.DataFrame({"trial_id": list(by_number), "proxy_score": [t.value for t in done]})
    chosen = choose_audit(candidates, audit_size(count, len(done), 0.0), mode, seed, "proxy_score",
                          top_only=guards_only(count, len(done)))
    more = count_hint if len(chosen) < len(done) else f"completing more trials of the study, then {count_hint},"
    agreement, rows = FullDataAgreement(mode, more=more), []
    for key in chosen:
        trial = by_number[key]
        score = _score(train_full(dict(trial.params)), trial.number)
        agreement.add(key, trial.value, score, "audit")
        rows.append({"number": trial.number, "params": dict(trial.params), "proxy_score": trial.value,
                     "full_data_score": score})
    table = pd.DataFrame(rows)
    finite = table[table["full_data_score"].map(math.isfinite)]
    if not len(finite):
        raise ConfigError("train_full", "no finite score", "a function that returns the full-data score")
    best = finite.loc[finite["full_data_score"].idxmax() if mode == "max" else finite["full_data_score"].idxmin()]
    audit = StudyAudit(table, agreement, best["params"], float(best["full_data_score"]), dict(own_pick.params))
    study.set_user_attr("asp_tune_full_data", audit.summary())
    for line in audit.warnings():  # warned, not only kept for whoever asks
        warnings.warn(line, stacklevel=2)
    return audit


def _score(value: Any, number: int) -> float:
    """``train_full``'s return as a float: a number (a Python or NumPy one, or a tensor of one value), else a
    named error."""
    count = value.numel() if callable(getattr(value, "numel", None)) else getattr(value, "size", None)
    if callable(getattr(value, "item", None)) and count == 1:  # a tensor or array of one value
        value = value.item()
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ConfigError("train_full", f"{type(value).__name__} {value!r:.60} for trial {number}",
                          "a function that returns the full-data score as a number")
    return float(value)
