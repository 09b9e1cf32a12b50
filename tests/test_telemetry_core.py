"""Telemetry of the core: the spans and metrics of an agent run, its model calls and its tool
calls, recorded by the OpenTelemetry SDK into memory; errors and cancellation leave no span open;
secrets never reach an attribute; without an SDK nothing of OpenTelemetry is imported."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from opentelemetry.trace import SpanKind, StatusCode
from telemetry_support import Recorded, all_text, attrs

from agent_runtime import Agent, tool
from agent_runtime.backend import ModelBackend, ModelEvent, ModelFinish, ModelSettings, TextDelta
from agent_runtime.errors import UsageLimitExceeded
from agent_runtime.limits import UsageLimits
from agent_runtime.testing import FunctionModel, ScriptedModel
from agent_runtime.types import Message, ToolCall, ToolSpec, Usage

pytestmark = pytest.mark.anyio


@tool(read_only=True)
def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


@tool(read_only=True)
def broken(text: str) -> str:
    """Always fails."""
    raise RuntimeError("the disk is on fire")


# --------------------------------------------------------------------------- the span tree


async def test_run_model_and_tool_spans_form_one_tree(recorded: Recorded) -> None:
    model = ScriptedModel(
        [
            [
                ToolCall(id="c1", name="add", arguments='{"a": 2, "b": 3}'),
                ToolCall(id="c2", name="add", arguments='{"a": "x", "b": 3}'),
            ],
            "five",
        ]
    )
    agent = Agent(model, tools=[add], name="calc")
    result = await agent.run("add them")
    assert result.output == "five"

    run = recorded.one("invoke_agent calc")
    chats = recorded.named("chat scripted")
    tools = recorded.named("execute_tool add")
    assert len(chats) == 2 and len(tools) == 2
    trace_ids = {s.context.trace_id for s in recorded.spans()}
    assert trace_ids == {run.context.trace_id}
    assert run.parent is None
    for child in [*chats, *tools]:
        assert child.parent is not None and child.parent.span_id == run.context.span_id

    a = attrs(run)
    assert a["gen_ai.operation.name"] == "invoke_agent"
    assert a["gen_ai.agent.name"] == "calc"
    assert a["agent_runtime.steps"] == 2
    assert a["agent_runtime.tool_calls"] == 2
    assert a["gen_ai.usage.input_tokens"] == result.usage.input_tokens > 0
    assert a["gen_ai.usage.output_tokens"] == result.usage.output_tokens > 0
    assert run.status.status_code is not StatusCode.ERROR

    first = attrs(chats[0])
    assert chats[0].kind is SpanKind.CLIENT
    assert first["gen_ai.operation.name"] == "chat"
    assert first["gen_ai.request.model"] == "scripted"
    assert first["gen_ai.provider.name"] == "scripted"
    assert first["gen_ai.response.finish_reasons"] == ("tool_calls",)
    assert attrs(chats[1])["gen_ai.response.finish_reasons"] == ("stop",)
    assert first["gen_ai.usage.input_tokens"] > 0 and first["gen_ai.usage.output_tokens"] > 0
    assert 0 <= first["gen_ai.response.time_to_first_chunk"] <= chats[0].end_time  # type: ignore[operator]

    by_id = {attrs(s)["gen_ai.tool.call.id"]: s for s in tools}
    ok, bad = by_id["c1"], by_id["c2"]
    assert attrs(ok)["gen_ai.operation.name"] == "execute_tool"
    assert attrs(ok)["gen_ai.tool.name"] == "add"
    assert attrs(ok)["agent_runtime.tool.origin"] == "local"
    assert "error.type" not in attrs(ok)
    assert attrs(bad)["error.type"] == "validation"
    assert bad.status.status_code is StatusCode.ERROR
    # Content capture is off: no arguments or results recorded.
    for s in tools:
        assert "gen_ai.tool.call.arguments" not in attrs(s)
        assert "gen_ai.tool.call.result" not in attrs(s)


async def test_tool_error_kinds_and_content_capture(recorded_with_content: Recorded) -> None:
    model = ScriptedModel(
        [
            [
                ToolCall(id="u", name="nope", arguments="{}"),
                ToolCall(id="b", name="broken", arguments='{"text": "hi"}'),
                ToolCall(id="a", name="add", arguments='{"a": 1, "b": 1}'),
            ],
            "done",
        ]
    )
    await Agent(model, tools=[add, broken]).run("go")
    spans = {
        attrs(s)["gen_ai.tool.call.id"]: s
        for s in recorded_with_content.spans()
        if s.name.startswith("execute_tool")
    }
    assert attrs(spans["u"])["error.type"] == "unknown_tool"
    assert "agent_runtime.tool.origin" not in attrs(spans["u"])
    assert attrs(spans["b"])["error.type"] == "tool_error"
    assert "the disk is on fire" in spans["b"].status.description  # type: ignore[operator]
    ok = attrs(spans["a"])
    assert json.loads(ok["gen_ai.tool.call.arguments"]) == {"a": 1, "b": 1}
    assert ok["gen_ai.tool.call.result"] == "2"


async def test_content_is_capped(recorded_with_content: Recorded) -> None:
    @tool(read_only=True)
    def echo(text: str) -> str:
        """Echo."""
        return text

    long = "y" * 1000
    model = ScriptedModel(
        [ToolCall(id="e", name="echo", arguments=json.dumps({"text": long})), "ok"]
    )
    await Agent(model, tools=[echo]).run("go")
    result = attrs(recorded_with_content.one("execute_tool echo"))["gen_ai.tool.call.result"]
    assert result.startswith("y" * 200) and "800 more characters" in result
    assert len(result) < 260


async def test_tool_execution_runs_inside_its_span(recorded: Recorded) -> None:
    """What a toolset does while its tool runs (an MCP request, an A2A call) is a child of the
    tool's span."""
    from agent_runtime.telemetry import span

    @tool(read_only=True)
    async def fetch(url: str) -> str:
        """Fetch."""
        with span("inner request", kind="client"):
            await anyio.lowlevel.checkpoint()
        return "fetched"

    model = ScriptedModel([ToolCall(id="f", name="fetch", arguments='{"url": "x"}'), "ok"])
    await Agent(model, tools=[fetch]).run("go")
    outer = recorded.one("execute_tool fetch")
    inner = recorded.one("inner request")
    assert inner.parent is not None and inner.parent.span_id == outer.context.span_id


