"""The benchmarks' own run functions, on tiny settings: a bench that cannot run its cells measures nothing."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench"


@pytest.fixture()
def baselines(monkeypatch, tmp_path):
    monkeypatch.setenv("ASP_TUNE_CACHE", str(tmp_path / "cache"))
    monkeypatch.syspath_prepend(str(BENCH))
    import baselines

    return baselines


@pytest.mark.parametrize("strategy", ["forgetting", "easiest", "asp"])
def test_the_baselines_bench_runs_a_cell_of_every_kind(baselines, strategy):
    """Its ranking part built trainers with Trainer(), which refuses a static proxy that needs a scoring model:
    easiest, hardest, k-centers and forgetting could not run."""
    key = {"strategy": strategy, "ratio": 0.3, "config": 0, "seed": 0}
    row = baselines.ranking_task({"key": key, "config": {"dataset": "digits", "model": "mlp", "epochs": 3,
                                                         "subset": 300, "ratio": 0.3, "seed": 0,
                                                         **baselines.STRATEGIES[strategy]}})
    assert {k: row[k] for k in key} == key and 0.0 < row["val_accuracy"] <= 1.0
    assert 0.5 < row["data_passes"] < 3 * 0.3 + 1.0  # three epochs at 0.3, a full first one at most
    assert (row["proxy_data_passes"] > 0) == (strategy != "asp")  # a static proxy's scoring model, counted
