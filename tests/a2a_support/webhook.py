"""A webhook receiver on loopback that records what the node POSTs to it."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from .net import running


@dataclass
class Hook:
    url: str
    posts: list[tuple[dict[str, str], dict[str, Any]]] = field(default_factory=list)
    fail_first: int = 0
    """Answer ``fail_status`` to this many requests first (retry tests)."""
    fail_status: int = 503
    refused: list[dict[str, Any]] = field(default_factory=list)
    """Bodies of the requests answered with ``fail_status``."""
    attempts: int = 0
    hold: Any = None
    """A predicate on a body: such a request is answered only once ``resume`` is set."""
    holding: anyio.Event = field(default_factory=anyio.Event)
    resume: anyio.Event = field(default_factory=anyio.Event)

    def bodies(self) -> list[dict[str, Any]]:
        return [body for _, body in self.posts]

    arrived: anyio.Event = field(default_factory=anyio.Event)

    async def wait_for(self, predicate: Any, limit_s: float = 10) -> None:
        with anyio.fail_after(limit_s):
            while not predicate(self.bodies()):
                self.arrived = anyio.Event()
                await self.arrived.wait()


def final_state(bodies: list[dict[str, Any]]) -> str | None:
    for body in reversed(bodies):
        if "statusUpdate" in body:
            return body["statusUpdate"]["status"]["state"]  # type: ignore[no-any-return]
    return None


@asynccontextmanager
async def webhook() -> AsyncIterator[Hook]:
    hook = Hook(url="")

    async def receive(request: Request) -> Response:
        hook.attempts += 1
        if hook.fail_first > 0:
            hook.fail_first -= 1
            hook.refused.append(json.loads(await request.body()))
            return Response(status_code=hook.fail_status)
        body = json.loads(await request.body())
        if hook.hold is not None and hook.hold(body):
            hook.holding.set()
            await hook.resume.wait()
        hook.posts.append((dict(request.headers), body))
        hook.arrived.set()
        return Response(status_code=200)

    app = Starlette(routes=[Route("/hook", receive, methods=["POST"])])
    async with running(app) as base:
        hook.url = base + "/hook"
        yield hook
