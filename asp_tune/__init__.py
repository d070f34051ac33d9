"""asp_tune: HPO and NAS on ASP proxy data (Automatic Selection of Proxy dataset).

The data layer (memory, schedules, selection, feeding, data sets) knows nothing of Ray or NAS;
``asp_tune.tune`` and the top-level ``nas`` package build on it. Names are imported on first use
(PEP 562), so ``import asp_tune`` and the command line's help stay fast (no torch until needed).
"""

from __future__ import annotations

from asp_tune.registry import lazy_exports

def _version() -> str:
    """The installed distribution's version (pyproject.toml is its one source)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("asp_tune")
    except PackageNotFoundError:  # run from a source tree that was never installed
        return "0+unknown"


__version__ = _version()

#: Public name -> the module that defines it.
_EXPORTS = {
    "TrainConfig": "asp_tune.config", "ProxySettings": "asp_tune.proxy_settings",
    "DATASETS": "asp_tune.registry", "MODELS": "asp_tune.registry", "SELECTION_RULES": "asp_tune.registry",
    "STRATEGIES": "asp_tune.registry", "STATISTICS": "asp_tune.registry",
    "DataBundle": "asp_tune.datasets", "ImageArrays": "asp_tune.datasets", "load_dataset": "asp_tune.datasets",
    "AspTuneError": "asp_tune.errors", "ConfigError": "asp_tune.errors", "DataError": "asp_tune.errors",
    "RunInterrupted": "asp_tune.errors",
    "DeviceFeeder": "asp_tune.feeding", "SelectedIndexSampler": "asp_tune.feeding", "StreamFeeder": "asp_tune.feeding",
    "ProxyMemory": "asp_tune.memory", "Statistic": "asp_tune.memory", "register_statistic": "asp_tune.memory",
    "build_model": "asp_tune.models",
    "ProxySelector": "asp_tune.proxy",
    "EpochPlan": "asp_tune.strategies", "SubsetStrategy": "asp_tune.strategies", "Importance": "asp_tune.strategies",
    "Mixture": "asp_tune.strategies", "FullData": "asp_tune.strategies", "InfoBatchPruning": "asp_tune.strategies",
    "make_strategy": "asp_tune.strategies", "register_strategy": "asp_tune.strategies",
    "ProxyData": "asp_tune.loop", "InfoBatch": "asp_tune.loop",
    "MetricSchedule": "asp_tune.schedules", "RatioSchedule": "asp_tune.schedules",
    "SelectionRule": "asp_tune.selection", "normalise": "asp_tune.selection", "select": "asp_tune.selection",
    "select_subset": "asp_tune.selection", "selection_probabilities": "asp_tune.selection",
    "top_mass": "asp_tune.selection",
    "Trainer": "asp_tune.trainer", "TrainingDiverged": "asp_tune.trainer", "build_trainer": "asp_tune.build",
    "StaticProxy": "asp_tune.static_proxies", "StaticStrategy": "asp_tune.static_proxies",
    "ForgettingEvents": "asp_tune.static_proxies", "greedy_k_centers": "asp_tune.static_proxies",
    "ProxyScores": "asp_tune.scores",
    "CoresetSettings": "asp_tune.svp_settings", "ActiveLearningSettings": "asp_tune.svp_settings",
    "ActiveLearner": "asp_tune.svp",
    "run_coreset": "asp_tune.svp", "run_active_learning": "asp_tune.svp",
    "proxy_quality": "asp_tune.quality",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
