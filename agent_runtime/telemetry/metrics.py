"""The runtime's metrics: token usage, model-call and tool-call latencies, tool calls and errors
by tool, MCP/A2A request latencies, A2A task state changes.

Instruments follow the OpenTelemetry GenAI semantic conventions where they exist
(``gen_ai.client.token.usage``, ``gen_ai.client.operation.duration``); the rest are named
``agent_runtime.*``. Like spans, each call is one check while no SDK meter provider is set.
"""

from __future__ import annotations

import sys
from typing import Any

from ._providers import PerProvider, meter_provider

__all__ = [
    "metrics_enabled",
    "record_a2a_task_state",
    "record_model_call",
    "record_request",
    "record_tool_call",
]

_DURATION_BUCKETS = (0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120)
_TOKEN_BUCKETS = (1, 4, 16, 64, 256, 1024, 4096, 16384, 65536, 262144, 1048576)


def _histogram(
    meter: Any,
    name: str,
    unit: str,
    description: str,
    buckets: tuple[float, ...] = _DURATION_BUCKETS,
) -> Any:
    return meter.create_histogram(
        name, unit=unit, description=description, explicit_bucket_boundaries_advisory=buckets
    )


class _Instruments:
    def __init__(self, meter: Any) -> None:
        self.token_usage = _histogram(
            meter,
            "gen_ai.client.token.usage",
            "{token}",
            "Tokens used per model call, by gen_ai.token.type (input/output)",
            _TOKEN_BUCKETS,
        )
        self.model_duration = _histogram(
            meter, "gen_ai.client.operation.duration", "s", "Duration of model calls"
        )
        # Tool calls are counted here and reported when the metrics are collected: a dict
        # increment per call instead of a second SDK measurement on the dispatcher's hot path.
        self.tool_counts: dict[tuple[str, str, str | None], int] = {}
        self.tool_attributes: dict[tuple[str, str, str | None], dict[str, str]] = {}
        self.tool_calls = meter.create_observable_counter(
            "agent_runtime.tool.calls",
            callbacks=[self._observe_tool_calls],
            unit="{call}",
            description="Tool calls by tool, origin and error.type (absent when it succeeded)",
        )
        self.tool_duration = _histogram(
            meter, "agent_runtime.tool.duration", "s", "Duration of tool calls"
        )
        self.request_duration = _histogram(
            meter,
            "agent_runtime.rpc.duration",
            "s",
            "Duration of MCP and A2A requests, by rpc.system, rpc.method and side",
        )
        self.a2a_tasks = meter.create_counter(
            "agent_runtime.a2a.tasks",
            unit="{task}",
            description="A2A tasks entering each state (a2a.task.state)",
        )

    def tool_call_attributes(self, key: tuple[str, str, str | None]) -> dict[str, str]:
        """The metric attributes of one (tool, origin, error.type), built once."""
        found = self.tool_attributes.get(key)
        if found is None:
            found = {"gen_ai.tool.name": key[0], "agent_runtime.tool.origin": key[1]}
            if key[2] is not None:
                found["error.type"] = key[2]
            self.tool_attributes[key] = found
        return found

    def _observe_tool_calls(self, options: Any) -> list[Any]:
        from opentelemetry.metrics import Observation

        return [
            Observation(count, self.tool_call_attributes(key))
            for key, count in list(self.tool_counts.items())
        ]


def _make_instruments(provider: Any) -> _Instruments | None:
    metrics = sys.modules["opentelemetry.metrics"]
    if isinstance(provider, metrics.NoOpMeterProvider) or (
        type(provider).__name__ == "_ProxyMeterProvider"
    ):
        return None
    from agent_runtime import __version__

    return _Instruments(provider.get_meter("agent_runtime", __version__))


_instruments: PerProvider[_Instruments] = PerProvider(meter_provider, _make_instruments)


def metrics_enabled() -> bool:
    """Whether metrics are being recorded (an SDK meter provider is installed)."""
    return _instruments.get() is not None


def record_model_call(
    *,
    model: str,
    operation: str,
    input_tokens: int | None,
    output_tokens: int | None,
    duration_s: float,
    error_type: str | None = None,
) -> None:
    """One model call: its duration, and its input and output tokens when known."""
    inst = _instruments.get()
    if inst is None:
        return
    attrs: dict[str, str] = {"gen_ai.operation.name": operation, "gen_ai.request.model": model}
    if input_tokens is not None:
        inst.token_usage.record(input_tokens, {**attrs, "gen_ai.token.type": "input"})
    if output_tokens is not None:
        inst.token_usage.record(output_tokens, {**attrs, "gen_ai.token.type": "output"})
    if error_type is not None:
        attrs["error.type"] = error_type
    inst.model_duration.record(duration_s, attrs)


def record_tool_call(
    *, tool: str, origin: str, duration_s: float, error_type: str | None = None
) -> None:
    """One tool call (counted by tool, origin and error kind) and its duration."""
    inst = _instruments.get()
    if inst is None:
        return
    key = (tool, origin, error_type)
    counts = inst.tool_counts
    counts[key] = counts.get(key, 0) + 1
    inst.tool_duration.record(duration_s, inst.tool_call_attributes(key))


def record_request(
    *, system: str, method: str, side: str, duration_s: float, error_type: str | None = None
) -> None:
    """One MCP or A2A request (``system`` "mcp" or "a2a", ``side`` "client" or "server")."""
    inst = _instruments.get()
    if inst is None:
        return
    attrs = {"rpc.system": system, "rpc.method": method, "agent_runtime.side": side}
    if error_type is not None:
        attrs["error.type"] = error_type
    inst.request_duration.record(duration_s, attrs)


def record_a2a_task_state(state: str) -> None:
    """An A2A task entered ``state`` (e.g. ``TASK_STATE_COMPLETED``)."""
    inst = _instruments.get()
    if inst is None:
        return
    inst.a2a_tasks.add(1, {"a2a.task.state": state})
