"""Declared parameter constraints (as scikit-learn declares them): one declaration per field, checked
from it, with an error that names the field and the allowed values.

A constraint sits in a field's metadata (``option(..., check=Interval(0, 1, "right"))``) and
:func:`check_fields` applies every declared one; the same object writes the "allowed ..." text.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any, Callable, Iterable

from asp_tune.errors import ConfigError


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and not (
        isinstance(value, float) and math.isnan(value))


@dataclass(frozen=True)
class Interval:
    """A number between ``low`` and ``high`` (None: unbounded); ``closed`` is ``both``, ``left``,
    ``right`` or ``neither``; ``integer`` asks for an int."""

    low: float | None
    high: float | None
    closed: str = "both"
    integer: bool = False
    optional: bool = False  # None allowed too

    def allowed(self) -> str:
        if self.integer and self.high is None:
            text = f"an integer >= {self.low}" if self.closed in ("both", "left") else f"an integer > {self.low}"
        else:
            left = "[" if self.closed in ("both", "left") and self.low is not None else "("
            right = "]" if self.closed in ("both", "right") and self.high is not None else ")"
            lo = "-inf" if self.low is None else f"{self.low}"
            hi = "inf" if self.high is None else f"{self.high}"
            text = f"{'an integer' if self.integer else 'a number'} in {left}{lo}, {hi}{right}"
        return text + (" or none" if self.optional else "")

    def invalid_examples(self) -> tuple[Any, ...]:
        """Values this constraint refuses (for the test that tries every declared constraint)."""
        out: list[Any] = ["not a number", math.nan, math.inf]
        if self.low is not None:
            out.append(self.low if self.closed in ("right", "neither") else self.low - 1)
        if self.high is not None:
            out.append(self.high if self.closed in ("left", "neither") else self.high + 1)
        if self.integer:
            out.append((self.low if self.low is not None else 0) + 1.5)
        if not self.optional:
            out.append(None)
        return tuple(out)

    def contains(self, value: Any) -> bool:
        if value is None:
            return self.optional
        ok = _is_number(value) and (not self.integer or isinstance(value, int))
        if ok and self.low is not None:
            ok = value >= self.low if self.closed in ("both", "left") else value > self.low
        if ok and self.high is not None:
            ok = value <= self.high if self.closed in ("both", "right") else value < self.high
        return ok and not math.isinf(value)

    def __call__(self, name: str, value: Any) -> None:
        if not self.contains(value):
            raise ConfigError(name, value, self.allowed())


@dataclass(frozen=True)
class OneOf:
    """One of the values ``choices()`` returns (a registry filled later, read when checked)."""

    choices: Callable[[], Iterable[Any]]
    optional: bool = False

    def invalid_examples(self) -> tuple[Any, ...]:
        return ("no-such-choice", 12345) + (() if self.optional else (None,))

    def __call__(self, name: str, value: Any) -> None:
        if value is None and self.optional:
            return
        allowed = tuple(self.choices())
        if not isinstance(value, (str, int, float, bool)) or value not in allowed:
            raise ConfigError(name, value, allowed)


@dataclass(frozen=True)
class Boolean:
    def invalid_examples(self) -> tuple[Any, ...]:
        return ("yes", 1, None)

    def __call__(self, name: str, value: Any) -> None:
        if not isinstance(value, bool):
            raise ConfigError(name, value, "true or false")


@dataclass(frozen=True)
class Check:
    """A constraint written as a function ``check(name, value)`` that raises :class:`ConfigError`, with the
    values it refuses named (so the test that tries every declared constraint can try it too)."""

    check: Callable[[str, Any], Any]
    invalid: tuple[Any, ...]

    def invalid_examples(self) -> tuple[Any, ...]:
        return self.invalid

    def __call__(self, name: str, value: Any) -> None:
        self.check(name, value)


def check_seeds(name: str, value: Any) -> None:
    """A list of seeds (None: not given): distinct integers >= 0."""
    if value is None:
        return
    if not (isinstance(value, list) and value and len(set(value)) == len(value)
            and all(isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in value)):
        raise ConfigError(name, value, "distinct integers >= 0, comma-separated (e.g. 1,2,3)")


def check_value(cls: type, field: str, value: Any, name: str | None = None) -> None:
    """Apply the constraint ``cls`` declares on its field ``field`` to ``value`` (the one place a range
    is checked, for code that takes the value outside the dataclass); the error names ``name`` (by
    default the field)."""
    declared_field = next(f for f in dataclasses.fields(cls) if f.name == field)
    check = declared_field.metadata.get("check")
    if check is not None:
        check(name or field, value)


def declared(cls: type) -> dict[str, Any]:
    """Every constraint ``cls`` declares, by field name."""
    return {f.name: f.metadata["check"] for f in dataclasses.fields(cls) if f.metadata.get("check") is not None}


def check_fields(obj: Any, only: Iterable[str] | None = None) -> None:
    """Apply every constraint declared on ``obj``'s dataclass fields (or on those named ``only``)."""
    names = None if only is None else set(only)
    for f in dataclasses.fields(obj):
        check = f.metadata.get("check")
        if check is not None and (names is None or f.name in names):
            check(f.name, getattr(obj, f.name))
