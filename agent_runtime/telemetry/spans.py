"""Spans on the OpenTelemetry API, costing one check when no SDK is configured.

:func:`span` returns a :class:`SpanScope` to use as a context manager. With tracing off (no
OpenTelemetry imported, or no SDK tracer provider set) it is one shared object whose methods do
nothing. With tracing on, entering starts the span and makes it current (so spans started inside,
and ``traceparent`` headers injected inside, belong to it); leaving ends it, and an exception
leaving it (cancellation included) marks it as an error with ``error.type``: no span stays open.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Mapping
from types import TracebackType
from typing import Any, Literal, cast

from ._providers import PerProvider, tracer_provider

__all__ = [
    "NO_SPAN",
    "AttributeValue",
    "SpanKind",
    "SpanScope",
    "error_type_of",
    "exception_attributes",
    "mark_error",
    "mark_failed",
    "span",
    "start_otel_span",
    "tracer",
    "tracing_enabled",
]

AttributeValue = str | bool | int | float | list[str] | list[int] | list[float] | list[bool]
SpanKind = Literal["internal", "client", "server", "producer", "consumer"]
"""The OpenTelemetry span kinds, by their lower-case names."""

_INSTRUMENTATION = "agent_runtime"


class _Api:
    """The OpenTelemetry API functions a span needs, looked up once (not per span)."""

    def __init__(self) -> None:
        from opentelemetry import context, trace

        self.attach = context.attach
        self.detach = context.detach
        self.set_span_in_context = trace.set_span_in_context
        self.kinds = {kind.name.lower(): kind for kind in trace.SpanKind}
        self.Status = trace.Status
        self.ERROR = trace.StatusCode.ERROR


_api: _Api | None = None


def _make_tracer(provider: Any) -> Any | None:
    global _api
    trace = sys.modules["opentelemetry.trace"]
    if isinstance(provider, trace.ProxyTracerProvider | trace.NoOpTracerProvider):
        return None
    from agent_runtime import __version__

    if _api is None:
        _api = _Api()
    return provider.get_tracer(_INSTRUMENTATION, __version__)


_tracers: PerProvider[Any] = PerProvider(tracer_provider, _make_tracer)

tracer: Callable[[], Any | None] = _tracers.get  # the bound method: no extra call per check
"""``tracer()``: the runtime's tracer, or ``None`` while no SDK tracer provider is installed.

