"""``MCPToolset``: one MCP server's tools, resources and prompts, through the official SDK.

The toolset adds what a host needs on top of the SDK's ``mcp.Client``:

- one task owns each session (see ``_session``), so shutdown never crosses tasks;
- the tool list is cached, paginated, and refreshed when the server says it changed;
- every failure becomes a ``ToolResult`` with ``is_error`` set (timeout, crash, bad structured
  content, the server's own ``isError``), never an exception the agent loop must handle;
- a server that died is restarted on its next use, with backoff and a cap;
- sampling is answered by a ``ModelBackend`` handed in (token cap, approval hook),
  elicitation goes to a host callback, roots come from configuration.
"""

from __future__ import annotations

import enum
import inspect
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal, Protocol, TypeVar

import anyio
import anyio.abc
import httpx2
import mcp_types as mt
from mcp import Client, StdioServerParameters
from mcp.client.session import ClientRequestContext, IncomingMessage
from mcp.client.stdio import stdio_client
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client
from mcp.shared.exceptions import MCPError
from mcp_types.version import MODERN_PROTOCOL_VERSIONS
from pydantic import ValidationError

from agent_runtime.backend import ModelBackend, ModelSettings
from agent_runtime.toolset import ToolContext, Toolset
from agent_runtime.types import ResourcePart, ToolResult, ToolSpec

from . import _convert
from ._lifecycle import TaskGroupLifecycle
from ._session import Session, StderrTail, WatchedTransport
from .config import HttpServerConfig, ServerConfig, StdioServerConfig
from .errors import MCPConnectionError

Mode = Literal["auto", "legacy", "2026-07-28"]
_T = TypeVar("_T")
SamplingApproval = Callable[[mt.CreateMessageRequestParams], Awaitable[bool] | bool]


class _Default(enum.Enum):
    """Type of the "argument not given" marker (``None`` is a meaningful prefix)."""

    TOKEN = 0


_DEFAULT = _Default.TOKEN
_MAX_PAGES = 1000
_LISTEN_ACK_TIMEOUT_S = 5.0
_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emergency": logging.CRITICAL,
}


@dataclass
class ElicitationResult:
    """A host's answer to a server's elicitation request.

    ``accept`` sends ``content`` (the form's values); ``decline`` and ``cancel`` send nothing.
    An elicitation callback may also return a plain dict (accept with that content) or ``None``
    (decline).
    """

    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] = field(default_factory=dict)


ElicitationCallback = Callable[
    [str, dict[str, Any]],
    Awaitable[ElicitationResult | dict[str, Any] | None]
    | ElicitationResult
    | dict[str, Any]
    | None,
]
"""``(message, requested_schema) -> answer``. URL-mode requests get the URL in the message and
an empty schema."""


def _leaf(exc: BaseException) -> BaseException:
    """The first real exception inside (possibly nested) exception groups."""
    while isinstance(exc, BaseExceptionGroup) and exc.exceptions:
        exc = exc.exceptions[0]
    return exc


def _describe(exc: BaseException) -> str:
    leaf = _leaf(exc)
    text = str(leaf).strip()
    if isinstance(leaf, MCPError):
        return text or f"MCP error {leaf.code}"
    return f"{type(leaf).__name__}: {text}" if text else type(leaf).__name__


class _Page(Protocol):
    @property
    def next_cursor(self) -> str | None: ...


_PageT = TypeVar("_PageT", bound=_Page)


async def _all_pages(fetch: Callable[[str | None], Awaitable[_PageT]]) -> list[_PageT]:
    """Every page of a paginated list (``fetch`` gets the cursor; ``None`` asks for the first)."""
    pages: list[_PageT] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await fetch(cursor)
        pages.append(page)
        cursor = page.next_cursor
        if not cursor:
            break
    return pages


def _root_uri(root: str | Path) -> str:
    text = str(root)
    if "://" in text:
        return text
    return Path(text).expanduser().resolve().as_uri()


