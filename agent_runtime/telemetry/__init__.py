"""Observability: OpenTelemetry traces and metrics of runs, model calls, tool calls, MCP and A2A.

The runtime records through the OpenTelemetry *API*; without an SDK configured every span and
instrument is a no-op that costs one check. ``import agent_runtime`` does not import OpenTelemetry:
it is imported when :func:`configure` runs, or was already imported by an application that set up
its own SDK (then the runtime's spans join that application's provider).

One line sets it up::

    import agent_runtime.telemetry
    agent_runtime.telemetry.configure(console=True)                       # spans on stderr
    agent_runtime.telemetry.configure(otlp_endpoint="http://localhost:4318")  # OTLP over HTTP

Tool arguments and results are recorded only when asked (``capture_content=True``), capped in size
and with secret-looking fields (tokens, API keys, passwords, credentials) replaced.
"""

from __future__ import annotations

from .settings import TelemetrySettings, current_settings
from .setup import Telemetry, configure
from .spans import SpanScope, span, tracing_enabled

__all__ = [
    "SpanScope",
    "Telemetry",
    "TelemetrySettings",
    "configure",
    "current_settings",
    "span",
    "tracing_enabled",
]
