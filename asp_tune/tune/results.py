"""A finished search's results folder, written once for every caller (``trials.csv``, ``trial_epochs.csv``,
``summary.json``, ``trust.png``, ``full_data.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pandas as pd

from asp_tune.run_dir import jsonable
from asp_tune.tune.run import SearchJob, SearchResult, run_search

#: trials.csv's accuracy columns, left out where no trial reported an accuracy and the search scored another metric.
ACCURACY_COLUMNS = ("best_val_accuracy", "final_val_accuracy")


def write_search(folder, result: SearchResult, settings: dict[str, Any], title: str) -> None:
    """A search's files in an open results folder (:class:`~asp_tune.run_dir.RunDirectory`): ``trials.csv``,
    ``trial_epochs.csv``, the settings in the summary, ``trust.png`` when the rungs' agreement was measured, and
    ``full_data.png`` (each configuration's proxy score against its full-data score) when full data decided."""
    table = result.trials
    if result.summary.get("score_metric") != "val_accuracy":  # a task without accuracy (regression, a loss): the
        table = table.drop(columns=[c for c in ACCURACY_COLUMNS if c in table and table[c].isna().all()])  # empty
    folder.write_table("trials.csv", table)
    if result.histories:
        frames = [h.assign(trial_id=t) for t, h in result.histories.items()]
        folder.write_table("trial_epochs.csv", pd.concat(frames, ignore_index=True))
    result.summary["settings"] = settings
    trust = result.summary.get("proxy_trust")
    if trust and trust["pairs"]:
        from asp_tune.plots import plot_rung_agreement

        plot_rung_agreement(trust, folder.file("trust.png"), f"{title}: rank agreement of consecutive rungs")
    section = result.summary.get("full_data")
    if section and "proxy_score" in result.trials and result.trials["full_data_score"].notna().any():
        from asp_tune.plots import plot_full_data_agreement

        plot_full_data_agreement(result.trials, section, folder.file("full_data.png"),
                                 f"{title}: the proxy against full data", result.summary.get("mode", "max"))


def search_into(job: SearchJob, out: str | Path, overwrite: bool = False, resume: str | None = None,
                resume_unsigned: bool = False, title: str | None = None) -> tuple[SearchResult, Path]:
    """:func:`run_search` into the results folder ``out`` (checked and locked before anything runs,
    committed only when the search succeeds); returns the result and the committed folder."""
    from asp_tune.run_dir import RunDirectory

    with RunDirectory(str(out), overwrite=overwrite) as folder:
        result = run_search(job, resume=resume, resume_unsigned=resume_unsigned, say_unfinished=True)
        write_search(folder, result, jsonable(job.settings), title or job.label)
        target = folder.commit(result.summary)
    return result, target
