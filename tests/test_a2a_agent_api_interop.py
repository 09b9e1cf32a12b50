"""The whole served-agent API, seen through both official SDK clients on both HTTP bindings.

Our node serves, in-process under uvicorn, the plain-object ``ShowcaseAgent`` and a runtime
``Agent`` with approval-gated and signal-raising tools (``a2a_interop_support.protocol_agents``).
Each scenario runs with the Python a2a-sdk client and the JS @a2a-js/sdk client, on JSON-RPC and
HTTP+JSON (and the Python client on gRPC, which the node serves too), and asserts on what that client returned: the agent read the message's ids, metadata
and parts; artifacts with file, URL and data parts arrive intact; streamed chunks arrive in order
with ``append`` / ``lastChunk`` as sent; a Message reply; REJECTED; AUTH_REQUIRED then a decision
by a follow-up message; INPUT_REQUIRED from a typed signal.
"""

from __future__ import annotations

import base64
import uuid
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from a2a_interop_support import protocol_agents
from a2a_interop_support.processes import serve_app
from a2a_interop_support.protocol_agents import CHUNKS, PNG_BYTES, ShowcaseAgent, runtime_agent
from a2a_interop_support.sdk_callers import Caller, JsSdkCaller, PythonSdkCaller

from agent_runtime.protocols.a2a.auth import ANONYMOUS
from agent_runtime.protocols.a2a.card import AgentCardConfig
from agent_runtime.protocols.a2a.grpc_server import A2AGrpcServer
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore

BINDINGS = ["JSONRPC", "HTTP+JSON"]
CLIENTS: dict[str, Callable[[str, str], Caller]] = {"py": PythonSdkCaller, "js": JsSdkCaller}


@pytest.fixture(scope="module")
def anyio_backend() -> str:
    return "asyncio"


@pytest.fixture(scope="module")
async def urls() -> AsyncIterator[dict[str, str]]:
    any_media = AgentCardConfig(default_input_modes=["*/*"], default_output_modes=["*/*"])
    showcase = create_a2a_app(ShowcaseAgent(), store=InMemoryTaskStore(), card=any_media)
    runtime = create_a2a_app(runtime_agent(), store=InMemoryTaskStore())
    async with serve_app(showcase) as showcase_url, serve_app(runtime) as runtime_url:
        servers = []
        for app, url in ((showcase, showcase_url), (runtime, runtime_url)):
            server = A2AGrpcServer(app.state.handler, http_base_url=url)
            await server.start()
            app.state.a2a.grpc_url = server.url()  # the card advertises all three bindings
            servers.append(server)
        try:
            yield {"showcase": showcase_url, "runtime": runtime_url}
        finally:
            for server in servers:
                await server.stop(None)


KINDS = [(c, b) for c in CLIENTS for b in BINDINGS] + [("py", "GRPC")]


@pytest.fixture(params=KINDS, ids=lambda p: f"{p[0]}-{p[1]}")
def client_kind(request: pytest.FixtureRequest) -> tuple[str, str]:
    kind: tuple[str, str] = request.param
    return kind


@pytest.fixture
def showcase(urls: dict[str, str], client_kind: tuple[str, str]) -> Caller:
    return CLIENTS[client_kind[0]](urls["showcase"], client_kind[1])


@pytest.fixture
def runtime(urls: dict[str, str], client_kind: tuple[str, str]) -> Caller:
    return CLIENTS[client_kind[0]](urls["runtime"], client_kind[1])


def request(
    *parts: dict[str, Any],
    task: dict[str, Any] | None = None,
    **message: Any,
) -> dict[str, Any]:
    """A SendMessageRequest in ProtoJSON; ``task`` continues that task."""
    body: dict[str, Any] = {
        "messageId": str(uuid.uuid4()),
        "role": "ROLE_USER",
        "parts": list(parts),
    }
    if task is not None:
        body["taskId"] = task["id"]
        body["contextId"] = task["contextId"]
    body.update(message)
    return {"message": body}


def text(value: str) -> dict[str, Any]:
    return {"text": value}


def state(task: dict[str, Any]) -> str:
    return str(task["status"]["state"])


def status_text(task: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in task["status"].get("message", {}).get("parts", []))


def status_data(task: dict[str, Any]) -> list[Any]:
    return [p["data"] for p in task["status"].get("message", {}).get("parts", []) if "data" in p]


