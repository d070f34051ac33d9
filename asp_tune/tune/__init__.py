"""Ray Tune service: proxy-data trainable, HPO algorithms, rescaled budgets, full-data comparison.

Names are imported on first use, so registering the command line does not start Ray or torch."""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {"ALGORITHMS": "asp_tune.tune.runner", "HpoResult": "asp_tune.tune.runner",
            "HpoSettings": "asp_tune.tune.runner", "run_hpo": "asp_tune.tune.runner",
            "SearchSpace": "asp_tune.tune.space", "load_space": "asp_tune.tune.space",
            "parse_space": "asp_tune.tune.space"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'asp_tune.tune' has no attribute {name!r}")
    value = getattr(importlib.import_module(_EXPORTS[name]), name)
    globals()[name] = value
    return value
