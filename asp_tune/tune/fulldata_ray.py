"""The Ray Tune side of a search's live proxy watch (imported lazily: it needs Ray).

:class:`FullDataWatch` feeds each report to a :class:`~asp_tune.tune.fulldata.ProxyWatch` and, when
the watch raises the ratio, writes :data:`~asp_tune.tune.fulldata.CHANGES_FILE` in the experiment
folder (trials starting later read it) and says so in one line. Restored with the experiment, so a
resumed search keeps its changes; the file is the record.
"""

from __future__ import annotations

import json

from ray.tune import Callback

from asp_tune.tune.deciding import say
from asp_tune.tune.fulldata import CHANGES_FILE, ProxyWatch, read_changes
from asp_tune.tune.storage import join, write_text


class FullDataWatch(Callback):
    def __init__(self, experiment_path: str, watch: ProxyWatch, metric: str):
        self.experiment_path, self.watch, self.metric = experiment_path, watch, metric
        self._placed = False
        self._said_no_constant = False

    def setup(self, **info) -> None:
        self.watch.restore(read_changes(join(self.experiment_path, CHANGES_FILE)))

    def on_trial_result(self, iteration, trials, trial, result, **info) -> None:
        from asp_tune.tune.progress import current_experiment

        if not self._placed:  # a copied experiment resumed elsewhere writes its own folder
            self.experiment_path, self._placed = current_experiment(self.experiment_path, trials), True
        if "epoch" not in result:
            return
        if not self._said_no_constant and self.metric in result and "val_constant" not in result:
            self._said_no_constant = True
            say("note: the trainable reports no val_constant (the constant predictor's score: the largest class's "
                "share of the validation labels for accuracy, 0 for R²), so the search cannot tell proxy trials "
                "that stay at chance; report it beside the score (docs/hpo.md)")
        change = self.watch.observe(trial.trial_id, int(result["epoch"]), result.get(self.metric),
                                    result.get("val_constant"), result.get("start_ratio"))
        if change is None:
            return
        try:
            write_text(join(self.experiment_path, CHANGES_FILE), json.dumps(self.watch.record(), default=str))
        except OSError as exc:
            say(f"warning: could not record the ratio change ({exc}); trials keep the ratio they were given")
            return
        say(change.line())
