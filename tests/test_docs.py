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


def test_every_asp_tune_name_the_docs_use_resolves_after_a_bare_import_asp_tune():
    """The README's blocks begin with ``import asp_tune`` and then call ``asp_tune.tune.search`` and
    ``asp_tune.trainer.load_model``: submodules are imported on first use, as names are."""
    import subprocess
    import sys

    pages = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    blocks = [b for page in pages for b in re.findall(r"```python\n(.*?)```", page.read_text(), re.S)]
    used = sorted({m for block in blocks for m in re.findall(r"(?<![.\w])asp_tune(?:\.[A-Za-z_]\w*)+", block)})
    assert "asp_tune.tune.search" in used and "asp_tune.trainer.load_model" in used
    code = ("import sys, asp_tune\nassert 'ray' not in sys.modules and 'torch' not in sys.modules\nmissing = []\n"
            "for path in sys.argv[1:]:\n    obj = asp_tune\n    try:\n"
            "        for part in path.split('.')[1:]:\n            obj = getattr(obj, part)\n"
            "    except AttributeError as e:\n        missing.append(f'{path}: {e}')\nprint(missing)")
    out = subprocess.run([sys.executable, "-c", code, *used], capture_output=True, text=True, cwd=REPO)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == "[]"


def test_a_submodule_is_an_attribute_on_first_use_and_a_name_that_is_none_stays_an_attribute_error():
    import asp_tune

    assert "tune" in dir(asp_tune) and "trainer" in dir(asp_tune)  # listed before they are imported
    for name in ("nope", "nope.x", "py.typed", "_private", "tune.nope"):  # getattr with a default keeps its contract
        assert getattr(asp_tune, name, None) is None


def test_the_reference_s_help_writes_no_file_named_after_it(tmp_path, monkeypatch, capsys):
    from asp_tune.reference import main

    monkeypatch.chdir(tmp_path)
    assert main(["--help"]) == 0
    assert list(tmp_path.iterdir()) == [] and "usage: python -m asp_tune.reference [FILE]" in capsys.readouterr().out
    assert main(["a.md", "b.md"]) == 2 and "usage:" in capsys.readouterr().err
