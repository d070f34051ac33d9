"""Exceptions raised at the edge of the library, each naming what was wrong."""

from __future__ import annotations

from typing import Any, Iterable


class AspTuneError(Exception):
    """Base class for every error asp_tune raises on bad input."""


class ConfigError(AspTuneError, ValueError):
    """A configuration field holds a value that is not allowed."""

    def __init__(self, field: str, value: Any, allowed: str | Iterable[Any]):
        if not isinstance(allowed, str):
            allowed = "one of " + ", ".join(repr(a) for a in allowed)
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid {field}={value!r}: allowed {allowed}")


class DataError(AspTuneError):
    """A data set is missing, unreadable or inconsistent."""
