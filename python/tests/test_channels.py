"""Channels between embedded nodes: byte-exact round trips, concurrent read and write,
cancellation, the asyncio streams adapter."""

from __future__ import annotations

import asyncio
import hashlib
import os

import pytest

import nullport

from helpers import echo, send_and_collect, serving, sha256


@pytest.mark.parametrize("size", [0, 1, 65_537, 1 << 20, 64 << 20])
async def test_round_trip_both_ways_byte_exact(start_node, size: int) -> None:
    """A payload goes to a Python callee and comes back, written and read at once; both
    ends check the SHA-256 of what they saw."""
    caller = await start_node()
    callee = await start_node()
    payload = os.urandom(size)
    callee_saw = hashlib.sha256()
    callee_done = asyncio.get_running_loop().create_future()

    async def echo_and_hash(channel: nullport.Channel) -> None:
        assert channel.peer == caller.node_id
        assert channel.service == "echo"
        async with channel:
            while True:
                data = await channel.read()
                if not data:
                    break
                callee_saw.update(data)
                await channel.write(data)
        callee_done.set_result(callee_saw.hexdigest())

    async with serving(callee, echo_and_hash):
        channel = await caller.dial(callee.node_id, "echo")
        assert channel.peer == callee.node_id
        assert len(channel.handshake_hash) == 32
        async with channel:
            got = await send_and_collect(channel, payload)
        assert len(got) == size
        assert sha256(got) == sha256(payload)
        assert await asyncio.wait_for(callee_done, 60) == sha256(payload)


async def test_both_ends_see_the_same_handshake_hash(start_node) -> None:
    caller = await start_node()
    callee = await start_node()
    hashes = asyncio.get_running_loop().create_future()

    async def record(channel: nullport.Channel) -> None:
        hashes.set_result(channel.handshake_hash)
        await echo(channel)

    async with serving(callee, record):
        async with await caller.dial(callee.node_id, "echo") as channel:
            assert await asyncio.wait_for(hashes, 10) == channel.handshake_hash


async def test_callee_sends_first_and_read_returns_empty_at_the_end(start_node) -> None:
    caller = await start_node()
    callee = await start_node()
    message = b"greeting from the callee\n" * 1000

    async def talk(channel: nullport.Channel) -> None:
        async with channel:
            await channel.write(message)

    async with serving(callee, talk):
        async with await caller.dial(callee.node_id, "hello") as channel:
            assert await channel.read(0) == b""
            assert await channel.readexactly(len(message)) == message
            assert await channel.read() == b""
            assert await channel.read() == b""
        async with await caller.dial(callee.node_id, "hello") as channel:
            assert await channel.read(-1) == message


async def test_readexactly_short_raises_incomplete_read(start_node) -> None:
    caller = await start_node()
    callee = await start_node()

    async def three_bytes(channel: nullport.Channel) -> None:
        async with channel:
            await channel.write(b"abc")

    async with serving(callee, three_bytes):
        async with await caller.dial(callee.node_id, "short") as channel:
            with pytest.raises(asyncio.IncompleteReadError) as raised:
                await channel.readexactly(10)
            assert raised.value.partial == b"abc"
            assert raised.value.expected == 10


async def test_cancelling_a_read_closes_the_channel_and_the_callee_sees_the_end(start_node) -> None:
    caller = await start_node()
    callee = await start_node()
    callee_end = asyncio.get_running_loop().create_future()

    async def wait_for_end(channel: nullport.Channel) -> None:
        try:
            data = await channel.read()
            callee_end.set_result(("read", data))
        except nullport.ChannelClosed as e:
            callee_end.set_result(("error", str(e)))

    async with serving(callee, wait_for_end):
        channel = await caller.dial(callee.node_id, "wait")
        reading = asyncio.create_task(channel.read())
        await asyncio.sleep(0.2)
        assert not reading.done()
        reading.cancel()
        with pytest.raises(asyncio.CancelledError):
            await reading
        # The callee's pending read ends: the channel was aborted, not leaked.
        how, what = await asyncio.wait_for(callee_end, 10)
        assert (how, what) == ("error", "channel closed by the peer: service unavailable")
        assert channel.is_closed
        with pytest.raises(nullport.ChannelClosed, match="^channel is closed$"):
            await channel.read()
        with pytest.raises(nullport.ChannelClosed, match="^channel is closed$"):
            await channel.write(b"x")


