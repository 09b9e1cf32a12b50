"""Errors raised by the MCP client toolsets."""

from __future__ import annotations

from agent_runtime.errors import AgentRuntimeError


class MCPConnectionError(AgentRuntimeError):
    """An MCP server could not be started or reached.

    ``stderr_tail`` holds the last lines the server wrote to stderr (stdio servers), which is
    usually where the real reason is: a missing module, a bad flag, a missing API key.
    """

    def __init__(self, server: str, reason: str, stderr_tail: str = "") -> None:
        message = f"MCP server {server!r} failed to start: {reason}"
        if stderr_tail:
            message += f"\n--- last lines of its stderr ---\n{stderr_tail}"
        super().__init__(message)
        self.server = server
        self.reason = reason
        self.stderr_tail = stderr_tail
