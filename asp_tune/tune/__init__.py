"""Ray Tune service: proxy-data trainable, HPO algorithms, rescaled budgets, full-data comparison."""

from asp_tune.tune.runner import ALGORITHMS, HpoResult, HpoSettings, run_hpo
from asp_tune.tune.space import SearchSpace, load_space, parse_space

__all__ = ["ALGORITHMS", "HpoResult", "HpoSettings", "SearchSpace", "load_space", "parse_space", "run_hpo"]
