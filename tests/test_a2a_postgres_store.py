"""PostgreSQL store behaviour beyond the shared store contract (tests/test_a2a_store.py).

Per-row quarantine of unreadable rows (reads and recovery go on), recovery that leaves the tasks
of live nodes alone, lease expiry, and the event bus between two stores on one database
(events, control requests, malformed notifications, payloads over NOTIFY's limit).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from datetime import UTC, datetime

import anyio
import asyncpg
import pytest
from a2a_support.postgres import pg_dsn  # noqa: F401 - fixture

from agent_runtime.protocols.a2a.postgres_store import PostgresTaskStore
from agent_runtime.protocols.a2a.store import StaleTaskError, TaskQuery, TaskRecord
from agent_runtime.protocols.a2a.types import (
    Artifact,
    Message,
    Part,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
)

pytestmark = pytest.mark.anyio
T0 = datetime(2026, 1, 1, tzinfo=UTC)


def make(task_id: str, state: TaskState = TaskState.COMPLETED, ctx: str = "c") -> Task:
    return Task(
        id=task_id,
        context_id=ctx,
        status=TaskStatus(state=state, timestamp=T0),
        history=[Message.user_text("hi", context_id=ctx, task_id=task_id)],
    )


@pytest.fixture
async def stores(pg_dsn: str) -> AsyncIterator[tuple[PostgresTaskStore, PostgresTaskStore]]:  # noqa: F811
    a = PostgresTaskStore(pg_dsn, node_id="a", heartbeat_s=0.2, lease_s=2.0)
    b = PostgresTaskStore(pg_dsn, node_id="b", heartbeat_s=0.2, lease_s=2.0)
    yield a, b
    await a.close()
    await b.close()


async def _nested_row(dsn: str, task_id: str, state: str) -> None:
    """A row whose task JSON nests too deep for the parser (as an older node could write)."""
    wire = make(task_id, TaskState(state)).to_wire_json()
    bad = wire[:-1] + ', "metadata": ' + '{"k":' * 3000 + "{}" + "}" * 3000 + "}"
    conn = await asyncpg.connect(dsn)
    try:
        await conn.execute(
            "INSERT INTO a2a_tasks (id, owner, context_id, state, updated_ms, task_json, node_id)"
            " VALUES ($1, 'o', 'c', $2, 5, $3, 'gone')",
            task_id,
            state,
            bad,
        )
    finally:
        await conn.close()


async def _quarantined(dsn: str) -> list[str]:
    conn = await asyncpg.connect(dsn)
    try:
        return [r[0] for r in await conn.fetch("SELECT id FROM a2a_quarantined_tasks ORDER BY id")]
    finally:
        await conn.close()


async def test_unreadable_rows_are_quarantined_and_reads_go_on(pg_dsn: str) -> None:  # noqa: F811
    store = PostgresTaskStore(pg_dsn)
    try:
        await store.save(TaskRecord(task=make("good"), owner="o"))
        await _nested_row(pg_dsn, "deep", TaskState.COMPLETED.value)
        page = await store.list_tasks("o", TaskQuery())
        assert [t.id for t in page.tasks] == ["good"] and page.total_size == 1
        assert await store.get("deep", "o") is None
        latest = await store.latest_in_context("c", "o")
        assert latest is not None and latest.task.id == "good"
        assert await _quarantined(pg_dsn) == ["deep"]
    finally:
        await store.close()


async def test_recovery_quarantines_a_bad_running_row_and_fails_the_rest(
    pg_dsn: str,  # noqa: F811
) -> None:
    writer = PostgresTaskStore(pg_dsn, node_id="gone")
    await writer.save(TaskRecord(task=make("w", TaskState.WORKING), owner="o"))
    await writer.pool()
    await writer.close()  # its lease is released: its running task can never finish
    await _nested_row(pg_dsn, "deep", TaskState.WORKING.value)
    store = PostgresTaskStore(pg_dsn, node_id="new")
    try:
        assert await store.recover() == 1
        record = await store.get("w", "o")
        assert record is not None and record.task.status.state == TaskState.FAILED
        assert await _quarantined(pg_dsn) == ["deep"]
    finally:
        await store.close()


async def test_recovery_leaves_the_tasks_of_live_nodes_alone(
    stores: tuple[PostgresTaskStore, PostgresTaskStore],
) -> None:
    a, b = stores
    await a.recover()  # A is up: its lease is fresh
    await a.save(TaskRecord(task=make("on-a", TaskState.WORKING), owner="o"))
    assert await b.recover() == 0
    record = await b.get("on-a", "o")
    assert record is not None and record.task.status.state == TaskState.WORKING


async def test_a_node_whose_lease_expires_has_its_runs_failed_and_announced(
    stores: tuple[PostgresTaskStore, PostgresTaskStore],
) -> None:
    a, b = stores
    await a.recover()
    await b.recover()
    await a.save(TaskRecord(task=make("on-a", TaskState.WORKING), owner="o"))
    bus_b = b.event_bus()
    await bus_b.start()
    with bus_b.subscribe("on-a") as events:
        await a.close()  # A goes away (its lease with it); B's heartbeat finds its task
        with anyio.fail_after(20):
            event = await anext(events)
    assert event.status_update is not None
    assert event.status_update.status.state == TaskState.FAILED
    record = await b.get("on-a", "o")
    assert record is not None and record.task.status.state == TaskState.FAILED


async def test_events_and_control_requests_cross_between_nodes(
    stores: tuple[PostgresTaskStore, PostgresTaskStore],
) -> None:
    a, b = stores
    got_control: list[dict[str, object]] = []
    arrived = anyio.Event()

    async def on_control(message: dict[str, object]) -> None:
        got_control.append(message)
        arrived.set()

    bus_a, bus_b = a.event_bus(), b.event_bus()
    await bus_a.start(on_control)
    await bus_b.start()
    small = _chunk("t1", "hello")
    big = _chunk("t1", "y" * 20000)
    with bus_b.subscribe("t1") as on_b, bus_a.subscribe("t1") as on_a:
        # A malformed notification (another program, a bug) is dropped, not fatal.
        await (await a.pool()).execute("SELECT pg_notify('a2a_events', 'not json')")
        await (await a.pool()).execute(
            "SELECT pg_notify('a2a_events', $1)", json.dumps({"node": "x", "task": "t1"})
        )
        bus_a.publish("t1", small)
        bus_a.publish("t1", big)
        with anyio.fail_after(20):
            received = [await anext(on_b), await anext(on_b)]
            local = [await anext(on_a), await anext(on_a)]
        await bus_b.send_control({"op": "cancel", "task": "t1"})
        with anyio.fail_after(20):
            await arrived.wait()
        # A's own notifications came back to A before B's request did; none was delivered.
        extra: list[StreamResponse] = []
        with anyio.move_on_after(0.1):
            extra.append(await anext(on_a))
    assert extra == []
    assert received == [small, big]
    assert local == [small, big]  # the publisher's own subscribers, once each
    assert got_control == [{"node": "b", "op": "cancel", "task": "t1"}]


def _chunk(task_id: str, text: str) -> StreamResponse:
    return StreamResponse(
        artifact_update=TaskArtifactUpdateEvent(
            task_id=task_id,
            context_id="c",
            artifact=Artifact(artifact_id="r", parts=[Part(text=text)]),
        )
    )


async def test_the_bus_listens_again_after_losing_its_connection(
    stores: tuple[PostgresTaskStore, PostgresTaskStore],
) -> None:
    a, b = stores
    bus_a, bus_b = a.event_bus(), b.event_bus()
    await bus_a.start()
    await bus_b.start()
    pool = await a.pool()
    # Cut B's LISTEN connection server-side, as a server restart or a proxy would.
    killed = await pool.fetchval(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
        " WHERE query LIKE 'LISTEN%' AND pid <> pg_backend_pid()"
        " AND pid NOT IN (SELECT pid FROM pg_stat_activity WHERE query LIKE 'LISTEN%'"
        " ORDER BY backend_start LIMIT 1)"
    )
    assert killed == 1
    event = _chunk("t2", "after the cut")
    with bus_b.subscribe("t2") as on_b:
        with anyio.fail_after(20):
            while True:  # until B listens again, what A publishes cannot reach it
                bus_a.publish("t2", event)
                with anyio.move_on_after(0.5):
                    got = await anext(on_b)
                    break
    assert got == event


async def test_a_stalled_node_cannot_undo_the_failure_recorded_when_its_lease_expired(
    pg_dsn: str,  # noqa: F811
) -> None:
    # A renews rarely, so a lease cut short by hand stays expired: A is alive but stalled.
    a = PostgresTaskStore(pg_dsn, node_id="a", heartbeat_s=60, lease_s=120)
    b = PostgresTaskStore(pg_dsn, node_id="b", heartbeat_s=60, lease_s=120)
    try:
        await a.recover()
        await b.recover()
        running = TaskRecord(task=make("t", TaskState.WORKING), owner="o")
        await a.save(running)
        await (await a.pool()).execute(
            "UPDATE a2a_nodes SET lease_until = clock_timestamp() - interval '1 second'"
            " WHERE node_id = 'a'"
        )
        assert await b.reap(include_own=False) == 1
        failed = await b.get("t", "o")
        assert failed is not None and failed.task.status.state == TaskState.FAILED
        # A wakes up and saves what its run did: neither an ending nor progress is taken.
        for state in (TaskState.COMPLETED, TaskState.WORKING):
            late = TaskRecord(task=make("t", state), owner="o")
            with pytest.raises(StaleTaskError):
                await a.save(late)
        await a.save(failed)  # the same terminal task again is harmless
        again = await b.get("t", "o")
        assert again is not None and again.task == failed.task
        with pytest.raises(PermissionError):  # another principal's task stays refused
            await a.save(TaskRecord(task=make("t", TaskState.COMPLETED), owner="other"))
    finally:
        await a.close()
        await b.close()


async def test_a_read_names_the_live_node_holding_a_waiting_agent_call(
    stores: tuple[PostgresTaskStore, PostgresTaskStore],
) -> None:
    a, b = stores
    await a.recover()
    asked = make("w", TaskState.AUTH_REQUIRED)
    await a.save(TaskRecord(task=asked, owner="o", agent_waits=True))
    await a.save(TaskRecord(task=make("r", TaskState.INPUT_REQUIRED), owner="o"))
    held = await b.get("w", "o")
    assert held is not None and held.node_id == "a"
    free = await b.get("r", "o")  # its agent call ended: any node may start the next one
    assert free is not None and free.node_id is None
    await a.close()  # A's lease goes with it: nobody holds the waiting call any more
    gone = await b.get("w", "o")
    assert gone is not None and gone.node_id is None
