"""A2AClient against a scripted peer that misbehaves the way real peers do.

The peer is a small Starlette app served over real HTTP on loopback. It speaks just enough
JSON-RPC and REST to play one scenario each: a stream that drops before the task finishes, a
peer that does not stream at all, a transient 503, an SSE error event.
"""

from __future__ import annotations

import json
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
from a2a_interop_support.processes import serve_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

from agent_runtime.protocols.a2a.client import A2AClient, A2AHTTPError
from agent_runtime.protocols.a2a.errors import TaskNotFoundError
from agent_runtime.protocols.a2a.peer import A2APeerToolset
from agent_runtime.protocols.a2a.types import Task, TaskState
from agent_runtime.toolset import ToolContext

TASK_ID = "task-1"
CONTEXT_ID = "ctx-1"


def _task(state: str, *, text: str | None = None) -> dict[str, Any]:
    task: dict[str, Any] = {"id": TASK_ID, "contextId": CONTEXT_ID, "status": {"state": state}}
    if text is not None:
        task["artifacts"] = [{"artifactId": "a1", "parts": [{"text": text}]}]
    return task


class ScriptedPeer:
    """Counts calls per method and answers from a per-scenario script."""

    def __init__(self, *, streaming: bool, working_polls: int = 2) -> None:
        self.streaming = streaming
        self.working_polls = working_polls
        self.calls: dict[str, int] = {}
        self.fail_next_get_with_503 = False
        self.fail_next_send_with_503 = False
        self.base = ""

    def card(self) -> dict[str, Any]:
        return {
            "name": "scripted",
            "description": "plays a script",
            "supportedInterfaces": [
                {"url": "/rpc", "protocolBinding": "JSONRPC", "protocolVersion": "1.0"},
                {"url": "/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"},
            ],
            "version": "1",
            "capabilities": {"streaming": self.streaming},
            "defaultInputModes": ["text/plain"],
            "defaultOutputModes": ["text/plain"],
            "skills": [],
        }

    def _count(self, method: str) -> int:
        self.calls[method] = self.calls.get(method, 0) + 1
        return self.calls[method]

    def get_task(self) -> dict[str, Any]:
        n = self._count("GetTask")
        if n <= self.working_polls:
            return _task("TASK_STATE_WORKING")
        return _task("TASK_STATE_COMPLETED", text="finally done")

    async def dropped_stream(self, wrap: bool) -> AsyncIterator[bytes]:
        """The task and one WORKING update, then the connection ends: no terminal state."""
        events = [
            {"task": _task("TASK_STATE_SUBMITTED")},
            {
                "statusUpdate": {
                    "taskId": TASK_ID,
                    "contextId": CONTEXT_ID,
                    "status": {"state": "TASK_STATE_WORKING"},
                }
            },
        ]
        for event in events:
            payload = {"jsonrpc": "2.0", "id": 1, "result": event} if wrap else event
            yield f"data: {json.dumps(payload)}\n\n".encode()

    async def rpc(self, request: Request) -> Response:
        body = json.loads(await request.body())
        method = body["method"]
        if method == "GetTask":
            if self.fail_next_get_with_503:
                self.fail_next_get_with_503 = False
                self._count("GetTask-503")
                return Response("busy", status_code=503)
            if body["params"]["id"] != TASK_ID:
                error = {"code": -32001, "message": "Task not found"}
                return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "error": error})
            return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": self.get_task()})
        if method == "SendMessage":
            self._count("SendMessage")
            if self.fail_next_send_with_503:
                self.fail_next_send_with_503 = False
                return Response("busy", status_code=503)
            result = {"task": _task("TASK_STATE_WORKING")}
            return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "result": result})
        if method == "SendStreamingMessage":
            self._count(method)
            return StreamingResponse(self.dropped_stream(True), media_type="text/event-stream")
        if method == "SubscribeToTask":
            self._count(method)
            return StreamingResponse(self.dropped_stream(True), media_type="text/event-stream")
        error = {"code": -32601, "message": "Method not found"}
        return JSONResponse({"jsonrpc": "2.0", "id": body["id"], "error": error})

    async def rest_stream(self, request: Request) -> Response:
        self._count("rest:message:stream")

        async def events() -> AsyncIterator[bytes]:
            yield f"data: {json.dumps({'task': _task('TASK_STATE_SUBMITTED')})}\n\n".encode()
            error = {
                "error": {
                    "code": 404,
                    "status": "NOT_FOUND",
                    "message": "task vanished",
                    "details": [
                        {
                            "@type": "type.googleapis.com/google.rpc.ErrorInfo",
                            "reason": "TASK_NOT_FOUND",
                            "domain": "a2a-protocol.org",
                        }
                    ],
                }
            }
            yield f"event: error\ndata: {json.dumps(error)}\n\n".encode()

        return StreamingResponse(events(), media_type="text/event-stream")

    def app(self) -> Starlette:
        async def card(request: Request) -> JSONResponse:
            return JSONResponse(self.card())

        return Starlette(
            routes=[
                Route("/.well-known/agent-card.json", card),
                Route("/rpc", self.rpc, methods=["POST"]),
                Route("/rest/message:stream", self.rest_stream, methods=["POST"]),
            ]
        )


@pytest.mark.anyio
async def test_dropped_stream_falls_back_to_polling_until_terminal() -> None:
    peer = ScriptedPeer(streaming=True, working_polls=2)
    async with serve_app(peer.app()) as url, A2AClient(url, bindings=["JSONRPC"]) as client:
        task = await client.send_and_wait("go", timeout_s=20)
    assert isinstance(task, Task)
    assert task.status.state == TaskState.COMPLETED
    assert task.artifacts[0].text == "finally done"
    assert peer.calls["SendStreamingMessage"] == 1
    assert peer.calls["GetTask"] == 3  # two WORKING answers, then COMPLETED


