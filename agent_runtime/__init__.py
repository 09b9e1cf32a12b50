"""agent-runtime: an agentic tool-use runtime.

``from agent_runtime import Agent, tool``. Importing this package stays light: no torch, no MCP
SDK, no web server; those load where they are used.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["Agent", "tool", "__version__"]

if TYPE_CHECKING:
    from .agent import Agent
    from .tools import tool


def __getattr__(name: str) -> Any:
    # Lazy so that `import agent_runtime` costs little; `tool` lives in agent_runtime.tools.
    if name == "Agent":
        from .agent import Agent

        return Agent
    if name == "tool":
        from .tools import tool

        return tool
    raise AttributeError(f"module 'agent_runtime' has no attribute {name!r}")
