"""A Python MCP server (the SDK's MCPServer) served by an embedded node behind the Rust
firewall and policy file: used from the Rust bridge (`nullport mcp bridge`, driven by the SDK's
stdio_client) and from Python (`nullport.mcp.connect`); refusals; access taken away live."""

from __future__ import annotations

from types import SimpleNamespace

import anyio
import pytest
from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client
from mcp.server.mcpserver import MCPServer

import nullport
import nullport.mcp

from mcp_helpers import bridge_args, error_code, nullport_bin, text_of, write_policy

RULE = ["add", "whoami", "wait"]


class Tools:
    """The server under test, with hooks to see what its handlers went through."""

    def __init__(self) -> None:
        self.waiting = anyio.Event()
        self.cancelled = anyio.Event()
        self.server = MCPServer("pytools")

        @self.server.tool()
        def add(a: int, b: int) -> str:
            """Adds two numbers."""
            return str(a + b)

        @self.server.tool()
        def whoami() -> str:
            """The caller's alias here, as the handshake proved it."""
            caller = nullport.mcp.current_caller()
            return caller.alias or caller.peer if caller else "nobody"

        @self.server.tool()
        async def wait() -> str:
            """Waits until cancelled."""
            self.waiting.set()
            try:
                await anyio.sleep_forever()
            finally:
                self.cancelled.set()
            return "never"

        @self.server.tool()
        def secret() -> str:
            """Not for callers."""
            return "s3cret"


@pytest.fixture
def net(relay, make_home):
    """The Python tool node's home (`pytools`); a daemon `agent` (online) that trusts it; a
    Python caller's home `pyagent`; the tool home's policy allows both callers RULE."""
    pytools, agent, pyagent = make_home("pytools"), make_home("agent"), make_home("pyagent")
    pytools.run("trust", "add", "agent", agent.node_id)
    pytools.run("trust", "add", "pyagent", pyagent.node_id)
    for home in (agent, pyagent):
        home.run("trust", "add", "pytools", pytools.node_id)
    write_policy(pytools, "tools", {"agent": RULE, "pyagent": RULE})
    agent.up(relay)
    return SimpleNamespace(pytools=pytools, agent=agent, pyagent=pyagent)


@pytest.fixture
def start(start_node):
    """Starts the embedded node of a home (closed after the test)."""

    async def start_home(home):
        return await start_node(nullport.Identity.from_home(str(home.path)))

    return start_home


async def test_a_python_server_behind_the_firewall_from_the_rust_bridge(net, start):
    tools = Tools()
    async with await start(net.pytools) as node:
        async with nullport.mcp.expose(node, "tools", tools.server):
            params = StdioServerParameters(
                command=nullport_bin(), args=bridge_args(net.agent, "pytools/tools")
            )
            async with stdio_client(params) as (read, write):
                async with ClientSession(read, write) as session:
                    init = await session.initialize()
                    assert init.server_info.name == "pytools"
                    listed = await session.list_tools()
                    assert sorted(t.name for t in listed.tools) == sorted(RULE)
                    assert text_of(await session.call_tool("add", {"a": 2, "b": 3})) == "5"
                    assert text_of(await session.call_tool("whoami", {})) == "agent"
                    with pytest.raises(Exception) as refused:
                        await session.call_tool("secret", {})
                    assert error_code(refused.value) == nullport.mcp.DENIED
    audit = (net.pytools.path / "audit.log").read_text()
    assert '"target":"secret"' in audit and '"outcome":"denied"' in audit
    # The bridge's daemon checked the Python host's receipts.
    agent_audit = (net.agent.path / "audit.log").read_text()
    received = [line for line in agent_audit.splitlines() if '"role":"received"' in line]
    assert len(received) == 3 and all('"valid":true' in line for line in received)


