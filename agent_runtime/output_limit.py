"""Capping a tool result's size, saying how much was cut.

A tool that returns a megabyte of text would blow the model's context; the dispatcher keeps the
head of each large text part and appends a note with the number of characters removed.
"""

from __future__ import annotations

import json

from .types import ContentPart, DataPart, TextPart, ToolResult


def result_size(result: ToolResult) -> int:
    """Characters the model would read: text parts plus JSON of data parts."""
    size = 0
    for part in result.content:
        if isinstance(part, TextPart):
            size += len(part.text)
        elif isinstance(part, DataPart):
            size += len(json.dumps(part.data, ensure_ascii=False, default=str))
    return size


def cap_result(result: ToolResult, max_chars: int) -> ToolResult:
    """Return ``result`` unchanged if it fits, else a copy whose text is cut to fit."""
    total = result_size(result)
    if total <= max_chars:
        return result
    budget = max_chars
    parts: list[ContentPart] = []
    for part in result.content:
        if isinstance(part, DataPart):
            part = TextPart(text=json.dumps(part.data, ensure_ascii=False, default=str))
        if isinstance(part, TextPart):
            keep = max(0, budget)
            if len(part.text) > keep:
                cut = len(part.text) - keep
                part = TextPart(
                    text=part.text[:keep]
                    + f"\n[truncated: {cut} of {len(part.text)} characters cut; "
                    f"the result was {total} characters, the limit is {max_chars}]"
                )
            budget -= min(len(part.text), keep)
        parts.append(part)
    structured = result.structured_content
    if structured is not None and len(json.dumps(structured, default=str)) > max_chars:
        structured = None
    return ToolResult(content=parts, structured_content=structured, is_error=result.is_error)
