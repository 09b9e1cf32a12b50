"""How an A2A request travels to a peer: all three bindings, retries, a bound on concurrency.

The bindings carry the same JSON objects, so each operation is one ``(op, params)`` pair that
:class:`Transport` turns into a JSON-RPC call or a REST request on a given interface (or hands
to :mod:`.grpc_transport` for a gRPC one), and whose answer it turns back into the result JSON
(or the typed error the peer named).

- connection failures are retried with exponential backoff; a request that may have reached the
  peer (a read error after sending) is retried only for idempotent operations; protocol errors
  (the peer answered with an A2A error) are never retried, they raise the typed exception from
  :mod:`.errors`;
- at most ``max_concurrency`` requests to one peer are in flight at a time.

Which interface to use is the client's choice (:mod:`.client`); an answer that says the
interface is not served at all is told apart by :func:`not_served`.
"""

from __future__ import annotations

import itertools
import json
import random
import re
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar
from urllib.parse import quote

import anyio
import httpx
from pydantic import BaseModel, ValidationError

from agent_runtime.telemetry.propagation import inject

from .errors import (
    A2AConnectionError,
    A2AHTTPError,
    InvalidAgentResponseError,
    error_from_jsonrpc,
    error_from_rest,
)
from .types import (
    A2A_CONTENT_TYPE,
    GRPC_BINDING,
    JSONRPC_BINDING,
    PROTOCOL_VERSION,
    AgentCard,
    AgentInterface,
    StreamResponse,
)

if TYPE_CHECKING:
    from .grpc_transport import GrpcTransport

_M = TypeVar("_M", bound=BaseModel)


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


def not_served(exc: Exception) -> bool:
    """The interface is not there: unreachable before sending, or no endpoint at the URL."""
    if isinstance(exc, A2AConnectionError):
        return not exc.delivered
    return isinstance(exc, A2AHTTPError) and exc.status_code in _NOT_SERVED_STATUSES


# --------------------------------------------------------------------------- reading answers


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


def loads(text: str | bytes, what: str) -> Any:
    """``text`` parsed as JSON; anything else is an invalid agent response."""
    try:
        return json.loads(text)
    except ValueError as exc:
        raise InvalidAgentResponseError(f"{what} is not JSON: {exc}") from None


def parse(cls: type[_M], data: Any, what: str) -> _M:
    """``data`` as the wire object ``cls``; a mismatch is an invalid agent response."""
    try:
        return cls.model_validate(data)
    except ValidationError as exc:
        raise InvalidAgentResponseError(f"{what} does not match the A2A schema: {exc}") from None


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


# --------------------------------------------------------------------------- the transport


