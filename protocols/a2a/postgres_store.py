"""The PostgreSQL task store (asyncpg): one database that several nodes serve together.

Several nodes (processes or machines, no shared memory) can serve one database:

- tasks, push configs and unreadable rows (``a2a_quarantined_tasks``) live in tables, with the
  same contract as the SQLite store (owner scoping, cursor pages, per-row quarantine);
- a running task's row names the node running it (``node_id``), and so does the row of a task
  whose agent call waits for the caller's answer (``TaskRecord.agent_waits``); a read gives that
  node back (``TaskRecord.node_id``) while its lease is alive. Leases, and failing the runs of
  nodes that lost theirs, are :mod:`.postgres_leases`;
- a terminal row is never changed by a save (:class:`~.store.StaleTaskError`), so a node that
  stalled past its lease cannot undo the failure another node recorded;
- :class:`~.postgres_events.PostgresEventBus` (re-exported here) fans task events and control
  requests out to every node with LISTEN/NOTIFY.

All JSON is stored as text and parsed per row, so one unreadable row is quarantined, never
allowed to fail a read of other rows or a node's startup.
"""

from __future__ import annotations

import asyncio
import json
import logging
import uuid
from collections.abc import Sequence
from typing import Any

import asyncpg

from .postgres_events import PostgresEventBus
from .postgres_leases import NODE_LOST_NOTE, LeaseKeeper
from .store import (
    PARSE_ERRORS,
    RUNNING_STATES,
    StaleTaskError,
    TaskPage,
    TaskQuery,
    TaskRecord,
    TaskStore,
    decode_page_token,
    parse_page,
    task_time_ms,
    unreadable_reason,
)
from .types import TERMINAL_STATES, Task, TaskPushNotificationConfig, utc_now

__all__ = ["NODE_LOST_NOTE", "PostgresEventBus", "PostgresTaskStore"]

logger = logging.getLogger("agent_runtime.protocols.a2a.store")

_TERMINAL = sorted(s.value for s in TERMINAL_STATES)
_SCHEMA_LOCK = 0x41324131  # pg_advisory_xact_lock key: nodes starting together create it once

_SCHEMA = """
CREATE TABLE IF NOT EXISTS a2a_tasks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    context_id TEXT,
    state TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    task_json TEXT NOT NULL,
    agent_state_json TEXT NOT NULL DEFAULT '[]',
    node_id TEXT
);
CREATE INDEX IF NOT EXISTS a2a_tasks_owner_time ON a2a_tasks (owner, updated_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS a2a_tasks_owner_context
    ON a2a_tasks (owner, context_id, updated_ms DESC);
CREATE INDEX IF NOT EXISTS a2a_tasks_running ON a2a_tasks (state, node_id);
CREATE TABLE IF NOT EXISTS a2a_quarantined_tasks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    context_id TEXT,
    state TEXT NOT NULL,
    updated_ms BIGINT NOT NULL,
    task_json TEXT NOT NULL,
    agent_state_json TEXT NOT NULL,
    reason TEXT NOT NULL,
    quarantined_ms BIGINT NOT NULL
);
CREATE TABLE IF NOT EXISTS a2a_push_configs (
    task_id TEXT NOT NULL,
    id TEXT NOT NULL,
    config_json TEXT NOT NULL,
    created_ms BIGINT NOT NULL,
    PRIMARY KEY (task_id, id)
);
CREATE TABLE IF NOT EXISTS a2a_nodes (
    node_id TEXT PRIMARY KEY,
    lease_until TIMESTAMPTZ NOT NULL
);
CREATE TABLE IF NOT EXISTS a2a_large_events (
    id BIGSERIAL PRIMARY KEY,
    payload TEXT NOT NULL,
    created_at TIMESTAMPTZ NOT NULL DEFAULT clock_timestamp()
);
"""


def _now_ms() -> int:
    return int(utc_now().timestamp() * 1000)