async def test_model_backend_names_reach_the_chat_span(recorded: Recorded) -> None:
    class Remote(ModelBackend):
        name = "remote-label"
        provider_name = "acme"

        def __init__(self) -> None:
            self.model_name = "acme-large-2"

        async def stream(
            self, messages: Sequence[Message], tools: Sequence[ToolSpec], settings: ModelSettings
        ) -> AsyncIterator[ModelEvent]:
            yield TextDelta(text="hi")
            yield ModelFinish(
                usage=Usage(requests=1, input_tokens=11, output_tokens=3, cached_tokens=4),
                finish_reason="length",
            )

    await Agent(Remote()).run("go")
    chat = attrs(recorded.one("chat acme-large-2"))
    assert chat["gen_ai.request.model"] == "acme-large-2"
    assert chat["gen_ai.provider.name"] == "acme"
    assert chat["gen_ai.usage.input_tokens"] == 11
    assert chat["gen_ai.usage.output_tokens"] == 3
    assert chat["gen_ai.usage.cache_read.input_tokens"] == 4
    assert chat["gen_ai.response.finish_reasons"] == ("length",)


async def test_run_stream_and_on_event_runs_have_spans(recorded: Recorded) -> None:
    agent = Agent(ScriptedModel(["one", "two"]), name="streamer")
    async for _ in agent.run_stream("a"):
        pass
    seen: list[str] = []

    async def sink(event: Any) -> None:
        seen.append(type(event).__name__)

    await agent.run("b", on_event=sink)
    assert seen[-1] == "RunFinished"
    assert len(recorded.named("invoke_agent streamer")) == 2
    assert len(recorded.named("chat scripted")) == 2


# --------------------------------------------------------------------------- errors


async def test_model_that_raises_ends_every_span_with_error_type(recorded: Recorded) -> None:

    def fail(messages: list[Message], tools: list[ToolSpec]) -> str:
        raise ConnectionError("model server went away")

    with pytest.raises(ConnectionError):
        await Agent(FunctionModel(fail, name="flaky"), name="failing").run("go")
    assert (
        sorted(recorded.tracker.started)
        == sorted(recorded.tracker.ended)
        == ["chat flaky", "invoke_agent failing"]
    )
    for s in recorded.spans():
        assert attrs(s)["error.type"] == "ConnectionError"
        assert s.status.status_code is StatusCode.ERROR
    chat = recorded.one("chat flaky")
    assert any(e.name == "exception" for e in chat.events)
    errors = [
        p
        for p in recorded.metric_points("gen_ai.client.operation.duration")
        if p.attributes.get("error.type") == "ConnectionError"
    ]
    assert len(errors) == 1 and errors[0].count == 1