class Transport:
    """The HTTP side of one :class:`~.client.A2AClient`: credentials, retries, both bindings.

    ``http`` is created on first use unless one is passed in (then it is left open for its
    owner). The card, when known, says where an API key travels.
    """

    def __init__(
        self,
        *,
        http: httpx.AsyncClient | None,
        headers: Mapping[str, str] | None,
        bearer_token: str | None,
        api_key: str | None,
        timeout: float,
        max_concurrency: int,
        retries: int,
        backoff_s: float,
        max_backoff_s: float,
    ) -> None:
        self._http = http
        self._owns_http = http is None
        self._timeout = timeout
        self._extra_headers = dict(headers or {})
        self._bearer_token = bearer_token
        self._api_key = api_key
        self._limiter = anyio.CapacityLimiter(max_concurrency)
        self._retries = retries
        self._backoff_s = backoff_s
        self._max_backoff_s = max_backoff_s
        self._ids = itertools.count(1)
        self._grpc: GrpcTransport | None = None

    async def aclose(self) -> None:
        if self._grpc is not None:
            await self._grpc.aclose()
            self._grpc = None
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    @property
    def grpc(self) -> GrpcTransport:
        """The gRPC side (created on first use: grpcio is imported only then)."""
        if self._grpc is None:
            from .grpc_transport import GrpcTransport

            self._grpc = GrpcTransport(
                timeout=self._timeout, retries=self._retries, delay=self._delay
            )
        return self._grpc

    def _grpc_request(
        self, iface: AgentInterface, params: dict[str, Any], card: AgentCard | None
    ) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Parameters (with the interface's tenant) and metadata for a gRPC call."""
        from .grpc_transport import grpc_metadata

        if iface.tenant and "tenant" not in params:
            params = {**params, "tenant": iface.tenant}
        headers, query = self._credentials(card)
        return params, grpc_metadata(headers, query)

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

    # ------------------------------------------------------------------ headers

    def base_headers(self) -> dict[str, str]:
        """What every request carries: the protocol version and the configured credentials."""
        headers = {"A2A-Version": PROTOCOL_VERSION}
        if self._bearer_token:
            headers["Authorization"] = f"Bearer {self._bearer_token}"
        headers.update(self._extra_headers)
        return headers

    def _credentials(self, card: AgentCard | None) -> tuple[dict[str, str], dict[str, str]]:
        """Headers and query parameters that carry the credentials (and the current span's
        ``traceparent``, when tracing)."""
        headers = self.base_headers()
        inject(headers)
        params: dict[str, str] = {}
        if self._api_key:
            location, name = "header", "X-API-Key"
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

    # ------------------------------------------------------------------ sending

    def _delay(self, attempt: int) -> float:
        base = min(self._max_backoff_s, self._backoff_s * (2.0**attempt))
        return base * (0.5 + random.random() / 2)

    async def send_with_retries(
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

    # ------------------------------------------------------------------ the two bindings

    def _build(
        self,
        iface: AgentInterface,
        method: str,
        params: dict[str, Any],
        card: AgentCard | None,
        *,
        streaming: bool,
    ) -> tuple[Callable[[], httpx.Request], bool]:
        """A request factory for one operation on the chosen binding, and its idempotency."""
        op = _OPS[method]
        headers, query = self._credentials(card)
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

    async def call(
        self, iface: AgentInterface, method: str, params: dict[str, Any], card: AgentCard | None
    ) -> Any:
        """Run one unary operation; return the result JSON (JSON-RPC ``result`` / REST body)."""
        if iface.protocol_binding == GRPC_BINDING:
            params, metadata = self._grpc_request(iface, params, card)
            async with self._slot():
                return await self.grpc.call(
                    iface.url, method, params, metadata, idempotent=_OPS[method].idempotent
                )
        build, idempotent = self._build(iface, method, params, card, streaming=False)
        async with self._slot():
            response = await self.send_with_retries(build, idempotent=idempotent)
        if iface.protocol_binding == JSONRPC_BINDING:
            return _unwrap_jsonrpc(response, method)
        return _unwrap_rest(response, method)

    def stream(
        self, iface: AgentInterface, method: str, params: dict[str, Any], card: AgentCard | None
    ) -> AsyncGenerator[StreamResponse, None]:
        """Run one streaming operation; yield each event as a StreamResponse."""
        if iface.protocol_binding == GRPC_BINDING:
            params, metadata = self._grpc_request(iface, params, card)
            return self._grpc_stream(iface, method, params, metadata)
        build, idempotent = self._build(iface, method, params, card, streaming=True)
        return self._stream_once(iface, build, idempotent, method)

    async def _grpc_stream(
        self,
        iface: AgentInterface,
        method: str,
        params: dict[str, Any],
        metadata: list[tuple[str, str]],
    ) -> AsyncGenerator[StreamResponse, None]:
        async with self._slot():
            events = self.grpc.stream(
                iface.url, method, params, metadata, idempotent=_OPS[method].idempotent
            )
            try:
                async for event in events:
                    yield event
            finally:
                await events.aclose()

    async def _stream_once(
        self,
        iface: AgentInterface,
        build: Callable[[], httpx.Request],
        idempotent: bool,
        method: str,
    ) -> AsyncGenerator[StreamResponse, None]:
        rpc = iface.protocol_binding == JSONRPC_BINDING
        async with self._slot():
            response = await self.send_with_retries(build, idempotent=idempotent, stream=True)
            try:
                content_type = response.headers.get("content-type", "")
                if response.status_code >= 400 or "text/event-stream" not in content_type:
                    await response.aread()
                    body = (
                        _unwrap_jsonrpc(response, method) if rpc else _unwrap_rest(response, method)
                    )
                    # A server may answer a stream request with one plain JSON result.
                    yield parse(StreamResponse, body, f"{method} response")
                    return
                async for event, data in _iter_sse(response):
                    payload = loads(data, f"{method} event")
                    if rpc:
                        payload = _rpc_result(payload, method)
                    elif event == "error" or (isinstance(payload, dict) and "error" in payload):
                        status = (
                            payload.get("error", {}).get("code", 500)
                            if isinstance(payload, dict)
                            else 500
                        )
                        raise error_from_rest(status if isinstance(status, int) else 500, payload)
                    yield parse(StreamResponse, payload, f"{method} event")
            except httpx.TransportError as exc:
                raise A2AConnectionError(f"{method} stream broke: {exc!r}", delivered=True) from exc
