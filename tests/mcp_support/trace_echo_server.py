"""An MCP server (stdio, the SDK's low-level ``Server``) that tells what trace context it got.

Every request's method and the ``traceparent`` in its ``_meta`` (or ``null``) is appended as one
JSON line to the file named by the first argument; ``tools/call`` of ``echo_meta`` also answers
with that ``traceparent``, and ``fail`` answers with an error result. One resource
(``trace://meta``) and one prompt (``meta``) answer with it too.
"""

from __future__ import annotations

import json
import sys
from typing import Any

import anyio
import mcp_types as mt
from mcp.server import Server, ServerRequestContext
from mcp.server.stdio import stdio_server

Ctx = ServerRequestContext[Any, Any]
LOG = sys.argv[1]
_OBJECT = {"type": "object", "properties": {"text": {"type": "string"}}}


def _seen(ctx: Ctx, method: str) -> str:
    meta = dict(ctx.meta or {})
    traceparent = meta.get("traceparent")
    with open(LOG, "a", encoding="utf-8") as out:
        out.write(json.dumps({"method": method, "traceparent": traceparent}) + "\n")
    return str(traceparent)


async def list_tools(ctx: Ctx, params: mt.PaginatedRequestParams | None) -> mt.ListToolsResult:
    _seen(ctx, "tools/list")
    return mt.ListToolsResult(
        tools=[
            mt.Tool(name="echo_meta", description="Echo the traceparent", input_schema=_OBJECT),
            mt.Tool(name="fail", description="Always fails", input_schema=_OBJECT),
        ]
    )


async def call_tool(ctx: Ctx, params: mt.CallToolRequestParams) -> mt.CallToolResult:
    traceparent = _seen(ctx, "tools/call")
    if params.name == "fail":
        text = mt.TextContent(type="text", text="this tool always fails")
        return mt.CallToolResult(content=[text], is_error=True)
    return mt.CallToolResult(content=[mt.TextContent(type="text", text=traceparent)])


async def list_resources(
    ctx: Ctx, params: mt.PaginatedRequestParams | None
) -> mt.ListResourcesResult:
    _seen(ctx, "resources/list")
    return mt.ListResourcesResult(resources=[mt.Resource(name="meta", uri="trace://meta")])


async def read_resource(ctx: Ctx, params: mt.ReadResourceRequestParams) -> mt.ReadResourceResult:
    traceparent = _seen(ctx, "resources/read")
    contents = [mt.TextResourceContents(uri=str(params.uri), text=traceparent)]
    return mt.ReadResourceResult(contents=contents)


async def list_prompts(ctx: Ctx, params: mt.PaginatedRequestParams | None) -> mt.ListPromptsResult:
    _seen(ctx, "prompts/list")
    return mt.ListPromptsResult(prompts=[mt.Prompt(name="meta")])


async def get_prompt(ctx: Ctx, params: mt.GetPromptRequestParams) -> mt.GetPromptResult:
    traceparent = _seen(ctx, "prompts/get")
    content = mt.TextContent(type="text", text=traceparent)
    return mt.GetPromptResult(messages=[mt.PromptMessage(role="user", content=content)])


async def main() -> None:
    server: Server[Any] = Server(
        "trace-echo",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_read_resource=read_resource,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
    )
    async with stdio_server() as (read, write):
        await server.run(read, write, server.create_initialization_options())


if __name__ == "__main__":
    anyio.run(main)
