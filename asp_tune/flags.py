"""Command-line flags generated from dataclass fields: one default, one help text, one flag per field.

A settings dataclass declares each field with :func:`option` (its default, help, group and
allowed values); :func:`add_arguments` turns the fields into argparse flags and
:func:`values_from_args` reads them back, so a flag can never disagree with the field it sets.
"""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any, Callable, Container, Mapping

_MISSING = dataclasses.MISSING


def option(default: Any = _MISSING, help: str = "", group: str = "", choices: Any = None, *,
           default_factory: Any = _MISSING, flag: bool = True, kind: Callable[[str], Any] | None = None,
           aliases: tuple[str, ...] = (), check: Callable[[str, Any], None] | None = None,
           name: str | None = None, imports: bool = False, pattern: str | None = None) -> Any:
    """A dataclass field with what its flag needs.

    ``choices`` (and ``help``): a value, or a callable returning one (a registry filled later). ``flag=False``:
    no flag (a nested settings object, say). ``kind``: the argparse type, when the annotation's is
    not wanted. ``name``: the flag's option string (default ``--field-name``); ``aliases``: more option
    strings for the same flag. ``check``: the field's declared constraint (:mod:`asp_tune.constraints`),
    applied by :func:`asp_tune.constraints.check_fields`. ``imports``: the value may also be an import path
    ``package.module:NAME`` (the help says so beside the choices). ``pattern``: another form the value may take,
    shown beside the choices (``steps:E=R,...``).
    """
    metadata = {"help": help, "group": group, "choices": choices, "flag": flag, "kind": kind, "aliases": aliases,
                "check": check, "name": name, "imports": imports, "pattern": pattern}
    if default_factory is not _MISSING:
        return dataclasses.field(default_factory=default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def reuse(cls: type, field: str, **changes: Any) -> Any:
    """The declaration of ``cls``'s field ``field`` (help, group, choices, flag names and constraint) for
    another settings class, with ``changes`` (``default``, ``help``, ``group``...) on top: one source for
    a setting that several settings classes hold."""
    source = next(f for f in dataclasses.fields(cls) if f.name == field)
    metadata = {**source.metadata, **{k: v for k, v in changes.items() if k != "default"}}
    default = changes.get("default", source.default)
    if "default" not in changes and source.default_factory is not _MISSING:
        return dataclasses.field(default_factory=source.default_factory, metadata=metadata)
    return dataclasses.field(default=default, metadata=metadata)


def parse_bool(text: str) -> bool:
    """``true/false``, ``yes/no``, ``on/off``, ``1/0`` (an argparse type)."""
    low = text.lower()
    if low in ("1", "true", "yes", "on"):
        return True
    if low in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true/false, got {text!r}")


def parse_seeds(text: str) -> list[int]:
    """Comma-separated integers in plain decimal digits, e.g. ``1,2,3`` (an argparse type;
    :func:`asp_tune.constraints.check_seeds` checks them); ``1_0``, an empty item or other digits than 0-9 are
    refused."""
    parts = [s.strip() for s in text.split(",")]
    if not all(p.lstrip("-").isascii() and p.lstrip("-").isdigit() and p.count("-") <= 1 for p in parts):
        raise argparse.ArgumentTypeError(f"expected comma-separated integers, got {text!r}")
    return [int(p) for p in parts]


def optional(kind: type, none_words: tuple[str, ...] = ("none", "all", "")) -> Callable[[str], Any]:
    """An argparse type reading ``kind``, or None for any of ``none_words``."""
    def parse(text: str) -> Any:
        if text.lower() in none_words:
            return None
        try:
            return kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"expected {kind.__name__} or {none_words[0]}, got {text!r}") from None
    parse.__name__ = f"optional {kind.__name__}"
    return parse


def json_object(text: str) -> dict[str, Any]:
    """A JSON object (an argparse type), e.g. ``'{"hidden": 64}'``."""
    import json

    try:
        value = json.loads(text)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r} ({exc})") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError(f"expected a JSON object, got {text!r}")
    return value


