"""Serve any ``ModelBackend`` over the OpenAI-compatible API: ``/v1/chat/completions``
(streamed and whole), ``/v1/models`` and ``/health``.

This is how other programs use a model this runtime runs, the local MoE above all
(``agent-runtime serve-model``): the official ``openai`` clients, vLLM-style tooling, or an
agent of another agent-runtime process through :class:`~.chat.OpenAIChatModel`. The server
knows the backend only through the core interface; the CLI loads the model and hands it in.

- Requests are checked before the model sees them (:mod:`.server_request`); a bad one is a 4xx
  with an OpenAI error object (``error.message``, ``type``, ``param``, ``code``), never a 500.
- One generation runs at a time; the others wait in arrival order (:mod:`.server_queue`), and
  ``/v1/models`` says so in the model's ``metadata``.
- A client that disconnects (a closed stream, a dropped connection, a request given up while
  it waited) stops its generation: the backend's stream is closed, which stops the local
  model within one decode step.
- Answers carry the backend's call ids (the local MoE's ``functions.NAME:IDX``), the finish
  reason (``tool_calls`` when the turn called tools) and usage with the prompt tokens served
  from the prefix cache (``prompt_tokens_details.cached_tokens``).
"""

from __future__ import annotations

import json
import logging
import secrets
import socket
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from agent_runtime.backend import ModelBackend, ModelFinish, TurnAssembler
from agent_runtime.errors import UserError

from .server_queue import GenerationQueue, QueueFull
from .server_request import ChatRequest, RequestError, parse_chat_request
from .server_response import ChunkEncoder, completion_body

__all__ = ["create_model_app", "serve_model"]

log = logging.getLogger(__name__)

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

DEFAULT_MAX_BODY_BYTES = 16 * 1024 * 1024
_SSE_HEADERS = [
    (b"content-type", b"text/event-stream; charset=utf-8"),
    (b"cache-control", b"no-cache"),
    (b"x-accel-buffering", b"no"),
]


def _error_response(err: RequestError) -> JSONResponse:
    headers = {"Retry-After": "1"} if err.status == 429 else None
    return JSONResponse(err.body(), status_code=err.status, headers=headers)


def _json_bytes(value: Any) -> bytes:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class _ModelService:
    """The state behind the routes: the backend, its id, the queue and the settings."""

    def __init__(
        self,
        backend: ModelBackend,
        model_id: str,
        queue: GenerationQueue,
        api_key: str | None,
        max_body_bytes: int,
    ) -> None:
        self.backend = backend
        self.model_id = model_id
        self.queue = queue
        self.api_key = api_key
        self.max_body_bytes = max_body_bytes
        self.created = int(time.time())

    # ------------------------------------------------------------------ routes

    async def health(self, request: Request) -> Response:
        return JSONResponse({"status": "ok", "model": self.model_id, **self.queue.snapshot()})

    def _model_object(self) -> dict[str, Any]:
        return {
            "id": self.model_id,
            "object": "model",
            "created": self.created,
            "owned_by": "agent-runtime",
            "metadata": {
                "backend": self.backend.name,
                "concurrency": self.queue.concurrency,
                "scheduling": "fifo",
                "max_waiting": self.queue.max_waiting,
                "note": "one generation at a time; other requests wait in arrival order",
            },
        }

    async def models(self, request: Request) -> Response:
        self._authorize(request)
        return JSONResponse({"object": "list", "data": [self._model_object()]})

    async def model(self, request: Request) -> Response:
        self._authorize(request)
        if request.path_params["model"] != self.model_id:
            return _error_response(self._unknown_model(request.path_params["model"], "model"))
        return JSONResponse(self._model_object())

    async def chat_completions(self, request: Request) -> Response:
        self._authorize(request)
        body = await self._read_json(request)
        chat = parse_chat_request(body)
        if chat.model != self.model_id:
            return _error_response(self._unknown_model(chat.model, "model"))
        return _CompletionResponse(self, chat)

    # ------------------------------------------------------------------ helpers

    def _unknown_model(self, name: str, param: str) -> RequestError:
        return RequestError(
            f"the model {name!r} does not exist here; this server serves {self.model_id!r}",
            param=param,
            status=404,
            code="model_not_found",
        )

    def _authorize(self, request: Request) -> None:
        if self.api_key is None:
            return
        given = request.headers.get("authorization", "")
        scheme, _, token = given.partition(" ")
        if scheme.lower() != "bearer" or not secrets.compare_digest(
            token.strip().encode(), self.api_key.encode()
        ):
            raise RequestError(
                "a valid API key is required (Authorization: Bearer KEY)",
                status=401,
                code="invalid_api_key",
            )

    async def _read_json(self, request: Request) -> Any:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise self._too_large()
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > self.max_body_bytes:
                raise self._too_large()
            chunks.append(chunk)
        raw = b"".join(chunks)
        try:
            return json.loads(raw)
        except UnicodeDecodeError:
            raise RequestError("the request body is not UTF-8") from None
        except json.JSONDecodeError as err:
            raise RequestError(
                f"the request body is not valid JSON: {err.msg} at line {err.lineno} column "
                f"{err.colno}"
            ) from None
        except RecursionError:
            raise RequestError("the request body nests too deeply") from None

    def _too_large(self) -> RequestError:
        return RequestError(
            f"the request body is larger than {self.max_body_bytes} bytes", status=413
        )