async def test_limit_error_ends_the_run_span_with_error_type(recorded: Recorded) -> None:
    model = ScriptedModel(
        [ToolCall(id=f"c{i}", name="add", arguments='{"a":1,"b":1}') for i in range(5)]
    )
    agent = Agent(model, tools=[add], limits=UsageLimits(max_steps=2), name="bounded")
    with pytest.raises(UsageLimitExceeded):
        await agent.run("loop")
    assert sorted(recorded.tracker.started) == sorted(recorded.tracker.ended)
    assert len(recorded.tracker.started) == 5  # run, two model calls, two tool calls
    run = recorded.one("invoke_agent bounded")
    assert attrs(run)["error.type"] == "UsageLimitExceeded"
    assert attrs(run)["agent_runtime.steps"] == 2
    assert run.status.status_code is StatusCode.ERROR


@pytest.mark.parametrize("where", ["model", "tool"])
async def test_cancellation_leaves_no_span_open(recorded: Recorded, where: str) -> None:
    started = anyio.Event()

    @tool(read_only=True)
    async def wait_forever(seconds: int) -> str:
        """Wait."""
        started.set()
        await anyio.sleep_forever()
        return "never"

    async def slow_reply(messages: list[Message], tools: list[ToolSpec]) -> Any:
        if where == "model":
            started.set()
            await anyio.sleep_forever()
        if len(messages) > 2:
            return "done"
        return ToolCall(id="w", name="wait_forever", arguments='{"seconds": 1}')

    agent = Agent(FunctionModel(slow_reply, name="slow"), tools=[wait_forever], name="cancelled")
    async with anyio.create_task_group() as group:
        group.start_soon(agent.run, "go")
        await started.wait()
        group.cancel_scope.cancel()

    assert recorded.tracker.started and sorted(recorded.tracker.started) == sorted(
        recorded.tracker.ended
    )
    innermost = "chat slow" if where == "model" else "execute_tool wait_forever"
    for name in ("invoke_agent cancelled", innermost):
        s = recorded.one(name)
        assert attrs(s)["error.type"] == "cancelled"
        assert s.status.status_code is StatusCode.ERROR


async def test_closing_a_run_stream_early_ends_its_spans(recorded: Recorded) -> None:

    @tool(read_only=True)
    async def hang(seconds: int) -> str:
        """Wait."""
        await anyio.sleep_forever()
        return "never"

    model = ScriptedModel([ToolCall(id="h", name="hang", arguments='{"seconds": 1}'), "late"])
    agent = Agent(model, tools=[hang], name="early")
    async with agent.run_stream("go") as events:
        async for event in events:
            if type(event).__name__ == "ToolCallStarted":
                break  # the tool is running: stop the run
    assert sorted(recorded.tracker.started) == sorted(recorded.tracker.ended)
    assert len(recorded.tracker.started) == 3
    assert attrs(recorded.one("invoke_agent early"))["error.type"] == "cancelled"
    assert attrs(recorded.one("execute_tool hang"))["error.type"] == "cancelled"


# --------------------------------------------------------------------------- metrics


async def test_metrics_of_model_and_tool_calls(recorded: Recorded) -> None:
    model = ScriptedModel(
        [
            [
                ToolCall(id="1", name="add", arguments='{"a": 1, "b": 2}'),
                ToolCall(id="2", name="add", arguments='{"a": 1, "b": 2}'),
                ToolCall(id="3", name="add", arguments="{not json"),
                ToolCall(id="4", name="ghost", arguments="{}"),
            ],
            "3",
        ]
    )
    result = await Agent(model, tools=[add]).run("go")

    usage = recorded.metric_points("gen_ai.client.token.usage")
    by_type = {p.attributes["gen_ai.token.type"]: p for p in usage}
    assert by_type["input"].sum == result.usage.input_tokens
    assert by_type["output"].sum == result.usage.output_tokens
    assert by_type["input"].count == 2
    assert all(p.attributes["gen_ai.request.model"] == "scripted" for p in usage)
    durations = recorded.metric_points("gen_ai.client.operation.duration")
    assert sum(p.count for p in durations) == 2

    calls = recorded.metric_points("agent_runtime.tool.calls")
    counted = {
        (p.attributes["gen_ai.tool.name"], p.attributes.get("error.type")): p.value for p in calls
    }
    assert counted == {("add", None): 2, ("add", "parse"): 1, ("", "unknown_tool"): 1}
    assert {p.attributes["agent_runtime.tool.origin"] for p in calls} == {"local", ""}
    tool_durations = recorded.metric_points("agent_runtime.tool.duration")
    assert sum(p.count for p in tool_durations) == 4


# --------------------------------------------------------------------------- secrets


