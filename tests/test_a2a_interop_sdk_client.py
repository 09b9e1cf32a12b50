"""The official a2a-sdk 1.3 client against our A2A server, on both bindings.

Our node runs under uvicorn on a free loopback port (in-process) with the echo agent; the SDK
client discovers it from its card and speaks to it exactly as it would to an SDK server.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    GetTaskRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError, TaskNotFoundError
from a2a_interop_support.echo_model import EchoModel
from a2a_interop_support.processes import serve_app

from agent_runtime.agent import Agent
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore

BINDINGS = ["JSONRPC", "HTTP+JSON"]


@pytest.fixture
async def our_url() -> AsyncIterator[str]:
    agent = Agent(EchoModel(), name="Echo Agent", description="Echoes text back")
    app = create_a2a_app(agent, store=InMemoryTaskStore())
    async with serve_app(app) as url:
        yield url


@pytest.fixture(params=BINDINGS)
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _request(text: str, *, return_immediately: bool = False, context_id: str = "") -> Any:
    request = SendMessageRequest(
        message=Message(
            message_id=str(uuid.uuid4()),
            role=Role.ROLE_USER,
            parts=[Part(text=text)],
            context_id=context_id,
        )
    )
    request.configuration.return_immediately = return_immediately
    return request


async def _sdk_client(url: str, binding: str, *, streaming: bool) -> Any:
    config = ClientConfig(streaming=streaming, supported_protocol_bindings=[binding])
    return await create_client(url, config)


@pytest.mark.anyio
async def test_sdk_client_sends_a_message_and_gets_the_completed_task(
    our_url: str, binding: str
) -> None:
    client = await _sdk_client(our_url, binding, streaming=False)
    try:
        events = [e async for e in client.send_message(_request("hello sdk"))]
    finally:
        await client.close()
    assert len(events) == 1 and events[0].HasField("task")
    task = events[0].task
    assert task.status.state == TaskState.TASK_STATE_COMPLETED
    assert "".join(p.text for p in task.artifacts[0].parts) == "echo: hello sdk"


@pytest.mark.anyio
async def test_sdk_client_streams_until_completed(our_url: str, binding: str) -> None:
    client = await _sdk_client(our_url, binding, streaming=True)
    try:
        events: list[StreamResponse] = [e async for e in client.send_message(_request("stream"))]
    finally:
        await client.close()
    kinds = [e.WhichOneof("payload") for e in events]
    assert kinds[0] == "task"
    assert "artifact_update" in kinds
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED
    final_chunks = [
        e.artifact_update
        for e in events
        if e.HasField("artifact_update") and e.artifact_update.last_chunk
    ]
    assert "".join(p.text for p in final_chunks[-1].artifact.parts) == "echo: stream"


@pytest.mark.anyio
async def test_sdk_client_gets_and_lists_tasks(our_url: str, binding: str) -> None:
    client = await _sdk_client(our_url, binding, streaming=False)
    try:
        first = [e async for e in client.send_message(_request("one"))][0].task
        ids = {first.id}
        for i in range(3):
            more = [
                e async for e in client.send_message(_request(f"n{i}", context_id=first.context_id))
            ][0].task
            ids.add(more.id)
        got = await client.get_task(GetTaskRequest(id=first.id, history_length=1))
        assert got.id == first.id and len(got.history) == 1
        listed: list[str] = []
        token = ""
        for _ in range(10):
            page = await client.list_tasks(
                ListTasksRequest(context_id=first.context_id, page_size=2, page_token=token)
            )
            assert len(page.tasks) <= 2
            listed.extend(t.id for t in page.tasks)
            token = page.next_page_token
            if not token:
                break
        assert sorted(listed) == sorted(ids)
        with pytest.raises(TaskNotFoundError):
            await client.get_task(GetTaskRequest(id="no-such-task"))
    finally:
        await client.close()


@pytest.mark.anyio
async def test_sdk_client_cancels_a_running_task(our_url: str, binding: str) -> None:
    client = await _sdk_client(our_url, binding, streaming=False)
    try:
        events = [
            e async for e in client.send_message(_request("slow:sdk", return_immediately=True))
        ]
        task = events[0].task
        assert task.status.state in (
            TaskState.TASK_STATE_SUBMITTED,
            TaskState.TASK_STATE_WORKING,
        )
        canceled = await client.cancel_task(CancelTaskRequest(id=task.id))
        assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(CancelTaskRequest(id=task.id))
    finally:
        await client.close()


@pytest.mark.anyio
async def test_sdk_client_subscribes_and_sees_the_snapshot_then_the_end(
    our_url: str, binding: str
) -> None:
    client = await _sdk_client(our_url, binding, streaming=True)
    canceller = await _sdk_client(our_url, binding, streaming=False)
    try:
        task = [
            e async for e in canceller.send_message(_request("slow:sub", return_immediately=True))
        ][0].task
        kinds: list[str] = []
        last_state = None
        with anyio.fail_after(10):
            async for event in client.subscribe(SubscribeToTaskRequest(id=task.id)):
                kind = event.WhichOneof("payload")
                kinds.append(kind)
                if kind == "task":
                    assert event.task.id == task.id
                    await canceller.cancel_task(CancelTaskRequest(id=task.id))
                elif kind == "status_update":
                    last_state = event.status_update.status.state
        assert kinds[0] == "task"
        assert last_state == TaskState.TASK_STATE_CANCELED
    finally:
        await client.close()
        await canceller.close()
