"""The A2A node as an ASGI app (starlette): agent card, JSON-RPC binding, HTTP+JSON binding.

The app is an :class:`~.asgi.A2AStarlette`: the two bindings' endpoints are called without
starlette's routing layers (unless middleware is added).

Layout (``base_url`` is where the app is reachable, e.g. ``http://127.0.0.1:8000``):

- ``GET  /.well-known/agent-card.json`` - the public card (:mod:`.card_endpoint`: ETag,
  Last-Modified, Cache-Control; 304 on ``If-None-Match``, or ``If-Modified-Since`` when no
  ``If-None-Match`` is sent);
- ``POST /a2a/jsonrpc`` (or ``/a2a/jsonrpc/``) - JSON-RPC 2.0; streaming methods answer with SSE
  whose ``data:`` lines are JSON-RPC responses carrying a ``StreamResponse``;
- ``/a2a/rest/...`` - HTTP+JSON: ``POST message:send``, ``POST message:stream``, ``GET tasks``,
  ``GET tasks/{id}``, ``POST tasks/{id}:cancel``, ``GET|POST tasks/{id}:subscribe``,
  ``POST|GET tasks/{id}/pushNotificationConfigs``, ``GET|DELETE
  tasks/{id}/pushNotificationConfigs/{configId}``, ``GET extendedAgentCard`` (an optional
  ``{tenant}/`` prefix is accepted). SSE ``data:`` lines are bare ``StreamResponse`` objects.

Every protocol request is checked in this order: the body (:mod:`.request_body`: content type,
size, arrival time (``body_timeout_s``: 408, connection closed), JSON nesting depth and lone
surrogates), (JSON-RPC: envelope), credentials, ``A2A-Version`` (missing means 0.3: refused with
-32009), method, parameters. Each failure is the spec's error, never a 500: JSON-RPC errors come
with HTTP 200 except 401 (credentials), 408 (body timeout), 413 (size) and 415 (content type);
REST errors use the spec's HTTP mapping with a ``google.rpc.Status``-shaped body.
"""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import unquote

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.routing import Route

