"""What the servers behind a gateway send on their own, passed to the host in front.

An MCP server behind the gateway may, while a call runs, ask for a form (elicitation), ask for
a completion (sampling) or write log messages; it may also say that its tool, resource or prompt
list changed, or that a resource was updated (``server_changed``; updates go only to the hosts
subscribed to that URI, and every change is also published on ``bus`` for 2026-07-28 hosts,
which follow them with ``subscriptions/listen``).
``HostRelay`` hands each of these to the host that is connected in front of our MCP server
face: a request goes to the session of the front call in flight (the most recent one, tied to
it by ``related_request_id``, so over HTTP it rides that call's stream); a log message or a
list change with no call in flight goes to every connected host. A host on the stateless
2026-07-28 era cannot be sent a request: its call waits in ``rounds`` (``server_rounds``) and
the request goes back to it as an ``InputRequiredResult``; its retry carries the answer.

The relay plugs into the client side through its public hooks: ``elicit`` is an elicitation
callback, ``sampling_model`` is a ``ModelBackend`` whose completions the host in front writes,
and ``log_handler`` is a ``logging.Handler`` for the client toolsets' loggers (where log
messages of servers behind arrive).
"""

from __future__ import annotations

import inspect
import logging
import math
import os
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from typing import Any

import anyio
import mcp_types as mt
from mcp.server import ServerRequestContext
from mcp.server.session import ServerSession
from mcp.server.subscriptions import (
    InMemorySubscriptionBus,
    PromptsListChanged,
    ResourcesListChanged,
    ResourceUpdated,
    ServerEvent,
    ToolsListChanged,
)
from mcp_types.version import MODERN_PROTOCOL_VERSIONS

from agent_runtime.backend import ModelSettings
from agent_runtime.errors import ModelBackendError
from agent_runtime.policy import ApprovalCallback
from agent_runtime.turn_model import Turn, TurnModel
from agent_runtime.types import Message, ToolCall, ToolSpec

from ._callbacks import ElicitationResult, ServerChange
from .server_convert import sampling_request
from .server_rounds import DEFAULT_INPUT_WAIT_S, InputRounds, WaitingCall

_LEVELS: list[tuple[int, mt.LoggingLevel]] = [
    (logging.CRITICAL, "critical"),
    (logging.ERROR, "error"),
    (logging.WARNING, "warning"),
    (logging.INFO, "info"),
    (logging.DEBUG, "debug"),
]
_RANK: dict[str, int] = {
    "debug": 0,
    "info": 1,
    "notice": 2,
    "warning": 3,
    "error": 4,
    "critical": 5,
    "alert": 6,
    "emergency": 7,
}
_MAX_CONNECTIONS = 64
_SAMPLING_DEFAULT_MAX_TOKENS = 1024
INPUT_WAIT_ENV = "AGENT_RUNTIME_MCP_INPUT_WAIT_S"
"""Seconds a question from a server behind waits for a 2026-07-28 host's answer (the default
for ``HostRelay(input_wait_s=...)``; unset: ``DEFAULT_INPUT_WAIT_S``)."""
_in_gateway_call: ContextVar[bool] = ContextVar("agent_runtime_mcp_gateway_call", default=False)


def _mcp_level(levelno: int) -> mt.LoggingLevel:
    for threshold, name in _LEVELS:
        if levelno >= threshold:
            return name
    return "debug"


class _Forward(logging.Handler):
    """Queues each record of the client toolsets' loggers for the relay's pump."""

    def __init__(self, relay: HostRelay) -> None:
        super().__init__()
        self._relay = relay

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not break the call it is in
            return
        source = record.name.removeprefix("agent_runtime.mcp").lstrip(".") or "gateway"
        self._relay.queue_log(_mcp_level(record.levelno), source, message)


class RelaySamplingModel(TurnModel):
    """A ``ModelBackend`` whose answers come from the host in front (its sampling)."""

    def __init__(self, relay: HostRelay) -> None:
        self._relay = relay
        self.name = "host-in-front"

    async def _reply(
        self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings
    ) -> Turn:
        return await self._relay.sample(messages, settings)


