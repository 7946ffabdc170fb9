"""The type stubs match the extension (mypy's stubtest), so editors complete what exists."""

from __future__ import annotations

import subprocess
import sys

import pytest


def test_stubs_match_the_native_module() -> None:
    """Every class, method, argument and default of `nullport._native` is in the stub as it
    is at runtime. (Classes not marked `@final` in the stub are tolerated: it only tells
    type checkers what pyo3 already enforces.)"""
    pytest.importorskip("mypy.stubtest")
    out = subprocess.run(
        [
            sys.executable,
            "-m",
            "mypy.stubtest",
            "--concise",
            "--ignore-disjoint-bases",
            "nullport._native",
        ],
        capture_output=True,
        text=True,
        timeout=600,
    )
    errors = [
        line
        for line in out.stdout.splitlines()
        if line.strip() and "isn't marked with @final in the stub" not in line
    ]
    assert out.returncode in (0, 1) and not out.stderr.strip(), out.stdout + out.stderr
    assert errors == [], "\n".join(errors)