async def test_cancelling_a_dial_drops_it_and_the_callee_cannot_use_it(start_node) -> None:
    caller = await start_node()
    callee = await start_node()
    incoming = callee.incoming()
    dialing = asyncio.create_task(caller.dial(callee.node_id, "slow"))
    waiting = await asyncio.wait_for(incoming.__anext__(), 10)
    assert waiting.peer == caller.node_id and waiting.service == "slow"
    dialing.cancel()
    with pytest.raises(asyncio.CancelledError):
        await dialing
    await asyncio.sleep(0.2)
    # The caller's half is gone: accepting it yields a channel that is already broken, or
    # fails outright.
    try:
        channel = await waiting.accept()
    except nullport.NullportError:
        return
    with pytest.raises(nullport.ChannelClosed):
        await asyncio.wait_for(channel.read(), 10)


async def test_close_ends_a_read_waiting_in_another_task(start_node) -> None:
    caller = await start_node()
    callee = await start_node()
    callee_read = asyncio.get_running_loop().create_future()

    async def wait(channel: nullport.Channel) -> None:
        callee_read.set_result(await channel.read())

    async with serving(callee, wait):
        channel = await caller.dial(callee.node_id, "wait")
        reading = asyncio.create_task(channel.read())
        await asyncio.sleep(0.1)
        await channel.close()
        assert await asyncio.wait_for(reading, 10) == b""
        # A clean close: the callee reads the end.
        assert await asyncio.wait_for(callee_read, 10) == b""
        await channel.close()  # harmless twice


async def test_write_after_write_eof_is_refused_and_reading_goes_on(start_node) -> None:
    caller = await start_node()
    callee = await start_node()
    async with serving(callee, echo):
        async with await caller.dial(callee.node_id, "echo") as channel:
            await channel.write(b"ping")
            await channel.write_eof()
            with pytest.raises(nullport.ChannelClosed):
                await channel.write(b"more")
            assert await channel.readexactly(4) == b"ping"
            assert await channel.read() == b""


async def test_deny_with_a_reason_reaches_the_caller(start_node) -> None:
    caller = await start_node()
    callee = await start_node()

    async def deny_all() -> None:
        async for incoming in callee.incoming():
            await incoming.deny("rate limited")

    server = asyncio.create_task(deny_all())
    try:
        with pytest.raises(nullport.NotAllowed) as raised:
            await caller.dial(callee.node_id, "busy")
        assert type(raised.value) is nullport.NotAllowed
        assert str(raised.value) == f'peer {callee.node_id} refused service "busy": rate limited'
    finally:
        server.cancel()
    incoming = callee.incoming()
    dialing = asyncio.create_task(caller.dial(callee.node_id, "x"))
    waiting = await asyncio.wait_for(incoming.__anext__(), 10)
    with pytest.raises(ValueError, match="unknown deny reason"):
        await waiting.deny("because")
    await waiting.deny("unknown_service")
    with pytest.raises(nullport.NotAllowed, match="service not exposed$"):
        await dialing
    with pytest.raises(ValueError, match="already accepted or denied"):
        await waiting.accept()


async def test_first_bytes_go_with_the_handshake_and_a_refusal_drops_them(start_node) -> None:
    """``dial(first=...)``: the callee reads them as the channel's first bytes, once it
    accepted; refused, the caller gets NotAllowed as always; too many is InvalidAddress."""
    caller = await start_node()
    callee = await start_node()
    first = os.urandom(65_518)
    async with serving(callee, echo):
        channel = await caller.dial(callee.node_id, "echo", first=first)
        async with channel:
            got = await send_and_collect(channel, b"and the rest")
        assert got == first + b"and the rest"
        with pytest.raises(ValueError, match="at most 65518"):
            await caller.dial(callee.node_id, "echo", first=first + b"!")

    async def deny_all() -> None:
        async for incoming in callee.incoming():
            await incoming.deny("not_allowed")

    server = asyncio.create_task(deny_all())
    try:
        with pytest.raises(nullport.NotAllowed):
            await caller.dial(callee.node_id, "echo", first=b"never read")
    finally:
        server.cancel()


