"""Lazy registries: the names behind every choice list, each bound to where it is implemented.

An entry is ``"module:attribute"``, imported on first use, so listing the names (help texts,
validation of a config) never imports torch. Registering is one line (:meth:`LazyRegistry.register`),
with an object or another such path.
"""

from __future__ import annotations

import importlib
import sys
from typing import Any, Callable, Iterator, Mapping


class LazyRegistry(Mapping[str, Any]):
    """A read-only name -> object mapping whose objects are imported when first looked up."""

    def __init__(self, kind: str, entries: Mapping[str, Any], group: str | None = None):
        self.kind = kind
        self._entries: dict[str, Any] = dict(entries)
        self._builtin = dict(entries)
        self._loaded: dict[str, Any] = {}
        self.group = group  # installed packages may add entries through this entry-point group
        self._scanned = group is None

    def _scan(self) -> None:
        """Add the entries installed packages declare (``[project.entry-points."asp_tune.models"]``
        ``name = "package.module:attribute"``), once, on first use; registrations made here win."""
        if self._scanned:
            return
        self._scanned = True
        from importlib.metadata import entry_points

        for point in entry_points(group=self.group):
            self._entries.setdefault(point.name, point.value)
            self._builtin.setdefault(point.name, point.value)

    def rescan(self) -> None:
        """Look at the installed packages' entry points again (after installing one)."""
        self._scanned = self.group is None
        self._scan()

    def added(self) -> dict[str, Any]:
        """The entries registered after the package's own (new names, or built-in names replaced)."""
        return {n: e for n, e in self._entries.items() if n not in self._builtin or self._builtin[n] is not e}

    def register(self, name: str, entry: Any) -> None:
        """Add (or replace) ``name``: an object, or a ``"module:attribute"`` path."""
        self._entries[name] = entry
        self._loaded.pop(name, None)

    def unregister(self, name: str) -> None:
        """Remove ``name`` (nothing happens when it is not there)."""
        self._entries.pop(name, None)
        self._loaded.pop(name, None)

    def __getitem__(self, name: str) -> Any:
        self._scan()
        if name not in self._loaded:
            entry = self._entries[name]  # KeyError for an unknown name, as a Mapping should
            if isinstance(entry, str):
                module, _, attribute = entry.partition(":")
                entry = getattr(importlib.import_module(module), attribute)
            self._loaded[name] = entry
        return self._loaded[name]

    def __iter__(self) -> Iterator[str]:
        self._scan()
        return iter(list(self._entries))

    def __contains__(self, name: object) -> bool:
        self._scan()
        return name in self._entries

    def __len__(self) -> int:
        self._scan()
        return len(self._entries)

    def __repr__(self) -> str:
        return f"LazyRegistry({self.kind!r}, {sorted(self._entries)})"


def lazy_exports(package: str, exports: Mapping[str, str]) -> tuple[Callable[[str], Any], Callable[[], list[str]]]:
    """``__getattr__`` and ``__dir__`` for a package whose public names (name -> defining module)
    are imported on first use (PEP 562), then kept in the package like ordinary names. A public
    submodule is imported on first use too, so ``import asp_tune`` then ``asp_tune.tune.search`` works."""
    def getattr_(name: str) -> Any:
        if name not in exports:
            if name in _submodules(package):
                return importlib.import_module(f"{package}.{name}")  # binds itself in the package
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(exports[name]), name)
        setattr(sys.modules[package], name, value)
        return value

    def dir_() -> list[str]:
        return sorted(set(vars(sys.modules[package])) | set(exports) | _submodules(package))

    return getattr_, dir_


def _submodules(package: str) -> set[str]:
    """The public modules and packages directly in ``package`` (found on disk, none imported)."""
    import pkgutil

    return {m.name for m in pkgutil.iter_modules(sys.modules[package].__path__) if not m.name.startswith("_")}


