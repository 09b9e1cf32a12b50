"""The MCP server face: an agent built here, served to MCP hosts over stdio or streamable HTTP.

On the official ``mcp`` SDK's low-level ``Server``. What a host sees:

- ``ask_<name>``: the configured agent as one tool. Its argument is the ``prompt``; the run's
  events (text as it streams, each tool call starting and finishing) go out as MCP progress
  notifications when the host asked for progress; a host that cancels the request cancels the
  run (its tool calls included). The answer is the tool's text result.
- With ``gateway=True``, beside it: every tool of the agent's toolsets under the names the
  agent's model sees (``<server>__<tool>`` for MCP servers, local functions, A2A peers). Each
  call goes through the agent's dispatcher first, so a bad argument gets the dispatcher's
  error (every violation with its JSON pointer) and never reaches the server behind; the
  config's ``deny`` patterns still hold, and the host in front is the approver of the calls it
  makes itself. Progress from the tool comes back as the host's progress; elicitation,
  sampling and log messages from servers behind go to the host (``HostRelay``); their resources
  and prompts are listed with the server's name as a prefix (``<server>__<name>``; resource
  URIs are kept and routed back to their server); ``completion/complete`` goes to the server
  that owns the prompt or resource template; a tool, resource or prompt list change behind is
  a ``list_changed`` notification in front, and a host that subscribed to a resource hears of
  its updates (the subscription is forwarded to a server behind that supports it).

Hosts on the stateless 2026-07-28 era follow changes with ``subscriptions/listen``. Requests
from servers behind (elicitation, sampling) reach a host that connected with the handshake
(2025-11-25 and before) as requests; a 2026-07-28 host's call runs as a ``WaitingCall``
(``server_rounds``): a request from a server behind keeps it waiting while the host's
``tools/call`` is answered with an ``InputRequiredResult``, and the host's retry (with the
answers and the token in ``requestState``) lets it go on.
"""

from __future__ import annotations

import itertools
import logging
import re
import warnings
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

import anyio
import mcp_types as mt
from mcp.server import NotificationOptions, Server, ServerRequestContext
from mcp.server.subscriptions import ListenHandler
from mcp.shared.exceptions import MCPDeprecationWarning, MCPError

from agent_runtime.agent import Agent
from agent_runtime.errors import AgentRunError
from agent_runtime.events import (
    RunEvent,
    TextDeltaEvent,
    ToolCallFinished,
    ToolCallProgress,
    ToolCallStarted,
)
from agent_runtime.toolset import Toolset
from agent_runtime.types import ToolCall

from ._tracing import server_request
from .manager import MCPServers
from .server_convert import call_result, mcp_tool, resource_contents
from .server_relay import HostRelay
from .server_rounds import Progress, WaitingCall
from .toolset import MCPToolset

__all__ = ["MCPServerFace", "ask_tool_name", "run_mcp_face", "serve_http", "serve_stdio"]

Ctx = ServerRequestContext[Any, Any]
_P = TypeVar("_P")
_R = TypeVar("_R")
_SEP = "__"
_TOOL_NAME = re.compile(r"[^A-Za-z0-9_-]+")
_PROGRESS_TEXT_CHARS = 200


def _traced(
    method: str, handler: Callable[[Ctx, _P], Awaitable[_R]]
) -> Callable[[Ctx, _P], Awaitable[_R]]:
    """``handler`` answering inside the request's server span, which continues the
    ``traceparent`` the host sent in ``_meta`` (a tool's error result marks it failed)."""

    async def run(ctx: Ctx, params: _P) -> _R:
        tool = getattr(params, "name", None) if method == "tools/call" else None
        with server_request(method, ctx.meta, tool=tool if isinstance(tool, str) else None) as req:
            result = await handler(ctx, params)
            if isinstance(result, mt.CallToolResult) and result.is_error:
                req.fail("tool_error")
            return result

    return run


def ask_tool_name(agent_name: str) -> str:
    """The name of the tool that runs the agent: ``ask_<name>``, in MCP's tool-name alphabet."""
    cleaned = _TOOL_NAME.sub("_", agent_name).strip("_") or "agent"
    return f"ask_{cleaned}"


