"""asyncio streams over a nullport channel: ``open_connection`` and ``streams_of``.

An ``asyncio.Transport`` over a ``Channel``: one task reads (paused while the protocol's
buffer is full: flow control), one task writes what ``write`` buffered (the protocol is
paused above the high-water mark, so ``StreamWriter.drain()`` waits for a slow peer).
"""

from __future__ import annotations

import asyncio
import collections
from typing import Any, Deque, Optional, Tuple

from ._native import Channel, ChannelClosed, Node

__all__ = ["open_connection", "streams_of"]

_READ_SIZE = 64 * 1024
_WRITE_BATCH = 256 * 1024
_HIGH_WATER = 256 * 1024


class _ChannelTransport(asyncio.Transport):
    """A transport whose bytes travel over a nullport ``Channel``."""

    def __init__(
        self,
        loop: asyncio.AbstractEventLoop,
        channel: Channel,
        protocol: asyncio.Protocol,
    ) -> None:
        super().__init__(extra={"peer": channel.peer, "service": channel.service})
        self._loop = loop
        self._channel = channel
        self._protocol = protocol
        self._buffer: Deque[bytes] = collections.deque()
        self._buffer_size = 0
        self._high = _HIGH_WATER
        self._low = _HIGH_WATER // 4
        self._protocol_paused = False
        self._reading = asyncio.Event()
        self._reading.set()
        self._wake_writer = asyncio.Event()
        self._eof_pending = False
        self._eof_sent = False
        self._closing = False
        self._aborted = False
        self._exc: Optional[Exception] = None
        self._lost = False
        protocol.connection_made(self)
        self._reader = loop.create_task(self._run_reader())
        self._writer = loop.create_task(self._run_writer())

    # Reading.

    async def _run_reader(self) -> None:
        try:
            while True:
                await self._reading.wait()
                if self._closing:
                    return
                data = await self._channel.read(_READ_SIZE)
                if self._closing:
                    return
                if not data:
                    if not self._protocol.eof_received():
                        self.close()
                    return
                self._protocol.data_received(data)
        except ChannelClosed as exc:
            if not self._closing:
                self._fatal(exc)
        except Exception as exc:  # a protocol callback failed: end the connection
            self._fatal(exc)

    def is_reading(self) -> bool:
        return self._reading.is_set() and not self._closing

    def pause_reading(self) -> None:
        self._reading.clear()

    def resume_reading(self) -> None:
        self._reading.set()

    # Writing.

    async def _run_writer(self) -> None:
        try:
            while True:
                if self._buffer and not self._aborted:
                    batch = [self._buffer.popleft()]
                    size = len(batch[0])
                    while self._buffer and size + len(self._buffer[0]) <= _WRITE_BATCH:
                        size += len(self._buffer[0])
                        batch.append(self._buffer.popleft())
                    await self._channel.write(b"".join(batch) if len(batch) > 1 else batch[0])
                    self._buffer_size -= size
                    self._maybe_resume_protocol()
                elif self._eof_pending and not self._eof_sent and not self._aborted:
                    self._eof_sent = True
                    await self._channel.write_eof()
                elif self._closing:
                    break
                else:
                    self._wake_writer.clear()
                    await self._wake_writer.wait()
        except ChannelClosed as exc:
            if not self._aborted:
                self._fatal(exc)
        except Exception as exc:
            self._fatal(exc)
        await self._finish()

    async def _finish(self) -> None:
        """After the writer: ends the channel, waits for the reader, reports the loss."""
        self._closing = True
        self._reading.set()
        try:
            if self._aborted:
                await self._channel.abort()
            else:
                await self._channel.close()
        finally:
            try:
                await self._reader
            except BaseException:
                pass
            self._buffer.clear()
            self._buffer_size = 0
            if not self._lost:
                self._lost = True
                self._protocol.connection_lost(self._exc)

    def _fatal(self, exc: Exception) -> None:
        if self._exc is None:
            self._exc = exc
        self._drop_all()

    def _drop_all(self) -> None:
        """Stops both directions at once: nothing buffered is sent, both tasks wake."""
        self._aborted = True
        self._closing = True
        self._buffer.clear()
        self._buffer_size = 0
        self._reading.set()
        self._wake_writer.set()

    def _maybe_resume_protocol(self) -> None:
        if self._protocol_paused and self._buffer_size <= self._low:
            self._protocol_paused = False
            self._protocol.resume_writing()

    def write(self, data: Any) -> None:
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise TypeError(f"data must be bytes-like, not {type(data).__name__}")
        if self._eof_pending:
            raise RuntimeError("cannot write after write_eof()")
        if self._closing:
            return
        if not data:
            return
        data = bytes(data)
        self._buffer.append(data)
        self._buffer_size += len(data)
        self._wake_writer.set()
        if not self._protocol_paused and self._buffer_size > self._high:
            self._protocol_paused = True
            self._protocol.pause_writing()

    def write_eof(self) -> None:
        if self._eof_pending or self._closing:
            return
        self._eof_pending = True
        self._wake_writer.set()

    def can_write_eof(self) -> bool:
        return True

    def get_write_buffer_size(self) -> int:
        return self._buffer_size

    def get_write_buffer_limits(self) -> Tuple[int, int]:
        return (self._low, self._high)

    def set_write_buffer_limits(self, high: Optional[int] = None, low: Optional[int] = None) -> None:
        if high is None:
            high = _HIGH_WATER if low is None else 4 * low
        if low is None:
            low = high // 4
        if not high >= low >= 0:
            raise ValueError(f"high ({high!r}) must be >= low ({low!r}) must be >= 0")
        self._high, self._low = high, low
        if not self._protocol_paused and self._buffer_size > self._high:
            self._protocol_paused = True
            self._protocol.pause_writing()
        self._maybe_resume_protocol()

    # Closing.

    def is_closing(self) -> bool:
        return self._closing

    def close(self) -> None:
        """Sends what is buffered, then closes the channel cleanly (the peer reads the end)."""
        if self._closing:
            return
        self._closing = True
        self._reading.set()
        self._wake_writer.set()

    def abort(self) -> None:
        """Drops what is buffered and aborts the channel (the peer's reads fail)."""
        if self._aborted:
            return
        self._drop_all()

    def set_protocol(self, protocol: asyncio.BaseProtocol) -> None:
        self._protocol = protocol  # type: ignore[assignment]

    def get_protocol(self) -> asyncio.BaseProtocol:
        return self._protocol


def streams_of(channel: Channel, *, limit: int = 2**16) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """An asyncio ``(StreamReader, StreamWriter)`` pair over an open ``Channel``.

    ``writer.get_extra_info("peer")`` is the peer's NodeId and ``"service"`` the service.
    ``writer.close()`` sends what is buffered, then closes the channel; ``write_eof()``
    finishes sending while reading goes on. The channel belongs to the streams from then on.
    """
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=limit, loop=loop)
    protocol = asyncio.StreamReaderProtocol(reader, loop=loop)
    transport = _ChannelTransport(loop, channel, protocol)
    writer = asyncio.StreamWriter(transport, protocol, reader, loop)
    return reader, writer


async def open_connection(
    node: Node,
    peer: str,
    service: str,
    token: Optional[str] = None,
    *,
    limit: int = 2**16,
) -> Tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    """Dials ``service`` on ``peer`` (NodeId or alias) and returns asyncio streams over the
    channel, like ``asyncio.open_connection``. Raises what ``Node.dial`` raises."""
    channel = await node.dial(peer, service, token)
    return streams_of(channel, limit=limit)
