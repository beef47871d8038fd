"""MCP messages that tests send by hand, where a test speaks the wire itself."""

from __future__ import annotations

from typing import Any

# the JSON-RPC request that opens a session
HELLO: dict[str, Any] = {
    "jsonrpc": "2.0",
    "id": 1,
    "method": "initialize",
    "params": {
        "protocolVersion": "2025-06-18",
        "capabilities": {},
        "clientInfo": {"name": "probe", "version": "1"},
    },
}
