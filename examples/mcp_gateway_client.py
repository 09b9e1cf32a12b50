"""A host in front of the gateway: ``python examples/mcp_gateway_client.py``.

Starts ``agent-runtime mcp-serve --gateway --config examples/mcp_gateway.json`` over stdio with
the official ``mcp`` SDK client, as a desktop host would, lists the tools of both servers
behind it, calls one of each, and shows that a bad argument is refused by the gateway before
it reaches the server (needs ``mcp-server-time`` and ``npx`` on PATH).
"""

from __future__ import annotations

import sys
from pathlib import Path

import anyio
import mcp_types as mt
from mcp import Client, StdioServerParameters

CONFIG = Path(__file__).resolve().parent / "mcp_gateway.json"


def _text(result: mt.CallToolResult) -> str:
    return " ".join(b.text for b in result.content if isinstance(b, mt.TextContent))


async def main() -> None:
    gateway = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agent_runtime.cli", "mcp-serve", "--gateway", "--config", str(CONFIG)],
    )
    async with Client(gateway, mode="legacy", read_timeout_seconds=120) as client:
        tools = [tool.name for tool in (await client.list_tools()).tools]
        print(f"{len(tools)} tools:", ", ".join(tools))
        now = await client.call_tool("time__get_current_time", {"timezone": "Europe/Paris"})
        print("time__get_current_time:", _text(now))
        echo = await client.call_tool("everything__echo", {"message": "through the gateway"})
        print("everything__echo:", _text(echo))
        bad = await client.call_tool("time__get_current_time", {"timezone": 42})
        print("refused:" if bad.is_error else "accepted:", _text(bad))


if __name__ == "__main__":
    anyio.run(main)
