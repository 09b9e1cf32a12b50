"""Translation between MCP wire types and the runtime's own types.

Kept apart from the toolset so that the mapping (which MCP field becomes which runtime field)
can be read, and tested, in one place.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Sequence
from typing import Any

import mcp_types as mt

from agent_runtime.types import (
    AssistantMessage,
    BinaryPart,
    ContentPart,
    Message,
    ResourceLink,
    ResourcePart,
    SystemMessage,
    TextPart,
    ToolAnnotations,
    ToolResult,
    ToolSpec,
    UserMessage,
)


def tool_spec(tool: mt.Tool, exposed_name: str, origin: str) -> ToolSpec:
    """The runtime's view of an MCP tool, listed under ``exposed_name``."""
    hints = tool.annotations
    title = tool.title or (hints.title if hints is not None else None)
    annotations = ToolAnnotations(
        title=title,
        read_only=hints.read_only_hint if hints is not None else None,
        destructive=hints.destructive_hint if hints is not None else None,
        idempotent=hints.idempotent_hint if hints is not None else None,
        open_world=hints.open_world_hint if hints is not None else None,
    )
    return ToolSpec(
        name=exposed_name,
        description=tool.description or "",
        input_schema=dict(tool.input_schema) if tool.input_schema else {"type": "object"},
        output_schema=dict(tool.output_schema) if tool.output_schema is not None else None,
        annotations=annotations,
        origin=origin,
    )


def _b64(data: str) -> bytes:
    try:
        return base64.b64decode(data, validate=False)
    except (binascii.Error, ValueError):
        # A server that sent bad base64 still gets its bytes through, undecoded.
        return data.encode("utf-8", "replace")


def resource_part(contents: mt.TextResourceContents | mt.BlobResourceContents) -> ResourcePart:
    """One resource's contents as a content part (text, or decoded bytes)."""
    uri = str(contents.uri)
    if isinstance(contents, mt.TextResourceContents):
        return ResourcePart(uri=uri, text=contents.text, media_type=contents.mime_type)
    return ResourcePart(uri=uri, blob=_b64(contents.blob), media_type=contents.mime_type)


def content_parts(blocks: Sequence[mt.ContentBlock]) -> list[ContentPart]:
    """MCP content blocks as the runtime's content parts, in order."""
    parts: list[ContentPart] = []
    for block in blocks:
        if type(block) is mt.TextContent:  # the common block; exact type skips the ABC check
            parts.append(TextPart.of(block.text))
        elif isinstance(block, mt.TextContent):
            parts.append(TextPart.of(block.text))
        elif isinstance(block, mt.ImageContent | mt.AudioContent):
            parts.append(BinaryPart(data=_b64(block.data), media_type=block.mime_type))
        elif isinstance(block, mt.EmbeddedResource):
            parts.append(resource_part(block.resource))
        elif isinstance(block, mt.ResourceLink):
            parts.append(
                ResourceLink(
                    uri=str(block.uri),
                    name=block.name,
                    description=block.description,
                    media_type=block.mime_type,
                )
            )
        else:  # a block type newer than this code: keep it visible to the model as JSON
            dumped: Any = block.model_dump(mode="json", by_alias=True, exclude_none=True)
            parts.append(TextPart(text=json.dumps(dumped, ensure_ascii=False)))
    return parts


def tool_result(result: mt.CallToolResult) -> ToolResult:
    """An MCP tool result as a ``ToolResult``; the server's ``isError`` flag is kept."""
    # The SDK has validated the result (structuredContent is a JSON object or absent).
    return ToolResult.of_parts(
        content_parts(result.content), result.structured_content, bool(result.is_error)
    )


def _sampling_text(content: Any) -> str:
    blocks = content if isinstance(content, list) else [content]
    out: list[str] = []
    for block in blocks:
        if isinstance(block, mt.TextContent):
            out.append(block.text)
        elif isinstance(block, mt.ImageContent | mt.AudioContent):
            out.append(f"[{block.mime_type} attachment]")
        else:
            out.append(json.dumps(block.model_dump(mode="json", exclude_none=True)))
    return "\n".join(out)


def sampling_messages(params: mt.CreateMessageRequestParams) -> list[Message]:
    """A server's sampling request as a conversation for a ``ModelBackend``.

    Non-text content is described in brackets rather than dropped, so the model at least knows
    that something was attached.
    """
    messages: list[Message] = []
    if params.system_prompt:
        messages.append(SystemMessage(content=params.system_prompt))
    for message in params.messages:
        text = _sampling_text(message.content)
        if message.role == "assistant":
            messages.append(AssistantMessage(text=text))
        else:
            messages.append(UserMessage(content=text))
    return messages
