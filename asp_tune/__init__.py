"""asp_tune: HPO and NAS on ASP proxy data (Automatic Selection of Proxy dataset).

The data layer (memory, schedules, selection, feeding, data sets) knows nothing of Ray or NAS;
``asp_tune.tune`` and the top-level ``nas`` package build on it. Names are imported on first use
(PEP 562), so ``import asp_tune`` and the command line's help stay fast (no torch until needed).
"""

from __future__ import annotations

from asp_tune.registry import lazy_exports

__version__ = "0.1.0"

#: Public name -> the module that defines it.
_EXPORTS = {
    "TrainConfig": "asp_tune.config",
    "DATASETS": "asp_tune.registry", "MODELS": "asp_tune.registry", "SELECTION_RULES": "asp_tune.registry",
    "DataBundle": "asp_tune.datasets", "ImageArrays": "asp_tune.datasets", "load_dataset": "asp_tune.datasets",
    "AspTuneError": "asp_tune.errors", "ConfigError": "asp_tune.errors", "DataError": "asp_tune.errors",
    "DeviceFeeder": "asp_tune.feeding", "SelectedIndexSampler": "asp_tune.feeding", "StreamFeeder": "asp_tune.feeding",
    "MEMORY_METRICS": "asp_tune.memory", "ProxyMemory": "asp_tune.memory",
    "build_model": "asp_tune.models",
    "EpochPlan": "asp_tune.proxy", "InfoBatch": "asp_tune.proxy", "ProxySelector": "asp_tune.proxy",
    "METRIC_CHOICES": "asp_tune.schedules", "MIXTURE_ORDERS": "asp_tune.schedules",
    "MetricSchedule": "asp_tune.schedules", "RatioSchedule": "asp_tune.schedules",
    "SelectionRule": "asp_tune.selection", "normalise": "asp_tune.selection", "select": "asp_tune.selection",
    "select_subset": "asp_tune.selection", "selection_probabilities": "asp_tune.selection",
    "top_mass": "asp_tune.selection",
    "Trainer": "asp_tune.trainer", "TrainingDiverged": "asp_tune.trainer",
    "STATIC_PROXIES": "asp_tune.registry", "StaticProxy": "asp_tune.static_proxies",
    "ForgettingEvents": "asp_tune.static_proxies", "greedy_k_centers": "asp_tune.static_proxies",
    "ProxyScores": "asp_tune.proxy_scores",
    "CoresetSettings": "asp_tune.svp_settings", "ActiveLearningSettings": "asp_tune.svp_settings",
    "ActiveLearner": "asp_tune.svp",
    "run_coreset": "asp_tune.svp", "run_active_learning": "asp_tune.svp",
    "proxy_quality": "asp_tune.quality",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
