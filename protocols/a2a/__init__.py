"""A2A 1.0: serve an agent to peers, and call peer agents.

- ``types`` / ``errors``: the wire objects, the spec's errors and the client's own;
- ``executor.ServedAgent`` (what the node serves: ``execute(context, reply)``) with
  ``request_context.RequestContext`` (the typed request), ``reply.TaskReply`` (a Message, or a
  task: artifacts, status, endings, ``ask_input`` / ``ask_auth``) and ``runtime_adapter`` (the
  runtime ``Agent`` served that way);
- ``server.create_a2a_app`` (ASGI, starlette: JSON-RPC and HTTP+JSON) with ``request_body``
  (checks on every request body) and ``card_endpoint`` (the card: cache, ETag, Last-Modified);
  ``grpc_server`` (the gRPC binding, from the spec's proto in ``proto/``, via ``grpc_convert``);
  ``handler`` (the methods, for every binding) with ``continuation`` (which task a message
  belongs to) and ``push_methods``; ``intake`` (what a message must be), ``live`` (a running
  task), ``events`` (the per-task event bus), ``store`` (the task store interface, in-memory)
  with ``sqlite_store`` and ``postgres_store`` (several nodes on one database:
  ``postgres_events`` LISTEN/NOTIFY, ``postgres_leases``), ``cross_node`` / ``node_requests``
  (a node asking the node that runs a task to act on it), ``auth``, ``push``, ``card``;
  ``serve.run_a2a_node`` runs one;
- ``client.A2AClient`` (card, binding choice, operations) with ``transport`` (JSON-RPC, REST,
  retries), ``grpc_transport`` (gRPC) and ``follow`` (a task followed to the end); ``peer`` (a
  peer agent as a toolset).

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
    "SQLiteTaskStore": "sqlite_store",
    "InMemoryTaskStore": "store",
    "PostgresTaskStore": "postgres_store",
    "run_a2a_node": "serve",
    "A2AClient": "client",
    "A2APeerToolset": "peer",
    "ServedAgent": "executor",
    "RequestContext": "request_context",
    "TaskReply": "reply",
    "RuntimeAgentExecutor": "runtime_adapter",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(f"{__name__}.{module}"), name)
