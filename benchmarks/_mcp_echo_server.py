"""A trivial stdio MCP server for ``mcp_overhead.py``: one ``echo`` tool and nothing else.

Kept minimal so that what the benchmark measures is the client side, not the tool.
"""

from __future__ import annotations

from mcp.server import MCPServer

server = MCPServer("bench-echo")


@server.tool()
def echo(text: str) -> str:
    """Return ``text`` unchanged."""
    return text


if __name__ == "__main__":
    server.run()