def _error(text: str) -> mt.CallToolResult:
    return mt.CallToolResult(content=[mt.TextContent(type="text", text=text)], is_error=True)


def _progress_message(event: RunEvent) -> str | None:
    """What one run event says to a host following the run (``None``: nothing to say)."""
    if isinstance(event, TextDeltaEvent):
        return event.text[:_PROGRESS_TEXT_CHARS] if event.text else None
    if isinstance(event, ToolCallStarted):
        return f"calling {event.call.name}"
    if isinstance(event, ToolCallFinished):
        record = event.record
        outcome = "failed" if record.result.is_error else "done"
        return f"{record.call.name} {outcome} in {record.duration_s:.2f} s"
    if isinstance(event, ToolCallProgress):
        total = f"/{event.total:g}" if event.total is not None else ""
        detail = f": {event.message}" if event.message else ""
        return f"tool progress {event.progress:g}{total}{detail}"
    return None


class MCPServerFace:
    """Builds the SDK ``Server`` that serves ``agent`` (and, as a gateway, its tools).

    ``servers`` gives the connected MCP client toolsets behind the agent, whose resources and
    prompts are re-exported (asked each time, since servers come and go). The agent must be
    entered (``async with agent``) while the server runs, so its toolsets stay connected.
    """

    def __init__(
        self,
        agent: Agent,
        relay: HostRelay,
        *,
        gateway: bool = False,
        servers: Callable[[], Sequence[MCPToolset]] = lambda: (),
    ) -> None:
        self.agent = agent
        self.relay = relay
        self.gateway = gateway
        self._servers = servers
        self.ask_name = ask_tool_name(agent.name)
        self._uri_owner: dict[str, str] = {}
        self._template_owner: dict[str, str] = {}
        self._call_ids = itertools.count(1)

    # ------------------------------------------------------------------ the SDK server

    def build(self) -> Server[Any]:
        """The low-level SDK server with this face's handlers."""
        server: Server[Any] = Server(
            self.agent.name,
            version=_version(),
            description=self.agent.description or None,
            on_list_tools=_traced("tools/list", self._list_tools),
            on_call_tool=_traced("tools/call", self._call_tool),
            on_list_resources=_traced("resources/list", self._list_resources),
            on_list_resource_templates=_traced("resources/templates/list", self._list_templates),
            on_read_resource=_traced("resources/read", self._read_resource),
            on_subscribe_resource=_traced("resources/subscribe", self._subscribe),
            on_unsubscribe_resource=_traced("resources/unsubscribe", self._unsubscribe),
            on_list_prompts=_traced("prompts/list", self._list_prompts),
            on_get_prompt=_traced("prompts/get", self._get_prompt),
            on_completion=_traced("completion/complete", self._complete),
            on_subscriptions_listen=ListenHandler(self.relay.bus),
        )
        server.add_request_handler("logging/setLevel", mt.SetLevelRequestParams, self._set_level)
        return server

    @staticmethod
    def notification_options() -> NotificationOptions:
        return NotificationOptions(prompts_changed=True, resources_changed=True, tools_changed=True)

    def watch_servers(self) -> None:
        """Relay resource and prompt changes of the connected servers behind to the hosts
        (call once the agent is entered, when its MCP servers are connected)."""
        for server in self._servers():
            server.add_change_listener(self.relay.server_changed)

    # ------------------------------------------------------------------ tools

    def _ask_tool(self) -> mt.Tool:
        description = self.agent.description or f"Ask the agent {self.agent.name!r}."
        return mt.Tool(
            name=self.ask_name,
            description=f"{description} Runs the agent on the prompt and returns its answer.",
            input_schema={
                "type": "object",
                "properties": {"prompt": {"type": "string", "description": "What to ask."}},
                "required": ["prompt"],
                "additionalProperties": False,
            },
            annotations=mt.ToolAnnotations(title=f"Ask {self.agent.name}", open_world_hint=True),
        )

    async def _list_tools(
        self, ctx: Ctx, params: mt.PaginatedRequestParams | None
    ) -> mt.ListToolsResult:
        self.relay.remember(ctx)
        tools = [self._ask_tool()]
        if self.gateway:
            specs = await self.agent.dispatcher.tool_specs()
            tools.extend(mcp_tool(spec) for spec in specs if spec.name != self.ask_name)
        return mt.ListToolsResult(tools=tools)

    async def _call_tool(
        self, ctx: Ctx, params: mt.CallToolRequestParams
    ) -> mt.CallToolResult | mt.InputRequiredResult:
        self.relay.remember(ctx)
        arguments = dict(params.arguments or {})
        if params.name != self.ask_name and not self.gateway:
            return _error(f"unknown tool {params.name!r}: this server offers {self.ask_name!r}")
        if not self.relay.stateless(ctx):
            return await self._run_call(ctx, ctx.session.report_progress, params.name, arguments)

        async def work(waiting: WaitingCall) -> mt.CallToolResult:
            return await self._run_call(waiting, waiting.report_progress, params.name, arguments)

        return await self.relay.rounds.call(ctx, params, work)

    async def _run_call(
        self,
        front: Ctx | WaitingCall,
        report: Progress,
        name: str,
        arguments: dict[str, Any],
    ) -> mt.CallToolResult:
        """Run one front call: ``front`` is where requests of servers behind go (the request of
        a handshake-era host, the ``WaitingCall`` of a 2026-07-28 host), ``report`` its progress."""
        if name == self.ask_name:
            return await self._ask(front, report, arguments)
        return await self._forward(front, report, name, arguments)

    async def _ask(
        self, front: Ctx | WaitingCall, report: Progress, arguments: dict[str, Any]
    ) -> mt.CallToolResult:
        prompt = arguments.get("prompt")
        extra = sorted(set(arguments) - {"prompt"})
        if not isinstance(prompt, str) or extra:
            return _error(
                f"{self.ask_name} takes one argument, 'prompt' (a string)"
                + (f"; unexpected: {', '.join(extra)}" if extra else "")
            )
        count = 0

        async def on_event(event: RunEvent) -> None:
            nonlocal count
            message = _progress_message(event)
            if message is not None:
                count += 1
                await report(count, None, message)

        with self.relay.front_call(front, gateway=False):
            try:
                result = await self.agent.run(prompt, on_event=on_event)
            except AgentRunError as err:
                return _error(f"the agent stopped: {err}")
        return mt.CallToolResult(content=[mt.TextContent(type="text", text=result.output)])

    async def _forward(
        self, front: Ctx | WaitingCall, report: Progress, name: str, arguments: dict[str, Any]
    ) -> mt.CallToolResult:
        """A host's call of a tool behind the gateway, through the agent's dispatcher."""
        call = ToolCall.of(name, arguments, id=f"mcp-{next(self._call_ids)}")

        async def on_event(event: RunEvent) -> None:
            if isinstance(event, ToolCallProgress):
                await report(event.progress, event.total, event.message)

        with self.relay.front_call(front, gateway=True):
            try:
                records = await self.agent.dispatcher.dispatch([call], on_event)
            except AgentRunError as err:  # the tool's budget of invalid calls is spent
                return _error(str(err))
        return call_result(records[0].result)

    # ------------------------------------------------------------------ resources, prompts

    def _named(self) -> dict[str, MCPToolset]:
        return {server.name: server for server in self._servers()}

    @staticmethod
    def _split(name: str, servers: dict[str, MCPToolset]) -> tuple[MCPToolset, str] | None:
        prefix, sep, rest = name.partition(_SEP)
        server = servers.get(prefix)
        return (server, rest) if sep and server is not None else None

    async def _list_resources(
        self, ctx: Ctx, params: mt.PaginatedRequestParams | None
    ) -> mt.ListResourcesResult:
        self.relay.remember(ctx)
        return mt.ListResourcesResult(resources=await self._list_resources_of(self._servers()))

    async def _list_resources_of(self, servers: Sequence[MCPToolset]) -> list[mt.Resource]:
        found: list[mt.Resource] = []
        for server in servers:
            try:
                resources = await server.list_resources()
            except Exception as exc:  # noqa: BLE001 - one server's failure hides only its own
                logging.getLogger("agent_runtime.mcp.serve").warning(
                    "listing the resources of MCP server %r failed: %s", server.name, exc
                )
                continue
            for resource in resources:
                self._uri_owner[str(resource.uri)] = server.name
                found.append(
                    resource.model_copy(update={"name": f"{server.name}{_SEP}{resource.name}"})
                )
        return found

    async def _list_templates(
        self, ctx: Ctx, params: mt.PaginatedRequestParams | None
    ) -> mt.ListResourceTemplatesResult:
        found: list[mt.ResourceTemplate] = []
        for server in self._servers():
            try:
                templates = await server.list_resource_templates()
            except Exception:  # noqa: BLE001 - a server without templates lists none
                continue
            for template in templates:
                self._template_owner[template.uri_template] = server.name
                found.append(
                    template.model_copy(update={"name": f"{server.name}{_SEP}{template.name}"})
                )
        return mt.ListResourceTemplatesResult(resource_templates=found)

    async def _read_resource(
        self, ctx: Ctx, params: mt.ReadResourceRequestParams
    ) -> mt.ReadResourceResult:
        uri = str(params.uri)
        servers = self._named()
        owner = servers.get(self._uri_owner.get(uri, ""))
        # A URI not listed (a template's instance): the first server that can read it.
        candidates = [owner] if owner is not None else list(servers.values())
        last: Exception | None = None
        for server in candidates:
            try:
                parts = await server.read_resource(uri)
            except Exception as exc:  # noqa: BLE001 - try the next server
                last = exc
                continue
            self._uri_owner[uri] = server.name
            return mt.ReadResourceResult(contents=resource_contents(parts))
        raise _not_found(f"resource {uri!r} not found" + (f": {last}" if last else ""))

    async def _owner(self, uri: str) -> MCPToolset | None:
        """The server behind that listed ``uri`` (listing again if it is not known yet)."""
        if uri not in self._uri_owner:
            await self._list_resources_of(self._servers())
        return self._named().get(self._uri_owner.get(uri, ""))

    @staticmethod
    def _can_subscribe(server: MCPToolset) -> bool:
        caps = server.server_capabilities
        return caps is not None and caps.resources is not None and bool(caps.resources.subscribe)

    async def _subscribe(self, ctx: Ctx, params: mt.SubscribeRequestParams) -> mt.EmptyResult:
        """Forwarded to the server that owns the URI, if it supports subscriptions; its
        ``notifications/resources/updated`` then reach every host subscribed here."""
        uri = str(params.uri)
        first = self.relay.subscribe(ctx, uri)
        server = await self._owner(uri)
        if first and server is not None and self._can_subscribe(server):
            await server.subscribe_resource(uri)
        return mt.EmptyResult()

    async def _unsubscribe(self, ctx: Ctx, params: mt.UnsubscribeRequestParams) -> mt.EmptyResult:
        uri = str(params.uri)
        if self.relay.unsubscribe(ctx, uri):
            server = self._named().get(self._uri_owner.get(uri, ""))
            if server is not None and self._can_subscribe(server):
                await server.unsubscribe_resource(uri)
        return mt.EmptyResult()

    async def _complete(self, ctx: Ctx, params: mt.CompleteRequestParams) -> mt.CompleteResult:
        """``completion/complete``, asked of the server that owns the prompt or template."""
        ref = params.ref
        servers = self._named()
        if isinstance(ref, mt.PromptReference):
            target = self._split(ref.name, servers)
            if target is None:
                raise _not_found(f"prompt {ref.name!r} not found (prompts are <server>__<name>)")
            server, name = target
            ref = ref.model_copy(update={"name": name})
        else:
            if ref.uri not in self._template_owner:
                await self._list_templates(ctx, None)
            owner = servers.get(self._template_owner.get(ref.uri, ""))
            if owner is None:
                raise _not_found(f"resource template {ref.uri!r} not found")
            server = owner
        caps = server.server_capabilities
        if caps is not None and caps.completions is None:
            return mt.CompleteResult(completion=mt.Completion(values=[]))
        argument = {"name": params.argument.name, "value": params.argument.value}
        context = params.context.arguments if params.context is not None else None
        return await server.complete(ref, argument, context)

    async def _list_prompts(
        self, ctx: Ctx, params: mt.PaginatedRequestParams | None
    ) -> mt.ListPromptsResult:
        found: list[mt.Prompt] = []
        for server in self._servers():
            try:
                prompts = await server.list_prompts()
            except Exception:  # noqa: BLE001 - a server without prompts lists none
                continue
            found.extend(
                p.model_copy(update={"name": f"{server.name}{_SEP}{p.name}"}) for p in prompts
            )
        return mt.ListPromptsResult(prompts=found)

    async def _get_prompt(self, ctx: Ctx, params: mt.GetPromptRequestParams) -> mt.GetPromptResult:
        target = self._split(params.name, self._named())
        if target is None:
            raise _not_found(f"prompt {params.name!r} not found (prompts are <server>__<name>)")
        server, name = target
        return await server.get_prompt(name, dict(params.arguments or {}))

    async def _set_level(self, ctx: Ctx, params: mt.SetLevelRequestParams) -> mt.EmptyResult:
        self.relay.remember(ctx)
        self.relay.set_log_level(params.level)
        return mt.EmptyResult()


