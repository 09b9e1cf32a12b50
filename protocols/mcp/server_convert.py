"""Translation from the runtime's own types to MCP wire types, for the MCP server face.

The client side (``_convert``) reads what servers send; this module writes what our server
sends: tool specs as MCP tools, tool results as MCP call results, and a conversation as the
messages of a sampling request passed on to the host in front.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Sequence

import mcp_types as mt

from agent_runtime.types import (
    AssistantMessage,
    BinaryPart,
    ContentPart,
    DataPart,
    Message,
    ResourceLink,
    ResourcePart,
    SystemMessage,
    TextPart,
    ToolResult,
    ToolResultMessage,
    ToolSpec,
    UserMessage,
)


def mcp_tool(spec: ToolSpec) -> mt.Tool:
    """A runtime tool spec as the MCP tool a host lists (schema and hints kept)."""
    hints = spec.annotations
    annotations = mt.ToolAnnotations(
        title=hints.title,
        read_only_hint=hints.read_only,
        destructive_hint=hints.destructive,
        idempotent_hint=hints.idempotent,
        open_world_hint=hints.open_world,
    )
    return mt.Tool(
        name=spec.name,
        title=hints.title,
        description=spec.description or None,
        input_schema=spec.input_schema,
        output_schema=spec.output_schema,
        annotations=annotations,
    )


def _resource_contents(part: ResourcePart) -> mt.TextResourceContents | mt.BlobResourceContents:
    if part.blob is not None:
        return mt.BlobResourceContents(
            uri=part.uri,
            blob=base64.b64encode(part.blob).decode("ascii"),
            mime_type=part.media_type,
        )
    return mt.TextResourceContents(uri=part.uri, text=part.text or "", mime_type=part.media_type)


def content_block(part: ContentPart) -> mt.ContentBlock:
    """One runtime content part as an MCP content block."""
    if isinstance(part, TextPart):
        return mt.TextContent(type="text", text=part.text)
    if isinstance(part, DataPart):
        return mt.TextContent(type="text", text=json.dumps(part.data, ensure_ascii=False))
    if isinstance(part, BinaryPart):
        data = base64.b64encode(part.data).decode("ascii")
        if part.media_type.startswith("audio/"):
            return mt.AudioContent(type="audio", data=data, mime_type=part.media_type)
        return mt.ImageContent(type="image", data=data, mime_type=part.media_type)
    if isinstance(part, ResourceLink):
        return mt.ResourceLink(
            type="resource_link",
            uri=part.uri,
            name=part.name or part.uri,
            description=part.description,
            mime_type=part.media_type,
        )
    return mt.EmbeddedResource(type="resource", resource=_resource_contents(part))


def call_result(result: ToolResult) -> mt.CallToolResult:
    """A runtime tool result as the MCP result of ``tools/call`` (``isError`` kept)."""
    return mt.CallToolResult(
        content=[content_block(part) for part in result.content],
        structured_content=result.structured_content,
        is_error=result.is_error,
    )


def resource_contents(
    parts: Sequence[ResourcePart],
) -> list[mt.TextResourceContents | mt.BlobResourceContents]:
    """A resource read through the client side, as ``resources/read`` contents again."""
    return [_resource_contents(part) for part in parts]


def sampling_request(
    messages: Sequence[Message],
) -> tuple[str | None, list[mt.SamplingMessage]]:
    """A conversation as a sampling request's system prompt and messages.

    Tool calls and tool results (which a sampling request from a server does not carry) are
    written as text, so nothing is silently lost.
    """
    system: list[str] = []
    out: list[mt.SamplingMessage] = []
    for message in messages:
        if isinstance(message, SystemMessage):
            system.append(message.content)
            continue
        if isinstance(message, AssistantMessage):
            role, text = "assistant", message.text
        elif isinstance(message, UserMessage):
            role, text = "user", message.content
        elif isinstance(message, ToolResultMessage):
            role, text = "user", message.result.text_content
        else:  # pragma: no cover - every message kind is handled above
            continue
        out.append(mt.SamplingMessage(role=role, content=mt.TextContent(type="text", text=text)))
    return ("\n\n".join(system) or None), out
