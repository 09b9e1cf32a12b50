"""Hostile input: over-deep JSON, lone surrogates and absurd page tokens are invalid params at
the request; an unreadable stored row never poisons reads or the node's restart; the card cache
stays bounded whatever Host headers arrive; a body that never arrives in full times out."""

from __future__ import annotations

import base64
import json
import sqlite3
from pathlib import Path
from typing import Any

import anyio
import anyio.abc
import httpx
import pytest
from a2a_support.agents import echo_agent
from a2a_support.fixtures import node
from a2a_support.net import V1, running, text_message

from agent_runtime.protocols.a2a.card import WELL_KNOWN_CARD_PATH
from agent_runtime.protocols.a2a.serve import app_from_config
from agent_runtime.protocols.a2a.server import CARD_CACHE_SIZE, MAX_JSON_DEPTH, create_a2a_app
from agent_runtime.protocols.a2a.sqlite_store import SQLiteTaskStore
from agent_runtime.protocols.a2a.store import (
    InMemoryTaskStore,
    InvalidPageToken,
    TaskQuery,
    TaskRecord,
    decode_page_token,
    encode_page_token,
)
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


# --------------------------------------------------------------------------- lone surrogates

LONE = "\ud800"


def surrogate_messages() -> list[tuple[str, dict[str, Any]]]:
    """(where, message) pairs, each with one lone surrogate escape somewhere."""
    cases: list[tuple[str, dict[str, Any]]] = [
        ("parts", text_message("a" + LONE + "b")),
        ("messageId", {**text_message("hi"), "messageId": LONE}),
        ("contextId", text_message("hi", contextId="ctx-" + LONE)),
        ("taskId", text_message("hi", taskId=LONE)),
        ("metadata", text_message("hi", metadata={"k" + LONE: 1})),
        ("metadata", text_message("hi", metadata={"k": ["ok", {"deep": LONE}]})),
        ("referenceTaskIds", text_message("hi", referenceTaskIds=[LONE])),
        ("parts", {**text_message("hi"), "parts": [{"data": {"x": LONE}}]}),
    ]
    return cases


def assert_surrogate_refused(status: int, body: dict[str, Any], *, rest: bool, where: str) -> None:
    if rest:
        assert status == 400, body
        error = body["error"]
        assert error["details"][0]["reason"] == "INVALID_PARAMS"
    else:
        assert status == 200, body
        error = body["error"]
        assert error["code"] == -32602, body
    assert "surrogate" in error["message"], error
    assert where in error["message"], error


@pytest.mark.parametrize("case", range(len(surrogate_messages())))
async def test_lone_surrogates_in_a_message_are_invalid_params(tmp_path: Path, case: int) -> None:
    where, message = surrogate_messages()[case]
    store = SQLiteTaskStore(tmp_path / "tasks.sqlite3")
    async with node(store=store) as (base, client):
        raw = json.dumps(message)  # json.dumps writes the lone surrogate as a \ud800 escape
        assert "\\ud800" in raw
        r = await client.post(base + "/a2a/jsonrpc", content=rpc_body(raw), headers=RPC_HEADERS)
        assert_surrogate_refused(r.status_code, r.json(), rest=False, where=where)
        assert r.json()["id"] == 9
        r = await client.post(
            base + "/a2a/rest/message:send", content=rest_body(raw), headers=REST_HEADERS
        )
        assert_surrogate_refused(r.status_code, r.json(), rest=True, where=where)

        # Nothing was stored, and the node answers as before.
        body = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}
        r = await client.post(base + "/a2a/jsonrpc", json=body, headers=V1)
        assert r.json()["result"].get("tasks", []) == []
        ok = json.dumps(text_message("fine"))
        r = await client.post(base + "/a2a/jsonrpc", content=rpc_body(ok), headers=RPC_HEADERS)
        assert r.json()["result"]["task"]["status"]["state"] == "TASK_STATE_COMPLETED"
    await store.close()


