"""The node's ASGI app: protocol endpoints reached directly, the rest (and any added middleware)
through starlette. Real HTTP on loopback (uvicorn)."""

from __future__ import annotations

import pytest
from a2a_support.agents import echo_agent
from a2a_support.net import running, text_message
from httpx import AsyncClient
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import Response

from agent_runtime.protocols.a2a.asgi import A2AStarlette
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore

pytestmark = pytest.mark.anyio

HEADERS = {"A2A-Version": "1.0"}


def _send(text: str) -> dict[str, object]:
    return {
        "jsonrpc": "2.0",
        "id": 1,
        "method": "SendMessage",
        "params": {"message": text_message(text)},
    }


async def test_every_binding_path_and_the_card_answer_on_the_direct_app() -> None:
    app = create_a2a_app(echo_agent(), store=InMemoryTaskStore())
    assert isinstance(app, A2AStarlette)
    async with running(app) as base, AsyncClient(timeout=30) as client:
        for path in ("/a2a/jsonrpc", "/a2a/jsonrpc/"):
            reply = await client.post(base + path, json=_send("hi"), headers=HEADERS)
            assert reply.status_code == 200
            assert reply.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
        rest = await client.post(
            base + "/a2a/rest/message:send",
            json={"message": text_message("hi")},
            headers=HEADERS,
        )
        assert rest.status_code == 200 and rest.json()["task"]["artifacts"]
        task_id = rest.json()["task"]["id"]
        got = await client.get(f"{base}/a2a/rest/tasks/{task_id}", headers=HEADERS)
        assert got.status_code == 200 and got.json()["id"] == task_id
        # A wrong verb still gets the binding's own error, not starlette's plain 405.
        wrong = await client.get(base + "/a2a/jsonrpc", headers=HEADERS)
        assert wrong.status_code == 405 and wrong.json()["error"]["code"] == -32600
        # Outside the protocol endpoints starlette routes as before.
        card = await client.get(base + "/.well-known/agent-card.json")
        assert card.status_code == 200 and card.json()["name"]
        assert (await client.get(base + "/nowhere")).status_code == 404
        bare = await client.post(base + "/a2a/rest", headers=HEADERS)  # starlette's slash redirect
        assert bare.status_code == 307 and bare.headers["location"].endswith("/a2a/rest/")


async def test_middleware_added_to_the_app_sees_the_protocol_requests_too() -> None:
    app = create_a2a_app(echo_agent(), store=InMemoryTaskStore())
    seen: list[str] = []

    async def tag(request: Request, call_next: object) -> Response:
        seen.append(request.url.path)
        response: Response = await call_next(request)  # type: ignore[operator]
        response.headers["X-Tagged"] = "yes"
        return response

    app.add_middleware(BaseHTTPMiddleware, dispatch=tag)
    async with running(app) as base, AsyncClient(timeout=30) as client:
        reply = await client.post(base + "/a2a/jsonrpc", json=_send("hi"), headers=HEADERS)
        rest = await client.post(
            base + "/a2a/rest/message:send",
            json={"message": text_message("hi")},
            headers=HEADERS,
        )
    assert reply.headers["X-Tagged"] == "yes" and rest.headers["X-Tagged"] == "yes"
    assert reply.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    assert seen == ["/a2a/jsonrpc", "/a2a/rest/message:send"]


async def test_exception_handlers_added_to_the_app_turn_the_direct_path_off() -> None:
    app = create_a2a_app(echo_agent(), store=InMemoryTaskStore())
    scope = {"type": "http", "path": "/a2a/jsonrpc"}
    assert app._direct(scope) is not None

    async def handle(request: Request, exc: Exception) -> Response:
        return Response("handled", status_code=500)

    app.add_exception_handler(KeyError, handle)
    assert app._direct(scope) is None  # everything goes through starlette's stack now
    assert app._direct({"type": "websocket", "path": "/a2a/jsonrpc"}) is None
