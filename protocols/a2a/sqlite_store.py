"""The SQLite task store: tasks, their agent state and push configs in one file (WAL).

A row that can no longer be read back (written by an older node, corrupted, or too deep for the
parser) is moved to ``quarantined_tasks`` with the reason, so one bad row never takes a
principal's reads or the node's restart down with it.
"""

from __future__ import annotations

import asyncio
import functools
import json
import logging
import sqlite3
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .store import (
    PARSE_ERRORS,
    RUNNING_STATES,
    TaskPage,
    TaskQuery,
    TaskRecord,
    TaskStore,
    decode_page_token,
    fail_interrupted,
    parse_page,
    task_time_ms,
    unreadable_reason,
)
from .types import (
    Task,
    TaskPushNotificationConfig,
    utc_now,
)

__all__ = ["SQLiteTaskStore"]

_T = TypeVar("_T")

logger = logging.getLogger("agent_runtime.protocols.a2a.store")

# --------------------------------------------------------------------------- SQLite

_SCHEMA = """
CREATE TABLE IF NOT EXISTS tasks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    context_id TEXT,
    state TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    task_json TEXT NOT NULL,
    agent_state_json TEXT NOT NULL DEFAULT '[]'
);
CREATE INDEX IF NOT EXISTS tasks_owner_time ON tasks (owner, updated_ms DESC, id DESC);
CREATE INDEX IF NOT EXISTS tasks_owner_context ON tasks (owner, context_id, updated_ms DESC);
CREATE TABLE IF NOT EXISTS quarantined_tasks (
    id TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    context_id TEXT,
    state TEXT NOT NULL,
    updated_ms INTEGER NOT NULL,
    task_json TEXT NOT NULL,
    agent_state_json TEXT NOT NULL DEFAULT '[]',
    reason TEXT NOT NULL,
    quarantined_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS push_configs (
    task_id TEXT NOT NULL,
    id TEXT NOT NULL,
    config_json TEXT NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (task_id, id)
);
"""


