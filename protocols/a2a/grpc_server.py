"""The A2A node's gRPC binding: ``lf.a2a.v1.A2AService`` served with ``grpc.aio``.

The third binding over the same :class:`~.handler.A2ARequestHandler` and the same credentials
as the HTTP bindings (spec 5.1): each rpc reads the caller's principal from the gRPC metadata
(``authorization: Bearer <token>`` or the API-key header, lower-cased), checks ``a2a-version``
as the HTTP bindings check ``A2A-Version``, decodes the request (:mod:`.grpc_convert`), calls
the handler and encodes what it returns. ``SendStreamingMessage`` and ``SubscribeToTask`` are
server streams of ``StreamResponse``.

Every failure is an A2A error sent as a gRPC status with a ``google.rpc.Status`` in the
``grpc-status-details-bin`` trailer whose first detail is the ``google.rpc.ErrorInfo`` (spec
10.6): bad input is INVALID_ARGUMENT, bad credentials UNAUTHENTICATED, an unknown task
NOT_FOUND, and an unexpected fault INTERNAL (logged), never a dropped call.

The server is plaintext (for loopback, or behind a TLS-terminating proxy), as the HTTP app is.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from typing import Any

import grpc
import grpc.aio

from .errors import A2AError, InternalError, VersionNotSupportedError
from .grpc_convert import (
    METHODS,
    SERVICE,
    STATUS_DETAILS_KEY,
    GrpcMethod,
    decode_model,
    encode_model,
    status_of,
)
from .handler import A2ARequestHandler
from .tracing import serve_request
from .types import (
    A2AModel,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetExtendedAgentCardRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTasksRequest,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
)

logger = logging.getLogger(__name__)

DEFAULT_MAX_MESSAGE_BYTES = 10 * 1024 * 1024


@dataclass(frozen=True)
class _Route:
    request: type[A2AModel]
    run: str | None
    """The handler method; ``None`` for GetExtendedAgentCard (answered here)."""


_ROUTES: dict[str, _Route] = {
    "SendMessage": _Route(SendMessageRequest, "send_message"),
    "SendStreamingMessage": _Route(SendMessageRequest, "send_message_stream"),
    "GetTask": _Route(GetTaskRequest, "get_task"),
    "ListTasks": _Route(ListTasksRequest, "list_tasks"),
    "CancelTask": _Route(CancelTaskRequest, "cancel_task"),
    "SubscribeToTask": _Route(SubscribeToTaskRequest, "subscribe"),
    "CreateTaskPushNotificationConfig": _Route(TaskPushNotificationConfig, "create_push_config"),
    "GetTaskPushNotificationConfig": _Route(
        GetTaskPushNotificationConfigRequest, "get_push_config"
    ),
    "ListTaskPushNotificationConfigs": _Route(
        ListTaskPushNotificationConfigsRequest, "list_push_configs"
    ),
    "DeleteTaskPushNotificationConfig": _Route(
        DeleteTaskPushNotificationConfigRequest, "delete_push_config"
    ),
    "GetExtendedAgentCard": _Route(GetExtendedAgentCardRequest, None),
}


def _metadata(context: grpc.aio.ServicerContext[Any, Any]) -> dict[str, str]:
    """The call's text metadata, keys lower-cased."""
    return {
        str(key).lower(): value
        for key, value in (context.invocation_metadata() or ())
        if isinstance(value, str)
    }


def _check_version(metadata: dict[str, str]) -> None:
    """``a2a-version`` must name 1.x; none means 0.3 (spec 3.2.6), which this node does not speak."""
    version = metadata.get("a2a-version", "").strip()
    major, _, minor = version.partition(".")
    if version and major == "1" and (not minor or minor.isdigit()):
        return
    shown = version[:20] or "0.3"
    raise VersionNotSupportedError(
        f"A2A version {shown!r} is not supported; this agent speaks 1.0"
        " (send metadata 'a2a-version: 1.0')",
        metadata={"requestedVersion": shown, "supportedVersions": "1.0"},
    )


