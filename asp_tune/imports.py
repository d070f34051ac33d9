"""Names that may be import paths: ``package.module:attribute`` wherever a model, data set or
strategy name is accepted, beside the registered names; and the user modules such paths (and
registrations made in the driver) need on Ray's workers.
"""

from __future__ import annotations

import importlib
import os
import sys
import sysconfig
from pathlib import Path
from types import ModuleType
from typing import Any, Iterable

from asp_tune.errors import ConfigError


def is_import_path(name: Any) -> bool:
    """``package.module:attribute`` (a colon between two non-empty parts, no path separators)."""
    if not isinstance(name, str) or name.count(":") != 1 or "/" in name or "\\" in name:
        return False
    module, attribute = name.split(":")
    return bool(module) and bool(attribute) and all(part.isidentifier() for part in module.split(".")) \
        and all(part.isidentifier() for part in attribute.split("."))


def import_object(path: str, field: str = "name") -> Any:
    """The object ``package.module:attribute`` names; a named :class:`ConfigError` when it cannot be
    imported (the module's own error, first line, is in the message)."""
    module_name, _, attribute = path.partition(":")
    try:
        obj: Any = importlib.import_module(module_name)
        for part in attribute.split("."):
            obj = getattr(obj, part)
    except Exception as exc:  # noqa: BLE001 - any failure to import is the same user error
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise ConfigError(field, path, f"an importable 'package.module:attribute' ({type(exc).__name__}: "
                                       f"{first})") from None
    return obj


def resolve(registry: Any, name: Any, field: str) -> Any:
    """A registered entry by name, or the object an import path names; else a named error listing
    the registered names."""
    if isinstance(name, str) and name in registry:
        return registry[name]
    if is_import_path(name):
        return import_object(name, field)
    raise ConfigError(field, name, f"one of {', '.join(repr(n) for n in sorted(registry))}, "
                                   "or an import path 'package.module:attribute'")


def trusted_module(module: str, trust: Iterable[str]) -> bool:
    """Whether ``module`` is one of ``trust`` or inside one of those packages."""
    return any(module == t or module.startswith(t + ".") for t in trust)


def check_trusted(registry: Any, name: Any, field: str, trust: Iterable[str], source: str) -> None:
    """Refuse, before anything is imported, a name ``source`` (a file the user may not have written: a
    model file, a results folder) holds that is neither registered (the package's own names, installed
    packages' entry points, this process's registrations) nor an import path into a module the user
    trusts (``trust``: module or package names the user gave in the call or on the command line)."""
    if isinstance(name, str) and name in registry:
        return
    module = name.partition(":")[0] if is_import_path(name) else None
    if module is not None and trusted_module(module, tuple(trust)):
        return
    how = (f"trust=['{module}'] in Python, --trust-code {module} on the command line" if module
           else "a registered name")
    raise ConfigError(field, name, f"a registered name ({', '.join(sorted(registry)) or 'none'}) or an import path "
                                   f"into a module you trust: {source} names it, and reading a file imports and "
                                   f"calls nothing you did not allow ({how}, only for code you wrote)")


def check_name(registry: Any, name: Any, field: str) -> None:
    """Validate a name at the edge: registered (nothing is imported), or an import path that imports."""
    if isinstance(name, str) and name in registry:
        return
    resolve(registry, name, field)


def _installed(path: Path) -> bool:
    roots = {Path(p).resolve() for key in ("purelib", "platlib", "stdlib") if (p := sysconfig.get_paths().get(key))}
    return any(root in path.parents for root in roots)


def user_modules(objects: Iterable[Any]) -> list[ModuleType]:
    """The top-level modules (single files or package folders) that define ``objects`` (import
    paths, or the objects themselves) and are not installed packages: what Ray's workers need sent
    (``runtime_env={"py_modules": ...}``) to import them. asp_tune's own modules are never sent."""
    found: dict[str, ModuleType] = {}
    for obj in objects:
        if is_import_path(obj):
            name = obj.partition(":")[0]
        else:
            name = getattr(obj, "__module__", None) or ""
        top = name.split(".")[0]
        if not top or top in ("asp_tune", "nas", "__main__", "builtins") or top in sys.builtin_module_names:
            continue
        module = sys.modules.get(top) or importlib.import_module(top)
        file = getattr(module, "__file__", None)
        if file is None or _installed(Path(file).resolve()):
            continue
        found[top] = module
    return list(found.values())


def search_paths(modules: Iterable[ModuleType]) -> list[str]:
    """The folders to put on ``sys.path`` so that ``modules`` import as they do here."""
    paths = []
    for module in modules:
        file = Path(module.__file__).resolve()
        folder = file.parent.parent if file.name == "__init__.py" else file.parent
        if str(folder) not in paths:
            paths.append(str(folder))
    return paths


def add_code_folder(folder: str | Path) -> None:
    """Let import paths resolve from ``folder`` (a space YAML's, where the user's code sits beside it) before
    the current folder and after installed packages: inserted just before the current folder's entry, or
    appended."""
    folder = str(Path(folder).resolve())
    if folder in sys.path:
        return
    here = [i for i, p in enumerate(sys.path) if p in ("", os.getcwd())]
    sys.path.insert(here[0], folder) if here else sys.path.append(folder)


def own_folder(path: str) -> bool:
    """Whether ``path`` is a folder this user owns that no one else may write to (a place to import from)."""
    import os
    import stat

    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return False
    mine = not hasattr(os, "getuid") or info.st_uid == os.getuid()
    return stat.S_ISDIR(info.st_mode) and mine and not info.st_mode & (stat.S_IWGRP | stat.S_IWOTH)


def add_search_paths(paths: Iterable[str]) -> None:
    """Put the folders that exist here on ``sys.path`` as the driver has them (:func:`add_code_folder`: before
    the current folder, a Ray worker's first entry), so that a worker on the driver's machine imports the
    user's modules the driver imported, not a file of the same name in the folder the command runs in."""
    for path in paths:
        if Path(path).is_dir():
            add_code_folder(path)


def by_reference(entry: Any) -> Any:
    """An importable object as its ``module:qualname`` path (looked up lazily where it is used), so a
    registration travels without importing the user's module first; others (``__main__``) as they are."""
    module, qualname = getattr(entry, "__module__", None), getattr(entry, "__qualname__", None)
    if isinstance(entry, str) or not module or not qualname or module == "__main__" or "<" in qualname:
        return entry
    try:
        if import_object(f"{module}:{qualname}") is entry:
            return f"{module}:{qualname}"
    except ConfigError:
        pass
    return entry
