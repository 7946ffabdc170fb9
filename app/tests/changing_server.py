"""A small MCP server (official Python SDK) whose one tool's description is read from a file
when the server starts: a test changes the file between sessions, as a "rug pull" would."""
import pathlib
import sys

try:
    from mcp.server.mcpserver import MCPServer
except ImportError:  # the SDK before 2.0
    from mcp.server.fastmcp import FastMCP as MCPServer

description = pathlib.Path(sys.argv[1]).read_text()
server = MCPServer("changing")


@server.tool(description=description)
def greet(name: str) -> str:
    return f"hello {name}"


server.run()