@pytest.mark.anyio
async def test_dropped_subscription_falls_back_to_polling() -> None:
    peer = ScriptedPeer(streaming=True, working_polls=1)
    async with serve_app(peer.app()) as url, A2AClient(url, bindings=["JSONRPC"]) as client:
        task = await client.follow_task(TASK_ID, timeout_s=20)
    assert task.status.state == TaskState.COMPLETED
    assert peer.calls["SubscribeToTask"] == 1
    assert peer.calls["GetTask"] == 2


@pytest.mark.anyio
async def test_non_streaming_peer_is_polled_to_completion() -> None:
    peer = ScriptedPeer(streaming=False, working_polls=3)
    async with serve_app(peer.app()) as url:
        async with A2APeerToolset("scripted", url) as toolset:
            result = await toolset.call_tool("ask_scripted", {"message": "go"}, ToolContext())
    assert not result.is_error
    assert result.text_content == "finally done"
    assert peer.calls["SendMessage"] == 1
    assert "SendStreamingMessage" not in peer.calls
    assert peer.calls["GetTask"] == 4


@pytest.mark.anyio
async def test_503_is_retried_for_reads_but_not_for_sends() -> None:
    peer = ScriptedPeer(streaming=False, working_polls=0)
    async with serve_app(peer.app()) as url, A2AClient(url, backoff_s=0.01) as client:
        peer.fail_next_get_with_503 = True
        task = await client.get_task(TASK_ID)
        assert task.status.state == TaskState.COMPLETED
        assert peer.calls["GetTask-503"] == 1
        peer.fail_next_send_with_503 = True
        with pytest.raises(A2AHTTPError) as info:
            await client.send_message("once only")
        assert info.value.status_code == 503
        assert peer.calls["SendMessage"] == 1
        with pytest.raises(TaskNotFoundError):
            await client.get_task("other")


@pytest.mark.anyio
async def test_rest_sse_error_event_raises_the_typed_error() -> None:
    peer = ScriptedPeer(streaming=True)
    async with serve_app(peer.app()) as url, A2AClient(url, bindings=["HTTP+JSON"]) as client:
        seen = []
        with pytest.raises(TaskNotFoundError, match="task vanished"):
            async for event in client.send_message_streaming("go"):
                seen.append(event)
    assert len(seen) == 1 and seen[0].task is not None


@pytest.mark.anyio
@pytest.mark.parametrize("location", ["query", "cookie", "header"])
async def test_api_key_is_placed_where_the_cards_scheme_says(location: str) -> None:
    seen: list[Request] = []
    card = ScriptedPeer(streaming=False).card()
    card["securitySchemes"] = {
        "key": {"apiKeySecurityScheme": {"location": location, "name": "peer_key"}}
    }

    async def serve_card(request: Request) -> JSONResponse:
        return JSONResponse(card)

    async def rpc(request: Request) -> JSONResponse:
        seen.append(request)
        body = json.loads(await request.body())
        return JSONResponse(
            {"jsonrpc": "2.0", "id": body["id"], "result": _task("TASK_STATE_COMPLETED")}
        )

    app = Starlette(
        routes=[
            Route("/.well-known/agent-card.json", serve_card),
            Route("/rpc", rpc, methods=["POST"]),
        ]
    )
    async with serve_app(app) as url, A2AClient(url, api_key="k-1") as client:
        await client.get_task(TASK_ID)
    (request,) = seen
    found = {
        "query": request.query_params.get("peer_key"),
        "cookie": request.cookies.get("peer_key"),
        "header": request.headers.get("peer_key"),
    }
    assert found == {k: ("k-1" if k == location else None) for k in found}


@pytest.mark.anyio
async def test_falls_back_to_the_next_interface_when_the_first_is_not_served() -> None:
    from a2a_interop_support.echo_model import EchoModel

    from agent_runtime.agent import Agent
    from agent_runtime.protocols.a2a.server import create_a2a_app
    from agent_runtime.protocols.a2a.store import InMemoryTaskStore

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        dead_port = sock.getsockname()[1]
    app = create_a2a_app(Agent(EchoModel(), name="echo"), store=InMemoryTaskStore())
    card: dict[str, Any] = {}

    async def serve_card(request: Request) -> JSONResponse:
        return JSONResponse(card)

    app.router.routes.insert(0, Route("/.well-known/agent-card.json", serve_card))
    async with serve_app(app) as url:
        card.update(ScriptedPeer(streaming=True).card())
        card["supportedInterfaces"] = [
            # Listed first but not served: nothing listens / no such endpoint.
            {"url": f"http://127.0.0.1:{dead_port}/rpc", "protocolBinding": "JSONRPC"},
            {"url": "/no/such/endpoint", "protocolBinding": "JSONRPC"},
            {"url": "/a2a/rest", "protocolBinding": "HTTP+JSON"},
        ]
        for interface in card["supportedInterfaces"]:
            interface["protocolVersion"] = "1.0"
        async with A2AClient(url, retries=1, backoff_s=0.01) as client:
            reply = await client.send_message("fallback")
            assert isinstance(reply, Task) and reply.artifacts[0].text == "echo: fallback"
            assert await client.binding() == "HTTP+JSON"
        async with A2AClient(url, retries=1, backoff_s=0.01) as client:
            events = [e async for e in client.send_message_streaming("stream fallback")]
            assert events[0].task is not None
            assert await client.binding() == "HTTP+JSON"
