"""Telemetry of A2A requests on real loopback HTTP: the client span injects ``traceparent`` (JSON-RPC
and HTTP+JSON, unary and streaming), the node's server span continues it and the task's agent
run is its child; a bad or absent header starts a new trace and is never an error; task states
and request durations are counted; no token, key or push credential reaches any span."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio
import httpx
import pytest
from a2a_support.agents import echo_agent, gated_agent
from a2a_support.fixtures import node
from a2a_support.net import text_message
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.trace import SpanKind
from telemetry_support import (
    Recorded,
    all_text,
    attrs,
    parent_of,
    span_id,
    spans_named,
    trace_id,
)

from agent_runtime.protocols.a2a.auth import A2AAuthConfig
from agent_runtime.protocols.a2a.client import A2AClient
from agent_runtime.protocols.a2a.push import PushConfig
from agent_runtime.protocols.a2a.types import (
    AuthenticationInfo,
    Task,
    TaskPushNotificationConfig,
    TaskState,
)
from agent_runtime.telemetry import span

pytestmark = pytest.mark.anyio

V1 = {"A2A-Version": "1.0", "Content-Type": "application/json"}


def _kind(spans: list[ReadableSpan], kind: SpanKind) -> list[ReadableSpan]:
    return [s for s in spans if s.kind == kind]


@asynccontextmanager
async def _echo_client(binding: str) -> AsyncIterator[A2AClient]:
    """A client of a node serving an echo agent, over ``binding``."""
    async with node(agent=echo_agent("echo")) as (base, _):
        async with A2AClient(base, bindings=[binding]) as client:
            yield client


def _request_chain(
    recorded: Recorded, method: str
) -> tuple[ReadableSpan, ReadableSpan, ReadableSpan]:
    """The ``caller`` span and the client and server spans of its one ``a2a {method}`` request,
    checked to be one trace, each the parent of the next."""
    caller = recorded.one("caller")
    named = recorded.named(f"a2a {method}")
    (client_span,) = _kind(named, SpanKind.CLIENT)
    (server_span,) = _kind(named, SpanKind.SERVER)
    assert parent_of(client_span) == span_id(caller)
    assert parent_of(server_span) == span_id(client_span)
    assert trace_id(client_span) == trace_id(server_span) == trace_id(caller)
    return caller, client_span, server_span


def _echo_run_under(recorded: Recorded, server_span: ReadableSpan) -> ReadableSpan:
    """The echo agent's one run, checked to be the child of ``server_span``."""
    run = recorded.one("invoke_agent echo")
    assert parent_of(run) == span_id(server_span)
    assert trace_id(run) == trace_id(server_span)
    return run


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_unary_call_is_one_trace_from_client_span_to_the_agent_run(
    binding: str,
    recorded: Recorded,
) -> None:
    async with _echo_client(binding) as client:
        with span("caller"):
            task = await client.send_message("hello")
        assert isinstance(task, Task) and task.status.state == TaskState.COMPLETED
        await spans_named(recorded, "a2a SendMessage", 2)
    _, client_span, server_span = _request_chain(recorded, "SendMessage")
    _echo_run_under(recorded, server_span)
    c, s = attrs(client_span), attrs(server_span)
    assert c["rpc.system"] == s["rpc.system"] == "a2a"
    assert c["rpc.method"] == s["rpc.method"] == "SendMessage"
    assert c["server.address"] == "127.0.0.1" and isinstance(c["server.port"], int)
    for a in (c, s):
        assert a["a2a.task.id"] == task.id
        assert a["a2a.context.id"] == task.context_id
        assert a["a2a.task.state"] == "TASK_STATE_COMPLETED"
    assert client_span.status.is_ok and server_span.status.is_ok
    assert not recorded.tracker.open


