"""An agent that reads a file on another machine through nullport, with the MCP SDK's own
ClientSession: no bridge process, no daemon on the agent's side.

The tool host runs a daemon exposing the official filesystem MCP server, and lets this agent
(trusted there under the alias `my-agent`) read and list, nothing else:

    nullport expose mcp files -- npx -y @modelcontextprotocol/server-filesystem /srv/docs
    nullport mcp allow my-agent files --tools 'read_text_file,list_*'

Here (the agent's home trusts the host as `files-host`):

    python mcp_remote_files.py --home ~/.config/nullport --relay RELAY files-host/files /srv/docs/hello.txt

The agent sees only the tools it may call; each call it makes comes back with a receipt the
host signed, which the Rust side checked (printed at the end).
"""

import argparse
import asyncio

from mcp import ClientSession

import nullport
import nullport.mcp


async def main(args: argparse.Namespace) -> None:
    identity = nullport.Identity.from_home(args.home)
    async with await nullport.Node.start(identity, args.relay) as node:
        async with nullport.mcp.connect(node, args.target) as streams:
            async with ClientSession(*streams) as session:
                await session.initialize()
                listed = await session.list_tools()
                print("tools:", ", ".join(sorted(tool.name for tool in listed.tools)))
                result = await session.call_tool("read_text_file", {"path": args.path})
                for content in result.content:
                    print(getattr(content, "text", ""), end="")
            for receipt in streams.receipts:
                print(f"receipt: call {receipt.id} {receipt.decision}, signed by {receipt.callee}, valid={receipt.valid}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", default=None, help="this agent's nullport home (identity, trust store)")
    parser.add_argument("--relay", required=True, help="the relay, <relay NodeId>@HOST:PORT")
    parser.add_argument("target", help="PEER/SERVICE: the tool host (NodeId or alias) and its MCP service")
    parser.add_argument("path", help="the file to read, as the tool host names it")
    asyncio.run(main(parser.parse_args()))
