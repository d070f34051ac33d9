"""Ray Tune service: the one search function, HPO algorithms as a registry, asp_tune's proxy-data trainable
and users' own, rescaled budgets, and the full-data comparison.

Names are imported on first use, so registering the command line does not start Ray or torch."""

from __future__ import annotations

from asp_tune.registry import lazy_exports

_EXPORTS = {"ALGORITHMS": "asp_tune.tune.algorithms", "Algorithm": "asp_tune.tune.algorithms",
            "register_algorithm": "asp_tune.tune.algorithms",
            "HpoSettings": "asp_tune.tune.settings", "run_hpo": "asp_tune.tune.builtin",
            "SearchJob": "asp_tune.tune.run", "run_search": "asp_tune.tune.run",
            "SearchResult": "asp_tune.tune.run", "HpoResult": "asp_tune.tune.runner",
            "SearchSpace": "asp_tune.tune.space", "load_space": "asp_tune.tune.space",
            "parse_space": "asp_tune.tune.space",
            "search": "asp_tune.tune.user", "compare_trainable": "asp_tune.tune.user", "proxy_data": "asp_tune.tune.user",
            "report": "asp_tune.tune.user", "correlate_trainable": "asp_tune.tune.user",
            "audit_study": "asp_tune.tune.optuna_audit",
            "optimize_in_packs": "asp_tune.tune.packed_study", "PackedStudy": "asp_tune.tune.packed_study", "StudyAudit": "asp_tune.tune.optuna_audit"}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
