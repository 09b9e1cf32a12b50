"""``MCPToolset``: one MCP server's tools, resources and prompts, through the official SDK.

The toolset adds what a host needs on top of the SDK's ``mcp.Client``:

- one task owns each session (see ``_session``), so shutdown never crosses tasks;
- a stdio server runs in its own process group, ended as a whole at shutdown (``_stdio``);
- the tool list is cached, paginated, screened (a bad tool is left out, not the server: see
  ``_listing``) and refreshed when the server says it changed;
- every failure becomes a ``ToolResult`` with ``is_error`` set (timeout, crash, bad structured
  content, the server's own ``isError``), never an exception the agent loop must handle;
- a server that died is restarted on its next use, with backoff and a cap; one that keeps
  dying is given up: its tools are no longer offered, and listing never raises;
- an HTTP session the server forgot is replaced by a new one (``_http``);
- sampling is answered by a ``ModelBackend`` handed in (token cap, approval hook),
  elicitation goes to a host callback, roots come from configuration (``_callbacks``).
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Awaitable, Callable, Sequence
from contextlib import AsyncExitStack
from pathlib import Path
from typing import Any, Literal, TypeVar

import anyio
import anyio.abc
import mcp_types as mt
from mcp import Client
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agent_runtime.backend import ModelBackend
from agent_runtime.toolset import ToolContext, Toolset
from agent_runtime.types import ToolResult, ToolSpec

from . import _convert
from ._callbacks import (
    ElicitationCallback,
    ElicitationResult,
    SamplingApproval,
    ServerChange,
    ServerChangeListener,
    ServerRequestHandlers,
)
from ._failures import call_failure, describe
from ._http import http_transport
from ._lifecycle import TaskGroupLifecycle
from ._listing import ToolScreen, fetch_tools
from ._resources import Meta, ResourcesAndPrompts
from ._session import Session, StderrTail, WatchedTransport
from ._stdio import stdio_transport
from ._tracing import client_request, request_meta
from .config import HttpServerConfig, ServerConfig, StdioServerConfig
from .errors import MCPConnectionError

__all__ = [
    "ElicitationCallback",
    "ElicitationResult",
    "MCPToolset",
    "Mode",
    "SamplingApproval",
    "ServerChange",
    "ServerChangeListener",
]

Mode = Literal["auto", "legacy", "2025-11-25", "2026-07-28"]
_T = TypeVar("_T")
_SDK_MODES: dict[str, Literal["auto", "legacy", "2026-07-28"]] = {
    "auto": "auto",
    "legacy": "legacy",
    "2025-11-25": "legacy",
    "2026-07-28": "2026-07-28",
}
"""A config's ``protocol`` (or the ``mode`` argument) as the SDK's connect mode. The
handshake era is negotiated by ``initialize``: "2025-11-25" asks for it (an older server may
answer with an older handshake version)."""


class _Default(enum.Enum):
    """Type of the "argument not given" marker (``None`` is a meaningful prefix)."""

    TOKEN = 0


_DEFAULT = _Default.TOKEN
_LISTEN_ACK_TIMEOUT_S = 5.0


def _root_uri(root: str | Path) -> str:
    text = str(root)
    if "://" in text:
        return text
    return Path(text).expanduser().resolve().as_uri()


def _sdk_mode(server: ServerConfig, mode: str) -> Literal["auto", "legacy", "2026-07-28"]:
    """The connect mode: the server config's ``protocol`` when it pins one, else ``mode``."""
    if mode not in _SDK_MODES:
        raise ValueError(
            f"mode must be 'auto', 'legacy', '2025-11-25' or '2026-07-28', got {mode!r}"
        )
    # The config checked its own value (one of config.PROTOCOLS) when it was made.
    return _SDK_MODES[server.protocol if server.protocol != "auto" else mode]


