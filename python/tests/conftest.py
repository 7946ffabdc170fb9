"""Fixtures of the nullport Python tests: real processes (a ``nullport-relay``, ``nullport``
homes and daemons from the cargo target directory) and embedded nodes.

The binaries are found in ``$NULLPORT_BIN_DIR``, else ``$CARGO_TARGET_DIR/debug``, else
``target/debug`` of the repository (``scripts/python-test`` builds them first). Under
``CI=true`` a skipped test counts as a failure: a test that cannot run is not a pass.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Callable, Dict, Iterator, List, Optional, Sequence

import pytest

import nullport

REPO = Path(__file__).resolve().parents[2]


def bin_dir() -> Path:
    """Where the ``nullport`` and ``nullport-relay`` binaries are."""
    if os.environ.get("NULLPORT_BIN_DIR"):
        return Path(os.environ["NULLPORT_BIN_DIR"])
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    if not target.is_absolute():
        target = REPO / target
    return target / "debug"


def binary(name: str) -> str:
    path = bin_dir() / name
    if not path.is_file():
        pytest.fail(
            f"{path} not found: build it with `cargo build -p nullport -p nullport-relay` "
            "(or set NULLPORT_BIN_DIR)"
        )
    return str(path)


# Skips are failures under CI=true, and listed as NOT RUN by scripts/test.
@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item, call):  # type: ignore[no-untyped-def]
    outcome = yield
    report = outcome.get_result()
    if report.skipped and not hasattr(report, "wasxfail") and os.environ.get("NULLPORT_SKIP_LOG"):
        # scripts/test lists these as NOT RUN (and fails).
        with open(os.environ["NULLPORT_SKIP_LOG"], "a") as log:
            log.write(f"python {report.nodeid}: {report.longrepr}\n")
    if report.skipped and os.environ.get("CI") == "true" and not hasattr(report, "wasxfail"):
        report.outcome = "failed"
        report.longrepr = f"skipped under CI=true (a test that cannot run fails): {report.longrepr}"


class Relay:
    """A ``nullport-relay`` process on loopback."""

    def __init__(self, workdir: Path, extra: Sequence[str] = ("--open",)) -> None:
        self.key = workdir / "relay.key"
        subprocess.run(
            [binary("nullport-relay"), "init", "--key", str(self.key), "--insecure-plaintext-key"],
            check=True,
            capture_output=True,
        )
        self.node_id = subprocess.run(
            [binary("nullport-relay"), "id", "--key", str(self.key)],
            check=True,
            capture_output=True,
            text=True,
        ).stdout.split()[0]
        self.log = open(workdir / "relay.log", "w+")
        self.process = subprocess.Popen(
            [
                binary("nullport-relay"),
                "run",
                "--key",
                str(self.key),
                "--listen",
                "127.0.0.1:0",
                "--dials-per-second",
                "100000",
                *extra,
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        self.port = self._wait_port()
        self.address = f"{self.node_id}@127.0.0.1:{self.port}"

    def _wait_port(self) -> int:
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            self.log.seek(0)
            found = re.search(r"listening on udp 127\.0\.0\.1:(\d+)", self.log.read())
            if found:
                return int(found.group(1))
            if self.process.poll() is not None:
                break
            time.sleep(0.02)
        self.log.seek(0)
        raise RuntimeError(f"relay did not start: {self.log.read()}")

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.log.close()


@pytest.fixture(scope="session")
def workdir() -> Iterator[Path]:
    """A temporary directory for the whole session (relay keys, homes)."""
    with tempfile.TemporaryDirectory(prefix="nullport-py-") as d:
        yield Path(d)


@pytest.fixture(scope="session")
def relay(workdir: Path) -> Iterator[Relay]:
    """An open relay (admits any key) shared by the session's tests."""
    d = workdir / "relay"
    d.mkdir()
    r = Relay(d)
    yield r
    r.stop()


@pytest.fixture
def start_relay(tmp_path: Path) -> Iterator[Callable[..., Relay]]:
    """Starts a relay of the test's own with extra arguments (e.g. ``--allow FILE``)."""
    started: List[Relay] = []

    def start(*extra: str) -> Relay:
        d = tmp_path / f"relay{len(started)}"
        d.mkdir()
        r = Relay(d, extra)
        started.append(r)
        return r

    yield start
    for r in started:
        r.stop()


def run_nullport(home: Path, *args: str, env: Optional[Dict[str, str]] = None, check: bool = True) -> str:
    """Runs ``nullport --home HOME ARGS...``; returns its stdout."""
    out = subprocess.run(
        [binary("nullport"), "--home", str(home), *args],
        capture_output=True,
        text=True,
        env={**os.environ, **(env or {})},
        stdin=subprocess.DEVNULL,
        timeout=60,
    )
    if check and out.returncode != 0:
        raise AssertionError(f"nullport {' '.join(args)} failed: {out.stdout}{out.stderr}")
    return out.stdout


class Home:
    """A nullport home made by ``nullport init``; ``up()`` runs its daemon."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.node_id = run_nullport(path, "init", "--insecure-plaintext-key").strip().split()[0]
        self.daemon: Optional[subprocess.Popen] = None  # type: ignore[type-arg]

    def run(self, *args: str, **kw) -> str:  # type: ignore[no-untyped-def]
        return run_nullport(self.path, *args, **kw)

    def up(self, relay: Relay) -> None:
        """Starts ``nullport up`` and waits until its relay link is online."""
        self.log = open(self.path.parent / f"{self.path.name}-daemon.log", "w+")
        self.daemon = subprocess.Popen(
            [binary("nullport"), "--home", str(self.path), "up", "--relay", relay.address],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            status = run_nullport(self.path, "status", check=False)
            if "link     online" in status:
                return
            if self.daemon.poll() is not None:
                break
            time.sleep(0.05)
        self.log.seek(0)
        raise RuntimeError(f"daemon not online: {self.log.read()}")

    def stop(self) -> None:
        if self.daemon is not None and self.daemon.poll() is None:
            self.daemon.terminate()
            try:
                self.daemon.wait(10)
            except subprocess.TimeoutExpired:
                self.daemon.kill()
                self.daemon.wait()
            self.log.close()


@pytest.fixture
def make_home(tmp_path: Path) -> Iterator[Callable[[str], Home]]:
    """Makes nullport homes (``nullport init``); their daemons stop after the test."""
    homes: List[Home] = []

    def make(name: str) -> Home:
        home = Home(tmp_path / name)
        homes.append(home)
        return home

    yield make
    for home in homes:
        home.stop()


@pytest.fixture
def identity() -> nullport.Identity:
    """A fresh identity."""
    return nullport.Identity.generate()


@pytest.fixture
async def start_node(relay: Relay):  # type: ignore[no-untyped-def]
    """Starts embedded nodes on the session's relay (``await start_node()``); closes them
    after the test."""
    nodes: List[nullport.Node] = []

    async def start(identity: Optional[nullport.Identity] = None, **kw) -> nullport.Node:  # type: ignore[no-untyped-def]
        node = await nullport.Node.start(identity or nullport.Identity.generate(), relay.address, **kw)
        nodes.append(node)
        return node

    yield start
    for node in nodes:
        await node.close()


def require_tool(name: str) -> str:
    """The path of a tool the test needs (a test that cannot find it is skipped: a failure
    under CI=true)."""
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed")
    return path
