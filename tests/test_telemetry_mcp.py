"""Telemetry of MCP requests: a client span per request (tools/call, tools/list, resources/read and
list, prompts/get and list) whose ``traceparent`` travels in the request's ``_meta`` to a real
server subprocess (which writes down what it got); an error result marks the span failed; the
server face continues the ``traceparent`` a host sends, and the agent run it starts is a child."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from opentelemetry.trace import SpanKind
from telemetry_support import (
    Recorded,
    attrs,
    names_span_or_child,
    parent_of,
    requests_seen,
    span_id,
    trace_echo_toolset,
    trace_id,
)

from agent_runtime.telemetry import span
from agent_runtime.toolset import ToolContext

pytestmark = pytest.mark.anyio


@pytest.fixture
def log(tmp_path: Path) -> Path:
    """Where the trace-echo server writes down the requests it got."""
    return tmp_path / "seen.jsonl"


async def test_each_request_is_a_client_span_whose_traceparent_reaches_the_server(
    log: Path,
    recorded: Recorded,
) -> None:
    async with trace_echo_toolset(log) as toolset:
        with span("caller"):
            result = await toolset.call_tool("echo__echo_meta", {}, ToolContext())
            await toolset.read_resource("trace://meta")
            await toolset.get_prompt("meta")
            await toolset.list_prompts()
            await toolset.list_resources()
    caller = recorded.one("caller")
    by_method: dict[str, Any] = {}
    for method in (
        "tools/list",
        "tools/call",
        "resources/read",
        "prompts/get",
        "prompts/list",
        "resources/list",
    ):
        found = recorded.named(f"mcp {method}")
        assert found, method
        client = found[-1]
        by_method[method] = client
        assert client.kind == SpanKind.CLIENT
        a = attrs(client)
        assert a["rpc.system"] == "mcp" and a["rpc.method"] == method
        assert a["mcp.server"] == "echo"
        assert client.status.is_ok
    call = by_method["tools/call"]
    assert attrs(call)["gen_ai.tool.name"] == "echo_meta"
    for method in ("tools/call", "resources/read", "prompts/get", "prompts/list", "resources/list"):
        assert parent_of(by_method[method]) == span_id(caller)
        assert trace_id(by_method[method]) == trace_id(caller)
    # The server got each request's own span as its parent ...
    # (or the SDK's own ``MCP send`` span under it, which rewrites ``_meta.traceparent``).
    received = requests_seen(log)
    for method in by_method:
        clients = recorded.named(f"mcp {method}")
        got = [entry["traceparent"] for entry in received if entry["method"] == method]
        assert got, method
        for traceparent in got:
            assert any(names_span_or_child(recorded, traceparent, c) for c in clients), method
    # ... and says so in its answers.
    assert names_span_or_child(recorded, result.text_content, call)
    assert not recorded.tracker.open


async def test_an_error_result_fails_the_span_and_counts_as_a_failed_request(
    log: Path,
    recorded: Recorded,
) -> None:
    async with trace_echo_toolset(log) as toolset:
        result = await toolset.call_tool("echo__fail", {}, ToolContext())
    assert not recorded.tracker.open
    assert result.is_error
    failed = recorded.named("mcp tools/call")[-1]
    assert attrs(failed)["error.type"] == "tool_error"
    assert not failed.status.is_ok
    # The request-duration metric counted it as a failure on the client side.
    points = recorded.metric_points("agent_runtime.rpc.duration")
    failures = [
        p
        for p in points
        if p.attributes.get("rpc.method") == "tools/call"
        and p.attributes.get("agent_runtime.side") == "client"
    ]
    assert failures and failures[0].attributes.get("error.type") == "tool_error"
    assert failures[0].count == 1


async def test_without_tracing_requests_carry_no_traceparent(log: Path) -> None:
    async with trace_echo_toolset(log) as toolset:
        result = await toolset.call_tool("echo__echo_meta", {}, ToolContext())
    assert result.text_content == "None"
    assert all(entry["traceparent"] is None for entry in requests_seen(log))


async def test_the_server_face_continues_the_hosts_trace_and_runs_the_agent_inside(
    recorded: Recorded,
) -> None:
    from mcp import Client

    from agent_runtime import Agent
    from agent_runtime.protocols.mcp.server_face import MCPServerFace
    from agent_runtime.protocols.mcp.server_relay import HostRelay
    from agent_runtime.testing import ScriptedModel

    agent = Agent(ScriptedModel(["the answer"]), name="helper")
    face = MCPServerFace(agent, HostRelay())
    async with Client(face.build(), mode="legacy") as client:
        with span("host"):
            result = await client.call_tool("ask_helper", {"prompt": "hi"})
    assert not result.is_error
    host = recorded.one("host")
    served = [s for s in recorded.named("mcp tools/call") if s.kind == SpanKind.SERVER]
    assert len(served) == 1
    server = served[0]
    assert trace_id(server) == trace_id(host)
    assert attrs(server)["rpc.method"] == "tools/call"
    assert attrs(server)["gen_ai.tool.name"] == "ask_helper"
    run = recorded.one("invoke_agent helper")
    assert parent_of(run) == span_id(server)
    # The server span descends from the host's span (through the SDK's own spans).
    by_id = {span_id(s): s for s in recorded.spans()}
    ancestor = server
    while parent_of(ancestor) is not None and parent_of(ancestor) in by_id:
        ancestor = by_id[parent_of(ancestor)]  # type: ignore[index]
    assert ancestor is host
    assert not recorded.tracker.open
