"""What a finished search holds, as data: one row per trial and each trial's reports, whoever's
trainable ran (asp_tune's own or a user's), for any score and direction."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pandas as pd

#: A trial's own report columns kept in its history (``trial_epochs.csv``), besides the score.
HISTORY_COLUMNS = ("epoch", "val_accuracy", "data_passes", "proxy_ratio", "train_loss", "reported_at",
                   "train_seconds_total", "val_constant", "start_ratio")
#: Totals read from a trial's last report, with their value when it did not report them.
TOTALS = {"data_passes": ("data_passes", 0.0), "seconds": ("train_seconds_total", 0.0),
          "startup_seconds": ("startup_seconds", 0.0), "val_seconds": ("val_seconds_total", 0.0),
          "node_id": ("node_id", ""), "assigned_gpus": ("assigned_gpus", ""), "device": ("device", ""),
          "proxy_seconds": ("proxy_seconds", 0.0), "proxy_data_passes": ("proxy_data_passes", 0.0),
          "proxy_key": ("proxy_key", ""), "selection_seconds": ("subset_selection_seconds", 0.0)}


def plain(value: Any) -> Any:
    """A NumPy scalar as a Python one (others as they are)."""
    return value.item() if hasattr(value, "item") else value


def error_line(error: BaseException) -> str:
    """``Type: message`` of the exception a trial raised, unwrapped from Ray's task error."""
    cause = getattr(error, "cause", None) or error
    lines = [ln for ln in str(cause).strip().splitlines() if ln.strip()]
    return f"{type(cause).__name__}: {(lines[-1] if lines else '')[:300]}"


def reported_epochs(hist: pd.DataFrame | None) -> pd.DataFrame:
    """A trial's reports, one per epoch: a trial resumed from a checkpoint older than its last report
    (a driver killed between Ray's state saves) reports those epochs again; the later report counts."""
    if hist is None or not len(hist):
        return pd.DataFrame()
    if "epoch" not in hist:
        return hist
    return hist.drop_duplicates("epoch", keep="last").sort_values("epoch", kind="stable").reset_index(drop=True)


def _last(hist: pd.DataFrame, column: str, missing: Any) -> Any:
    if column not in hist or not hist[column].notna().any():
        return missing
    value = plain(hist[column].dropna().iloc[-1])
    return type(missing)(value) if isinstance(missing, (float, str)) else value


def last_values(hist: pd.DataFrame | None, metric: str = "val_accuracy") -> dict[str, Any] | None:
    """A trial's totals from its last report (None when it reported no score)."""
    if hist is None or not len(hist) or metric not in hist:
        return None
    out = {key: _last(hist, column, missing) for key, (column, missing) in TOTALS.items()}
    out["proxy_computed"] = bool(hist.iloc[-1].get("proxy_computed") == True)  # noqa: E712 - a NumPy bool, or NaN
    out["final_val_accuracy"] = _last(hist, metric, math.nan)
    return out


def collect_trials(grid, param_names: list[str], metric: str = "val_accuracy", mode: str = "max",
                   epochs: int | None = None) -> tuple[pd.DataFrame, dict[str, pd.DataFrame]]:
    """One row per trial of a Ray ``ResultGrid`` (its parameters, best and last ``metric``, totals,
    status, error) and each trial's reports by trial id. ``epochs``: a trial's full length (a trial
    that reported it is ``TERMINATED``, one stopped before ``STOPPED``). A trainable that does not report
    its training seconds is timed by Ray's ``time_total_s``: its whole time in the trial, validation
    included; one that reports them but not its start-up (:func:`asp_tune.tune.report` in :func:`search`)
    started up for the rest of Ray's ``time_total_s`` (the worker's imports before the trainable ran)."""
    rows, histories = [], {}
    for result in grid:
        hist = reported_epochs(result.metrics_dataframe)
        if len(hist) and "train_seconds_total" not in hist and "time_total_s" in hist:
            hist = hist.assign(train_seconds_total=hist["time_total_s"])  # a trainable of one's own: Ray's clock
        elif len(hist) and "startup_seconds" not in hist and "time_total_s" in hist:  # search()'s: Ray's clock
            spent = hist["train_seconds_total"] + (hist["report_seconds_total"] if "report_seconds_total" in hist
                                                   else 0.0)
            hist = hist.assign(startup_seconds=(hist["time_total_s"] - spent).clip(lower=0))
        metrics = result.metrics or {}
        trial_id = metrics.get("trial_id") or (Path(result.path).name if result.path else f"trial{len(rows)}")
        scores = hist[metric].dropna() if metric in hist else pd.Series(dtype=float)
        reached = int(hist["epoch"].max()) if "epoch" in hist and len(hist) else 0
        row: dict[str, Any] = {"trial_id": trial_id}
        for name in param_names:
            row[f"config/{name}"] = plain(result.config.get(name)) if result.config else None
        best = (scores.max() if mode == "max" else scores.min()) if len(scores) else math.nan
        row.update({"best_score": float(best), "final_score": float(scores.iloc[-1]) if len(scores) else math.nan})
        accuracy = hist["val_accuracy"].dropna() if "val_accuracy" in hist else pd.Series(dtype=float)
        row.update({"best_val_accuracy": float(accuracy.max()) if len(accuracy) else math.nan,
                    "final_val_accuracy": float(accuracy.iloc[-1]) if len(accuracy) else math.nan,
                    "epochs": reached})
        row.update({key: _last(hist, column, missing) if len(hist) else missing
                    for key, (column, missing) in TOTALS.items()})
        row["proxy_computed"] = bool(len(hist) and hist.iloc[-1].get("proxy_computed") == True)  # noqa: E712
        finished = epochs is None or reached >= epochs
        row.update({"status": "ERROR" if result.error else ("TERMINATED" if finished else "STOPPED"),
                    "error": "" if not result.error else error_line(result.error)})
        rows.append(row)
        if len(scores):
            kept = [c for c in (*HISTORY_COLUMNS, metric) if c in hist]
            histories[trial_id] = hist[list(dict.fromkeys(kept))]
    return pd.DataFrame(rows), histories