class _CompletionResponse(Response):
    """One chat completion, run when the answer is due, while watching for the client to go.

    Nothing is sent before the model has produced its first event, so a request the backend
    refuses (a ``UserError``) is still a 400; a full queue is a 429.
    """

    def __init__(self, service: _ModelService, chat: ChatRequest) -> None:
        super().__init__()
        self.service = service
        self.chat = chat
        self._started = False  # the status line is sent
        self._complete = False  # the last byte is about to be sent

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        client_left = False
        async with anyio.create_task_group() as group:

            async def watch() -> None:
                nonlocal client_left
                while True:
                    message = await receive()
                    if message["type"] == "http.disconnect":
                        if not self._complete:
                            client_left = True
                        group.cancel_scope.cancel()
                        return

            group.start_soon(watch)
            try:
                await self._answer(send)
            finally:
                group.cancel_scope.cancel()
        if client_left:
            self.service.queue.cancelled += 1
            log.info("client left; its generation was stopped")

    async def _send_json(self, send: Send, status: int, body: Any) -> None:
        data = _json_bytes(body)
        self._started = True
        await send(
            {
                "type": "http.response.start",
                "status": status,
                "headers": [
                    (b"content-type", b"application/json"),
                    (b"content-length", str(len(data)).encode()),
                    # as _error_response: a full queue tells the client when to try again
                    *([(b"retry-after", b"1")] if status == 429 else []),
                ],
            }
        )
        self._complete = True
        await send({"type": "http.response.body", "body": data, "more_body": False})

    async def _answer(self, send: Send) -> None:
        service, chat = self.service, self.chat
        try:
            async with service.queue.slot():
                events = service.backend.stream(chat.messages, chat.tools, chat.settings)
                try:
                    try:
                        first = await events.__anext__()
                    except UserError as err:
                        await self._send_json(send, 400, RequestError(str(err)).body())
                        return
                    except StopAsyncIteration:
                        first = ModelFinish()
                    if chat.stream:
                        await self._stream(send, first, events)
                    else:
                        assembler = TurnAssembler()
                        assembler.add(first)
                        async for event in events:
                            assembler.add(event)
                        body = completion_body(assembler.response(), service.model_id)
                        await self._send_json(send, 200, body)
                    service.queue.served += 1
                finally:
                    close = getattr(events, "aclose", None)
                    if close is not None:
                        with anyio.CancelScope(shield=True):
                            await close()
        except QueueFull as err:
            await self._send_json(
                send, 429, RequestError(str(err), status=429, type="rate_limit_error").body()
            )
        except Exception as err:
            if self._started:
                raise
            log.exception("the model failed on a request")
            failure = RequestError(f"the model failed: {err}", status=500, type="server_error")
            await self._send_json(send, 500, failure.body())

    async def _stream(self, send: Send, first: Any, events: Any) -> None:
        encoder = ChunkEncoder(self.service.model_id)
        self._started = True
        await send({"type": "http.response.start", "status": 200, "headers": _SSE_HEADERS})

        async def emit(value: Any) -> None:
            message = b"data: " + value + b"\n\n"
            await send({"type": "http.response.body", "body": message, "more_body": True})

        await emit(_json_bytes(encoder.start()))
        try:
            event = first
            while True:
                chunk = encoder.encode(event)
                if chunk is not None:
                    await emit(_json_bytes(chunk))
                if isinstance(event, ModelFinish):
                    break
                try:
                    event = await events.__anext__()
                except StopAsyncIteration:
                    event = ModelFinish()
            if self.chat.include_usage:
                await emit(_json_bytes(encoder.usage_chunk()))
            await emit(b"[DONE]")
        except Exception as err:  # mid-stream: the status is sent; say it in the stream
            log.exception("the model failed mid-stream")
            failure = RequestError(f"the model failed: {err}", status=500, type="server_error")
            await emit(_json_bytes(failure.body()))
        self._complete = True
        await send({"type": "http.response.body", "body": b"", "more_body": False})