async def the_channel_arrives_once(callee: nullport.Node, waiting: "asyncio.Future", dialing: "asyncio.Task") -> None:
    """The dialed channel reaches the callee exactly once: through the (maybe cancelled)
    wait, or else through the next ``accept()``; accepted, the dial completes."""
    try:
        incoming = await waiting
    except asyncio.CancelledError:
        incoming = await asyncio.wait_for(callee.accept(), 10)
    accepted = await incoming.accept()
    channel = await asyncio.wait_for(dialing, 10)
    await channel.close()
    await accepted.close()


async def test_cancelling_a_wait_for_incoming_channels_loses_none(start_node) -> None:
    """A task waiting in ``accept()`` (or ``incoming()``) cancelled just as a channel
    arrives: the channel goes to the next wait, not to the cancelled one (where it was
    denied as unavailable). Cancelled at many moments around the arrival."""
    caller = await start_node()
    callee = await start_node()
    for i in range(40):
        waiting = asyncio.create_task(callee.accept())
        dialing = asyncio.create_task(caller.dial(callee.node_id, "echo"))
        await asyncio.sleep((i % 10) / 2000)
        waiting.cancel()
        await the_channel_arrives_once(callee, waiting, dialing)


async def test_a_wait_cancelled_in_the_turn_its_channel_arrives_loses_none(start_node) -> None:
    """The other order: the channel reaches the waiting task's future, and the task is
    cancelled in that same loop turn, before it resumes (as a timeout firing then does):
    the channel is given back, not lost."""
    caller = await start_node()
    callee = await start_node()
    for next_one in (callee.accept, lambda: callee.incoming().__anext__()):
        waiting = asyncio.ensure_future(next_one())
        dialing = asyncio.create_task(caller.dial(callee.node_id, "echo"))
        loop = asyncio.get_running_loop()
        arrived = loop.create_future()
        # Polled every loop turn: cancel the task in the turn its result lands.
        def poll() -> None:
            if waiting.done():
                arrived.set_result(None)
                return
            inner = getattr(waiting, "_fut_waiter", None)
            if inner is not None and inner.done():
                waiting.cancel()
                arrived.set_result(None)
                return
            loop.call_soon(poll)
        loop.call_soon(poll)
        await asyncio.wait_for(arrived, 10)
        await the_channel_arrives_once(callee, waiting, dialing)


async def test_an_incoming_dropped_undecided_is_denied_as_unavailable(start_node) -> None:
    caller = await start_node()
    callee = await start_node()
    dialing = asyncio.create_task(caller.dial(callee.node_id, "ignored"))
    incoming = await asyncio.wait_for(callee.accept(), 10)
    del incoming
    with pytest.raises(nullport.NotAllowed) as raised:
        await asyncio.wait_for(dialing, 10)
    assert str(raised.value) == f'peer {callee.node_id} refused service "ignored": service unavailable'


