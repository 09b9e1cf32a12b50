"""A server whose resources and prompts change at runtime, for the gateway tests (stdio).

Built on the SDK's low-level ``Server``. Tools: ``add_note(name, text)`` adds the resource
``notes://<name>`` and the prompt ``note_<name>`` and says both lists changed; ``edit_note(name,
text)`` changes a note and, if a client subscribed to it, sends
``notifications/resources/updated``. Completions: the prompt ``summarize``'s ``style`` argument
and the template ``notes://{name}``'s ``name``.
"""

from __future__ import annotations

from typing import Any

import anyio
import mcp_types as mt
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.stdio import stdio_server

Ctx = ServerRequestContext[Any, Any]
_notes: dict[str, str] = {"first": "the first note"}
_subscribed: set[str] = set()
_STYLES = ["brief", "bullet points", "detailed"]
_NOTE_TOOL_SCHEMA = {
    "type": "object",
    "properties": {"name": {"type": "string"}, "text": {"type": "string"}},
    "required": ["name", "text"],
}


def _text(text: str) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(type="text", text=text)])


async def list_tools(ctx: Ctx, params: mt.PaginatedRequestParams | None) -> mt.ListToolsResult:
    return mt.ListToolsResult(
        tools=[
            mt.Tool(name="add_note", input_schema=_NOTE_TOOL_SCHEMA),
            mt.Tool(name="edit_note", input_schema=_NOTE_TOOL_SCHEMA),
        ]
    )


async def call_tool(ctx: Ctx, params: mt.CallToolRequestParams) -> mt.CallToolResult:
    args = dict(params.arguments or {})
    name, text = str(args["name"]), str(args["text"])
    uri = f"notes://{name}"
    if params.name == "add_note":
        _notes[name] = text
        await ctx.session.send_resource_list_changed()
        await ctx.session.send_prompt_list_changed()
        return _text(f"added {uri}")
    _notes[name] = text
    if uri in _subscribed:
        await ctx.session.send_resource_updated(uri)
    return _text(f"edited {uri}")


async def list_resources(
    ctx: Ctx, params: mt.PaginatedRequestParams | None
) -> mt.ListResourcesResult:
    return mt.ListResourcesResult(
        resources=[mt.Resource(name=name, uri=f"notes://{name}") for name in _notes]
    )


async def list_templates(
    ctx: Ctx, params: mt.PaginatedRequestParams | None
) -> mt.ListResourceTemplatesResult:
    template = mt.ResourceTemplate(name="note", uri_template="notes://{name}")
    return mt.ListResourceTemplatesResult(resource_templates=[template])


async def read_resource(ctx: Ctx, params: mt.ReadResourceRequestParams) -> mt.ReadResourceResult:
    uri = str(params.uri)
    name = uri.removeprefix("notes://")
    return mt.ReadResourceResult(contents=[mt.TextResourceContents(uri=uri, text=_notes[name])])


async def subscribe(ctx: Ctx, params: mt.SubscribeRequestParams) -> mt.EmptyResult:
    _subscribed.add(str(params.uri))
    return mt.EmptyResult()


async def unsubscribe(ctx: Ctx, params: mt.UnsubscribeRequestParams) -> mt.EmptyResult:
    _subscribed.discard(str(params.uri))
    return mt.EmptyResult()


async def list_prompts(ctx: Ctx, params: mt.PaginatedRequestParams | None) -> mt.ListPromptsResult:
    style = mt.PromptArgument(name="style", required=False)
    prompts = [mt.Prompt(name="summarize", arguments=[style])]
    prompts += [mt.Prompt(name=f"note_{name}") for name in _notes]
    return mt.ListPromptsResult(prompts=prompts)


async def get_prompt(ctx: Ctx, params: mt.GetPromptRequestParams) -> mt.GetPromptResult:
    text = f"{params.name} {dict(params.arguments or {})}"
    message = mt.PromptMessage(role="user", content=mt.TextContent(type="text", text=text))
    return mt.GetPromptResult(messages=[message])


async def complete(ctx: Ctx, params: mt.CompleteRequestParams) -> mt.CompleteResult:
    ref, value = params.ref, params.argument.value
    if isinstance(ref, mt.PromptReference) and ref.name == "summarize":
        choices = _STYLES
    elif isinstance(ref, mt.ResourceTemplateReference) and ref.uri == "notes://{name}":
        choices = sorted(_notes)
    else:
        choices = []
    found = [choice for choice in choices if choice.startswith(value)]
    return mt.CompleteResult(completion=mt.Completion(values=found, total=len(found)))


async def main() -> None:
    server: Server[Any] = Server(
        "changing",
        on_list_tools=list_tools,
        on_call_tool=call_tool,
        on_list_resources=list_resources,
        on_list_resource_templates=list_templates,
        on_read_resource=read_resource,
        on_subscribe_resource=subscribe,
        on_unsubscribe_resource=unsubscribe,
        on_list_prompts=list_prompts,
        on_get_prompt=get_prompt,
        on_completion=complete,
    )
    options = server.create_initialization_options(
        NotificationOptions(prompts_changed=True, resources_changed=True)
    )
    async with stdio_server() as (read, write):
        await server.run(read, write, options)


if __name__ == "__main__":
    anyio.run(main)
