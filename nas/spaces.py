"""NAS search spaces as objects: the protocol every space implements, and the registry of spaces.

The searchers (:mod:`nas.spos`, :mod:`nas.darts`), the search loop (:mod:`nas.search`), the
command line and the plots take a :class:`NasSpace` and never ask which one it is. A new space
is one module with a class implementing the protocol and one :func:`register_space` line (or an
entry in :data:`SPACES`, or an installed package's entry point); spaces load lazily, so the CLI's help does not build networks.
"""

from __future__ import annotations

from random import Random
from typing import TYPE_CHECKING, Any, Callable, Hashable, Protocol, runtime_checkable

from asp_tune.errors import ConfigError
from asp_tune.registry import LazyRegistry

if TYPE_CHECKING:
    from torch import nn


@runtime_checkable
class GroundTruthTable(Protocol):
    """Known accuracies of a space's architectures (NAS-Bench-201's table, say)."""

    columns: tuple[str, ...]

    def lookup(self, arch: Any) -> dict[str, float]:
        """Every accuracy column of ``arch`` (an architecture or its text form)."""

    def column_for(self, dataset: str) -> str:
        """The column that matches a search on ``dataset``.

        Optional: ``matches(dataset) -> bool`` (whether the table holds accuracies measured on ``dataset``;
        else assumed) and ``arch in table`` (else an architecture ``lookup`` refuses is unknown)."""

    def best(self, dataset: str) -> tuple[Any, float]:
        """The best architecture for ``dataset`` and its accuracy."""


@runtime_checkable
class NasSpace(Protocol):
    """A cell-based search space. Architectures are hashable values (equal means the same network).

    Networks:
    - ``single_path_supernet``: every operation of every edge, one path run at a time; the module
      has ``set_arch(arch)`` (SPOS).
    - ``continuous_network``: every edge a softmax mixture of the operations; the module has
      ``weight_parameters()``, ``arch_parameters()`` and ``derive() -> arch`` (DARTS).
    """

    name: str
    description: str
    default_cells: int
    min_cells: int
    cells_help: str
    default_searcher: str
    size: int | None  # number of architectures (None: not counted)
    has_ground_truth: bool  # whether load_ground_truth can read a table of known accuracies

    def random(self, rng: Random) -> Hashable: ...

    def mutate(self, arch: Any, rng: Random, edge_prob: float) -> Hashable: ...

    def crossover(self, a: Any, b: Any, rng: Random) -> Hashable: ...

    def single_path_supernet(self, channels: int, cells: int, num_classes: int, in_channels: int) -> nn.Module: ...

    def continuous_network(self, channels: int, cells: int, num_classes: int, in_channels: int) -> nn.Module: ...

    def parse(self, text: str) -> Hashable: ...

    def format(self, arch: Any) -> str: ...

    def load_ground_truth(self, path: str) -> GroundTruthTable:
        """The space's ground-truth table at ``path``; a space without tables raises ConfigError."""

    def summarise(self, arch: Any) -> dict[str, Any]:
        """Summary fields beyond ``arch`` (its text form) that describe a found architecture."""


#: Search spaces by name, each a zero-argument factory (a class) of a :class:`NasSpace`, imported on first
#: use; installed packages add theirs through the entry-point group ``asp_tune.nas_spaces``.
SPACES = LazyRegistry("NAS space", group="asp_tune.nas_spaces", entries={
    "nb201": "nas.space_nb201:Nb201Space",
    "darts": "nas.space_darts:DartsSpace",
})
_LOADED: dict[str, NasSpace] = {}


def register_space(name: str, factory: Callable[[], NasSpace] | str) -> None:
    """Make ``name`` a search space: a factory (class or function) or a ``"module:attribute"`` path."""
    SPACES.register(name, factory)
    _LOADED.pop(name, None)


def unregister_space(name: str) -> None:
    SPACES.unregister(name)
    _LOADED.pop(name, None)


def space_names() -> tuple[str, ...]:
    return tuple(SPACES)


def get_space(name: str) -> NasSpace:
    """The registered space ``name``; an unknown name is an error that lists the spaces."""
    if not isinstance(name, str) or name not in SPACES:
        raise ConfigError("space", name, space_names())
    if name not in _LOADED:
        _LOADED[name] = SPACES[name]()
    return _LOADED[name]


def require_images(data: Any, what: str = "a NAS search") -> None:
    """NAS cells are convolutional: their data must be images with class labels (a named error otherwise,
    before a network is built)."""
    if data.kind != "image" or not data.has_classes:
        held = f"{data.kind}" + ("" if data.has_classes else " with regression targets")
        raise ConfigError("dataset", data.name, f"images with class labels for {what} (its cells are "
                                                f"convolutional); '{data.name}' holds {held}")
