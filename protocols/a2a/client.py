"""A2A 1.0 client: talk to one peer agent over JSON-RPC or HTTP+JSON (REST).

The client resolves the peer's agent card (cached, revalidated with ``If-None-Match``), picks
the first interface in the card's ``supportedInterfaces`` order whose binding it speaks (the
server's preference wins unless told otherwise), and then offers every A2A operation as a typed
method. Both bindings carry the same JSON objects, so each operation is one ``(op, params)`` pair
that a binding turns into a JSON-RPC call or a REST request.

Reliability, which the issue trackers of other frameworks show matters (tasks never followed to
completion, fan-out that swamps a peer):

- ``follow_task`` / ``send_and_wait`` take a task to a terminal or interrupted state: through
  ``SubscribeToTask`` when the card says it streams, falling back to polling ``GetTask`` with
  backoff when a stream breaks or is not offered;
- connection failures are retried with exponential backoff; a request that may have reached the
  peer (a read error after sending) is retried only for idempotent operations; protocol errors
  (the peer answered with an A2A error) are never retried, they raise the typed exception from
  :mod:`.errors`;
- at most ``max_concurrency`` requests to one peer are in flight at a time.

Every request carries ``A2A-Version: 1.0`` and the configured credentials.
"""

from __future__ import annotations

import itertools
import json
import math
import random
import re
import time
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping, Sequence
from contextlib import aclosing, asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, TypeVar, Unpack
from urllib.parse import quote, urljoin, urlsplit

import anyio
import httpx
from pydantic import BaseModel, ValidationError

from .errors import (
    InvalidAgentResponseError,
    UnsupportedOperationError,
    error_from_jsonrpc,
    error_from_rest,
)
from .types import (
    A2A_CONTENT_TYPE,
    HTTP_JSON_BINDING,
    JSONRPC_BINDING,
    PROTOCOL_VERSION,
    AgentCard,
    AgentInterface,
    AuthenticationInfo,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageConfiguration,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatusUpdateEvent,
    format_timestamp,
)

__all__ = [
    "A2AClient",
    "A2AClientError",
    "A2AConnectionError",
    "A2AHTTPError",
    "NoCompatibleInterfaceError",
    "SendOptions",
    "TaskFilters",
    "TaskFollowTimeout",
    "apply_event",
]

WELL_KNOWN_CARD_PATH = "/.well-known/agent-card.json"
SUPPORTED_BINDINGS = (JSONRPC_BINDING, HTTP_JSON_BINDING)
_DEFAULT_CARD_MAX_AGE_S = 300.0

Binding = Literal["JSONRPC", "HTTP+JSON"]
_M = TypeVar("_M", bound=BaseModel)


# --------------------------------------------------------------------------- errors


class A2AClientError(Exception):
    """A failure on our side of the wire: the peer could not be reached or understood.

    Errors the peer answers with (task not found, not cancelable ...) are not this class: they
    raise the :class:`~.errors.A2AError` subclass the peer named.
    """


class A2AConnectionError(A2AClientError):
    """The peer could not be reached (after the configured retries).

    ``delivered`` tells whether the request may have reached the peer before the connection
    failed (then a non-idempotent operation may have taken effect).
    """

    def __init__(self, message: str, *, delivered: bool = False) -> None:
        super().__init__(message)
        self.delivered = delivered


