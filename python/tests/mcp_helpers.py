"""Helpers of the MCP tests: the real peers (the official filesystem MCP server, the SDK),
homes with MCP policies, daemons exposing MCP servers, and the SDK driving `nullport mcp
bridge`. Processes are the real `nullport` and `nullport-relay` binaries."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Dict, List, Optional

REPO = Path(__file__).resolve().parents[2]
#: Where `scripts/install-peers` puts the official MCP servers (npm).
MCP_PEERS = REPO / "target" / "mcp-peers" / "node_modules" / "@modelcontextprotocol"
FILESYSTEM_SERVER = MCP_PEERS / "server-filesystem" / "dist" / "index.js"


def bin_dir() -> Path:
    """The directory with the `nullport` and `nullport-relay` binaries."""
    explicit = os.environ.get("NULLPORT_BIN_DIR")
    if explicit:
        return Path(explicit)
    target = Path(os.environ.get("CARGO_TARGET_DIR", REPO / "target"))
    return target / "debug"


def nullport_bin() -> str:
    return str(bin_dir() / "nullport")


def relay_bin() -> str:
    return str(bin_dir() / "nullport-relay")


def need_filesystem_server() -> None:
    """Fails (never skips) when the official filesystem server or Node.js is missing."""
    assert FILESYSTEM_SERVER.exists(), f"{FILESYSTEM_SERVER} missing: run scripts/install-peers"
    assert shutil.which("node"), "node missing: run scripts/install-peers"


def run(home: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess:
    """Runs `nullport --home HOME ARGS...`."""
    out = subprocess.run(
        [nullport_bin(), "--home", str(home), *args],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    if check:
        assert out.returncode == 0, f"nullport {args} failed: {out.stderr}"
    return out


def free_udp_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Relay:
    """A `nullport-relay run --open` process on loopback."""

    def __init__(self, directory: Path) -> None:
        key = directory / "relay.key"
        init = subprocess.run(
            [relay_bin(), "init", "--key", str(key), "--insecure-plaintext-key"],
            capture_output=True,
            text=True,
            check=True,
        )
        relay_id = init.stdout.strip().split("@")[0]
        port = free_udp_port()
        self.address = f"{relay_id}@127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [relay_bin(), "run", "--key", str(key), "--listen", f"127.0.0.1:{port}", "--open"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    def stop(self) -> None:
        stop(self.process)


def stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def new_home(directory: Path, name: str) -> tuple[Path, str]:
    """A new home with an identity (no passphrase); returns (home, NodeId)."""
    home = directory / name
    node_id = run(home, "init", "--insecure-plaintext-key").stdout.strip()
    assert node_id.startswith("np"), node_id
    return home, node_id


class Daemon:
    """`nullport up` for a home, online."""

    def __init__(self, home: Path, relay: Relay) -> None:
        self.home = home
        self.process = subprocess.Popen(
            [nullport_bin(), "--home", str(home), "up", "--relay", relay.address],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 20
        while True:
            status = run(home, "status", check=False)
            if status.returncode == 0 and "link     online" in status.stdout:
                return
            assert self.process.poll() is None, "daemon exited"
            assert time.monotonic() < deadline, f"daemon not online: {status.stdout} {status.stderr}"
            time.sleep(0.05)

    def kill(self) -> None:
        """Kills the daemon at once (SIGKILL): its channels end without a close."""
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait()

    def stop(self) -> None:
        stop(self.process)


def write_policy(home: Path, service: str, rules: Dict[str, List[str]]) -> None:
    """Writes `home`'s policy: per caller alias, the tools it may call on `service`."""
    lines = []
    for caller, tools in rules.items():
        lines.append(f'[mcp.{service}.allow."{caller}"]')
        lines.append("tools = " + json.dumps(tools))
    (home / "policy.toml").write_text("\n".join(lines) + "\n")


def bridge_command(home: Path, target: str) -> List[str]:
    """The command line of `nullport mcp bridge` for `home`'s daemon."""
    return [nullport_bin(), "--home", str(home), "mcp", "bridge", target]


def python() -> str:
    return sys.executable


def text_of(result) -> str:
    """The text of a CallToolResult."""
    return " ".join(getattr(c, "text", "") for c in result.content)


def error_code(exc: BaseException) -> Optional[int]:
    """The JSON-RPC error code of an SDK exception (McpError/MCPError), if it has one."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code is None:
        code = getattr(exc, "code", None)
    return code


def start_files_host(directory: Path) -> dict:
    """A relay; a tool host daemon (`tool`) exposing the official filesystem server as `files`
    over `docs/` (holding `hello.txt`), allowing the agent `read_text_file,list_*`; the agent's
    home (`agent`, trusting the host as `tool`). Stop `daemon` and `relay` when done."""
    need_filesystem_server()
    relay = Relay(directory)
    tool, tool_id = new_home(directory, "tool")
    agent, agent_id = new_home(directory, "agent")
    run(tool, "trust", "add", "agent", agent_id)
    run(agent, "trust", "add", "tool", tool_id)
    data = directory / "docs"
    data.mkdir()
    (data / "hello.txt").write_text("hello from the tool host\n")
    run(tool, "expose", "mcp", "files", "--", "node", str(FILESYSTEM_SERVER), str(data))
    run(tool, "mcp", "allow", "agent", "files", "--tools", "read_text_file,list_*")
    daemon = Daemon(tool, relay)
    return dict(relay=relay, tool=tool, tool_id=tool_id, agent=agent, agent_id=agent_id, data=data, daemon=daemon)
