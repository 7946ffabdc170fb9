"""Helpers shared by the core tests: services run by an embedded node."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
from typing import AsyncIterator, Awaitable, Callable

import nullport

Handler = Callable[[nullport.Channel], Awaitable[None]]


@contextlib.asynccontextmanager
async def serving(node: nullport.Node, handler: Handler) -> AsyncIterator[None]:
    """Accepts every incoming channel of ``node`` and runs ``handler`` on it (each on its own
    task) for the duration of the block."""
    tasks = set()

    async def loop() -> None:
        async for incoming in node.incoming():
            channel = await incoming.accept()
            task = asyncio.create_task(handler(channel))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    server = asyncio.create_task(loop())
    try:
        yield
    finally:
        server.cancel()
        for task in list(tasks):
            task.cancel()
        await asyncio.gather(server, *tasks, return_exceptions=True)


async def echo(channel: nullport.Channel) -> None:
    """Echoes every byte until the caller finishes sending, then closes."""
    async with channel:
        while True:
            data = await channel.read()
            if not data:
                break
            await channel.write(data)


async def send_and_collect(channel: nullport.Channel, payload: bytes, chunk: int = 1 << 20) -> bytes:
    """Writes ``payload`` (then the end) while reading everything back, concurrently."""

    async def send() -> None:
        view = memoryview(payload)
        for start in range(0, len(payload), chunk):
            await channel.write(bytes(view[start : start + chunk]))
        await channel.write_eof()

    sender = asyncio.create_task(send())
    got = bytearray()
    while True:
        data = await channel.read()
        if not data:
            break
        got += data
    await sender
    return bytes(got)


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
