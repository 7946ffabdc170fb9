"""The Python package against the Rust library, same run, same topology (docs/python.md).

Both callers talk to the same Rust bench server (`np-bench serve-node`, a Rust node serving
`E` echo and `D` download) through a `np-bench relay` process on loopback:
- Python: a `nullport.Node` in this process dials it;
- Rust: `np-bench run --paths nullport` (the library's `Node` in np-bench's own process),
  started right after, on the same machine, with the same workloads.

Measured the way np-bench measures: new channel to its first echoed byte (p50), 64 B round
trip on one channel (p50, p99), one-stream download of --bytes through `Channel.read` and
through the asyncio `StreamReader`. Prints each figure and the ratio Python / Rust.

    python python/benches/vs_rust.py --np-bench target/release/np-bench [--bytes 268435456]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import nullport


def role(np_bench: str, *args: str) -> tuple[subprocess.Popen, list[str]]:
    proc = subprocess.Popen([np_bench, *args], stdout=subprocess.PIPE, text=True)
    assert proc.stdout is not None
    return proc, proc.stdout.readline().split()


def p(samples: list[float], q: float) -> float:
    s = sorted(samples)
    return s[min(len(s) - 1, int(len(s) * q))]


async def first_echo(node: nullport.Node, peer: str) -> None:
    ch = await node.dial(peer, "bench")
    await ch.write(b"E!")
    assert await ch.readexactly(1) == b"!"
    await ch.close()


async def download(read, length: int) -> int:  # type: ignore[no-untyped-def]
    got = 0
    while got < length:
        data = await read(min(256 * 1024, length - got))
        if not data:
            break
        got += len(data)
    return got


async def python_side(relay: str, peer: str, args: argparse.Namespace) -> dict:
    out: dict = {}
    async with await nullport.Node.start(nullport.Identity.generate(), relay) as node:
        for _ in range(20):  # warm up: the relay link, the first handshakes
            await first_echo(node, peer)
        setups = []
        for _ in range(args.setups):
            t = time.perf_counter()
            await first_echo(node, peer)
            setups.append((time.perf_counter() - t) * 1e6)
        out["setup_p50_us"] = statistics.median(setups)

        ch = await node.dial(peer, "bench")
        await ch.write(b"E")
        rtts = []
        msg = bytes(64)
        for _ in range(args.trips):
            t = time.perf_counter()
            await ch.write(msg)
            await ch.readexactly(64)
            rtts.append((time.perf_counter() - t) * 1e6)
        await ch.close()
        out["rtt64_p50_us"] = statistics.median(rtts)
        out["rtt64_p99_us"] = p(rtts, 0.99)

        header = b"D" + args.bytes.to_bytes(8, "big")
        ch = await node.dial(peer, "bench")
        t = time.perf_counter()
        await ch.write(header)
        got = await download(ch.read, args.bytes)
        elapsed = time.perf_counter() - t
        await ch.close()
        assert got == args.bytes, (got, args.bytes)
        out["down_channel_gbps"] = args.bytes * 8 / elapsed / 1e9

        reader, writer = await nullport.open_connection(node, peer, "bench")
        t = time.perf_counter()
        writer.write(header)
        await writer.drain()
        got = await download(reader.read, args.bytes)
        elapsed = time.perf_counter() - t
        writer.close()
        await writer.wait_closed()
        assert got == args.bytes, (got, args.bytes)
        out["down_streams_gbps"] = args.bytes * 8 / elapsed / 1e9
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--np-bench", default="target/release/np-bench")
    ap.add_argument("--bytes", type=int, default=256 << 20)
    ap.add_argument("--setups", type=int, default=1000)
    ap.add_argument("--trips", type=int, default=10000)
    args = ap.parse_args()

    relay_proc, words = role(args.np_bench, "relay")
    relay = f"{words[1]}@{words[2]}"
    server_proc, words = role(args.np_bench, "serve-node", "--relay", relay)
    try:
        py = asyncio.run(python_side(relay, words[1], args))
    finally:
        for proc in (server_proc, relay_proc):
            proc.kill()
            proc.wait()

    with tempfile.TemporaryDirectory() as d:
        out = Path(d) / "rust.json"
        subprocess.run(
            [args.np_bench, "run", "--paths", "nullport", "--bytes", str(args.bytes), "--json", str(out)],
            check=True,
            stdout=sys.stderr,
        )
        results = json.loads(out.read_text())
    paths = results["paths"] if isinstance(results, dict) and "paths" in results else results
    rust = next(r for r in paths if r["name"] == "nullport")
    rows = [
        ("new channel to first echo p50, us", py["setup_p50_us"], rust["setup_us"]["p50"]),
        ("64 B round trip p50, us", py["rtt64_p50_us"], rust["rtt64_us"]["p50"]),
        ("64 B round trip p99, us", py["rtt64_p99_us"], rust["rtt64_us"]["p99"]),
        ("download, Channel.read, Gbit/s", py["down_channel_gbps"], rust["bulk1_down_gbps"]),
        ("download, asyncio StreamReader, Gbit/s", py["down_streams_gbps"], rust["bulk1_down_gbps"]),
    ]
    print(f"{'':40} {'Python':>10} {'Rust':>10} {'Py/Rust':>8}")
    for label, a, b in rows:
        print(f"{label:40} {a:10.1f} {b:10.1f} {a / b:8.2f}x")


if __name__ == "__main__":
    main()
