"""MCP tools/call latency from Python, three ways, in one run on loopback: the official
filesystem server over direct stdio; through `nullport mcp bridge` (a daemon on each side);
through the package (`nullport.mcp.connect`, the agent's own embedded node; a daemon on the
tool host). Also the time to a ready session (connect + initialize).

    python python/bench/mcp_latency.py [--calls 500]

Needs the binaries (`cargo build -p nullport -p nullport-relay`, found as the tests find
them) and the peers of `scripts/install-peers`. Prints one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tests"))

import nullport  # noqa: E402
import nullport.mcp  # noqa: E402
from mcp_helpers import FILESYSTEM_SERVER, bridge_command, start_files_host  # noqa: E402


async def measure(streams_cm, path: str, calls: int) -> dict:
    started = time.perf_counter()
    async with streams_cm as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            ready = time.perf_counter() - started
            for _ in range(20):  # warm-up
                await session.call_tool("read_text_file", {"path": path})
            samples = []
            for _ in range(calls):
                t = time.perf_counter()
                result = await session.call_tool("read_text_file", {"path": path})
                samples.append(time.perf_counter() - t)
                assert not result.is_error
    samples.sort()
    return {
        "ready_ms": round(ready * 1e3, 1),
        "median_us": round(statistics.median(samples) * 1e6),
        "p99_us": round(samples[int(len(samples) * 0.99) - 1] * 1e6),
    }


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        host = start_files_host(Path(d))
        try:
            hello = str(host["data"] / "hello.txt")
            direct = StdioServerParameters(command="node", args=[str(FILESYSTEM_SERVER), str(host["data"])])
            from mcp_helpers import Daemon

            agent_daemon = Daemon(host["agent"], host["relay"])
            command = bridge_command(host["agent"], "tool/files")
            bridge = StdioServerParameters(command=command[0], args=command[1:])
            out = {"calls": calls}
            out["stdio"] = await measure(stdio_client(direct), hello, calls)
            out["bridge"] = await measure(stdio_client(bridge), hello, calls)
            agent_daemon.stop()
            identity = nullport.Identity.from_home(str(host["agent"]))
            async with await nullport.Node.start(identity, host["relay"].address) as node:
                # The node's own start is not counted: an agent starts it once.
                out["package"] = await measure(nullport.mcp.connect(node, "tool/files"), hello, calls)
            print(json.dumps(out))
        finally:
            host["daemon"].stop()
            host["relay"].stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    asyncio.run(main(parser.parse_args().calls))
