"""asp_tune: HPO and NAS on ASP proxy data (Automatic Selection of Proxy dataset).

The data layer (memory, schedules, selection, feeding, data sets) knows nothing of Ray or NAS;
``asp_tune.tune`` and the top-level ``nas`` package build on it.
"""

from asp_tune.config import TrainConfig
from asp_tune.datasets import DATASETS, DataBundle, ImageArrays, load_dataset
from asp_tune.errors import AspTuneError, ConfigError, DataError
from asp_tune.feeding import DeviceFeeder, SelectedIndexSampler, StreamFeeder
from asp_tune.memory import MEMORY_METRICS, ProxyMemory
from asp_tune.models import MODELS, build_model
from asp_tune.proxy import EpochPlan, InfoBatch, ProxySelector
from asp_tune.schedules import METRIC_CHOICES, MIXTURE_ORDERS, MetricSchedule, RatioSchedule
from asp_tune.selection import (SELECTION_RULES, SelectionRule, normalise, select, select_subset,
                                selection_probabilities, top_mass)
from asp_tune.trainer import Trainer, TrainingDiverged

__version__ = "0.1.0"

__all__ = [
    "AspTuneError", "ConfigError", "DataError", "DATASETS", "DataBundle", "DeviceFeeder", "EpochPlan",
    "ImageArrays", "InfoBatch", "MEMORY_METRICS", "METRIC_CHOICES", "MIXTURE_ORDERS", "MODELS", "MetricSchedule",
    "ProxyMemory", "ProxySelector", "RatioSchedule", "SELECTION_RULES", "SelectionRule", "SelectedIndexSampler", "StreamFeeder",
    "TrainConfig", "Trainer", "TrainingDiverged", "build_model", "load_dataset", "normalise",
    "select", "select_subset", "selection_probabilities", "top_mass",
]
