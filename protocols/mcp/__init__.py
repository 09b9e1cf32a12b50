"""MCP client toolsets: connect to MCP servers the way a desktop host does.

``load_mcp_config`` reads the ``mcpServers`` JSON; ``MCPToolset`` is one server's tools (stdio or
streamable HTTP, both protocol eras) over the official ``mcp`` SDK; ``MCPServers`` connects many
concurrently and leaves out the ones that fail.

The SDK is imported on first use of a name that needs it, so reading and checking a config stays
cheap (``import agent_runtime`` never imports it).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .config import HttpServerConfig, ServerConfig, StdioServerConfig, load_mcp_config
from .errors import MCPConnectionError

if TYPE_CHECKING:
    from .manager import MCPServers, mcp_toolsets_from_config
    from .toolset import ElicitationResult, MCPToolset

__all__ = [
    "ElicitationResult",
    "HttpServerConfig",
    "MCPConnectionError",
    "MCPServers",
    "MCPToolset",
    "ServerConfig",
    "StdioServerConfig",
    "load_mcp_config",
    "mcp_toolsets_from_config",
]

_LAZY = {
    "MCPServers": "manager",
    "mcp_toolsets_from_config": "manager",
    "MCPToolset": "toolset",
    "ElicitationResult": "toolset",
}


def __getattr__(name: str) -> Any:
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    from importlib import import_module

    return getattr(import_module(f"{__name__}.{module}"), name)