class SQLiteTaskStore(TaskStore):
    """Tasks in one SQLite file (WAL).

    Every call runs in a worker thread on one connection guarded by a lock, so the event loop
    never blocks on disk and concurrent requests are serialised in the database, not in Python
    state. A write is committed before the call returns: an accepted task survives a crash.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        if str(path) != ":memory:":
            self.path.parent.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self._limiter = anyio.CapacityLimiter(1)
        self._conn = sqlite3.connect(str(path), check_same_thread=False, isolation_level=None)
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA busy_timeout=5000")
        self._conn.executescript(_SCHEMA)
        self._closed = False
        self._pending: list[tuple[tuple[Any, ...], asyncio.Future[None]]] = []
        self._flusher: asyncio.Task[None] | None = None

    async def _run(self, fn: Callable[[sqlite3.Connection], _T]) -> _T:
        def call() -> _T:
            with self._lock:
                if self._closed:
                    raise RuntimeError("task store is closed")
                return fn(self._conn)

        return await anyio.to_thread.run_sync(call, limiter=self._limiter)

    @staticmethod
    def _row_to_record(row: tuple[str, str, str]) -> TaskRecord:
        owner, task_json, state_json = row
        agent_state = json.loads(state_json)
        if not isinstance(agent_state, list):
            raise ValueError("agent_state_json is not a JSON array")
        return TaskRecord(
            task=Task.model_validate_json(task_json),
            owner=owner,
            agent_state=agent_state,
        )

    @classmethod
    def _try_record(cls, row: tuple[str, str, str]) -> TaskRecord | str:
        """The record, or why the row cannot be read (never raises for a bad row)."""
        try:
            return cls._row_to_record(row)
        except PARSE_ERRORS as exc:
            return unreadable_reason(exc)

    @staticmethod
    def _quarantine_rows(conn: sqlite3.Connection, bad: list[tuple[str, str]]) -> None:
        """Move unreadable task rows into ``quarantined_tasks`` (call inside a transaction)."""
        now = int(utc_now().timestamp() * 1000)
        for task_id, reason in bad:
            conn.execute(
                "INSERT OR REPLACE INTO quarantined_tasks (id, owner, context_id, state,"
                " updated_ms, task_json, agent_state_json, reason, quarantined_ms)"
                " SELECT id, owner, context_id, state, updated_ms, task_json, agent_state_json,"
                " ?, ? FROM tasks WHERE id = ?",
                (reason, now, task_id),
            )
            conn.execute("DELETE FROM tasks WHERE id = ?", (task_id,))

    async def _quarantine(self, bad: list[tuple[str, str]]) -> None:
        """Log each unreadable row once and move it aside so no later read trips on it."""
        for task_id, reason in bad:
            logger.error(
                "A2A task store: task %r cannot be read (%s); moved to quarantined_tasks",
                task_id,
                reason,
            )

        def move(conn: sqlite3.Connection) -> None:
            conn.execute("BEGIN IMMEDIATE")
            try:
                self._quarantine_rows(conn, bad)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise

        try:
            await self._run(move)
        except Exception:
            # Reads still skip the row; moving it aside is best effort.
            logger.exception("A2A task store: could not quarantine unreadable task rows")

    async def save(self, record: TaskRecord) -> None:
        task = record.task
        params = (
            task.id,
            record.owner,
            task.context_id,
            task.status.state.value,
            task_time_ms(task),
            task.to_wire_json(),
            json.dumps(record.agent_state, ensure_ascii=False),
        )
        # Group commit: saves that arrive while a batch is being written go into the next
        # batch, one transaction and one thread hop for all of them. Each caller still returns
        # only once its own row is committed.
        future: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pending.append((params, future))
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush())
        await future

    async def _flush(self) -> None:
        while self._pending:
            batch, self._pending = self._pending, []
            try:
                outcomes = await self._run(functools.partial(self._write_batch, batch=batch))
            except BaseException as exc:
                for _, future in batch:
                    if not future.done():
                        future.set_exception(
                            exc if isinstance(exc, Exception) else RuntimeError("store closed")
                        )
                if not isinstance(exc, Exception):
                    raise
                continue
            for (_, future), ok in zip(batch, outcomes, strict=True):
                if future.done():
                    continue
                if ok:
                    future.set_result(None)
                else:
                    future.set_exception(PermissionError("task id belongs to another principal"))

    @staticmethod
    def _write_batch(
        conn: sqlite3.Connection, batch: list[tuple[tuple[Any, ...], asyncio.Future[None]]]
    ) -> list[bool]:
        outcomes = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for params, _ in batch:
                cur = conn.execute(
                    "INSERT INTO tasks (id, owner, context_id, state, updated_ms, task_json,"
                    " agent_state_json) VALUES (?, ?, ?, ?, ?, ?, ?)"
                    " ON CONFLICT(id) DO UPDATE SET context_id=excluded.context_id,"
                    " state=excluded.state, updated_ms=excluded.updated_ms,"
                    " task_json=excluded.task_json, agent_state_json=excluded.agent_state_json"
                    " WHERE tasks.owner = excluded.owner",
                    params,
                )
                outcomes.append(cur.rowcount > 0)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return outcomes

    async def get(self, task_id: str, owner: str) -> TaskRecord | None:
        def read(conn: sqlite3.Connection) -> tuple[str, str, str] | None:
            row = conn.execute(
                "SELECT owner, task_json, agent_state_json FROM tasks WHERE id = ? AND owner = ?",
                (task_id, owner),
            ).fetchone()
            return row  # type: ignore[no-any-return]

        row = await self._run(read)
        if row is None:
            return None
        record = self._try_record(row)
        if isinstance(record, str):
            await self._quarantine([(task_id, record)])
            return None
        return record

    async def list_tasks(self, owner: str, query: TaskQuery) -> TaskPage:
        where = ["owner = ?"]
        args: list[Any] = [owner]
        if query.context_id is not None:
            where.append("context_id = ?")
            args.append(query.context_id)
        if query.status is not None:
            where.append("state = ?")
            args.append(query.status.value)
        if query.status_after is not None:
            where.append("updated_ms >= ?")
            args.append(int(query.status_after.timestamp() * 1000))
        count_sql = "SELECT COUNT(*) FROM tasks WHERE " + " AND ".join(where)
        count_args = list(args)
        if query.page_token:
            ts, last_id = decode_page_token(query.page_token)
            where.append("(updated_ms < ? OR (updated_ms = ? AND id < ?))")
            args.extend([ts, ts, last_id])
        page_sql = (
            "SELECT updated_ms, id, task_json FROM tasks WHERE "
            + " AND ".join(where)
            + " ORDER BY updated_ms DESC, id DESC LIMIT ?"
        )
        args.append(query.page_size + 1)

        def read(conn: sqlite3.Connection) -> tuple[int, list[tuple[int, str, str]]]:
            total = conn.execute(count_sql, count_args).fetchone()[0]
            rows = conn.execute(page_sql, args).fetchall()
            return int(total), rows

        total, rows = await self._run(read)
        tasks, bad, token = parse_page(rows, query.page_size)
        if bad:
            await self._quarantine(bad)
            total = max(0, total - len(bad))
        return TaskPage(tasks=tasks, next_page_token=token, total_size=total)

    async def latest_in_context(self, context_id: str, owner: str) -> TaskRecord | None:
        def read(conn: sqlite3.Connection) -> tuple[str, str, str, str] | None:
            row = conn.execute(
                "SELECT owner, task_json, agent_state_json, id FROM tasks"
                " WHERE owner = ? AND context_id = ? ORDER BY updated_ms DESC, id DESC LIMIT 1",
                (owner, context_id),
            ).fetchone()
            return row  # type: ignore[no-any-return]

        # An unreadable newest row is moved aside and the next newest one answers instead.
        for _ in range(100):
            row = await self._run(read)
            if row is None:
                return None
            record = self._try_record((row[0], row[1], row[2]))
            if not isinstance(record, str):
                return record
            await self._quarantine([(row[3], record)])
        return None

    async def recover(self) -> int:
        def fix(conn: sqlite3.Connection) -> tuple[int, list[tuple[str, str]]]:
            rows = conn.execute(
                "SELECT id, task_json FROM tasks WHERE state IN (?, ?)", RUNNING_STATES
            ).fetchall()
            fixed = 0
            bad: list[tuple[str, str]] = []
            conn.execute("BEGIN")
            try:
                for task_id, task_json in rows:
                    # Parse each row on its own: one unreadable row is moved aside, never
                    # allowed to abort recovery (and with it the node's startup).
                    try:
                        task = fail_interrupted(Task.model_validate_json(task_json))
                        task_wire = task.to_wire_json()
                    except PARSE_ERRORS as exc:
                        bad.append((task_id, unreadable_reason(exc)))
                        continue
                    conn.execute(
                        "UPDATE tasks SET state = ?, updated_ms = ?, task_json = ? WHERE id = ?",
                        (task.status.state.value, task_time_ms(task), task_wire, task_id),
                    )
                    fixed += 1
                self._quarantine_rows(conn, bad)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return fixed, bad

        fixed, bad = await self._run(fix)
        for task_id, reason in bad:
            logger.error(
                "A2A task store: interrupted task %r cannot be read (%s); moved to"
                " quarantined_tasks",
                task_id,
                reason,
            )
        return fixed

    async def save_push_config(self, config: TaskPushNotificationConfig) -> None:
        assert config.task_id and config.id
        params = (
            config.task_id,
            config.id,
            config.to_wire_json(),
            int(utc_now().timestamp() * 1000),
        )

        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "INSERT INTO push_configs (task_id, id, config_json, created_ms)"
                " VALUES (?, ?, ?, ?) ON CONFLICT(task_id, id) DO UPDATE"
                " SET config_json = excluded.config_json",
                params,
            )

        await self._run(write)

    async def get_push_config(
        self, task_id: str, config_id: str
    ) -> TaskPushNotificationConfig | None:
        def read(conn: sqlite3.Connection) -> tuple[str] | None:
            row = conn.execute(
                "SELECT config_json FROM push_configs WHERE task_id = ? AND id = ?",
                (task_id, config_id),
            ).fetchone()
            return row  # type: ignore[no-any-return]

        row = await self._run(read)
        return None if row is None else TaskPushNotificationConfig.model_validate_json(row[0])

    async def list_push_configs(self, task_id: str) -> list[TaskPushNotificationConfig]:
        def read(conn: sqlite3.Connection) -> list[tuple[str]]:
            return conn.execute(
                "SELECT config_json FROM push_configs WHERE task_id = ? ORDER BY created_ms, id",
                (task_id,),
            ).fetchall()

        rows = await self._run(read)
        return [TaskPushNotificationConfig.model_validate_json(r[0]) for r in rows]

    async def delete_push_config(self, task_id: str, config_id: str) -> None:
        def write(conn: sqlite3.Connection) -> None:
            conn.execute(
                "DELETE FROM push_configs WHERE task_id = ? AND id = ?", (task_id, config_id)
            )

        await self._run(write)

    async def close(self) -> None:
        if self._flusher is not None and not self._flusher.done():
            await self._flusher

        def shut(conn: sqlite3.Connection) -> None:
            self._closed = True
            conn.close()

        if not self._closed:
            await self._run(shut)
