"""Neural architecture search on the ASP data layer: NAS-Bench-201 with SPOS or DARTS, and DARTS.

- :mod:`nas.nb201`: the NAS-Bench-201 cell space and its ground-truth table.
- :mod:`nas.nb201_net`: the single-path supernet and the DARTS network on that space.
- :mod:`nas.darts_space`: the DARTS space, genotypes, search and evaluation networks.
- :mod:`nas.spos` / :mod:`nas.darts`: the searchers (each a specialised trainer step).
- :mod:`nas.search`: one search from settings to results, with checkpoints; :mod:`nas.parallel`
  runs several seeds as Ray tasks; :mod:`nas.retrain` trains a genotype from scratch.
"""
