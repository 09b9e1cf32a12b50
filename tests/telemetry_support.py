"""A fresh OpenTelemetry SDK per test, recording into memory, and gone after it; and reading what
it recorded.

OpenTelemetry sets its global providers once per process; :func:`recording` installs a new tracer
and meter provider for one test through ``agent_runtime.telemetry.configure`` and then puts the
globals back to "unset" (the SDK's own tests reset the same private fields), so the rest of the
suite runs with tracing off, as a user without an SDK would. The ``recorded`` and
``recorded_with_content`` fixtures (``tests/conftest.py``) use it. Each recording's
:class:`SpanTracker` knows the spans still open.

The readers below are shared by the telemetry tests: a span's attributes, ids and parent, all
recorded text (to look for secrets in), and waiting for a span that another task (a server)
ends.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import anyio
from opentelemetry import metrics, trace
from opentelemetry.context import Context
from opentelemetry.sdk.metrics.export import InMemoryMetricReader
from opentelemetry.sdk.trace import ReadableSpan, Span, SpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.util._once import Once

import agent_runtime.telemetry as telemetry
from agent_runtime.telemetry.settings import TelemetrySettings, set_settings

if TYPE_CHECKING:
    from agent_runtime.protocols.mcp import MCPToolset

TRACE_ECHO_SERVER = Path(__file__).parent / "mcp_support" / "trace_echo_server.py"


class SpanTracker(SpanProcessor):
    """The names of the spans started and ended, and of those still open (the exporter sees
    only ended ones): a span left open after an error or a cancellation shows here."""

    def __init__(self) -> None:
        self.started: list[str] = []
        self.ended: list[str] = []
        self._open: dict[int, str] = {}

    def on_start(self, span: Span, parent_context: Context | None = None) -> None:
        assert span.context is not None
        self.started.append(span.name)
        self._open[span.context.span_id] = span.name

    def on_end(self, span: ReadableSpan) -> None:
        assert span.context is not None
        self.ended.append(span.name)
        self._open.pop(span.context.span_id, None)

    @property
    def open(self) -> list[str]:
        return list(self._open.values())


@dataclass
class Recorded:
    exporter: InMemorySpanExporter
    reader: InMemoryMetricReader
    handle: telemetry.Telemetry
    tracker: SpanTracker = field(default_factory=SpanTracker)

    def spans(self) -> list[ReadableSpan]:
        return list(self.exporter.get_finished_spans())

    def named(self, name: str) -> list[ReadableSpan]:
        return [s for s in self.spans() if s.name == name]

    def one(self, name: str) -> ReadableSpan:
        found = self.named(name)
        assert len(found) == 1, (name, [s.name for s in self.spans()])
        return found[0]

    def metric_points(self, name: str | None = None) -> list[Any]:
        """The data points of metric ``name`` (of every metric: ``None``) collected now."""
        data = self.reader.get_metrics_data()
        points: list[Any] = []
        if data is None:
            return points
        for rm in data.resource_metrics:
            for sm in rm.scope_metrics:
                for metric in sm.metrics:
                    if name is None or metric.name == name:
                        points.extend(metric.data.data_points)
        return points


def _reset_globals() -> None:
    trace._TRACER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    trace._TRACER_PROVIDER = None  # type: ignore[attr-defined]
    metrics._internal._METER_PROVIDER_SET_ONCE = Once()  # type: ignore[attr-defined]
    metrics._internal._METER_PROVIDER = None  # type: ignore[attr-defined]
    _rebind_mcp_sdk_tracer()


def _rebind_mcp_sdk_tracer() -> None:
    """Point the ``mcp`` SDK's module-level tracer at the provider installed now (none: a proxy
    that binds to the next one): its tracer binds to the first provider it sees, and each test
    installs a fresh one."""
    sdk_otel = sys.modules.get("mcp.shared._otel")
    if sdk_otel is not None:
        sdk_otel._tracer = trace.get_tracer("mcp-python-sdk")  # type: ignore[attr-defined]


def start_recording(**options: Any) -> Recorded:
    _reset_globals()
    exporter = InMemorySpanExporter()
    reader = InMemoryMetricReader()
    handle = telemetry.configure(span_exporter=exporter, metric_reader=reader, **options)
    recorded = Recorded(exporter, reader, handle)
    handle.tracer_provider.add_span_processor(recorded.tracker)
    _rebind_mcp_sdk_tracer()
    return recorded


def stop_recording(recorded: Recorded) -> None:
    recorded.handle.shutdown()
    _reset_globals()
    set_settings(TelemetrySettings())


def recording(**options: Any) -> Iterator[Recorded]:
    """A fresh in-memory SDK while a fixture lasts (``options`` go to ``configure``)."""
    rec = start_recording(**options)
    try:
        yield rec
    finally:
        stop_recording(rec)


# --------------------------------------------------------------------------- reading spans


def attrs(span: ReadableSpan) -> dict[str, Any]:
    return dict(span.attributes or {})


def parent_of(span: ReadableSpan) -> int | None:
    return span.parent.span_id if span.parent is not None else None


def span_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.span_id


def trace_id(span: ReadableSpan) -> int:
    assert span.context is not None
    return span.context.trace_id


def all_text(recorded: Recorded) -> str:
    """Every name, attribute, event, status and resource value of every span, and the
    attributes of every metric point, as one text (to look for a secret in)."""
    out: list[str] = []
    for s in recorded.spans():
        out.append(s.name)
        out.extend(f"{k}={v}" for k, v in (s.attributes or {}).items())
        out.append(str(s.status.description))
        for event in s.events:
            out.append(event.name)
            out.extend(f"{k}={v}" for k, v in (event.attributes or {}).items())
        out.extend(f"{k}={v}" for k, v in s.resource.attributes.items())
    for point in recorded.metric_points():
        out.extend(f"{k}={v}" for k, v in dict(point.attributes).items())
    return "\n".join(out)


async def spans_named(recorded: Recorded, name: str, count: int = 1) -> list[ReadableSpan]:
    """The ended spans called ``name`` once ``count`` of them have ended (a server span ends
    after the client has its answer)."""
    with anyio.fail_after(10):
        while len(recorded.named(name)) < count:  # noqa: ASYNC110 (the exporter has no event)
            await anyio.sleep(0.01)
    return recorded.named(name)


def names_span_or_child(recorded: Recorded, traceparent: str | None, span: ReadableSpan) -> bool:
    """Whether ``traceparent`` names ``span``, or a span whose parent is ``span`` (the SDK's own
    ``MCP send`` span under a runtime client span)."""
    if not traceparent:
        return False
    _, trace_hex, span_hex, _ = traceparent.split("-")
    if int(trace_hex, 16) != trace_id(span):
        return False
    named = int(span_hex, 16)
    if named == span_id(span):
        return True
    return any(
        s.context is not None and s.context.span_id == named and parent_of(s) == span_id(span)
        for s in recorded.spans()
    )


# --------------------------------------------------------------------------- an MCP server


def trace_echo_toolset(log: Path) -> MCPToolset:
    """The toolset ``echo`` of a real MCP server subprocess (``mcp_support/trace_echo_server.py``)
    that writes down the method and ``_meta.traceparent`` of each request it gets in ``log``, and
    answers ``echo_meta`` with the ``traceparent`` it got (``fail``: an error result)."""
    from agent_runtime.protocols.mcp import MCPToolset, StdioServerConfig

    return MCPToolset("echo", StdioServerConfig(sys.executable, [str(TRACE_ECHO_SERVER), str(log)]))


def requests_seen(log: Path) -> list[dict[str, Any]]:
    """What the trace-echo server wrote down: ``{"method": ..., "traceparent": ...}`` each."""
    return [json.loads(line) for line in log.read_text().splitlines()]
