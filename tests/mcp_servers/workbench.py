"""A small MCP server written with the official `mcp` SDK, run by the tests over stdio (or, with
`--http PORT`, over streamable HTTP): tools that answer, fail, take too long, crash the server, add
a tool (announcing the change), and read back a request header."""

from __future__ import annotations

import os
import sys
import time

from mcp.server.mcpserver import Context, MCPServer

server = MCPServer("workbench")


@server.tool()
def multiply(a: float, b: float) -> float:
    """Multiply two numbers."""
    return a * b


@server.tool()
def fail(reason: str) -> str:
    """Always fails, saying why."""
    raise ValueError(reason)


@server.tool()
def sleep(seconds: float) -> str:
    """Waits, then answers."""
    time.sleep(seconds)
    return "slept"


@server.tool()
def crash() -> str:
    """Ends the server's process at once."""
    os._exit(3)


@server.tool()
async def learn_greeting(ctx: Context) -> str:
    """Adds the tool `greet`, and tells the client its tools changed."""

    @server.tool()
    def greet(name: str) -> str:
        """Greets someone."""
        return f"hello, {name}"

    await ctx.notify_tools_changed()
    return "learned to greet"


@server.tool()
def header(name: str, ctx: Context) -> str:
    """The value of one header of the HTTP request that carried this call."""
    return (ctx.headers or {}).get(name, "(none)")


if __name__ == "__main__":
    print("workbench MCP server starting", file=sys.stderr)
    if len(sys.argv) == 3 and sys.argv[1] == "--http":
        server.run("streamable-http", host="127.0.0.1", port=int(sys.argv[2]))
    else:
        server.run()
