"""What the model sees, and what is left running, when an MCP server misbehaves."""

from __future__ import annotations

import os
import signal
import sys
from contextlib import ExitStack
from pathlib import Path

import anyio
import pytest
from mcp_support.helpers import (
    TEST_SERVER,
    alive,
    calls_to,
    events,
    http_server,
    started_pids,
    stdio_test_server,
    wait_dead,
)
from support_processes import free_port

from agent_runtime import Agent
from agent_runtime.dispatcher import DispatchConfig
from agent_runtime.protocols.mcp import (
    HttpServerConfig,
    MCPConnectionError,
    MCPToolset,
    StdioServerConfig,
)
from agent_runtime.testing import ScriptedModel
from agent_runtime.toolset import ToolContext
from agent_runtime.types import ToolCall

pytestmark = pytest.mark.anyio


async def test_crash_mid_call_is_an_error_then_the_server_restarts_and_the_call_succeeds(
    tmp_path: Path,
) -> None:
    toolset = MCPToolset("srv", stdio_test_server(tmp_path), restart_backoff_s=(0.05,))
    model = ScriptedModel(
        [
            [ToolCall.of("srv__crash_once", {}, id="first")],
            [ToolCall.of("srv__crash_once", {}, id="again")],
            "recovered",
        ]
    )
    async with Agent(model, [toolset]) as agent:
        with anyio.fail_after(30):  # a crash must never hang the call
            result = await agent.run("go")
    first, again = result.tool_calls
    assert first.result.is_error
    assert "closed the connection" in first.result.text_content
    assert "restarted" in first.result.text_content
    assert not again.result.is_error
    assert again.result.text_content == "survived"
    assert result.output == "recovered"
    crashed, restarted = started_pids(tmp_path)
    assert crashed != restarted
    assert await wait_dead(crashed)
    assert await wait_dead(restarted)  # shut down with the agent


async def test_a_server_that_keeps_crashing_is_given_up_after_max_restarts(tmp_path: Path) -> None:
    async with MCPToolset(
        "srv", stdio_test_server(tmp_path), restart_backoff_s=(0.01,), max_restarts=1
    ) as toolset:
        ctx = ToolContext()
        first = await toolset.call_tool("srv__crash", {}, ctx)
        second = await toolset.call_tool("srv__crash", {}, ctx)  # after restart 1
        third = await toolset.call_tool("srv__echo", {"text": "x"}, ctx)
    assert first.is_error and second.is_error
    assert third.is_error
    assert "gave up after 1 restarts" in third.text_content
    assert len(started_pids(tmp_path)) == 2
    for pid in started_pids(tmp_path):
        assert await wait_dead(pid)


async def test_a_hang_past_the_timeout_is_an_error_and_the_server_is_told_to_cancel(
    tmp_path: Path,
) -> None:
    toolset = MCPToolset("srv", stdio_test_server(tmp_path))
    model = ScriptedModel(
        [
            [ToolCall.of("srv__slow", {"seconds": 30}, id="slow")],
            [ToolCall.of("srv__echo", {"text": "next"}, id="next")],
            "ok",
        ]
    )
    async with Agent(model, [toolset], dispatch=DispatchConfig(call_timeout_s=1.0)) as agent:
        with anyio.fail_after(20):
            result = await agent.run("go")
        with anyio.fail_after(10):
            while not any(event == "cancelled" for _, event, _ in events(tmp_path)):  # noqa: ASYNC110
                await anyio.sleep(0.05)
    slow, after = result.tool_calls
    assert slow.result.is_error
    assert "timed out after 1s" in slow.result.text_content
    assert after.result.text_content == "next"  # the session survived the cancellation
    [pid] = started_pids(tmp_path)
    assert await wait_dead(pid)


async def test_toolset_timeout_applies_without_a_dispatcher_deadline(tmp_path: Path) -> None:
    async with MCPToolset("srv", stdio_test_server(tmp_path), call_timeout_s=0.3) as toolset:
        result = await toolset.call_tool("srv__slow", {"seconds": 30}, ToolContext())
    assert result.is_error
    assert result.text_content.endswith(
        "timed out after 0.3s; the request was cancelled on the server"
    )


async def test_garbage_on_stdout_does_not_end_the_session(tmp_path: Path) -> None:
    # MCP_TEST_BANNER prints a non-JSON line before the handshake as well.
    async with MCPToolset("srv", stdio_test_server(tmp_path, MCP_TEST_BANNER="1")) as toolset:
        noisy = await toolset.call_tool("srv__garbage", {"text": "after noise"}, ToolContext())
        later = await toolset.call_tool("srv__echo", {"text": "still here"}, ToolContext())
    assert (noisy.is_error, noisy.text_content) == (False, "after noise")
    assert (later.is_error, later.text_content) == (False, "still here")
    assert len(started_pids(tmp_path)) == 1  # no restart was needed


