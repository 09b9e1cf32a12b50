"""What the runtime's telemetry records beyond timings: content capture and its size cap."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["TelemetrySettings", "current_settings", "set_settings"]


@dataclass(frozen=True)
class TelemetrySettings:
    """``capture_content``: record tool arguments and results (and MCP/A2A payload summaries) as
    span attributes; off by default, because they may hold personal data. ``content_limit``: the
    most characters of one recorded value (longer ones are cut and marked)."""

    capture_content: bool = False
    content_limit: int = 4096


_settings = TelemetrySettings()


def current_settings() -> TelemetrySettings:
    return _settings


def set_settings(settings: TelemetrySettings) -> None:
    global _settings
    _settings = settings