class MCPToolset(ServerRequestHandlers, ResourcesAndPrompts, TaskGroupLifecycle, Toolset):
    """The tools of one MCP server (stdio, streamable HTTP or the old HTTP+SSE), both eras.

    ``name`` labels the server (``ToolSpec.origin`` is ``mcp:<name>``, its logger is
    ``agent_runtime.mcp.<name>``). Tools are listed as ``<prefix><sep><tool>``; ``prefix``
    defaults to ``name`` and ``None`` lists bare names. The server's own name is used on the
    wire. A tool the runtime cannot use (an input schema that is not an object schema, a second
    tool of the same name, a tool that runs only as a task) is left out with a warning; the
    server's other tools are offered (``left_out`` says which and why).

    Protocol: the server config's ``protocol`` (``"auto"``, ``"2025-11-25"`` or
    ``"2026-07-28"``) picks the era; when it is ``"auto"``, ``mode`` does (``"auto"``,
    ``"legacy"`` = ``"2025-11-25"``, or ``"2026-07-28"``). ``"auto"`` asks the server for
    2026-07-28 first and falls back to the handshake. A server that speaks 2026-07-28
    (stateless) cannot send requests of its own outside a tool call's input rounds
    (elicitation, sampling, roots) and sends log messages only for requests that carry a log
    level: when ``"auto"`` lands there, a warning says so once; pin ``"2025-11-25"`` for a
    server that relies on them.

    Timeouts: ``call_timeout_s`` bounds a tool call when the dispatcher gives no deadline of its
    own (``ToolContext.timeout_s`` wins); the server config's ``timeout_s``, when set, replaces
    it for that server. On expiry the server is sent a cancellation. ``connect_timeout_s``
    bounds start-up and the handshake; ``request_timeout_s`` bounds every other request
    (listing, resources, prompts) and is the fallback for calls.

    A server that dies is restarted lazily, on its next use, after ``restart_backoff_s[n]``
    seconds for the n-th restart in a row; after ``max_restarts`` restarts without a successful
    call in between it is given up: its tools are no longer listed and calls to them get an
    error result (``failure`` says why). Nothing here raises into the agent loop once started.

    Logging: log notifications the server sends go to the toolset's logger. ``log_level``
    (e.g. ``"warning"``) asks the server for messages from that level up; it is off by default
    because in the 2026-07-28 era the level rides on every request and costs the server time
    on each call.

    Enter it (``async with``) to start the server; a server that cannot start raises
    ``MCPConnectionError`` with the tail of its stderr. Entering twice is allowed (the first
    enter starts, the matching exit stops), so a toolset started by ``MCPServers`` can be handed
    to an ``Agent`` that enters its toolsets again. Leaving ends a stdio server's whole process
    group, children included.
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
        self.mode = _sdk_mode(server, mode)
        self.name = name
        self.server = server
        self.prefix: str | None = name if prefix is _DEFAULT else prefix
        self.sep = sep
        self.call_timeout_s = server.timeout_s if server.timeout_s is not None else call_timeout_s
        self.connect_timeout_s = connect_timeout_s
        self.request_timeout_s = request_timeout_s
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
        self.failure: str | None = None
        """Why the server was given up during a run (``None`` while it is in use)."""

        self._tg: anyio.abc.TaskGroup | None = None
        self._session: Session | None = None
        self._session_lock = anyio.Lock()
        self._list_lock = anyio.Lock()
        self._closed = False
        self._running = False
        self._restarts = 0
        self._lost_at: float | None = None
        self._tools: list[mt.Tool] | None = None
        self._specs: list[ToolSpec] | None = None
        self._last_specs: list[ToolSpec] = []
        self._wire_names: dict[str, str] = {}
        self._tools_generation = 0
        self._screen = ToolScreen(name, self.logger)
        self._era_warned = False
        self._change_listeners: list[ServerChangeListener] = []

    # ------------------------------------------------------------------ lifecycle

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Connect, running the session owner tasks in ``tg`` (``MCPServers`` shares one)."""
        self._tg = tg
        self._closed = False
        self._running = False
        self._restarts = 0
        self._lost_at = None
        self._specs = None
        self.failure = None
        async with self._session_lock:
            self._session = await self._open()
        try:
            await self.list_tools()
        except MCPConnectionError:
            raise
        except Exception as exc:
            await self.stop()
            raise MCPConnectionError(
                self.name, f"listing its tools failed: {describe(exc)}"
            ) from exc
        self._running = True

    async def stop(self) -> None:
        """Disconnect (the server process, for stdio, ends with it)."""
        self._closed = True
        self._running = False
        session, self._session = self._session, None
        if session is not None:
            await session.close()

    # ------------------------------------------------------------------ connection

    def _build_client(
        self, stack: AsyncExitStack, session: Session, stderr: StderrTail | None
    ) -> Client:
        server = self.server

        def screen(result: dict[str, Any]) -> None:
            client = session.client
            self._screen.screen_raw(result, client.protocol_version if client else None)

        transport: WatchedTransport
        if isinstance(server, HttpServerConfig):
            transport = WatchedTransport(
                http_transport(server, stack, session.mark_expired),
                session.mark_lost,
                screen=screen,
            )
        else:
            assert stderr is not None
            # Our copy of the stderr pipe's write end is closed once the child has it.
            transport = WatchedTransport(
                stdio_transport(server, stderr.writer, self._on_junk),
                session.mark_lost,
                stderr.close_writer,
                screen=screen,
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
        client = session.client
        if client is None:
            await session.close()
            tail = await stderr.tail() if stderr is not None else ""
            reason = describe(session.error) if session.error is not None else "closed"
            raise MCPConnectionError(self.name, reason, tail)
        self._note_era(client.protocol_version)
        return session

    def _note_era(self, version: str) -> None:
        """Say once when ``auto`` chose the stateless era, which loses things without a word."""
        if self.mode != "auto" or version not in MODERN_PROTOCOL_VERSIONS or self._era_warned:
            return
        self._era_warned = True
        logs = "" if self.log_level is not None else ", nor log messages (log_level is not set)"
        self.logger.warning(
            'MCP server %r speaks %s (chosen by protocol "auto"): in this stateless version a '
            "server cannot send requests of its own outside a tool call's input rounds "
            '(elicitation, sampling, roots)%s; set "protocol": "2025-11-25" for this server if '
            "it relies on them",
            self.name,
            version,
            logs,
        )

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
                    self.logger.warning(
                        "MCP server %r lost our session (%s); starting a new session",
                        self.name,
                        session.lost_reason or "it no longer knows the session",
                    )
                    self._session = await self._open()
                    return self._session
                if self._lost_at is None:  # died between calls, noticed only now
                    self._lost_at = anyio.current_time()
            if self._restarts >= self.max_restarts:
                self._give_up()
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

    def _give_up(self) -> None:
        """Leave the server out for the rest of the run: no tools listed, calls get errors."""
        if self.failure is not None:
            return
        self.failure = f"gave up after {self._restarts} restarts in a row"
        self.logger.warning(
            "MCP server %r left out: it kept failing (%s); its tools are no longer offered",
            self.name,
            self.failure,
        )
        self._tools_generation += 1
        self._specs = []
        self._last_specs = []
        self.notify_tools_changed()

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

    @property
    def left_out(self) -> dict[str, str]:
        """Tools the server listed that are not offered, each with the reason."""
        return dict(self._screen.left_out)

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

    # ------------------------------------------------------------------ tools

    def _exposed(self, wire_name: str) -> str:
        return wire_name if self.prefix is None else f"{self.prefix}{self.sep}{wire_name}"

    def _tools_changed(self) -> None:
        self._tools_generation += 1
        if self.failure is None:
            self._specs = None
        self.logger.debug("tool list of MCP server %r changed", self.name)
        self.notify_tools_changed()

    async def list_tools(self) -> list[ToolSpec]:
        """The server's tools, from cache; fetched (all pages) after a change or a restart.

        Once started, this never raises: a listing that fails offers the tools listed before
        (their calls fail, or restart the server), and a server given up offers none.
        """
        specs = self._specs
        if specs is not None:
            return specs
        async with self._list_lock:
            if self._specs is not None:
                return self._specs
            try:
                fresh = await self._fetch_specs()
            except Exception as exc:
                if not self._running:
                    raise
                return self._listing_failed(exc)
            if self.failure is not None:  # given up while fetching
                return []
            self._specs = self._last_specs = fresh
            return fresh

    async def _fetch_specs(self) -> list[ToolSpec]:
        fresh: list[ToolSpec] = []
        for _ in range(3):  # a change announced while fetching means fetch again
            generation = self._tools_generation
            tools = self._screen.usable(await self._request("tools/list", fetch_tools))
            self._tools = tools
            self._wire_names = {self._exposed(tool.name): tool.name for tool in tools}
            origin = f"mcp:{self.name}"
            fresh = [_convert.tool_spec(tool, self._exposed(tool.name), origin) for tool in tools]
            if generation == self._tools_generation:
                break
        return fresh

    def _listing_failed(self, exc: Exception) -> list[ToolSpec]:
        if self.failure is not None:
            self._specs = []
            return []
        stale = self._last_specs
        self.logger.warning(
            "listing the tools of MCP server %r failed (%s); offering the %d it listed before",
            self.name,
            describe(exc),
            len(stale),
        )
        self._specs = stale
        return stale

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
        with client_request(self.name, "tools/call", tool=wire) as request:
            result = await self._call_tool(wire, arguments, ctx, request_meta(request))
            if result.is_error:
                request.fail("tool_error")
            return result

    async def _call_tool(
        self, wire: str, arguments: dict[str, Any], ctx: ToolContext, meta: Meta
    ) -> ToolResult:
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
                    meta=meta,
                )
                break
            except Exception as exc:  # noqa: BLE001 - turned into feedback for the model
                if not (session.expired and attempt == 0):
                    return self._call_failed(session, wire, timeout, exc)
            # The server forgot our session before running the call: send it again on a new one.
            try:
                session = await self._live_session()
            except MCPConnectionError as exc:
                said = f" (it had said: {session.lost_reason})" if session.lost_reason else ""
                return ToolResult.error(f"{exc}{said}")
            if session.client is None:
                return ToolResult.error(f"MCP server {self.name!r} is not connected")
            client = session.client
        if self._restarts or self._lost_at is not None:
            self._restarts = 0
            self._lost_at = None
        return _convert.tool_result(result)

    def _call_failed(
        self, session: Session, tool: str, timeout: float | None, exc: BaseException
    ) -> ToolResult:
        result, lost = call_failure(
            self.name,
            tool,
            timeout,
            exc,
            session_lost=session.lost,
            lost_reason=session.lost_reason if session.expired else None,
        )
        if lost:
            self._connection_lost(session)
            self.logger.warning("%s", result.text_content)
        return result

    # ------------------------------------------------------------------ other requests

    async def _client(self) -> Client:
        session = await self._live_session()
        if session.client is None:
            raise MCPConnectionError(self.name, "not connected")
        return session.client

    async def _request(self, method: str, send: Callable[[Client, Meta], Awaitable[_T]]) -> _T:
        """Send one request in its client span (``send`` gets the ``_meta`` carrying the span's
        ``traceparent``); resend once on a new session if the server forgot the old one."""
        with client_request(self.name, method) as request:
            meta = request_meta(request)
            session = await self._live_session()
            try:
                if session.client is None:
                    raise MCPConnectionError(self.name, "not connected")
                return await send(session.client, meta)
            except Exception:
                if not session.expired:
                    raise
            return await send(await self._client(), meta)

    # resources and prompts: see ``ResourcesAndPrompts``

    def __repr__(self) -> str:
        return f"MCPToolset({self.name!r}, {self.server!r})"
