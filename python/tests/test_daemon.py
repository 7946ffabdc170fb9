"""An embedded Python node with `nullport up` daemons: services exposed by a daemon,
channels from a daemon, policy refusals, capability tokens, aliases of a home."""

from __future__ import annotations

import asyncio
import os
import subprocess

import pytest

import nullport

from conftest import binary
from helpers import echo, send_and_collect, serving, sha256


@pytest.fixture
def tool(make_home, relay):  # type: ignore[no-untyped-def]
    """A daemon exposing `cat` (exec) that allows nobody yet."""
    home = make_home("tool")
    home.run("expose", "exec", "cat", "--", "cat")
    home.up(relay)
    return home


@pytest.mark.parametrize("size", [1, 1 << 20, 64 << 20])
async def test_python_node_to_a_daemons_exec_service(tool, start_node, size: int) -> None:
    node = await start_node()
    tool.run("allow", node.node_id, "cat")
    payload = os.urandom(size)
    async with await node.dial(tool.node_id, "cat") as channel:
        assert channel.peer == tool.node_id
        got = await send_and_collect(channel, payload)
    assert len(got) == size
    assert sha256(got) == sha256(payload)


async def test_a_daemon_dials_a_python_node(make_home, relay, start_node) -> None:
    """`nullport pipe` on a daemon opens a channel to the Python node's service."""
    agent = make_home("agent")
    agent.up(relay)
    node = await start_node()
    payload = os.urandom(4 << 20)
    seen = []

    async def record_and_echo(channel: nullport.Channel) -> None:
        seen.append((channel.peer, channel.service))
        await echo(channel)

    async with serving(node, record_and_echo):
        pipe = await asyncio.create_subprocess_exec(
            binary("nullport"),
            "--home",
            str(agent.path),
            "pipe",
            f"{node.node_id}/echo",
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
        )
        out, err = await asyncio.wait_for(pipe.communicate(payload), 120)
        assert pipe.returncode == 0, err
    assert sha256(out) == sha256(payload)
    assert seen == [(agent.node_id, "echo")]


async def test_a_stranger_is_refused_with_not_allowed(tool, start_node) -> None:
    node = await start_node()
    with pytest.raises(nullport.NotAllowed) as raised:
        await node.dial(tool.node_id, "cat")
    assert type(raised.value) is nullport.NotAllowed
    assert str(raised.value) == f'peer {tool.node_id} refused service "cat": not allowed'
    with pytest.raises(nullport.NotAllowed) as raised:
        await node.dial(tool.node_id, "nothing-here")
    assert str(raised.value) == f'peer {tool.node_id} refused service "nothing-here": service not exposed'


async def test_a_capability_token_opens_the_service(tool, make_home, start_node, tmp_path) -> None:
    """The string `nullport token issue` prints (or @FILE) is presented in the handshake:
    a token from an issuer the tool trusts for `cat` opens it without a policy entry."""
    admin = make_home("admin")
    tool.run("trust", "add", "admin", admin.node_id)
    tool.run("token", "trust-issuer", "admin", "cat")
    node = await start_node()
    with pytest.raises(nullport.NotAllowed, match="not allowed$"):
        await node.dial(tool.node_id, "cat")
    token = admin.run("token", "issue", "--to", node.node_id, "--service", "cat").strip()
    assert token.startswith("npt1")
    async with await node.dial(tool.node_id, "cat", token=token) as channel:
        assert await send_and_collect(channel, b"with a token") == b"with a token"
    path = tmp_path / "token.txt"
    path.write_text(token + "\n")
    async with await node.dial(tool.node_id, "cat", token=f"@{path}") as channel:
        assert await send_and_collect(channel, b"from a file") == b"from a file"
    # A token for another holder does not open it, nor one from an issuer not trusted.
    other = admin.run("token", "issue", "--to", nullport.Identity.generate().node_id, "--service", "cat").strip()
    with pytest.raises(nullport.NotAllowed, match="capability token rejected$"):
        await node.dial(tool.node_id, "cat", token=other)
    stranger = make_home("stranger")
    self_made = stranger.run("token", "issue", "--to", node.node_id, "--service", "cat").strip()
    with pytest.raises(nullport.NotAllowed, match="capability token rejected$"):
        await node.dial(tool.node_id, "cat", token=self_made)
    # Text that is no token at all never leaves this process.
    with pytest.raises(nullport.InvalidAddress, match="^bad token: "):
        await node.dial(tool.node_id, "cat", token="npt1-garbage")


async def test_an_alias_of_the_home_resolves(tool, make_home, relay) -> None:
    agent = make_home("agent")
    agent.run("trust", "add", "tool", tool.node_id)
    identity = nullport.Identity.from_home(agent.path)
    assert identity.node_id == agent.node_id
    assert identity.home == agent.path
    tool.run("allow", agent.node_id, "cat")
    async with await nullport.Node.start(identity, relay.address) as node:
        async with await node.dial("tool", "cat") as channel:
            assert channel.peer == tool.node_id
            assert await send_and_collect(channel, b"by alias") == b"by alias"
        assert await node.presence("tool") is True
        with pytest.raises(nullport.InvalidAddress) as raised:
            await node.dial("nobody", "cat")
        assert str(raised.value) == 'unknown peer "nobody": not a NodeId and not an alias in the trust store'
    # A node given the home explicitly resolves it too.
    async with await nullport.Node.start(nullport.Identity.generate(), relay.address, home=agent.path) as node:
        tool.run("allow", node.node_id, "cat")
        async with await node.dial("tool", "cat") as channel:
            assert await send_and_collect(channel, b"x") == b"x"


async def test_the_relay_comes_from_the_homes_config(make_home, relay) -> None:
    home = make_home("configured")
    identity = nullport.Identity.from_home(home.path)
    with pytest.raises(nullport.InvalidAddress) as raised:
        await nullport.Node.start(identity)
    assert str(raised.value) == (
        f'no relay given, and none in {home.path / "config.toml"} (relay = "np...@host:port")'
    )
    with (home.path / "config.toml").open("a") as config:
        config.write(f'relay = "{relay.address}"\n')
    async with await nullport.Node.start(identity) as node:
        assert node.status()["relay"] == relay.address
    with pytest.raises(nullport.InvalidAddress, match="no home to read one from"):
        await nullport.Node.start(nullport.Identity.generate())