def best_trial(trials: pd.DataFrame, mode: str = "max") -> pd.Series | None:
    """The trial with the best score among those that did not fail (None: no trial scored); of tied ones, the
    configuration first by its values' repr, never by the trials' order (a resumed search lists them otherwise)."""
    ok = trials[(trials["status"] != "ERROR") & trials["best_score"].notna()] if len(trials) else trials
    if not len(ok):
        return None
    top = ok["best_score"].max() if mode == "max" else ok["best_score"].min()
    tied = ok[ok["best_score"] == top]
    if len(tied) == 1:
        return tied.iloc[0]
    columns = sorted(c for c in tied.columns if str(c).startswith("config/"))
    keys = [repr([plain(v) for v in row]) for row in tied[columns].itertuples(index=False)]
    return tied.iloc[min(range(len(keys)), key=keys.__getitem__)]


def proxy_model_seconds(trials: pd.DataFrame) -> float:
    """Seconds spent training static proxies' scoring models (:func:`proxy_model_total`)."""
    return proxy_model_total(trials, "proxy_seconds")


def proxy_model_total(trials: pd.DataFrame, column: str) -> float:
    """A static proxy's scoring-model ``column`` (``proxy_seconds``, ``proxy_data_passes``) summed over the
    distinct proxies: each counted once, however many trials shared it (0 without a static proxy that needs one)."""
    if "proxy_key" not in trials or column not in trials or not len(trials):
        return 0.0
    used = trials[trials["proxy_key"].fillna("").astype(str) != ""]
    return float(used.groupby("proxy_key")[column].max().sum()) if len(used) else 0.0


def started_on_all_data(histories: dict[str, pd.DataFrame]) -> set[str]:
    """The trials that started at ratio 1 where others started below it (the search raised its ratio while it
    ran): all their epochs are full data's. None in a search on full data (every trial started at 1)."""
    starts = {}
    for trial, hist in histories.items():
        started = hist["start_ratio"].dropna() if "start_ratio" in hist else ()
        if len(started):
            starts[trial] = float(started.iloc[0])
    if not any(r < 1.0 for r in starts.values()):
        return set()
    return {trial for trial, ratio in starts.items() if ratio >= 1.0}


def proxy_trust(rungs: tuple[int, ...] | None, histories: dict[str, pd.DataFrame], metric: str = "val_accuracy"):
    """The :class:`~asp_tune.tune.trust.RungRecord` of a finished early-stopping search, from the trials'
    own reports (so a resumed search counts every part), without trials started on all the data; None
    without early stopping."""
    if rungs is None:
        return None
    from asp_tune.tune.trust import RungRecord

    record = RungRecord(rungs)
    on_all = started_on_all_data(histories)  # their rungs are full data's: nothing of the proxy's to trust
    for trial, hist in histories.items():
        if "epoch" in hist and metric in hist and trial not in on_all:
            record.add_history(trial, hist["epoch"], hist[metric])
    return record