async def _request_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, RequestError)
    return _error_response(exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    kind = "not_found_error" if exc.status_code == 404 else "invalid_request_error"
    message = (
        f"no route {request.method} {request.url.path}"
        if exc.status_code in (404, 405)
        else str(exc.detail)
    )
    return _error_response(RequestError(message, status=exc.status_code, type=kind))


async def _internal_error(request: Request, exc: Exception) -> Response:
    log.error("unexpected failure on %s %s", request.method, request.url.path, exc_info=exc)
    failure = RequestError(f"internal error: {exc!r}", status=500, type="server_error")
    return _error_response(failure)


def create_model_app(
    backend: ModelBackend,
    *,
    model_id: str | None = None,
    max_waiting: int = 64,
    api_key: str | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
) -> Starlette:
    """The ASGI app serving ``backend`` as the model ``model_id`` (default: its ``name``).

    ``max_waiting`` requests may wait for the model while one generates; ``api_key`` makes
    every ``/v1`` route require ``Authorization: Bearer KEY`` (``/health`` stays open).
    """
    service = _ModelService(
        backend,
        model_id or backend.name,
        GenerationQueue(max_waiting),
        api_key,
        max_body_bytes,
    )
    routes = [
        Route("/health", service.health, methods=["GET"]),
        Route("/v1/models", service.models, methods=["GET"]),
        Route("/v1/models/{model:path}", service.model, methods=["GET"]),
        Route("/v1/chat/completions", service.chat_completions, methods=["POST"]),
    ]
    app = Starlette(
        routes=routes,
        exception_handlers={
            RequestError: _request_error,
            HTTPException: _http_error,
            Exception: _internal_error,
        },
    )
    app.state.model_service = service
    return app


def _bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(512)
    sock.set_inheritable(True)
    return sock


def serve_model(
    backend: ModelBackend,
    *,
    host: str = "127.0.0.1",
    port: int = 8000,
    on_listening: Callable[[str], None] | None = None,
    **options: Any,
) -> None:
    """Serve ``backend`` with uvicorn until signalled (blocks). ``port`` 0 takes a free port;
    ``on_listening`` gets the API's base URL (``http://HOST:PORT/v1``) once it is bound.
    ``options`` go to :func:`create_model_app`."""
    import uvicorn

    app = create_model_app(backend, **options)
    sock = _bind(host, port)
    bound = int(sock.getsockname()[1])
    shown = f"[{host}]" if ":" in host else host
    if on_listening is not None:
        on_listening(f"http://{shown}:{bound}/v1")
    config = uvicorn.Config(app, log_level="warning", access_log=False, timeout_graceful_shutdown=5)
    uvicorn.Server(config).run(sockets=[sock])