class MCPToolset(TaskGroupLifecycle, Toolset):
    """The tools of one MCP server (stdio or streamable HTTP), both protocol eras.

    ``name`` labels the server (``ToolSpec.origin`` is ``mcp:<name>``, its logger is
    ``agent_runtime.mcp.<name>``). Tools are listed as ``<prefix><sep><tool>``; ``prefix``
    defaults to ``name`` and ``None`` lists bare names. The server's own name is used on the
    wire.

    Timeouts: ``call_timeout_s`` bounds a tool call when the dispatcher gives no deadline of its
    own (``ToolContext.timeout_s`` wins); on expiry the server is sent a cancellation.
    ``connect_timeout_s`` bounds start-up and the handshake; ``request_timeout_s`` bounds every
    other request (listing, resources, prompts) and is the fallback for calls.

    A server that dies is restarted lazily, on the next call, after ``restart_backoff_s[n]``
    seconds for the n-th restart in a row; after ``max_restarts`` restarts without a successful
    call in between, calls fail at once with an error result.

    Logging: log notifications the server sends go to the toolset's logger. ``log_level``
    (e.g. ``"warning"``) asks the server for messages from that level up; it is off by default
    because in the 2026-07-28 era the level rides on every request and costs the server time
    on each call.

    Enter it (``async with``) to start the server; a server that cannot start raises
    ``MCPConnectionError`` with the tail of its stderr. Entering twice is allowed (the first
    enter starts, the matching exit stops), so a toolset started by ``MCPServers`` can be handed
    to an ``Agent`` that enters its toolsets again.
    """

    enforces_timeout = True  # each request carries ctx.timeout_s; the server is told to cancel

    def __init__(
        self,
        name: str,
        server: ServerConfig,
        *,
        prefix: str | None | Literal[_Default.TOKEN] = _DEFAULT,
        sep: str = "__",
        call_timeout_s: float | None = 60.0,
        connect_timeout_s: float | None = 30.0,
        request_timeout_s: float | None = 60.0,
        mode: Mode = "auto",
        sampling_model: ModelBackend | None = None,
        sampling_max_tokens: int = 1024,
        sampling_approval: SamplingApproval | None = None,
        elicitation_callback: ElicitationCallback | None = None,
        roots: Sequence[str | Path] = (),
        restart_backoff_s: Sequence[float] = (0.5, 1.0, 2.0, 5.0, 10.0),
        max_restarts: int = 5,
        client_info: mt.Implementation | None = None,
        log_level: mt.LoggingLevel | None = None,
    ) -> None:
        super().__init__()
        if mode not in ("auto", "legacy", "2026-07-28"):
            raise ValueError(f"mode must be 'auto', 'legacy' or '2026-07-28', got {mode!r}")
        self.name = name
        self.server = server
        self.prefix: str | None = name if prefix is _DEFAULT else prefix
        self.sep = sep
        self.call_timeout_s = call_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
        self.mode: Mode = mode
        self.sampling_model = sampling_model
        self.sampling_max_tokens = sampling_max_tokens
        self.sampling_approval = sampling_approval
        self.elicitation_callback = elicitation_callback
        self.roots = [_root_uri(root) for root in roots]
        self.restart_backoff_s = tuple(restart_backoff_s) or (0.0,)
        self.max_restarts = max_restarts
        self.client_info = client_info or mt.Implementation(name="agent-runtime", version="0.1.0")
        self.log_level = log_level
        self.logger = logging.getLogger(f"agent_runtime.mcp.{name}")

        self._tg: anyio.abc.TaskGroup | None = None
        self._session: Session | None = None
        self._session_lock = anyio.Lock()
        self._list_lock = anyio.Lock()
        self._closed = False
        self._restarts = 0
        self._lost_at: float | None = None
        self._tools: list[mt.Tool] | None = None
        self._specs: list[ToolSpec] | None = None
        self._wire_names: dict[str, str] = {}
        self._tools_generation = 0

    # ------------------------------------------------------------------ lifecycle

    async def _start(self, tg: anyio.abc.TaskGroup) -> None:
        """Connect using ``tg`` for the session owner tasks (``MCPServers`` shares one)."""
        self._tg = tg
        self._closed = False
        self._restarts = 0
        self._lost_at = None
        self._specs = None
        async with self._session_lock:
            self._session = await self._open()
        try:
            await self.list_tools()
        except MCPConnectionError:
            raise
        except Exception as exc:
            await self._stop()
            raise MCPConnectionError(
                self.name, f"listing its tools failed: {_describe(exc)}"
            ) from exc

    async def _stop(self) -> None:
        self._closed = True
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ connection

    def _build_client(
        self, stack: AsyncExitStack, session: Session, stderr: StderrTail | None
    ) -> Client:
        server = self.server
        transport: Any
        if isinstance(server, HttpServerConfig):
            http = create_mcp_http_client(headers=dict(server.headers) or None, auth=server.auth)
            stack.push_async_callback(http.aclose)

            async def on_response(response: httpx2.Response) -> None:
                # The spec's signal that a server forgot our session: 404 on a request that
                # carried the session id. The SDK reports it only as a generic error.
                if response.status_code == 404 and "mcp-session-id" in response.request.headers:
                    session.mark_expired()

            http.event_hooks["response"] = [*http.event_hooks["response"], on_response]
            transport = WatchedTransport(
                streamable_http_client(server.url, http_client=http), session.mark_lost
            )
        else:
            params = StdioServerParameters(
                command=server.command, args=list(server.args), env=server.env, cwd=server.cwd
            )
            assert stderr is not None
            # Our copy of the stderr pipe's write end is closed once the child has it.
            transport = WatchedTransport(
                stdio_client(params, errlog=stderr.writer), session.mark_lost, stderr.close_writer
            )
        return Client(
            transport,
            mode=self.mode,
            read_timeout_seconds=self.request_timeout_s,
            sampling_callback=self._on_sampling if self.sampling_model is not None else None,
            elicitation_callback=(
                self._on_elicitation if self.elicitation_callback is not None else None
            ),
            list_roots_callback=self._on_list_roots if self.roots else None,
            logging_callback=self._on_log,
            log_level=self.log_level,
            message_handler=self._on_message,
            client_info=self.client_info,
            cache=None,
        )

    async def _open(self) -> Session:
        """Start a session's owner task and wait until it is connected (or failed)."""
        if self._tg is None:
            raise MCPConnectionError(self.name, "the toolset is not entered (use `async with`)")
        stderr = StderrTail(self.logger) if isinstance(self.server, StdioServerConfig) else None
        listening = anyio.Event()
        session = Session(
            lambda stack, session: self._build_client(stack, session, stderr),
            self.connect_timeout_s,
            self.logger,
            stderr=stderr,
            on_ready=lambda client: self._background(client, listening),
        )
        self._tg.start_soon(session.run, name=f"mcp-session-{self.name}")
        await session.ready.wait()
        if session.client is not None:
            # Bounded: a server that never acknowledges only loses change notifications.
            with anyio.move_on_after(_LISTEN_ACK_TIMEOUT_S):
                await listening.wait()
        if session.client is None:
            await session.close()
            tail = await stderr.tail() if stderr is not None else ""
            reason = _describe(session.error) if session.error is not None else "closed"
            raise MCPConnectionError(self.name, reason, tail)
        return session

    async def _live_session(self) -> Session:
        """The current session, restarting the server (with backoff) if it died."""
        session = self._session
        if session is not None and session.usable:
            return session
        async with self._session_lock:
            session = self._session
            if session is not None and session.usable:
                return session
            if self._closed or self._tg is None:
                raise MCPConnectionError(self.name, "the toolset is closed")
            if session is not None:
                self._session = None
                await session.close()
                if session.expired:
                    # The server is up and merely forgot us: reconnect at once, no backoff.
                    self._session = await self._open()
                    return self._session
                if self._lost_at is None:  # died between calls, noticed only now
                    self._lost_at = anyio.current_time()
            if self._restarts >= self.max_restarts:
                raise MCPConnectionError(
                    self.name, f"gave up after {self._restarts} restarts in a row"
                )
            delay = self.restart_backoff_s[min(self._restarts, len(self.restart_backoff_s) - 1)]
            if self._lost_at is not None:
                delay -= anyio.current_time() - self._lost_at
            if delay > 0:
                await anyio.sleep(delay)
            self._restarts += 1
            self.logger.warning(
                "restarting MCP server %r (restart %d of at most %d)",
                self.name,
                self._restarts,
                self.max_restarts,
            )
            try:
                self._session = await self._open()
            except BaseException:
                self._lost_at = anyio.current_time()  # the next try waits from this failure
                raise
            # A restarted server may be a different build with different tools.
            self._tools_changed()
            return self._session

    def _connection_lost(self, session: Session) -> None:
        session.mark_lost()
        self._lost_at = anyio.current_time()

    @property
    def connected(self) -> bool:
        """Whether a live session is up now (``False`` after the server died, until a restart)."""
        session = self._session
        return session is not None and session.usable

    @property
    def client(self) -> Client | None:
        """The live SDK client, for anything this class does not wrap (``None`` when down)."""
        session = self._session
        return session.client if session is not None else None

    @property
    def protocol_version(self) -> str | None:
        """The negotiated protocol version (``2025-11-25``, ``2026-07-28`` ...)."""
        client = self.client
        return client.protocol_version if client is not None else None

    @property
    def server_info(self) -> mt.Implementation | None:
        client = self.client
        return client.server_info if client is not None else None

    @property
    def server_capabilities(self) -> mt.ServerCapabilities | None:
        client = self.client
        return client.server_capabilities if client is not None else None

    async def _background(self, client: Client, listening: anyio.Event) -> None:
        """Owner-task work once connected: on 2026-07-28, listen for tool list changes.

        ``listening`` is set once the subscription is acknowledged (or known not to apply), so
        that a change made right after entering is not missed.
        """
        try:
            if client.protocol_version not in MODERN_PROTOCOL_VERSIONS:
                return
            caps = client.server_capabilities
            # A pinned version (mode="2026-07-28") skips discovery, so capabilities may be
            # unknown: then listen anyway; a server without the feature rejects the request.
            unknown = caps.tools is None and caps.resources is None and caps.prompts is None
            if not unknown and (caps.tools is None or not caps.tools.list_changed):
                return
            async with client.listen(tools_list_changed=True) as subscription:
                listening.set()
                async for _event in subscription:
                    self._tools_changed()
        finally:
            listening.set()

    # ------------------------------------------------------------------ server -> client

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            # e.g. a stray print() on a stdio server's stdout: noted, and the session goes on.
            detail = str(message).strip().splitlines()
            if isinstance(message, ValidationError) and message.errors():
                detail = [repr(message.errors()[0].get("input"))[:200]]
            self.logger.warning(
                "MCP server %r sent something that is not JSON-RPC (ignored): %s",
                self.name,
                detail[0] if detail else type(message).__name__,
            )
        elif isinstance(message, mt.ToolListChangedNotification):
            self._tools_changed()

    async def _on_log(self, params: mt.LoggingMessageNotificationParams) -> None:
        level = _LOG_LEVELS.get(params.level, logging.INFO)
        source = f"[{params.logger}] " if params.logger else ""
        self.logger.log(level, "%s%s", source, params.data)

    async def _on_list_roots(self, context: ClientRequestContext) -> mt.ListRootsResult:
        return mt.ListRootsResult(
            roots=[mt.Root.model_validate({"uri": uri}) for uri in self.roots]
        )

    async def _on_sampling(
        self, context: ClientRequestContext, params: mt.CreateMessageRequestParams
    ) -> mt.CreateMessageResult | mt.ErrorData:
        model = self.sampling_model
        if model is None:
            return mt.ErrorData(code=mt.INVALID_REQUEST, message="sampling is not enabled")
        if self.sampling_approval is not None:
            verdict = self.sampling_approval(params)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict:
                return mt.ErrorData(code=-1, message="the user denied the sampling request")
        settings = ModelSettings(
            max_tokens=min(params.max_tokens, self.sampling_max_tokens),
            temperature=params.temperature,
            stop=list(params.stop_sequences or []),
        )
        try:
            response = await model.complete(_convert.sampling_messages(params), [], settings)
        except Exception as exc:  # noqa: BLE001 - the server gets an error, the host keeps going
            self.logger.warning("sampling for MCP server %r failed: %r", self.name, exc)
            return mt.ErrorData(code=mt.INTERNAL_ERROR, message=f"sampling failed: {exc}")
        stop_reason = (
            "maxTokens" if response.finish_reason in ("length", "max_tokens") else "endTurn"
        )
        return mt.CreateMessageResult(
            role="assistant",
            content=mt.TextContent(type="text", text=response.message.text),
            model=model.name,
            stop_reason=stop_reason,
        )

    async def _on_elicitation(
        self, context: ClientRequestContext, params: mt.ElicitRequestParams
    ) -> mt.ElicitResult | mt.ErrorData:
        callback = self.elicitation_callback
        if callback is None:
            return mt.ElicitResult(action="decline")
        if isinstance(params, mt.ElicitRequestURLParams):
            message, schema = f"{params.message}\n{params.url}", {}
        else:
            message, schema = params.message, dict(params.requested_schema)
        try:
            answer = callback(message, schema)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:  # noqa: BLE001 - a failing host callback cancels the request
            self.logger.warning("elicitation callback failed: %r", exc)
            return mt.ElicitResult(action="cancel")
        if answer is None:
            return mt.ElicitResult(action="decline")
        if isinstance(answer, ElicitationResult):
            action, content = answer.action, answer.content
        else:
            action, content = "accept", dict(answer)
        if action != "accept" or isinstance(params, mt.ElicitRequestURLParams):
            # URL mode: the user acts in the browser; an answer carries no form content.
            return mt.ElicitResult(action=action)
        return mt.ElicitResult(action="accept", content=content)

    # ------------------------------------------------------------------ tools

    def _exposed(self, wire_name: str) -> str:
        return wire_name if self.prefix is None else f"{self.prefix}{self.sep}{wire_name}"

    def _tools_changed(self) -> None:
        self._tools_generation += 1
        self._specs = None
        self.logger.debug("tool list of MCP server %r changed", self.name)
        self.notify_tools_changed()

    async def _fetch_tools(self, client: Client) -> list[mt.Tool]:
        caps = client.server_capabilities
        if caps.tools is None and (caps.resources is not None or caps.prompts is not None):
            return []  # a server of resources or prompts only
        tools: list[mt.Tool] = []
        cursor: str | None = None
        seen: set[str] = set()
        for _ in range(_MAX_PAGES):
            try:
                page = await client.list_tools(cursor=cursor)
            except MCPError as exc:
                if exc.code == mt.METHOD_NOT_FOUND and not tools:
                    return []  # no tools capability, and said so only now
                raise
            tools.extend(page.tools)
            cursor = page.next_cursor
            if not cursor or cursor in seen:
                break
            seen.add(cursor)
        return tools

    async def list_tools(self) -> list[ToolSpec]:
        """The server's tools, from cache; fetched (all pages) after a change or a restart."""
        specs = self._specs
        if specs is not None:
            return specs
        async with self._list_lock:
            if self._specs is not None:
                return self._specs
            fresh: list[ToolSpec] = []
            for _ in range(3):  # a change announced while fetching means fetch again
                generation = self._tools_generation
                tools = await self._request(self._fetch_tools)
                self._tools = tools
                self._wire_names = {self._exposed(tool.name): tool.name for tool in tools}
                origin = f"mcp:{self.name}"
                fresh = [
                    _convert.tool_spec(tool, self._exposed(tool.name), origin) for tool in tools
                ]
                if generation == self._tools_generation:
                    break
            self._specs = fresh
            return fresh

    def _wire_name(self, name: str) -> str:
        wire = self._wire_names.get(name)
        if wire is not None:
            return wire
        if self.prefix is not None and name.startswith(f"{self.prefix}{self.sep}"):
            return name[len(self.prefix) + len(self.sep) :]
        return name

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Call one tool; every failure comes back as an ``is_error`` result."""
        wire = self._wire_name(name)
        timeout = ctx.timeout_s if ctx.timeout_s is not None else self.call_timeout_s
        session = self._session
        if session is None or not session.usable:
            try:
                session = await self._live_session()
            except MCPConnectionError as exc:
                return ToolResult.error(str(exc))
        client = session.client
        if client is None:
            return ToolResult.error(f"MCP server {self.name!r} is not connected")
        progress_callback: Callable[[float, float | None, str | None], Awaitable[None]] | None
        progress_callback = None
        if ctx.wants_progress:

            async def progress_callback(
                progress: float, total: float | None, message: str | None
            ) -> None:
                await ctx.report_progress(progress, total, message)

        for attempt in range(2):
            try:
                result = await client.call_tool(
                    wire,
                    arguments,
                    read_timeout_seconds=timeout,
                    progress_callback=progress_callback,
                )
                break
            except Exception as exc:  # noqa: BLE001 - turned into feedback for the model
                if not (session.expired and attempt == 0):
                    return self._call_failure(session, wire, timeout, exc)
            # The server forgot our session before running the call: send it again on a new one.
            self.logger.info("MCP server %r lost our session; reconnecting", self.name)
            try:
                session = await self._live_session()
            except MCPConnectionError as exc:
                return ToolResult.error(str(exc))
            if session.client is None:
                return ToolResult.error(f"MCP server {self.name!r} is not connected")
            client = session.client
        if self._restarts or self._lost_at is not None:
            self._restarts = 0
            self._lost_at = None
        return _convert.tool_result(result)

    def _call_failure(
        self, session: Session, tool: str, timeout: float | None, exc: BaseException
    ) -> ToolResult:
        leaf = _leaf(exc)
        where = f"MCP server {self.name!r}, tool {tool!r}"
        if isinstance(leaf, MCPError) and leaf.code == mt.REQUEST_TIMEOUT:
            return ToolResult.error(
                f"{where}: timed out after {timeout:g}s; the request was cancelled on the server"
                if timeout is not None
                else f"{where}: timed out"
            )
        if (isinstance(leaf, MCPError) and leaf.code == mt.CONNECTION_CLOSED) or session.lost:
            self._connection_lost(session)
            self.logger.warning("MCP server %r closed the connection during %r", self.name, tool)
            return ToolResult.error(
                f"{where}: the server closed the connection during the call (it may have "
                "crashed); it will be restarted on the next call"
            )
        if isinstance(leaf, RuntimeError) and "structured content" in str(leaf):
            return ToolResult.error(
                f"{where}: the result does not match the tool's output schema: {leaf}"
            )
        if isinstance(leaf, ValidationError):
            return ToolResult.error(f"{where}: the server sent an invalid result: {leaf}")
        if isinstance(leaf, MCPError):
            return ToolResult.error(f"{where}: the server answered with error {leaf.code}: {leaf}")
        if isinstance(leaf, OSError) or type(leaf).__module__.startswith(("httpx", "httpcore")):
            self._connection_lost(session)
            return ToolResult.error(f"{where}: connection failed: {_describe(leaf)}")
        return ToolResult.error(f"{where}: {_describe(leaf)}")

    # ------------------------------------------------------------------ resources and prompts

    async def _client(self) -> Client:
        session = await self._live_session()
        if session.client is None:
            raise MCPConnectionError(self.name, "not connected")
        return session.client

    async def _request(self, send: Callable[[Client], Awaitable[_T]]) -> _T:
        """Send one request; resend once on a new session if the server forgot the old one."""
        session = await self._live_session()
        try:
            if session.client is None:
                raise MCPConnectionError(self.name, "not connected")
            return await send(session.client)
        except Exception:
            if not session.expired:
                raise
        return await send(await self._client())

    async def list_resources(self) -> list[mt.Resource]:
        """Every resource the server lists (all pages)."""

        async def send(client: Client) -> list[mt.Resource]:
            pages = await _all_pages(lambda cursor: client.list_resources(cursor=cursor))
            return [item for page in pages for item in page.resources]

        return await self._request(send)

    async def list_resource_templates(self) -> list[mt.ResourceTemplate]:
        """Every resource template the server lists (all pages)."""

        async def send(client: Client) -> list[mt.ResourceTemplate]:
            pages = await _all_pages(lambda cursor: client.list_resource_templates(cursor=cursor))
            return [item for page in pages for item in page.resource_templates]

        return await self._request(send)

    async def read_resource(self, uri: str) -> list[ResourcePart]:
        """A resource's contents as content parts (text, or decoded bytes)."""

        async def send(client: Client) -> mt.ReadResourceResult:
            return await client.read_resource(uri)

        result = await self._request(send)
        return [_convert.resource_part(contents) for contents in result.contents]

    async def list_prompts(self) -> list[mt.Prompt]:
        """Every prompt the server lists (all pages)."""

        async def send(client: Client) -> list[mt.Prompt]:
            pages = await _all_pages(lambda cursor: client.list_prompts(cursor=cursor))
            return [item for page in pages for item in page.prompts]

        return await self._request(send)

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None = None
    ) -> mt.GetPromptResult:
        """One prompt, rendered by the server with ``arguments``."""

        async def send(client: Client) -> mt.GetPromptResult:
            return await client.get_prompt(name, arguments)

        return await self._request(send)

    def __repr__(self) -> str:
        return f"MCPToolset({self.name!r}, {self.server!r})"
