"""Helpers of the MCP tests, over the fixtures of conftest.py (relay, homes, daemons): the
real peers (the official filesystem MCP server, the SDK), MCP policies, a tool host daemon
exposing the filesystem server, and what the SDK's answers hold."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from types import SimpleNamespace
from typing import Callable, Dict, List, Optional

from conftest import REPO, Home, Relay, binary

#: Where `scripts/install-peers` puts the official MCP servers (npm).
MCP_PEERS = REPO / "target" / "mcp-peers" / "node_modules" / "@modelcontextprotocol"
FILESYSTEM_SERVER = MCP_PEERS / "server-filesystem" / "dist" / "index.js"

#: The filesystem server's tools the agent may call (`read_text_file,list_*`).
ALLOWED = ["list_allowed_directories", "list_directory", "list_directory_with_sizes", "read_text_file"]


def need_filesystem_server() -> None:
    """Fails (never skips) when the official filesystem server or Node.js is missing."""
    assert FILESYSTEM_SERVER.exists(), f"{FILESYSTEM_SERVER} missing: run scripts/install-peers"
    assert shutil.which("node"), "node missing: run scripts/install-peers"


def files_host(relay: Relay, make_home: Callable[[str], Home], directory: Path) -> SimpleNamespace:
    """A tool host daemon (`tool`, online) exposing the official filesystem server as `files`
    over `directory/docs` (holding `hello.txt`), allowing the agent `read_text_file,list_*`;
    and the agent's home (`agent`, trusting the host as `tool`; no daemon)."""
    need_filesystem_server()
    tool, agent = make_home("tool"), make_home("agent")
    tool.run("trust", "add", "agent", agent.node_id)
    agent.run("trust", "add", "tool", tool.node_id)
    data = directory / "docs"
    data.mkdir()
    (data / "hello.txt").write_text("hello from the tool host\n")
    tool.run("expose", "mcp", "files", "--", "node", str(FILESYSTEM_SERVER), str(data))
    tool.run("mcp", "allow", "agent", "files", "--tools", "read_text_file,list_*")
    tool.up(relay)
    return SimpleNamespace(relay=relay, tool=tool, agent=agent, data=data)


def write_policy(home: Home, service: str, rules: Dict[str, List[str]]) -> None:
    """Writes `home`'s policy: per caller alias, the tools it may call on `service`."""
    lines = []
    for caller, tools in rules.items():
        lines.append(f'[mcp.{service}.allow."{caller}"]')
        lines.append("tools = " + json.dumps(tools))
    (home.path / "policy.toml").write_text("\n".join(lines) + "\n")


def bridge_args(home: Home, target: str) -> List[str]:
    """The arguments of `nullport mcp bridge TARGET` for `home`'s daemon."""
    return ["--home", str(home.path), "mcp", "bridge", target]


def nullport_bin() -> str:
    return binary("nullport")


def open_channels(home: Home) -> int:
    """Channels the daemon of `home` has open now."""
    return len(json.loads(home.run("status", "--json"))["channels"])


def audit_lines(home: Home, *needles: str) -> List[str]:
    """The lines of `home`'s audit log holding every one of `needles`."""
    text = (home.path / "audit.log").read_text()
    return [line for line in text.splitlines() if all(n in line for n in needles)]


def text_of(result) -> str:
    """The text of a CallToolResult."""
    return " ".join(getattr(c, "text", "") for c in result.content)


def error_code(exc: BaseException) -> Optional[int]:
    """The JSON-RPC error code of an SDK exception (MCPError), if it has one."""
    error = getattr(exc, "error", None)
    code = getattr(error, "code", None)
    if code is None:
        code = getattr(exc, "code", None)
    return code
