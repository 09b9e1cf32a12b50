"""Run an A2A node: ``serve(app, host, port)`` and ``run_a2a_node(config, agent, host, port)``.

``run_a2a_node`` is what ``agent-runtime serve --a2a --config FILE`` calls. It reads the ``a2a``
section of the config (or the whole dict when it has no such key)::

    {
      "a2a": {
        "name": "...", "description": "...", "version": "0.1.0",   # card; default: the agent's
        "skills": [{"id": "...", "name": "...", "description": "...", "tags": ["..."]}],
        "extended_skills": [...],            # shown to authenticated callers only
        "base_url": "https://agent.example.com",   # public URL in the card: set it for any node
                                     # others reach (without it the card names each request's
                                     # Host, or the socket's address when the Host is odd)
        "store": {"kind": "sqlite", "path": "a2a_tasks.sqlite3"},   # or {"kind": "memory"}
        # or "postgresql://user@host/db", or {"kind": "postgres", "dsn": "...", "node_id": ...,
        #     "heartbeat_s": 5, "lease_s": 20}: nodes sharing one database (postgres_store)
        "auth": {"bearer_tokens": {"<token>": "<principal>"},
                 "api_keys": {"<key>": "<principal>"}, "api_key_header": "X-API-Key"},
        "push": {"enabled": true, "allow_private_urls": false, "allowed_hosts": [],
                 "timeout_s": 10, "max_attempts": 3},
        "max_body_bytes": 10485760,          # larger request bodies: 413
        "body_timeout_s": 10,                # seconds a request body may take to arrive: 408
        "input_required_marker": "[input-required]",
        "grpc_port": 50051,                  # also serve the gRPC binding (0: any free port)
        "grpc_host": "agent.example.com"     # host the card names for it (default: base_url's)
      }
    }

With ``grpc_port`` a ``grpc.aio`` server (:mod:`.grpc_server`) runs beside the HTTP app on the
same handler, store and credentials, and the card lists all three interfaces.

Keys may also be written in camelCase (``maxBodyBytes``, ``bearerTokens`` ...). A credential value
written as ``"env:NAME"`` is read from environment variable ``NAME``, so
secrets need not sit in the file.
"""

from __future__ import annotations

import asyncio
import gc
import os
import socket
from collections.abc import Callable, Coroutine
from typing import Any
from urllib.parse import urlsplit

from starlette.applications import Starlette