def float_list(text: str) -> tuple[float, ...]:
    """Comma-separated numbers (an argparse type)."""
    try:
        return tuple(float(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected comma-separated numbers, got {text!r}") from None


#: A field's annotation -> the argparse type that reads it.
FLAG_TYPES: dict[str, Callable[[str], Any]] = {
    "str": str, "int": int, "float": float, "bool": parse_bool, "str | None": optional(str),
    "int | None": optional(int), "float | None": optional(float), "tuple[float, ...]": float_list,
    "tuple[float, ...] | None": optional(float_list), "dict[str, Any]": json_object,
}


def json_text(value: Any) -> str:
    import json

    return json.dumps(value)


def flag_name(field: str) -> str:
    return "--" + field.replace("_", "-")


def both_spellings(field: str, value: Any = True) -> str:
    """How a message names a setting for readers of the Python API and of the command line alike:
    ``min_first_rung_steps=0 or --min-first-rung-steps 0`` (``value=True``: a switch, ``--resume-unsigned``); a
    value no flag takes (None, a list, ``False``) only as the API's."""
    if isinstance(value, bool):
        return f"{field}={value!r}" + (f" or {flag_name(field)}" if value else "")
    if not isinstance(value, (int, float, str)):
        return f"{field}={value!r}"
    return f"{field}={value!r} or {flag_name(field)} {value}"


def field_choices(f: dataclasses.Field) -> tuple | None:
    choices = f.metadata.get("choices")
    return tuple(choices()) if callable(choices) else choices


def field_help(f: dataclasses.Field) -> str:
    text = f.metadata.get("help", "")
    return text() if callable(text) else text


def flag_fields(cls: type) -> list[dataclasses.Field]:
    """The fields of ``cls`` that have a flag."""
    return [f for f in dataclasses.fields(cls) if f.metadata.get("flag", False)]


def field_default(f: dataclasses.Field) -> Any:
    if f.default is not _MISSING:
        return f.default
    if f.default_factory is not _MISSING:
        return f.default_factory()
    return None


def add_arguments(p: argparse.ArgumentParser | Any, cls: type, defaults: Mapping[str, Any] | None = None,
                  skip: Container[str] = (), only: Container[str] | None = None, keep_unset: bool = False,
                  group: str | None = None, helps: Mapping[str, str] | None = None) -> None:
    """One flag per flagged field of ``cls``: its type, help, choices and default.

    ``defaults`` overrides field defaults (a command's own defaults, given once), ``helps`` field helps (a
    command where a setting means more, declared once there); ``skip`` / ``only``
    choose fields. With ``keep_unset`` a flag not given parses to None, so the caller can tell "not
    given" from "given the default". Fields go into argument groups named by their ``group``
    (or all into ``group`` when given).
    """
    defaults = defaults or {}
    groups: dict[str, Any] = {}
    for f in flag_fields(cls):
        if f.name in skip or (only is not None and f.name not in only):
            continue
        default = defaults.get(f.name, field_default(f))
        choices = field_choices(f)
        shown = ",".join(str(v) for v in default) if isinstance(default, tuple) else \
            (json_text(default) if isinstance(default, dict) else default)
        title = group or f.metadata.get("group") or ""
        if title not in groups:
            groups[title] = p.add_argument_group(title) if title else p
        kind = f.metadata.get("kind") or FLAG_TYPES[str(f.type)]
        bare = {"nargs": "?", "const": True} if kind is parse_bool else {}  # ``--flag`` alone: true
        groups[title].add_argument(
            f.metadata.get("name") or flag_name(f.name), *f.metadata.get("aliases", ()), type=kind, **bare,
            default=None if keep_unset else default,
            metavar=f.name.upper() if not choices else "{" + ",".join(map(str, choices)) + "}" + (
                "|MODULE:NAME" if f.metadata.get("imports") else "") + (
                f"|{f.metadata['pattern']}" if f.metadata.get("pattern") else ""),
            help=f"{(helps or {}).get(f.name) or field_help(f)} [default: {shown}]".replace("%", "%%"), dest=f.name)


def values_from_args(args: argparse.Namespace, cls: type, skip: Container[str] = ()) -> dict[str, Any]:
    """The parsed values of ``cls``'s flagged fields (those the parser has)."""
    given = vars(args)
    return {f.name: given[f.name] for f in flag_fields(cls) if f.name in given and f.name not in skip}
