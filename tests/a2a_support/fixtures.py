"""A running node per test: ``async with node(...) as (base, client)``."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx

from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore

from .agents import echo_agent
from .net import running


@asynccontextmanager
async def node(**kwargs: Any) -> AsyncIterator[tuple[str, httpx.AsyncClient]]:
    agent = kwargs.pop("agent", None) or echo_agent()
    kwargs.setdefault("store", InMemoryTaskStore())
    app = create_a2a_app(agent, **kwargs)
    async with running(app) as base, httpx.AsyncClient(timeout=30) as client:
        yield base, client
