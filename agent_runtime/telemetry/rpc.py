"""Spans of MCP and A2A requests (client and server side), with their duration metric.

A request span differs from a plain :func:`~.spans.span` in two ways. It records the request's
duration in ``agent_runtime.rpc.duration`` (:func:`~.metrics.record_request`) when it ends. And it
is current only where the caller says (:meth:`RequestSpan.activate`), not for its whole life: a
streamed answer is consumed by the caller between events, so its span is made current only while
the request is built (``traceparent`` injected) or while a server handler starts the work (a
task started there is its child), never across a ``yield``, where it would become the parent of
whatever the consumer does next, and could not be detached from another task.

With neither tracing nor metrics configured, :func:`start_request` returns one shared object whose
methods do nothing.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, MutableMapping
from types import TracebackType
from typing import Any

from .metrics import metrics_enabled, record_request
from .spans import (
    AttributeValue,
    SpanKind,
    error_type_of,
    mark_error,
    mark_failed,
    start_otel_span,
    tracer,
)

__all__ = ["RequestSpan", "start_request"]


class _Activation:
    """Makes one span current between ``__enter__`` and ``__exit__`` (in one task)."""

    __slots__ = ("_span", "_token")

    def __init__(self, span: Any) -> None:
        self._span = span
        self._token: Any = None

    def __enter__(self) -> None:
        if self._span is None:
            return
        from opentelemetry import context, trace

        self._token = context.attach(trace.set_span_in_context(self._span))

    def __exit__(self, *exc_info: object) -> None:
        if self._token is not None:
            from opentelemetry import context

            context.detach(self._token)
            self._token = None


_INACTIVE = _Activation(None)


class RequestSpan:
    """One MCP or A2A request in flight: its span (when tracing) and its start time.

    Use as ``with start_request(...) as rs:`` for a request answered at once (current inside the
    block, ended when it is left, an exception marking it failed), or call :meth:`activate` and
    :meth:`end` for a stream.
    """

    __slots__ = ("_ended", "_failed", "_method", "_side", "_span", "_started", "_system", "_using")

    def __init__(self, system: str, method: str, side: str, span: Any) -> None:
        self._system = system
        self._method = method
        self._side = side
        self._span = span
        self._started = time.perf_counter()
        self._ended = False
        self._failed: str | None = None
        self._using: _Activation | None = None

    @property
    def recording(self) -> bool:
        """Whether a real span records (worth computing attributes for)."""
        return self._span is not None

    @property
    def active(self) -> bool:
        """Whether anything is measured (a span, or the duration metric): worth following a
        stream for."""
        return True

    def activate(self) -> _Activation:
        """A context manager that makes this span current inside it."""
        return _Activation(self._span) if self._span is not None else _INACTIVE

    def inject(self, carrier: MutableMapping[str, str]) -> None:
        """Write this span's ``traceparent`` into ``carrier`` (whether or not it is current)."""
        if self._span is None:
            return
        from opentelemetry import trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        TraceContextTextMapPropagator().inject(carrier, trace.set_span_in_context(self._span))

    def set(self, key: str, value: AttributeValue | None) -> None:
        if self._span is not None and value is not None:
            self._span.set_attribute(key, value)

    def set_many(self, attributes: Mapping[str, AttributeValue | None]) -> None:
        if self._span is not None:
            # One call: the SDK takes the span's lock once for all of them.
            self._span.set_attributes({k: v for k, v in attributes.items() if v is not None})

    def fail(self, error_type: str, message: str = "") -> None:
        """Mark the request failed without an exception (an error result)."""
        self._failed = error_type
        if self._span is not None:
            mark_failed(self._span, error_type, message)

    def end(self, exc: BaseException | None = None) -> None:
        """End the request (once; later calls do nothing); ``exc``: what stopped it."""
        if self._ended:
            return
        self._ended = True
        error_type = self._failed
        s = self._span
        if exc is not None:
            error_type = mark_error(s, exc) if s is not None else error_type_of(exc)
        record_request(
            system=self._system,
            method=self._method,
            side=self._side,
            duration_s=time.perf_counter() - self._started,
            error_type=error_type,
        )
        if s is not None:
            s.end()

    def __enter__(self) -> RequestSpan:
        self._using = self.activate()
        self._using.__enter__()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        using, self._using = self._using, None
        try:
            if using is not None:
                using.__exit__(exc_type, exc, tb)
        finally:
            self.end(exc)


class _NullRequest(RequestSpan):
    """Handed out while neither tracing nor metrics are configured."""

    __slots__ = ()

    @property
    def active(self) -> bool:
        return False

    def __enter__(self) -> RequestSpan:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None

    def end(self, exc: BaseException | None = None) -> None:
        return None


_NULL = _NullRequest("", "", "", None)

_KINDS: dict[str, SpanKind] = {"client": "client", "server": "server"}


def start_request(
    system: str,
    method: str,
    side: str,
    *,
    name: str | None = None,
    attributes: Mapping[str, AttributeValue | None] | None = None,
    parent_carrier: Mapping[str, Any] | None = None,
) -> RequestSpan:
    """Start the span of one request: ``system`` "mcp" or "a2a", ``side`` "client" or "server";
    named ``name`` (default ``"{system} {method}"``). ``parent_carrier``: the headers (or MCP
    ``_meta``) of an incoming request, whose ``traceparent`` the span continues (an absent or
    malformed one starts a new trace); without it the span is a child of the current one."""
    if tracer() is None:
        if not metrics_enabled():
            return _NULL
        return RequestSpan(system, method, side, None)
    started = start_otel_span(
        name or f"{system} {method}",
        kind=_KINDS.get(side, "internal"),
        attributes=attributes,
        parent_carrier=parent_carrier,
    )
    return RequestSpan(system, method, side, started)
