"""Tune callbacks of an asp_tune experiment (imported lazily: it needs Ray)."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

from ray.tune import Callback

from asp_tune.tune.storage import is_uri, join, read_text, write_text

PROGRESS_FILE = "asp_tune_progress.json"


def recorded_wall_time(experiment_path: str | Path) -> float:
    """Wall seconds an experiment has run so far, over all of its parts (0 when unknown)."""
    try:
        return float(json.loads(read_text(join(str(experiment_path), PROGRESS_FILE)))["wall_time_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


def current_experiment(pickled: str, trials) -> str:
    """The experiment folder this run writes. Ray restores these callbacks from the experiment with the
    path they were made with; a copied experiment folder resumed elsewhere is its own, as Ray's trials
    (whose storage Ray moves to the folder being restored) say."""
    path = next((getattr(t.storage, "experiment_fs_path", None) for t in trials or ()
                 if getattr(t, "storage", None) is not None), None)
    if not path:
        return pickled
    if is_uri(pickled):  # pyarrow's paths carry no scheme (nor a URI's query): bucket/x, or /x for file://
        scheme, rest = pickled.split("://", 1)
        return f"{scheme}://{path}" + (f"?{rest.split('?', 1)[1]}" if "?" in rest else "")
    return path


class WallTimeRecorder(Callback):
    """Keeps the experiment's cumulative wall time in ``asp_tune_progress.json`` after every result.

    Each part of an experiment (the first run, every resume, even after the driver was killed)
    adds its own time to what earlier parts recorded, so a resumed search reports the time of all
    its parts. Restored with the experiment, so it must stay a plain importable class.
    """

    def __init__(self, experiment_path: str):
        self.experiment_path = experiment_path
        self._base: float | None = None
        self._start: float | None = None

    def setup(self, **info) -> None:
        self._start = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.write(trials)

    def on_experiment_end(self, trials, **info) -> None:
        self.write(trials)

    def write(self, trials=None) -> None:
        if self._start is None:
            self.setup()
        if self._base is None:  # what earlier parts recorded, read where this part writes
            self.experiment_path = current_experiment(self.experiment_path, trials)
            self._base = recorded_wall_time(self.experiment_path)
        try:
            write_text(join(self.experiment_path, PROGRESS_FILE),
                       json.dumps({"wall_time_s": self._base + time.time() - self._start}))
        except OSError:
            pass  # only the reported wall time suffers


#: The report files Ray's loggers copy back from the storage path when a trial restarts from a checkpoint.
TRIAL_LOGS = ("result.json", "progress.csv")


def publish_trial_logs(trial) -> bool:
    """Copy a trial's report files from the driver's staging folder to the storage path; False when a
    copy failed (said in a warning).

    When a trial restarts from a checkpoint (promoted after a pause, retried after a lost node, resumed
    after a killed driver), Ray's loggers first copy its files from the storage path over the staging
    copy, and the storage path is only as fresh as Ray's last upload (seconds ago): the reports since
    were lost. Called before them, this makes the storage copy the latest one; it costs one copy of one
    trial's files. A trial without a checkpoint restarts from scratch: nothing is copied.
    """
    if not getattr(trial, "checkpoint", None):
        return True  # a fresh start: Ray copies nothing back
    import warnings

    import pyarrow.fs

    try:
        folder = trial.local_path
    except RuntimeError:  # a trial Ray has not placed yet has no folder
        return True
    whole = True
    for name in TRIAL_LOGS:
        local = Path(folder, name)
        if not local.is_file():
            continue
        try:
            pyarrow.fs.copy_files(str(local), Path(trial.storage.trial_fs_path, name).as_posix(),
                                  destination_filesystem=trial.storage.storage_filesystem, use_threads=False)
        except Exception as exc:  # noqa: BLE001 - pyarrow's error types; the reports may then lack a few rows
            warnings.warn(f"could not copy {local} to the storage path; a restart of this trial from its "
                          f"checkpoint may lose the reports since Ray's last upload ({exc})", stacklevel=2)
            whole = False
    return whole


class FreshTrialLogs(Callback):
    """:func:`publish_trial_logs` as each trial starts (Tune runs user callbacks before its loggers)."""

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        publish_trial_logs(trial)


class SignedState(Callback):
    """Signs the files a ``--resume`` lets Ray unpickle each time Ray saved its state, and at the end
    (:mod:`asp_tune.tune.signing`). Callbacks run in Tune's loop after its state save of the step, so
    the files signed here (from Ray's local staging folder) are whole. Once this run's state file is
    known, a step without a save costs one ``stat``.

    Ray uploads its staging folder in the background, so the state signed here can name a trial's
    checkpoint (which the trial wrote to the storage path itself) before the trial's reports reached
    the storage path; a resume after a killed driver would then restart the trial from that checkpoint
    with its earlier reports lost. So before each signature, the report files of every trial that
    reported or checkpointed since the last signature, and has a checkpoint, are copied there first
    (:func:`publish_trial_logs`); a failed copy leaves the last signed copy in place.
    """

    def __init__(self, experiment_path: str):
        self.experiment_path = experiment_path
        self._staging: str | None = None
        self._state: Path | None = None  # this run's state file in the staging folder, once Ray wrote it
        self._since = time.time()
        self._signed: tuple[int, int] | None = None
        self._changed: dict[str, Any] = {}  # trials that reported or checkpointed since the last signature

    def __setstate__(self, state: dict) -> None:  # a callback pickled by an earlier version lacks new fields
        self.__dict__.update({"_state": None, "_signed": None, "_changed": {}, **state})

    def setup(self, **info) -> None:
        self._since = time.time()  # a restored callback: this part of the experiment starts now

    def _saved(self, trials) -> tuple[int, int] | None:
        """(mtime, size) of Ray's latest state save; None before the first."""
        if self._staging is None and trials:
            self._staging = trials[0].storage.experiment_driver_staging_path
            self.experiment_path = current_experiment(self.experiment_path, trials)
        if self._staging is None:
            return None
        if self._state is None:  # a resumed search's staging folder also holds the earlier parts' files
            found = sorted(Path(self._staging).glob("experiment_state-*.json"))
            if not found or found[-1].stat().st_mtime < self._since - 1.0:  # file clocks are coarse
                return None
            self._state = found[-1]  # written by this run: the newest it will ever be named
        try:
            info = self._state.stat()
        except OSError:
            return None
        return info.st_mtime_ns, info.st_size

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._changed[trial.trial_id] = trial

    def on_checkpoint(self, iteration, trials, trial, checkpoint, **info) -> None:
        self._changed[trial.trial_id] = trial

    def on_step_end(self, iteration, trials, **info) -> None:
        saved = self._saved(trials)
        if saved is not None and saved != self._signed and self._publish() and self.sign():
            self._signed = saved

    def on_experiment_end(self, trials, **info) -> None:
        self._saved(trials)
        self._publish()
        self.sign()

    def _publish(self) -> bool:
        """Copy the reports of the trials changed since the last signature; False when a copy failed
        (those trials are tried again at the next save)."""
        whole = True
        for trial_id, trial in list(self._changed.items()):
            if publish_trial_logs(trial):
                del self._changed[trial_id]
            else:
                whole = False
        return whole

    def sign(self) -> bool:
        from asp_tune.tune.signing import sign

        try:
            return sign(self.experiment_path, self._staging)
        except OSError:
            return False  # keep the last signed copy; the next step tries again


class SearchProgress(Callback):
    """One progress bar for a whole search: trials done, running and failed, the best validation
    score so far (the highest, or the lowest where ``mode`` is ``min``), elapsed time and ETA (Ray's own console output stays off); with ``rungs``, the
    lowest rank agreement of a pair of rungs so far (``rung_tau``, :mod:`asp_tune.tune.trust`); with
    ``full_pairs``, the proxy's agreement with the full-data top rung so far (``full_tau``); a legend line says
    so when the search starts."""

    def __init__(self, total: int, desc: str = "trials", rungs: tuple[int, ...] | None = None,
                 metric: str = "val_accuracy", full_pairs: tuple[int, int] | None = None, mode: str = "max"):
        from asp_tune.tune.trust import RungRecord

        self.total, self.desc, self.metric, self.mode = total, desc, metric, mode
        self.running, self.failed, self.best = 0, 0, float("nan")
        self.trust = None if rungs is None else RungRecord(rungs)
        self.full_pairs = full_pairs  # (proxy epoch, full-data epoch): the proxy's agreement with full data
        self.paired: dict[int, dict[str, float]] = {}
        self.on_all_data: set[str] = set()  # trials started on all the data (the ratio raised to 1)
        self._bar = None

    def __getstate__(self) -> dict:  # restored with the experiment; the bar is made anew
        return {**self.__dict__, "_bar": None}

    def setup(self, **info) -> None:
        import sys

        from tqdm.auto import tqdm

        # On a terminal the bar redraws in place; in a log file each redraw stays, so redraw rarely there.
        terminal = sys.stderr.isatty()
        legend = self.legend()
        if legend:
            print(f"[asp-tune] {legend}", file=sys.stderr)
        self._bar = tqdm(total=self.total, desc=self.desc, unit="trial", file=sys.stderr,
                         mininterval=0.1 if terminal else 30.0)

    def legend(self) -> str:
        """What the bar's agreement fields mean (empty where it shows none)."""
        from asp_tune.tune.fulldata import MIN_PAIRS

        parts = []
        if self.trust is not None:
            parts.append("rung_tau: the lowest Kendall tau so far between two consecutive rungs' scores (the rungs)")
        if getattr(self, "full_pairs", None):
            parts.append(f"full_tau: the proxy's Kendall tau against full data's top rung so far (configurations; "
                         f"judged from {MIN_PAIRS})")
        return "; ".join(parts)

    def _show(self, advance: int = 0) -> None:
        if self._bar is None:
            self.setup()
        best = "-" if self.best != self.best else f"{self.best:.4f}"
        extra = {} if self.trust is None else {"rung_tau": self.trust.lowest()}
        if getattr(self, "full_pairs", None):
            extra["full_tau"] = self._full_agreement()
        self._bar.set_postfix(running=self.running, failed=self.failed, best=best, **extra, refresh=False)
        self._bar.update(advance)  # redraws at most once per mininterval

    def _full_agreement(self) -> str:
        """Kendall tau of the proxy's scores against full data's so far (with the pairs), or ``-``."""
        from asp_tune.tune.fulldata import tau_b

        proxy, full = (self.paired.get(e, {}) for e in self.full_pairs)
        both = sorted(set(proxy) & set(full))
        if len(both) < 2:
            return "-"
        import numpy as np

        tau = tau_b(np.array([proxy[t] for t in both]), np.array([full[t] for t in both]))
        return "-" if tau != tau else f"{tau:+.2f}({len(both)})"

    def _count_running(self, trials) -> None:
        """Trials training now (a paused one, waiting at a rung, is not)."""
        self.running = sum(1 for t in trials if t.status == "RUNNING")

    def on_step_begin(self, iteration, trials, **info) -> None:
        """At a resumed search's first step, what its trials did before the interrupt (Ray restores this
        callback as the search built it): trials ended, failed, and every report made, from the trials' own
        ``result.json``."""
        if getattr(self, "_seeded", False):
            return
        self._seeded = True
        from asp_tune.tune.storage import trial_folder, trial_reports

        ended = [t for t in trials if t.status in ("TERMINATED", "ERROR")]
        self.failed += sum(1 for t in ended if t.status == "ERROR")
        for trial in trials:
            folder = trial_folder(trial)
            for report in trial_reports(folder) if folder is not None else []:
                self.on_trial_result(iteration, trials, trial, report)
        if ended:
            self._show(len(ended))

    def on_experiment_end(self, trials, **info) -> None:
        if self._bar is not None:  # every trial ended counted (one stop_all ended is never completed to us)
            self._bar.n = sum(1 for t in trials if t.status in ("TERMINATED", "ERROR"))
            self.running = 0
            self._show()
            self._bar.close()

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._count_running(trials)
        self._show()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get(getattr(self, "metric", "val_accuracy"))
        if isinstance(value, (int, float)) and value == value and (
                self.best != self.best or (value < self.best if getattr(self, "mode", "max") == "min"
                                           else value > self.best)):
            self.best = float(value)
        on_all_data = self.__dict__.setdefault("on_all_data", set())  # setdefault: a search saved before it
        started = result.get("start_ratio")
        if isinstance(started, (int, float)) and started < 1.0:
            self.below_one = True  # a proxy search: a trial starting at 1 later is one the raised ratio made
        elif isinstance(started, (int, float)) and getattr(self, "below_one", False):
            on_all_data.add(trial.trial_id)  # the ratio raised to 1 before it started (not a full-data search)
        proxy_trained = trial.trial_id not in on_all_data  # else its scores are full data's
        if self.trust is not None and "epoch" in result and proxy_trained:
            self.trust.add(trial.trial_id, result["epoch"], value)
        pairs = getattr(self, "full_pairs", None)
        if pairs and result.get("epoch") in pairs and value == value and (proxy_trained or result["epoch"] != pairs[0]):
            self.paired.setdefault(int(result["epoch"]), {})[trial.trial_id] = value
        self._count_running(trials)
        self._show()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._count_running([t for t in trials if t is not trial])
        self._show(1)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._count_running([t for t in trials if t is not trial])
        self.failed += 1
        self._show(1)
