"""Start A2A peers for tests: the official-SDK echo server as a subprocess, ours in-process.

Every server listens on a free loopback port chosen by the OS (port 0), never a fixed one.
"""

from __future__ import annotations

import socket
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
from support_processes import listening_port, start_python, stop_process, wait_for_card

HERE = Path(__file__).resolve().parent
SDK_ECHO_SERVER = HERE / "sdk_echo_server.py"
OUR_ECHO_SERVER = HERE / "our_echo_server.py"


@contextmanager
def run_server_script(script: Path, *args: str) -> Iterator[str]:
    """Run a server script that prints ``LISTENING <port>``; yield its base URL."""
    proc = start_python(str(script), "0", *args)
    try:
        base_url = f"http://127.0.0.1:{listening_port(proc, script.name)}"
        wait_for_card(base_url)
        yield base_url
    finally:
        stop_process(proc)


def sdk_echo_server(*args: str) -> Any:
    """The official a2a-sdk echo server (subprocess); a context manager yielding its URL."""
    return run_server_script(SDK_ECHO_SERVER, *args)


def our_echo_server(*args: str) -> Any:
    """Our node with the echo agent (subprocess); a context manager yielding its URL."""
    return run_server_script(OUR_ECHO_SERVER, *args)


def free_socket() -> socket.socket:
    """A bound, listening loopback socket on a port the OS picked."""
    # IPPROTO_TCP so asyncio sets TCP_NODELAY on accepted connections (no 40 ms Nagle stalls).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    sock.listen(128)
    return sock


@asynccontextmanager
async def serve_app(app: Any, sock: socket.socket | None = None) -> AsyncIterator[str]:
    """Serve an ASGI app with uvicorn in this event loop; yield its base URL."""
    import uvicorn

    sock = sock or free_socket()
    port = sock.getsockname()[1]
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="on")
    server = uvicorn.Server(config)
    async with anyio.create_task_group() as tg:
        tg.start_soon(server.serve, [sock])
        with anyio.fail_after(20):
            while not server.started:  # noqa: ASYNC110 (uvicorn offers only a flag)
                await anyio.sleep(0.01)
        try:
            yield f"http://127.0.0.1:{port}"
        finally:
            server.should_exit = True
            server.force_exit = True
    sock.close()
