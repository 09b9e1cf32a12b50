"""``configure()``: install the OpenTelemetry SDK with console or OTLP exporters in one call.

OpenTelemetry lets a process set its global tracer and meter providers once. The first
``configure()`` installs them (unless the application already installed SDK providers of its own,
which are then used); a later call adds its span exporters to the same tracer provider. Metric
readers are fixed when a meter provider is made, so only the first call's metric exporters apply.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import UserError
from .settings import TelemetrySettings, set_settings

__all__ = ["Telemetry", "configure"]

log = logging.getLogger(__name__)


@dataclass
class Telemetry:
    """The providers :func:`configure` installed or joined."""

    tracer_provider: Any
    meter_provider: Any

    def force_flush(self, timeout_ms: int = 10_000) -> None:
        """Export everything recorded so far (before a short-lived process exits)."""
        for provider in (self.tracer_provider, self.meter_provider):
            flush = getattr(provider, "force_flush", None)
            if flush is not None:
                flush(timeout_ms)

    def shutdown(self) -> None:
        """Flush and stop the exporters."""
        for provider in (self.tracer_provider, self.meter_provider):
            stop = getattr(provider, "shutdown", None)
            if stop is not None:
                stop()


def _sdk() -> tuple[Any, Any, Any, Any]:
    try:
        from opentelemetry.sdk import metrics as sdk_metrics
        from opentelemetry.sdk import trace as sdk_trace
        from opentelemetry.sdk.metrics import export as metric_export
        from opentelemetry.sdk.trace import export as span_export
    except ImportError as exc:
        raise UserError(
            "telemetry needs the OpenTelemetry SDK: pip install 'agent-runtime[telemetry]'"
        ) from exc
    return sdk_trace, span_export, sdk_metrics, metric_export


def _otlp(endpoint: str, headers: Mapping[str, str] | None) -> tuple[Any, Any]:
    try:
        from opentelemetry.exporter.otlp.proto.http.metric_exporter import OTLPMetricExporter
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    except ImportError as exc:
        raise UserError(
            "OTLP export needs opentelemetry-exporter-otlp-proto-http: "
            "pip install 'agent-runtime[telemetry]'"
        ) from exc
    base = endpoint.rstrip("/")
    hdrs = dict(headers or {})
    return (
        OTLPSpanExporter(endpoint=f"{base}/v1/traces", headers=hdrs),
        OTLPMetricExporter(endpoint=f"{base}/v1/metrics", headers=hdrs),
    )


def configure(
    *,
    console: bool = False,
    otlp_endpoint: str | None = None,
    otlp_headers: Mapping[str, str] | None = None,
    service_name: str = "agent-runtime",
    capture_content: bool = False,
    content_limit: int = 4096,
    span_exporter: Any | None = None,
    metric_reader: Any | None = None,
    metric_interval_s: float = 30.0,
) -> Telemetry:
    """Record the runtime's traces and metrics.

    ``console``: print spans (and metrics every ``metric_interval_s``) to stderr.
    ``otlp_endpoint``: send them to an OTLP/HTTP collector (``http://host:4318``; ``/v1/traces``
    and ``/v1/metrics`` are appended), with ``otlp_headers`` (e.g. an API key; never recorded).
    ``span_exporter`` / ``metric_reader``: any SDK exporter or reader (tests use the in-memory
    ones). ``capture_content``: also record tool arguments and results, scrubbed of secrets and cut
    to ``content_limit`` characters.
    """
    if content_limit < 16:
        raise UserError(f"content_limit must be at least 16 characters, got {content_limit}")
    sdk_trace, span_export, sdk_metrics, metric_export = _sdk()
    from opentelemetry import metrics, trace
    from opentelemetry.sdk.resources import Resource

    set_settings(TelemetrySettings(capture_content=capture_content, content_limit=content_limit))
    exporters: list[Any] = []
    readers: list[Any] = []
    if console:  # stderr: stdout is a command's output (or an MCP server's protocol channel)
        exporters.append(span_export.ConsoleSpanExporter(out=sys.stderr))
        readers.append(
            metric_export.PeriodicExportingMetricReader(
                metric_export.ConsoleMetricExporter(out=sys.stderr),
                export_interval_millis=int(metric_interval_s * 1000),
            )
        )
    if otlp_endpoint:
        span_out, metric_out = _otlp(otlp_endpoint, otlp_headers)
        exporters.append(span_out)
        readers.append(
            metric_export.PeriodicExportingMetricReader(
                metric_out, export_interval_millis=int(metric_interval_s * 1000)
            )
        )
    if span_exporter is not None:
        exporters.append(span_exporter)
    if metric_reader is not None:
        readers.append(metric_reader)

    resource = Resource.create({"service.name": service_name})
    tracer_provider = trace.get_tracer_provider()
    if not isinstance(tracer_provider, sdk_trace.TracerProvider):
        tracer_provider = sdk_trace.TracerProvider(resource=resource)
        trace.set_tracer_provider(tracer_provider)
    for exporter in exporters:
        # Console and in-memory exporters print/record at once; network exporters batch.
        simple = isinstance(exporter, span_export.ConsoleSpanExporter) or exporter is span_exporter
        processor = (
            span_export.SimpleSpanProcessor(exporter)
            if simple
            else span_export.BatchSpanProcessor(exporter)
        )
        tracer_provider.add_span_processor(processor)

    meter_provider = metrics.get_meter_provider()
    if not isinstance(meter_provider, sdk_metrics.MeterProvider):
        meter_provider = sdk_metrics.MeterProvider(resource=resource, metric_readers=readers)
        metrics.set_meter_provider(meter_provider)
    elif readers:
        log.warning("a meter provider is already installed; its metric exporters stay as they are")
    return Telemetry(tracer_provider=tracer_provider, meter_provider=meter_provider)
