"""The command line's registry of sub-commands and the helpers every command module shares.

A command module (``asp_tune.cli``'s own ``train`` and ``inspect``, ``asp_tune.svp_cli``,
``asp_tune.tune.cli``, ``nas.cli``) registers its flags with :func:`subcommand` and its function with
:func:`command`; :mod:`asp_tune.cli` loads the modules and builds the parser. Nothing here imports a
command module, so the command modules and the parser never import each other.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from typing import Any, Callable, Container

from asp_tune.config import TrainConfig
from asp_tune.flags import add_arguments

Command = Callable[[argparse.Namespace], int]
COMMANDS: dict[str, Command] = {}


@dataclasses.dataclass(frozen=True)
class Subcommand:
    """A sub-command's one-line help and the function that adds its flags (called only when the
    command is run or its help asked for, so the top-level help imports nothing heavy)."""

    help: str
    add_arguments: Callable[[argparse.ArgumentParser], None]


SUBCOMMANDS: dict[str, Subcommand] = {}


def subcommand(name: str, help: str) -> Callable[[Callable[[argparse.ArgumentParser], None]], Any]:
    """Register the flags of sub-command ``name`` (decorates ``add(parser)``)."""
    def register(add: Callable[[argparse.ArgumentParser], None]) -> Callable[[argparse.ArgumentParser], None]:
        SUBCOMMANDS[name] = Subcommand(help, add)
        return add
    return register


def add_train_arguments(p: argparse.ArgumentParser, defaults: TrainConfig | None = None,
                        skip: Container[str] = (), only: Container[str] | None = None,
                        keep_unset: bool = False, helps: dict[str, str] | None = None) -> None:
    """One flag per :class:`TrainConfig` field (see :func:`asp_tune.flags.add_arguments`);
    ``defaults`` replaces the class defaults, e.g. a command's own NAS defaults, and ``helps`` their helps."""
    values = {f.name: getattr(defaults, f.name) for f in dataclasses.fields(TrainConfig)} if defaults else None
    add_arguments(p, TrainConfig, values, skip, only, keep_unset, helps=helps)


def config_from_args(args: argparse.Namespace, base: TrainConfig | None = None) -> TrainConfig:
    """The TrainConfig of parsed flags; fields that have no flag, or whose flag was not given (parsed to None
    where ``base`` holds a value), keep ``base``'s values."""
    base = base or TrainConfig()
    values = {f.name: getattr(base, f.name) for f in dataclasses.fields(TrainConfig)}
    values.update({k: v for k, v in vars(args).items() if k in values and (v is not None or values[k] is None)})
    return TrainConfig.from_dict(values)


def given_fields(args: argparse.Namespace, names: Container[str]) -> dict[str, Any]:
    """Fields among ``names`` whose flag (added with ``keep_unset``) was given on the command line."""
    return {k: v for k, v in vars(args).items() if k in names and v is not None}


def command(name: str) -> Callable[[Command], Command]:
    def register(fn: Command) -> Command:
        COMMANDS[name] = fn
        return fn
    return register


def add_output_flags(p: argparse.ArgumentParser, quiet: bool = True) -> None:
    """``--out`` and ``--overwrite`` (see :func:`results_folder`), and ``--quiet`` for the progress bars."""
    p.add_argument("--out", required=True, help="results folder (must be new or empty, see --overwrite)")
    p.add_argument("--overwrite", action="store_true",
                   help="replace --out when the run succeeds (only an asp_tune results folder)")
    if quiet:
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def add_trust_flag(p: argparse.ArgumentParser) -> None:
    """``--trust-code MODULE``: the modules whose import paths a results folder or model file may name."""
    p.add_argument("--trust-code", action="append", default=[], metavar="MODULE",
                   help="a module (or package) of your own whose import paths a results folder or model.pt may "
                        "name; anything else they name that is not registered is refused before it is imported "
                        "(repeat for several)")


def trusted_code(args: argparse.Namespace) -> tuple[str, ...]:
    """The modules ``--trust-code`` names (checked to be module names)."""
    from asp_tune.errors import ConfigError

    names = tuple(getattr(args, "trust_code", None) or ())
    for name in names:
        if not all(part.isidentifier() for part in name.split(".")):
            raise ConfigError("trust_code", name, "a module name such as my_models or my_package.models")
    return names


def results_folder(args: argparse.Namespace):
    """The run's results folder (``--out``, ``--overwrite``): committed only when the run succeeds."""
    from asp_tune.run_dir import RunDirectory

    return RunDirectory(args.out, overwrite=args.overwrite)


def announce_proxy_model(config: TrainConfig, command: str = "asp-tune") -> None:
    """Say that a static proxy's scoring model is trained (or read from the cache) before training."""
    from asp_tune.strategies import make_strategy

    if make_strategy(config.metric, config).needs_scores:
        from asp_tune.proxy_scores import cache_dir, proxy_train_config

        proxy = proxy_train_config(config)
        epochs = f"{proxy.epochs} epoch{'s' if proxy.epochs != 1 else ''}"
        print(f"[{command}] '{config.metric}' will score samples with {proxy.model}, trained first for {epochs} "
              f"on all data (once; cached in {cache_dir()})", file=sys.stderr)
