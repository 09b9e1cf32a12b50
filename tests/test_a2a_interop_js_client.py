"""The official A2A JS SDK client (@a2a-js/sdk 1.3) against our A2A server, on both bindings.

Our node runs under uvicorn on a free loopback port (in-process, one per module) with the echo
agent; ``a2a_interop_support/js_client.mjs`` drives it with the SDK's ``ClientFactory`` given
only the transport under test, one scenario per ``node`` run, and prints what the SDK returned as
JSON. The tests assert on that, so they check what a JS caller really sees (the SDK's parsing,
its error classes), not only what went over the wire.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import anyio
import pytest
from a2a_interop_support.echo_model import EchoModel
from a2a_interop_support.processes import node_binary, serve_app

from agent_runtime.agent import Agent
from agent_runtime.protocols.a2a.auth import ANONYMOUS
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore
from agent_runtime.protocols.a2a.types import TaskState

BINDINGS = ["JSONRPC", "HTTP+JSON"]
TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
DRIVER = TESTS / "a2a_interop_support" / "js_client.mjs"
COMPLETED = "TASK_STATE_COMPLETED"


NODE = node_binary()


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    """Module scope, so the server below lives in one event loop across the module's tests."""
    return "asyncio"


class Node:
    """Our echo node as the tests see it: its URL and the store behind it."""

    def __init__(self, url: str, store: InMemoryTaskStore) -> None:
        self.url = url
        self.store = store

    async def drive(self, binding: str, scenario: str, *args: str) -> dict[str, Any]:
        """Run one driver scenario; its JSON output, after checking the binding it used."""
        cmd = [NODE, str(DRIVER), self.url, binding, scenario, *args]
        with anyio.fail_after(30):
            done = await anyio.run_process(cmd, cwd=REPO, check=False)
        out = done.stdout.decode()
        if done.returncode != 0:
            pytest.fail(f"{scenario} on {binding} failed:\n{out}\n{done.stderr.decode()}")
        result: dict[str, Any] = json.loads(out)
        assert result["transport"] == binding
        suffix = "/a2a/jsonrpc" if binding == "JSONRPC" else "/a2a/rest"
        assert result["endpoint"] == self.url + suffix
        return result


@pytest.fixture(scope="module")
async def node() -> AsyncIterator[Node]:
    store = InMemoryTaskStore()
    agent = Agent(EchoModel(), name="Echo Agent", description="Echoes text back")
    async with serve_app(create_a2a_app(agent, store=store)) as url:
        yield Node(url, store)


@pytest.fixture(params=BINDINGS)
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _texts(parts: list[dict[str, Any]]) -> str:
    return "".join(p.get("text", "") for p in parts)


def _state(task: dict[str, Any]) -> str:
    return str(task["status"]["state"])


def _artifact_text(events: list[dict[str, Any]]) -> str:
    """The artifact as a client rebuilds it from artifact updates (append or replace)."""
    text = ""
    for event in events:
        if "artifactUpdate" in event:
            update = event["artifactUpdate"]
            chunk = _texts(update["artifact"]["parts"])
            text = text + chunk if update.get("append") else chunk
    return text


def _assert_sdk_error(error: dict[str, Any], semantic: str, binding: str) -> None:
    """The SDK raised its own error class for ``semantic`` with the spec's code (section 5.4)."""
    codes = {
        "TaskNotFoundError": (-32001, 404),
        "TaskNotCancelableError": (-32002, 400),
        "UnsupportedOperationError": (-32004, 400),
    }
    assert "unexpectedSuccess" not in error, error
    assert error["semantic"] == semantic, error
    jsonrpc_code, http_status = codes[semantic]
    assert error["code"] == (jsonrpc_code if binding == "JSONRPC" else http_status), error


@pytest.mark.anyio
async def test_js_client_resolves_our_card_and_uses_the_requested_binding(
    node: Node, binding: str
) -> None:
    out = await node.drive(binding, "card")
    card = out["card"]
    assert card["name"] == "Echo Agent"
    interfaces = {i["protocolBinding"]: i for i in card["supportedInterfaces"]}
    assert set(interfaces) == set(BINDINGS)
    assert interfaces["JSONRPC"]["url"] == node.url + "/a2a/jsonrpc"
    assert interfaces["HTTP+JSON"]["url"] == node.url + "/a2a/rest"
    assert {i["protocolVersion"] for i in interfaces.values()} == {"1.0"}
    assert card["capabilities"]["streaming"] is True
    # Without an extended card the client keeps the card it resolved.
    assert out["clientCard"] == card
    assert out["protocolVersion"] == "1.0"


@pytest.mark.anyio
async def test_js_client_sends_a_message_and_gets_the_completed_task(
    node: Node, binding: str
) -> None:
    out = await node.drive(binding, "send", "hello js")
    assert out["kind"] == "task"
    task = out["task"]
    assert _state(task) == COMPLETED
    assert [_texts(a["parts"]) for a in task["artifacts"]] == ["echo: hello js"]
    assert [m["role"] for m in task["history"]] == ["ROLE_USER", "ROLE_AGENT"]
    assert _texts(task["history"][0]["parts"]) == "hello js"


@pytest.mark.anyio
async def test_js_client_sees_a_failing_agent_as_a_failed_task(node: Node, binding: str) -> None:
    task = (await node.drive(binding, "send", "fail:boom"))["task"]
    assert _state(task) == "TASK_STATE_FAILED"
    assert "boom" in _texts(task["status"]["message"]["parts"])


