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
    """SIGINT or SIGTERM stopped a run; nothing was committed. ``experiment_path``: Ray's experiment, which a
    command with ``--resume`` (or ``search(resume=...)``) can finish."""

    exit_code = 130

    def __init__(self, message: str, experiment_path: str | None = None, text: str | None = None):
        super().__init__(text or (message if experiment_path is None
                                  else f"{message} (Ray's experiment: {experiment_path})"))
        self.message, self.experiment_path, self.text = message, experiment_path, text

    def __reduce__(self):
        return (type(self), (self.message, self.experiment_path, self.text))

    def hinted(self, how: str | None) -> "RunInterrupted":
        """The same interruption (its ``experiment_path`` kept), said with :meth:`resume_hint`."""
        return RunInterrupted(self.message, self.experiment_path, self.resume_hint(how))

    def resume_hint(self, how: str | None) -> str:
        """The message with how to resume (``how``: ``--resume`` or ``resume=``; None: the run cannot be
        resumed, only run again)."""
        if self.experiment_path is None:
            return self.message
        if how is None:
            return (f"{self.message}; run the command again to start over (Ray's experiment is left in "
                    f"{self.experiment_path})")
        path = repr(self.experiment_path) if how.endswith("=") else self.experiment_path
        return f"{self.message}. Resume with {how}{path}"


class UserCodeError(AspTuneError):
    """The user's own code raised (a network's builder, a data loader, the network's first batch): the
    message names the import path, the step and the user's exception; that exception is the cause, so
    its traceback is kept (the command line prints it under this one line). A copy that crossed a
    process (a Ray trial's error) keeps the cause's line and its traceback as text (``cause_traceback``)."""

    exit_code = 1

    def __init__(self, path: Any, step: str, cause: BaseException | str | None = None, hint: str = "",
                 cause_traceback: str = ""):
        import traceback

        self.path, self.step, self.hint = path, step, hint
        if isinstance(cause, BaseException):
            first = str(cause).strip().splitlines()[0] if str(cause).strip() else ""
            self.cause_line = f"{type(cause).__name__}: {first}" if first else type(cause).__name__
            cause_traceback = cause_traceback or "".join(traceback.format_exception(cause))
        else:
            self.cause_line = cause or ""
        self.cause_traceback = cause_traceback
        super().__init__(f"{step} with {path} failed ({self.cause_line}){'; ' + hint if hint else ''}")

    def __reduce__(self):
        return (type(self), (self.path, self.step, self.cause_line, self.hint, self.cause_traceback))
