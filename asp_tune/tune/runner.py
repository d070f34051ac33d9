"""Deprecated: the names this module held now live in the search wing's own modules.

``asp_tune.tune.runner.NAME`` still works, with a :class:`DeprecationWarning` naming the new place:
:mod:`asp_tune.tune.settings` (``HpoSettings``), :mod:`asp_tune.tune.builtin` (``run_hpo``),
:mod:`asp_tune.tune.run` (the one run function), :mod:`asp_tune.tune.session` (Ray's session),
:mod:`asp_tune.tune.collect` (the trials table) and :mod:`asp_tune.tune.algorithms` (the registry).
"""

from __future__ import annotations

import importlib
import warnings
from typing import Any

#: Old name -> (module, name there).
MOVED = {
    "HpoSettings": ("asp_tune.tune.settings", "HpoSettings"),
    "settings_dict": ("asp_tune.tune.settings", "settings_dict"),
    "TRACKERS": ("asp_tune.tune.settings", "TRACKERS"),
    "TRACKER_PACKAGES": ("asp_tune.tune.settings", "TRACKER_PACKAGES"),
    "METRIC": ("asp_tune.tune.settings", "METRIC"),
    "run_hpo": ("asp_tune.tune.builtin", "run_hpo"),
    "shared_arrays": ("asp_tune.tune.builtin", "shared_arrays"),
    "RESUME_FIELDS": ("asp_tune.tune.builtin", "RESUME_FIELDS"),
    "HpoResult": ("asp_tune.tune.run", "SearchResult"),
    "make_tuner": ("asp_tune.tune.run", "make_tuner"),
    "DataPassBudget": ("asp_tune.tune.run", "DataPassBudget"),
    "SETTINGS_FILE": ("asp_tune.tune.run", "SETTINGS_FILE"),
    "KEEP_CHECKPOINTS": ("asp_tune.tune.run", "KEEP_CHECKPOINTS"),
    "REUSE_ACTORS": ("asp_tune.tune.run", "REUSE_ACTORS"),
    "tracking_callbacks": ("asp_tune.tune.run", "tracking_callbacks"),
    "ensure_ray": ("asp_tune.tune.session", "ensure_ray"),
    "protect_ray_token": ("asp_tune.tune.session", "protect_ray_token"),
    "check_cluster_owner": ("asp_tune.tune.session", "check_cluster_owner"),
    "joined_cluster": ("asp_tune.tune.session", "joined_cluster"),
    "check_reachable": ("asp_tune.tune.session", "check_reachable"),
    "check_resources": ("asp_tune.tune.session", "check_resources"),
    "check_shared_storage": ("asp_tune.tune.session", "check_shared_storage"),
    "quiet_ray_logs": ("asp_tune.tune.session", "quiet_ray_logs"),
    "fit_interruptibly": ("asp_tune.tune.session", "fit_interruptibly"),
    "reported_epochs": ("asp_tune.tune.collect", "reported_epochs"),
    "last_values": ("asp_tune.tune.collect", "last_values"),
    "proxy_model_seconds": ("asp_tune.tune.collect", "proxy_model_seconds"),
    "error_line": ("asp_tune.tune.collect", "error_line"),
    "proxy_trust": ("asp_tune.tune.collect", "proxy_trust"),
    "EARLY_STOPPING": ("asp_tune.tune.algorithms", "EARLY_STOPPING"),
    "ALGORITHMS": ("asp_tune.tune.algorithms", "ALGORITHMS"),
}


def check_resume_settings(experiment: str, settings: dict[str, Any]) -> None:
    """Deprecated: :func:`asp_tune.tune.run.check_resume_settings` with the built-in search's fields."""
    from asp_tune.tune.builtin import RESUME_FIELDS
    from asp_tune.tune.run import check_resume_settings as check

    warnings.warn("asp_tune.tune.runner.check_resume_settings is deprecated: use "
                  "asp_tune.tune.run.check_resume_settings", DeprecationWarning, stacklevel=2)
    check(experiment, settings, RESUME_FIELDS)


def __getattr__(name: str) -> Any:
    if name not in MOVED:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    module, new = MOVED[name]
    warnings.warn(f"asp_tune.tune.runner.{name} is deprecated: use {module}.{new}", DeprecationWarning, stacklevel=2)
    return getattr(importlib.import_module(module), new)