from .auth import A2AAuthConfig
from .card import AgentCardConfig
from .handler import DEFAULT_INPUT_REQUIRED_MARKER, RunnableAgent
from .push import PushConfig
from .server import (
    DEFAULT_BODY_TIMEOUT_S,
    DEFAULT_MAX_BODY_BYTES,
    DEFAULT_STORE_PATH,
    create_a2a_app,
)
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
    if isinstance(store_cfg, str):  # a PostgreSQL DSN, or a SQLite file path
        is_dsn = store_cfg.startswith(("postgresql://", "postgres://"))
        store_cfg = {"kind": "postgres", "dsn": store_cfg} if is_dsn else {"path": store_cfg}
    store: TaskStore
    if store_cfg.get("kind", "sqlite") == "memory":
        store = InMemoryTaskStore()
    elif store_cfg.get("kind") == "postgres":
        from .postgres_store import PostgresTaskStore

        store = PostgresTaskStore.from_config(store_cfg)
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
    body_timeout_s = float(section.get("body_timeout_s", DEFAULT_BODY_TIMEOUT_S))
    if not body_timeout_s > 0:
        raise ValueError(f"the A2A config's body_timeout_s must be positive, not {body_timeout_s}")
    return create_a2a_app(
        agent,
        card=AgentCardConfig.from_dict(section),
        store=store,
        auth=auth,
        push=push,
        max_body_bytes=int(section.get("max_body_bytes", DEFAULT_MAX_BODY_BYTES)),
        base_url=section.get("base_url"),
        body_timeout_s=body_timeout_s,
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


def grpc_settings(config: dict[str, Any]) -> tuple[int | None, str | None]:
    """``(grpc_port, grpc_host)`` from a node config; port ``None``: no gRPC binding."""
    section = _section(config)
    port = section.get("grpc_port")
    host = section.get("grpc_host")
    return (None if port is None else int(port)), (str(host) if host else None)


def _advertised_host(app: Starlette, host: str, grpc_host: str | None) -> str:
    """The host the card names for the gRPC binding: explicit, else base_url's, else bound."""
    if grpc_host:
        return grpc_host
    base_url = getattr(app.state.a2a, "base_url", None)
    if base_url and urlsplit(base_url).hostname:
        return str(urlsplit(base_url).hostname)
    return "127.0.0.1" if host in ("", "0.0.0.0") else ("::1" if host == "::" else host)


async def serve_async(
    app: Starlette,
    host: str = "127.0.0.1",
    port: int = 0,
    *,
    on_listening: Callable[[int], None] | None = None,
    log_level: str = "warning",
    grpc_port: int | None = None,
    grpc_host: str | None = None,
    on_grpc_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve ``app`` with uvicorn (its httptools parser when installed) until cancelled or
    signalled.

    With ``grpc_port`` (0: any free port) the gRPC binding is served beside it on the same
    handler (``app`` from :func:`~.server.create_a2a_app`); it starts before the HTTP side and
    stops before the app's shutdown closes the store. ``grpc_host`` is the host the card names.
    """
    import uvicorn

    sock = bind_socket(host, port)
    actual_port = int(sock.getsockname()[1])
    grpc_server = None
    if grpc_port is not None:
        from .grpc_server import A2AGrpcServer

        a2a = app.state.a2a
        grpc_server = A2AGrpcServer(
            app.state.handler,
            host,
            grpc_port,
            http_base_url=a2a.base_url
            or f"http://{_advertised_host(app, host, None)}:{actual_port}",
            advertised_host=_advertised_host(app, host, grpc_host),
            max_message_bytes=a2a.max_body_bytes,
        )
        bound = await grpc_server.start()
        a2a.grpc_url = grpc_server.url()
        if on_grpc_listening is not None:
            on_grpc_listening(bound)
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
    if grpc_server is not None:
        http_shutdown = server.shutdown
        stopping = grpc_server

        async def shutdown(sockets: list[socket.socket] | None = None) -> None:
            # gRPC first: its calls use the store that the app's shutdown closes.
            await stopping.stop(grace=2.0)
            await http_shutdown(sockets=sockets)

        server.shutdown = shutdown  # type: ignore[method-assign]
    try:
        await server.serve(sockets=[sock])
    finally:
        if grpc_server is not None:
            await grpc_server.stop(grace=None)


GC_YOUNG_THRESHOLD = 10_000
"""The youngest generation's threshold :func:`run_loop` sets at least (CPython's default: 700)."""


def tune_gc() -> None:
    """Collector settings for a node process: objects alive now (modules, schemas) are frozen
    out of collections, and the youngest generation is collected every
    :data:`GC_YOUNG_THRESHOLD` allocations instead of 700. A node keeps many objects (tasks,
    cards), and with the default each request's short-lived objects are promoted and
    rescanned with them: a quarter to a third of the node's CPU. Cyclic garbage just waits a
    little longer."""
    gc.collect()
    gc.freeze()
    young, middle, old = gc.get_threshold()
    if 0 < young < GC_YOUNG_THRESHOLD:
        gc.set_threshold(GC_YOUNG_THRESHOLD, middle, old)


def run_loop(main: Coroutine[Any, Any, None]) -> None:
    """Run ``main`` (a node: the process is its own) to completion after :func:`tune_gc`, on
    uvloop when it is installed (the ``a2a`` extra installs it: a faster event loop than
    asyncio's own, which is used otherwise)."""
    tune_gc()
    try:
        import uvloop
    except ImportError:
        asyncio.run(main)
        return
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(main)


def serve(
    app_or_config: Starlette | dict[str, Any],
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    agent: RunnableAgent | None = None,
    on_listening: Callable[[int], None] | None = None,
    grpc_port: int | None = None,
    grpc_host: str | None = None,
    on_grpc_listening: Callable[[int], None] | None = None,
) -> None:
    """Blocking: serve an app, or build one from a config dict and ``agent`` and serve it.

    A config's ``grpc_port`` / ``grpc_host`` apply unless given here.
    """
    if isinstance(app_or_config, dict):
        if agent is None:
            raise TypeError("serve(config) needs the agent to serve")
        app = app_from_config(app_or_config, agent)
        configured_port, configured_host = grpc_settings(app_or_config)
        grpc_port = configured_port if grpc_port is None else grpc_port
        grpc_host = grpc_host or configured_host
    else:
        app = app_or_config
    run_loop(
        serve_async(
            app,
            host,
            port,
            on_listening=on_listening,
            grpc_port=grpc_port,
            grpc_host=grpc_host,
            on_grpc_listening=on_grpc_listening,
        )
    )


def run_a2a_node(
    config: dict[str, Any],
    agent: RunnableAgent,
    host: str = "127.0.0.1",
    port: int = 8000,
    *,
    on_listening: Callable[[int], None] | None = None,
    grpc_port: int | None = None,
    on_grpc_listening: Callable[[int], None] | None = None,
) -> None:
    """Serve ``agent`` as an A2A node configured by ``config`` (blocks until stopped).

    ``grpc_port`` (or the config's ``grpc_port``) also serves the gRPC binding.
    """
    serve(
        config,
        host,
        port,
        agent=agent,
        on_listening=on_listening,
        grpc_port=grpc_port,
        on_grpc_listening=on_grpc_listening,
    )
