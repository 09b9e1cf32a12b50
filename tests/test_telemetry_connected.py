"""One connected trace across three processes' worth of parts: agent A (in this process, scripted
model) asks peer agent B over A2A on real loopback HTTP (B served by our A2A node, scripted too),
and B calls tools of a real MCP server subprocess (the official SDK's low-level server, which
writes down the ``_meta.traceparent`` of each request it gets).

Every span of this process goes to the in-memory exporter: A's run, A's tool call, A's A2A client
span, B's A2A server span, B's run, B's tool calls and B's MCP client spans are one trace, each
the child of the one before; the server subprocess got a ``traceparent`` naming B's MCP client
span (or the SDK's own send span under it). B's second tool fails: its spans say so, and no span
is left open.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from a2a_support.net import running
from opentelemetry.trace import SpanKind
from telemetry_support import (
    Recorded,
    attrs,
    names_span_or_child,
    parent_of,
    requests_seen,
    span_id,
    spans_named,
    trace_echo_toolset,
    trace_id,
)

from agent_runtime import Agent
from agent_runtime.protocols.a2a.peer import A2APeerToolset
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore
from agent_runtime.testing import ScriptedModel
from agent_runtime.types import Message, ToolCall, ToolResultMessage

pytestmark = pytest.mark.anyio


def _results(messages: list[Message]) -> str:
    return " | ".join(m.result.text_content for m in messages if isinstance(m, ToolResultMessage))


@pytest.mark.parametrize("streaming", [False, True])
async def test_two_agents_and_an_mcp_server_make_one_connected_trace(
    streaming: bool,
    tmp_path: Path,
    recorded: Recorded,
) -> None:
    log = tmp_path / "mcp-seen.jsonl"
    mcp = trace_echo_toolset(log)
    model_b = ScriptedModel(
        [
            [
                ToolCall.of("echo__echo_meta", {}, id="b1"),
                ToolCall.of("echo__fail", {}, id="b2"),
            ],
            lambda messages: f"B saw: {_results(messages)}",
        ]
    )
    agent_b = Agent(model_b, tools=[mcp], name="agent-b", description="Calls an MCP tool")
    async with running(create_a2a_app(agent_b, store=InMemoryTaskStore())) as b_url:
        peer = A2APeerToolset("b", b_url, streaming=streaming)
        model_a = ScriptedModel(
            [
                [ToolCall.of("ask_b", {"message": "trace this"}, id="a1")],
                lambda messages: f"A got: {_results(messages)}",
            ]
        )
        async with Agent(model_a, tools=[peer], name="agent-a") as agent_a:
            result = await agent_a.run("go")
        method = "SendStreamingMessage" if streaming else "SendMessage"
        await spans_named(recorded, f"a2a {method}", 2)
    assert result.output.startswith("A got: B saw: ")

    run_a = recorded.one("invoke_agent agent-a")
    tool_a = recorded.one("execute_tool ask_b")
    a2a = recorded.named(f"a2a {method}")
    (client_a2a,) = [s for s in a2a if s.kind == SpanKind.CLIENT]
    (server_a2a,) = [s for s in a2a if s.kind == SpanKind.SERVER]
    run_b = recorded.one("invoke_agent agent-b")
    tool_b = recorded.one("execute_tool echo__echo_meta")
    failing_b = recorded.one("execute_tool echo__fail")
    mcp_calls = recorded.named("mcp tools/call")
    (mcp_b,) = [s for s in mcp_calls if attrs(s)["gen_ai.tool.name"] == "echo_meta"]
    (mcp_failed,) = [s for s in mcp_calls if attrs(s)["gen_ai.tool.name"] == "fail"]

    chain = [run_a, tool_a, client_a2a, server_a2a, run_b, tool_b, mcp_b]
    assert {trace_id(s) for s in chain} == {trace_id(run_a)}
    assert run_a.parent is None
    for parent, child in zip(chain, chain[1:], strict=False):
        assert parent_of(child) == span_id(parent), (child.name, parent.name)
    assert parent_of(failing_b) == span_id(run_b)
    assert parent_of(mcp_failed) == span_id(failing_b)

    # Kinds and the attributes each part is known by.
    assert client_a2a.kind == SpanKind.CLIENT and server_a2a.kind == SpanKind.SERVER
    assert mcp_b.kind == SpanKind.CLIENT
    assert attrs(tool_a)["gen_ai.tool.name"] == "ask_b"
    task_id = attrs(client_a2a)["a2a.task.id"]
    assert attrs(server_a2a)["a2a.task.id"] == task_id
    # A's tool followed the task to its end (the stream, or GetTask after a quick answer).
    followed = sorted(
        (
            s
            for s in recorded.spans()
            if s.kind == SpanKind.CLIENT
            and s.name.startswith("a2a ")
            and parent_of(s) == span_id(tool_a)
        ),
        key=lambda s: s.end_time or 0,
    )
    assert all(attrs(s)["a2a.task.id"] == task_id for s in followed)
    assert attrs(followed[-1])["a2a.task.state"] == "TASK_STATE_COMPLETED"
    assert attrs(mcp_b)["mcp.server"] == "echo" and attrs(mcp_b)["rpc.method"] == "tools/call"

    # The failing MCP tool: an error result, on both spans; the run went on.
    assert attrs(mcp_failed)["error.type"] == "tool_error"
    assert not mcp_failed.status.is_ok
    assert "error.type" in attrs(failing_b)
    assert run_b.status.is_ok and run_a.status.is_ok

    # The MCP server subprocess got B's MCP client span as the parent of its request.
    calls = [e["traceparent"] for e in requests_seen(log) if e["method"] == "tools/call"]
    assert len(calls) == 2
    assert any(names_span_or_child(recorded, tp, mcp_b) for tp in calls)
    assert any(names_span_or_child(recorded, tp, mcp_failed) for tp in calls)
    # ... and answered with it (B's answer, relayed through A).
    assert "00-" + format(trace_id(run_a), "032x") in result.output
    assert not recorded.tracker.open, recorded.tracker.open
