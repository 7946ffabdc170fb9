"""`nullport.mcp.connect` with the official SDK's ClientSession, against a daemon exposing the
official filesystem MCP server behind its firewall (real relay, daemon, MCP server)."""

from __future__ import annotations

import asyncio
import dataclasses
import json

import anyio
import pytest
from mcp import ClientSession

import nullport
import nullport.mcp
from nullport import _native

from mcp_helpers import error_code, new_home, run, start_files_host, text_of

ALLOWED = ["list_allowed_directories", "list_directory", "list_directory_with_sizes", "read_text_file"]


@pytest.fixture
def files_host(tmp_path):
    host = start_files_host(tmp_path)
    yield host
    host["daemon"].stop()
    host["relay"].stop()


def open_channels(home) -> int:
    """Channels the daemon of `home` has open now."""
    return len(json.loads(run(home, "status", "--json").stdout)["channels"])


async def agent_node(host):
    identity = nullport.Identity.from_home(str(host["agent"]))
    return await nullport.Node.start(identity, host["relay"].address)


async def test_the_sdk_sees_only_allowed_tools_and_the_firewall_refuses_the_rest(files_host):
    hello = str(files_host["data"] / "hello.txt")
    sneaky = files_host["data"] / "written-by-agent.txt"
    async with await agent_node(files_host) as node:
        async with nullport.mcp.connect(node, "tool/files") as streams:
            read, write = streams
            async with ClientSession(read, write) as session:
                init = await session.initialize()
                assert init.server_info.name == "secure-filesystem-server"
                tools = await session.list_tools()
                assert sorted(t.name for t in tools.tools) == ALLOWED
                result = await session.call_tool("read_text_file", {"path": hello})
                assert not result.is_error
                assert "hello from the tool host" in text_of(result)
                with pytest.raises(Exception) as refused:
                    await session.call_tool("write_file", {"path": str(sneaky), "content": "pwned"})
                assert error_code(refused.value) == nullport.mcp.DENIED == -32001
                assert "agent" in str(refused.value), "the refusal names the rule"
            receipts = streams.receipts
    assert not sneaky.exists(), "the forbidden write reached the server"
    # One receipt per call, each checked by the Rust caller side and signed by the host.
    assert [r.decision for r in receipts] == ["allowed", "denied"]
    for r in receipts:
        assert r.valid and r.signature_valid()
        assert r.callee == files_host["tool_id"] and r.caller == files_host["agent_id"]
    # A receipt altered after the fact no longer verifies.
    body = json.loads(receipts[1].json)
    body["decision"] = "allowed"
    forged = dataclasses.replace(receipts[1], json=json.dumps(body))
    assert not forged.signature_valid()
    # The host checked every request signature, and the caller's home logged the receipts.
    host_audit = (files_host["tool"] / "audit.log").read_text()
    assert '"event":"request-signature"' in host_audit and '"valid":false' not in host_audit
    agent_audit = (files_host["agent"] / "audit.log").read_text()
    received = [line for line in agent_audit.splitlines() if '"role":"received"' in line]
    assert len(received) == 2 and all('"valid":true' in line for line in received)


async def test_a_stranger_is_refused_and_a_bad_target_is_an_address_error(files_host, tmp_path):
    stranger_home, _ = new_home(tmp_path, "stranger")
    identity = nullport.Identity.from_home(str(stranger_home))
    async with await nullport.Node.start(identity, files_host["relay"].address) as node:
        with pytest.raises(nullport.NotAllowed, match="not allowed"):
            async with nullport.mcp.connect(node, f"{files_host['tool_id']}/files"):
                pass
        with pytest.raises(nullport.InvalidAddress):
            async with nullport.mcp.connect(node, "no-service-here"):
                pass


async def test_a_lost_peer_fails_the_pending_request_instead_of_hanging(files_host):
    async with await agent_node(files_host) as node:
        async with nullport.mcp.connect(node, "tool/files") as (read, write):
            async with ClientSession(read, write) as session:
                await session.initialize()
                files_host["daemon"].kill()
                # Sent to a host that is gone: the channel ends (the relay gives up on the
                # dead link), and the waiting request gets the channel's end as its error.
                with anyio.fail_after(120):
                    with pytest.raises(Exception) as lost:
                        await session.list_tools()
                assert error_code(lost.value) == nullport.mcp.CHANNEL_ENDED == -32003
                assert str(lost.value).startswith("nullport: ")


@pytest.mark.parametrize("order", ["client-first", "peer-first", "cancelled", "raised"])
async def test_shutdown_is_bounded_whatever_closes_first(files_host, order):
    """Nested transports (two sessions, one inside the other, and their ClientSessions)
    closed by the client, by the peer, by a cancellation from outside, or by an exception."""
    async with await agent_node(files_host) as node:
        ready = anyio.Event()

        async def sessions():
            async with nullport.mcp.connect(node, "tool/files") as (r1, w1):
                async with ClientSession(r1, w1) as outer:
                    await outer.initialize()
                    async with nullport.mcp.connect(node, "tool/files") as (r2, w2):
                        async with ClientSession(r2, w2) as inner:
                            await inner.initialize()
                            if order != "peer-first":
                                assert open_channels(files_host["tool"]) == 2
                            ready.set()
                            if order == "peer-first":
                                files_host["daemon"].stop()
                                # The host closed both sessions: a request gets an error,
                                # never waits (the channel's end if it was still in flight,
                                # else the SDK's own "connection closed", -32000).
                                with pytest.raises(Exception) as ended:
                                    await inner.list_tools()
                                assert error_code(ended.value) in (nullport.mcp.CHANNEL_ENDED, -32000)
                            elif order == "cancelled":
                                await anyio.sleep_forever()
                            elif order == "raised":
                                raise LookupError("the agent gave up")

        with anyio.fail_after(30):
            if order == "cancelled":
                async with anyio.create_task_group() as tg:
                    tg.start_soon(sessions)
                    await ready.wait()
                    tg.cancel_scope.cancel()
            elif order == "raised":
                with pytest.raises(BaseException) as raised:
                    await sessions()
                assert "the agent gave up" in repr(raised.value)
            else:
                await sessions()
        # The host saw both sessions end (its channels are closed), unless it is gone.
        if order != "peer-first":
            with anyio.fail_after(10):
                while open_channels(files_host["tool"]):
                    await anyio.sleep(0.05)


async def test_cancelling_a_read_drops_the_rust_future_and_loses_nothing(files_host):
    async with await agent_node(files_host) as node:
        link = await _native.mcp_connect(node, "tool", "files", False)
        waiting = asyncio.ensure_future(link.recv())
        await asyncio.sleep(0.2)
        waiting.cancel()
        with pytest.raises(asyncio.CancelledError):
            await waiting
        request = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "initialize",
            "params": {"protocolVersion": "2025-06-18", "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}},
        }
        await link.send(json.dumps(request).encode())
        answer = json.loads(await asyncio.wait_for(link.recv(), 30))
        assert answer["id"] == 1 and answer["result"]["serverInfo"]["name"] == "secure-filesystem-server"
        await link.aclose(2.0)
        assert await link.recv() is None
