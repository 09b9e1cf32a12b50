"""The gRPC binding of our node, with our own client: every operation, streams, auth, errors.

Our node (the echo agent) serves HTTP with uvicorn and gRPC with ``grpc.aio`` on free loopback
ports in this process, over one handler; the client finds the gRPC interface in the card.
Raw calls (bytes in, bytes out) check what a hostile peer gets for malformed input, and that a
client leaving mid-stream leaves nothing running on the node.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from typing import Any

import anyio
import grpc
import grpc.aio
import pytest
from a2a_interop_support.echo_model import EchoModel
from a2a_interop_support.processes import serve_app
from google.rpc import error_details_pb2, status_pb2

from agent_runtime.agent import Agent
from agent_runtime.protocols.a2a.auth import A2AAuthConfig
from agent_runtime.protocols.a2a.client import A2AClient
from agent_runtime.protocols.a2a.errors import (
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnauthenticatedError,
    UnsupportedOperationError,
)
from agent_runtime.protocols.a2a.grpc_convert import decode_answer, encode
from agent_runtime.protocols.a2a.grpc_server import A2AGrpcServer
from agent_runtime.protocols.a2a.handler import A2ARequestHandler
from agent_runtime.protocols.a2a.push import PushConfig
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore
from agent_runtime.protocols.a2a.types import StreamResponse, TaskState

TOKEN = "grpc-secret"


@pytest.fixture
async def served() -> AsyncIterator[tuple[str, str, A2ARequestHandler]]:
    """(HTTP base URL, gRPC target, handler) of our node, with bearer auth for ``alice``."""
    agent = Agent(EchoModel(), name="Echo Agent", description="Echoes text back")
    app = create_a2a_app(
        agent,
        store=InMemoryTaskStore(),
        auth=A2AAuthConfig(bearer_tokens={TOKEN: "alice", "other": "bob"}),
        push=PushConfig(allow_private_urls=True),
    )
    async with serve_app(app) as url:
        server = A2AGrpcServer(app.state.handler, http_base_url=url)
        await server.start()
        app.state.a2a.grpc_url = server.url()
        try:
            yield url, str(server.url()), app.state.handler
        finally:
            await server.stop(None)


@pytest.fixture
def node(served: tuple[str, str, A2ARequestHandler]) -> tuple[str, str]:
    """(HTTP base URL, gRPC target) of the node above."""
    return served[0], served[1]


def _client(url: str, token: str = TOKEN) -> A2AClient:
    return A2AClient(url, bearer_token=token, bindings=["GRPC"])


async def _raw_call(
    target: str, method: str, body: bytes, metadata: list[tuple[str, str]]
) -> grpc.aio.AioRpcError:
    """Call ``method`` with raw bytes; return the error status it must answer with."""
    async with grpc.aio.insecure_channel(target) as channel:
        rpc = channel.unary_unary(f"/lf.a2a.v1.A2AService/{method}")
        with pytest.raises(grpc.aio.AioRpcError) as caught:
            await rpc(body, metadata=metadata, timeout=10)
    return caught.value


def _error_info(error: grpc.aio.AioRpcError) -> error_details_pb2.ErrorInfo:
    status = status_pb2.Status()
    for key, value in error.trailing_metadata() or ():
        if key == "grpc-status-details-bin":
            status.ParseFromString(value)
    info = error_details_pb2.ErrorInfo()
    assert status.details and status.details[0].Unpack(info)
    return info


def _varint(value: int) -> bytes:
    out = bytearray()
    while True:
        byte, value = value & 0x7F, value >> 7
        out.append(byte | (0x80 if value else 0))
        if not value:
            return bytes(out)


def _field(tag: int, payload: bytes) -> bytes:
    return bytes([tag]) + _varint(len(payload)) + payload


def _deep_send_request(levels: int) -> bytes:
    """A SendMessageRequest whose message metadata nests ``levels`` Structs deep (built by
    hand: protobuf's own encoder refuses to write it)."""
    struct = b""
    for _ in range(levels):
        value = _field(0x2A, struct)  # Value.struct_value
        struct = _field(0x0A, _field(0x0A, b"k") + _field(0x12, value))  # Struct.fields["k"]
    message = encode("Message", {"messageId": "m1", "role": "ROLE_USER", "parts": [{"text": "hi"}]})
    return _field(0x12, message + _field(0x32, struct))  # SendMessageRequest.message


_GOOD_METADATA = [("authorization", f"Bearer {TOKEN}"), ("a2a-version", "1.0")]


@pytest.mark.anyio
async def test_card_lists_all_three_interfaces_and_client_picks_grpc(
    node: tuple[str, str],
) -> None:
    url, target = node
    async with _client(url) as client:
        card = await client.get_card()
        bindings = [(i.protocol_binding, i.url) for i in card.supported_interfaces]
        assert [b for b, _ in bindings] == ["JSONRPC", "HTTP+JSON", "GRPC"]
        assert bindings[2][1] == target
        assert (await client.interface()).protocol_binding == "GRPC"


@pytest.mark.anyio
async def test_send_get_list_cancel_over_grpc(node: tuple[str, str]) -> None:
    url, _ = node
    async with _client(url) as client:
        task = await client.send_message("hello grpc")
        assert task.status.state == TaskState.COMPLETED
        assert task.artifacts[0].parts[0].text == "echo: hello grpc"
        fetched = await client.get_task(task.id, history_length=1)
        assert fetched.id == task.id and len(fetched.history) == 1
        page = await client.list_tasks(context_id=task.context_id)
        assert [t.id for t in page.tasks] == [task.id]
        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(task.id)
        slow = await client.send_message("slow: wait", return_immediately=True)
        canceled = await client.cancel_task(slow.id)
        assert canceled.status.state == TaskState.CANCELED


@pytest.mark.anyio
async def test_streams_are_server_streams_with_every_event(node: tuple[str, str]) -> None:
    url, _ = node
    async with _client(url) as client:
        events = [e async for e in client.send_message_streaming("stream me")]
        assert events[0].task is not None
        assert events[-1].status_update is not None
        assert events[-1].status_update.status.state == TaskState.COMPLETED
        chunks = [e.artifact_update for e in events if e.artifact_update is not None]
        assert chunks, "artifact chunks must arrive over the stream"
        asked = await client.send_message("ask: which colour?")
        assert asked.status.state == TaskState.INPUT_REQUIRED
        answered = await client.send_and_wait("blue", task_id=asked.id)
        assert answered.status.state == TaskState.COMPLETED
        with pytest.raises(UnsupportedOperationError):
            async for _ in client.subscribe(answered.id):
                pass


@pytest.mark.anyio
async def test_subscribe_follows_a_running_task_to_the_end(node: tuple[str, str]) -> None:
    url, _ = node
    async with _client(url) as client:
        slow = await client.send_message("slow: follow", return_immediately=True)
        seen: list[Any] = []
        first = anyio.Event()

        async def follow() -> None:
            async for event in client.subscribe(slow.id):
                seen.append(event)
                first.set()

        async with anyio.create_task_group() as tg:
            tg.start_soon(follow)
            with anyio.fail_after(10):
                await first.wait()
            await client.cancel_task(slow.id)
        assert seen[0].task is not None and seen[0].task.id == slow.id
        assert seen[-1].status_update is not None
        assert seen[-1].status_update.status.state == TaskState.CANCELED


@pytest.mark.anyio
async def test_push_config_operations_over_grpc(node: tuple[str, str]) -> None:
    url, _ = node
    async with _client(url) as client:
        task = await client.send_message("push me")
        created = await client.create_push_config(
            task.id, "http://127.0.0.1:9/hook", token="tok", config_id="cfg1"
        )
        assert created.id == "cfg1" and created.task_id == task.id
        got = await client.get_push_config(task.id, "cfg1")
        assert got.url == "http://127.0.0.1:9/hook"
        listed = await client.list_push_configs(task.id)
        assert [c.id for c in listed.configs] == ["cfg1"]
        await client.delete_push_config(task.id, "cfg1")
        with pytest.raises(TaskNotFoundError):
            await client.get_push_config(task.id, "cfg1")


@pytest.mark.anyio
async def test_errors_carry_their_a2a_class_and_principals_stay_apart(
    node: tuple[str, str],
) -> None:
    url, _ = node
    async with _client(url) as alice, _client(url, "other") as bob:
        task = await alice.send_message("mine")
        with pytest.raises(TaskNotFoundError) as caught:
            await bob.get_task(task.id)
        assert caught.value.metadata == {"taskId": task.id}
        with pytest.raises(InvalidParamsError):
            await alice.list_tasks(page_size=0)
        card = await alice.get_extended_card()
        assert [i.protocol_binding for i in card.supported_interfaces][-1] == "GRPC"
    async with _client(url, "wrong") as stranger:
        with pytest.raises(UnauthenticatedError):
            await stranger.get_task("anything")


@pytest.mark.anyio
async def test_hostile_grpc_input_gets_clear_status_codes(node: tuple[str, str]) -> None:
    _, target = node
    no_auth = await _raw_call(target, "GetTask", b"", [("a2a-version", "1.0")])
    assert no_auth.code() == grpc.StatusCode.UNAUTHENTICATED
    assert _error_info(no_auth).reason == "UNAUTHENTICATED"

    garbage = await _raw_call(target, "SendMessage", b"\xff\xff\xff\x07garbage", _GOOD_METADATA)
    assert garbage.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "SendMessageRequest" in (garbage.details() or "")
    assert _error_info(garbage).domain == "a2a-protocol.org"

    body = _deep_send_request(levels=120)
    too_deep = await _raw_call(target, "SendMessage", body, _GOOD_METADATA)
    assert too_deep.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "too deep" in (too_deep.details() or "").lower()

    no_parts = encode("SendMessageRequest", {"message": {"messageId": "m2", "role": "ROLE_USER"}})
    empty = await _raw_call(target, "SendMessage", no_parts, _GOOD_METADATA)
    assert empty.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert _error_info(empty).reason == "INVALID_PARAMS"

    old = await _raw_call(
        target, "GetTask", b"", [("authorization", f"Bearer {TOKEN}"), ("a2a-version", "0.3")]
    )
    assert old.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert _error_info(old).reason == "VERSION_NOT_SUPPORTED"

    # The node still answers properly after all that.
    async with grpc.aio.insecure_channel(target) as channel:
        rpc = channel.unary_unary("/lf.a2a.v1.A2AService/ListTasks")
        raw = await rpc(b"", metadata=_GOOD_METADATA, timeout=10)
        assert isinstance(raw, bytes)


async def _first_event(call: Any) -> StreamResponse:
    """The first event of a raw server stream, decoded."""
    with anyio.fail_after(15):
        raw = await call.read()
    assert isinstance(raw, bytes), f"the stream ended early: {raw!r}"
    return StreamResponse.model_validate(decode_answer("StreamResponse", raw, "event"))


async def _stream_gone(handler: A2ARequestHandler, task_id: str) -> None:
    """Wait until no stream of this node follows ``task_id`` and no gRPC call is served."""
    with anyio.fail_after(15):
        while handler.events.has_subscribers(task_id) or _grpc_calls_running():  # noqa: ASYNC110
            await anyio.sleep(0.02)


# What grpc.aio names the coroutine of the task serving one call (the test asserts it finds an
# open call first, so a grpcio that renames it fails loudly rather than passing vacuously).
_SERVER_CALL_CORO = "_handle_exceptions"


def _grpc_calls_running() -> list[asyncio.Task[Any]]:
    """The asyncio tasks of this loop serving a gRPC call."""
    return [
        t
        for t in asyncio.all_tasks()
        if not t.done()
        and getattr(getattr(t.get_coro(), "cr_code", None), "co_name", None) == _SERVER_CALL_CORO
    ]


@pytest.mark.anyio
async def test_a_client_that_leaves_mid_stream_leaves_nothing_behind(
    served: tuple[str, str, A2ARequestHandler], caplog: pytest.LogCaptureFixture
) -> None:
    """A gRPC client dropping a stream (its call canceled, or its connection closed) ends that
    stream on the node: no subscriber, no call left running, nothing logged; the task it
    followed runs on, and the node answers the next requests as before."""
    caplog.set_level(logging.WARNING)
    url, target, handler = served
    body = encode(
        "SendMessageRequest",
        {"message": {"messageId": "m-drop", "role": "ROLE_USER", "parts": [{"text": "slow: x"}]}},
    )
    # 1. SendStreamingMessage, then the whole connection goes away.
    channel = grpc.aio.insecure_channel(target)
    stream = channel.unary_stream("/lf.a2a.v1.A2AService/SendStreamingMessage")
    first = await _first_event(stream(body, metadata=_GOOD_METADATA))
    assert first.task is not None
    task_id = first.task.id
    assert handler.events.has_subscribers(task_id) and _grpc_calls_running()
    await channel.close(grace=None)
    await _stream_gone(handler, task_id)

    # 2. SubscribeToTask on the same (still running) task, then the call alone is canceled.
    async with grpc.aio.insecure_channel(target) as channel:
        subscribe = channel.unary_stream("/lf.a2a.v1.A2AService/SubscribeToTask")
        call = subscribe(encode("SubscribeToTaskRequest", {"id": task_id}), metadata=_GOOD_METADATA)
        snapshot = await _first_event(call)
        assert snapshot.task is not None and snapshot.task.id == task_id
        assert handler.events.has_subscribers(task_id) and _grpc_calls_running()
        call.cancel()
        await _stream_gone(handler, task_id)

    # The task did not end with its streams, and the node serves the next calls.
    async with _client(url) as client:
        running = await client.get_task(task_id)
        assert running.status.state == TaskState.WORKING
        canceled = await client.cancel_task(task_id)
        assert canceled.status.state == TaskState.CANCELED
        task = await client.send_message("after the drop")
        assert task.status.state == TaskState.COMPLETED
        events = [e async for e in client.send_message_streaming("stream again")]
        assert events[-1].status_update is not None
        assert events[-1].status_update.status.state == TaskState.COMPLETED
    problems = [r for r in caplog.get_records("call") if r.levelno >= logging.WARNING]
    assert problems == [], [r.getMessage() for r in problems]