async def test_a_python_server_behind_the_firewall_from_python(net, start):
    tools = Tools()
    async with await start(net.pytools) as host, await start(net.pyagent) as agent:
        async with nullport.mcp.expose(host, "tools", tools.server) as service:
            async with nullport.mcp.connect(agent, "pytools/tools") as streams:
                async with ClientSession(*streams) as session:
                    await session.initialize()
                    listed = await session.list_tools()
                    assert sorted(t.name for t in listed.tools) == sorted(RULE)
                    assert text_of(await session.call_tool("whoami", {})) == "pyagent"
                    assert service.open_sessions == 1
                    with pytest.raises(Exception) as refused:
                        await session.call_tool("secret", {})
                    assert error_code(refused.value) == nullport.mcp.DENIED
            assert [(r.decision, r.valid) for r in streams.receipts] == [("allowed", True), ("denied", True)]
            assert all(r.callee == net.pytools.node_id and r.signature_valid() for r in streams.receipts)


async def test_a_caller_without_a_rule_is_refused(net, start, make_home):
    stranger = make_home("stranger")
    stranger.run("trust", "add", "pytools", net.pytools.node_id)
    async with await start(net.pytools) as host, await start(stranger) as node:
        async with nullport.mcp.expose(host, "tools", Tools().server) as service:
            with pytest.raises(nullport.NotAllowed, match="not allowed"):
                async with nullport.mcp.connect(node, "pytools/tools"):
                    pass
            assert service.open_sessions == 0
    audit = (net.pytools.path / "audit.log").read_text()
    assert "no policy rule allows this caller" in audit


async def test_removing_the_rule_ends_the_live_session(net, start):
    tools = Tools()
    async with await start(net.pytools) as host, await start(net.pyagent) as agent:
        async with nullport.mcp.expose(host, "tools", tools.server) as service:
            async with nullport.mcp.connect(agent, "pytools/tools") as (read, write):
                async with ClientSession(read, write) as session:
                    await session.initialize()
                    outcome = {}

                    async def call_wait():
                        try:
                            await session.call_tool("wait", {})
                        except Exception as e:  # the error the SDK raises
                            outcome["error"] = e

                    async with anyio.create_task_group() as tg:
                        tg.start_soon(call_wait)
                        await tools.waiting.wait()
                        write_policy(net.pytools, "tools", {"agent": RULE})
                        with anyio.fail_after(30):
                            service.reload()
                    assert error_code(outcome["error"]) == nullport.mcp.CHANNEL_ENDED
                    assert "not allowed" in str(outcome["error"])
            with anyio.fail_after(10):
                await tools.cancelled.wait()
                while service.open_sessions:
                    await anyio.sleep(0.05)
            with pytest.raises(nullport.NotAllowed):
                async with nullport.mcp.connect(agent, "pytools/tools"):
                    pass
    audit = (net.pytools.path / "audit.log").read_text()
    assert '"outcome":"closed"' in audit


async def test_cancelling_a_caller_task_ends_its_session_at_the_server(net, start):
    tools = Tools()
    async with await start(net.pytools) as host, await start(net.pyagent) as agent:
        async with nullport.mcp.expose(host, "tools", tools.server) as service:

            async def caller():
                async with nullport.mcp.connect(agent, "pytools/tools") as (read, write):
                    async with ClientSession(read, write) as session:
                        await session.initialize()
                        await session.call_tool("wait", {})

            with anyio.fail_after(30):
                async with anyio.create_task_group() as tg:
                    tg.start_soon(caller)
                    await tools.waiting.wait()
                    assert service.open_sessions == 1
                    tg.cancel_scope.cancel()
                # The handler under the cancelled call was cancelled, and the session ended.
                await tools.cancelled.wait()
                while service.open_sessions:
                    await anyio.sleep(0.05)


