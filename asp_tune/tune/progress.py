"""Tune callbacks of an asp_tune experiment (imported lazily: it needs Ray)."""

from __future__ import annotations

import json
import time
from pathlib import Path

from ray.tune import Callback

from asp_tune.tune.storage import join, read_text, write_text

PROGRESS_FILE = "asp_tune_progress.json"


def recorded_wall_time(experiment_path: str | Path) -> float:
    """Wall seconds an experiment has run so far, over all of its parts (0 when unknown)."""
    try:
        return float(json.loads(read_text(join(str(experiment_path), PROGRESS_FILE)))["wall_time_s"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0.0


class WallTimeRecorder(Callback):
    """Keeps the experiment's cumulative wall time in ``asp_tune_progress.json`` after every result.

    Each part of an experiment (the first run, every resume, even after the driver was killed)
    adds its own time to what earlier parts recorded, so a resumed search reports the time of all
    its parts. Restored with the experiment, so it must stay a plain importable class.
    """

    def __init__(self, experiment_path: str):
        self.experiment_path = experiment_path
        self._base = 0.0
        self._start: float | None = None

    def setup(self, **info) -> None:
        self._base = recorded_wall_time(self.experiment_path)
        self._start = time.time()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self.write()

    def on_experiment_end(self, trials, **info) -> None:
        self.write()

    def write(self) -> None:
        if self._start is None:
            self.setup()
        try:
            write_text(join(self.experiment_path, PROGRESS_FILE),
                       json.dumps({"wall_time_s": self._base + time.time() - self._start}))
        except OSError:
            pass  # only the reported wall time suffers


class SignedState(Callback):
    """Signs the files a ``--resume`` lets Ray unpickle after every step in which a trial reported, and
    at the end (:mod:`asp_tune.tune.signing`). Callbacks run in Tune's loop after its state write of the
    step, so the files signed here are never half-written by this process.
    """

    def __init__(self, experiment_path: str):
        self.experiment_path = experiment_path
        self._reported = True  # the first step signs the state as the experiment starts

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        self._reported = True

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._reported = True

    def on_step_end(self, iteration, trials, **info) -> None:
        if self._reported:
            self._reported = not self.sign()

    def on_experiment_end(self, trials, **info) -> None:
        self.sign()

    def sign(self) -> bool:
        from asp_tune.tune.signing import sign

        try:
            return sign(self.experiment_path)
        except OSError:
            return False  # keep the last signed copy; the next step tries again


class SearchProgress(Callback):
    """One progress bar for a whole search: trials done, running and failed, the best validation
    accuracy so far, elapsed time and ETA (Ray's own console output stays off); with ``rungs``, the
    rank agreement of the highest pair of rungs measured so far (``tau``, :mod:`asp_tune.tune.trust`)."""

    def __init__(self, total: int, desc: str = "trials", rungs: tuple[int, ...] | None = None):
        from asp_tune.tune.trust import RungRecord

        self.total, self.desc = total, desc
        self.running, self.failed, self.best = 0, 0, float("nan")
        self.trust = None if rungs is None else RungRecord(rungs)
        self._bar = None

    def __getstate__(self) -> dict:  # restored with the experiment; the bar is made anew
        return {**self.__dict__, "_bar": None}

    def setup(self, **info) -> None:
        import sys

        from tqdm.auto import tqdm

        # On a terminal the bar redraws in place; in a log file each redraw stays, so redraw rarely there.
        terminal = sys.stderr.isatty()
        self._bar = tqdm(total=self.total, desc=self.desc, unit="trial", file=sys.stderr,
                         mininterval=0.1 if terminal else 30.0)

    def _show(self, advance: int = 0) -> None:
        if self._bar is None:
            self.setup()
        best = "-" if self.best != self.best else f"{self.best:.4f}"
        extra = {} if self.trust is None else {"tau": self.trust.latest()}
        self._bar.set_postfix(running=self.running, failed=self.failed, best_val=best, **extra, refresh=False)
        self._bar.update(advance)  # redraws at most once per mininterval

    def _count_running(self, trials) -> None:
        """Trials training now (a paused one, waiting at a rung, is not)."""
        self.running = sum(1 for t in trials if t.status == "RUNNING")

    def on_trial_start(self, iteration, trials, trial, **info) -> None:
        self._count_running(trials)
        self._show()

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        value = result.get("val_accuracy")
        if isinstance(value, (int, float)) and value == value and not (value <= self.best):
            self.best = float(value)
        if self.trust is not None and "epoch" in result:
            self.trust.add(trial.trial_id, result["epoch"], value)
        self._count_running(trials)
        self._show()

    def on_trial_complete(self, iteration, trials, trial, **info) -> None:
        self._count_running([t for t in trials if t is not trial])
        self._show(1)

    def on_trial_error(self, iteration, trials, trial, **info) -> None:
        self._count_running([t for t in trials if t is not trial])
        self.failed += 1
        self._show(1)

    def on_experiment_end(self, trials, **info) -> None:
        if self._bar is not None:
            self._bar.close()