#: Networks: ``builder(input_shape, num_classes, **model_args) -> nn.Module`` (``input_shape``: one
#: sample's, e.g. ``(3, 32, 32)``). A model name may also be an import path ``package.module:builder``.
MODELS = LazyRegistry("model", group="asp_tune.models", entries={
    "mlp": "asp_tune.models:mlp",
    "resnet8": "asp_tune.models:resnet8",
    "resnet20": "asp_tune.models:resnet20",
    "resnet32": "asp_tune.models:resnet32",
    "resnet44": "asp_tune.models:resnet44",
    "resnet56": "asp_tune.models:resnet56",
    "resnet18": "asp_tune.models:resnet18",
    "resnet34": "asp_tune.models:resnet34",
})

#: Data sets: a :class:`asp_tune.datasets.DatasetSpec` each (loader and augmentation defaults).
DATASETS = LazyRegistry("dataset", group="asp_tune.datasets", entries={
    "digits": "asp_tune.datasets:DIGITS",
    "cifar10": "asp_tune.datasets:CIFAR10",
    "cifar100": "asp_tune.datasets:CIFAR100",
    "image_folder": "asp_tune.datasets:IMAGE_FOLDER",
})

#: What a network learns (:class:`asp_tune.tasks.Task`); ``auto`` picks one from the targets.
TASKS = LazyRegistry("task", group="asp_tune.tasks", entries={
    "classification": "asp_tune.tasks:CLASSIFICATION",
    "regression": "asp_tune.tasks:REGRESSION",
})

#: How importance values become selection probabilities (implemented in asp_tune.selection).
SELECTION_RULES: tuple[str, ...] = ("zscore", "paper", "calibrated")

#: Per-sample statistics the proxy memory keeps, one column each: a :class:`asp_tune.memory.Statistic`
#: each. Each is also an importance metric (a strategy name). ``asp_tune.register_statistic`` adds one.
STATISTICS = LazyRegistry("statistic", {
    name: f"asp_tune.memory:{name.upper()}" for name in ("loss", "entropy", "gradient", "logit_gradient", "prediction")
})

#: The built-in static proxies (baselines chosen once, then fixed for the run).
STATIC_PROXY_NAMES: tuple[str, ...] = ("fixed_random", "easiest", "hardest", "half_classes", "fewer_epochs",
                                       "forgetting", "max_entropy", "least_confidence", "kcenters",
                                       "entropy_histogram")

#: Subset strategies by name: a factory ``(ProxySettings) -> SubsetStrategy`` each (or a SubsetStrategy
#: class). Every name is a ``metric`` setting; so is every statistic's (importance sampling on it).
STRATEGIES = LazyRegistry("strategy", group="asp_tune.strategies", entries={
    "none": "asp_tune.strategies:full_data",
    "random": "asp_tune.strategies:uniform",
    "mixture": "asp_tune.strategies:mixture",
    "infobatch": "asp_tune.strategies:infobatch",
    # static proxies: chosen once, then fixed for the run (asp_tune.static_proxies)
    **{name: f"asp_tune.static_proxies:{name.upper()}" for name in STATIC_PROXY_NAMES},
})


def strategy_names() -> tuple[str, ...]:
    """Every ``metric`` (strategy) name accepted now: ``random`` and the statistics (importance
    sampling), then the other strategies, ``none`` (full data) last."""
    first = ("random",) + tuple(n for n in STATISTICS if n not in STRATEGIES)
    return first + tuple(n for n in STRATEGIES if n not in first and n != "none") + ("none",)


def registries() -> dict[str, LazyRegistry]:
    """Every registry a run reads, by kind."""
    return {"model": MODELS, "dataset": DATASETS, "statistic": STATISTICS, "strategy": STRATEGIES, "task": TASKS}


def extensions() -> dict[str, dict[str, Any]]:
    """What this process registered beyond the package's own entries, importable ones as
    ``module:qualname`` paths and the rest (``__main__``) by value: sent with every Ray trial and
    installed there by :func:`install_extensions`, so a registration made in the driver reaches
    every worker."""
    from asp_tune.imports import by_reference

    return {kind: {name: by_reference(entry) for name, entry in added.items()}
            for kind, registry in registries().items() if (added := registry.added())}


def install_extensions(entries: Mapping[str, Mapping[str, Any]] | None) -> None:
    """Register :func:`extensions` of another process here."""
    for kind, added in (entries or {}).items():
        for name, entry in added.items():
            registries()[kind].register(name, entry)
