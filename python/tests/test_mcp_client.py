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

from mcp_helpers import ALLOWED, audit_lines, error_code, files_host, open_channels, text_of


@pytest.fixture
def host(relay, make_home, tmp_path):
    return files_host(relay, make_home, tmp_path)


@pytest.fixture
async def agent(host, start_node):
    """The agent's embedded node (its home trusts the host as `tool`)."""
    return await start_node(nullport.Identity.from_home(str(host.agent.path)))


async def test_the_sdk_sees_only_allowed_tools_and_the_firewall_refuses_the_rest(host, agent):
    hello = str(host.data / "hello.txt")
    sneaky = host.data / "written-by-agent.txt"
    async with nullport.mcp.connect(agent, "tool/files") as streams:
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
        assert r.callee == host.tool.node_id and r.caller == host.agent.node_id
    # A receipt altered after the fact no longer verifies.
    body = json.loads(receipts[1].json)
    body["decision"] = "allowed"
    forged = dataclasses.replace(receipts[1], json=json.dumps(body))
    assert not forged.signature_valid()
    # The host checked both request signatures; the caller's home logged both receipts.
    assert len(audit_lines(host.tool, '"event":"request-signature"', '"valid":true')) == 2
    assert not audit_lines(host.tool, '"valid":false')
    received = audit_lines(host.agent, '"role":"received"')
    assert len(received) == 2 and all('"valid":true' in line for line in received)


async def test_a_stranger_is_refused_and_a_bad_target_is_an_address_error(host, start_node):
    stranger = await start_node()
    with pytest.raises(nullport.NotAllowed, match="not allowed"):
        async with nullport.mcp.connect(stranger, f"{host.tool.node_id}/files"):
            pass
    with pytest.raises(nullport.InvalidAddress):
        async with nullport.mcp.connect(stranger, "no-service-here"):
            pass


async def test_a_lost_peer_fails_the_pending_request_instead_of_hanging(host, agent):
    async with nullport.mcp.connect(agent, "tool/files") as (read, write):
        async with ClientSession(read, write) as session:
            await session.initialize()
            host.tool.daemon.kill()
            host.tool.daemon.wait()
            # Sent to a host that is gone: the channel ends (the relay gives up on the dead
            # link), and the waiting request gets the channel's end as its error.
            with anyio.fail_after(120):
                with pytest.raises(Exception) as lost:
                    await session.list_tools()
            assert error_code(lost.value) == nullport.mcp.CHANNEL_ENDED == -32003
            assert str(lost.value).startswith("nullport: ")


@pytest.mark.parametrize("order", ["client-first", "peer-first", "cancelled", "raised"])
async def test_shutdown_is_bounded_whatever_closes_first(host, agent, order):
    """Nested transports (two sessions, one inside the other, and their ClientSessions)
    closed by the client, by the peer, by a cancellation from outside, or by an exception."""
    ready = anyio.Event()

    async def sessions():
        async with nullport.mcp.connect(agent, "tool/files") as (r1, w1):
            async with ClientSession(r1, w1) as outer:
                await outer.initialize()
                async with nullport.mcp.connect(agent, "tool/files") as (r2, w2):
                    async with ClientSession(r2, w2) as inner:
                        await inner.initialize()
                        if order != "peer-first":
                            assert open_channels(host.tool) == 2
                        ready.set()
                        if order == "peer-first":
                            host.tool.stop()
                            # The host closed both sessions: a request gets an error, never
                            # waits (the channel's end if it was still in flight, else the
                            # SDK's own "connection closed", -32000).
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
            while open_channels(host.tool):
                await anyio.sleep(0.05)


async def test_cancelling_a_read_drops_the_rust_future_and_loses_nothing(host, agent):
    link = await _native.mcp_connect(agent, "tool", "files", False)
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