@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_a_stream_keeps_its_span_open_to_the_end_without_parenting_the_consumer(
    binding: str,
    recorded: Recorded,
) -> None:
    async with _echo_client(binding) as client:
        with span("caller"):
            states = []
            async for event in client.send_message_streaming("stream please"):
                with span("consumer"):
                    if event.status_update is not None:
                        states.append(event.status_update.status.state)
        assert states[-1] == TaskState.COMPLETED
        await spans_named(recorded, "a2a SendStreamingMessage", 2)
    caller, client_span, server_span = _request_chain(recorded, "SendStreamingMessage")
    run = _echo_run_under(recorded, server_span)
    # What the consumer does between events is the caller's, not the request's.
    for consumer in recorded.named("consumer"):
        assert parent_of(consumer) == span_id(caller)
    assert attrs(client_span)["a2a.task.state"] == "TASK_STATE_COMPLETED"
    assert attrs(server_span)["a2a.stream.events"] >= 2
    assert client_span.end_time is not None and client_span.end_time >= run.end_time  # type: ignore[operator]
    assert not recorded.tracker.open


@pytest.mark.parametrize("header", [None, "garbage", "00-zz-yy-01"])
async def test_a_bad_or_absent_traceparent_starts_a_new_trace_never_an_error(
    header: str | None,
    recorded: Recorded,
) -> None:
    async with node() as (base, http):
        headers = dict(V1)
        if header is not None:
            headers["traceparent"] = header
        body = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {"message": text_message("hi")},
        }
        response = await http.post(base + "/a2a/jsonrpc", json=body, headers=headers)
        assert response.status_code == 200
        assert "result" in response.json()
        (server_span,) = await spans_named(recorded, "a2a SendMessage")
    assert server_span.parent is None
    assert server_span.status.is_ok
    _echo_run_under(recorded, server_span)


async def test_a_valid_incoming_traceparent_is_continued(recorded: Recorded) -> None:
    trace_hex, parent_hex = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    async with node() as (base, http):
        headers = {**V1, "traceparent": f"00-{trace_hex}-{parent_hex}-01"}
        params = {"message": text_message("hi")}
        body = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": params}
        response = await http.post(base + "/a2a/jsonrpc", json=body, headers=headers)
        assert "result" in response.json()
        (server_span,) = await spans_named(recorded, "a2a SendMessage")
    assert trace_id(server_span) == int(trace_hex, 16)
    assert parent_of(server_span) == int(parent_hex, 16)


async def test_task_states_and_request_durations_are_counted(recorded: Recorded) -> None:
    async with node() as (base, _):
        async with A2AClient(base) as client:
            task = await client.send_message("count me")
            assert isinstance(task, Task)
            await client.get_task(task.id)
        await spans_named(recorded, "a2a GetTask", 2)
    states = {
        p.attributes["a2a.task.state"]: p.value
        for p in recorded.metric_points("agent_runtime.a2a.tasks")
    }
    assert states["TASK_STATE_SUBMITTED"] == 1
    assert states["TASK_STATE_WORKING"] == 1
    assert states["TASK_STATE_COMPLETED"] == 1
    durations = {
        (p.attributes["rpc.method"], p.attributes["agent_runtime.side"]): p.count
        for p in recorded.metric_points("agent_runtime.rpc.duration")
        if p.attributes["rpc.system"] == "a2a"
    }
    for method in ("SendMessage", "GetTask"):
        assert durations[(method, "client")] == 1
        assert durations[(method, "server")] == 1


async def test_a_cancelled_call_leaves_no_span_open_and_the_task_canceled_is_counted(
    recorded: Recorded,
) -> None:
    agent, model = gated_agent()
    async with node(agent=agent) as (base, _):
        async with A2AClient(base) as client:
            with anyio.move_on_after(30):
                async with anyio.create_task_group() as tg:

                    async def call() -> None:
                        await client.send_message("wait for the gate")

                    tg.start_soon(call)
                    await model.first_chunk_sent.wait()
                    tg.cancel_scope.cancel()
            (cancelled,) = _kind(recorded.named("a2a SendMessage"), SpanKind.CLIENT)
            assert attrs(cancelled)["error.type"] == "cancelled"
            assert not cancelled.status.is_ok
            # The server's request and the run go on; cancel the task, and all of it ends.
            listed = await client.list_tasks()
            await client.cancel_task(listed.tasks[0].id)
        await spans_named(recorded, "a2a CancelTask", 2)
        await spans_named(recorded, "invoke_agent gated")
        await spans_named(recorded, "a2a SendMessage", 2)
    assert not recorded.tracker.open, recorded.tracker.open
    states = {
        p.attributes["a2a.task.state"]: p.value
        for p in recorded.metric_points("agent_runtime.a2a.tasks")
    }
    assert states["TASK_STATE_CANCELED"] == 1