@pytest.mark.anyio
async def test_agent_reads_ids_metadata_parts_and_referenced_tasks(showcase: Caller) -> None:
    earlier = (await showcase.send(request(text("reject")))).get("task")
    assert earlier is not None
    message_id = str(uuid.uuid4())
    sent = request(
        text("inspect this"),
        {"data": {"nested": {"n": [1, 2]}, "flag": True}, "mediaType": "application/json"},
        {
            "url": "https://example.com/doc.pdf",
            "filename": "doc.pdf",
            "mediaType": "application/pdf",
        },
        {"raw": base64.b64encode(b"\x00\x01bytes").decode(), "filename": "b.bin"},
        messageId=message_id,
        metadata={"trace": "abc", "depth": {"a": 1}},
        referenceTaskIds=[earlier["id"], "no-such-task"],
    )
    sent["metadata"] = {"requestLevel": 1}
    result = await showcase.send(sent)
    task = result["task"]
    assert state(task) == "TASK_STATE_COMPLETED"
    seen = task["artifacts"][0]["parts"][0]["data"]
    assert seen["messageId"] == message_id
    assert seen["taskId"] == task["id"] == seen["messageTaskId"]
    assert seen["contextId"] == task["contextId"]
    assert seen["metadata"] == {"trace": "abc", "depth": {"a": 1}}
    assert seen["requestMetadata"] == {"requestLevel": 1}
    assert seen["principal"] == ANONYMOUS
    assert seen["continuesTask"] is False
    assert seen["referenceTaskIds"] == [earlier["id"], "no-such-task"]
    assert seen["referencedTasks"] == [{"id": earlier["id"], "state": "TASK_STATE_REJECTED"}]
    parts = seen["parts"]
    assert parts[0]["text"] == "inspect this"
    assert parts[1]["data"] == {"nested": {"n": [1, 2]}, "flag": True}
    assert parts[1]["mediaType"] == "application/json"
    assert (parts[2]["url"], parts[2]["filename"]) == ("https://example.com/doc.pdf", "doc.pdf")
    assert parts[2]["mediaType"] == "application/pdf"
    assert base64.b64decode(parts[3]["raw"]) == b"\x00\x01bytes"
    assert parts[3]["filename"] == "b.bin"


@pytest.mark.anyio
async def test_named_artifacts_with_file_url_and_data_parts_arrive_intact(
    showcase: Caller,
) -> None:
    task = (await showcase.send(request(text("artifacts"))))["task"]
    assert state(task) == "TASK_STATE_COMPLETED"
    by_id = {a["artifactId"]: a for a in task["artifacts"]}
    assert list(by_id) == ["report", "image", "link"]
    report = by_id["report"]
    assert report["name"] == "report" and report["description"] == "text and data"
    assert report["metadata"] == {"kind": "report"}
    assert report["parts"] == [{"text": "summary"}, {"data": {"total": 3, "items": ["a", "b"]}}]
    image = by_id["image"]["parts"][0]
    assert base64.b64decode(image["raw"]) == PNG_BYTES
    assert (image["filename"], image["mediaType"]) == ("pic.png", "image/png")
    link = by_id["link"]["parts"][0]
    assert link == {
        "url": "https://example.com/f.pdf",
        "filename": "f.pdf",
        "mediaType": "application/pdf",
    }


@pytest.mark.anyio
async def test_streamed_chunks_arrive_in_order_with_append_and_last_chunk(
    showcase: Caller,
) -> None:
    events = await showcase.stream(request(text("chunks")))
    assert "task" in events[0]
    chunks = [e["artifactUpdate"] for e in events if "artifactUpdate" in e]
    got = [
        (
            c["artifact"]["artifactId"],
            c["artifact"]["parts"],
            c.get("append", False),
            c.get("lastChunk", False),
        )
        for c in chunks
    ]
    assert got == CHUNKS
    assert [c["artifact"].get("name") for c in chunks] == ["log", "table", None, None, None]
    assert state(events[-1]["statusUpdate"]) == "TASK_STATE_COMPLETED"
    # The task as stored holds each artifact with its chunks' parts appended, in order.
    blocking = (await showcase.send(request(text("chunks"))))["task"]
    artifacts = {a["artifactId"]: a["parts"] for a in blocking["artifacts"]}
    assert artifacts["log"] == [
        {"text": "line 1\n"},
        {"text": "line 2\n"},
        {"text": "line 3\n"},
        {"data": {"lines": 3}},
    ]
    assert artifacts["table"] == [{"data": {"row": 1}}, {"data": {"row": 2}}]


