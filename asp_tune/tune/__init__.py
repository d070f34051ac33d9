"""Ray Tune service: proxy-data trainable, HPO algorithms, rescaled budgets, full-data comparison.

Names are imported on first use, so registering the command line does not start Ray or torch."""

from __future__ import annotations

from asp_tune.registry import lazy_exports

_EXPORTS = {"ALGORITHMS": "asp_tune.tune.runner", "HpoResult": "asp_tune.tune.runner",
            "HpoSettings": "asp_tune.tune.runner", "run_hpo": "asp_tune.tune.runner",
            "SearchSpace": "asp_tune.tune.space", "load_space": "asp_tune.tune.space",
            "parse_space": "asp_tune.tune.space",
            "search": "asp_tune.tune.user", "compare_trainable": "asp_tune.tune.user", "proxy_data": "asp_tune.tune.user",
            "report": "asp_tune.tune.user", "SearchResult": "asp_tune.tune.user",
            "correlate_trainable": "asp_tune.tune.user"}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
