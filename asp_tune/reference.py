"""The command reference (``docs/cli.md``), generated from the same parser as ``--help``.

    python -m asp_tune.reference docs/cli.md       # rewrite it; tests/test_docs.py checks it is current
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

WIDTH = 100


def cli_reference() -> str:
    """Every sub-command's ``--help``, in the order the parser lists them."""
    os.environ["COLUMNS"] = str(WIDTH)  # argparse wraps to the terminal: fixed, so the text is reproducible
    from asp_tune.cli import SUBCOMMANDS, build_parser, load_extensions

    load_extensions()
    parts = ["# Command reference", "",
             "Generated from the parser that answers `--help` (`python -m asp_tune.reference docs/cli.md`); every",
             "flag is one field of a settings dataclass (`TrainConfig`, `ProxySettings`, `HpoSettings`, `NasSettings`, ...).",
             ""]
    top = build_parser(None)
    parts += ["## asp-tune", "", "```", top.format_help().rstrip(), "```", ""]
    for name in SUBCOMMANDS:
        parser = build_parser(name)
        action = next(a for a in parser._actions if a.dest == "command")  # noqa: SLF001 - argparse has no API
        parts += [f"## asp-tune {name}", "", "```", action.choices[name].format_help().rstrip(), "```", ""]
    return "\n".join(parts)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv and (argv[0].startswith("-") or len(argv) > 1):
        asked = argv[0] in ("-h", "--help")
        print("usage: python -m asp_tune.reference [FILE]   (the reference of every command, to FILE or stdout)",
              file=sys.stdout if asked else sys.stderr)
        return 0 if asked else 2
    text = cli_reference()
    if argv:
        Path(argv[0]).write_text(text)
    else:
        print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
