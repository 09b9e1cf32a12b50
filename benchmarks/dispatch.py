"""Per-call dispatcher overhead: agent-runtime against pydantic-ai, same function, same run.

Each framework runs an agent whose fake model asks for K calls to one tool in a single turn and
then answers; a run whose model answers at once is the baseline. Per-call overhead =
(time(K calls) - time(no call)) / K: parsing the arguments, resolving the tool, validating a
realistic nested schema, running a no-op tool and building the result, in each framework's own
loop. Medians over many repeats, interleaved so machine noise hits both alike.

Then the cost of telemetry: the same agent-runtime runs with tracing and metrics on (the
OpenTelemetry SDK, ``agent_runtime.telemetry.configure()`` with an in-memory span exporter and
metric reader) against off (no SDK installed), interleaved, in wall and thread CPU time; and the
cost of the hooks themselves with no SDK (what every tool call pays: a no-op span check and a
no-op metric call), timed alone and set against the per-call time.

    python benchmarks/dispatch.py [--calls 50] [--repeats 40]

The last line printed is one JSON object with the figures and the ratios.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import date
from enum import Enum
from typing import Any

import anyio
from pydantic import BaseModel, Field


class Priority(str, Enum):
    LOW = "low"
    NORMAL = "normal"
    URGENT = "urgent"


class LineItem(BaseModel):
    sku: str = Field(pattern=r"^[A-Z]{3}-\d{3,6}$", description="Catalogue number")
    quantity: int = Field(ge=1, le=1000)
    unit_price: float = Field(gt=0)
    gift: bool = False


class Address(BaseModel):
    street: str = Field(min_length=1, max_length=200)
    city: str
    postcode: str = Field(pattern=r"^\d{5}$")
    country: str = Field(min_length=2, max_length=2)


async def create_order(
    customer_id: str,
    items: list[LineItem],
    ship_to: Address,
    priority: Priority = Priority.NORMAL,
    deliver_after: date | None = None,
    tags: list[str] | None = None,
) -> str:
    """Create an order (a no-op for the benchmark; async, so neither framework adds a
    worker-thread hop, which would measure the thread pool rather than the dispatcher).

    Args:
        customer_id: The customer placing the order.
        items: What to ship.
        ship_to: Where to ship it.
        priority: How fast.
        deliver_after: Earliest delivery date.
        tags: Free-form labels.
    """
    return "ok"


ARGS = json.dumps(
    {
        "customer_id": "cust-42",
        "items": [
            {"sku": "ABC-123", "quantity": 2, "unit_price": 9.5},
            {"sku": "XYZ-98765", "quantity": 1, "unit_price": 120.0, "gift": True},
            {"sku": "QQQ-001", "quantity": 10, "unit_price": 0.99},
        ],
        "ship_to": {
            "street": "1 Main St",
            "city": "Springfield",
            "postcode": "12345",
            "country": "US",
        },
        "priority": "urgent",
        "deliver_after": "2027-01-15",
        "tags": ["b2b", "fragile"],
    }
)


# --------------------------------------------------------------------------- agent-runtime


def _ours(calls: int) -> Any:
    from agent_runtime import Agent, tool
    from agent_runtime.limits import UsageLimits
    from agent_runtime.testing import ScriptedModel
    from agent_runtime.types import ToolCall

    order_tool = tool(create_order)

    async def run(k: int, cpu: list[float] | None = None) -> float:
        turns: list[Any] = []
        if k:
            turns.append(
                [ToolCall(id=f"c{i}", name="create_order", arguments=ARGS) for i in range(k)]
            )
        turns.append("done")
        agent = Agent(ScriptedModel(turns), tools=[order_tool], limits=UsageLimits(max_steps=4))
        async with agent:
            start, start_cpu = time.perf_counter(), time.thread_time()
            result = await agent.run("go")
            elapsed = time.perf_counter() - start
            if cpu is not None:
                cpu.append(time.thread_time() - start_cpu)
        assert all(not r.result.is_error for r in result.tool_calls), result.tool_calls[:1]
        assert len(result.tool_calls) == k
        return elapsed

    return run


# --------------------------------------------------------------------------- pydantic-ai


def _theirs(calls: int) -> Any:
    from pydantic_ai import Agent as PAgent
    from pydantic_ai.messages import ModelResponse, TextPart, ToolCallPart, ToolReturnPart
    from pydantic_ai.models.function import AgentInfo, FunctionModel

    async def run(k: int) -> float:
        def model_fn(messages: list[Any], info: AgentInfo) -> ModelResponse:
            returned = [
                p
                for m in messages
                for p in getattr(m, "parts", [])
                if isinstance(p, ToolReturnPart)
            ]
            if k and not returned:
                return ModelResponse(
                    parts=[
                        ToolCallPart(tool_name="create_order", args=ARGS, tool_call_id=f"c{i}")
                        for i in range(k)
                    ]
                )
            if k:
                assert len(returned) == k and all(p.content == "ok" for p in returned), returned[:1]
            return ModelResponse(parts=[TextPart(content="done")])

        agent = PAgent(FunctionModel(model_fn), tools=[create_order])
        start = time.perf_counter()
        await agent.run("go")
        return time.perf_counter() - start

    return run


# --------------------------------------------------------------------------- telemetry


class _Telemetry:
    """Tracing and metrics switched on and off between runs, in one process.

    OpenTelemetry sets its global providers once; to interleave on and off runs the benchmark
    puts the SDK providers ``configure()`` made into the API's globals, or takes them out (the
    fields OpenTelemetry's own tests reset), so "off" is exactly a process with no SDK.
    """

    def __init__(self) -> None:
        from opentelemetry.sdk.metrics.export import InMemoryMetricReader
        from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

        import agent_runtime.telemetry as telemetry

        self.spans = InMemorySpanExporter()
        self.handle = telemetry.configure(
            span_exporter=self.spans, metric_reader=InMemoryMetricReader()
        )
        self.switch(False)

    def switch(self, on: bool) -> None:
        from opentelemetry import metrics, trace

        trace._TRACER_PROVIDER = self.handle.tracer_provider if on else None  # type: ignore[attr-defined]
        metrics._internal._METER_PROVIDER = self.handle.meter_provider if on else None  # type: ignore[attr-defined]
        self.spans.clear()


def _hook_cost_ns(rounds: int = 200_000) -> float:
    """Nanoseconds the telemetry hooks add to one tool call with no SDK installed: the span
    check the dispatcher makes and the metric call every call makes (both no-ops), in thread
    CPU time."""
    from agent_runtime.telemetry.metrics import record_tool_call
    from agent_runtime.telemetry.spans import tracer

    start = time.thread_time()
    for _ in range(rounds):
        tracer()
        record_tool_call(tool="create_order", origin="local", duration_s=0.0, error_type=None)
    return (time.thread_time() - start) / rounds * 1e9


def _bare_span_cost_us(provider: Any, rounds: int = 20_000) -> float:
    """Microseconds of thread CPU time the SDK itself takes per span: start and end a span with
    no attributes, not made current, on the same provider and exporter the "on" runs use. Times
    the spans of a run, over the "off" run, this is the best on/off ratio any instrumentation
    with one span per tool call can reach on this host with this SDK."""
    sdk_tracer = provider.get_tracer("benchmark-floor")
    start = time.thread_time()
    for _ in range(rounds):
        sdk_tracer.start_span("floor").end()
    return (time.thread_time() - start) / rounds * 1e6


# --------------------------------------------------------------------------- harness


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--repeats", type=int, default=40)
    args = parser.parse_args()
    k = args.calls
    ours, theirs = _ours(k), _theirs(k)

    async def measure() -> dict[str, list[float]]:
        samples: dict[str, list[float]] = {
            "ours_k": [],
            "ours_0": [],
            "theirs_k": [],
            "theirs_0": [],
        }
        for _ in range(3):  # warm up both (imports, schema compilation, caches)
            await ours(k), await ours(0), await theirs(k), await theirs(0)
        for _ in range(args.repeats):
            samples["ours_k"].append(await ours(k))
            samples["ours_0"].append(await ours(0))
            samples["theirs_k"].append(await theirs(k))
            samples["theirs_0"].append(await theirs(0))
        return samples

    samples = anyio.run(measure)
    med = {name: statistics.median(values) for name, values in samples.items()}
    ours_us = (med["ours_k"] - med["ours_0"]) / k * 1e6
    theirs_us = (med["theirs_k"] - med["theirs_0"]) / k * 1e6
    ratio = ours_us / theirs_us

    telemetry = _Telemetry()

    async def measure_tracing() -> dict[str, list[float]]:
        cpu: dict[str, list[float]] = {"off": [], "on": []}
        wall: dict[str, list[float]] = {"off": [], "on": []}
        for _ in range(3):
            for on in (False, True):
                telemetry.switch(on)
                await ours(k)
        for _ in range(args.repeats):
            for mode in ("off", "on"):
                telemetry.switch(mode == "on")
                wall[mode].append(await ours(k, cpu[mode]))
                if mode == "on":
                    assert len(telemetry.spans.get_finished_spans()) == k + 3, "spans missing"
        telemetry.switch(False)
        return {
            **{f"wall_{m}": v for m, v in wall.items()},
            **{f"cpu_{m}": v for m, v in cpu.items()},
        }

    traced = anyio.run(measure_tracing)
    tmed = {name: statistics.median(values) for name, values in traced.items()}
    trace_wall_ratio = tmed["wall_on"] / tmed["wall_off"]
    trace_cpu_ratio = tmed["cpu_on"] / tmed["cpu_off"]
    span_cost_us = (tmed["cpu_on"] - tmed["cpu_off"]) / (k + 3) * 1e6
    hook_ns = _hook_cost_ns()
    bare_us = _bare_span_cost_us(telemetry.handle.tracer_provider)
    telemetry.spans.clear()
    floor_ratio = (tmed["cpu_off"] + (k + 3) * bare_us / 1e6) / tmed["cpu_off"]
    hook_share = hook_ns / 1e3 / (tmed["cpu_off"] / k * 1e6)
    print(f"calls per turn: {k}, repeats: {args.repeats}")
    print(f"{'':16}{'run, K calls':>16}{'run, no call':>16}{'per call':>12}")
    print(
        f"{'agent-runtime':16}{med['ours_k'] * 1e3:13.2f} ms{med['ours_0'] * 1e3:13.2f} ms{ours_us:9.1f} us"
    )
    print(
        f"{'pydantic-ai':16}{med['theirs_k'] * 1e3:13.2f} ms{med['theirs_0'] * 1e3:13.2f} ms{theirs_us:9.1f} us"
    )
    print(f"ratio (ours / pydantic-ai): {ratio:.3f}  (target < 0.5)")
    print(f"telemetry, agent-runtime run with {k} calls (medians, {k + 3} spans a run):")
    print(
        f"  off {tmed['wall_off'] * 1e3:.2f} ms wall, {tmed['cpu_off'] * 1e3:.2f} ms CPU; "
        f"on {tmed['wall_on'] * 1e3:.2f} ms wall, {tmed['cpu_on'] * 1e3:.2f} ms CPU"
    )
    print(
        f"  on / off: {trace_wall_ratio:.3f} wall, {trace_cpu_ratio:.3f} CPU (target <= 1.10); "
        f"{span_cost_us:.1f} us CPU per span"
    )
    print(
        f"  the SDK alone: {bare_us:.1f} us CPU per bare span, so {k + 3} spans put the best "
        f"reachable on / off at {floor_ratio:.3f} CPU on this host"
    )
    print(
        f"  no SDK: the hooks cost {hook_ns:.0f} ns a tool call, "
        f"{hook_share * 100:.2f}% of a call's {tmed['cpu_off'] / k * 1e6:.1f} us CPU"
    )
    print(
        json.dumps(
            {
                "benchmark": "dispatch",
                "calls_per_turn": k,
                "repeats": args.repeats,
                "ours_per_call_us": round(ours_us, 2),
                "pydantic_ai_per_call_us": round(theirs_us, 2),
                "ratio": round(ratio, 4),
                "target_ratio": 0.5,
                "meets_target": ratio < 0.5,
                "tracing_off_run_ms": round(tmed["wall_off"] * 1e3, 3),
                "tracing_on_run_ms": round(tmed["wall_on"] * 1e3, 3),
                "tracing_off_run_cpu_ms": round(tmed["cpu_off"] * 1e3, 3),
                "tracing_on_run_cpu_ms": round(tmed["cpu_on"] * 1e3, 3),
                "tracing_overhead_ratio": round(trace_wall_ratio, 4),
                "tracing_overhead_cpu_ratio": round(trace_cpu_ratio, 4),
                "tracing_target_ratio": 1.10,
                "tracing_meets_target": trace_cpu_ratio <= 1.10,
                "tracing_cpu_us_per_span": round(span_cost_us, 2),
                "tracing_sdk_bare_span_cpu_us": round(bare_us, 2),
                "tracing_sdk_floor_cpu_ratio": round(floor_ratio, 4),
                "no_sdk_hook_ns_per_call": round(hook_ns, 1),
                "no_sdk_hook_share_of_call": round(hook_share, 5),
            }
        )
    )


if __name__ == "__main__":
    main()