async def test_streams_round_trip_with_flow_control(start_node) -> None:
    """open_connection and streams_of: 8 MiB each way through StreamWriter.drain (the writer's
    buffer is bounded) and StreamReader, write_eof, close, extra info."""
    caller = await start_node()
    callee = await start_node()
    payload = os.urandom(8 << 20)

    async def stream_echo(channel: nullport.Channel) -> None:
        reader, writer = nullport.streams_of(channel)
        assert writer.get_extra_info("peer") == caller.node_id
        while True:
            data = await reader.read(1 << 16)
            if not data:
                break
            writer.write(data)
            await writer.drain()
        writer.close()
        await writer.wait_closed()

    async with serving(callee, stream_echo):
        reader, writer = await nullport.open_connection(caller, callee.node_id, "echo")
        assert writer.get_extra_info("peer") == callee.node_id
        assert writer.get_extra_info("service") == "echo"
        assert writer.can_write_eof()

        async def send() -> None:
            biggest = 0
            for start in range(0, len(payload), 1 << 20):
                writer.write(payload[start : start + (1 << 20)])
                biggest = max(biggest, writer.transport.get_write_buffer_size())
                await writer.drain()
                # drain() returned: the buffer is at most the high-water mark.
                assert writer.transport.get_write_buffer_size() <= writer.transport.get_write_buffer_limits()[1]
            writer.write_eof()

        sender = asyncio.create_task(send())
        reading = asyncio.create_task(reader.read())  # until EOF
        await asyncio.wait_for(sender, 60)
        got = await asyncio.wait_for(reading, 60)
        assert sha256(got) == sha256(payload)
        writer.close()
        await asyncio.wait_for(writer.wait_closed(), 10)
        assert writer.is_closing()


async def test_streams_readline_and_peer_loss(start_node) -> None:
    caller = await start_node()
    callee = await start_node()

    async def lines_then_abort(channel: nullport.Channel) -> None:
        await channel.write(b"one\ntwo\n")
        await asyncio.sleep(0.1)
        await channel.abort()

    async with serving(callee, lines_then_abort):
        reader, writer = await nullport.open_connection(caller, callee.node_id, "lines")
        assert await reader.readline() == b"one\n"
        assert await reader.readline() == b"two\n"
        with pytest.raises(nullport.ChannelClosed, match="service unavailable"):
            await asyncio.wait_for(reader.read(), 10)
        writer.close()
        with pytest.raises(nullport.ChannelClosed):
            await asyncio.wait_for(writer.wait_closed(), 10)


async def test_node_context_manager_closes_the_node(relay, identity) -> None:
    async with await nullport.Node.start(identity, relay.address) as node:
        assert node.node_id == identity.node_id
        status = node.status()
        assert status["online"] is True
        assert status["node_id"] == identity.node_id
        assert status["state"] == "online"
        assert status["relay"] == relay.address
        assert status["relay_id"] == relay.node_id
        assert status["home_relay"] == relay.node_id
        assert status["links"] == [{"relay": relay.node_id, "up": True}]
        incoming = node.incoming()
        pending = asyncio.create_task(incoming.__anext__())
    with pytest.raises(StopAsyncIteration):
        await asyncio.wait_for(pending, 10)
    assert node.status()["closed"] is True
    with pytest.raises(nullport.NodeClosed, match="^node is shut down$"):
        await node.dial(nullport.Identity.generate().node_id, "echo")
    with pytest.raises(nullport.NodeClosed):
        await node.accept()
    await node.close()  # harmless twice


async def test_presence(start_node) -> None:
    a = await start_node()
    b = await start_node()
    assert await a.presence(b.node_id) is True
    assert await a.presence(nullport.Identity.generate().node_id) is False


async def test_a_node_that_never_asked_for_incoming_channels_refuses_them_at_once(start_node) -> None:
    """A node that only dials leaves no caller waiting for its dial timeout: a channel to a
    service nothing serves is refused as not exposed. Once the program asks for incoming
    channels, they wait for its decision."""
    caller = await start_node()
    callee = await start_node()
    with pytest.raises(nullport.NotAllowed) as raised:
        await asyncio.wait_for(caller.dial(callee.node_id, "nothing"), 10)
    assert type(raised.value) is nullport.NotAllowed
    assert str(raised.value) == f'peer {callee.node_id} refused service "nothing": service not exposed'
    incoming = callee.incoming()
    dialing = asyncio.create_task(caller.dial(callee.node_id, "later"))
    waiting = await asyncio.wait_for(incoming.__anext__(), 10)
    assert waiting.service == "later"
    async with await waiting.accept():
        async with await dialing as channel:
            assert channel.service == "later"
