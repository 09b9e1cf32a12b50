"""The client side of the gRPC binding: one A2A operation as a ``grpc.aio`` call.

:class:`~.transport.Transport` hands an operation here when the chosen interface's binding is
``GRPC``; the parameters and the answer are the same ProtoJSON dicts the HTTP bindings carry
(:mod:`.grpc_convert` turns them into protobuf and back), so the client above does not care
which binding it talks to.

- the interface URL is a gRPC target, ``host:port`` (``grpc://`` or ``http://`` prefixes are
  dropped; ``grpcs://`` and ``https://`` mean TLS); one channel per target, kept open;
- credentials and ``a2a-version`` travel as metadata (lower-cased header names);
- failures to connect are retried with the transport's backoff; a call that may have reached
  the peer is retried only for idempotent operations; a peer's A2A error (its ErrorInfo reason,
  else its status code) raises the class from :mod:`.errors`, and ``UNIMPLEMENTED`` without one
  reads as "not served here" so the client can fall back to another interface.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Callable, Mapping
from typing import Any

import anyio
import grpc
import grpc.aio

from .errors import A2AConnectionError, A2AError, A2AHTTPError
from .grpc_convert import METHODS, STATUS_DETAILS_KEY, decode_answer, encode, error_of
from .transport import parse
from .types import StreamResponse

_PLAIN_PREFIXES = ("grpc://", "http://")
_TLS_PREFIXES = ("grpcs://", "https://")
# Metadata gRPC manages itself, or that means nothing outside HTTP.
_SKIPPED_HEADERS = frozenset({"content-type", "accept", "content-length", "host", "te"})
_CONNECT_HINTS = ("failed to connect", "connection refused", "connect failed", "dns resolution")


def grpc_target(url: str) -> tuple[str, bool]:
    """``(target, tls)`` for an interface URL (``host:port``, or with a scheme prefix)."""
    lowered = url.lower()
    for prefix in _TLS_PREFIXES:
        if lowered.startswith(prefix):
            return url[len(prefix) :].rstrip("/"), True
    for prefix in _PLAIN_PREFIXES:
        if lowered.startswith(prefix):
            return url[len(prefix) :].rstrip("/"), False
    return url.rstrip("/"), False


def grpc_metadata(headers: Mapping[str, str], params: Mapping[str, str]) -> list[tuple[str, str]]:
    """The HTTP headers (and credential query parameters) as gRPC metadata."""
    pairs = [(k.lower(), v) for k, v in headers.items() if k.lower() not in _SKIPPED_HEADERS]
    pairs.extend((k.lower(), v) for k, v in params.items())
    return pairs


def _failure(exc: grpc.aio.AioRpcError, method: str) -> Exception:
    """What a failed call means: the peer's A2A error, or our side's connection trouble."""
    code = exc.code()
    details = exc.details() or ""
    status_bin: bytes | None = None
    for key, value in exc.trailing_metadata() or ():
        if key == STATUS_DETAILS_KEY and isinstance(value, bytes):
            status_bin = value
    if code == grpc.StatusCode.UNAVAILABLE and status_bin is None:
        delivered = not any(hint in details.lower() for hint in _CONNECT_HINTS)
        return A2AConnectionError(f"{method}: peer unavailable: {details}", delivered=delivered)
    if code in (grpc.StatusCode.DEADLINE_EXCEEDED, grpc.StatusCode.CANCELLED):
        return A2AConnectionError(f"{method}: {code.name}: {details}", delivered=True)
    if code == grpc.StatusCode.UNIMPLEMENTED and status_bin is None:
        return A2AHTTPError(501, f"gRPC UNIMPLEMENTED: {details}")
    return error_of(code.name, details or f"gRPC {code.name}", status_bin)


class GrpcTransport:
    """Channels to gRPC peers and the calls on them (owned by a :class:`~.transport.Transport`)."""

    def __init__(
        self,
        *,
        timeout: float,
        retries: int,
        delay: Callable[[int], float],
        max_message_bytes: int = 64 * 1024 * 1024,
    ) -> None:
        self._timeout = timeout
        self._retries = retries
        self._delay = delay
        self._options = [
            ("grpc.max_receive_message_length", max_message_bytes),
            ("grpc.max_send_message_length", max_message_bytes),
        ]
        self._channels: dict[tuple[str, bool], grpc.aio.Channel] = {}

    def _channel(self, url: str) -> grpc.aio.Channel:
        key = grpc_target(url)
        channel = self._channels.get(key)
        if channel is None:
            target, tls = key
            if tls:
                credentials = grpc.ssl_channel_credentials()
                channel = grpc.aio.secure_channel(target, credentials, options=self._options)
            else:
                channel = grpc.aio.insecure_channel(target, options=self._options)
            self._channels[key] = channel
        return channel

    async def aclose(self) -> None:
        channels, self._channels = list(self._channels.values()), {}
        for channel in channels:
            await channel.close()

    async def _retry_or_raise(self, error: Exception, attempt: int, idempotent: bool) -> None:
        """Sleep before the next attempt when ``error`` may be retried; raise it otherwise."""
        if not isinstance(error, A2AConnectionError) or attempt >= self._retries:
            raise error
        if error.delivered and not idempotent:
            raise error
        await anyio.sleep(self._delay(attempt))

    async def call(
        self,
        url: str,
        method: str,
        params: dict[str, Any],
        metadata: list[tuple[str, str]],
        *,
        idempotent: bool,
    ) -> Any:
        """Run one unary operation; return the answer as ProtoJSON."""
        spec = METHODS[method]
        body = encode(spec.request, params)
        attempt = 0
        while True:
            rpc = self._channel(url).unary_unary(spec.path)
            try:
                raw = await rpc(body, metadata=metadata, timeout=self._timeout)
            except grpc.aio.AioRpcError as exc:
                await self._retry_or_raise(_failure(exc, method), attempt, idempotent)
                attempt += 1
                continue
            return decode_answer(spec.response, raw, f"{method} response")

    async def stream(
        self,
        url: str,
        method: str,
        params: dict[str, Any],
        metadata: list[tuple[str, str]],
        *,
        idempotent: bool,
    ) -> AsyncGenerator[StreamResponse, None]:
        """Run one server-streaming operation; yield each event.

        A failure to connect before the first event is retried like a unary call's.
        """
        spec = METHODS[method]
        body = encode(spec.request, params)
        attempt = 0
        while True:
            call = self._channel(url).unary_stream(spec.path)(body, metadata=metadata)
            received = False
            try:
                while True:
                    raw = await call.read()
                    if raw is grpc.aio.EOF:
                        return
                    received = True
                    data = decode_answer(spec.response, raw, f"{method} event")
                    yield parse(StreamResponse, data, f"{method} event")
            except grpc.aio.AioRpcError as exc:
                error = _failure(exc, method)
                if received or isinstance(error, A2AError):
                    raise error from None
                await self._retry_or_raise(error, attempt, idempotent)
                attempt += 1
            finally:
                call.cancel()