async def test_failure_at_start_raises_with_the_tail_of_stderr(tmp_path: Path) -> None:
    config = stdio_test_server(tmp_path, MCP_TEST_FAIL_AT_START="error: OPENAI_API_KEY is not set")
    with pytest.raises(MCPConnectionError) as info:
        async with MCPToolset("needs-key", config):
            pass  # pragma: no cover - never reached
    assert "'needs-key' failed to start" in str(info.value)
    assert "OPENAI_API_KEY is not set" in info.value.stderr_tail
    assert "OPENAI_API_KEY is not set" in str(info.value)


async def test_missing_command_raises_a_clear_error() -> None:
    with pytest.raises(MCPConnectionError, match="'ghost' failed to start.*No such file"):
        async with MCPToolset("ghost", StdioServerConfig("/nonexistent/mcp-server-binary")):
            pass  # pragma: no cover - never reached


async def test_a_server_that_never_answers_the_handshake_times_out_and_is_killed() -> None:
    script = (
        "import os, sys, time; print('pid', os.getpid(), file=sys.stderr, flush=True); "
        "time.sleep(60)"
    )
    config = StdioServerConfig(sys.executable, ["-c", script])
    with anyio.fail_after(30), pytest.raises(MCPConnectionError) as info:
        async with MCPToolset("mute", config, connect_timeout_s=1.0):
            pass  # pragma: no cover - never reached
    assert "no answer to the MCP handshake within 1.0s" in str(info.value)
    pid = int(info.value.stderr_tail.split()[1])
    assert await wait_dead(pid)


async def test_shutdown_leaves_no_child_and_keeps_the_callers_exception(tmp_path: Path) -> None:
    with pytest.raises(KeyError, match="boom"):
        async with MCPToolset("srv", stdio_test_server(tmp_path)) as toolset:
            await toolset.call_tool("srv__echo", {"text": "hi"}, ToolContext())
            [pid] = started_pids(tmp_path)
            assert alive(pid)
            raise KeyError("boom")
    assert await wait_dead(pid)


async def test_cancelling_the_host_mid_call_still_cleans_up(tmp_path: Path) -> None:
    with anyio.CancelScope() as scope:
        async with MCPToolset("srv", stdio_test_server(tmp_path), call_timeout_s=None) as toolset:
            async with anyio.create_task_group() as tg:
                tg.start_soon(toolset.call_tool, "srv__slow", {"seconds": 60}, ToolContext())
                with anyio.fail_after(20):
                    while calls_to(tmp_path, "slow") == 0:  # noqa: ASYNC110
                        await anyio.sleep(0.05)
                scope.cancel()  # the host gives up while the call is in flight
    assert scope.cancelled_caught
    [pid] = started_pids(tmp_path)
    assert await wait_dead(pid)


async def test_a_server_ignoring_stdin_close_and_sigterm_is_killed_at_shutdown(
    tmp_path: Path,
) -> None:
    async with MCPToolset("srv", stdio_test_server(tmp_path, MCP_TEST_STUBBORN="1")) as toolset:
        result = await toolset.call_tool("srv__echo", {"text": "hi"}, ToolContext())
    assert result.text_content == "hi"
    [pid] = started_pids(tmp_path)
    assert await wait_dead(pid)
    assert any(event == "stubborn" for _, event, _ in events(tmp_path))


async def test_a_server_killed_while_idle_is_restarted_by_the_next_call(tmp_path: Path) -> None:
    async with MCPToolset("srv", stdio_test_server(tmp_path), restart_backoff_s=(0.0,)) as toolset:
        [first_pid] = started_pids(tmp_path)
        assert toolset.connected
        os.kill(first_pid, signal.SIGKILL)
        assert await wait_dead(first_pid)
        with anyio.fail_after(10):  # the session notices the end of the server's stdout
            while toolset.connected:  # noqa: ASYNC110
                await anyio.sleep(0.02)
        result = await toolset.call_tool("srv__echo", {"text": "back"}, ToolContext())
        pids = started_pids(tmp_path)
    assert (result.is_error, result.text_content) == (False, "back")
    assert len(pids) == 2 and pids[0] == first_pid


async def test_an_http_server_that_restarted_and_forgot_the_session_gets_a_new_one(
    tmp_path: Path,
) -> None:
    port = free_port()
    args = [sys.executable, str(TEST_SERVER), "http", str(port)]
    with ExitStack() as servers:
        url = servers.enter_context(http_server(args, port))
        # Handshake era: the server keeps a session id that its restart forgets (HTTP 404).
        async with MCPToolset("web", HttpServerConfig(url), mode="legacy") as toolset:
            first = await toolset.call_tool("web__echo", {"text": "one"}, ToolContext())
            servers.close()
            servers.enter_context(http_server(args, port))
            second = await toolset.call_tool("web__echo", {"text": "two"}, ToolContext())
            resources = await toolset.list_resources()
    assert first.text_content == "one"
    assert (second.is_error, second.text_content) == (False, "two")
    assert [str(r.uri) for r in resources] == ["test://greeting"]