def _not_found(message: str) -> Exception:
    return MCPError(code=mt.INVALID_PARAMS, message=message)


def _version() -> str:
    from agent_runtime import __version__

    return __version__


async def serve_stdio(face: MCPServerFace) -> None:
    """Serve over this process's stdin and stdout until the host closes them."""
    from mcp.server.stdio import stdio_server

    server = face.build()
    options = server.create_initialization_options(face.notification_options())
    async with anyio.create_task_group() as tg:
        tg.start_soon(face.relay.pump)
        async with stdio_server() as (read, write):
            await server.run(read, write, options)
        tg.cancel_scope.cancel()


async def serve_http(face: MCPServerFace, *, host: str, port: int) -> None:
    """Serve streamable HTTP at ``http://host:port/mcp`` until stopped (SIGINT / SIGTERM)."""
    import uvicorn

    app = face.build().streamable_http_app(host=host)
    config = uvicorn.Config(app, host=host, port=port, log_level="warning", lifespan="on")
    async with anyio.create_task_group() as tg:
        tg.start_soon(face.relay.pump)
        await uvicorn.Server(config).serve()
        tg.cancel_scope.cancel()


def _mcp_servers(toolsets: Sequence[Toolset]) -> Callable[[], list[MCPToolset]]:
    """The connected MCP servers among ``toolsets`` (asked each time: servers come and go)."""

    def connected() -> list[MCPToolset]:
        found: list[MCPToolset] = []
        for toolset in toolsets:
            if isinstance(toolset, MCPServers):
                found.extend(toolset.toolsets)
            elif isinstance(toolset, MCPToolset):
                found.append(toolset)
        return found

    return connected