class A2AGrpcServicer:
    """Turns gRPC calls into handler calls; ``grpc_url`` and ``http_base_url`` feed the card."""

    def __init__(
        self,
        handler: A2ARequestHandler,
        *,
        http_base_url: str | None = None,
        grpc_url: Callable[[], str | None] | None = None,
    ) -> None:
        self.handler = handler
        self.http_base_url = http_base_url.rstrip("/") if http_base_url else None
        self._grpc_url = grpc_url

    def generic_handler(self) -> grpc.GenericRpcHandler:
        """The ``A2AService`` methods; messages travel as raw bytes and are decoded here."""
        handlers: dict[str, grpc.RpcMethodHandler] = {}
        for method in METHODS.values():
            if method.streaming:
                handlers[method.name] = grpc.unary_stream_rpc_method_handler(
                    self._stream_behaviour(method)
                )
            else:
                handlers[method.name] = grpc.unary_unary_rpc_method_handler(
                    self._unary_behaviour(method)
                )
        return grpc.method_handlers_generic_handler(SERVICE, handlers)

    # ------------------------------------------------------------------ calls

    async def _prepare(
        self, method: GrpcMethod, raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
    ) -> tuple[str, A2AModel]:
        """Credentials, version, request: the caller's principal and the decoded request."""
        metadata = _metadata(context)
        auth = self.handler.auth
        principal = auth.authenticate(metadata) if auth is not None else ""
        _check_version(metadata)
        await self.handler.startup()
        return principal, decode_model(method.request, raw, _ROUTES[method.name].request)

    async def _run(
        self,
        method: GrpcMethod,
        principal: str,
        request: A2AModel,
        context: grpc.aio.ServicerContext[Any, Any],
    ) -> Any:
        route = _ROUTES[method.name]
        if route.run is None:
            return self.extended_card()
        run = getattr(self.handler, route.run)
        return await serve_request(
            method.name,
            _metadata(context),
            lambda: run(principal, request),
            streaming=method.streaming,
        )

    def extended_card(self) -> A2AModel:
        """GetExtendedAgentCard: the card for authenticated callers (when auth is configured)."""
        from .server import JSONRPC_PATH, REST_PREFIX

        self.handler.check_extended_card()
        base = self.http_base_url or ""
        return self.handler.build_card(
            base + JSONRPC_PATH,
            base + REST_PREFIX,
            extended=True,
            grpc_url=self._grpc_url() if self._grpc_url is not None else None,
        )

    def _unary_behaviour(
        self, method: GrpcMethod
    ) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], Awaitable[bytes]]:
        async def behaviour(raw: bytes, context: grpc.aio.ServicerContext[Any, Any]) -> bytes:
            try:
                principal, request = await self._prepare(method, raw, context)
                result = await self._run(method, principal, request, context)
                return encode_model(method.response, result)
            except A2AError as exc:
                error: A2AError = exc
            except Exception:
                logger.exception("gRPC %s failed", method.name)
                error = InternalError()
            await _abort(context, error)
            raise AssertionError("unreachable: abort raises")

        return behaviour

    def _stream_behaviour(
        self, method: GrpcMethod
    ) -> Callable[[bytes, grpc.aio.ServicerContext[Any, Any]], AsyncIterator[bytes]]:
        async def behaviour(
            raw: bytes, context: grpc.aio.ServicerContext[Any, Any]
        ) -> AsyncIterator[bytes]:
            error: A2AError | None = None
            try:
                principal, request = await self._prepare(method, raw, context)
                events: AsyncIterator[StreamResponse] = await self._run(
                    method, principal, request, context
                )
                try:
                    async for event in events:
                        yield encode_model(method.response, event)
                finally:
                    aclose = getattr(events, "aclose", None)
                    if aclose is not None:
                        await aclose()
            except A2AError as exc:
                error = exc
            except Exception:
                logger.exception("gRPC %s failed", method.name)
                error = InternalError()
            if error is not None:
                await _abort(context, error)

        return behaviour


async def _abort(context: grpc.aio.ServicerContext[Any, Any], error: A2AError) -> None:
    """End the call with ``error``: its gRPC code, message and Status details (raises)."""
    code, status = status_of(error)
    context.set_trailing_metadata(((STATUS_DETAILS_KEY, status),))
    await context.abort(_STATUS_CODES[code], error.message)


_STATUS_CODES: dict[int, grpc.StatusCode] = {c.value[0]: c for c in grpc.StatusCode}


class A2AGrpcServer:
    """A ``grpc.aio`` server for one handler, on ``host:port`` (port 0: the OS picks one).

    ``advertised_host`` is the host written into the card's GRPC interface (default ``host``);
    ``http_base_url`` is where the HTTP bindings are, for the extended card.
    """

    def __init__(
        self,
        handler: A2ARequestHandler,
        host: str = "127.0.0.1",
        port: int = 0,
        *,
        http_base_url: str | None = None,
        advertised_host: str | None = None,
        max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.advertised_host = advertised_host or host
        self._servicer = A2AGrpcServicer(handler, http_base_url=http_base_url, grpc_url=self.url)
        self._max_message_bytes = max_message_bytes
        self._server: grpc.aio.Server | None = None

    def url(self) -> str | None:
        """``host:port`` for the card (a gRPC target), once the server listens."""
        if self._server is None:
            return None
        host = self.advertised_host
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        return f"{host}:{self.port}"

    async def start(self) -> int:
        """Start listening; return the port."""
        server = grpc.aio.server(
            options=[
                ("grpc.max_receive_message_length", self._max_message_bytes),
                ("grpc.max_send_message_length", self._max_message_bytes),
            ]
        )
        server.add_generic_rpc_handlers((self._servicer.generic_handler(),))
        host = f"[{self.host}]" if ":" in self.host else self.host
        self.port = server.add_insecure_port(f"{host}:{self.port}")
        await server.start()
        self._server = server
        return self.port

    async def stop(self, grace: float | None = 5.0) -> None:
        """Stop: open streams get ``grace`` seconds, then are cancelled."""
        if self._server is not None:
            await self._server.stop(grace)
            self._server = None


__all__ = ["A2AGrpcServer", "A2AGrpcServicer"]
