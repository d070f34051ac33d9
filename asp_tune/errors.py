"""Exceptions raised at the edge of the library, each naming what was wrong."""

from __future__ import annotations

from typing import Any, Iterable


class AspTuneError(Exception):
    """Base class for every error asp_tune raises on bad input; the CLI exits with ``exit_code``."""

    exit_code = 2


class ConfigError(AspTuneError, ValueError):
    """A configuration field holds a value that is not allowed."""

    def __init__(self, field: str, value: Any, allowed: str | Iterable[Any]):
        if not isinstance(allowed, str):
            allowed = "one of " + ", ".join(repr(a) for a in allowed)
        self.field = field
        self.value = value
        self.allowed = allowed
        super().__init__(f"invalid {field}={value!r}: allowed {allowed}")

    def __reduce__(self):
        # rebuilt from its fields when it crosses a process boundary (e.g. a failed Ray trial)
        return (type(self), (self.field, self.value, self.allowed))


class DataError(AspTuneError):
    """A data set is missing, unreadable or inconsistent."""


class RunFailed(AspTuneError):
    """A search ran but produced nothing usable (for example every trial failed)."""

    exit_code = 1


class RunInterrupted(AspTuneError):
    """SIGINT or SIGTERM stopped a run; nothing was committed and the run can be resumed."""

    exit_code = 130
