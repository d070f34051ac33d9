"""Finish an Optuna study on full data: its best trials (and some drawn at random) trained on all the data,
the pick made there, and the proxy measured against it, as :func:`asp_tune.tune.search` does for Ray Tune.

::

    study.optimize(objective_on_proxy_data, n_trials=32)
    audit = asp_tune.tune.audit_study(study, train_on_full_data)   # train_on_full_data(params) -> score
    print(audit.line()); model_params = audit.best_params

No Ray: the full-data runs are the user's function, called one after another in this process.
"""

from __future__ import annotations

import json
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
    study's value, ``full_data_score``, ``error``, ``reused``: the score kept by an earlier audit, not trained
    again), the pick on full data and the proxy's agreement with full data."""

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


#: The study's user attribute that keeps each full-data score as it arrives: ``{keep_as: {params: score}}``.
SCORES_ATTR = "asp_tune_full_data_scores"


def audit_study(study, train_full: Callable[[dict[str, Any]], float], count: int | None = None,
                seed: int = 0, *, count_hint: str = "count=N", trials: Iterable[Any] | None = None,
                catch: Iterable[type[Exception]] | type[Exception] = (), keep_as: str | None = None) -> StudyAudit:
    """Train ``count`` of ``study``'s completed trials on full data with ``train_full(params)`` (its score,
    in the study's direction): the best half by the study's value, the rest drawn at random. ``count``
    None: enough to measure the proxy (6) in a study of 18 or more completed trials, else its best 3.
    The pick is the best full-data score; the study keeps the audit as its user attribute
    ``asp_tune_full_data`` (the agreement, the pick, each audited trial's full-data score). ``count_hint``: how
    the caller asks for a larger audit, in its lines. ``trials``: those of the study's trials to audit among
    (default: all; the proxy's own pick is then the best of these). ``catch``: exceptions of ``train_full``
    that score its configuration NaN (as a failed run; its error in the table's ``error``) and let the audit go
    on, as in ``study.optimize``; any other is raised. ``keep_as``: a name for this full-data training: each
    finite score is kept in the study (user attribute :data:`SCORES_ATTR`) as it arrives, and an audit under
    the same name (a rerun after a failure, a larger ``count``) reuses it rather than training again, the
    kept scores of completed trials it did not choose joining its pairs at no cost; give another name when
    ``train_full`` changes (None: nothing kept)."""
    import optuna

    if not isinstance(study, optuna.Study):
        raise ConfigError("study", type(study).__name__, "an optuna.Study")
    if not callable(train_full):
        raise ConfigError("train_full", train_full, "a function train_full(params) -> full-data score")
    if count is not None and (not isinstance(count, numbers.Integral) or isinstance(count, bool) or count < 1):
        raise ConfigError("count", count, "an integer >= 1, or None")
    if not isinstance(seed, numbers.Integral) or isinstance(seed, bool) or seed < 0:
        raise ConfigError("seed", seed, "an integer >= 0")
    if keep_as is not None and not isinstance(keep_as, str):
        raise ConfigError("keep_as", keep_as, "a name for the full-data training (str), or None")
    catch = exception_types(catch)
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
    kept = kept_scores(study, keep_as)
    for key in chosen:
        trial = by_number[key]
        params, error = dict(trial.params), None
        score = kept.get(params_key(params))
        reused = score is not None
        if not reused:
            try:
                score = _score(train_full(params), trial.number)
            except catch as exc:
                score, error = math.nan, f"{type(exc).__name__}: {exc}"
            keep_score(study, keep_as, params, score)  # as it arrives: a later failure loses none
        agreement.add(key, trial.value, score, "audit")
        rows.append({"number": trial.number, "params": params, "proxy_score": trial.value,
                     "full_data_score": score, "error": error, "reused": reused})
    for key, trial in by_number.items():  # full-data scores kept by an earlier audit join at no cost
        score = kept.get(params_key(dict(trial.params)))
        if key not in chosen and score is not None:
            agreement.add(key, trial.value, score, "audit")
            rows.append({"number": trial.number, "params": dict(trial.params), "proxy_score": trial.value,
                         "full_data_score": score, "error": None, "reused": True})
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


def params_key(params: dict[str, Any]) -> str:
    """A configuration's key among the kept full-data scores: its parameters as sorted JSON."""
    return json.dumps(params, sort_keys=True, default=repr)


def kept_scores(study: Any, keep_as: str | None) -> dict[str, float]:
    """The full-data scores ``study`` keeps under ``keep_as`` (:func:`audit_study`), by :func:`params_key`."""
    if keep_as is None:
        return {}
    kept = study.user_attrs.get(SCORES_ATTR)
    return dict(kept.get(keep_as) or {}) if isinstance(kept, dict) else {}


def keep_score(study: Any, keep_as: str | None, params: dict[str, Any], score: float) -> None:
    """Keep a finite full-data ``score`` of ``params`` in ``study`` under ``keep_as`` (a NaN one, a failed or
    diverged run, trains again in a later audit)."""
    if keep_as is None or not math.isfinite(score):
        return
    kept = study.user_attrs.get(SCORES_ATTR)
    kept = dict(kept) if isinstance(kept, dict) else {}
    kept[keep_as] = {**kept_scores(study, keep_as), params_key(params): float(score)}
    study.set_user_attr(SCORES_ATTR, kept)


def exception_types(catch: Any) -> tuple[type[Exception], ...]:
    """``catch`` as a tuple of exception classes (one class or any iterable of them, as Optuna takes)."""
    types = (catch,) if isinstance(catch, type) else tuple(catch) if isinstance(catch, Iterable) else (catch,)
    for kind in types:
        if not (isinstance(kind, type) and issubclass(kind, Exception)):
            raise ConfigError("catch", catch, "an exception class or a tuple of them")
    return types
