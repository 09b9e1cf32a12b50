"""W3C trace context across processes: ``traceparent`` (and ``tracestate``) in and out.

A2A requests carry it as HTTP headers; MCP requests as keys of the request's ``_meta``. Injection
writes only the trace-context keys (never baggage: it could carry anything) and does nothing while
tracing is off, so a peer sees no header it did not see before.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, MutableMapping
from typing import Any

from .spans import tracer

__all__ = ["TRACE_KEYS", "extract", "inject"]

TRACE_KEYS = ("traceparent", "tracestate")


def _propagator() -> Any:
    from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

    return TraceContextTextMapPropagator()


def inject(carrier: MutableMapping[str, str]) -> None:
    """Add the current span's ``traceparent`` (and ``tracestate``) to ``carrier``."""
    if tracer() is None:
        return
    _propagator().inject(carrier)


def extract(carrier: Mapping[str, Any]) -> Any:
    """The OpenTelemetry context a ``traceparent`` in ``carrier`` names (keys matched without
    regard to case, as HTTP headers are); an absent or malformed one gives an empty context, so a
    server span then starts a new trace."""
    if "opentelemetry.trace" not in sys.modules:
        return None
    found: dict[str, str] = {}
    for key, value in carrier.items():
        low = str(key).lower()
        if low in TRACE_KEYS and isinstance(value, str):
            found[low] = value
    if "traceparent" not in found:  # what the propagator would give, without making one
        from opentelemetry.context import Context

        return Context()
    return _propagator().extract(found)
