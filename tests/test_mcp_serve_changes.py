"""``agent-runtime mcp-serve --gateway``: what changes behind the gateway reaches the host.

The gateway (a real ``agent-runtime`` subprocess over stdio, driven by the official ``mcp``
SDK client) fronts ``mcp_support/changing_server.py``, whose resources and prompts change at
runtime: the host must hear of resource and prompt list changes, of updates to the resources
it subscribed to (under the URI it used), and get completions from the server that owns the
prompt or template.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import anyio
import mcp_types as mt
import pytest
from mcp import Client, StdioServerParameters
from mcp_support.helpers import TEST_SERVER
from support_processes import free_port, stop_process, wait_for_port

SUPPORT = Path(__file__).resolve().parent / "mcp_support"
pytestmark = pytest.mark.anyio


class Watcher:
    """The host's notifications, each kind as an event plus the updated URIs."""

    def __init__(self) -> None:
        self.resources_changed = anyio.Event()
        self.prompts_changed = anyio.Event()
        self.updated: list[str] = []
        self.updated_once = anyio.Event()

    async def on_message(self, message: Any) -> None:
        if isinstance(message, mt.ResourceListChangedNotification):
            self.resources_changed.set()
        elif isinstance(message, mt.PromptListChangedNotification):
            self.prompts_changed.set()
        elif isinstance(message, mt.ResourceUpdatedNotification):
            self.updated.append(str(message.params.uri))
            self.updated_once.set()


@asynccontextmanager
async def _gateway(tmp_path: Path, watcher: Watcher) -> AsyncIterator[Client]:
    config = {
        "name": "front",
        "model": {"backend": "serve_agent:command_model"},
        "mcpServers": {
            "notes": {
                "command": sys.executable,
                "args": [str(SUPPORT / "changing_server.py")],
                "protocol": "2025-11-25",
            }
        },
    }
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    params = StdioServerParameters(
        command=sys.executable,
        args=["-m", "agent_runtime.cli", "mcp-serve", "--gateway", "--config", str(path)],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        },
    )
    client = Client(
        params, mode="legacy", message_handler=watcher.on_message, read_timeout_seconds=60
    )
    async with client:
        yield client


async def test_resource_and_prompt_list_changes_behind_reach_the_host(tmp_path: Path) -> None:
    watcher = Watcher()
    async with _gateway(tmp_path, watcher) as client:
        caps = client.server_capabilities
        before = [r.name for r in (await client.list_resources()).resources]
        added = await client.call_tool("notes__add_note", {"name": "second", "text": "two"})
        with anyio.fail_after(20):
            await watcher.resources_changed.wait()
            await watcher.prompts_changed.wait()
        after = [r.name for r in (await client.list_resources()).resources]
        prompts = [p.name for p in (await client.list_prompts()).prompts]
    assert caps.resources is not None and caps.resources.list_changed
    assert caps.prompts is not None and caps.prompts.list_changed
    assert not added.is_error
    assert before == ["notes__first"]
    assert after == ["notes__first", "notes__second"]
    assert "notes__note_second" in prompts


@pytest.mark.filterwarnings("ignore::mcp.shared.exceptions.MCPDeprecationWarning")
async def test_updates_of_subscribed_resources_reach_the_host(tmp_path: Path) -> None:
    watcher = Watcher()
    async with _gateway(tmp_path, watcher) as client:
        assert client.server_capabilities.resources is not None
        assert client.server_capabilities.resources.subscribe
        await client.list_resources()
        # Not subscribed yet: an edit says nothing.
        await client.call_tool("notes__edit_note", {"name": "first", "text": "quiet"})
        await client.subscribe_resource("notes://first")
        await client.call_tool("notes__edit_note", {"name": "first", "text": "loud"})
        with anyio.fail_after(20):
            await watcher.updated_once.wait()
        read = await client.read_resource("notes://first")
        await client.unsubscribe_resource("notes://first")
        await client.call_tool("notes__edit_note", {"name": "first", "text": "quiet again"})
        # A round trip after the edit: a notification sent before it would have arrived.
        await client.list_tools()
    assert watcher.updated == ["notes://first"]
    assert [c.text for c in read.contents if isinstance(c, mt.TextResourceContents)] == ["loud"]


async def test_completions_come_from_the_server_that_owns_the_prompt_or_template(
    tmp_path: Path,
) -> None:
    async with _gateway(tmp_path, Watcher()) as client:
        assert client.server_capabilities.completions is not None
        styles = await client.complete(
            mt.PromptReference(type="ref/prompt", name="notes__summarize"),
            {"name": "style", "value": "b"},
        )
        names = await client.complete(
            mt.ResourceTemplateReference(type="ref/resource", uri="notes://{name}"),
            {"name": "name", "value": "fi"},
        )
        with pytest.raises(Exception, match="not found"):
            await client.complete(
                mt.PromptReference(type="ref/prompt", name="nowhere__summarize"),
                {"name": "style", "value": ""},
            )
    assert styles.completion.values == ["brief", "bullet points"]
    assert names.completion.values == ["first"]


@pytest.fixture
def modern_url(tmp_path: Path) -> Iterator[str]:
    """The gateway over streamable HTTP, before the changing server and the SDK test server."""
    config = {
        "name": "front",
        "model": {"backend": "serve_agent:command_model"},
        "mcpServers": {
            "notes": {
                "command": sys.executable,
                "args": [str(SUPPORT / "changing_server.py")],
                "protocol": "2025-11-25",
            },
            "test": {
                "command": sys.executable,
                "args": [str(TEST_SERVER)],
                "protocol": "2025-11-25",
            },
        },
    }
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "agent_runtime.cli", "mcp-serve", "--gateway"]
    proc = subprocess.Popen(
        [*command, "--http", str(port), "--config", str(path)],
        env={
            **os.environ,
            "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
        },
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc, timeout_s=60)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(proc, timeout_s=10)


async def test_a_stateless_host_follows_changes_and_answers_sampling_from_behind(
    modern_url: str,
) -> None:
    asked: list[str] = []

    async def on_sample(ctx: Any, params: mt.CreateMessageRequestParams) -> mt.CreateMessageResult:
        asked.append("sampling")
        return mt.CreateMessageResult(
            role="assistant", content=mt.TextContent(type="text", text="no"), model="front"
        )

    async with Client(
        modern_url, mode="2026-07-28", sampling_callback=on_sample, read_timeout_seconds=60
    ) as client:
        assert client.protocol_version == "2026-07-28"
        events: list[Any] = []
        async with client.listen(
            resources_list_changed=True, prompts_list_changed=True
        ) as subscription:
            await client.call_tool("notes__add_note", {"name": "third", "text": "three"})
            with anyio.fail_after(20):
                async for event in subscription:
                    events.append(event)
                    if len(events) == 2:
                        break
        sampled = await client.call_tool("test__ask_model", {"question": "the answer?"})
        names = [r.name for r in (await client.list_resources()).resources]
    assert sorted(type(e).__name__ for e in events) == [
        "PromptsListChanged",
        "ResourcesListChanged",
    ]
    assert "notes__third" in names
    text = "".join(b.text for b in sampled.content if isinstance(b, mt.TextContent))
    assert not sampled.is_error, text
    assert text == "model said: no"  # asked by InputRequiredResult (test_mcp_serve_stateless.py)
    assert asked == ["sampling"]
