"""``Agent.run(on_event=...)``: a run's events through a callback, the same as ``run_stream``'s."""

from __future__ import annotations

import pytest

from agent_runtime import Agent, tool
from agent_runtime.errors import UsageLimitExceeded
from agent_runtime.events import RunEvent, RunFinished, ToolCallFinished, ToolCallStarted
from agent_runtime.limits import UsageLimits
from agent_runtime.testing import ScriptedModel
from agent_runtime.types import AssistantMessage, ToolCall

pytestmark = pytest.mark.anyio


@tool
def add(a: int, b: int) -> int:
    """Add two integers."""
    return a + b


def _script() -> ScriptedModel:
    return ScriptedModel(
        [
            AssistantMessage(text="let me add", tool_calls=[ToolCall.of("add", {"a": 1, "b": 1})]),
            "two",
        ]
    )


def _shape(event: RunEvent) -> tuple[str, str]:
    """An event's kind and what identifies it (text, tool, output), comparable across runs."""
    detail = getattr(event, "text", None)
    if isinstance(event, ToolCallStarted | ToolCallFinished):
        detail = event.call.name if isinstance(event, ToolCallStarted) else event.record.call.name
    if isinstance(event, RunFinished):
        detail = event.result.output
    return type(event).__name__, str(detail)


async def test_on_event_gets_the_events_run_stream_yields_in_the_same_order() -> None:
    streamed = [_shape(e) async for e in Agent(_script(), tools=[add]).run_stream("1+1")]
    seen: list[RunEvent] = []

    async def on_event(event: RunEvent) -> None:
        seen.append(event)

    result = await Agent(_script(), tools=[add]).run("1+1", on_event=on_event)
    assert [_shape(e) for e in seen] == streamed
    assert isinstance(seen[-1], RunFinished) and seen[-1].result is result
    assert result.output == "two"


async def test_a_callback_that_raises_ends_the_run_with_its_error() -> None:
    calls = []

    async def on_event(event: RunEvent) -> None:
        calls.append(event)
        if isinstance(event, ToolCallStarted):
            raise RuntimeError("stop here")

    with pytest.raises(RuntimeError, match="stop here"):
        await Agent(_script(), tools=[add]).run("1+1", on_event=on_event)
    assert not any(isinstance(e, ToolCallFinished) for e in calls)  # the tool never ran


async def test_run_errors_reach_the_caller_with_a_callback() -> None:
    model = ScriptedModel([[ToolCall.of("add", {"a": 1, "b": 1})]] * 5)
    agent = Agent(model, tools=[add], limits=UsageLimits(max_steps=2))
    kinds: list[str] = []

    async def on_event(event: RunEvent) -> None:
        kinds.append(type(event).__name__)

    with pytest.raises(UsageLimitExceeded):
        await agent.run("loop", on_event=on_event)
    assert kinds.count("ToolCallFinished") == 2 and "RunFinished" not in kinds


async def test_runs_inside_async_with_share_the_connections_and_the_last_exit_closes() -> None:
    agent = Agent(ScriptedModel(["a", "b"]))
    async with agent:
        first = await agent.run("x")
        second = await agent.run("y")
        assert agent._users == 1  # each run entered and left without closing the toolsets
        assert agent._stack is not None
    assert (first.output, second.output) == ("a", "b")
    assert agent._users == 0 and agent._stack is None
