"""An official MCP SDK client (Python `mcp` package) for nullport's tests.

Usage: mcp_client.py '<json: [command, args...]>' '<json: [{"tool": .., "args": {..}}, ..]>'
Launches the command as a stdio MCP server (it is `nullport mcp bridge ...`), initializes,
lists tools, makes each call in order, and prints one JSON object with what happened.
"""
import asyncio
import json
import sys

from mcp import ClientSession, StdioServerParameters
from mcp.client.stdio import stdio_client


async def main() -> None:
    command = json.loads(sys.argv[1])
    calls = json.loads(sys.argv[2]) if len(sys.argv) > 2 else []
    out = {"calls": []}
    params = StdioServerParameters(command=command[0], args=command[1:])
    async with stdio_client(params) as (read, write):
        async with ClientSession(read, write) as session:
            init = await session.initialize()
            info = getattr(init, "server_info", None) or getattr(init, "serverInfo")
            out["server"] = info.name
            tools = await session.list_tools()
            out["tools"] = sorted(t.name for t in tools.tools)
            for call in calls:
                try:
                    result = await session.call_tool(call["tool"], call.get("args", {}))
                    text = " ".join(getattr(c, "text", "") for c in result.content)
                    is_error = getattr(result, "is_error", None)
                    if is_error is None:
                        is_error = getattr(result, "isError", False)
                    out["calls"].append({"ok": not is_error, "text": text})
                except Exception as e:  # JSON-RPC errors arrive as McpError
                    error = getattr(e, "error", None)
                    out["calls"].append({"ok": False, "code": getattr(error, "code", None), "message": str(e)})
    print(json.dumps(out), flush=True)


asyncio.run(main())
