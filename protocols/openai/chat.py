"""``OpenAIChatModel``: any server that speaks the OpenAI chat completions API as a backend.

This is how the runtime drives a model served elsewhere: vLLM or SGLang serving Kimi K2 on a
cluster, Moonshot's API, Ollama on a laptop. Each model turn is one streaming
``POST {base_url}/chat/completions``; the server-sent chunks become the runtime's model events as
they arrive (see :mod:`.decode`), and the request body is built in :mod:`.request`.

Failures raise ``ModelBackendError`` with what went wrong: the HTTP status and the server's
message, a malformed or cut-off stream, a timeout. Overloaded or unreachable servers (429, 5xx,
connection errors) are retried with backoff, honouring ``Retry-After``, but only until the first
event has been yielded: after that the agent loop has already seen part of the turn, and a
second answer could not be stitched onto it.
"""

from __future__ import annotations

import json
import os
import random
import time
from collections.abc import AsyncIterator, Mapping, Sequence
from email.utils import parsedate_to_datetime
from types import TracebackType
from typing import Any, Self

import anyio
import httpx

from agent_runtime.backend import ModelBackend, ModelEvent, ModelSettings
from agent_runtime.errors import ModelBackendError, UserError
from agent_runtime.types import Message, ToolSpec

from .decode import DONE, ChunkDecoder, completion_events, error_message, sse_data
from .errors import ModelHTTPError
from .request import chat_request_body

# Failures where the server cannot have started on the request, or dropped the connection
# before answering: a chat completion has no side effects, so sending it again is safe.
_RETRY_TRANSPORT_ERRORS: tuple[type[Exception], ...] = (
    httpx.ConnectError,
    httpx.ConnectTimeout,
    httpx.PoolTimeout,
    httpx.ReadError,
    httpx.WriteError,
    httpx.RemoteProtocolError,
)
_ERROR_EXCERPT_CHARS = 500

_sleep = anyio.sleep  # module-level so tests can observe the waits without making them


def _retryable_status(status: int) -> bool:
    """Rate limits and server trouble; 501/505 say the server never will."""
    return status == 429 or (500 <= status < 600 and status not in (501, 505))