from .asgi import A2AStarlette
from .auth import A2AAuthConfig
from .card import WELL_KNOWN_CARD_PATH, AgentCardConfig
from .card_endpoint import CARD_CACHE_SIZE, CardEndpoint
from .errors import (
    A2AError,
    InternalError,
    InvalidParamsError,
    InvalidRequestError,
    MethodNotFoundError,
    RequestTimeoutError,
    UnauthenticatedError,
    VersionNotSupportedError,
)
from .handler import DEFAULT_INPUT_REQUIRED_MARKER, A2ARequestHandler, RunnableAgent
from .push import PushConfig
from .request_body import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    MAX_JSON_DEPTH,
    check_json_input,
    parse_json_body,
    read_body,
)
from .sqlite_store import SQLiteTaskStore
from .store import TaskStore
from .tracing import serve_request
from .types import (
    A2A_CONTENT_TYPE,
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

JSONRPC_PATH = "/a2a/jsonrpc"
REST_PREFIX = "/a2a/rest"
DEFAULT_STORE_PATH = "a2a_tasks.sqlite3"

_ALL_VERBS = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
_SSE_HEADERS = {"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
_JSON = "application/json"

Handler = Callable[[str, Any], Awaitable[Any]]


@dataclass(frozen=True)
class _Method:
    request: type[A2AModel]
    run: str | None
    """The name of the handler's method that answers it (``None``: the app answers itself)."""
    streaming: bool = False


_METHODS: dict[str, _Method] = {
    "SendMessage": _Method(SendMessageRequest, "send_message"),
    "SendStreamingMessage": _Method(SendMessageRequest, "send_message_stream", streaming=True),
    "GetTask": _Method(GetTaskRequest, "get_task"),
    "ListTasks": _Method(ListTasksRequest, "list_tasks"),
    "CancelTask": _Method(CancelTaskRequest, "cancel_task"),
    "SubscribeToTask": _Method(SubscribeToTaskRequest, "subscribe", streaming=True),
    "CreateTaskPushNotificationConfig": _Method(TaskPushNotificationConfig, "create_push_config"),
    "GetTaskPushNotificationConfig": _Method(
        GetTaskPushNotificationConfigRequest, "get_push_config"
    ),
    "ListTaskPushNotificationConfigs": _Method(
        ListTaskPushNotificationConfigsRequest, "list_push_configs"
    ),
    "DeleteTaskPushNotificationConfig": _Method(
        DeleteTaskPushNotificationConfigRequest, "delete_push_config"
    ),
    "GetExtendedAgentCard": _Method(GetExtendedAgentCardRequest, None),
}


def _validation_error(exc: ValidationError, prefix: str = "") -> InvalidParamsError:
    violations = []
    for err in exc.errors(include_url=False)[:20]:
        loc = ".".join(str(p) for p in err.get("loc", ()) if p != "__root__")
        field = f"{prefix}.{loc}" if prefix and loc else (prefix or loc)
        violations.append((field, str(err.get("msg", "invalid"))))
    return InvalidParamsError.from_violations(violations)


def _is_valid_id(raw_id: Any) -> bool:
    return raw_id is None or (isinstance(raw_id, str | int) and not isinstance(raw_id, bool))


def _check_version(request: Request) -> None:
    version = request.headers.get("a2a-version") or request.query_params.get("A2A-Version")
    version = (version or "").strip()
    if not version:
        raise VersionNotSupportedError(
            "A2A version '0.3' (assumed: no A2A-Version header) is not supported; this agent"
            " speaks 1.0 (send 'A2A-Version: 1.0')",
            metadata={"requestedVersion": "0.3", "supportedVersions": "1.0"},
        )
    major, _, minor = version.partition(".")
    if major != "1" or (minor and not minor.isdigit()):
        raise VersionNotSupportedError(
            f"A2A version {version!r} is not supported; this agent speaks 1.0",
            metadata={"requestedVersion": version[:20], "supportedVersions": "1.0"},
        )


class A2AApp:
    """Owns the handler and turns HTTP requests into handler calls (both bindings)."""

    def __init__(
        self,
        handler: A2ARequestHandler,
        *,
        max_body_bytes: int,
        base_url: str | None,
        jsonrpc_path: str = JSONRPC_PATH,
        rest_prefix: str = REST_PREFIX,
        body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    ) -> None:
        self.handler = handler
        self.max_body_bytes = max_body_bytes
        self.body_timeout_s = body_timeout_s
        self.jsonrpc_path = jsonrpc_path
        self.rest_prefix = rest_prefix.rstrip("/")
        self.card = CardEndpoint(
            handler, base_url=base_url, jsonrpc_path=jsonrpc_path, rest_prefix=self.rest_prefix
        )
        """The agent card's endpoint (cache, ETag, Last-Modified)."""
        self._started = False

    # ------------------------------------------------------------------ common

    async def ensure_started(self) -> None:
        if not self._started:
            self._started = True
            await self.handler.startup()

    @property
    def base_url(self) -> str | None:
        """The public URL written into the card (``None``: each request's own URL)."""
        return self.card.base_url

    @property
    def grpc_url(self) -> str | None:
        """The gRPC binding's ``host:port`` when a gRPC server runs beside (``serve.py``)."""
        return self.card.grpc_url

    @grpc_url.setter
    def grpc_url(self, url: str | None) -> None:
        # Through the card endpoint, so cached cards, ETag and Last-Modified follow the change.
        self.card.set_grpc_url(url)

    @property
    def card_modified(self) -> int:
        """When the card's content last changed (epoch seconds): its ``Last-Modified``."""
        return self.card.modified

    @property
    def card_cache_size(self) -> int:
        """How many built cards are cached now (at most ``CARD_CACHE_SIZE``)."""
        return self.card.cache_size

    def _authenticate(self, request: Request) -> str:
        auth = self.handler.auth
        if auth is None:
            return ""
        return auth.authenticate(request.headers)

    async def _read_body(self, request: Request) -> bytes:
        return await read_body(
            request, max_bytes=self.max_body_bytes, timeout_s=self.body_timeout_s
        )

    def _auth_headers(self, error: A2AError) -> dict[str, str]:
        """Headers an error response needs: a challenge, or closing a half-read connection."""
        if isinstance(error, UnauthenticatedError) and self.handler.auth is not None:
            return {"WWW-Authenticate": self.handler.auth.challenge()}
        if isinstance(error, RequestTimeoutError):
            return {"Connection": "close"}
        return {}

    async def _call(self, method: str, principal: str, params: A2AModel, request: Request) -> Any:
        spec = _METHODS.get(method)
        if spec is None:
            raise MethodNotFoundError(f"Method {method!r} not found")
        if spec.run is None:  # GetExtendedAgentCard
            self.handler.check_extended_card()
            return _RawJSON(self.card.card_bytes(request, extended=True)[0])
        run = getattr(self.handler, spec.run)
        return await serve_request(
            method, request.headers, lambda: run(principal, params), streaming=spec.streaming
        )

    # ------------------------------------------------------------------ JSON-RPC

    async def jsonrpc(self, request: Request) -> Response:
        await self.ensure_started()
        if request.method != "POST":
            # JSON-RPC is POSTed; answer any other verb in the binding's own error shape.
            err = InvalidRequestError(
                f"JSON-RPC requests must be sent with POST, not {request.method}"
            )
            refusal = {"jsonrpc": "2.0", "id": None, "error": err.to_jsonrpc_error()}
            return Response(
                json.dumps(refusal).encode(),
                status_code=405,
                media_type=_JSON,
                headers={"Allow": "POST"},
            )
        request_id: Any = None
        try:
            body = await self._read_body(request)
            payload = parse_json_body(body)
            if isinstance(payload, dict) and _is_valid_id(payload.get("id")):
                request_id = payload.get("id")  # echoed by the nesting refusal below
            check_json_input(payload)
            if not isinstance(payload, dict):
                raise InvalidRequestError(
                    "A JSON-RPC request must be an object (batches are not supported)"
                )
            raw_id = payload.get("id")
            if _is_valid_id(raw_id):
                request_id = raw_id
            else:
                raise InvalidRequestError("'id' must be a string, a number or null")
            method = payload.get("method")
            if payload.get("jsonrpc") != "2.0" or not isinstance(method, str):
                raise InvalidRequestError(
                    "Not a JSON-RPC 2.0 request: 'jsonrpc' must be \"2.0\" and 'method' a string"
                )
            principal = self._authenticate(request)
            _check_version(request)
            spec = _METHODS.get(method)
            if spec is None:
                raise MethodNotFoundError(f"Method {method!r} not found")
            raw_params = payload.get("params")
            if raw_params is None:
                raw_params = {}
            if not isinstance(raw_params, dict):
                raise InvalidParamsError("'params' must be an object")
            try:
                params = spec.request.model_validate(raw_params)
            except ValidationError as exc:
                raise _validation_error(exc, "params") from None
            result = await self._call(method, principal, params, request)
        except A2AError as err:
            return self._jsonrpc_error(request_id, err)
        except Exception:
            logger.exception("internal error in JSON-RPC request")
            return self._jsonrpc_error(request_id, InternalError())
        if spec.streaming:
            return StreamingResponse(
                self._jsonrpc_sse(request_id, result),
                media_type="text/event-stream",
                headers=_SSE_HEADERS,
            )
        return Response(self._jsonrpc_success(request_id, result), media_type=_JSON)

    @staticmethod
    def _result_json(result: Any) -> bytes:
        if result is None:
            return b"{}"
        if isinstance(result, _RawJSON):
            return result.body
        if isinstance(result, A2AModel):
            return result.to_wire_json().encode()
        return json.dumps(result).encode()

    def _jsonrpc_success(self, request_id: Any, result: Any) -> bytes:
        return (
            b'{"jsonrpc":"2.0","id":'
            + json.dumps(request_id).encode()
            + b',"result":'
            + self._result_json(result)
            + b"}"
        )

    def _jsonrpc_error(self, request_id: Any, err: A2AError) -> Response:
        body = {"jsonrpc": "2.0", "id": request_id, "error": err.to_jsonrpc_error()}
        status = err.http_status if err.http_status in (401, 403, 408, 413, 415) else 200
        return Response(
            json.dumps(body).encode(),
            status_code=status,
            media_type=_JSON,
            headers=self._auth_headers(err),
        )

    async def _jsonrpc_sse(
        self, request_id: Any, events: AsyncIterator[StreamResponse]
    ) -> AsyncIterator[bytes]:
        rid = json.dumps(request_id).encode()
        try:
            async for event in events:
                yield (
                    b'data: {"jsonrpc":"2.0","id":'
                    + rid
                    + b',"result":'
                    + event.to_wire_json().encode()
                    + b"}\n\n"
                )
        except A2AError as err:
            body = {"jsonrpc": "2.0", "id": request_id, "error": err.to_jsonrpc_error()}
            yield b"data: " + json.dumps(body).encode() + b"\n\n"
        except Exception:
            logger.exception("error in SSE stream")
            body = {"jsonrpc": "2.0", "id": request_id, "error": InternalError().to_jsonrpc_error()}
            yield b"data: " + json.dumps(body).encode() + b"\n\n"
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()

    # ------------------------------------------------------------------ REST

    def _rest_error(self, err: A2AError) -> Response:
        return Response(
            json.dumps(err.to_rest_body()).encode(),
            status_code=err.http_status,
            media_type=A2A_CONTENT_TYPE,
            headers=self._auth_headers(err),
        )

    async def rest(self, request: Request) -> Response:
        await self.ensure_started()
        try:
            method, principal, params = await self._rest_route(request)
            spec = _METHODS[method]
            try:
                model = spec.request.model_validate(params)
            except ValidationError as exc:
                raise _validation_error(exc) from None
            result = await self._call(method, principal, model, request)
        except A2AError as err:
            return self._rest_error(err)
        except Exception:
            logger.exception("internal error in REST request")
            return self._rest_error(InternalError())
        if spec.streaming:
            return StreamingResponse(
                self._rest_sse(result), media_type="text/event-stream", headers=_SSE_HEADERS
            )
        return Response(self._result_json(result), media_type=A2A_CONTENT_TYPE)

    async def _rest_route(self, request: Request) -> tuple[str, str, dict[str, Any]]:
        """(method, principal, params) for a REST request; checks auth and version first."""
        path = request.url.path[len(self.rest_prefix) :].strip("/")
        segments = [unquote(s) for s in path.split("/")] if path else []
        verb = request.method.upper()
        body: dict[str, Any] = {}
        if verb in ("POST", "PUT", "PATCH"):
            raw = await self._read_body(request)
            if raw.strip():
                parsed = parse_json_body(raw)
                check_json_input(parsed)
                if not isinstance(parsed, dict):
                    raise InvalidRequestError("The request body must be a JSON object")
                body = parsed
        principal = self._authenticate(request)
        _check_version(request)
        if (
            segments
            and segments[0] not in ("message:send", "message:stream", "tasks")
            and (segments[0] != "extendedAgentCard")
        ):
            segments = segments[1:]  # a tenant prefix
        query = {k: v for k, v in request.query_params.items() if k != "A2A-Version"}
        check_json_input(query, prefix="query")
        check_json_input(segments, prefix="path")
        match (verb, segments):
            case ("POST", ["message:send"]):
                return "SendMessage", principal, body
            case ("POST", ["message:stream"]):
                return "SendStreamingMessage", principal, body
            case ("GET", ["tasks"]):
                return "ListTasks", principal, query
            case ("GET", ["tasks", task_ref]) if ":" not in task_ref:
                return "GetTask", principal, {**query, "id": task_ref}
            case ("POST", ["tasks", task_ref]) if task_ref.endswith(":cancel"):
                return "CancelTask", principal, {**body, "id": task_ref[: -len(":cancel")]}
            case ("GET" | "POST", ["tasks", task_ref]) if task_ref.endswith(":subscribe"):
                return "SubscribeToTask", principal, {"id": task_ref[: -len(":subscribe")]}
            case ("POST", ["tasks", task_id, "pushNotificationConfigs"]):
                return "CreateTaskPushNotificationConfig", principal, {**body, "taskId": task_id}
            case ("GET", ["tasks", task_id, "pushNotificationConfigs"]):
                return "ListTaskPushNotificationConfigs", principal, {**query, "taskId": task_id}
            case ("GET", ["tasks", task_id, "pushNotificationConfigs", config_id]):
                return (
                    "GetTaskPushNotificationConfig",
                    principal,
                    {"taskId": task_id, "id": config_id},
                )
            case ("DELETE", ["tasks", task_id, "pushNotificationConfigs", config_id]):
                return (
                    "DeleteTaskPushNotificationConfig",
                    principal,
                    {"taskId": task_id, "id": config_id},
                )
            case ("GET", ["extendedAgentCard"]):
                return "GetExtendedAgentCard", principal, {}
        raise MethodNotFoundError(f"No A2A operation at {verb} /{path}")

    async def _rest_sse(self, events: AsyncIterator[StreamResponse]) -> AsyncIterator[bytes]:
        try:
            async for event in events:
                yield b"data: " + event.to_wire_json().encode() + b"\n\n"
        except A2AError as err:
            yield b"data: " + json.dumps(err.to_rest_body()).encode() + b"\n\n"
        except Exception:
            logger.exception("error in SSE stream")
            yield b"data: " + json.dumps(InternalError().to_rest_body()).encode() + b"\n\n"
        finally:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()


@dataclass(frozen=True)
class _RawJSON:
    body: bytes


def create_a2a_app(
    agent: RunnableAgent,
    *,
    card: AgentCardConfig | None = None,
    store: TaskStore | None = None,
    auth: A2AAuthConfig | None = None,
    push: PushConfig | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    base_url: str | None = None,
    body_timeout_s: float = DEFAULT_BODY_TIMEOUT_S,
    store_path: str | None = None,
    input_required_marker: str | None = DEFAULT_INPUT_REQUIRED_MARKER,
    close_store: bool | None = None,
) -> Starlette:
    """An ASGI app serving ``agent`` over A2A 1.0 (see the module docstring for the layout).

    ``store`` defaults to a :class:`SQLiteTaskStore` at ``store_path`` (default
    ``a2a_tasks.sqlite3`` in the working directory). ``push=None`` enables push notifications with
    URL screening; ``PushConfig(enabled=False)`` turns them off.

    ``base_url`` is the public URL written into the card (e.g. ``https://agent.example.com``, the
    address clients reach through any proxy); set it for any node others use. Without it the
    card uses the URL each request came in on: its ``Host`` header when that is a plain
    ``host[:port]``, else the listening socket's address; at most ``CARD_CACHE_SIZE`` such cards
    are kept built. ``body_timeout_s`` bounds how long a request body may take to arrive (408 and
    the connection closed); ``max_body_bytes`` caps its size (413).
    ``close_store`` (default: only a store made here) closes the store when the app stops.
    """
    owns_store = store is None if close_store is None else close_store
    the_store: TaskStore = (
        store if store is not None else SQLiteTaskStore(store_path or DEFAULT_STORE_PATH)
    )
    handler = A2ARequestHandler(
        agent,
        the_store,
        card=card,
        auth=auth,
        push=push,
        input_required_marker=input_required_marker,
    )
    a2a = A2AApp(
        handler, max_body_bytes=max_body_bytes, base_url=base_url, body_timeout_s=body_timeout_s
    )

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await a2a.ensure_started()
        enter = getattr(agent, "__aenter__", None)
        if enter is not None:
            await enter()
        try:
            yield
        finally:
            try:
                await handler.shutdown()
            finally:
                exit_ = getattr(agent, "__aexit__", None)
                if exit_ is not None:
                    await exit_(None, None, None)
                if owns_store:
                    await the_store.close()

    routes = [
        Route(WELL_KNOWN_CARD_PATH, a2a.card.serve, methods=["GET"]),
        # Every verb reaches the handlers, so a wrong one gets an A2A error body, not
        # starlette's plain-text 405.
        Route(JSONRPC_PATH, a2a.jsonrpc, methods=_ALL_VERBS),
        # A client that appends a slash reaches the same endpoint, not a 307 it would not follow.
        Route(JSONRPC_PATH + "/", a2a.jsonrpc, methods=_ALL_VERBS),
        Route(REST_PREFIX + "/{rest:path}", a2a.rest, methods=_ALL_VERBS),
    ]
    app = A2AStarlette(routes=routes, lifespan=lifespan)
    app.set_direct_endpoints(
        {JSONRPC_PATH: a2a.jsonrpc, JSONRPC_PATH + "/": a2a.jsonrpc},
        (REST_PREFIX + "/", a2a.rest),
    )
    app.state.a2a = a2a
    app.state.handler = handler
    return app


__all__ = [
    "CARD_CACHE_SIZE",
    "DEFAULT_BODY_TIMEOUT_S",
    "DEFAULT_MAX_BODY_BYTES",
    "DEFAULT_STORE_PATH",
    "JSONRPC_PATH",
    "MAX_JSON_DEPTH",
    "REST_PREFIX",
    "A2AApp",
    "create_a2a_app",
]
