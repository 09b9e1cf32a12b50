"""Tasks survive the node process: kill it mid-task, start it again on the same SQLite file."""

from __future__ import annotations

import signal
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from support_processes import listening_port, start_python

NODE = Path(__file__).parent / "a2a_support" / "node_main.py"
V1 = {"A2A-Version": "1.0"}


@contextmanager
def node_process(db: Path) -> Iterator[tuple[subprocess.Popen[str], str]]:
    proc = start_python(str(NODE), str(db), capture_stderr=False)
    try:
        yield proc, f"http://127.0.0.1:{listening_port(proc, 'the node')}"
    finally:
        if proc.poll() is None:
            proc.kill()
        proc.wait(10)


def rpc(base: str, method: str, params: dict[str, Any]) -> dict[str, Any]:
    body = {"jsonrpc": "2.0", "id": 1, "method": method, "params": params}
    r = httpx.post(base + "/a2a/jsonrpc", json=body, headers=V1, timeout=30)
    return r.json()  # type: ignore[no-any-return]


def send(base: str, text: str, **extra: object) -> dict[str, Any]:
    message = {"messageId": f"m-{text}", "role": "ROLE_USER", "parts": [{"text": text}], **extra}
    params: dict[str, Any] = {"message": message}
    if text.startswith("slow:"):
        params["configuration"] = {"returnImmediately": True}
    return rpc(base, "SendMessage", params)["result"]["task"]  # type: ignore[no-any-return]


def test_tasks_and_their_history_survive_a_killed_node(tmp_path: Path) -> None:
    db = tmp_path / "node" / "tasks.sqlite3"
    with node_process(db) as (proc, base):
        done = send(base, "before")
        asked = send(base, "ask:colour?")
        running = send(base, "slow:60")
        state = rpc(base, "GetTask", {"id": running["id"]})["result"]["status"]["state"]
        assert state in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")
        proc.send_signal(signal.SIGKILL)  # no shutdown hook runs
        proc.wait(10)

    with node_process(db) as (_, base):
        # The finished task is intact.
        again = rpc(base, "GetTask", {"id": done["id"]})["result"]
        assert again == done
        # The one caught mid-run is there, with its message, marked failed (it cannot resume).
        lost = rpc(base, "GetTask", {"id": running["id"]})["result"]
        assert lost["history"][0]["parts"] == [{"text": "slow:60"}]
        assert lost["status"]["state"] == "TASK_STATE_FAILED"
        assert "restarted" in lost["status"]["message"]["parts"][0]["text"]
        # The waiting one can be answered: the runtime history came back from disk too.
        answered = send(base, "blue", taskId=asked["id"])
        assert answered["contextId"] == asked["contextId"]
        assert answered["artifacts"][0]["parts"][0]["text"] == "echo: blue (turn 2)"
        listed = rpc(base, "ListTasks", {})["result"]
        assert listed["totalSize"] == 3
        assert {t["id"] for t in listed["tasks"]} == {done["id"], asked["id"], running["id"]}


def test_a_stopped_node_restarts_cleanly(tmp_path: Path) -> None:
    db = tmp_path / "tasks.sqlite3"
    with node_process(db) as (proc, base):
        done = send(base, "kept")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(15) in (0, -signal.SIGTERM)  # uvicorn re-raises the signal when done
    with node_process(db) as (_, base):
        assert rpc(base, "GetTask", {"id": done["id"]})["result"] == done
        card = httpx.get(base + "/.well-known/agent-card.json").json()
        assert card["version"] == "9.9.9"


@pytest.mark.parametrize("kind", ["memory"])
def test_memory_store_config_is_accepted(kind: str, tmp_path: Path) -> None:
    from a2a_support.agents import echo_agent

    from agent_runtime.protocols.a2a.serve import app_from_config
    from agent_runtime.protocols.a2a.store import InMemoryTaskStore

    app = app_from_config({"store": {"kind": kind}}, echo_agent())
    assert isinstance(app.state.handler.store, InMemoryTaskStore)


def test_a_postgres_dsn_configures_a_shared_store() -> None:
    from a2a_support.agents import echo_agent

    from agent_runtime.protocols.a2a.postgres_store import PostgresTaskStore
    from agent_runtime.protocols.a2a.serve import app_from_config

    dsn = "postgresql://a2a@db.internal:5432/tasks"
    store = app_from_config({"store": dsn}, echo_agent()).state.handler.store
    assert isinstance(store, PostgresTaskStore) and store.dsn == dsn
    assert store.event_bus().spans_processes
    section = {"store": {"kind": "postgres", "dsn": dsn, "nodeId": "n1", "leaseS": 9}}
    store = app_from_config({"a2a": section}, echo_agent()).state.handler.store
    assert isinstance(store, PostgresTaskStore)
    assert (store.node_id, store.lease_s) == ("n1", 9.0)
    with pytest.raises(ValueError, match="dsn"):
        app_from_config({"store": {"kind": "postgres"}}, echo_agent())
    with pytest.raises(ValueError, match="lease_s"):
        app_from_config({"store": {"kind": "postgres", "dsn": dsn, "lease_s": 1}}, echo_agent())
