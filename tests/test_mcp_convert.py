"""The mapping between MCP wire types and the runtime's types, field by field."""

from __future__ import annotations

import base64

import mcp_types as mt
import pytest
from support_processes import free_port

from agent_runtime.protocols.mcp import HttpServerConfig, MCPConnectionError, MCPToolset
from agent_runtime.protocols.mcp._convert import (
    content_parts,
    sampling_messages,
    tool_result,
    tool_spec,
)
from agent_runtime.types import (
    AssistantMessage,
    BinaryPart,
    ResourceLink,
    ResourcePart,
    SystemMessage,
    TextPart,
    UserMessage,
)


def test_tool_spec_maps_annotations_title_and_schemas() -> None:
    tool = mt.Tool(
        name="search",
        title="Search the web",
        description="Find pages",
        input_schema={"type": "object", "properties": {"q": {"type": "string"}}},
        output_schema={"type": "object", "properties": {"hits": {"type": "integer"}}},
        annotations=mt.ToolAnnotations(
            read_only_hint=True, destructive_hint=False, idempotent_hint=True, open_world_hint=True
        ),
    )
    spec = tool_spec(tool, "web__search", "mcp:web")
    assert spec.name == "web__search"
    assert spec.origin == "mcp:web"
    assert spec.description == "Find pages"
    assert spec.input_schema["properties"] == {"q": {"type": "string"}}
    assert spec.output_schema == {"type": "object", "properties": {"hits": {"type": "integer"}}}
    hints = spec.annotations
    assert (
        hints.title,
        hints.read_only,
        hints.destructive,
        hints.idempotent,
        hints.open_world,
    ) == (
        "Search the web",
        True,
        False,
        True,
        True,
    )
    bare = tool_spec(mt.Tool(name="t", input_schema={"type": "object"}), "t", "mcp:x")
    assert bare.annotations.read_only is None and bare.output_schema is None


def test_every_content_block_kind_becomes_a_part() -> None:
    wav = b"RIFF\x00\x00WAVEfmt "
    blob = bytes(range(256))
    parts = content_parts(
        [
            mt.TextContent(type="text", text="hi"),
            mt.AudioContent(
                type="audio", data=base64.b64encode(wav).decode(), mime_type="audio/wav"
            ),
            mt.EmbeddedResource(
                type="resource",
                resource=mt.BlobResourceContents(
                    uri="file:///x.bin",
                    blob=base64.b64encode(blob).decode(),
                    mime_type="application/octet-stream",
                ),
            ),
            mt.ResourceLink(
                type="resource_link", uri="file:///doc.md", name="doc", description="the doc"
            ),
        ]
    )
    assert parts[0] == TextPart(text="hi")
    assert parts[1] == BinaryPart(data=wav, media_type="audio/wav")
    assert isinstance(parts[1], BinaryPart) and parts[1].is_audio
    assert parts[2] == ResourcePart(
        uri="file:///x.bin", blob=blob, media_type="application/octet-stream"
    )
    assert parts[3] == ResourceLink(uri="file:///doc.md", name="doc", description="the doc")


def test_server_error_flag_and_structured_content_are_kept() -> None:
    result = tool_result(
        mt.CallToolResult(
            content=[mt.TextContent(type="text", text="quota exceeded")],
            structured_content={"retry_after": 30},
            is_error=True,
        )
    )
    assert result.is_error
    assert result.text_content == "quota exceeded"
    assert result.structured_content == {"retry_after": 30}


def test_sampling_request_becomes_a_conversation() -> None:
    params = mt.CreateMessageRequestParams(
        messages=[
            mt.SamplingMessage(role="user", content=mt.TextContent(type="text", text="Look:")),
            mt.SamplingMessage(
                role="user",
                content=mt.ImageContent(type="image", data="AAAA", mime_type="image/png"),
            ),
            mt.SamplingMessage(role="assistant", content=mt.TextContent(type="text", text="A cat")),
        ],
        system_prompt="Be brief.",
        max_tokens=10,
    )
    assert sampling_messages(params) == [
        SystemMessage(content="Be brief."),
        UserMessage(content="Look:"),
        UserMessage(content="[image/png attachment]"),
        AssistantMessage(text="A cat"),
    ]


@pytest.mark.anyio
async def test_unreachable_http_server_fails_to_start_with_the_reason() -> None:
    url = f"http://127.0.0.1:{free_port()}/mcp"  # nothing listens there
    with pytest.raises(MCPConnectionError, match="'down' failed to start: ConnectError"):
        async with MCPToolset("down", HttpServerConfig(url)):
            pass  # pragma: no cover - never reached
