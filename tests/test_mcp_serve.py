"""``agent-runtime mcp-serve``: the agent as an MCP server and gateway, used by the official
``mcp`` SDK client as a host would: over stdio (a real ``agent-runtime`` subprocess) and over
streamable HTTP on loopback.

The agent runs ``mcp_support/serve_agent.py``'s command model (no LLM) with two local tools,
in front of the SDK-built test server (``mcp_support/mcp_test_server.py``), which records what
reached it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as mt
import pytest
from mcp import Client, StdioServerParameters
from mcp_support.helpers import TEST_SERVER, calls_to
from support_processes import free_port, stop_process, wait_for_port

SUPPORT = Path(__file__).resolve().parent / "mcp_support"
pytestmark = pytest.mark.anyio


def _config(tmp_path: Path, state: Path) -> Path:
    config = {
        "name": "helper",
        "description": "A test agent.",
        "model": {"backend": "serve_agent:command_model"},
        "tools": ["serve_agent:wait_here", "serve_agent:shout"],
        "mcpServers": {
            "test": {
                "command": sys.executable,
                "args": [str(TEST_SERVER)],
                "env": {"MCP_TEST_STATE_DIR": str(state)},
                "protocol": "2025-11-25",
            }
        },
    }
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    return path


def _env(state: Path) -> dict[str, str]:
    return {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        "SERVE_TEST_STATE": str(state),
    }


class Host:
    """What the host in front saw: progress, logs, list changes; its answers to requests."""

    def __init__(self) -> None:
        self.progress: list[tuple[float, float | None, str | None]] = []
        self.logs: list[mt.LoggingMessageNotificationParams] = []
        self.list_changed = anyio.Event()
        self.elicited: list[str] = []
        self.sampled: list[str] = []

    async def on_progress(self, progress: float, total: float | None, message: str | None) -> None:
        self.progress.append((progress, total, message))

    async def on_log(self, params: mt.LoggingMessageNotificationParams) -> None:
        self.logs.append(params)

    async def on_message(self, message: Any) -> None:
        if isinstance(message, mt.ToolListChangedNotification):
            self.list_changed.set()

    async def on_elicit(self, ctx: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        self.elicited.append(params.message)
        return mt.ElicitResult(action="accept", content={"confirm": True, "reason": "front"})

    async def on_sample(
        self, ctx: Any, params: mt.CreateMessageRequestParams
    ) -> mt.CreateMessageResult:
        text = params.messages[0].content
        self.sampled.append(text.text if isinstance(text, mt.TextContent) else "")
        return mt.CreateMessageResult(
            role="assistant", content=mt.TextContent(type="text", text="forty-two"), model="front"
        )

    def client(self, server: Any) -> Client:
        return Client(
            server,
            mode="legacy",
            logging_callback=self.on_log,
            elicitation_callback=self.on_elicit,
            sampling_callback=self.on_sample,
            message_handler=self.on_message,
            read_timeout_seconds=60,
        )


@asynccontextmanager
async def _stdio(tmp_path: Path, host: Host, *extra: str) -> AsyncIterator[Client]:
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    params = StdioServerParameters(
        command=sys.executable,
        args=[
            "-m",
            "agent_runtime.cli",
            "mcp-serve",
            "--config",
            str(_config(tmp_path, state)),
            *extra,
        ],
        env=_env(state),
    )
    async with host.client(params) as client:
        yield client


@pytest.fixture
def http_url(tmp_path: Path) -> Iterator[str]:
    state = tmp_path / "state"
    state.mkdir()
    port = free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "agent_runtime.cli",
            "mcp-serve",
            "--gateway",
            "--http",
            str(port),
            "--config",
            str(_config(tmp_path, state)),
        ],
        env=_env(state),
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_for_port(port, proc, timeout_s=60)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(proc, timeout_s=10)


def _text(result: mt.CallToolResult) -> str:
    return "".join(b.text for b in result.content if isinstance(b, mt.TextContent))


async def test_ask_tool_streams_progress_over_stdio(tmp_path: Path) -> None:
    host = Host()
    async with _stdio(tmp_path, host) as client:
        tools = [t.name for t in (await client.list_tools()).tools]
        assert tools == ["ask_helper"]  # without --gateway: the agent alone
        result = await client.call_tool(
            "ask_helper",
            {"prompt": 'call shout {"text": "hi"}'},
            progress_callback=host.on_progress,
        )
    assert not result.is_error
    assert _text(result) == "result: HI"
    messages = [m for _, _, m in host.progress]
    assert messages[0] == "calling shout"
    assert messages[1].startswith("shout done")
    assert "".join(messages[2:]) == "result: HI"  # the answer's text as it streamed
    assert [p for p, _, _ in host.progress] == list(range(1, len(host.progress) + 1))


async def test_ask_tool_rejects_a_bad_prompt(tmp_path: Path) -> None:
    async with _stdio(tmp_path, Host()) as client:
        result = await client.call_tool("ask_helper", {"prompt": 3})
    assert result.is_error
    assert "'prompt' (a string)" in _text(result)


async def test_cancelling_ask_stops_the_run(tmp_path: Path) -> None:
    log = tmp_path / "state" / "local.log"
    async with _stdio(tmp_path, Host()) as client:
        with anyio.move_on_after(60) as scope:
            async with anyio.create_task_group() as tg:

                async def ask() -> None:
                    await client.call_tool(
                        "ask_helper", {"prompt": 'call wait_here {"seconds": 120}'}
                    )

                tg.start_soon(ask)
                # The trace is a file another process writes: polled, no event to wait on.
                while not (log.exists() and "started" in log.read_text()):  # noqa: ASYNC110
                    await anyio.sleep(0.05)
                tg.cancel_scope.cancel()  # the SDK client sends notifications/cancelled
        assert not scope.cancel_called
        with anyio.fail_after(30):
            while "cancelled" not in log.read_text():  # noqa: ASYNC110
                await anyio.sleep(0.05)
        # The server goes on serving after the cancelled run.
        again = await client.call_tool("ask_helper", {"prompt": "hello"})
    assert _text(again) == "echo: hello"
    assert "finished" not in log.read_text()


async def test_gateway_lists_every_tool_under_runtime_names(tmp_path: Path) -> None:
    async with _stdio(tmp_path, Host(), "--gateway") as client:
        listed = {t.name: t for t in (await client.list_tools()).tools}
    assert {"ask_helper", "wait_here", "shout", "test__echo", "test__configure"} <= set(listed)
    assert listed["test__fail"].annotations is not None
    assert listed["test__fail"].annotations.destructive_hint is True
    assert listed["shout"].input_schema["required"] == ["text"]


async def test_gateway_validates_before_forwarding(tmp_path: Path) -> None:
    state = tmp_path / "state"
    async with _stdio(tmp_path, Host(), "--gateway") as client:
        bad = await client.call_tool("test__configure", {"settings": {"retries": -5}})
        good = await client.call_tool(
            "test__configure", {"settings": {"retries": 2, "mode": "fast"}}
        )
        unknown = await client.call_tool("test__echoo", {"text": "x"})
    assert bad.is_error
    assert "/settings/retries" in _text(bad) and "/settings/mode" in _text(bad)
    assert not good.is_error and "configured 2" in _text(good)
    assert unknown.is_error and "test__echo" in _text(unknown)  # closest names
    assert calls_to(state, "configure") == 1  # only the valid call reached the server


async def test_gateway_passes_progress_logs_sampling_and_elicitation(tmp_path: Path) -> None:
    host = Host()
    async with _stdio(tmp_path, host, "--gateway") as client:
        progressed = await client.call_tool(
            "test__progress", {"steps": 3}, progress_callback=host.on_progress
        )
        logged = await client.call_tool("test__log", {"message": "hello from behind"})
        sampled = await client.call_tool("test__ask_model", {"question": "the answer?"})
        elicited = await client.call_tool("test__confirm_action", {"action": "deploy"})
    assert _text(progressed) == "done 3"
    assert [(p, t, m) for p, t, m in host.progress] == [
        (1, 3, "step 1"),
        (2, 3, "step 2"),
        (3, 3, "step 3"),
    ]
    assert _text(logged) == "logged"
    assert any(
        "hello from behind" in str(log.data) and log.level == "warning" and log.logger == "test"
        for log in host.logs
    )
    assert host.sampled == ["the answer?"]
    assert "forty-two" in _text(sampled)
    assert host.elicited and "deploy" in host.elicited[0]
    assert "confirmed=True" in _text(elicited)


async def test_gateway_reexports_resources_and_prompts_with_prefixes(tmp_path: Path) -> None:
    async with _stdio(tmp_path, Host(), "--gateway") as client:
        resources = (await client.list_resources()).resources
        templates = (await client.list_resource_templates()).resource_templates
        read = await client.read_resource("test://greeting")
        item = await client.read_resource("test://items/7")
        prompts = (await client.list_prompts()).prompts
        prompt = await client.get_prompt("test__review", {"code": "x = 1"})
    assert [(r.name, str(r.uri)) for r in resources] == [("test__greeting", "test://greeting")]
    assert [t.name for t in templates] == ["test__item"]
    assert [c.text for c in read.contents if isinstance(c, mt.TextResourceContents)] == [
        "hello from the test server"
    ]
    assert [c.text for c in item.contents if isinstance(c, mt.TextResourceContents)] == ["item 7"]
    assert [p.name for p in prompts] == ["test__review"]
    content = prompt.messages[0].content
    assert isinstance(content, mt.TextContent) and "x = 1" in content.text


async def test_list_changed_behind_reaches_the_host(tmp_path: Path) -> None:
    host = Host()
    async with _stdio(tmp_path, host, "--gateway") as client:
        before = {t.name for t in (await client.list_tools()).tools}
        await client.call_tool("test__add_tool", {"name": "fresh"})
        with anyio.fail_after(20):
            await host.list_changed.wait()
        after = {t.name for t in (await client.list_tools()).tools}
        called = await client.call_tool("test__fresh", {})
    assert "test__fresh" not in before and "test__fresh" in after
    assert _text(called) == "I am fresh"


async def test_gateway_over_streamable_http(http_url: str, tmp_path: Path) -> None:
    host = Host()
    async with host.client(http_url) as client:
        names = {t.name for t in (await client.list_tools()).tools}
        bad = await client.call_tool("shout", {"text": 5})
        asked = await client.call_tool(
            "ask_helper",
            {"prompt": 'call test__echo {"text": "over http"}'},
            progress_callback=host.on_progress,
        )
        progressed = await client.call_tool(
            "test__progress", {"steps": 2}, progress_callback=host.on_progress
        )
        elicited = await client.call_tool("test__confirm_action", {"action": "ship"})
    assert {"ask_helper", "shout", "test__echo"} <= names
    assert bad.is_error and "/text" in _text(bad)
    assert "over http" in _text(asked) and not asked.is_error
    assert "calling test__echo" in [m for _, _, m in host.progress]
    assert _text(progressed) == "done 2"
    assert (2, 2, "step 2") in host.progress
    assert "confirmed=True" in _text(elicited) and host.elicited
