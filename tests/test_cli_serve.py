"""`agent-runtime serve --a2a` starts a node from a config file that peers can call."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from agent_runtime.protocols.a2a.client import A2AClient
from agent_runtime.protocols.a2a.types import Task, TaskState

pytestmark = pytest.mark.anyio

TOOLS = '''
from agent_runtime import tool

@tool
def reverse(text: str) -> str:
    """Reverse a text."""
    return text[::-1]
'''


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A node started by the CLI from a config file; yields its base URL and folder."""
    (tmp_path / "serve_tools.py").write_text(TOOLS)
    config = {
        "name": "reverser",
        "description": "Reverses texts with a tool.",
        "model": {"backend": "schema"},
        "tools": ["serve_tools:reverse"],
        "a2a": {"store": {"kind": "sqlite", "path": str(tmp_path / "tasks.db")}},
    }
    (tmp_path / "node.json").write_text(json.dumps(config))
    port = _free_port()
    command = [sys.executable, "-m", "agent_runtime.cli", "serve", "--a2a"]
    command += ["--config", str(tmp_path / "node.json"), "--port", str(port)]
    proc = subprocess.Popen(
        command,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONUNBUFFERED": "1"},
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                if httpx.get(base + "/.well-known/agent-card.json", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            assert time.monotonic() < deadline, "node did not come up"
            time.sleep(0.1)
        yield base, tmp_path
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


async def test_serve_a2a_runs_the_configured_agent_for_peers(node: tuple[str, Path]) -> None:
    base, folder = node
    async with A2AClient(base) as client:
        card = await client.get_card()
        task = await client.send_and_wait("hello", timeout_s=30)
    assert card.name == "reverser"
    assert isinstance(task, Task)
    assert task.status.state is TaskState.COMPLETED
    text = " ".join(a.text for a in task.artifacts)
    assert "elpmaxe" in text  # SchemaModel called reverse("example")
    assert (folder / "tasks.db").exists()
