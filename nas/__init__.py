"""Neural architecture search on the ASP data layer: NAS-Bench-201 with SPOS or DARTS, and DARTS.

- :mod:`nas.spaces`: the ``NasSpace`` protocol and the lazy registry of spaces (entry points too).
- :mod:`nas.nb201` / :mod:`nas.space_nb201`: the NAS-Bench-201 cells and ground-truth table, and the
  space object; :mod:`nas.nb201_net`: its single-path supernet and DARTS network.
- :mod:`nas.genotypes` / :mod:`nas.space_darts`: the DARTS genotypes and the space object;
  :mod:`nas.darts_space`: its search and evaluation networks.
- :mod:`nas.spos` / :mod:`nas.darts`: the searchers (each a specialised trainer step).
- :mod:`nas.search`: one search from settings to results, with checkpoints; :mod:`nas.parallel`
  runs several seeds as Ray tasks; :mod:`nas.retrain` trains a genotype from scratch.
"""
