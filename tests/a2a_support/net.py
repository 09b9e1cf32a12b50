"""Raw HTTP helpers for the server tests: uvicorn in the test's event loop, JSON-RPC and REST
calls over httpx, SSE parsing. No A2A client library on purpose: these tests pin the wire."""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import uvicorn
from starlette.applications import Starlette

from agent_runtime.protocols.a2a.serve import bind_socket

V1 = {"A2A-Version": "1.0"}


@asynccontextmanager
async def running(app: Starlette) -> AsyncIterator[str]:
    """Serve ``app`` on a free loopback port in this event loop; yields the base URL."""
    sock = bind_socket("127.0.0.1", 0)
    port = sock.getsockname()[1]
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    )
    task = asyncio.get_running_loop().create_task(server.serve(sockets=[sock]))
    for _ in range(500):
        if server.started:
            break
        if task.done():
            task.result()
        await asyncio.sleep(0.01)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 15)
        sock.close()


def text_message(text: str, **extra: Any) -> dict[str, Any]:
    import uuid

    msg = {"messageId": str(uuid.uuid4()), "role": "ROLE_USER", "parts": [{"text": text}]}
    msg.update(extra)
    return msg


class Rpc:
    """JSON-RPC calls against ``{base}/a2a/jsonrpc``."""

    def __init__(self, client: httpx.AsyncClient, base: str, headers: dict[str, str] | None = None):
        self.client = client
        self.url = base + "/a2a/jsonrpc"
        self.headers = {**V1, **(headers or {})}
        self._n = 0

    async def raw(self, method: str, params: Any = None, **kw: Any) -> httpx.Response:
        self._n += 1
        body = {"jsonrpc": "2.0", "id": self._n, "method": method}
        if params is not None:
            body["params"] = params
        headers = kw.pop("headers", self.headers)
        return await self.client.post(self.url, json=body, headers=headers, **kw)

    async def call(self, method: str, params: Any = None, **kw: Any) -> dict[str, Any]:
        """The whole JSON-RPC response object."""
        response = await self.raw(method, params, **kw)
        return response.json()  # type: ignore[no-any-return]

    async def result(self, method: str, params: Any = None) -> Any:
        body = await self.call(method, params)
        assert "result" in body, body
        return body["result"]

    async def stream(self, method: str, params: Any) -> list[dict[str, Any]]:
        """Every ``data:`` event of an SSE answer, parsed."""
        self._n += 1
        body = {"jsonrpc": "2.0", "id": self._n, "method": method, "params": params}
        async with self.client.stream("POST", self.url, json=body, headers=self.headers) as r:
            assert r.headers["content-type"].startswith("text/event-stream"), r.headers
            return [e async for e in sse_events(r)]


class Rest:
    """HTTP+JSON calls under ``{base}/a2a/rest``."""

    def __init__(self, client: httpx.AsyncClient, base: str, headers: dict[str, str] | None = None):
        self.client = client
        self.base = base + "/a2a/rest"
        self.headers = {**V1, "Content-Type": "application/a2a+json", **(headers or {})}

    async def request(self, verb: str, path: str, body: Any = None, **kw: Any) -> httpx.Response:
        content = None if body is None else json.dumps(body)
        headers = kw.pop("headers", self.headers)
        return await self.client.request(
            verb, self.base + path, content=content, headers=headers, **kw
        )

    async def stream(self, verb: str, path: str, body: Any = None) -> list[dict[str, Any]]:
        content = None if body is None else json.dumps(body)
        async with self.client.stream(
            verb, self.base + path, content=content, headers=self.headers
        ) as r:
            assert r.headers["content-type"].startswith("text/event-stream"), r.headers
            return [e async for e in sse_events(r)]


async def sse_events(response: httpx.Response) -> AsyncIterator[dict[str, Any]]:
    data: list[str] = []
    async for line in response.aiter_lines():
        if line.startswith("data:"):
            data.append(line[5:].strip())
        elif not line.strip() and data:
            yield json.loads("\n".join(data))
            data = []
    if data:
        yield json.loads("\n".join(data))
