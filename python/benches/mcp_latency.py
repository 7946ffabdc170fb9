"""MCP tools/call latency from Python, three ways, in one run on loopback: the official
filesystem server over direct stdio; through `nullport mcp bridge` (a daemon on each side);
through the package (`nullport.mcp.connect`, the agent's own embedded node; a daemon on the
tool host). Also the time to a ready session (connect + initialize). Then a Python MCP server
served by an embedded node (`nullport.mcp.expose`: no server process per session), reached
through the bridge and through the package.

    python python/benches/mcp_latency.py [--calls 1000]    (NULLPORT_BIN_DIR=target/release for release binaries)

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
from mcp.server.mcpserver import MCPServer  # noqa: E402
from conftest import Home, Relay  # noqa: E402
from mcp_helpers import FILESYSTEM_SERVER, bridge_args, files_host, nullport_bin, write_policy  # noqa: E402


def phase(name: str) -> None:
    print(f"mcp bench: {name}", file=sys.stderr, flush=True)


async def measure(streams_cm, path: str, calls: int, tool: str = "read_text_file") -> dict:
    phase(f"session ({tool})")
    started = time.perf_counter()
    async with streams_cm as streams:
        async with ClientSession(streams[0], streams[1]) as session:
            await session.initialize()
            ready = time.perf_counter() - started
            for _ in range(20):  # warm-up
                await session.call_tool(tool, {"path": path})
            samples = []
            for _ in range(calls):
                t = time.perf_counter()
                result = await session.call_tool(tool, {"path": path})
                samples.append(time.perf_counter() - t)
                assert not result.is_error
    phase("session closed")
    samples.sort()
    return {
        "ready_ms": round(ready * 1e3, 1),
        "median_us": round(statistics.median(samples) * 1e6),
        "p99_us": round(samples[int(len(samples) * 0.99) - 1] * 1e6),
    }


async def main(calls: int) -> None:
    with tempfile.TemporaryDirectory() as d:
        directory = Path(d)
        (directory / "relay").mkdir()
        relay = Relay(directory / "relay")
        homes = []

        def make_home(name: str) -> Home:
            homes.append(Home(directory / name))
            return homes[-1]

        try:
            host = files_host(relay, make_home, directory)
            hello = str(host.data / "hello.txt")
            direct = StdioServerParameters(command="node", args=[str(FILESYSTEM_SERVER), str(host.data)])
            host.agent.up(relay)
            bridge = StdioServerParameters(command=nullport_bin(), args=bridge_args(host.agent, "tool/files"))
            out = {"calls": calls}
            out["stdio"] = await measure(stdio_client(direct), hello, calls)
            out["bridge"] = await measure(stdio_client(bridge), hello, calls)
            # A Python server on an embedded node: `pyhost`, allowing the agent `size`.
            pyhost = make_home("pyhost")
            pyhost.run("trust", "add", "agent", host.agent.node_id)
            host.agent.run("trust", "add", "pyhost", pyhost.node_id)
            write_policy(pyhost, "tools", {"agent": ["size"]})
            server = MCPServer("pytools")

            @server.tool()
            def size(path: str) -> str:
                return str(len(path))

            host_node = await nullport.Node.start(nullport.Identity.from_home(str(pyhost.path)), relay.address)
            async with host_node, nullport.mcp.expose(host_node, "tools", server):
                bridge = StdioServerParameters(command=nullport_bin(), args=bridge_args(host.agent, "pyhost/tools"))
                out["python_server_bridge"] = await measure(stdio_client(bridge), hello, calls, "size")
                host.agent.stop()
                phase("agent daemon stopped")
                identity = nullport.Identity.from_home(str(host.agent.path))
                async with await nullport.Node.start(identity, relay.address) as node:
                    # The node's own start is not counted: an agent starts it once.
                    out["package"] = await measure(nullport.mcp.connect(node, "tool/files"), hello, calls)
                    out["python_server_package"] = await measure(
                        nullport.mcp.connect(node, "pyhost/tools"), hello, calls, "size"
                    )
            print(json.dumps(out))
        finally:
            for home in homes:
                home.stop()
            relay.stop()


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=500)
    asyncio.run(main(parser.parse_args().calls))