SECRETS = {
    "api_key": "sk-live-4f9a8b7c6d5e4f3a2b1c",
    "bearer": "eyJhbGciOiJIUzI1NiJ9.c2VjcmV0LXBheWxvYWQ.c2lnbmF0dXJl",
    "password": "correct-horse-battery-staple",
    "userinfo": "s3cr3t-p4ss",
}


@tool(read_only=True)
def connect(
    api_key: str, headers: dict[str, str], login: dict[str, str], url: str, note: str
) -> str:
    """Connect somewhere, and say what it was given (the tool's reply quotes its arguments)."""
    return json.dumps(
        {"api_key": api_key, "headers": headers, "login": login, "url": url, "note": note}
    )


@tool(read_only=True)
def refuse(password: str, url: str) -> str:
    """Fail, quoting the arguments in the error."""
    raise PermissionError(f"login failed for {url} with password={password}")


async def test_secrets_never_reach_an_attribute(recorded_with_content: Recorded) -> None:
    arguments = {
        "api_key": SECRETS["api_key"],
        "headers": {"Authorization": f"Bearer {SECRETS['bearer']}"},
        "login": {"user": "bob", "password": SECRETS["password"]},
        "url": f"https://bob:{SECRETS['userinfo']}@db.example.com/main",
        "note": f"token={SECRETS['api_key']} and Authorization: Bearer {SECRETS['bearer']}",
    }
    model = ScriptedModel(
        [
            [
                ToolCall(id="c", name="connect", arguments=json.dumps(arguments)),
                ToolCall(
                    id="r",
                    name="refuse",
                    arguments=json.dumps(
                        {"password": SECRETS["password"], "url": arguments["url"]}
                    ),
                ),
                # invalid: the raw argument text is what gets captured
                ToolCall(id="p", name="connect", arguments=json.dumps(arguments)[:-1]),
            ],
            "connected",
        ]
    )
    result = await Agent(model, tools=[connect, refuse]).run("connect")
    assert SECRETS["password"] in result.tool_calls[0].result.text_content  # the tool saw them

    text = all_text(recorded_with_content)
    assert "gen_ai.tool.call.arguments" in text and "gen_ai.tool.call.result" in text
    assert "db.example.com" in text and "bob" in text  # the rest of the content is there
    for name, secret in SECRETS.items():
        assert secret not in text, name


async def test_otlp_headers_are_not_recorded() -> None:
    """The collector's credentials stay in the exporter: not in the resource, not in spans."""
    from telemetry_support import start_recording, stop_recording

    rec = start_recording(
        otlp_endpoint="http://127.0.0.1:9", otlp_headers={"Authorization": "Bearer otlp-secret-1"}
    )
    try:
        await Agent(ScriptedModel(["hi"])).run("go")
        spans = rec.spans()
        assert spans
        for s in spans:
            blob = json.dumps(
                {**dict(s.attributes or {}), **dict(s.resource.attributes)}, default=str
            )
            assert "otlp-secret-1" not in blob
    finally:
        for processor in rec.handle.tracer_provider._active_span_processor._span_processors:
            exporter = getattr(processor, "span_exporter", None)
            if exporter is not None and type(exporter).__name__ == "OTLPSpanExporter":
                exporter._shutdown = True  # nothing listens at port 9: drop the batch
        stop_recording(rec)


# --------------------------------------------------------------------------- cost


def test_import_and_a_run_without_sdk_leave_opentelemetry_unimported() -> None:
    code = textwrap.dedent(
        """
        import sys
        import agent_runtime
        from agent_runtime import Agent, tool
        assert not [m for m in sys.modules if m.startswith("opentelemetry")], "import"

        import anyio
        from agent_runtime.testing import ScriptedModel
        from agent_runtime.types import ToolCall

        @tool(read_only=True)
        def add(a: int, b: int) -> int:
            "Add."
            return a + b

        model = ScriptedModel([ToolCall(id="1", name="add", arguments='{"a":1,"b":2}'), "3"])
        result = anyio.run(Agent(model, tools=[add]).run, "go")
        assert result.output == "3"
        assert not [m for m in sys.modules if m.startswith("opentelemetry")], "run"
        print("clean")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "clean"


async def test_api_without_sdk_records_nothing() -> None:
    """OpenTelemetry imported (by the tests) but no SDK provider installed: no spans, and the
    runtime hands out its shared no-op scope."""
    from agent_runtime.telemetry import span, tracing_enabled
    from agent_runtime.telemetry.spans import NO_SPAN

    assert not tracing_enabled()
    assert span("x", attributes={"a": 1}) is NO_SPAN
    result = await Agent(ScriptedModel(["fine"]), tools=[add]).run("go")
    assert result.output == "fine"
