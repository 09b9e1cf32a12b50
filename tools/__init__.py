"""Local Python tools: the ``@tool`` decorator and ``FunctionToolset``.

``from agent_runtime.tools import tool, FunctionToolset, Tool``. A decorated function keeps
working as a function and can be passed straight to ``Agent(tools=[...])``.
"""

from __future__ import annotations

from agent_runtime.toolset import ToolContext
from agent_runtime.types import ToolAnnotations

from .decorator import Tool, tool
from .function_toolset import FunctionToolset
from .results import to_tool_result

__all__ = ["FunctionToolset", "Tool", "ToolAnnotations", "ToolContext", "to_tool_result", "tool"]