async def test_a_capability_token_opens_the_service_with_its_scope(net, start, make_home):
    """No rule for the caller, but a token from an issuer the host trusts for the service:
    the caller gets the token's tools, within the issuer's own rule."""
    admin, holder = make_home("admin"), make_home("holder")
    admin.run("trust", "add", "holder", holder.node_id)
    holder.run("trust", "add", "pytools", net.pytools.node_id)
    net.pytools.run("trust", "add", "admin", admin.node_id)
    write_policy(net.pytools, "tools", {"admin": ["add", "whoami"]})
    with open(net.pytools.path / "policy.toml", "a") as policy:
        policy.write('[tokens.tools]\nissuers = ["admin"]\n')
    token = admin.run("token", "issue", "--to", "holder", "--service", "tools", "--tools", "add,wait").strip()
    async with await start(net.pytools) as host, await start(holder) as node:
        async with nullport.mcp.expose(host, "tools", Tools().server):
            with pytest.raises(nullport.NotAllowed, match="not allowed"):
                async with nullport.mcp.connect(node, "pytools/tools"):
                    pass
            async with nullport.mcp.connect(node, "pytools/tools", token=token) as streams:
                async with ClientSession(*streams) as session:
                    await session.initialize()
                    listed = await session.list_tools()
                    # `wait`: in the token, not in the issuer's rule; `whoami`: not in the token.
                    assert [t.name for t in listed.tools] == ["add"]
                    assert text_of(await session.call_tool("add", {"a": 1, "b": 1})) == "2"


async def test_many_sessions_and_calls_in_a_row_lose_nothing(net, start):
    """Sessions opened and closed one after another, many calls each, both ends in this
    process: every answer arrives (a lost wake-up of the event loop would hang here), every
    receipt checks out, no session stays open."""
    host, agent = await start(net.pytools), await start(net.pyagent)
    async with nullport.mcp.expose(host, "tools", Tools().server) as service:
        with anyio.fail_after(300):
            for n in range(20):
                async with nullport.mcp.connect(agent, "pytools/tools") as streams:
                    async with ClientSession(*streams) as session:
                        await session.initialize()
                        for i in range(100):
                            assert text_of(await session.call_tool("add", {"a": n, "b": i})) == str(n + i)
                receipts = streams.receipts
                assert len(receipts) == 100 and all(r.valid for r in receipts)
            while service.open_sessions:
                await anyio.sleep(0.05)


async def test_a_token_its_issuer_revokes_ends_the_session_and_is_refused(net, start, make_home, relay):
    """The issuer revokes the token on its own daemon (`nullport revoke`), which publishes
    the list through the relay: the Python host's node takes it as a daemon would (saved in
    its home, in force at once), the live session on the token ends and a new one is
    refused as revoked."""
    admin, holder = make_home("admin"), make_home("holder")
    admin.run("trust", "add", "holder", holder.node_id)
    holder.run("trust", "add", "pytools", net.pytools.node_id)
    net.pytools.run("trust", "add", "admin", admin.node_id)
    write_policy(net.pytools, "tools", {"admin": ["add", "wait"]})
    with open(net.pytools.path / "policy.toml", "a") as policy:
        policy.write('[tokens.tools]\nissuers = ["admin"]\n')
    admin.up(relay)
    token = admin.run("token", "issue", "--to", "holder", "--service", "tools", "--tools", "add").strip()
    async with await start(net.pytools) as host, await start(holder) as node:
        async with nullport.mcp.expose(host, "tools", Tools().server) as service:
            async with nullport.mcp.connect(node, "pytools/tools", token=token) as streams:
                async with ClientSession(*streams) as session:
                    await session.initialize()
                    assert text_of(await session.call_tool("add", {"a": 1, "b": 1})) == "2"
                    admin.run("revoke", token)
                    with anyio.fail_after(20):
                        while service.open_sessions:
                            await anyio.sleep(0.05)
                    # A call after the end: the channel's end (-32003) if the transport
                    # still reads, else the SDK's own "Connection closed" (-32000); never
                    # an answer, never a hang.
                    with pytest.raises(Exception) as ended:
                        with anyio.fail_after(20):
                            await session.call_tool("add", {"a": 2, "b": 2})
                    assert error_code(ended.value) in (nullport.mcp.CHANNEL_ENDED, -32000), ended.value
            with pytest.raises(nullport.NotAllowed) as refused:
                async with nullport.mcp.connect(node, "pytools/tools", token=token):
                    pass
            assert str(refused.value) == f'peer {net.pytools.node_id} refused service "tools": access revoked'
    assert (net.pytools.path / "revocations.json").exists() or any(
        p.name.startswith("revocations") for p in net.pytools.path.iterdir()
    )
    audit = (net.pytools.path / "audit.log").read_text()
    assert '"revocation"' in audit or "revocation" in audit