async def test_no_token_key_or_push_credential_reaches_a_span_or_metric(
    recorded_with_content: Recorded,
) -> None:
    secrets = [
        "bearer-SECRET-1",
        "push-token-SECRET-2",
        "push-cred-SECRET-3",
        "webhook-pw-SECRET-4",
    ]
    auth = A2AAuthConfig(bearer_tokens={secrets[0]: "alice"})
    push = PushConfig(allow_private_urls=True, backoff_s=0.01)
    async with node(auth=auth, push=push) as (base, _):
        async with A2AClient(base, bearer_token=secrets[0]) as client:
            config = TaskPushNotificationConfig(
                url=f"http://user:{secrets[3]}@127.0.0.1:9/hook",
                token=secrets[1],
                authentication=AuthenticationInfo(scheme="Bearer", credentials=secrets[2]),
            )
            task = await client.send_message("keep it secret", push_config=config)
            assert isinstance(task, Task)
            await client.create_push_config(
                task.id, config.url, token=secrets[1], authentication=config.authentication
            )
            await client.list_push_configs(task.id)
        await spans_named(recorded_with_content, "a2a ListTaskPushNotificationConfigs", 2)
    text = all_text(recorded_with_content)
    assert "a2a SendMessage" in text and "a2a CreateTaskPushNotificationConfig" in text
    data = recorded_with_content.reader.get_metrics_data()
    text += repr(data.to_json() if data is not None else "")
    for secret in secrets:
        assert secret not in text
    assert "Bearer" not in text


async def test_without_an_sdk_no_traceparent_is_sent(tmp_path: object) -> None:
    seen: list[httpx.Headers] = []

    async def note(request: httpx.Request) -> None:
        seen.append(request.headers)

    async with node() as (base, _):
        http = httpx.AsyncClient(event_hooks={"request": [note]})
        async with http, A2AClient(base, http=http) as client:
            await client.send_message("plain")
    assert seen and all("traceparent" not in h for h in seen)


async def test_grpc_calls_and_streams_carry_the_trace_in_metadata(
    recorded: Recorded,
) -> None:
    from a2a_interop_support.processes import serve_app

    from agent_runtime.protocols.a2a.grpc_server import A2AGrpcServer
    from agent_runtime.protocols.a2a.server import create_a2a_app
    from agent_runtime.protocols.a2a.store import InMemoryTaskStore

    app = create_a2a_app(echo_agent("echo"), store=InMemoryTaskStore())
    async with serve_app(app) as url:
        server = A2AGrpcServer(app.state.handler, http_base_url=url)
        await server.start()
        app.state.a2a.grpc_url = server.url()
        try:
            async with A2AClient(url, bindings=["GRPC"]) as client:
                with span("caller"):
                    task = await client.send_message("over grpc")
                    events = [e async for e in client.send_message_streaming("stream it")]
            assert isinstance(task, Task) and events
            await spans_named(recorded, "a2a SendStreamingMessage", 2)
        finally:
            await server.stop(None)
    for method in ("SendMessage", "SendStreamingMessage"):
        _request_chain(recorded, method)
    runs = recorded.named("invoke_agent echo")
    servers = {span_id(s) for s in recorded.spans() if s.kind == SpanKind.SERVER}
    assert len(runs) == 2 and all(parent_of(r) in servers for r in runs)
    assert not recorded.tracker.open
