"""`agent-runtime serve --a2a` starts a node from a config file that peers can call."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from support_processes import free_port, start_python, stop_process, wait_for_card

from agent_runtime.protocols.a2a.client import A2AClient
from agent_runtime.protocols.a2a.types import Task, TaskState

pytestmark = pytest.mark.anyio

TOOLS = '''
from pathlib import Path

from agent_runtime import tool

@tool(read_only=True)
def reverse(text: str) -> str:
    """Reverse a text."""
    return text[::-1]

@tool
def shred(path: str) -> str:
    """Delete a file."""
    Path(path).unlink()
    return "shredded"
'''


@pytest.fixture
def node(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """A node started by the CLI from a config file; yields its base URL and folder."""
    (tmp_path / "serve_tools.py").write_text(TOOLS)
    config = {
        "name": "reverser",
        "description": "Reverses texts with a tool.",
        "model": {
            "backend": "schema",
            "call_destructive": True,
            "arguments": {"shred": {"path": str(tmp_path / "keep.txt")}},
        },
        "tools": ["serve_tools:reverse", "serve_tools:shred"],
        "a2a": {"store": {"kind": "sqlite", "path": str(tmp_path / "tasks.db")}},
    }
    (tmp_path / "node.json").write_text(json.dumps(config))
    (tmp_path / "keep.txt").write_text("kept")
    port = free_port()
    proc = start_python(
        *("-m", "agent_runtime.cli", "serve", "--a2a"),
        *("--config", str(tmp_path / "node.json"), "--port", str(port)),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_card(base, proc, timeout_s=60)
        yield base, tmp_path
    finally:
        stop_process(proc, timeout_s=15)


async def test_serve_a2a_runs_the_configured_agent_for_peers(node: tuple[str, Path]) -> None:
    base, folder = node
    async with A2AClient(base) as client:
        card = await client.get_card()
        asked = await client.send_and_wait("hello", timeout_s=30)
        assert isinstance(asked, Task)  # shred needs the peer's approval: denied below
        task = await client.send_and_wait("no", task_id=asked.id, timeout_s=30)
    assert card.name == "reverser"
    assert isinstance(task, Task)
    assert task.status.state is TaskState.COMPLETED
    text = " ".join(a.text for a in task.artifacts)
    assert "elpmaxe" in text  # SchemaModel called reverse("example")
    assert (folder / "tasks.db").exists()


async def test_served_agent_never_prompts_and_denies_tools_not_marked_read_only(
    node: tuple[str, Path],
) -> None:
    """Requests come from peers, not from a person at the node's terminal: a tool not marked
    read-only and not pre-approved (policy.allow, --yes) puts the task in AUTH_REQUIRED for the
    peer to decide (spec 7.6); denied, it does not run, and the model is told."""
    base, folder = node
    async with A2AClient(base) as client:
        asked = await client.send_and_wait("hello", timeout_s=30)
        assert isinstance(asked, Task)
        assert asked.status.state is TaskState.AUTH_REQUIRED
        assert asked.status.message is not None and "shred" in asked.status.message.text
        assert (folder / "keep.txt").read_text() == "kept"
        task = await client.send_and_wait("no", task_id=asked.id, timeout_s=30)
    assert isinstance(task, Task)
    assert task.status.state is TaskState.COMPLETED
    text = " ".join(a.text for a in task.artifacts)
    assert "denied this call to 'shred'" in text
    assert (folder / "keep.txt").read_text() == "kept"
