"""A stdio MCP server whose ``build`` tool reports progress and then waits for a gate file, so a
test can read the progress bar on the screen before the call finishes. It writes its pid to
``GATE_PID_FILE`` and a line to stderr when it starts."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import anyio
from mcp.server import MCPServer
from mcp.server.mcpserver import Context
from mcp_types import ToolAnnotations

server = MCPServer("gate")


@server.tool(annotations=ToolAnnotations(read_only_hint=True))
async def build(steps: int, gate: str, ctx: Context) -> str:
    """Report progress on each step but the last, then wait for the ``gate`` file."""
    for step in range(1, steps):
        await ctx.report_progress(step, steps, f"step {step}")
    # The test (another process) opens the gate by creating the file.
    while not await anyio.Path(gate).exists():  # noqa: ASYNC110
        await anyio.sleep(0.05)
    await ctx.report_progress(steps, steps, "done")
    return f"built in {steps} steps"


if __name__ == "__main__":
    pid_file = os.environ.get("GATE_PID_FILE")
    if pid_file:
        Path(pid_file).write_text(str(os.getpid()))
    print("gate server: warming up the build cache", file=sys.stderr, flush=True)
    server.run()