@pytest.mark.anyio
async def test_return_immediately_then_get_task_shows_it_completed(
    node: Node, binding: str
) -> None:
    out = await node.drive(binding, "send-immediate", "later")
    assert _state(out["first"]) in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")
    assert out["task"]["id"] == out["first"]["id"]
    assert _state(out["task"]) == COMPLETED
    assert _texts(out["task"]["artifacts"][0]["parts"]) == "echo: later"


@pytest.mark.anyio
async def test_js_client_streams_the_task_its_artifact_and_the_end(
    node: Node, binding: str
) -> None:
    events = (await node.drive(binding, "stream", "stream me"))["events"]
    kinds = [next(iter(e)) for e in events]
    assert kinds[0] == "task"
    task_id = events[0]["task"]["id"]
    assert "artifactUpdate" in kinds
    assert kinds[-1] == "statusUpdate"
    assert events[-1]["statusUpdate"]["status"]["state"] == COMPLETED
    assert all(e[k]["taskId"] == task_id for e, k in zip(events[1:], kinds[1:], strict=True))
    assert _artifact_text(events) == "echo: stream me"
    last_chunks = [e for e in events if e.get("artifactUpdate", {}).get("lastChunk")]
    assert len(last_chunks) == 1


@pytest.mark.anyio
async def test_history_length_limits_the_history_the_js_client_gets(
    node: Node, binding: str
) -> None:
    out = await node.drive(binding, "get-task", "history")
    # The send asked for one message: the latest (the agent's reply).
    assert [m["role"] for m in out["sent"].get("history", [])] == ["ROLE_AGENT"]
    assert [m["role"] for m in out["full"]["history"]] == ["ROLE_USER", "ROLE_AGENT"]
    assert [_texts(m["parts"]) for m in out["one"]["history"]] == ["echo: history"]
    # Zero means no messages at all (spec 3.2.4), not "no limit".
    assert out["zero"].get("history", []) == []
    assert _state(out["zero"]) == COMPLETED


@pytest.mark.anyio
async def test_js_client_cancels_a_running_task(node: Node, binding: str) -> None:
    out = await node.drive(binding, "cancel-slow", "cancel me")
    task_id = out["first"]["id"]
    assert _state(out["first"]) in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")
    assert out["canceled"]["id"] == task_id
    assert _state(out["canceled"]) == "TASK_STATE_CANCELED"
    _assert_sdk_error(out["again"], "TaskNotCancelableError", binding)
    assert _state(out["after"]) == "TASK_STATE_CANCELED"
    record = await node.store.get(task_id, ANONYMOUS)
    assert record is not None and record.task.status.state == TaskState.CANCELED


@pytest.mark.anyio
async def test_an_unknown_task_is_the_sdks_task_not_found_error(node: Node, binding: str) -> None:
    out = await node.drive(binding, "task-not-found")
    for call in ("get", "cancel", "subscribe"):
        _assert_sdk_error(out[call], "TaskNotFoundError", binding)
        assert out[call]["reason"] == "TASK_NOT_FOUND"


@pytest.mark.anyio
async def test_a_reply_to_an_input_required_task_completes_it(node: Node, binding: str) -> None:
    out = await node.drive(binding, "follow-up", "favourite colour?")
    first, second = out["first"], out["second"]
    assert _state(first) == "TASK_STATE_INPUT_REQUIRED"
    assert _texts(first["status"]["message"]["parts"]) == "favourite colour?"
    assert second["id"] == first["id"]
    assert second["contextId"] == first["contextId"]
    assert _state(second) == COMPLETED
    assert _texts(second["artifacts"][-1]["parts"]) == "answer: blue"
    assert [_texts(m["parts"]) for m in second["history"] if m["role"] == "ROLE_USER"] == [
        "ask:favourite colour?",
        "blue",
    ]


@pytest.mark.anyio
async def test_a_streamed_reply_to_an_input_required_task_completes_it(
    node: Node, binding: str
) -> None:
    out = await node.drive(binding, "follow-up-stream", "favourite colour?")
    events = out["events"]
    assert events[0]["task"]["id"] == out["first"]["id"]
    assert events[-1]["statusUpdate"]["status"]["state"] == COMPLETED
    assert _artifact_text(events) == "answer: green"


@pytest.mark.anyio
async def test_a_finished_task_takes_no_message_and_no_subscriber(node: Node, binding: str) -> None:
    out = await node.drive(binding, "terminal-task", "done")
    assert _state(out["done"]) == COMPLETED
    _assert_sdk_error(out["send"], "UnsupportedOperationError", binding)
    _assert_sdk_error(out["subscribe"], "UnsupportedOperationError", binding)


@pytest.mark.anyio
async def test_js_client_lists_a_contexts_tasks_page_by_page(node: Node, binding: str) -> None:
    out = await node.drive(binding, "list-tasks", "listed")
    pages = out["pages"]
    assert len(pages) == 2
    assert pages[0]["nextPageToken"] and not pages[-1].get("nextPageToken")
    assert all(len(p["tasks"]) <= 2 and p["totalSize"] == 4 for p in pages)
    listed = [t["id"] for p in pages for t in p["tasks"]]
    assert sorted(listed) == sorted(out["ids"])
    assert {t["contextId"] for p in pages for t in p["tasks"]} == {out["contextId"]}


@pytest.mark.anyio
async def test_js_client_subscribes_and_sees_the_snapshot_then_the_end(
    node: Node, binding: str
) -> None:
    out = await node.drive(binding, "subscribe", "watch me")
    events = out["events"]
    assert events[0]["task"]["id"] == out["first"]["id"]
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_CANCELED"
