"""A2A 1.0: serve an agent to peers, and call peer agents.

- ``types`` / ``errors``: the wire objects and the spec's errors;
- ``server.create_a2a_app`` (ASGI, starlette) with ``handler`` (the methods), ``store`` (SQLite
  or in-memory tasks), ``auth``, ``push``, ``card``; ``serve.run_a2a_node`` runs one;
- ``client.A2AClient`` and ``peer`` (a peer agent as a toolset).

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