def run_mcp_face(
    agent: Agent,
    relay: HostRelay,
    toolsets: Sequence[Toolset],
    *,
    gateway: bool = False,
    http_port: int | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Serve ``agent`` (built on ``toolsets``) until the host leaves or the process is stopped.

    Log messages of the MCP servers behind (the ``agent_runtime.mcp`` loggers) go to the host
    in front as well as to stderr; a change of any toolset's tool list is announced to it.
    """
    face = MCPServerFace(agent, relay, gateway=gateway, servers=_mcp_servers(toolsets))
    for toolset in toolsets:
        toolset.add_tools_changed_listener(relay.tools_changed)
    mcp_logger = logging.getLogger("agent_runtime.mcp")
    mcp_logger.addHandler(relay.log_handler)
    if mcp_logger.getEffectiveLevel() > logging.INFO:
        mcp_logger.setLevel(logging.INFO)  # servers' info messages reach the host

    # The SDK warns on each log, sampling and elicitation request that they are deprecated in
    # the 2026-07-28 era; the hosts this relays them to speak the handshake era.
    warnings.filterwarnings("ignore", category=MCPDeprecationWarning)

    async def main() -> None:
        async with agent:
            face.watch_servers()
            if http_port is None:
                await serve_stdio(face)
            else:
                await serve_http(face, host=host, port=http_port)

    try:
        anyio.run(main)
    finally:
        mcp_logger.removeHandler(relay.log_handler)
