"""Turning whatever a Python tool returned into a ``ToolResult``.

Tool authors return what is natural (a string, a pydantic model, a dict, bytes, ``None``); every
face of the runtime (the model, MCP, A2A) needs the same normalised shape. Objects also become
``structured_content`` so an MCP client gets its ``structuredContent``.
"""

from __future__ import annotations

from typing import Any

from pydantic_core import to_jsonable_python

from agent_runtime.types import (
    BinaryPart,
    DataPart,
    ResourceLink,
    ResourcePart,
    TextPart,
    ToolResult,
)

__all__ = ["to_tool_result"]

_PART_TYPES = (TextPart, DataPart, BinaryPart, ResourceLink, ResourcePart)


def to_tool_result(value: Any) -> ToolResult:
    """Normalise a tool's return value.

    - ``str`` -> one text part; ``None`` -> one empty text part
    - ``ToolResult`` -> unchanged
    - a content part, or a list of them -> those parts
    - ``bytes`` -> one ``application/octet-stream`` binary part
    - anything JSON-like (pydantic model, dataclass, dict, list, number, bool) -> one data part;
      objects are also ``structured_content``
    """
    if isinstance(value, str):
        return ToolResult(content=[TextPart(text=value)])
    if isinstance(value, ToolResult):
        return value
    if value is None:
        return ToolResult(content=[TextPart(text="")])
    if isinstance(value, _PART_TYPES):
        return ToolResult(content=[value])
    if isinstance(value, bytes | bytearray | memoryview):
        return ToolResult(
            content=[BinaryPart(data=bytes(value), media_type="application/octet-stream")]
        )
    if (
        isinstance(value, list | tuple)
        and value
        and all(isinstance(item, _PART_TYPES) for item in value)
    ):
        return ToolResult(content=list(value))
    data = to_jsonable_python(value, by_alias=True, fallback=str)
    if isinstance(data, dict):
        return ToolResult(content=[DataPart(data=data)], structured_content=data)
    return ToolResult(content=[DataPart(data=data)])
