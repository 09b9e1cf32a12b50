"""The spans of MCP requests: ``mcp {method}`` on the client side, with the W3C ``traceparent``
of the span sent in the request's ``_meta``, and on the server face, continuing the one received.

The ``mcp`` SDK (2.3) has OpenTelemetry spans of its own: its ``MCP send {method}`` span, a
child of ours, overwrites the ``traceparent`` in ``_meta`` with its own (the chain still leads
back to ours), and its server middleware continues the one it receives, so on the server face
our span nests under the SDK's. Ours carry the runtime's names and attributes, and keep the
trace connected without the SDK's instrumentation.

Only the method, the server's name and the tool's name are recorded (``rpc.system`` "mcp",
``rpc.method``, ``mcp.server``, ``gen_ai.tool.name``): never arguments, results or headers.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, cast

import mcp_types as mt

from agent_runtime.telemetry.rpc import RequestSpan, start_request
from agent_runtime.telemetry.spans import tracing_enabled

__all__ = ["client_request", "request_meta", "server_request"]


def client_request(server: str, method: str, *, tool: str | None = None) -> RequestSpan:
    """The client span of one request to MCP server ``server`` (use it as a context manager)."""
    if not tracing_enabled():
        return start_request("mcp", method, "client")
    attributes = {"rpc.system": "mcp", "rpc.method": method, "mcp.server": server}
    return start_request(
        "mcp", method, "client", attributes={**attributes, "gen_ai.tool.name": tool}
    )


def request_meta(request: RequestSpan) -> mt.RequestParamsMeta | None:
    """The ``_meta`` a request carries for ``request``'s span: its ``traceparent`` (and
    ``tracestate``); ``None`` while not tracing, so the request goes out as before."""
    if not request.recording:
        return None
    carrier: dict[str, str] = {}
    request.inject(carrier)
    return cast(mt.RequestParamsMeta, carrier) if carrier else None


def server_request(
    method: str, meta: Mapping[str, Any] | None, *, tool: str | None = None
) -> RequestSpan:
    """The server face's span of one request, continuing the ``traceparent`` of its ``_meta``
    (none, or a malformed one: a new trace). The SDK's own server span, when its OpenTelemetry
    middleware made one (it continues the same ``_meta``), is current here: then this span is
    its child."""
    carrier = None if _sdk_span_current() else (meta or {})
    attributes = {"rpc.system": "mcp", "rpc.method": method, "gen_ai.tool.name": tool}
    return start_request("mcp", method, "server", attributes=attributes, parent_carrier=carrier)


def _sdk_span_current() -> bool:
    """Whether a span (the SDK's server span) is current in this request's context."""
    if not tracing_enabled():
        return False
    from opentelemetry import trace

    return bool(trace.get_current_span().get_span_context().is_valid)
