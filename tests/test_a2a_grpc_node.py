"""A real node process serving all three bindings: ``agent-runtime serve --a2a --config FILE``
with ``grpc_port`` in the config's ``a2a`` block.

The node (a subprocess, the echo agent of ``a2a_interop_support.echo_model``, SQLite store,
bearer tokens for two principals) lists JSONRPC, HTTP+JSON and GRPC in its card. Our client
over gRPC and over HTTP sees one node: the same tasks, the same principals, the same errors. A
gRPC client that drops a stream leaves the node healthy and its log clean.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import anyio
import grpc
import grpc.aio
import pytest
from support_processes import free_port, start_python, stop_process, wait_for_card

from agent_runtime.protocols.a2a.client import A2AClient
from agent_runtime.protocols.a2a.errors import TaskNotFoundError, UnauthenticatedError
from agent_runtime.protocols.a2a.grpc_convert import decode_answer, encode
from agent_runtime.protocols.a2a.types import StreamResponse, TaskState

pytestmark = pytest.mark.anyio

TESTS = Path(__file__).resolve().parent
TOKEN = "node-token"
OTHER_TOKEN = "other-token"


class Node:
    """The running node: its HTTP base URL, and its process (for its log)."""

    def __init__(self, base: str, proc: subprocess.Popen[str]) -> None:
        self.base = base
        self.proc = proc

    def client(self, binding: str, token: str = TOKEN) -> A2AClient:
        return A2AClient(self.base, bearer_token=token, bindings=[binding])


@pytest.fixture
def node(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Node]:
    config = {
        "name": "grpc-echo",
        "description": "Echoes text back, over three bindings",
        "model": {"backend": "a2a_interop_support.echo_model:EchoModel"},
        "a2a": {
            "store": {"kind": "sqlite", "path": str(tmp_path / "tasks.db")},
            "auth": {"bearer_tokens": {TOKEN: "alice", OTHER_TOKEN: "bob"}},
            "grpc_port": 0,
        },
    }
    (tmp_path / "node.json").write_text(json.dumps(config))
    # The echo model's package lives in the tests folder.
    monkeypatch.setenv("PYTHONPATH", str(TESTS))
    port = free_port()
    proc = start_python(
        *("-m", "agent_runtime.cli", "serve", "--a2a"),
        *("--config", str(tmp_path / "node.json"), "--port", str(port)),
    )
    base = f"http://127.0.0.1:{port}"
    try:
        wait_for_card(base, proc, timeout_s=60)
        yield Node(base, proc)
    finally:
        stop_process(proc, timeout_s=15)


async def test_card_lists_three_bindings_and_one_node_answers_on_all(node: Node) -> None:
    async with node.client("GRPC") as over_grpc, node.client("HTTP+JSON") as over_rest:
        card = await over_grpc.get_card()
        interfaces = {i.protocol_binding: i.url for i in card.supported_interfaces}
        assert list(interfaces) == ["JSONRPC", "HTTP+JSON", "GRPC"]
        grpc_host, _, grpc_port = interfaces["GRPC"].rpartition(":")
        assert grpc_host == "127.0.0.1" and grpc_port.isdigit()
        assert f":{grpc_port}" not in node.base, "gRPC has a port of its own"
        assert (await over_grpc.interface()).protocol_binding == "GRPC"

        task = await over_grpc.send_message("hello three bindings")
        assert task.status.state == TaskState.COMPLETED
        assert "".join(p.text or "" for p in task.artifacts[0].parts) == (
            "echo: hello three bindings"
        )
        # The same store and principal behind HTTP ...
        seen = await over_rest.get_task(task.id)
        assert (seen.id, seen.context_id, seen.status.state) == (
            task.id,
            task.context_id,
            TaskState.COMPLETED,
        )
        assert seen.artifacts == task.artifacts
        # A task read over either binding is the same object, unset fields included.
        assert await over_grpc.get_task(task.id) == seen
        # ... and the other way round, JSON-RPC to gRPC.
        async with node.client("JSONRPC") as over_jsonrpc:
            sent = await over_jsonrpc.send_message("hello from json-rpc")
        listed = await over_grpc.list_tasks()
        assert {task.id, sent.id} <= {t.id for t in listed.tasks}
        assert (await over_grpc.get_task(sent.id)).status.state == TaskState.COMPLETED

    # The same credentials: another principal does not see alice's task, a stranger nothing.
    async with node.client("GRPC", OTHER_TOKEN) as bob:
        with pytest.raises(TaskNotFoundError):
            await bob.get_task(task.id)
        assert [t.id for t in (await bob.list_tasks()).tasks] == []
    async with node.client("GRPC", "wrong-token") as stranger:
        with pytest.raises(UnauthenticatedError):
            await stranger.get_task(task.id)


async def test_a_dropped_grpc_stream_leaves_the_node_healthy(node: Node) -> None:
    async with node.client("GRPC") as client:
        card = await client.get_card()
    target = next(i.url for i in card.supported_interfaces if i.protocol_binding == "GRPC")
    metadata = [("authorization", f"Bearer {TOKEN}"), ("a2a-version", "1.0")]
    body = encode(
        "SendMessageRequest",
        {"message": {"messageId": "m-drop", "role": "ROLE_USER", "parts": [{"text": "slow: x"}]}},
    )
    # Open a stream, read its first event, and drop the connection mid-stream.
    channel = grpc.aio.insecure_channel(target)
    call = channel.unary_stream("/lf.a2a.v1.A2AService/SendStreamingMessage")(
        body, metadata=metadata
    )
    with anyio.fail_after(30):
        raw = await call.read()
    assert isinstance(raw, bytes)
    first = StreamResponse.model_validate(decode_answer("StreamResponse", raw, "event"))
    assert first.task is not None
    task_id = first.task.id
    await channel.close(grace=None)

    # The task runs on (a dropped stream is not a cancel); the node answers on every binding.
    async with node.client("HTTP+JSON") as over_rest, node.client("GRPC") as over_grpc:
        assert (await over_rest.get_task(task_id)).status.state == TaskState.WORKING
        canceled = await over_grpc.cancel_task(task_id)
        assert canceled.status.state == TaskState.CANCELED
        assert (await over_rest.get_task(task_id)).status.state == TaskState.CANCELED
        events = [e async for e in over_grpc.send_message_streaming("after the drop")]
        assert events[-1].status_update is not None
        assert events[-1].status_update.status.state == TaskState.COMPLETED

    # Nothing went wrong on the node's side: it stops cleanly with nothing in its log.
    assert node.proc.poll() is None
    stop_process(node.proc, timeout_s=15)
    assert node.proc.stderr is not None
    log = node.proc.stderr.read()
    assert "Traceback" not in log and "ERROR" not in log, log[-3000:]
