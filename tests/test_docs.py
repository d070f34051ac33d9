"""The documentation tells the truth: the command reference is the parser's, and links resolve."""

from __future__ import annotations

import re
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def test_the_command_reference_is_generated_from_the_parser():
    from asp_tune.reference import cli_reference

    assert (REPO / "docs" / "cli.md").read_text() == cli_reference(), \
        "docs/cli.md is stale: python -m asp_tune.reference docs/cli.md"


def test_every_relative_link_in_the_readme_and_docs_resolves():
    for page in [REPO / "README.md", *sorted((REPO / "docs").glob("*.md")), REPO / "bench" / "README.md"]:
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name} links to missing {target}"


def test_the_readme_is_a_front_door():
    text = (REPO / "README.md").read_text()
    assert len(text.splitlines()) <= 200
    assert text.index("asp_tune.ProxyData") < text.index("asp-tune hpo")  # the loop API first