@pytest.mark.anyio
async def test_agent_answers_with_a_message_and_no_task(showcase: Caller) -> None:
    result = await showcase.send(request(text("message")))
    assert "task" not in result
    message = result["message"]
    assert message["role"] == "ROLE_AGENT"
    assert message["parts"] == [{"text": "just a message"}, {"data": {"noTask": True}}]
    assert not message.get("taskId")
    events = await showcase.stream(request(text("message")))
    assert len(events) == 1 and events[0]["message"]["parts"][0] == {"text": "just a message"}


@pytest.mark.anyio
async def test_agent_rejects_a_request(showcase: Caller) -> None:
    task = (await showcase.send(request(text("reject"))))["task"]
    assert state(task) == "TASK_STATE_REJECTED"
    assert status_text(task) == "I will not do that"


@pytest.mark.anyio
async def test_auth_required_then_the_follow_up_message_resumes_the_agent(
    showcase: Caller,
) -> None:
    first = (await showcase.send(request(text("auth"))))["task"]
    assert state(first) == "TASK_STATE_AUTH_REQUIRED"
    assert status_text(first) == "Sign in to the calendar first"
    assert status_data(first) == [{"authUrl": "https://example.com/login"}]
    events = await showcase.stream(request(text("token-123"), task=first))
    assert "task" in events[0] and events[0]["task"]["id"] == first["id"]
    final = events[-1]["statusUpdate"]
    assert state(final) == "TASK_STATE_COMPLETED"
    assert status_text(final) == "authorised: token-123"


@pytest.mark.anyio
async def test_input_required_then_the_next_message_continues_the_task(
    showcase: Caller,
) -> None:
    first = (await showcase.send(request(text("input"))))["task"]
    assert state(first) == "TASK_STATE_INPUT_REQUIRED"
    assert status_text(first) == "Which colour?"
    second = (await showcase.send(request(text("blue"), task=first)))["task"]
    assert second["id"] == first["id"]
    assert state(second) == "TASK_STATE_COMPLETED"
    assert status_text(second) == "colour: blue"


@pytest.mark.anyio
async def test_runtime_tool_needing_approval_waits_in_auth_required_until_approved(
    runtime: Caller,
) -> None:
    path = f"/tmp/{uuid.uuid4()}"
    first = (await runtime.send(request(text(f"delete {path}"))))["task"]
    assert state(first) == "TASK_STATE_AUTH_REQUIRED"
    assert "delete_file" in status_text(first)
    [asked] = status_data(first)
    assert asked["approvalRequest"]["tool"] == "delete_file"
    assert asked["approvalRequest"]["arguments"] == {"path": path}
    assert path not in protocol_agents.DELETED
    second = (await runtime.send(request({"data": {"approved": True}}, task=first)))["task"]
    assert state(second) == "TASK_STATE_COMPLETED"
    assert status_text(second) == f"done: deleted {path}"
    assert path in protocol_agents.DELETED


@pytest.mark.anyio
async def test_runtime_tool_call_denied_by_the_follow_up_does_not_run(runtime: Caller) -> None:
    path = f"/tmp/{uuid.uuid4()}"
    first = (await runtime.send(request(text(f"delete {path}"))))["task"]
    assert state(first) == "TASK_STATE_AUTH_REQUIRED"
    events = await runtime.stream(request(text("no, keep it"), task=first))
    final = events[-1]["statusUpdate"]
    assert state(final) == "TASK_STATE_COMPLETED"
    assert "denied" in status_text(final)
    assert path not in protocol_agents.DELETED


@pytest.mark.anyio
async def test_runtime_tool_raising_input_required_asks_the_question(runtime: Caller) -> None:
    first = (await runtime.send(request(text("ask which file?"))))["task"]
    assert state(first) == "TASK_STATE_INPUT_REQUIRED"
    assert status_text(first) == "which file?"
    second = (await runtime.send(request(text("plain reply"), task=first)))["task"]
    assert state(second) == "TASK_STATE_COMPLETED"
    assert status_text(second) == "you said: plain reply"


@pytest.mark.anyio
async def test_runtime_tool_raising_rejected_rejects_the_task(runtime: Caller) -> None:
    task = (await runtime.send(request(text("refuse not allowed here"))))["task"]
    assert state(task) == "TASK_STATE_REJECTED"
    assert status_text(task) == "not allowed here"