OpenTelemetry is never imported here: a process that did not import it cannot have set a
provider. The answer is kept per provider object (cheap to re-check on every span)."""


def tracing_enabled() -> bool:
    """Whether spans are being recorded (an SDK tracer provider is installed)."""
    return _tracers.get() is not None


def error_type_of(exc: BaseException) -> str:
    """The ``error.type`` recorded for an exception: ``cancelled`` for a cancellation (asyncio's
    or trio's), else the exception class's qualified name."""
    import asyncio

    if isinstance(exc, asyncio.CancelledError) or type(exc).__name__ == "Cancelled":
        return "cancelled"
    return type(exc).__qualname__


def exception_attributes(exc: BaseException) -> dict[str, str]:
    """The semantic-convention ``exception`` event, with secrets cut from the message and the
    traceback text (an error message can quote a URL with a password or a header)."""
    import traceback

    from .content import scrub_text

    return {
        "exception.type": f"{type(exc).__module__}.{type(exc).__qualname__}",
        "exception.message": scrub_text(str(exc)),
        "exception.stacktrace": scrub_text("".join(traceback.format_exception(exc))),
    }


def mark_failed(otel_span: Any, error_type: str, message: str = "") -> None:
    """Set ``error.type`` and the ERROR status (``message``, cut to 500 characters, or the error
    type) on an OpenTelemetry span of the runtime's tracer."""
    api = _api
    if api is None:  # no tracer was made, so no span of ours exists
        return
    otel_span.set_attribute("error.type", error_type)
    otel_span.set_status(api.Status(api.ERROR, message[:500] or error_type))


def mark_error(otel_span: Any, exc: BaseException) -> str:
    """Mark an OpenTelemetry span as ended by ``exc``: ``error.type``, the ``exception`` event
    (not for a cancellation, which is no fault) and the ERROR status; returns the error type."""
    kind = error_type_of(exc)
    message = kind
    if kind != "cancelled":
        event = exception_attributes(exc)
        otel_span.add_event("exception", event)
        message = f"{kind}: {event['exception.message']}"
    mark_failed(otel_span, kind, message)
    return kind


def _present(
    attributes: Mapping[str, AttributeValue | None] | None,
) -> Mapping[str, AttributeValue] | None:
    """``attributes`` without the ``None`` values (``None`` when nothing is left)."""
    if not attributes:
        return None
    if None in attributes.values():
        return {k: v for k, v in attributes.items() if v is not None} or None
    return cast(Mapping[str, AttributeValue], attributes)  # no None among the values


def start_otel_span(
    name: str,
    *,
    kind: SpanKind = "internal",
    attributes: Mapping[str, AttributeValue | None] | None = None,
    parent_carrier: Mapping[str, Any] | None = None,
) -> Any | None:
    """Start an OpenTelemetry span of the runtime's tracer without making it current, or
    ``None`` while tracing is off. Its parent: the current span, or, given ``parent_carrier``
    (HTTP headers, gRPC metadata, MCP ``_meta``), the ``traceparent`` in it (none, or a malformed
    one: the span starts a new trace)."""
    t = _tracers.get()
    api = _api
    if t is None or api is None:
        return None
    parent = None
    if parent_carrier is not None:
        from .propagation import extract

        parent = extract(parent_carrier)
    return t.start_span(name, context=parent, kind=api.kinds[kind], attributes=_present(attributes))


class SpanScope:
    """One span while it is open; every method is a no-op when tracing is off."""

    __slots__ = ("_attributes", "_carrier", "_kind", "_name", "_span", "_token")

    def __init__(
        self,
        name: str,
        kind: SpanKind,
        attributes: Mapping[str, AttributeValue | None] | None,
        carrier: Mapping[str, str] | None,
    ) -> None:
        self._name = name
        self._kind = kind
        self._attributes = attributes
        self._carrier = carrier
        self._span: Any = None
        self._token: Any = None

    @property
    def recording(self) -> bool:
        """True when this scope records a real span (worth computing costly attributes for)."""
        return self._span is not None

    def __enter__(self) -> SpanScope:
        api = _api
        s = start_otel_span(
            self._name, kind=self._kind, attributes=self._attributes, parent_carrier=self._carrier
        )
        if s is None or api is None:
            return self
        self._span = s
        self._token = api.attach(api.set_span_in_context(s))
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        s = self._span
        api = _api
        if s is None or api is None:
            return
        self._span = None
        try:
            if exc is not None:
                mark_error(s, exc)
        finally:
            s.end()
            try:
                api.detach(self._token)
            except Exception:  # left in another task's context: nothing to restore here
                pass

    def set(self, key: str, value: AttributeValue | None) -> None:
        """Set one attribute (``None`` values are left out)."""
        if self._span is not None and value is not None:
            self._span.set_attribute(key, value)

    def set_many(self, attributes: Mapping[str, AttributeValue | None]) -> None:
        if self._span is not None:
            for key, value in attributes.items():
                if value is not None:
                    self._span.set_attribute(key, value)

    def event(self, name: str, attributes: Mapping[str, AttributeValue] | None = None) -> None:
        if self._span is not None:
            self._span.add_event(name, dict(attributes) if attributes else None)

    def fail(self, error_type: str, message: str = "") -> None:
        """Mark the span as failed without an exception (a tool result with ``is_error``, an A2A
        task that ended FAILED)."""
        if self._span is not None:
            mark_failed(self._span, error_type, message)

    def record_child(
        self,
        name: str,
        *,
        start_ns: int,
        end_ns: int,
        attributes: Mapping[str, AttributeValue | None] | None = None,
        error_type: str | None = None,
    ) -> None:
        """Record a child of this span that already ran, from ``start_ns`` to ``end_ns``
        (nanoseconds on the ``time.time_ns()`` clock, the SDK's): a phase whose times are known
        only after the fact (the prefill and the decoding of a model turn). ``error_type``: it
        failed (``error.type`` and the ERROR status)."""
        api = _api
        t = _tracers.get()
        if self._span is None or t is None or api is None:
            return
        child = t.start_span(
            name,
            context=api.set_span_in_context(self._span),
            kind=api.kinds["internal"],
            attributes=_present(attributes),
            start_time=start_ns,
        )
        if error_type is not None:
            mark_failed(child, error_type)
        child.end(end_time=end_ns)


class _NullScope(SpanScope):
    """The scope handed out while tracing is off: nothing to start, nothing to end."""

    __slots__ = ()

    def __enter__(self) -> SpanScope:
        return self

    def __exit__(self, *exc_info: object) -> None:
        return None


_NULL = _NullScope("", "internal", None, None)
NO_SPAN: SpanScope = _NULL
"""The scope :func:`span` hands out while tracing is off (for a caller that skips building a
span's name and attributes when :func:`tracer` says tracing is off)."""


def span(
    name: str,
    *,
    kind: SpanKind = "internal",
    attributes: Mapping[str, AttributeValue | None] | None = None,
    parent_carrier: Mapping[str, str] | None = None,
) -> SpanScope:
    """A span named ``name``; ``parent_carrier``: headers (or MCP ``_meta``) holding a W3C
    ``traceparent`` that the span continues (a server span for a request from another process).
    Use as ``with span(...) as s:``."""
    if _tracers.get() is None:
        return _NULL
    return SpanScope(name, kind, attributes, parent_carrier)
