"""Runs last (files are collected in name order): the test suite left the real home folder as it was."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

import conftest


def _others_sharing_the_home() -> list[str]:
    """asp_tune or Ray processes of this machine that this test session did not start (they may write to
    the real home folder while the suite runs)."""
    import psutil

    me = psutil.Process(os.getpid())
    ours = {me.pid, *(p.pid for p in me.children(recursive=True))}
    found = []
    for proc in psutil.process_iter(["pid", "cmdline"]):
        line = " ".join(proc.info.get("cmdline") or [])
        if proc.info["pid"] not in ours and ("asp_tune" in line or "asp-tune" in line or "ray::" in line
                                             or "raylet" in line or "gcs_server" in line):
            found.append(f"{proc.info['pid']}: {line[:80]}")
    return found


def _difference(before: dict, after: dict) -> list[str]:
    lines = []
    for key in sorted(set(before) | set(after)):
        old, new = before.get(key), after.get(key)
        if key == "names":
            lines += [f"new in home: {n}" for n in sorted(set(new or ()) - set(old or ()))]
            lines += [f"gone from home: {n}" for n in sorted(set(old or ()) - set(new or ()))]
        elif old != new:
            old_files, new_files = dict(old or ()), dict(new or ())
            lines += [f"{'written' if f in old_files else 'created'}: ~/{f}" for f in sorted(new_files)
                      if old_files.get(f) != new_files[f]]
            lines += [f"removed: ~/{f}" for f in sorted(set(old_files) - set(new_files))]
    return lines


def test_the_suite_wrote_nothing_to_the_real_home_folder():
    assert Path.home() != conftest.REAL_HOME  # everything ran with a temporary home
    changed = _difference(conftest.HOME_BEFORE, conftest.home_snapshot(conftest.REAL_HOME))
    if changed:
        others = _others_sharing_the_home()
        if others:
            pytest.skip(f"the real home changed ({'; '.join(changed[:5])}), but other asp_tune or Ray processes "
                        f"share it and may have written it: {'; '.join(others[:3])}")
    assert not changed, "the suite wrote to the real home folder: " + "; ".join(changed)
