"""The type stubs match the extension (mypy's stubtest), so editors complete what exists."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest


def test_stubs_match_the_native_module() -> None:
    pytest.importorskip("mypy.stubtest")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "--ignore-disjoint-bases",
            # pyo3's module __all__ (every class): the stub declares the names themselves.
            "--allowlist",
            str(Path(__file__).with_name("stubtest-allowlist.txt")),
            "nullport._native",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert out.returncode == 0, out.stdout + out.stderr
