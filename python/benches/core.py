"""Python-side figures of the nullport package: channel setup, 64 B round trip, bulk
throughput through Channel and through the asyncio streams, two embedded nodes on one
`nullport-relay` process on loopback.

    python python/benches/core.py [--bin-dir target/release] [--bytes 268435456] [--trips 2000]

Compare with the Rust library in the same run: `cargo bench -p nullport-tests --bench relay`
(its relay is in-process, this one a separate process: say so next to the figures).
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import statistics
import subprocess
import tempfile
import time
from pathlib import Path

import nullport


def start_relay(bin_dir: Path, workdir: Path):  # type: ignore[no-untyped-def]
    relay = str(bin_dir / "nullport-relay")
    key = workdir / "relay.key"
    subprocess.run([relay, "init", "--key", str(key), "--insecure-plaintext-key"], check=True, capture_output=True)
    node_id = subprocess.run([relay, "id", "--key", str(key)], check=True, capture_output=True, text=True).stdout.split()[0]
    log = open(workdir / "relay.log", "w+")
    proc = subprocess.Popen(
        [relay, "run", "--key", str(key), "--listen", "127.0.0.1:0", "--open", "--dials-per-second", "100000"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    for _ in range(1000):
        log.seek(0)
        found = re.search(r"listening on udp 127\.0\.0\.1:(\d+)", log.read())
        if found:
            return proc, f"{node_id}@127.0.0.1:{found.group(1)}"
        time.sleep(0.01)
    raise RuntimeError("relay did not start")


def pct(samples: list, p: float) -> float:
    samples = sorted(samples)
    return samples[round((len(samples) - 1) * p)] * 1e6


async def serve(node: nullport.Node) -> None:
    async def handle(channel: nullport.Channel) -> None:
        if channel.service == "sink":
            total = 0
            while data := await channel.read(1 << 20):
                total += len(data)
            await channel.write(total.to_bytes(8, "little"))
            await channel.close()
        else:  # echo
            while data := await channel.read():
                await channel.write(data)
            await channel.close()

    async for incoming in node.incoming():
        channel = await incoming.accept()
        asyncio.create_task(handle(channel))


async def main(args: argparse.Namespace) -> None:
    with tempfile.TemporaryDirectory() as d:
        proc, relay = start_relay(Path(args.bin_dir), Path(d))
        try:
            a = await nullport.Node.start(nullport.Identity.generate(), relay)
            b = await nullport.Node.start(nullport.Identity.generate(), relay)
            server = asyncio.create_task(serve(b))

            setups = []
            for _ in range(args.setups):
                t = time.perf_counter()
                ch = await a.dial(b.node_id, "echo")
                setups.append(time.perf_counter() - t)
                await ch.close()
            print(f"channel setup (dial to accepted), {args.setups} sequential: p50 {pct(setups, .5):.0f} us, p99 {pct(setups, .99):.0f} us")

            msg = bytes(64)
            ch = await a.dial(b.node_id, "echo")
            rtts = []
            for _ in range(args.trips):
                t = time.perf_counter()
                await ch.write(msg)
                await ch.readexactly(64)
                rtts.append(time.perf_counter() - t)
            await ch.close()
            print(f"64 B round trip, Channel, {args.trips}: p50 {pct(rtts, .5):.0f} us, p99 {pct(rtts, .99):.0f} us")

            reader, writer = await nullport.open_connection(a, b.node_id, "echo")
            rtts = []
            for _ in range(args.trips):
                t = time.perf_counter()
                writer.write(msg)
                await writer.drain()
                await reader.readexactly(64)
                rtts.append(time.perf_counter() - t)
            writer.close()
            await writer.wait_closed()
            print(f"64 B round trip, asyncio streams, {args.trips}: p50 {pct(rtts, .5):.0f} us, p99 {pct(rtts, .99):.0f} us")

            chunk = os.urandom(1 << 20)
            ch = await a.dial(b.node_id, "sink")
            t = time.perf_counter()
            for _ in range(args.bytes // len(chunk)):
                await ch.write(chunk)
            await ch.write_eof()
            assert int.from_bytes(await ch.readexactly(8), "little") == args.bytes
            elapsed = time.perf_counter() - t
            await ch.close()
            print(f"bulk, Channel.write of 1 MiB chunks, {args.bytes >> 20} MiB: {args.bytes * 8 / elapsed / 1e9:.2f} Gbit/s")

            reader, writer = await nullport.open_connection(a, b.node_id, "sink")
            t = time.perf_counter()
            for _ in range(args.bytes // len(chunk)):
                writer.write(chunk)
                await writer.drain()
            writer.write_eof()
            assert int.from_bytes(await reader.readexactly(8), "little") == args.bytes
            elapsed = time.perf_counter() - t
            writer.close()
            await writer.wait_closed()
            print(f"bulk, StreamWriter.write + drain, {args.bytes >> 20} MiB: {args.bytes * 8 / elapsed / 1e9:.2f} Gbit/s")

            server.cancel()
            await a.close()
            await b.close()
        finally:
            proc.terminate()
            proc.wait()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bin-dir", default=os.environ.get("NULLPORT_BIN_DIR", "target/release"))
    parser.add_argument("--bytes", type=int, default=256 << 20)
    parser.add_argument("--trips", type=int, default=2000)
    parser.add_argument("--setups", type=int, default=200)
    asyncio.run(main(parser.parse_args()))
