"""Runs last (files are collected in name order): the test suite left the real home folder as it was."""

from __future__ import annotations

from pathlib import Path

import conftest


def test_the_suite_wrote_nothing_to_the_real_home_folder():
    assert Path.home() != conftest.REAL_HOME  # everything ran with a temporary home
    assert conftest.home_snapshot(conftest.REAL_HOME) == conftest.HOME_BEFORE