@pytest.mark.parametrize(
    ("method", "params", "where"),
    [
        ("GetTask", {"id": LONE}, "id"),
        ("CancelTask", {"id": "t-" + LONE}, "id"),
        ("SubscribeToTask", {"id": LONE}, "id"),
        ("ListTasks", {"contextId": LONE}, "contextId"),
        ("GetTaskPushNotificationConfig", {"taskId": LONE, "id": "x"}, "taskId"),
        ("ListTaskPushNotificationConfigs", {"taskId": "t", "pageToken": LONE}, "pageToken"),
    ],
)
async def test_lone_surrogates_in_ids_are_invalid_params(
    tmp_path: Path, method: str, params: dict[str, Any], where: str
) -> None:
    store = SQLiteTaskStore(tmp_path / "tasks.sqlite3")
    async with node(store=store) as (base, client):
        body = {"jsonrpc": "2.0", "id": "r1", "method": method, "params": params}
        r = await client.post(base + "/a2a/jsonrpc", content=json.dumps(body), headers=RPC_HEADERS)
        assert r.headers["content-type"].startswith("application/json")
        assert_surrogate_refused(r.status_code, r.json(), rest=False, where=where)
    await store.close()


async def test_rest_path_and_query_text_never_reaches_the_store_undecodable(
    tmp_path: Path,
) -> None:
    """Percent-encoded surrogates (UTF-8 ED A0 80) in a REST path or query are not text: the
    answer is an ordinary not-found / empty list, never a server error."""
    store = SQLiteTaskStore(tmp_path / "tasks.sqlite3")
    async with node(store=store) as (base, client):
        rest = base + "/a2a/rest"
        r = await client.get(rest + "/tasks/%ED%A0%80", headers=V1)
        assert r.status_code == 404, r.text
        r = await client.post(rest + "/tasks/%ED%A0%80:cancel", headers=REST_HEADERS)
        assert r.status_code == 404, r.text
        r = await client.get(rest + "/tasks?contextId=%ED%A0%80%F0%9F", headers=V1)
        assert r.status_code == 200 and r.json()["tasks"] == [], r.text
        r = await client.get(rest + "/tasks/x/pushNotificationConfigs/%ED%B0%80", headers=V1)
        assert r.status_code == 404, r.text
        # A JSON body with an escaped one is refused like on JSON-RPC.
        r = await client.post(
            rest + "/tasks/abc:cancel",
            content='{"metadata": {"a": "\\udfff"}}',
            headers=REST_HEADERS,
        )
        assert_surrogate_refused(r.status_code, r.json(), rest=True, where="metadata")
    await store.close()


# --------------------------------------------------------------------------- page tokens


@pytest.mark.parametrize(
    "token",
    [
        encode_page_token(10**30, "t1"),
        encode_page_token(-(10**30), "t1"),
        encode_page_token(2**63, "t1"),
        base64.urlsafe_b64encode(b"9" * 5000 + b"|t1").decode().rstrip("="),
        base64.urlsafe_b64encode(b"12|\xed\xa0\x80").decode().rstrip("="),
        "A" * 20_000,
    ],
)
async def test_a_page_token_with_an_absurd_cursor_is_invalid_params(
    tmp_path: Path, token: str
) -> None:
    store = SQLiteTaskStore(tmp_path / "tasks.sqlite3")
    async with node(store=store) as (base, client):
        ok = json.dumps(text_message("one"))
        await client.post(base + "/a2a/jsonrpc", content=rpc_body(ok), headers=RPC_HEADERS)
        body = {"jsonrpc": "2.0", "id": 3, "method": "ListTasks", "params": {"pageToken": token}}
        r = await client.post(base + "/a2a/jsonrpc", json=body, headers=V1)
        assert r.json()["error"]["code"] == -32602, r.json()
        assert "pageToken" in r.json()["error"]["message"]
        r = await client.get(base + "/a2a/rest/tasks", params={"pageToken": token}, headers=V1)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["details"][0]["reason"] == "INVALID_PARAMS"
    await store.close()


def test_page_tokens_round_trip_at_the_edges_of_the_range() -> None:
    for ts in (0, 2**63 - 1, -(2**63), 1_700_000_000_000):
        assert decode_page_token(encode_page_token(ts, "id|with|bars")) == (ts, "id|with|bars")
    with pytest.raises(InvalidPageToken):
        decode_page_token(encode_page_token(2**63, "x"))


# --------------------------------------------------------------------------- card cache