class PostgresTaskStore(TaskStore):
    """Tasks in PostgreSQL, shared by every node on the same database.

    ``node_id`` names this node (default: random per process); ``heartbeat_s`` is how often it
    renews its lease and looks for dead nodes' tasks, ``lease_s`` how long a lease lasts without
    renewal (:mod:`.postgres_leases`). The pool is opened on first use; :meth:`recover` (node
    startup) registers the node and starts the heartbeat.
    """

    def __init__(
        self,
        dsn: str,
        *,
        node_id: str | None = None,
        heartbeat_s: float = 5.0,
        lease_s: float = 20.0,
        max_connections: int = 10,
    ) -> None:
        if lease_s <= heartbeat_s:
            raise ValueError("lease_s must be longer than heartbeat_s")
        self.dsn = dsn
        self.node_id = node_id or uuid.uuid4().hex
        self.heartbeat_s = heartbeat_s
        self.lease_s = lease_s
        self.max_connections = max_connections
        self._pool: asyncpg.Pool | None = None
        self._pool_lock = asyncio.Lock()
        self._bus: PostgresEventBus | None = None
        self._leases = LeaseKeeper(self)
        self._closed = False

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> PostgresTaskStore:
        """From a node config's ``store`` object: ``dsn`` and the optional keyword arguments."""
        dsn = config.get("dsn")
        if not isinstance(dsn, str) or not dsn:
            raise ValueError("a PostgreSQL store needs a 'dsn' (postgresql://...)")
        return cls(
            dsn,
            node_id=config.get("node_id"),
            heartbeat_s=float(config.get("heartbeat_s", 5.0)),
            lease_s=float(config.get("lease_s", 20.0)),
            max_connections=int(config.get("max_connections", 10)),
        )

    async def pool(self) -> asyncpg.Pool:
        """The connection pool (created, with the schema, on first use)."""
        if self._pool is not None:
            return self._pool
        async with self._pool_lock:
            if self._pool is None:
                if self._closed:
                    raise RuntimeError("task store is closed")
                pool = await asyncpg.create_pool(
                    self.dsn, min_size=1, max_size=self.max_connections
                )
                try:
                    async with pool.acquire() as conn, conn.transaction():
                        await conn.execute("SELECT pg_advisory_xact_lock($1)", _SCHEMA_LOCK)
                        await conn.execute(_SCHEMA)
                except BaseException:
                    await pool.close()
                    raise
                self._pool = pool
        return self._pool

    def event_bus(self) -> PostgresEventBus:
        if self._bus is None:
            self._bus = PostgresEventBus(self)
        return self._bus

    # ------------------------------------------------------------------ rows

    @staticmethod
    def _record(owner: str, task_json: str, state_json: str) -> TaskRecord | str:
        """The record, or why the row cannot be read (never raises for a bad row)."""
        try:
            agent_state = json.loads(state_json)
            if not isinstance(agent_state, list):
                raise ValueError("agent_state_json is not a JSON array")
            return TaskRecord(
                task=Task.model_validate_json(task_json), owner=owner, agent_state=agent_state
            )
        except PARSE_ERRORS as exc:
            return unreadable_reason(exc)

    @staticmethod
    async def quarantine_rows(conn: asyncpg.Connection, bad: Sequence[tuple[str, str]]) -> None:
        """Move unreadable task rows to ``a2a_quarantined_tasks`` within ``conn``'s transaction."""
        now = _now_ms()
        for task_id, reason in bad:
            await conn.execute(
                "INSERT INTO a2a_quarantined_tasks (id, owner, context_id, state, updated_ms,"
                " task_json, agent_state_json, reason, quarantined_ms)"
                " SELECT id, owner, context_id, state, updated_ms, task_json, agent_state_json,"
                " $2, $3 FROM a2a_tasks WHERE id = $1"
                " ON CONFLICT (id) DO UPDATE SET task_json = EXCLUDED.task_json,"
                " agent_state_json = EXCLUDED.agent_state_json, reason = EXCLUDED.reason,"
                " quarantined_ms = EXCLUDED.quarantined_ms",
                task_id,
                reason,
                now,
            )
            await conn.execute("DELETE FROM a2a_tasks WHERE id = $1", task_id)

    async def _quarantine(self, bad: Sequence[tuple[str, str]]) -> None:
        """Log each unreadable row and move it aside so no later read trips on it."""
        for task_id, reason in bad:
            logger.error(
                "A2A task store: task %r cannot be read (%s); moved to a2a_quarantined_tasks",
                task_id,
                reason,
            )
        try:
            async with (await self.pool()).acquire() as conn, conn.transaction():
                await self.quarantine_rows(conn, bad)
        except Exception:
            logger.exception("A2A task store: could not quarantine unreadable task rows")

    # ------------------------------------------------------------------ tasks

    async def save(self, record: TaskRecord) -> None:
        """Insert or update; a terminal row is left as it is unless saved unchanged (then
        :class:`~.store.StaleTaskError`), another principal's row too (``PermissionError``)."""
        task = record.task
        state = task.status.state
        held = state.value in RUNNING_STATES or (record.agent_waits and state.is_interrupted)
        wire = task.to_wire_json()
        pool = await self.pool()
        status = await pool.execute(
            "INSERT INTO a2a_tasks (id, owner, context_id, state, updated_ms, task_json,"
            " agent_state_json, node_id) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
            " ON CONFLICT (id) DO UPDATE SET context_id = EXCLUDED.context_id,"
            " state = EXCLUDED.state, updated_ms = EXCLUDED.updated_ms,"
            " task_json = EXCLUDED.task_json, agent_state_json = EXCLUDED.agent_state_json,"
            " node_id = EXCLUDED.node_id WHERE a2a_tasks.owner = EXCLUDED.owner"
            " AND (a2a_tasks.state <> ALL($9::text[]) OR a2a_tasks.task_json = EXCLUDED.task_json)",
            task.id,
            record.owner,
            task.context_id,
            state.value,
            task_time_ms(task),
            wire,
            json.dumps(record.agent_state),
            self.node_id if held else None,
            _TERMINAL,
        )
        if status.endswith(" 0"):
            stored = await pool.fetchrow(
                "SELECT owner, state FROM a2a_tasks WHERE id = $1", task.id
            )
            if stored is not None and stored[0] == record.owner:
                raise StaleTaskError(
                    f"task {task.id} is already {stored[1]}; it was not changed to {state.value}"
                )
            raise PermissionError("task id belongs to another principal")

    async def get(self, task_id: str, owner: str) -> TaskRecord | None:
        """The task, with ``node_id`` set to the live node that runs or holds it, if any."""
        row = await (await self.pool()).fetchrow(
            "SELECT t.task_json, t.agent_state_json, n.node_id FROM a2a_tasks t"
            " LEFT JOIN a2a_nodes n ON n.node_id = t.node_id"
            " AND n.lease_until > clock_timestamp() WHERE t.id = $1 AND t.owner = $2",
            task_id,
            owner,
        )
        if row is None:
            return None
        record = self._record(owner, row[0], row[1])
        if isinstance(record, str):
            await self._quarantine([(task_id, record)])
            return None
        record.node_id = row[2]
        return record

    async def list_tasks(self, owner: str, query: TaskQuery) -> TaskPage:
        where = ["owner = $1"]
        args: list[Any] = [owner]

        def arg(value: Any) -> str:
            args.append(value)
            return f"${len(args)}"

        if query.context_id is not None:
            where.append(f"context_id = {arg(query.context_id)}")
        if query.status is not None:
            where.append(f"state = {arg(query.status.value)}")
        if query.status_after is not None:
            where.append(f"updated_ms >= {arg(int(query.status_after.timestamp() * 1000))}")
        count_sql = "SELECT COUNT(*) FROM a2a_tasks WHERE " + " AND ".join(where)
        count_args = list(args)
        if query.page_token:
            ts, last_id = decode_page_token(query.page_token)
            t, i = arg(ts), arg(last_id)
            where.append(f"(updated_ms < {t} OR (updated_ms = {t} AND id < {i}))")
        page_sql = (
            "SELECT updated_ms, id, task_json FROM a2a_tasks WHERE "
            + " AND ".join(where)
            + f" ORDER BY updated_ms DESC, id DESC LIMIT {arg(query.page_size + 1)}"
        )
        async with (await self.pool()).acquire() as conn:
            total = int(await conn.fetchval(count_sql, *count_args))
            rows = await conn.fetch(page_sql, *args)
        tasks, bad, token = parse_page([tuple(row) for row in rows], query.page_size)
        if bad:
            await self._quarantine(bad)
            total = max(0, total - len(bad))
        return TaskPage(tasks=tasks, next_page_token=token, total_size=total)

    async def latest_in_context(self, context_id: str, owner: str) -> TaskRecord | None:
        # An unreadable newest row is moved aside and the next newest one answers instead.
        for _ in range(100):
            row = await (await self.pool()).fetchrow(
                "SELECT id, task_json, agent_state_json FROM a2a_tasks"
                " WHERE owner = $1 AND context_id = $2 ORDER BY updated_ms DESC, id DESC LIMIT 1",
                owner,
                context_id,
            )
            if row is None:
                return None
            record = self._record(owner, row[1], row[2])
            if not isinstance(record, str):
                return record
            await self._quarantine([(row[0], record)])
        return None

    # ------------------------------------------------------------------ nodes

    async def recover(self) -> int:
        """Register this node, start its heartbeat, and fail the runs that can never finish.

        Those are this node id's own leftovers (a restart under a fixed ``node_id``) and the
        running tasks of nodes whose lease has expired; tasks of live nodes are left alone.
        """
        await self._leases.start()
        return await self.reap(include_own=True)

    async def reap(self, *, include_own: bool) -> int:
        """Finish as FAILED the running tasks of dead nodes (and ours, if ``include_own``)."""
        return await self._leases.reap(include_own=include_own)

    # ------------------------------------------------------------------ push configs

    async def save_push_config(self, config: TaskPushNotificationConfig) -> None:
        assert config.task_id and config.id
        await (await self.pool()).execute(
            "INSERT INTO a2a_push_configs (task_id, id, config_json, created_ms)"
            " VALUES ($1, $2, $3, $4) ON CONFLICT (task_id, id) DO UPDATE"
            " SET config_json = EXCLUDED.config_json",
            config.task_id,
            config.id,
            config.to_wire_json(),
            _now_ms(),
        )

    async def get_push_config(
        self, task_id: str, config_id: str
    ) -> TaskPushNotificationConfig | None:
        text = await (await self.pool()).fetchval(
            "SELECT config_json FROM a2a_push_configs WHERE task_id = $1 AND id = $2",
            task_id,
            config_id,
        )
        return None if text is None else TaskPushNotificationConfig.model_validate_json(text)

    async def list_push_configs(self, task_id: str) -> list[TaskPushNotificationConfig]:
        rows = await (await self.pool()).fetch(
            "SELECT config_json FROM a2a_push_configs WHERE task_id = $1 ORDER BY created_ms, id",
            task_id,
        )
        return [TaskPushNotificationConfig.model_validate_json(r[0]) for r in rows]

    async def delete_push_config(self, task_id: str, config_id: str) -> None:
        await (await self.pool()).execute(
            "DELETE FROM a2a_push_configs WHERE task_id = $1 AND id = $2", task_id, config_id
        )

    # ------------------------------------------------------------------ shutdown

    async def close(self) -> None:
        """Stop the heartbeat, give up the lease (other nodes take over what is left), close."""
        self._closed = True
        await self._leases.stop()
        if self._bus is not None:
            await self._bus.aclose()
        pool, self._pool = self._pool, None
        if pool is not None:
            try:
                await pool.execute("DELETE FROM a2a_nodes WHERE node_id = $1", self.node_id)
            except Exception:
                logger.warning("could not release the A2A node lease", exc_info=True)
            await pool.close()
