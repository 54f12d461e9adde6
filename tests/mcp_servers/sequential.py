"""An MCP server of the handshake protocol (2025-06-18) that handles one request at a time, as many
small servers do: while a tool works, nothing else is answered, pings included. Newline-delimited
JSON-RPC on stdio, written by hand (the SDK's own servers answer concurrently)."""

from __future__ import annotations

import json
import sys
import time

TOOLS = [
    {
        "name": "work",
        "description": "Works for a while, answering nothing else meanwhile.",
        "inputSchema": {
            "type": "object",
            "properties": {"seconds": {"type": "number"}},
            "required": ["seconds"],
        },
    }
]


def answer(request: dict) -> dict | None:
    method, params = request.get("method"), request.get("params") or {}
    if "id" not in request:
        return None  # a notification
    if method == "initialize":
        result = {
            "protocolVersion": "2025-06-18",
            "capabilities": {"tools": {}},
            "serverInfo": {"name": "sequential", "version": "1"},
        }
    elif method == "ping":
        result = {}
    elif method == "tools/list":
        result = {"tools": TOOLS}
    elif method == "tools/call" and params.get("name") == "work":
        time.sleep(float(params.get("arguments", {}).get("seconds", 0)))
        result = {"content": [{"type": "text", "text": "worked"}], "isError": False}
    else:
        return {"jsonrpc": "2.0", "id": request["id"], "error": {"code": -32601, "message": f"no {method}"}}
    return {"jsonrpc": "2.0", "id": request["id"], "result": result}


if __name__ == "__main__":
    for line in sys.stdin:
        if line.strip():
            reply = answer(json.loads(line))
            if reply is not None:
                sys.stdout.write(json.dumps(reply) + "\n")
                sys.stdout.flush()
