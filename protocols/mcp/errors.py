"""Errors raised by the MCP client toolsets and their OAuth configuration."""

from __future__ import annotations

from agent_runtime.errors import AgentRuntimeError, ConfigError, UserError


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


class MCPNotInstalledError(UserError, ImportError):
    """The MCP client was asked for, but the ``mcp`` extra (the official SDK) is not installed.

    Raised instead of the SDK's own ``ModuleNotFoundError`` so that a user who points the CLI at
    a config with MCP servers reads one line saying what to install, not a traceback ending in
    a module name they never heard of. It is still an ``ImportError`` for code that catches
    that. ``missing`` is the module that could not be imported; ``detail``, when given, is why
    an installed SDK could not be used (a version that lacks a name this runtime imports).
    """

    def __init__(self, missing: str, detail: str = "") -> None:
        if detail:
            # The SDK is there but is not the version this runtime was built for.
            message = (
                f"MCP servers need the 'mcp' extra, and the installed one does not fit "
                f"({detail}): pip install -U 'agent-runtime[mcp]'"
            )
        else:
            message = (
                f"MCP servers need the 'mcp' extra, which is not installed (no module named "
                f"{missing!r}): pip install 'agent-runtime[mcp]'"
            )
        super().__init__(message, name=missing)
        self.missing = missing


class OAuthConfigError(ConfigError, ValueError):
    """An ``oauth`` configuration that cannot work (missing secret, unknown grant ...).

    Still a ``ValueError`` for code that catches that.
    """
