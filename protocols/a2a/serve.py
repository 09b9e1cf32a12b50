"""Run an A2A node: ``serve(app, host, port)`` and ``run_a2a_node(config, agent, host, port)``.

``run_a2a_node`` is what ``agent-runtime serve --a2a --config FILE`` calls. It reads the ``a2a``
section of the config (or the whole dict when it has no such key)::

    {
      "a2a": {
        "name": "...", "description": "...", "version": "0.1.0",   # card; default: the agent's
        "skills": [{"id": "...", "name": "...", "description": "...", "tags": ["..."]}],
        "extended_skills": [...],            # shown to authenticated callers only
        "base_url": "https://agent.example.com",   # public URL in the card (default: request URL)
        "store": {"kind": "sqlite", "path": "a2a_tasks.sqlite3"},   # or {"kind": "memory"}
        "auth": {"bearer_tokens": {"<token>": "<principal>"},
                 "api_keys": {"<key>": "<principal>"}, "api_key_header": "X-API-Key"},
        "push": {"enabled": true, "allow_private_urls": false, "allowed_hosts": [],
                 "timeout_s": 10, "max_attempts": 3},
        "max_body_bytes": 10485760,
        "input_required_marker": "[input-required]"
      }
    }

Keys may also be written in camelCase (``maxBodyBytes``, ``bearerTokens`` ...). A credential value
written as ``"env:NAME"`` is read from environment variable ``NAME``, so
secrets need not sit in the file.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable
from typing import Any

from starlette.applications import Starlette

from .auth import A2AAuthConfig
from .card import AgentCardConfig
from .handler import DEFAULT_INPUT_REQUIRED_MARKER, RunnableAgent
from .push import PushConfig
from .server import DEFAULT_MAX_BODY_BYTES, DEFAULT_STORE_PATH, create_a2a_app
from .sqlite_store import SQLiteTaskStore
from .store import InMemoryTaskStore, TaskStore


def _secret(value: str) -> str:
    if value.startswith("env:"):
        name = value[4:]
        found = os.environ.get(name)
        if found is None:
            raise KeyError(f"environment variable {name!r} (named in the A2A auth config) is unset")
        return found
    return value


def _snake_keys(data: dict[str, Any]) -> dict[str, Any]:
    """``maxBodyBytes`` -> ``max_body_bytes`` (one level: token tables keep their keys)."""
    out = {}
    for key, value in data.items():
        snake = "".join("_" + c.lower() if c.isupper() else c for c in key).lstrip("_")
        out[snake] = value
    return out


def _section(config: dict[str, Any]) -> dict[str, Any]:
    section = config.get("a2a", config)
    if not isinstance(section, dict):
        raise TypeError("the 'a2a' config section must be an object")
    section = _snake_keys(section)
    for key in ("store", "auth", "push"):
        if isinstance(section.get(key), dict):
            section[key] = _snake_keys(section[key])
    return section


def app_from_config(config: dict[str, Any], agent: RunnableAgent) -> Starlette:
    """Build the ASGI app from a node config (see the module docstring for the keys)."""
    section = _section(config)
    store_cfg = section.get("store") or {}
    store: TaskStore
    if store_cfg.get("kind", "sqlite") == "memory":
        store = InMemoryTaskStore()
    else:
        store = SQLiteTaskStore(store_cfg.get("path") or DEFAULT_STORE_PATH)
    auth = None
    if section.get("auth"):
        a = section["auth"]
        auth = A2AAuthConfig(
            bearer_tokens={_secret(k): v for k, v in (a.get("bearer_tokens") or {}).items()},
            api_keys={_secret(k): v for k, v in (a.get("api_keys") or {}).items()},
            api_key_header=a.get("api_key_header", "X-API-Key"),
        )
    push_cfg = section.get("push")
    push = PushConfig(**push_cfg) if isinstance(push_cfg, dict) else None
    return create_a2a_app(
        agent,
        card=AgentCardConfig.from_dict(section),
        store=store,
        auth=auth,
        push=push,
        max_body_bytes=int(section.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)),
        base_url=section.get("base_url"),
        input_required_marker=section.get("input_required_marker", DEFAULT_INPUT_REQUIRED_MARKER),
        close_store=True,
    )


def bind_socket(host: str = "127.0.0.1", port: int = 0) -> socket.socket:
    """A listening TCP socket; port 0 picks a free port (read it from ``getsockname()``)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    # proto must be IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on accepted sockets whose
    # proto says TCP. Without it a keep-alive response written in two parts (headers, body)
    # waits ~40 ms for the peer's delayed ACK (Nagle), on every request.
    sock = socket.socket(family, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind((host, port))
    sock.listen(2048)
    sock.set_inheritable(True)
    return sock


async def serve_async(
    app: Starlette,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_listening: Callable[[int], None] | None = None,
    log_level: str = "warning",
) -> None:
    """Serve ``app`` with uvicorn until cancelled or signalled."""
    import uvicorn

    sock = bind_socket(host, port)
    actual_port = int(sock.getsockname()[1])
    config = uvicorn.Config(
        app,
        log_level=log_level,
        access_log=False,
        lifespan="on",
        # Open SSE streams and blocking sends would otherwise hold a shutdown forever; after
        # this the app's lifespan cancels the runs (their tasks end CANCELED, and are saved).
        timeout_graceful_shutdown=5,
    )
    server = uvicorn.Server(config)
    if on_listening is not None:
        original = server.startup

        async def startup(sockets: list[socket.socket] | None = None) -> None:
            await original(sockets=sockets)
            on_listening(actual_port)

        server.startup = startup  # type: ignore[method-assign]
    await server.serve(sockets=[sock])


def serve(
    app_or_config: Starlette | dict[str, Any],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    agent: RunnableAgent | None = None,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Blocking: serve an app, or build one from a config dict and ``agent`` and serve it."""
    import asyncio

    if isinstance(app_or_config, dict):
        if agent is None:
            raise TypeError("serve(config) needs the agent to serve")
        app = app_from_config(app_or_config, agent)
    else:
        app = app_or_config
    asyncio.run(serve_async(app, host, port, on_listening=on_listening))


def run_a2a_node(
    config: dict[str, Any],
    agent: RunnableAgent,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    on_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve ``agent`` as an A2A node configured by ``config`` (blocks until stopped)."""
    serve(config, host, port, agent=agent, on_listening=on_listening)
