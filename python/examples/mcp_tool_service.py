"""A Python MCP tool service, exposed through nullport to one named caller.

The server is the MCP SDK's own MCPServer; nullport's embedded node serves it behind the same
JSON-RPC firewall and policy file as `nullport expose mcp` (the firewall is the Rust one).
Nobody may call until the home's policy says so. Allow one caller (an alias of the home's trust
store) two of the three tools:

    nullport trust add planner np...
    nullport mcp allow planner notes --tools add_note,list_notes

    python mcp_tool_service.py --home ~/.config/nullport --relay RELAY

`planner` then sees `add_note` and `list_notes` (never `clear_notes`), from Python with
`nullport.mcp.connect(node, "<this node>/notes")` or from a daemon with
`nullport mcp bridge <this node>/notes`. Anyone else is refused before a byte of MCP flows.
After editing the policy, `kill -HUP` this process: a caller whose rule is gone loses its live
session at once.
"""

import argparse
import asyncio
import signal

from mcp.server.mcpserver import MCPServer

import nullport
import nullport.mcp

server = MCPServer("notes")
notes: list = []


@server.tool()
def add_note(text: str) -> str:
    """Adds a note, signed with the caller's name."""
    caller = nullport.mcp.current_caller()
    author = (caller.alias or caller.peer) if caller else "?"
    notes.append(f"{author}: {text}")
    return f"noted ({len(notes)} notes)"


@server.tool()
def list_notes() -> str:
    """All the notes."""
    return "\n".join(notes) or "(no notes)"


@server.tool()
def clear_notes() -> str:
    """Deletes every note (for the owner only: no policy rule grants it)."""
    notes.clear()
    return "cleared"


async def main(args: argparse.Namespace) -> None:
    identity = nullport.Identity.from_home(args.home)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stop.set)
    loop.add_signal_handler(signal.SIGINT, stop.set)
    async with await nullport.Node.start(identity, args.relay) as node:
        async with nullport.mcp.expose(node, args.service, server, home=args.home) as service:
            loop.add_signal_handler(signal.SIGHUP, service.reload)
            print(f"serving {args.service} as {node.node_id}", flush=True)
            await stop.wait()
    print("stopped", flush=True)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None, help="this node's nullport home (identity, policy, trust store)")
    parser.add_argument("--relay", required=True, help="the relay, <relay NodeId>@HOST:PORT")
    parser.add_argument("--service", default="notes", help="the MCP service name (default: notes)")
    asyncio.run(main(parser.parse_args()))
