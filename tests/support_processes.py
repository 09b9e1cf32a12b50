"""Server subprocesses for tests: free loopback ports, waiting until they serve, clean stops.

Shared by the MCP and A2A test helpers, and by tests that start a server themselves. Every
server listens on a loopback port the OS chose (port 0, or a port found free just before),
never a fixed one.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from typing import Any

import httpx

CARD_PATH = "/.well-known/agent-card.json"


def free_port() -> int:
    """A loopback port that was free a moment ago (for servers that cannot be given port 0)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def start_python(*args: str, capture_stderr: bool = True) -> subprocess.Popen[str]:
    """``python *args`` with unbuffered output: stdout (and stderr) piped, as text."""
    return subprocess.Popen(
        [sys.executable, *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE if capture_stderr else None,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )


def stop_process(proc: subprocess.Popen[Any], timeout_s: float = 10.0) -> None:
    """Ask the process to stop (SIGTERM); kill it if it has not stopped after ``timeout_s``."""
    proc.terminate()
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def listening_port(proc: subprocess.Popen[str], what: str) -> int:
    """The port of a server that prints ``LISTENING <port>`` as its first line of stdout.

    A server that prints anything else (or exits) is killed, and the error says what it wrote.
    """
    assert proc.stdout is not None
    line = proc.stdout.readline()
    if not line.startswith("LISTENING "):
        proc.kill()
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"{what} did not start: {line!r} {err[-2000:]}")
    return int(line.split()[1])


def _check_running(proc: subprocess.Popen[Any] | None, what: str) -> None:
    if proc is not None and proc.poll() is not None:
        err = proc.stderr.read() if proc.stderr else ""
        raise RuntimeError(f"{what} exited with {proc.returncode}: {err[-2000:]}")


def wait_for_port(
    port: int, proc: subprocess.Popen[Any] | None = None, timeout_s: float = 20.0
) -> None:
    """Wait until something accepts connections on loopback ``port`` (and ``proc`` still runs)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        _check_running(proc, "server")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port} after {timeout_s}s")


def wait_for_card(
    base_url: str, proc: subprocess.Popen[Any] | None = None, timeout_s: float = 20.0
) -> None:
    """Wait until the A2A node at ``base_url`` serves its agent card (and ``proc`` still runs)."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            if httpx.get(base_url + CARD_PATH, timeout=2).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        _check_running(proc, f"the node at {base_url}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"no agent card at {base_url} after {timeout_s}s")
        time.sleep(0.05)
