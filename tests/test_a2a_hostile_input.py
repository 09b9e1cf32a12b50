"""Hostile input: over-deep JSON is refused at the request, and an unreadable stored row never
poisons reads or the node's restart."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any

import pytest
from a2a_support.fixtures import node
from a2a_support.net import V1, text_message

from agent_runtime.protocols.a2a.server import MAX_JSON_DEPTH
from agent_runtime.protocols.a2a.sqlite_store import SQLiteTaskStore
from agent_runtime.protocols.a2a.store import TaskQuery, TaskRecord
from agent_runtime.protocols.a2a.types import Message, Task, TaskState, TaskStatus

pytestmark = pytest.mark.anyio

RPC_HEADERS = {**V1, "Content-Type": "application/json"}
REST_HEADERS = {**V1, "Content-Type": "application/a2a+json"}


def nested_object(depth: int) -> str:
    """A JSON text of ``depth`` nested objects."""
    return '{"a":' * (depth - 1) + "{}" + "}" * (depth - 1)


def nested_array(depth: int) -> str:
    return "[" * depth + "]" * depth


def deep_metadata_message(depth: int) -> str:
    msg = text_message("hi")
    return json.dumps(msg)[:-1] + ', "metadata": ' + nested_object(depth) + "}"


def deep_data_part_message(depth: int) -> str:
    msg = text_message("hi")
    body = json.dumps(msg)
    marker = '"parts": ['
    i = body.index(marker) + len(marker)
    part = '{"data": ' + nested_array(depth) + ', "mediaType": "application/json"}, '
    return body[:i] + part + body[i:]


def rpc_body(message_json: str) -> bytes:
    return (
        '{"jsonrpc": "2.0", "id": 9, "method": "SendMessage", "params": {"message": '
        + message_json
        + "}}"
    ).encode()


def rest_body(message_json: str) -> bytes:
    return ('{"message": ' + message_json + "}").encode()


def assert_too_deep_rpc(body: dict[str, Any]) -> None:
    assert body["error"]["code"] == -32602, body
    assert body["error"]["data"][0]["reason"] == "INVALID_PARAMS"
    assert str(MAX_JSON_DEPTH) in body["error"]["message"]
    assert "nesting" in body["error"]["message"]


def assert_too_deep_rest(status: int, body: dict[str, Any]) -> None:
    assert status == 400, body
    assert body["error"]["details"][0]["reason"] == "INVALID_PARAMS"
    assert str(MAX_JSON_DEPTH) in body["error"]["message"]


@pytest.mark.parametrize("depth", [200, 800, 5000])
@pytest.mark.parametrize("where", ["metadata", "data part"])
async def test_over_deep_json_is_invalid_params_on_both_bindings(depth: int, where: str) -> None:
    message = deep_metadata_message(depth) if where == "metadata" else deep_data_part_message(depth)
    async with node() as (base, client):
        r = await client.post(base + "/a2a/jsonrpc", content=rpc_body(message), headers=RPC_HEADERS)
        assert r.status_code == 200
        assert_too_deep_rpc(r.json())
        assert r.json()["id"] in (9, None)

        r = await client.post(
            base + "/a2a/rest/message:send", content=rest_body(message), headers=REST_HEADERS
        )
        assert_too_deep_rest(r.status_code, r.json())

        # Nothing was stored, and the node still answers list requests.
        body = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}
        r = await client.post(base + "/a2a/jsonrpc", json=body, headers=V1)
        assert r.json()["result"].get("tasks", []) == []


async def test_a_bare_deep_body_is_invalid_params_not_a_server_error() -> None:
    async with node() as (base, client):
        for raw in (nested_array(800), nested_array(100_000), nested_object(900)):
            r = await client.post(base + "/a2a/jsonrpc", content=raw, headers=RPC_HEADERS)
            assert r.status_code == 200
            assert_too_deep_rpc(r.json())
            r = await client.post(
                base + "/a2a/rest/message:send", content=raw, headers=REST_HEADERS
            )
            assert_too_deep_rest(r.status_code, r.json())


async def test_nesting_within_the_limit_is_accepted() -> None:
    # The envelope takes 4 levels (body, params, message, metadata), so this is just under.
    message = deep_metadata_message(MAX_JSON_DEPTH - 4)
    async with node() as (base, client):
        r = await client.post(base + "/a2a/jsonrpc", content=rpc_body(message), headers=RPC_HEADERS)
        assert "result" in r.json(), r.json()
        r = await client.post(
            base + "/a2a/rest/message:send", content=rest_body(message), headers=REST_HEADERS
        )
        assert r.status_code == 200, r.json()


# --------------------------------------------------------------------------- store


def make(task_id: str, *, ms: int, ctx: str = "c1", state: TaskState = TaskState.COMPLETED) -> Task:
    from datetime import UTC, datetime, timedelta

    t0 = datetime(2026, 1, 1, tzinfo=UTC)
    return Task(
        id=task_id,
        context_id=ctx,
        status=TaskStatus(state=state, timestamp=t0 + timedelta(milliseconds=ms)),
        history=[Message.user_text(f"hello {task_id}", context_id=ctx, task_id=task_id)],
    )


def poison(db: Path, task_id: str, task_json: str) -> None:
    conn = sqlite3.connect(db)
    with conn:
        conn.execute("UPDATE tasks SET task_json = ? WHERE id = ?", (task_json, task_id))
    conn.close()


def over_deep_task_json(task_id: str, ctx: str = "c1") -> str:
    task = json.loads(make(task_id, ms=0, ctx=ctx).to_wire_json())
    text = json.dumps(task)
    return text[:-1] + ', "metadata": ' + nested_object(300) + "}"


async def test_recover_quarantines_unreadable_rows_and_completes(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite3"
    store = SQLiteTaskStore(db)
    await store.save(TaskRecord(task=make("good", ms=1, state=TaskState.WORKING), owner="alice"))
    await store.save(TaskRecord(task=make("deep", ms=2, state=TaskState.WORKING), owner="alice"))
    await store.save(TaskRecord(task=make("junk", ms=3, state=TaskState.SUBMITTED), owner="alice"))
    await store.save(TaskRecord(task=make("done", ms=4), owner="alice"))
    await store.close()
    poison(db, "deep", over_deep_task_json("deep"))
    poison(db, "junk", "{not json")

    store = SQLiteTaskStore(db)
    try:
        assert await store.recover() == 1
        good = await store.get("good", "alice")
        assert good is not None and good.task.status.state == TaskState.FAILED
        done = await store.get("done", "alice")
        assert done is not None and done.task.status.state == TaskState.COMPLETED
        assert await store.get("deep", "alice") is None
        page = await store.list_tasks("alice", TaskQuery())
        assert [t.id for t in page.tasks] == ["good", "done"]  # recovery restamps "good"
        assert page.total_size == 2
        assert await store.recover() == 0
    finally:
        await store.close()
    conn = sqlite3.connect(db)
    quarantined = {row[0] for row in conn.execute("SELECT id FROM quarantined_tasks")}
    conn.close()
    assert quarantined == {"deep", "junk"}


async def test_reads_skip_and_quarantine_a_bad_row(tmp_path: Path) -> None:
    db = tmp_path / "t.sqlite3"
    store = SQLiteTaskStore(db)
    try:
        for i, task_id in enumerate(["a", "bad", "c", "bad2"]):
            await store.save(TaskRecord(task=make(task_id, ms=i, ctx="ctx"), owner="alice"))
        poison(db, "bad", over_deep_task_json("bad", "ctx"))
        poison(db, "bad2", over_deep_task_json("bad2", "ctx"))

        # The newest row in the context is unreadable: the next newest one answers.
        latest = await store.latest_in_context("ctx", "alice")
        assert latest is not None and latest.task.id == "c"

        page = await store.list_tasks("alice", TaskQuery(page_size=2))
        ids = [t.id for t in page.tasks]
        while page.next_page_token:
            page = await store.list_tasks(
                "alice", TaskQuery(page_size=2, page_token=page.next_page_token)
            )
            ids += [t.id for t in page.tasks]
        assert ids == ["c", "a"]

        assert await store.get("bad", "alice") is None
        a = await store.get("a", "alice")
        assert a is not None and a.task.id == "a"
        assert await store.recover() == 0
    finally:
        await store.close()