class OpenAIChatModel(ModelBackend):
    """A model behind an OpenAI-compatible ``/chat/completions`` endpoint.

    ``base_url`` is the API root, ending where the OpenAI paths start (``http://host:8000/v1``).
    The key comes from ``api_key`` or from the environment variable named by ``api_key_env``
    (read once, here, so a missing key fails at construction); it is sent as a bearer token.
    ``extra_body`` is merged into every request body at the top level (vLLM's
    ``chat_template_kwargs`` or guided decoding, SGLang's ``separate_reasoning`` ...).

    ``timeout_s`` bounds connecting and every wait for data (not a whole long generation). A
    client passed as ``http`` is used as is and left open; without one the model makes its own,
    closed by ``aclose()`` or ``async with``. Used without ``async with``, the model still works;
    its client is then closed only when it is garbage-collected.
    """

    def __init__(
        self,
        base_url: str,
        model: str,
        *,
        api_key: str | None = None,
        api_key_env: str | None = None,
        headers: Mapping[str, str] | None = None,
        timeout_s: float = 300.0,
        max_retries: int = 3,
        backoff_s: float = 0.5,
        max_backoff_s: float = 30.0,
        extra_body: Mapping[str, Any] | None = None,
        http: httpx.AsyncClient | None = None,
        name: str | None = None,
    ) -> None:
        if api_key is not None and api_key_env is not None:
            raise UserError("give api_key or api_key_env, not both")
        if api_key_env is not None:
            api_key = os.environ.get(api_key_env)
            if not api_key:
                raise UserError(f"environment variable {api_key_env} (api_key_env) is not set")
        if max_retries < 0 or timeout_s <= 0 or backoff_s < 0:
            raise UserError("max_retries and backoff_s must be >= 0 and timeout_s > 0")
        self.base_url = base_url.rstrip("/")
        self.model = model
        self.model_name = model  # telemetry's gen_ai.request.model: the id each request sends
        self.name = name or f"openai:{model}"
        self.url = f"{self.base_url}/chat/completions"
        self.timeout_s = timeout_s
        self.max_retries = max_retries
        self.backoff_s = backoff_s
        self.max_backoff_s = max_backoff_s
        self.extra_body = dict(extra_body or {})
        self._headers = {"Accept": "text/event-stream", **dict(headers or {})}
        if api_key:
            self._headers["Authorization"] = f"Bearer {api_key}"
        self._timeout = httpx.Timeout(timeout_s, connect=min(timeout_s, 10.0))
        self._http = http
        self._owns_http = http is None

    provider_name = "openai"
    """Telemetry's ``gen_ai.provider.name``: the OpenAI API (whichever server speaks it)."""

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
        """Close the client this model made (an injected one is its owner's to close)."""
        if self._owns_http and self._http is not None:
            http, self._http = self._http, None
            await http.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=self._timeout)
        return self._http

    # ------------------------------------------------------------------ one turn

    def request_body(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], settings: ModelSettings
    ) -> dict[str, Any]:
        """The JSON body this model sends for a turn (for logs and debugging)."""
        return chat_request_body(self.model, messages, tools, settings, self.extra_body)

    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        settings: ModelSettings,
    ) -> AsyncIterator[ModelEvent]:
        content = json.dumps(
            self.request_body(messages, tools, settings), ensure_ascii=False
        ).encode()
        headers = {**self._headers, "Content-Type": "application/json"}
        attempt = 0
        while True:
            started = False
            retry_in: float | None = None
            try:
                async with self.http.stream(
                    "POST", self.url, content=content, headers=headers, timeout=self._timeout
                ) as response:
                    if response.status_code >= 400:
                        failure = await self._status_error(response)
                        if not _retryable_status(response.status_code) or (
                            attempt >= self.max_retries
                        ):
                            raise failure
                        retry_in = self._retry_after(response, attempt)
                    else:
                        async for event in self._events(response):
                            started = True
                            yield event
                        return
            except httpx.TimeoutException as exc:
                if started or not isinstance(exc, _RETRY_TRANSPORT_ERRORS):
                    raise ModelBackendError(
                        f"{self.url}: no data from the server for {self.timeout_s:g} s "
                        f"({type(exc).__name__})"
                    ) from exc
                retry_in = self._retry_transport(exc, attempt)
            except _RETRY_TRANSPORT_ERRORS as exc:
                if started:
                    raise ModelBackendError(
                        f"{self.url}: connection lost mid-stream: {exc!r}"
                    ) from exc
                retry_in = self._retry_transport(exc, attempt)
            except httpx.HTTPError as exc:
                raise ModelBackendError(f"{self.url}: request failed: {exc!r}") from exc
            await _sleep(retry_in)
            attempt += 1

    # ------------------------------------------------------------------ helpers

    async def _events(self, response: httpx.Response) -> AsyncIterator[ModelEvent]:
        """The events of a successful answer, streamed or (from a server that ignored
        ``stream``) whole."""
        media_type = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if media_type == "text/event-stream":
            async for event in self._stream_events(sse_data(response.aiter_lines())):
                yield event
            return
        raw = (await response.aread()).decode("utf-8", errors="replace")
        if raw.lstrip().startswith(("data:", ":")):  # an event stream under another media type
            async for event in self._stream_events(sse_data(_lines(raw))):
                yield event
            return
        try:
            body = json.loads(raw)
        except json.JSONDecodeError as exc:
            raise ModelBackendError(
                f"{self.url}: answer is neither an event stream nor JSON "
                f"(content-type {media_type or 'missing'}): {_excerpt(raw)}"
            ) from exc
        for event in completion_events(body):
            yield event

    async def _stream_events(self, data: AsyncIterator[str]) -> AsyncIterator[ModelEvent]:
        decoder = ChunkDecoder()
        async for item in data:
            if item.strip() == DONE:
                yield decoder.finish()
                return
            try:
                chunk = json.loads(item)
            except json.JSONDecodeError as exc:
                raise ModelBackendError(
                    f"{self.url}: malformed stream: a data line is not JSON ({exc.msg}): "
                    f"{_excerpt(item)}"
                ) from exc
            for event in decoder.feed(chunk):
                yield event
        if not decoder.finished:
            raise ModelBackendError(
                f"{self.url}: the stream ended without [DONE] or a finish_reason "
                "(cut off by the server or a proxy?)"
            )
        yield decoder.finish()  # finished but no [DONE]: some servers omit it

    async def _status_error(self, response: httpx.Response) -> ModelHTTPError:
        raw = (await response.aread()).decode("utf-8", errors="replace")
        message: str | None = None
        try:
            message = error_message(json.loads(raw))
        except json.JSONDecodeError:
            pass
        detail = message or _excerpt(raw.strip()) or response.reason_phrase
        return ModelHTTPError(self.url, response.status_code, detail)

    def _backoff(self, attempt: int) -> float:
        base = min(self.max_backoff_s, self.backoff_s * (2.0**attempt))
        return base * (0.5 + random.random() / 2)

    def _retry_after(self, response: httpx.Response, attempt: int) -> float:
        """The server's ``Retry-After`` (seconds or an HTTP date), capped at ``max_backoff_s``;
        without one, exponential backoff with jitter."""
        value = response.headers.get("retry-after", "").strip()
        if value:
            try:
                seconds = float(value)
            except ValueError:
                try:
                    seconds = parsedate_to_datetime(value).timestamp() - time.time()
                except (TypeError, ValueError):
                    return self._backoff(attempt)
            return min(max(seconds, 0.0), self.max_backoff_s)
        return self._backoff(attempt)

    def _retry_transport(self, exc: Exception, attempt: int) -> float:
        if attempt >= self.max_retries:
            raise ModelBackendError(
                f"{self.url}: cannot reach the server after {attempt + 1} attempts: {exc!r}"
            ) from exc
        return self._backoff(attempt)


async def _lines(text: str) -> AsyncIterator[str]:
    for line in text.splitlines():
        yield line


def _excerpt(text: str) -> str:
    return text if len(text) <= _ERROR_EXCERPT_CHARS else text[:_ERROR_EXCERPT_CHARS] + "..."
