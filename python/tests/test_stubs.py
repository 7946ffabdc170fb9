"""The type stubs match the extension (mypy's stubtest), so editors complete what exists."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_stubs_match_the_native_module() -> None:
    pytest.importorskip("mypy.stubtest")
    out = subprocess.run(
        [sys.executable, "-m", "mypy.stubtest", "--ignore-disjoint-bases", "nullport._native"],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
