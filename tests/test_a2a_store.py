"""Every task store (memory, SQLite, PostgreSQL): owner scoping, cursor pagination, filters,
recovery, push configs, and SQLite under concurrent writers. PostgreSQL-only behaviour (nodes,
leases, quarantine, the event bus) is in test_a2a_postgres*.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import anyio
import pytest
from a2a_support.postgres import fresh_database

from agent_runtime.protocols.a2a.postgres_store import PostgresTaskStore
from agent_runtime.protocols.a2a.sqlite_store import SQLiteTaskStore
from agent_runtime.protocols.a2a.store import (
    InMemoryTaskStore,
    InvalidPageToken,
    TaskPage,
    TaskQuery,
    TaskRecord,
    TaskStore,
)
from agent_runtime.protocols.a2a.types import (
    AuthenticationInfo,
    Message,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
)

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 1, 1, tzinfo=UTC)


@pytest.fixture(params=["memory", "sqlite", "postgres"])
async def store(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[TaskStore]:
    if request.param == "memory":
        yield InMemoryTaskStore()
    elif request.param == "sqlite":
        s = SQLiteTaskStore(tmp_path / "t.sqlite3")
        yield s
        await s.close()
    else:
        async with fresh_database() as dsn:
            pg = PostgresTaskStore(dsn)
            yield pg
            await pg.close()


def make(task_id: str, *, ms: int, ctx: str = "c1", state: TaskState = TaskState.COMPLETED) -> Task:
    return Task(
        id=task_id,
        context_id=ctx,
        status=TaskStatus(state=state, timestamp=T0 + timedelta(milliseconds=ms)),
        history=[Message.user_text(f"hello {task_id}", context_id=ctx, task_id=task_id)],
    )


async def test_round_trip_keeps_task_and_agent_state(store: TaskStore) -> None:
    task = make("a", ms=1)
    state = [{"role": "user", "content": "hi"}]
    await store.save(TaskRecord(task=task, owner="alice", agent_state=state))
    got = await store.get("a", "alice")
    assert got is not None
    assert got.task == task and got.agent_state == state and got.owner == "alice"


async def test_other_principals_see_nothing(store: TaskStore) -> None:
    await store.save(TaskRecord(task=make("a", ms=1), owner="alice"))
    assert await store.get("a", "bob") is None
    assert (await store.list_tasks("bob", TaskQuery())).tasks == []
    assert await store.latest_in_context("c1", "bob") is None
    # Nor may another principal overwrite it.
    with pytest.raises(PermissionError):
        await store.save(TaskRecord(task=make("a", ms=2), owner="bob"))
    got = await store.get("a", "alice")
    assert got is not None and got.task.status.timestamp == T0 + timedelta(milliseconds=1)


async def test_cursor_pages_cover_everything_once_newest_first(store: TaskStore) -> None:
    # Ties on the timestamp are broken by id, so no task is skipped or repeated.
    for i in range(7):
        await store.save(TaskRecord(task=make(f"t{i}", ms=i // 2), owner="o"))
    seen = []
    token = None
    while True:
        page = await store.list_tasks("o", TaskQuery(page_size=3, page_token=token))
        assert page.total_size == 7
        seen += [t.id for t in page.tasks]
        token = page.next_page_token or None
        if token is None:
            break
    assert seen == ["t6", "t5", "t4", "t3", "t2", "t1", "t0"]


async def test_filters_by_context_status_and_time(store: TaskStore) -> None:
    await store.save(TaskRecord(task=make("a", ms=10, ctx="x"), owner="o"))
    await store.save(TaskRecord(task=make("b", ms=20, ctx="y"), owner="o"))
    await store.save(
        TaskRecord(task=make("c", ms=30, ctx="x", state=TaskState.INPUT_REQUIRED), owner="o")
    )

    def ids(page: TaskPage) -> list[str]:
        return [t.id for t in page.tasks]

    assert ids(await store.list_tasks("o", TaskQuery(context_id="x"))) == ["c", "a"]
    only = await store.list_tasks("o", TaskQuery(status=TaskState.INPUT_REQUIRED))
    assert ids(only) == ["c"] and only.total_size == 1
    after = T0 + timedelta(milliseconds=20)
    assert ids(await store.list_tasks("o", TaskQuery(status_after=after))) == ["c", "b"]
    latest = await store.latest_in_context("x", "o")
    assert latest is not None and latest.task.id == "c"


async def test_bad_page_token_is_refused(store: TaskStore) -> None:
    with pytest.raises(InvalidPageToken):
        await store.list_tasks("o", TaskQuery(page_token="!!!"))


async def test_recover_fails_only_running_tasks(store: TaskStore) -> None:
    await store.save(TaskRecord(task=make("w", ms=1, state=TaskState.WORKING), owner="o"))
    await store.save(TaskRecord(task=make("s", ms=2, state=TaskState.SUBMITTED), owner="o"))
    await store.save(TaskRecord(task=make("i", ms=3, state=TaskState.INPUT_REQUIRED), owner="o"))
    assert await store.recover() == 2
    states = {}
    for task_id in "wsi":
        record = await store.get(task_id, "o")
        assert record is not None
        states[task_id] = record.task.status.state
    assert states == {"w": TaskState.FAILED, "s": TaskState.FAILED, "i": TaskState.INPUT_REQUIRED}
    assert await store.recover() == 0


async def test_push_configs_round_trip_and_delete_idempotently(store: TaskStore) -> None:
    cfg = TaskPushNotificationConfig(
        id="p1",
        task_id="a",
        url="https://h/x",
        token="t",
        authentication=AuthenticationInfo(scheme="Bearer", credentials="c"),
    )
    await store.save_push_config(cfg)
    await store.save_push_config(cfg.model_copy(update={"id": "p2"}))
    assert await store.get_push_config("a", "p1") == cfg
    assert [c.id for c in await store.list_push_configs("a")] == ["p1", "p2"]
    await store.delete_push_config("a", "p1")
    await store.delete_push_config("a", "p1")
    assert await store.get_push_config("a", "p1") is None
    assert [c.id for c in await store.list_push_configs("a")] == ["p2"]


async def test_sqlite_survives_concurrent_writers_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "c.sqlite3"
    store = SQLiteTaskStore(path)

    async def writer(n: int) -> None:
        for i in range(20):
            task = make(f"w{n}-{i}", ms=i, ctx=f"ctx{n}", state=TaskState.WORKING)
            await store.save(TaskRecord(task=task, owner=f"p{n % 3}"))
            done = task.model_copy(
                update={"status": TaskStatus(state=TaskState.COMPLETED, timestamp=T0)}
            )
            await store.save(TaskRecord(task=done, owner=f"p{n % 3}"))

    async with anyio.create_task_group() as tg:
        for n in range(12):
            tg.start_soon(writer, n)
    await store.close()
    reopened = SQLiteTaskStore(path)
    totals = [
        (await reopened.list_tasks(f"p{k}", TaskQuery(page_size=100))).total_size for k in range(3)
    ]
    assert totals == [80, 80, 80]
    done = await reopened.list_tasks("p0", TaskQuery(status=TaskState.COMPLETED))
    assert done.total_size == 80
    await reopened.close()


async def test_sqlite_node_under_concurrent_requests_keeps_every_task(tmp_path: Path) -> None:
    from a2a_support.bindings import JsonRpcBinding
    from a2a_support.fixtures import node
    from a2a_support.net import text_message

    store = SQLiteTaskStore(tmp_path / "busy.sqlite3")
    async with node(store=store) as (base, client):
        api = JsonRpcBinding(client, base)
        states: list[str] = []

        async def one(i: int) -> None:
            result = (await api.send({"message": text_message(f"n{i}")})).unwrap()
            states.append(result["task"]["status"]["state"])

        async with anyio.create_task_group() as tg:
            for i in range(40):
                tg.start_soon(one, i)
        assert states == ["TASK_STATE_COMPLETED"] * 40
        listed = (await api.list(pageSize=100)).unwrap()
        assert listed["totalSize"] == 40
        assert {t["status"]["state"] for t in listed["tasks"]} == {"TASK_STATE_COMPLETED"}
    await store.close()
    reopened = SQLiteTaskStore(tmp_path / "busy.sqlite3")
    assert (await reopened.list_tasks("", TaskQuery())).total_size == 40
    await reopened.close()
