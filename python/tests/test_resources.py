"""Many channels from one Python process: no growth in memory or file descriptors."""

from __future__ import annotations

import asyncio
import gc
import os

import nullport

from helpers import echo, serving

WARMUP = 100
CHANNELS = 1000
# Each channel held open costs about 57-61 KiB in this process (both ends, 64 B echoed;
# measured holding 200): 1,000 leaked ones are well over this bound; allocator noise is
# well under it.
RSS_GROWTH_LIMIT = 24 << 20


def rss_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS in /proc/self/status")


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


async def test_a_thousand_sequential_channels_do_not_grow_memory_or_fds(start_node) -> None:
    caller = await start_node()
    callee = await start_node()
    message = bytes(range(64))

    async def one() -> None:
        channel = await caller.dial(callee.node_id, "echo")
        await channel.write(message)
        assert await channel.readexactly(64) == message
        await channel.close()

    async with serving(callee, echo):
        for _ in range(WARMUP):
            await one()
        gc.collect()
        rss_before, fds_before = rss_bytes(), open_fds()
        for _ in range(CHANNELS):
            await one()
        gc.collect()
        rss_after, fds_after = rss_bytes(), open_fds()
    print(f"RSS {rss_before >> 10} KiB -> {rss_after >> 10} KiB; fds {fds_before} -> {fds_after}")
    assert fds_after <= fds_before, (fds_before, fds_after)
    assert rss_after - rss_before < RSS_GROWTH_LIMIT, (rss_before, rss_after)


async def test_channels_dropped_without_close_are_released(start_node) -> None:
    """A channel object dropped without `close` ends as the Rust one does (reset), and the
    callee sees the end; nothing accumulates."""
    caller = await start_node()
    callee = await start_node()
    ended = []

    async def wait_end(channel: nullport.Channel) -> None:
        try:
            ended.append(await channel.read())
        except nullport.ChannelClosed as e:
            ended.append(str(e))
        await channel.close()

    async with serving(callee, wait_end):
        for _ in range(20):
            await caller.dial(callee.node_id, "drop")
        gc.collect()
        fds_before = open_fds()
        for _ in range(200):
            channel = await caller.dial(callee.node_id, "drop")
            del channel
        gc.collect()
        for _ in range(100):
            if len(ended) == 220:
                break
            await asyncio.sleep(0.1)
        assert len(ended) == 220
        assert open_fds() <= fds_before
