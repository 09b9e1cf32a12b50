"""A2A 1.0: serve an agent to peers, and call peer agents.

- ``types`` / ``errors``: the wire objects, the spec's errors and the client's own;
- ``server.create_a2a_app`` (ASGI, starlette) with ``handler`` (the methods), ``intake`` (what a
  message must be), ``live`` (a running task's events), ``store`` (SQLite or in-memory tasks),
  ``auth``, ``push``, ``card``; ``serve.run_a2a_node`` runs one;
- ``client.A2AClient`` (card, binding choice, operations) with ``transport`` (both bindings,
  retries) and ``follow`` (a task followed to the end); ``peer`` (a peer agent as a toolset).

Names are loaded lazily, so ``import agent_runtime.protocols.a2a`` does not import starlette,
uvicorn or httpx.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "create_a2a_app": "server",
    "A2ARequestHandler": "handler",
    "AgentCardConfig": "card",
    "A2AAuthConfig": "auth",
    "PushConfig": "push",
    "TaskStore": "store",
    "SQLiteTaskStore": "store",
    "InMemoryTaskStore": "store",
    "run_a2a_node": "serve",
    "A2AClient": "client",
    "A2APeerToolset": "peer",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
