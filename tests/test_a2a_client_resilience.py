"""A2AClient and A2APeerToolset: retries, concurrency bounds, card handling, credentials.

Everything runs over real HTTP on loopback against our A2A node (or a tiny static card server).
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio
import httpx
import pytest
from a2a_interop_support.echo_model import EchoModel
from a2a_interop_support.processes import serve_app
from starlette.applications import Starlette
from starlette.responses import JSONResponse
from starlette.routing import Route

from agent_runtime.agent import Agent
from agent_runtime.backend import ModelBackend, ModelEvent, ModelFinish, ModelSettings, TextDelta
from agent_runtime.protocols.a2a.auth import A2AAuthConfig
from agent_runtime.protocols.a2a.client import (
    A2AClient,
    A2AConnectionError,
    NoCompatibleInterfaceError,
)
from agent_runtime.protocols.a2a.errors import TaskNotFoundError
from agent_runtime.protocols.a2a.peer import A2APeerToolset
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore
from agent_runtime.protocols.a2a.types import Task, TaskState
from agent_runtime.toolset import ToolContext
from agent_runtime.types import Message, ToolSpec


class GaugeModel(ModelBackend):
    """Answers after a short pause and records how many runs overlapped at most."""

    def __init__(self, pause_s: float = 0.15) -> None:
        self.pause_s = pause_s
        self.active = 0
        self.peak = 0
        self.runs = 0

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], settings: ModelSettings
    ) -> AsyncIterator[ModelEvent]:
        self.active += 1
        self.peak = max(self.peak, self.active)
        try:
            await anyio.sleep(self.pause_s)
        finally:
            self.active -= 1
        self.runs += 1
        yield TextDelta(text="done")
        yield ModelFinish()


def _app(model: ModelBackend | None = None, **kwargs: Any) -> Starlette:
    agent = Agent(model or EchoModel(), name="Echo Agent", description="Echoes text back")
    app: Starlette = create_a2a_app(agent, store=InMemoryTaskStore(), **kwargs)
    return app


@pytest.mark.anyio
async def test_connection_refused_is_retried_until_the_peer_comes_up() -> None:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound, not listening: connections are refused for now
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"
    attempts: list[str] = []

    async def count(request: httpx.Request) -> None:
        attempts.append(str(request.url))

    async def bring_up_later(task_status: Any = anyio.TASK_STATUS_IGNORED) -> None:
        await anyio.sleep(0.4)
        sock.listen(128)
        async with serve_app(_app(), sock):
            task_status.started()
            await anyio.sleep_forever()

    async with (
        httpx.AsyncClient(event_hooks={"request": [count]}) as http,
        anyio.create_task_group() as tg,
    ):
        tg.start_soon(bring_up_later)
        client = A2AClient(url, http=http, retries=8, backoff_s=0.1, max_backoff_s=0.4)
        reply = await client.send_message("are you up?")
        tg.cancel_scope.cancel()
    assert isinstance(reply, Task) and reply.artifacts[0].text == "echo: are you up?"
    card_attempts = [a for a in attempts if a.endswith("agent-card.json")]
    assert len(card_attempts) >= 2  # refused at least once, then retried


@pytest.mark.anyio
async def test_gives_up_with_a_connection_error_after_the_retries() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    client = A2AClient(f"http://127.0.0.1:{port}", retries=2, backoff_s=0.01)
    with pytest.raises(A2AConnectionError, match="3 attempts"):
        await client.get_card()
    await client.aclose()


@pytest.mark.anyio
async def test_protocol_errors_are_not_retried() -> None:
    sent: list[str] = []

    async def count(request: httpx.Request) -> None:
        sent.append(request.url.path)

    async with (
        serve_app(_app()) as url,
        httpx.AsyncClient(event_hooks={"request": [count]}) as http,
    ):
        client = A2AClient(url, http=http, retries=5)
        with pytest.raises(TaskNotFoundError):
            await client.get_task("missing")
    assert [p for p in sent if not p.endswith("agent-card.json")] == ["/a2a/jsonrpc"]


@pytest.mark.anyio
async def test_client_bounds_requests_in_flight_per_peer() -> None:
    model = GaugeModel()
    async with serve_app(_app(model)) as url, A2AClient(url, max_concurrency=2) as client:
        await client.get_card()
        replies: list[Any] = []

        async def send(i: int) -> None:
            replies.append(await client.send_message(f"n{i}"))

        async with anyio.create_task_group() as tg:
            for i in range(6):
                tg.start_soon(send, i)
    assert len(replies) == 6
    assert all(isinstance(r, Task) and r.status.state == TaskState.COMPLETED for r in replies)
    assert model.runs == 6
    assert model.peak <= 2


@pytest.mark.anyio
async def test_peer_toolset_bounds_concurrent_calls() -> None:
    model = GaugeModel(pause_s=0.1)
    async with serve_app(_app(model)) as url:
        async with A2APeerToolset("gauge", url, max_concurrency=1) as peer:
            results: list[Any] = []

            async def call(i: int) -> None:
                results.append(
                    await peer.call_tool("ask_gauge", {"message": f"{i}"}, ToolContext())
                )

            async with anyio.create_task_group() as tg:
                for i in range(3):
                    tg.start_soon(call, i)
    assert [r.text_content for r in results] == ["done"] * 3
    assert model.peak == 1


@pytest.mark.anyio
async def test_card_is_cached_and_revalidated_against_our_server() -> None:
    statuses: list[int] = []

    async def record(response: httpx.Response) -> None:
        if response.url.path.endswith("agent-card.json"):
            statuses.append(response.status_code)

    async with (
        serve_app(_app()) as url,
        httpx.AsyncClient(event_hooks={"response": [record]}) as http,
    ):
        client = A2AClient(url, http=http)
        card = await client.get_card()
        assert await client.get_card() is card
        assert await client.get_card(refresh=True) is card
    assert statuses == [200, 304]


@pytest.mark.anyio
async def test_card_url_may_be_given_directly() -> None:
    async with serve_app(_app()) as url:
        async with A2AClient(url + "/.well-known/agent-card.json") as client:
            assert client.card_url == url + "/.well-known/agent-card.json"
            reply = await client.send_message("direct")
    assert isinstance(reply, Task) and reply.artifacts[0].text == "echo: direct"


@pytest.mark.anyio
async def test_no_compatible_interface_is_a_clear_error() -> None:
    card = {
        "name": "custom only",
        "description": "speaks a custom binding",
        "supportedInterfaces": [
            {
                "url": "http://127.0.0.1:1/ws",
                "protocolBinding": "WEBSOCKET",
                "protocolVersion": "1.0",
            },
            {"url": "/v03", "protocolBinding": "JSONRPC", "protocolVersion": "0.3"},
        ],
        "version": "1",
        "capabilities": {},
        "defaultInputModes": ["text/plain"],
        "defaultOutputModes": ["text/plain"],
        "skills": [],
    }

    async def serve_card(request: Any) -> JSONResponse:
        return JSONResponse(card)

    static = Starlette(routes=[Route("/.well-known/agent-card.json", serve_card)])
    async with serve_app(static) as url, A2AClient(url) as client:
        with pytest.raises(NoCompatibleInterfaceError, match="WEBSOCKET"):
            await client.send_message("hello?")


@pytest.mark.anyio
async def test_relative_interface_urls_resolve_against_the_card() -> None:
    async with serve_app(_app()) as url, A2AClient(url) as probe:
        card = (await probe.get_card()).to_wire()
    card["supportedInterfaces"] = [
        {"url": "/a2a/rest", "protocolBinding": "HTTP+JSON", "protocolVersion": "1.0"}
    ]

    async def serve_card(request: Any) -> JSONResponse:
        return JSONResponse(card)

    app = _app()
    app.router.routes.insert(0, Route("/.well-known/agent-card.json", serve_card))
    async with serve_app(app) as url, A2AClient(url) as client:
        assert (await client.interface()).url == url + "/a2a/rest"
        reply = await client.send_message("relative")
    assert isinstance(reply, Task) and reply.artifacts[0].text == "echo: relative"


@pytest.mark.anyio
async def test_api_key_goes_where_the_card_says() -> None:
    auth = A2AAuthConfig(api_keys={"key-42": "svc"}, api_key_header="X-Peer-Key")
    async with serve_app(_app(auth=auth)) as url:
        for binding in ("JSONRPC", "HTTP+JSON"):
            async with A2AClient(url, api_key="key-42", bindings=[binding]) as client:
                reply = await client.send_message("keyed")
                assert isinstance(reply, Task)
                assert reply.status.state == TaskState.COMPLETED
        async with A2APeerToolset("keyed", url, api_key="key-42") as peer:
            result = await peer.call_tool("ask_keyed", {"message": "via peer"}, ToolContext())
    assert not result.is_error and result.text_content == "echo: via peer"


@pytest.mark.anyio
async def test_concurrent_first_calls_fetch_the_card_once() -> None:
    card_fetches: list[int] = []

    async def record(response: httpx.Response) -> None:
        if response.url.path.endswith("agent-card.json"):
            card_fetches.append(response.status_code)

    async with (
        serve_app(_app()) as url,
        httpx.AsyncClient(event_hooks={"response": [record]}) as http,
    ):
        client = A2AClient(url, http=http)
        async with anyio.create_task_group() as tg:
            for i in range(8):
                tg.start_soon(client.send_message, f"hi {i}")
    assert card_fetches == [200]