async def test_the_card_cache_stays_bounded_under_many_host_headers() -> None:
    app = create_a2a_app(echo_agent(), store=InMemoryTaskStore())
    a2a = app.state.a2a
    async with running(app) as base, httpx.AsyncClient(timeout=30) as client:
        for i in range(3000):
            r = await client.get(base + WELL_KNOWN_CARD_PATH, headers={"Host": f"h{i}.example"})
            assert r.status_code == 200
            assert a2a.card_cache_size <= CARD_CACHE_SIZE
        assert r.json()["supportedInterfaces"][0]["url"].startswith("http://h2999.example/")
        assert a2a.card_cache_size == CARD_CACHE_SIZE
        # An odd Host is not echoed: the card names the socket the request came in on.
        port = httpx.URL(base).port
        for odd in ("evil.example/<x>", "a" * 300, "h@x", "x y"):
            r = await client.get(base + WELL_KNOWN_CARD_PATH, headers={"Host": odd})
            urls = [i["url"] for i in r.json()["supportedInterfaces"]]
            assert all(u.startswith(f"http://127.0.0.1:{port}/") for u in urls), urls


async def test_with_base_url_the_card_ignores_the_host_header() -> None:
    app = create_a2a_app(
        echo_agent(), store=InMemoryTaskStore(), base_url="https://agent.example.com/"
    )
    async with running(app) as base, httpx.AsyncClient(timeout=30) as client:
        for i in range(50):
            r = await client.get(base + WELL_KNOWN_CARD_PATH, headers={"Host": f"h{i}.example"})
            urls = [i["url"] for i in r.json()["supportedInterfaces"]]
            assert all(u.startswith("https://agent.example.com/a2a/") for u in urls), urls
        assert app.state.a2a.card_cache_size == 1


# --------------------------------------------------------------------------- body timeout


async def read_until_closed(stream: anyio.abc.ByteStream) -> bytes:
    data = b""
    with anyio.fail_after(20):  # a guard against hanging, not a timing assertion
        while True:
            try:
                chunk = await stream.receive()
            except (anyio.EndOfStream, anyio.BrokenResourceError):
                return data
            data += chunk


@pytest.mark.parametrize("built_from", ["arguments", "config"])
@pytest.mark.parametrize(
    ("path", "ctype"),
    [("/a2a/jsonrpc", "application/json"), ("/a2a/rest/message:send", "application/a2a+json")],
)
async def test_a_body_shorter_than_its_content_length_times_out_with_408(
    path: str, ctype: str, built_from: str
) -> None:
    """``body_timeout_s`` bounds the wait, set as an argument or as a node config's key."""
    if built_from == "config":
        config = {"a2a": {"store": {"kind": "memory"}, "bodyTimeoutS": 0.3}}
        app = app_from_config(config, echo_agent())
    else:
        app = create_a2a_app(echo_agent(), store=InMemoryTaskStore(), body_timeout_s=0.3)
    async with running(app) as base:
        url = httpx.URL(base)
        assert url.port is not None
        stream = await anyio.connect_tcp("127.0.0.1", url.port)
        async with stream:
            head = (
                f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {ctype}\r\n"
                "A2A-Version: 1.0\r\nContent-Length: 5000\r\n\r\n"
            )
            await stream.send(head.encode() + b'{"jsonrpc": "2.0", ')
            data = await read_until_closed(stream)  # the server closes the connection
        status_line, _, rest = data.partition(b"\r\n")
        assert status_line.startswith(b"HTTP/1.1 408"), data[:300]
        headers, _, payload = rest.partition(b"\r\n\r\n")
        assert b"connection: close" in headers.lower()
        body = json.loads(payload)
        error = body["error"]
        if path == "/a2a/jsonrpc":
            assert error["code"] == -32600
            assert error["data"][0]["reason"] == "REQUEST_TIMEOUT"
        else:
            assert error["code"] == 408
            assert error["details"][0]["reason"] == "REQUEST_TIMEOUT"


async def test_a_slow_but_complete_body_within_the_timeout_is_served() -> None:
    app = create_a2a_app(echo_agent(), store=InMemoryTaskStore(), body_timeout_s=30)
    async with running(app) as base:
        url = httpx.URL(base)
        assert url.port is not None
        payload = rpc_body(json.dumps(text_message("slow")))
        stream = await anyio.connect_tcp("127.0.0.1", url.port)
        async with stream:
            head = (
                "POST /a2a/jsonrpc HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json"
                f"\r\nA2A-Version: 1.0\r\nConnection: close\r\nContent-Length: {len(payload)}"
                "\r\n\r\n"
            )
            await stream.send(head.encode() + payload[:10])
            await anyio.sleep(0.2)
            await stream.send(payload[10:])
            data = await read_until_closed(stream)
        assert data.startswith(b"HTTP/1.1 200"), data[:300]
        assert b'"TASK_STATE_COMPLETED"' in data