class A2AHTTPError(A2AClientError):
    """The peer answered with an HTTP error that carries no A2A error object (a proxy's 502 ...)."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"HTTP {status_code}: {body[:300]}")
        self.status_code = status_code
        self.body = body


class NoCompatibleInterfaceError(A2AClientError):
    """The card lists no interface in a binding and protocol version this client speaks."""


class TaskFollowTimeout(A2AClientError, TimeoutError):
    """A task did not reach a terminal or interrupted state in time. ``task`` is the last seen."""

    def __init__(self, message: str, task: Task | None) -> None:
        super().__init__(message)
        self.task = task


# --------------------------------------------------------------------------- operations


@dataclass(frozen=True)
class _Op:
    """One A2A operation: its JSON-RPC name, REST verb and path template, and retry safety."""

    method: str
    http_method: str
    path: str
    idempotent: bool
    body: bool
    """REST: parameters travel as the JSON body (else path + query string)."""


_OPS: dict[str, _Op] = {
    op.method: op
    for op in (
        _Op("SendMessage", "POST", "/message:send", False, True),
        _Op("SendStreamingMessage", "POST", "/message:stream", False, True),
        _Op("GetTask", "GET", "/tasks/{id}", True, False),
        _Op("ListTasks", "GET", "/tasks", True, False),
        _Op("CancelTask", "POST", "/tasks/{id}:cancel", True, True),
        _Op("SubscribeToTask", "POST", "/tasks/{id}:subscribe", True, True),
        _Op(
            "CreateTaskPushNotificationConfig",
            "POST",
            "/tasks/{taskId}/pushNotificationConfigs",
            False,
            True,
        ),
        _Op(
            "GetTaskPushNotificationConfig",
            "GET",
            "/tasks/{taskId}/pushNotificationConfigs/{id}",
            True,
            False,
        ),
        _Op(
            "ListTaskPushNotificationConfigs",
            "GET",
            "/tasks/{taskId}/pushNotificationConfigs",
            True,
            False,
        ),
        _Op(
            "DeleteTaskPushNotificationConfig",
            "DELETE",
            "/tasks/{taskId}/pushNotificationConfigs/{id}",
            True,
            False,
        ),
        _Op("GetExtendedAgentCard", "GET", "/extendedAgentCard", True, False),
    )
}

_PATH_PARAM = re.compile(r"\{(\w+)\}")

# Errors raised before a request reached the peer: always safe to retry.
_CONNECT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
)
# Errors after the request may have been delivered: retried for idempotent operations only.
_DELIVERY_ERRORS: tuple[type[Exception], ...] = (
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
    httpx.ReadTimeout,
    httpx.WriteTimeout,
)
_RETRY_STATUSES = frozenset({502, 503, 504})
# Answers that say "nothing serves this URL" (when they carry no A2A error object).
_NOT_SERVED_STATUSES = frozenset({404, 405, 415, 501})


def _not_served(exc: Exception) -> bool:
    """The interface is not there: unreachable before sending, or no endpoint at the URL."""
    if isinstance(exc, A2AConnectionError):
        return not exc.delivered
    return isinstance(exc, A2AHTTPError) and exc.status_code in _NOT_SERVED_STATUSES


# --------------------------------------------------------------------------- task snapshots


def apply_event(task: Task, event: TaskStatusUpdateEvent | TaskArtifactUpdateEvent) -> Task:
    """Fold one streamed update into a task snapshot (in place; returned for chaining).

    A status update replaces the status; an artifact update adds the artifact, or, with
    ``append``, extends the parts of the artifact with the same id.
    """
    if isinstance(event, TaskStatusUpdateEvent):
        task.status = event.status
        if event.context_id and not task.context_id:
            task.context_id = event.context_id
        return task
    incoming = event.artifact
    for index, existing in enumerate(task.artifacts):
        if existing.artifact_id == incoming.artifact_id:
            if event.append:
                existing.parts.extend(incoming.parts)
                if incoming.name and not existing.name:
                    existing.name = incoming.name
            else:
                task.artifacts[index] = incoming.model_copy(deep=True)
            return task
    task.artifacts.append(incoming.model_copy(deep=True))
    return task


def _is_settled(state: TaskState) -> bool:
    """Terminal, or waiting on the client (input/auth required): following stops here."""
    return state.is_terminal or state.is_interrupted


# --------------------------------------------------------------------------- SSE


async def _iter_sse(response: httpx.Response) -> AsyncIterator[tuple[str, str]]:
    """Yield ``(event, data)`` for each server-sent event (W3C EventSource rules)."""
    event = "message"
    data: list[str] = []
    async for line in response.aiter_lines():
        if not line:
            if data:
                yield event, "\n".join(data)
            event, data = "message", []
            continue
        if line.startswith(":"):
            continue
        key, _, value = line.partition(":")
        if value.startswith(" "):
            value = value[1:]
        if key == "data":
            data.append(value)
        elif key == "event":
            event = value
    if data:
        yield event, "\n".join(data)


def _loads(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidAgentResponseError(f"{what} is not JSON: {exc}") from None


def _parse(cls: type[_M], data: Any, what: str) -> _M:
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidAgentResponseError(f"{what} does not match the A2A schema: {exc}") from None


# --------------------------------------------------------------------------- the client


class TaskFilters(TypedDict, total=False):
    """What ``list_tasks`` and ``iter_tasks`` select by (``None``: not filtered)."""

    context_id: str | None
    status: TaskState | None
    page_size: int | None
    history_length: int | None
    status_timestamp_after: datetime | None
    include_artifacts: bool | None


class SendOptions(TypedDict, total=False):
    """What a sent message carries besides its text (``None``: left out).

    ``context_id`` / ``task_id`` continue a conversation or a task; ``history_length``,
    ``accepted_output_modes`` and ``push_config`` shape the peer's answer.
    """

    context_id: str | None
    task_id: str | None
    history_length: int | None
    accepted_output_modes: Sequence[str] | None
    push_config: TaskPushNotificationConfig | None
    metadata: dict[str, Any] | None


def _refuse_unknown(given: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    """Refuse an unknown keyword as Python does for a function without ``**kwargs``."""
    unknown = sorted(given.keys() - known)
    if unknown:
        raise TypeError(f"unexpected {what}(s): {', '.join(unknown)}")


def _task_filter_params(filters: Mapping[str, Any]) -> dict[str, Any]:
    """ListTasks parameters (wire names) for the filters given; ``None`` and ``""`` left out."""
    _refuse_unknown(filters, TaskFilters.__optional_keys__, "task filter")
    params: dict[str, Any] = {}
    for key, value in filters.items():
        if value is None or value == "":
            continue
        if key == "status":
            value = TaskState(value).value
        elif key == "status_timestamp_after":
            value = format_timestamp(value)
        params[ListTasksRequest.model_fields[key].alias or key] = value
    return params


class _CardCache:
    def __init__(self) -> None:
        self.card: AgentCard | None = None
        self.etag: str | None = None
        self.expires_at = 0.0
        self.fetches = 0


class A2AClient:
    """A client for one A2A peer.

    ``url`` is the peer's base URL (the card is read from ``/.well-known/agent-card.json``
    below it) or the full URL of its card (anything ending in ``.json``). Pass ``card`` to skip
    discovery. Credentials: ``bearer_token`` (``Authorization: Bearer``), ``api_key`` (sent the
    way the card's API-key scheme says: header, query or cookie; ``X-API-Key`` header when the
    card names none), or any ``headers``.

    ``bindings`` lists the bindings this client may use; the card's order decides among them
    unless ``prefer_client_order`` is set. Use as an async context manager, or call
    :meth:`aclose`; an ``http`` client passed in is left open for its owner.
    """

    def __init__(
        self,
        url: str,
        *,
        card: AgentCard | None = None,
        http: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        bindings: Sequence[str] = SUPPORTED_BINDINGS,
        prefer_client_order: bool = False,
        max_concurrency: int = 16,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        card_max_age_s: float = _DEFAULT_CARD_MAX_AGE_S,
    ) -> None:
        unknown = [b for b in bindings if b not in SUPPORTED_BINDINGS]
        if unknown or not bindings:
            raise ValueError(
                f"bindings must be a non-empty subset of {SUPPORTED_BINDINGS}; got {list(bindings)}"
            )
        self._card_url = self._card_url_for(url)
        self._http = http
        self._owns_http = http is None
        self._timeout = timeout
        self._extra_headers = dict(headers or {})
        self._bearer_token = bearer_token
        self._api_key = api_key
        self._bindings = tuple(bindings)
        self._prefer_client_order = prefer_client_order
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._card_max_age_s = card_max_age_s
        self._cache = _CardCache()
        self._card_lock = anyio.Lock()
        self._fixed_card = card is not None
        if card is not None:
            self._cache.card = card
            self._cache.expires_at = math.inf
        self._interface: AgentInterface | None = None
        self._unusable: set[tuple[str, str]] = set()
        self._has_alternative = False
        self._ids = itertools.count(1)

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(
                timeout=httpx.Timeout(self._timeout, connect=min(self._timeout, 10.0)),
                limits=httpx.Limits(
                    max_connections=max(int(self._limiter.total_tokens), 1),
                    max_keepalive_connections=max(int(self._limiter.total_tokens), 1),
                ),
            )
        return self._http

    @property
    def card_url(self) -> str:
        return self._card_url

    @staticmethod
    def _card_url_for(url: str) -> str:
        path = urlsplit(url).path
        if path.endswith(".json"):
            return url
        return url.rstrip("/") + WELL_KNOWN_CARD_PATH

    # ------------------------------------------------------------------ card and binding

    async def get_card(self, *, refresh: bool = False) -> AgentCard:
        """The peer's agent card: cached for its ``max-age``, then revalidated by ETag."""
        cache = self._cache
        if cache.card is not None and (
            self._fixed_card or (not refresh and time.monotonic() < cache.expires_at)
        ):
            return cache.card
        fetched_before = cache.fetches
        async with self._card_lock:
            # Concurrent first calls share one fetch instead of each asking the peer.
            if cache.card is not None and cache.fetches != fetched_before:
                return cache.card
            return await self._fetch_card()

    async def _fetch_card(self) -> AgentCard:
        cache = self._cache
        headers = self._base_headers()
        headers["Accept"] = "application/json"
        if cache.card is not None and cache.etag:
            headers["If-None-Match"] = cache.etag
        response = await self._send_with_retries(
            lambda: self.http.build_request("GET", self._card_url, headers=headers),
            idempotent=True,
        )
        cache.fetches += 1
        if response.status_code == 304 and cache.card is not None:
            cache.expires_at = time.monotonic() + self._max_age(response)
            return cache.card
        if response.status_code != 200:
            raise A2AHTTPError(response.status_code, response.text)
        card = _parse(AgentCard, _loads(response.content, "agent card"), "agent card")
        if cache.card is None or card != cache.card:
            self._interface = None
            self._unusable.clear()
        cache.card = card
        cache.etag = response.headers.get("etag")
        cache.expires_at = time.monotonic() + self._max_age(response)
        return card

    def _max_age(self, response: httpx.Response) -> float:
        control = response.headers.get("cache-control", "")
        if "no-store" in control or "no-cache" in control:
            return 0.0
        match = re.search(r"max-age\s*=\s*(\d+)", control)
        return float(match.group(1)) if match else self._card_max_age_s

    async def interface(self) -> AgentInterface:
        """The interface this client talks to: the first usable one in preference order.

        An interface that turns out not to be served (connection refused, or an HTTP 404/405/
        415/501 without an A2A error) is skipped for the next one the card lists (spec 5.2:
        clients should fall back to alternative protocols).
        """
        card = await self.get_card()
        if self._interface is not None:
            return self._interface
        compatible = [
            iface
            for iface in card.supported_interfaces
            if iface.protocol_binding in self._bindings
            and (iface.protocol_version or PROTOCOL_VERSION).split(".")[0] == "1"
        ]
        if self._prefer_client_order:
            compatible.sort(key=lambda iface: self._bindings.index(iface.protocol_binding))
        if not compatible:
            offered = [
                f"{i.protocol_binding} {i.protocol_version}" for i in card.supported_interfaces
            ]
            raise NoCompatibleInterfaceError(
                f"{card.name!r} offers {offered}; this client speaks {list(self._bindings)} 1.x"
            )
        resolved = [
            i.model_copy(update={"url": urljoin(self._card_url, i.url)}) for i in compatible
        ]
        usable = [i for i in resolved if (i.protocol_binding, i.url) not in self._unusable]
        if not usable:
            # Every interface failed once: start over rather than give up for good.
            self._unusable.clear()
            usable = resolved
        self._interface = usable[0]
        self._has_alternative = len(usable) > 1
        return self._interface

    def _skip_interface(self, iface: AgentInterface) -> bool:
        """Mark ``iface`` unusable; whether another interface is left to try."""
        self._unusable.add((iface.protocol_binding, iface.url))
        alternative = self._has_alternative
        self._interface = None
        return alternative

    async def binding(self) -> str:
        return (await self.interface()).protocol_binding

    # ------------------------------------------------------------------ headers and sending

    def _base_headers(self) -> dict[str, str]:
        headers = {"A2A-Version": PROTOCOL_VERSION}
        if self._bearer_token:
            headers["Authorization"] = f"Bearer {self._bearer_token}"
        headers.update(self._extra_headers)
        return headers

    def _credentials(self) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and query parameters that carry the credentials."""
        headers = self._base_headers()
        params: dict[str, str] = {}
        if self._api_key:
            location, name = "header", "X-API-Key"
            card = self._cache.card
            if card is not None:
                for scheme in card.security_schemes.values():
                    if scheme.api_key_security_scheme is not None:
                        location = scheme.api_key_security_scheme.location
                        name = scheme.api_key_security_scheme.name
                        break
            if location == "query":
                params[name] = self._api_key
            elif location == "cookie":
                cookie = f"{name}={self._api_key}"
                headers["Cookie"] = (
                    f"{headers['Cookie']}; {cookie}" if "Cookie" in headers else cookie
                )
            else:
                headers[name] = self._api_key
        return headers, params

    def _delay(self, attempt: int) -> float:
        base = min(self._max_backoff_s, self._backoff_s * (2.0**attempt))
        return base * (0.5 + random.random() / 2)

    async def _send_with_retries(
        self,
        build: Callable[[], httpx.Request],
        *,
        idempotent: bool,
        stream: bool = False,
    ) -> httpx.Response:
        """Send one request (built afresh per attempt), retrying what is safe to retry.

        Connection failures before the request left are always retried; failures after it may
        have reached the peer, and 502/503/504 answers, only for idempotent operations.
        """
        attempt = 0
        while True:
            request: httpx.Request = build()
            try:
                response = await self.http.send(request, stream=stream)
            except _CONNECT_ERRORS as exc:
                error: Exception = exc
            except _DELIVERY_ERRORS as exc:
                if not idempotent:
                    raise A2AConnectionError(
                        f"{request.method} {request.url}: connection lost after sending: {exc!r}",
                        delivered=True,
                    ) from exc
                error = exc
            else:
                if (
                    idempotent
                    and response.status_code in _RETRY_STATUSES
                    and attempt < self._retries
                ):
                    await response.aclose()
                    await anyio.sleep(self._retry_after(response, attempt))
                    attempt += 1
                    continue
                return response
            if attempt >= self._retries:
                raise A2AConnectionError(
                    f"{request.method} {request.url}: failed after {attempt + 1} attempts: {error!r}"
                ) from error
            await anyio.sleep(self._delay(attempt))
            attempt += 1

    def _retry_after(self, response: httpx.Response, attempt: int) -> float:
        value = response.headers.get("retry-after", "")
        if value.isdigit():
            return min(float(value), self._max_backoff_s)
        return self._delay(attempt)

    @asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        # A fresh borrower per request: one task may hold a stream and issue a call at once.
        borrower = object()
        await self._limiter.acquire_on_behalf_of(borrower)
        try:
            yield
        finally:
            self._limiter.release_on_behalf_of(borrower)

    def _build(
        self, iface: AgentInterface, method: str, params: dict[str, Any], *, streaming: bool
    ) -> tuple[Callable[[], httpx.Request], bool]:
        """A request factory for one operation on the chosen binding, and its idempotency."""
        op = _OPS[method]
        headers, query = self._credentials()
        if streaming:
            headers["Accept"] = "text/event-stream"
        if iface.protocol_binding == JSONRPC_BINDING:
            if iface.tenant and "tenant" not in params:
                params = {**params, "tenant": iface.tenant}
            headers["Content-Type"] = "application/json"
            body = json.dumps(
                {"jsonrpc": "2.0", "id": next(self._ids), "method": method, "params": params},
                separators=(",", ":"),
            ).encode()

            def build_rpc() -> httpx.Request:
                return self.http.build_request(
                    "POST",
                    iface.url,
                    content=body,
                    headers=headers,
                    params=query or None,
                )

            return build_rpc, op.idempotent
        remaining = dict(params)
        remaining.pop("tenant", None)

        def fill(match: re.Match[str]) -> str:
            return quote(str(remaining.pop(match.group(1))), safe="")

        path = _PATH_PARAM.sub(fill, op.path)
        if iface.tenant:
            path = f"/{quote(iface.tenant, safe='')}{path}"
        url = iface.url.rstrip("/") + path
        content: bytes | None = None
        if op.body:
            headers["Content-Type"] = A2A_CONTENT_TYPE
            content = json.dumps(remaining, separators=(",", ":")).encode()
        else:
            for key, value in remaining.items():
                query[key] = _query_value(value)

        def build_rest() -> httpx.Request:
            return self.http.build_request(
                op.http_method,
                url,
                content=content,
                headers=headers,
                params=query or None,
            )

        return build_rest, op.idempotent

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        """Run one unary operation; return the result JSON (JSON-RPC ``result`` / REST body)."""
        while True:
            iface = await self.interface()
            build, idempotent = self._build(iface, method, params, streaming=False)
            try:
                async with self._slot():
                    response = await self._send_with_retries(build, idempotent=idempotent)
                if iface.protocol_binding == JSONRPC_BINDING:
                    return _unwrap_jsonrpc(response, method)
                return _unwrap_rest(response, method)
            except (A2AConnectionError, A2AHTTPError) as exc:
                if not _not_served(exc) or not self._skip_interface(iface):
                    raise

    async def _stream(
        self, method: str, params: dict[str, Any]
    ) -> AsyncGenerator[StreamResponse, None]:
        """Run one streaming operation; yield each event as a StreamResponse."""
        while True:
            iface = await self.interface()
            build, idempotent = self._build(iface, method, params, streaming=True)
            yielded = False
            try:
                async for event in self._stream_once(iface, build, idempotent, method):
                    yielded = True
                    yield event
                return
            except (A2AConnectionError, A2AHTTPError) as exc:
                if yielded or not _not_served(exc) or not self._skip_interface(iface):
                    raise

    async def _stream_once(
        self,
        iface: AgentInterface,
        build: Callable[[], httpx.Request],
        idempotent: bool,
        method: str,
    ) -> AsyncGenerator[StreamResponse, None]:
        rpc = iface.protocol_binding == JSONRPC_BINDING
        async with self._slot():
            response = await self._send_with_retries(build, idempotent=idempotent, stream=True)
            try:
                content_type = response.headers.get("content-type", "")
                if response.status_code >= 400 or "text/event-stream" not in content_type:
                    await response.aread()
                    body = (
                        _unwrap_jsonrpc(response, method) if rpc else _unwrap_rest(response, method)
                    )
                    # A server may answer a stream request with one plain JSON result.
                    yield _parse(StreamResponse, body, f"{method} response")
                    return
                async for event, data in _iter_sse(response):
                    payload = _loads(data, f"{method} event")
                    if rpc:
                        payload = _rpc_result(payload, method)
                    elif event == "error" or (isinstance(payload, dict) and "error" in payload):
                        status = (
                            payload.get("error", {}).get("code", 500)
                            if isinstance(payload, dict)
                            else 500
                        )
                        raise error_from_rest(status if isinstance(status, int) else 500, payload)
                    yield _parse(StreamResponse, payload, f"{method} event")
            except httpx.TransportError as exc:
                raise A2AConnectionError(f"{method} stream broke: {exc!r}", delivered=True) from exc
            finally:
                await response.aclose()

    # ------------------------------------------------------------------ messages

    @staticmethod
    def _request(
        message: Message | str, return_immediately: bool, options: SendOptions
    ) -> dict[str, Any]:
        _refuse_unknown(options, SendOptions.__optional_keys__, "send option")
        context_id = options.get("context_id")
        task_id = options.get("task_id")
        if isinstance(message, str):
            msg = Message.user_text(message, context_id=context_id, task_id=task_id)
        else:
            updates: dict[str, Any] = {}
            if context_id is not None:
                updates["context_id"] = context_id
            if task_id is not None:
                updates["task_id"] = task_id
            msg = message.model_copy(update=updates) if updates else message
        config = SendMessageConfiguration(
            accepted_output_modes=list(options.get("accepted_output_modes") or []),
            task_push_notification_config=options.get("push_config"),
            history_length=options.get("history_length"),
            return_immediately=return_immediately,
        )
        request = SendMessageRequest(
            message=msg,
            configuration=config if config.to_wire() else None,
            metadata=options.get("metadata"),
        )
        return request.to_wire()

    async def send_message(
        self,
        message: Message | str,
        *,
        return_immediately: bool = False,
        **options: Unpack[SendOptions],
    ) -> Task | Message:
        """SendMessage. Blocking by default: the peer answers once the task settles."""
        params = self._request(message, return_immediately, options)
        result = _parse(SendMessageResponse, await self._call("SendMessage", params), "SendMessage")
        return result.task if result.task is not None else result.message  # type: ignore[return-value]

    def send_message_streaming(
        self, message: Message | str, **options: Unpack[SendOptions]
    ) -> AsyncGenerator[StreamResponse, None]:
        """SendStreamingMessage: the events as they come (a Task or Message first)."""
        params = self._request(message, False, options)
        return self._stream("SendStreamingMessage", params)

    # ------------------------------------------------------------------ tasks

    async def get_task(self, task_id: str, *, history_length: int | None = None) -> Task:
        params: dict[str, Any] = {"id": task_id}
        if history_length is not None:
            params["historyLength"] = history_length
        return _parse(Task, await self._call("GetTask", params), "GetTask")

    async def list_tasks(
        self, *, page_token: str | None = None, **filters: Unpack[TaskFilters]
    ) -> ListTasksResponse:
        """One page of ListTasks; ``next_page_token`` is empty on the last page."""
        params = _task_filter_params(filters)
        if page_token:
            params["pageToken"] = page_token
        return _parse(ListTasksResponse, await self._call("ListTasks", params), "ListTasks")

    async def iter_tasks(self, **filters: Unpack[TaskFilters]) -> AsyncGenerator[Task, None]:
        """Every task the peer lists for these filters, following ``nextPageToken``."""
        token: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.list_tasks(page_token=token, **filters)
            for task in page.tasks:
                yield task
            if not page.next_page_token or page.next_page_token in seen:
                return
            seen.add(page.next_page_token)
            token = page.next_page_token

    async def cancel_task(self, task_id: str, *, metadata: dict[str, Any] | None = None) -> Task:
        params: dict[str, Any] = {"id": task_id}
        if metadata:
            params["metadata"] = metadata
        return _parse(Task, await self._call("CancelTask", params), "CancelTask")

    def subscribe(self, task_id: str) -> AsyncGenerator[StreamResponse, None]:
        """SubscribeToTask: a Task snapshot first, then updates until the task settles."""
        return self._stream("SubscribeToTask", {"id": task_id})

    # ------------------------------------------------------------------ push notification configs

    async def create_push_config(
        self,
        task_id: str,
        url: str,
        *,
        token: str | None = None,
        authentication: AuthenticationInfo | None = None,
        config_id: str | None = None,
    ) -> TaskPushNotificationConfig:
        config = TaskPushNotificationConfig(
            id=config_id, task_id=task_id, url=url, token=token, authentication=authentication
        )
        result = await self._call("CreateTaskPushNotificationConfig", config.to_wire())
        return _parse(TaskPushNotificationConfig, result, "CreateTaskPushNotificationConfig")

    async def get_push_config(self, task_id: str, config_id: str) -> TaskPushNotificationConfig:
        result = await self._call(
            "GetTaskPushNotificationConfig", {"taskId": task_id, "id": config_id}
        )
        return _parse(TaskPushNotificationConfig, result, "GetTaskPushNotificationConfig")

    async def list_push_configs(
        self, task_id: str, *, page_size: int | None = None, page_token: str | None = None
    ) -> ListTaskPushNotificationConfigsResponse:
        params: dict[str, Any] = {"taskId": task_id}
        if page_size is not None:
            params["pageSize"] = page_size
        if page_token:
            params["pageToken"] = page_token
        result = await self._call("ListTaskPushNotificationConfigs", params)
        return _parse(
            ListTaskPushNotificationConfigsResponse, result, "ListTaskPushNotificationConfigs"
        )

    async def delete_push_config(self, task_id: str, config_id: str) -> None:
        await self._call("DeleteTaskPushNotificationConfig", {"taskId": task_id, "id": config_id})

    async def get_extended_card(self) -> AgentCard:
        """GetExtendedAgentCard (authenticated). It replaces the cached public card."""
        card = _parse(AgentCard, await self._call("GetExtendedAgentCard", {}), "extended card")
        self._cache.card = card
        self._fixed_card = True
        self._interface = None
        return card

    # ------------------------------------------------------------------ following tasks

    async def follow_task(
        self,
        task: Task | str,
        *,
        timeout_s: float | None = None,
        poll_interval_s: float = 0.1,
        max_poll_interval_s: float = 2.0,
        use_streaming: bool | None = None,
    ) -> Task:
        """Wait until a task is terminal or interrupted and return its final snapshot.

        Subscribes when the card says the peer streams (``use_streaming`` overrides), and polls
        GetTask with growing intervals otherwise, or when the stream ends early or breaks.
        Raises :class:`TaskFollowTimeout` after ``timeout_s``.
        """
        snapshot = task if isinstance(task, Task) else None
        task_id = task.id if isinstance(task, Task) else task
        if snapshot is not None and _is_settled(snapshot.status.state):
            return snapshot
        if use_streaming is None:
            use_streaming = bool((await self.get_card()).capabilities.streaming)
        last: list[Task | None] = [snapshot]
        try:
            with anyio.fail_after(timeout_s):
                return await self._follow(
                    task_id, last, use_streaming, poll_interval_s, max_poll_interval_s
                )
        except TimeoutError as exc:
            raise TaskFollowTimeout(
                f"task {task_id} did not settle within {timeout_s}s", last[0]
            ) from exc

    async def _follow(
        self,
        task_id: str,
        last: list[Task | None],
        use_streaming: bool,
        poll_interval_s: float,
        max_poll_interval_s: float,
    ) -> Task:
        if use_streaming:
            try:
                async with aclosing(self.subscribe(task_id)) as events:
                    async for event in events:
                        if (settled := _fold_settled(last, event)) is not None:
                            return settled
            except UnsupportedOperationError:
                pass  # already terminal (subscribe refuses those): read it below
            except A2AConnectionError:
                pass  # the stream broke: fall back to polling
        interval = poll_interval_s
        while True:
            current = await self.get_task(task_id)
            last[0] = current
            if _is_settled(current.status.state):
                return current
            await anyio.sleep(interval)
            interval = min(max_poll_interval_s, interval * 1.5)

    async def send_and_wait(
        self,
        message: Message | str,
        *,
        timeout_s: float | None = None,
        streaming: bool | None = None,
        on_event: Any = None,
        return_immediately: bool = False,
        **options: Unpack[SendOptions],
    ) -> Task | Message:
        """Send a message and follow the task it starts until it is terminal or interrupted.

        Streams when the card says the peer streams (``streaming`` overrides); ``on_event`` (an
        async callable) sees each streamed event. Without streaming, ``return_immediately`` asks
        the peer for the task at once and polls it, so a caller that times out knows which task
        to cancel. A peer that answers with a Message returns it. ``options`` are the
        ``SendOptions`` of the message.
        """
        if streaming is None:
            streaming = bool((await self.get_card()).capabilities.streaming)
        last: list[Task | None] = [None]
        try:
            with anyio.fail_after(timeout_s):
                if not streaming:
                    reply = await self.send_message(
                        message, return_immediately=return_immediately, **options
                    )
                    if on_event is not None:
                        event = StreamResponse(task=reply) if isinstance(reply, Task) else None
                        await on_event(event or StreamResponse(message=reply))
                    if isinstance(reply, Message):
                        return reply
                    last[0] = reply
                    if _is_settled(reply.status.state):
                        return reply
                    return await self._follow(reply.id, last, False, 0.05, 1.0)
                try:
                    async with aclosing(self.send_message_streaming(message, **options)) as events:
                        async for event in events:
                            if on_event is not None:
                                await on_event(event)
                            if event.message is not None and last[0] is None:
                                return event.message
                            if (settled := _fold_settled(last, event)) is not None:
                                return settled
                except A2AConnectionError:
                    if last[0] is None:
                        raise
                if last[0] is None:
                    raise InvalidAgentResponseError("the stream ended before it named a task")
                return await self._follow(last[0].id, last, False, 0.1, 2.0)
        except TimeoutError as exc:
            raise TaskFollowTimeout(
                f"the peer did not settle within {timeout_s}s", last[0]
            ) from exc


def _fold(snapshot: Task | None, event: StreamResponse) -> Task | None:
    """The snapshot after one streamed event (``None`` until a Task has been seen)."""
    if event.task is not None:
        return event.task
    if snapshot is None:
        if event.status_update is not None:
            update = event.status_update
            return Task(id=update.task_id, context_id=update.context_id, status=update.status)
        return None
    if event.status_update is not None:
        return apply_event(snapshot, event.status_update)
    if event.artifact_update is not None:
        return apply_event(snapshot, event.artifact_update)
    return snapshot


def _fold_settled(last: list[Task | None], event: StreamResponse) -> Task | None:
    """Fold ``event`` into the snapshot in ``last[0]``; the task once it has settled."""
    current = _fold(last[0], event)
    if current is not None:
        last[0] = current
        if _is_settled(current.status.state):
            return current
    return None


def _query_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _rpc_result(payload: Any, method: str) -> Any:
    if not isinstance(payload, dict):
        raise InvalidAgentResponseError(f"{method}: a JSON-RPC response must be an object")
    if "error" in payload and payload["error"] is not None:
        error = payload["error"]
        if not isinstance(error, dict):
            raise InvalidAgentResponseError(f"{method}: malformed JSON-RPC error {error!r}")
        raise error_from_jsonrpc(error)
    if "result" not in payload:
        raise InvalidAgentResponseError(f"{method}: JSON-RPC response without result or error")
    return payload["result"]


def _json_body(response: httpx.Response, method: str) -> Any:
    """The parsed body; a body that is not JSON is the HTTP error it came with, or bad."""
    try:
        return json.loads(response.content)
    except ValueError:
        if response.status_code >= 400:
            raise A2AHTTPError(response.status_code, response.text) from None
        raise InvalidAgentResponseError(f"{method}: response is not JSON") from None


def _unwrap_jsonrpc(response: httpx.Response, method: str) -> Any:
    payload = _json_body(response, method)
    if isinstance(payload, dict) and ("error" in payload or "result" in payload):
        return _rpc_result(payload, method)
    if response.status_code >= 400:
        raise A2AHTTPError(response.status_code, response.text)
    raise InvalidAgentResponseError(f"{method}: not a JSON-RPC response")


def _unwrap_rest(response: httpx.Response, method: str) -> Any:
    if response.status_code == 204 or (response.status_code < 300 and not response.content):
        return {}
    payload = _json_body(response, method)
    if response.status_code >= 400:
        if isinstance(payload, dict) and isinstance(payload.get("error"), dict):
            raise error_from_rest(response.status_code, payload)
        raise A2AHTTPError(response.status_code, response.text)
    return payload
