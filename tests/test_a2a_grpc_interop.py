"""gRPC interop with the official a2a-sdk 1.3: its gRPC client against our node (every
operation: send, stream, get, list, cancel, subscribe, push configs, errors as the SDK's error
classes), and our client against its gRPC server (a subprocess whose card lists gRPC first)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import anyio
import grpc.aio
import pytest
from a2a.client import ClientConfig, create_client
from a2a.types.a2a_pb2 import (
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTasksRequest,
    Message,
    Part,
    Role,
    SendMessageConfiguration,
    SendMessageRequest,
    StreamResponse,
    SubscribeToTaskRequest,
    TaskPushNotificationConfig,
    TaskState,
)
from a2a.utils.errors import TaskNotCancelableError as SDKTaskNotCancelableError
from a2a.utils.errors import TaskNotFoundError as SDKTaskNotFoundError
from a2a_interop_support.echo_model import EchoModel
from a2a_interop_support.processes import sdk_grpc_echo_server, serve_app

from agent_runtime.agent import Agent
from agent_runtime.protocols.a2a.client import A2AClient
from agent_runtime.protocols.a2a.errors import TaskNotFoundError
from agent_runtime.protocols.a2a.grpc_server import A2AGrpcServer
from agent_runtime.protocols.a2a.push import PushConfig
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore
from agent_runtime.protocols.a2a.types import TaskState as OurState


@pytest.fixture
async def our_url() -> AsyncIterator[str]:
    agent = Agent(EchoModel(), name="Echo Agent", description="Echoes text back")
    app = create_a2a_app(agent, store=InMemoryTaskStore(), push=PushConfig(allow_private_urls=True))
    async with serve_app(app) as url:
        server = A2AGrpcServer(app.state.handler, http_base_url=url)
        await server.start()
        app.state.a2a.grpc_url = server.url()
        try:
            yield url
        finally:
            await server.stop(None)


def _request(text: str, *, return_immediately: bool = False) -> Any:
    return SendMessageRequest(
        message=Message(message_id=str(uuid.uuid4()), role=Role.ROLE_USER, parts=[Part(text=text)]),
        configuration=SendMessageConfiguration(return_immediately=return_immediately),
    )


async def _sdk_grpc_client(url: str, *, streaming: bool) -> Any:
    config = ClientConfig(
        streaming=streaming,
        supported_protocol_bindings=["GRPC"],
        grpc_channel_factory=grpc.aio.insecure_channel,
    )
    return await create_client(url, config)


@pytest.mark.anyio
async def test_sdk_grpc_client_sends_gets_lists_and_streams(our_url: str) -> None:
    client = await _sdk_grpc_client(our_url, streaming=False)
    try:
        events = [e async for e in client.send_message(_request("hello sdk grpc"))]
        task = events[-1].task
        assert task.status.state == TaskState.TASK_STATE_COMPLETED
        assert task.artifacts[0].parts[0].text == "echo: hello sdk grpc"
        got = await client.get_task(GetTaskRequest(id=task.id))
        assert got.id == task.id
        listed = await client.list_tasks(ListTasksRequest())
        assert task.id in [t.id for t in listed.tasks]
        with pytest.raises(SDKTaskNotFoundError):
            await client.get_task(GetTaskRequest(id="no-such-task"))
    finally:
        await client.close()
    streaming = await _sdk_grpc_client(our_url, streaming=True)
    try:
        events = [e async for e in streaming.send_message(_request("stream it"))]
    finally:
        await streaming.close()
    assert events[0].HasField("task")
    assert events[-1].status_update.status.state == TaskState.TASK_STATE_COMPLETED


@pytest.mark.anyio
async def test_our_client_against_the_sdk_grpc_server() -> None:
    with sdk_grpc_echo_server() as url:
        async with A2AClient(url) as client:
            assert (await client.interface()).protocol_binding == "GRPC"
            task = await client.send_message("hello sdk server")
            assert task.status.state == OurState.COMPLETED
            assert "".join(p.text or "" for p in task.artifacts[0].parts) == (
                "echo: hello sdk server"
            )
            assert (await client.get_task(task.id)).id == task.id
            events = [e async for e in client.send_message_streaming("stream from sdk")]
            assert events[-1].status_update is not None
            assert events[-1].status_update.status.state == OurState.COMPLETED
            asked = await client.send_message("ask:name?")
            assert asked.status.state == OurState.INPUT_REQUIRED
            with pytest.raises(TaskNotFoundError):
                await client.get_task("no-such-task")


@pytest.mark.anyio
async def test_sdk_grpc_client_cancels_and_follows_a_running_task(our_url: str) -> None:
    client = await _sdk_grpc_client(our_url, streaming=True)
    polling = await _sdk_grpc_client(our_url, streaming=False)
    try:
        started = [
            e
            async for e in polling.send_message(
                _request("slow: follow me", return_immediately=True)
            )
        ]
        task = started[-1].task
        assert task.status.state in (
            TaskState.TASK_STATE_SUBMITTED,
            TaskState.TASK_STATE_WORKING,
        )
        seen: list[StreamResponse] = []
        first = anyio.Event()

        async def follow() -> None:
            async for event in client.subscribe(SubscribeToTaskRequest(id=task.id)):
                seen.append(event)
                first.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            with anyio.fail_after(15):
                await first.wait()
            canceled = await polling.cancel_task(CancelTaskRequest(id=task.id))
            assert canceled.id == task.id
            assert canceled.status.state == TaskState.TASK_STATE_CANCELED
        # The subscription opened with the task as it stood and ended with its cancellation.
        assert seen[0].HasField("task") and seen[0].task.id == task.id
        assert seen[-1].status_update.task_id == task.id
        assert seen[-1].status_update.status.state == TaskState.TASK_STATE_CANCELED
        got = await polling.get_task(GetTaskRequest(id=task.id))
        assert got.status.state == TaskState.TASK_STATE_CANCELED
        # A finished task cannot be canceled again, nor followed; unknown tasks are not found.
        with pytest.raises(SDKTaskNotCancelableError):
            await polling.cancel_task(CancelTaskRequest(id=task.id))
        with pytest.raises(SDKTaskNotFoundError):
            await polling.cancel_task(CancelTaskRequest(id="no-such-task"))
        with pytest.raises(SDKTaskNotFoundError):
            async for _ in client.subscribe(SubscribeToTaskRequest(id="no-such-task")):
                pass
    finally:
        await client.close()
        await polling.close()


@pytest.mark.anyio
async def test_sdk_grpc_client_manages_push_configs(our_url: str) -> None:
    client = await _sdk_grpc_client(our_url, streaming=False)
    try:
        events = [e async for e in client.send_message(_request("push target"))]
        task_id = events[-1].task.id
        hook = "http://127.0.0.1:9/hook"
        created = await client.create_task_push_notification_config(
            TaskPushNotificationConfig(task_id=task_id, id="cfg-1", url=hook, token="tok-1")
        )
        assert (created.task_id, created.id, created.url, created.token) == (
            task_id,
            "cfg-1",
            hook,
            "tok-1",
        )
        got = await client.get_task_push_notification_config(
            GetTaskPushNotificationConfigRequest(task_id=task_id, id="cfg-1")
        )
        # Stored secrets are not echoed back on reads (the create answer repeats the caller's).
        assert (got.url, got.token) == (hook, "")
        await client.create_task_push_notification_config(
            TaskPushNotificationConfig(task_id=task_id, id="cfg-2", url=hook + "2")
        )
        listed = await client.list_task_push_notification_configs(
            ListTaskPushNotificationConfigsRequest(task_id=task_id)
        )
        assert sorted(c.id for c in listed.configs) == ["cfg-1", "cfg-2"]
        await client.delete_task_push_notification_config(
            DeleteTaskPushNotificationConfigRequest(task_id=task_id, id="cfg-1")
        )
        listed = await client.list_task_push_notification_configs(
            ListTaskPushNotificationConfigsRequest(task_id=task_id)
        )
        assert [c.id for c in listed.configs] == ["cfg-2"]
        with pytest.raises(SDKTaskNotFoundError):
            await client.get_task_push_notification_config(
                GetTaskPushNotificationConfigRequest(task_id=task_id, id="cfg-1")
            )
        with pytest.raises(SDKTaskNotFoundError):
            await client.create_task_push_notification_config(
                TaskPushNotificationConfig(task_id="no-such-task", url=hook)
            )
    finally:
        await client.close()
