"""The examples in python/examples run, as their docstrings say, against real peers."""

from __future__ import annotations

import re
import signal
import subprocess
import sys

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

import nullport.mcp

from conftest import REPO
from mcp_helpers import bridge_args, error_code, files_host, nullport_bin, text_of

EXAMPLES = REPO / "python" / "examples"


def test_the_remote_files_agent_reads_through_the_firewall(relay, make_home, tmp_path):
    host = files_host(relay, make_home, tmp_path)
    hello = host.data / "hello.txt"
    out = subprocess.run(
        [sys.executable, str(EXAMPLES / "mcp_remote_files.py"), "--home", str(host.agent.path),
         "--relay", relay.address, "tool/files", str(hello)],
        capture_output=True, text=True, timeout=120,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[0] == "tools: list_allowed_directories, list_directory, list_directory_with_sizes, read_text_file"
    assert lines[1] == "hello from the tool host"
    # (The request id is the SDK's.)
    assert re.fullmatch(rf"receipt: call \d+ allowed, signed by {host.tool.node_id}, valid=True", lines[2]), lines[2]
    assert len(lines) == 3, out.stdout


async def test_the_tool_service_serves_its_one_named_caller(relay, make_home):
    notes, planner, other = make_home("notes"), make_home("planner"), make_home("other")
    notes.run("trust", "add", "planner", planner.node_id)
    notes.run("trust", "add", "other", other.node_id)
    notes.run("mcp", "allow", "planner", "notes", "--tools", "add_note,list_notes")
    for home in (planner, other):
        home.run("trust", "add", "notes", notes.node_id)
    service = subprocess.Popen(
        [sys.executable, str(EXAMPLES / "mcp_tool_service.py"), "--home", str(notes.path), "--relay", relay.address],
        stdout=subprocess.PIPE, text=True,
    )
    try:
        assert service.stdout.readline().strip() == f"serving notes as {notes.node_id}"
        planner.up(relay)
        other.up(relay)
        bridge = StdioServerParameters(command=nullport_bin(), args=bridge_args(planner, "notes/notes"))
        with anyio.fail_after(60):
            async with stdio_client(bridge) as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    listed = await session.list_tools()
                    assert sorted(t.name for t in listed.tools) == ["add_note", "list_notes"]
                    assert text_of(await session.call_tool("add_note", {"text": "buy milk"})) == "noted (1 notes)"
                    assert text_of(await session.call_tool("list_notes", {})) == "planner: buy milk"
                    with pytest.raises(Exception) as refused:
                        await session.call_tool("clear_notes", {})
                    assert error_code(refused.value) == nullport.mcp.DENIED
        # Anyone else: the bridge cannot open the service (its dial is refused).
        other_bridge = subprocess.run(
            [nullport_bin(), *bridge_args(other, "notes/notes")],
            input="", capture_output=True, text=True, timeout=60,
        )
        assert other_bridge.returncode != 0 and "not allowed" in other_bridge.stderr, other_bridge.stderr
        service.send_signal(signal.SIGTERM)
        assert service.wait(timeout=30) == 0
        assert service.stdout.read().strip() == "stopped"
    finally:
        if service.poll() is None:
            service.kill()
            service.wait()