class HostRelay:
    """Routes requests, logs and list changes from servers behind to the host in front."""

    def __init__(self, *, input_wait_s: float | None = None) -> None:
        self._calls: list[ServerRequestContext[Any, Any] | WaitingCall] = []
        self._connections: dict[int, ServerSession] = {}
        self._subscribers: dict[str, set[int]] = {}
        self.bus = InMemorySubscriptionBus()
        """Where changes go to hosts on 2026-07-28, which follow them with
        ``subscriptions/listen`` (the face serves it from this bus)."""
        self._log_level: str | None = None
        self._send, self._receive = anyio.create_memory_object_stream[tuple[str, Any]](
            max_buffer_size=math.inf
        )
        self.sampling_model = RelaySamplingModel(self)
        self.rounds = InputRounds(_input_wait_s() if input_wait_s is None else input_wait_s)
        """Calls of 2026-07-28 hosts that wait for the host's answers (see ``server_rounds``)."""
        self.log_handler: logging.Handler = _Forward(self)

    # ------------------------------------------------------------------ front sessions

    def remember(self, ctx: ServerRequestContext[Any, Any]) -> int:
        """Note the connection a front request came on (for list changes and stray logs);
        returns its key."""
        key = id(getattr(ctx.session, "_connection", ctx.session))
        if key not in self._connections and len(self._connections) >= _MAX_CONNECTIONS:
            self._forget(next(iter(self._connections)))
        self._connections[key] = ctx.session
        return key

    def _forget(self, key: int) -> None:
        self._connections.pop(key, None)
        for uri in [uri for uri, keys in self._subscribers.items() if key in keys]:
            self._drop_subscriber(uri, key)

    def _drop_subscriber(self, uri: str, key: int) -> bool:
        keys = self._subscribers.get(uri)
        if keys is None:
            return False
        keys.discard(key)
        if keys:
            return False
        del self._subscribers[uri]
        return True

    def subscribe(self, ctx: ServerRequestContext[Any, Any], uri: str) -> bool:
        """The host of ``ctx`` subscribed to ``uri``; ``True`` when it is the first to."""
        key = self.remember(ctx)
        first = uri not in self._subscribers
        self._subscribers.setdefault(uri, set()).add(key)
        return first

    def unsubscribe(self, ctx: ServerRequestContext[Any, Any], uri: str) -> bool:
        """The host of ``ctx`` unsubscribed from ``uri``; ``True`` when no host is left."""
        return self._drop_subscriber(uri, self.remember(ctx))

    @staticmethod
    def stateless(ctx: ServerRequestContext[Any, Any]) -> bool:
        """Whether the host of ``ctx`` speaks the stateless era (asked by ``InputRequiredResult``)."""
        return ctx.protocol_version in MODERN_PROTOCOL_VERSIONS

    @contextmanager
    def front_call(
        self, ctx: ServerRequestContext[Any, Any] | WaitingCall, *, gateway: bool
    ) -> Iterator[None]:
        """While a front tool call runs: requests from servers behind go to its host (through
        the request of a handshake-era host, or a 2026-07-28 host's ``WaitingCall``).

        ``gateway``: the call is a host's direct call of a tool behind the gateway, which the
        host has approved itself (see ``gateway_approval``).
        """
        self._calls.append(ctx)
        token = _in_gateway_call.set(gateway)
        try:
            yield
        finally:
            _in_gateway_call.reset(token)
            self._calls.remove(ctx)

    @staticmethod
    def in_gateway_call() -> bool:
        """Whether the current task runs a host's direct call through the gateway."""
        return _in_gateway_call.get()

    def approval(self, fallback: ApprovalCallback | None) -> ApprovalCallback:
        """The agent's approval callback: a host's direct gateway call is approved (the host
        asked its user before calling, as MCP hosts do; ``deny`` patterns still hold); any
        other call (inside ``ask_<name>``) is asked of ``fallback`` (none: denied)."""

        async def approve(call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]) -> bool:
            if _in_gateway_call.get():
                return True
            if fallback is None:
                return False
            verdict = fallback(call, spec, arguments)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            return bool(verdict)

        return approve

    def _current(self) -> ServerRequestContext[Any, Any] | WaitingCall | None:
        return self._calls[-1] if self._calls else None

    def set_log_level(self, level: str) -> None:
        """The host's ``logging/setLevel``: forward log messages from this level up."""
        self._log_level = level

    # ------------------------------------------------------------------ requests

    async def elicit(self, message: str, schema: dict[str, Any]) -> ElicitationResult | None:
        """An elicitation callback: the form goes to the host of the call in flight."""
        ctx = self._current()
        if ctx is None:
            return None  # no host is waiting on anything: decline
        if isinstance(ctx, WaitingCall):
            return await _elicit_by_round(ctx, message, schema)
        caps = ctx.session.client_capabilities
        if caps is None or caps.elicitation is None:
            return None
        result = await ctx.session.elicit_form(message, schema, related_request_id=ctx.request_id)
        content = {k: v for k, v in (result.content or {}).items()}
        return ElicitationResult(action=result.action, content=content)

    async def sample(self, messages: Sequence[Message], settings: ModelSettings) -> str:
        """A completion written by the host of the call in flight (its sampling)."""
        ctx = self._current()
        if ctx is None:
            raise ModelBackendError("no host call is in flight to ask for sampling")
        caps = ctx.capabilities if isinstance(ctx, WaitingCall) else ctx.session.client_capabilities
        if caps is None or caps.sampling is None:
            raise ModelBackendError("the host in front does not offer sampling")
        system, sampling_messages = sampling_request(messages)
        params = mt.CreateMessageRequestParams(
            messages=sampling_messages,
            max_tokens=settings.max_tokens or _SAMPLING_DEFAULT_MAX_TOKENS,
            system_prompt=system,
            temperature=settings.temperature,
            stop_sequences=list(settings.stop) or None,
        )
        if isinstance(ctx, WaitingCall):
            answer = await ctx.ask(mt.CreateMessageRequest(params=params))
            if answer is None:
                raise ModelBackendError(
                    f"the host in front did not answer the sampling request within "
                    f"{self.rounds.wait_s:g} s"
                )
            if not isinstance(answer, mt.CreateMessageResult | mt.CreateMessageResultWithTools):
                raise ModelBackendError("the host in front answered sampling with something else")
            result: mt.CreateMessageResult | mt.CreateMessageResultWithTools = answer
        else:
            result = await ctx.session.create_message(
                params.messages,
                max_tokens=params.max_tokens,
                system_prompt=params.system_prompt,
                temperature=params.temperature,
                stop_sequences=params.stop_sequences,
                related_request_id=ctx.request_id,
            )
        blocks = result.content if isinstance(result.content, list) else [result.content]
        return "\n".join(block.text for block in blocks if isinstance(block, mt.TextContent))

    # ------------------------------------------------------------------ notifications

    def queue_log(self, level: mt.LoggingLevel, source: str, message: str) -> None:
        """Queue a log message for the host (sent by ``pump``), if its level asks for it."""
        wanted = self._log_level
        if wanted is not None and _RANK[level] < _RANK.get(wanted, 0):
            return
        self._queue("log", (level, source, message))

    def _queue(self, kind: str, payload: Any) -> None:
        try:
            self._send.send_nowait((kind, payload))
        except (anyio.WouldBlock, anyio.BrokenResourceError, anyio.ClosedResourceError):
            pass  # shutting down

    def tools_changed(self) -> None:
        """A toolset listener: tell every connected host its tool list changed."""
        self._queue("tools", None)

    def server_changed(self, change: ServerChange, uri: str | None) -> None:
        """An MCP client toolset's change listener: a resource or prompt list changed behind
        (every host is told), or a resource was updated (hosts subscribed to it are told)."""
        if change == "resource_updated":
            if uri is not None:
                self._queue("updated", uri)
        else:
            self._queue(change, None)

    async def pump(self) -> None:
        """Deliver queued notifications until cancelled (runs beside the server); the calls
        of 2026-07-28 hosts waiting for answers run in its task group."""
        async with anyio.create_task_group() as tg:
            tg.start_soon(self.rounds.serve)
            async with self._receive:
                async for kind, payload in self._receive:
                    if kind == "log":
                        await self._send_log(*payload)
                    elif kind == "updated":
                        await self._send_updated(payload)
                    else:
                        await self._broadcast(kind)
            tg.cancel_scope.cancel()

    async def _broadcast(self, kind: str) -> None:
        event: ServerEvent
        if kind == "tools":
            event = ToolsListChanged()
        elif kind == "resources":
            event = ResourcesListChanged()
        else:
            event = PromptsListChanged()
        await self.bus.publish(event)
        for key, session in list(self._connections.items()):
            try:
                if kind == "tools":
                    await session.send_tool_list_changed()
                elif kind == "resources":
                    await session.send_resource_list_changed()
                else:
                    await session.send_prompt_list_changed()
            except Exception:  # noqa: BLE001 - a host that went away is forgotten
                self._forget(key)

    async def _send_updated(self, uri: str) -> None:
        await self.bus.publish(ResourceUpdated(uri=uri))
        for key in list(self._subscribers.get(uri, ())):
            session = self._connections.get(key)
            if session is None:
                continue
            try:
                await session.send_resource_updated(uri)
            except Exception:  # noqa: BLE001 - a host that went away is forgotten
                self._forget(key)

    async def _send_log(self, level: mt.LoggingLevel, source: str, message: str) -> None:
        current = self._current()
        ctx = current.ctx if isinstance(current, WaitingCall) else current
        if ctx is not None:
            try:
                await ctx.session.send_log_message(
                    level, message, logger=source, related_request_id=ctx.request_id
                )
                return
            except Exception:  # noqa: BLE001 - the call ended meanwhile: send it standalone
                pass
        for key, session in list(self._connections.items()):
            try:
                await session.send_log_message(level, message, logger=source)
            except Exception:  # noqa: BLE001 - a host that went away is forgotten
                self._forget(key)


def _input_wait_s() -> float:
    raw = os.environ.get(INPUT_WAIT_ENV)
    if not raw:
        return DEFAULT_INPUT_WAIT_S
    try:
        return float(raw)
    except ValueError:
        raise ValueError(f"{INPUT_WAIT_ENV} must be a number of seconds, got {raw!r}") from None


async def _elicit_by_round(
    call: WaitingCall, message: str, schema: dict[str, Any]
) -> ElicitationResult | None:
    """An elicitation for a 2026-07-28 host: asked in its call's next ``InputRequiredResult``."""
    caps = call.capabilities
    if caps is None or caps.elicitation is None:
        return None
    params = mt.ElicitRequestFormParams(message=message, requested_schema=schema)
    answer = await call.ask(mt.ElicitRequest(params=params))
    if answer is None:
        logging.getLogger("agent_runtime.mcp.serve").warning(
            "elicitation cancelled: the host in front did not answer in time"
        )
        return ElicitationResult(action="cancel")
    if not isinstance(answer, mt.ElicitResult):
        return ElicitationResult(action="cancel")
    return ElicitationResult(action=answer.action, content=dict(answer.content or {}))
