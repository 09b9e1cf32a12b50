"""Real MCP servers from the registries, driven through an Agent with a ScriptedModel.

- ``mcp-server-time`` (PyPI; stdio only: it has no HTTP transport).
- ``@modelcontextprotocol/server-everything`` (npm; ``npm ci`` in ``tests/`` installs it),
  over stdio and over streamable HTTP, including its sampling, elicitation, roots and progress
  tools.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import anyio
import pytest
from mcp_support.helpers import everything_js, http_server, node
from support_processes import free_port

from agent_runtime import Agent
from agent_runtime.events import ToolCallProgress
from agent_runtime.protocols.mcp import (
    HttpServerConfig,
    MCPToolset,
    ServerConfig,
    StdioServerConfig,
)
from agent_runtime.testing import ScriptedModel
from agent_runtime.toolset import ToolContext
from agent_runtime.types import BinaryPart, ResourcePart, ToolCall

pytestmark = pytest.mark.anyio


async def test_mcp_server_time_tools_through_an_agent() -> None:
    toolset = MCPToolset("time", StdioServerConfig(sys.executable, ["-m", "mcp_server_time"]))
    model = ScriptedModel(
        [
            [
                ToolCall.of("time__get_current_time", {"timezone": "Asia/Tokyo"}, id="now"),
                ToolCall.of(
                    "time__convert_time",
                    {"source_timezone": "UTC", "time": "12:30", "target_timezone": "Europe/Paris"},
                    id="conv",
                ),
                # A timezone name the server rejects: its error is flagged to the model.
                ToolCall.of("time__get_current_time", {"timezone": "Mars/Olympus"}, id="bad"),
            ],
            "done",
        ]
    )
    async with Agent(model, [toolset]) as agent:
        result = await agent.run("what time is it?")
        specs = {spec.name: spec for spec in await toolset.list_tools()}
    assert set(specs) == {"time__get_current_time", "time__convert_time"}
    assert specs["time__get_current_time"].annotations.read_only is True
    now, conv, bad = result.tool_calls
    assert not now.result.is_error
    assert now.result.structured_content is not None
    assert now.result.structured_content["timezone"] == "Asia/Tokyo"
    assert not conv.result.is_error
    assert conv.result.structured_content is not None
    assert conv.result.structured_content["target"]["timezone"] == "Europe/Paris"
    assert conv.result.structured_content["target"]["datetime"].startswith(
        conv.result.structured_content["source"]["datetime"][:10]
    )
    assert bad.result.is_error
    assert "Mars/Olympus" in bad.result.text_content


@pytest.fixture(params=["stdio", "http"])
def everything(request: pytest.FixtureRequest) -> Iterator[ServerConfig]:
    script = everything_js()
    if request.param == "stdio":
        yield StdioServerConfig(node(), [script, "stdio"])
        return
    port = free_port()
    with http_server([node(), script, "streamableHttp"], port, env={"PORT": str(port)}) as url:
        yield HttpServerConfig(url)


async def test_everything_server_tools_through_an_agent(
    everything: ServerConfig, tmp_path: Path
) -> None:
    sampler = ScriptedModel(["a sampled reply"])
    asked: list[dict[str, Any]] = []

    def elicit(message: str, schema: dict[str, Any]) -> dict[str, Any]:
        asked.append({"message": message, "schema": schema})
        return {"name": "Ada Lovelace", "check": True}

    toolset = MCPToolset(
        "ev",
        everything,
        sampling_model=sampler,
        sampling_max_tokens=64,
        elicitation_callback=elicit,
        roots=[tmp_path],
    )
    calls = [
        ToolCall.of("ev__echo", {"message": "hi there"}, id="echo"),
        ToolCall.of("ev__get-sum", {"a": 2, "b": 40}, id="sum"),
        ToolCall.of("ev__get-structured-content", {"location": "Chicago"}, id="struct"),
        ToolCall.of("ev__get-tiny-image", {}, id="image"),
        ToolCall.of(
            "ev__get-resource-reference", {"resourceType": "Text", "resourceId": 1}, id="ref"
        ),
        ToolCall.of("ev__trigger-sampling-request", {"prompt": "Say hi", "maxTokens": 500}, id="s"),
        ToolCall.of("ev__trigger-elicitation-request", {}, id="elicit"),
        ToolCall.of(
            "ev__trigger-url-elicitation",
            {"url": "https://example.com/consent", "message": "Approve access"},
            id="url",
        ),
        ToolCall.of("ev__get-roots-list", {}, id="roots"),
        ToolCall.of("ev__trigger-long-running-operation", {"duration": 0.3, "steps": 3}, id="long"),
    ]
    model = ScriptedModel([calls, "finished"])
    progress: list[ToolCallProgress] = []
    async with Agent(model, [toolset]) as agent:
        stream = agent.run_stream("exercise the server")
        async for event in stream:
            if isinstance(event, ToolCallProgress):
                progress.append(event)
    assert stream.result is not None
    records = {record.call.id: record.result for record in stream.result.tool_calls}
    assert not any(result.is_error for result in records.values()), {
        k: v.text_content for k, v in records.items() if v.is_error
    }
    assert "hi there" in records["echo"].text_content
    assert "42" in records["sum"].text_content
    struct = records["struct"].structured_content
    assert struct is not None and {"temperature", "conditions", "humidity"} <= set(struct)
    images = [p for p in records["image"].content if isinstance(p, BinaryPart)]
    assert images and images[0].media_type == "image/png"
    assert images[0].data.startswith(b"\x89PNG")
    resources = [p for p in records["ref"].content if isinstance(p, ResourcePart)]
    assert resources and resources[0].uri.startswith("demo://resource/")

    # Sampling went to our model, with the host's token cap applied.
    assert "a sampled reply" in records["s"].text_content
    assert sampler.requests[0][2].max_tokens == 64
    assert json.dumps(sampler.requests[0][0][-1].model_dump()).count("Say hi") == 1

    # Elicitation went to the host callback, and the server got the answer.
    form, url = asked
    assert "name" in form["schema"]["properties"]
    assert "Ada Lovelace" in records["elicit"].text_content
    # URL mode: the host is shown the URL; the server hears "accept" with no form content.
    assert url["message"] == "Approve access\nhttps://example.com/consent"
    assert url["schema"] == {}
    assert '"accept"' in records["url"].text_content

    assert (await anyio.Path(tmp_path).resolve()).as_uri() in records["roots"].text_content

    long_progress = [p for p in progress if p.call_id == "long"]
    assert [p.progress for p in long_progress] == [1.0, 2.0, 3.0]
    assert all(p.total == 3.0 for p in long_progress)


async def test_everything_over_http_restarted_while_idle_gets_a_new_session(
    caplog: pytest.LogCaptureFixture,
) -> None:
    port = free_port()
    args, env = [node(), everything_js(), "streamableHttp"], {"PORT": str(port)}
    with ExitStack() as running:
        url = running.enter_context(http_server(args, port, env=env))
        async with MCPToolset("ev", HttpServerConfig(url)) as toolset:
            assert toolset.protocol_version == "2025-11-25"  # a session-keeping era
            first = await toolset.call_tool("ev__echo", {"message": "one"}, ToolContext())
            running.close()  # the server restarts while we are idle: our session is gone
            running.enter_context(http_server(args, port, env=env))
            second = await toolset.call_tool("ev__echo", {"message": "two"}, ToolContext())
            third = await toolset.call_tool("ev__echo", {"message": "three"}, ToolContext())
    assert "one" in first.text_content
    assert (second.is_error, third.is_error) == (False, False), second.text_content
    assert "two" in second.text_content and "three" in third.text_content
    # The server's own words are shown: it answered 400 "No valid session ID provided".
    lost = [r.getMessage() for r in caplog.records if "lost our session" in r.getMessage()]
    assert lost == [
        "MCP server 'ev' lost our session (HTTP 400: Bad Request: No valid session ID "
        "provided); starting a new session"
    ]


async def test_a_tool_that_runs_only_as_a_task_is_left_out_with_a_warning(
    caplog: pytest.LogCaptureFixture,
) -> None:
    config = StdioServerConfig(node(), [everything_js(), "stdio"])
    async with MCPToolset("ev", config) as toolset:
        names = {spec.name for spec in await toolset.list_tools()}
    # server-everything declares simulate-research-query with execution.taskSupport "required".
    assert "ev__simulate-research-query" not in names
    assert {"ev__echo", "ev__get-sum"} <= names
    assert list(toolset.left_out) == ["simulate-research-query"]
    [warning] = [
        r.getMessage() for r in caplog.records if "simulate-research-query" in r.getMessage()
    ]
    assert warning == (
        "MCP server 'ev': tool 'simulate-research-query' left out: it can only be called as a "
        'task (execution.taskSupport "required"), which this client does not do'
    )


async def test_everything_over_the_old_http_sse_transport() -> None:
    port = free_port()
    args, env = [node(), everything_js(), "sse"], {"PORT": str(port)}
    with http_server(args, port, env=env) as url:
        sse_url = url.removesuffix("/mcp") + "/sse"
        config = HttpServerConfig(sse_url, transport="sse")
        async with MCPToolset("old", config) as toolset:
            names = {spec.name for spec in await toolset.list_tools()}
            result = await toolset.call_tool("old__echo", {"message": "over sse"}, ToolContext())
    assert "old__get-sum" in names
    assert (result.is_error, "over sse" in result.text_content) == (False, True)
