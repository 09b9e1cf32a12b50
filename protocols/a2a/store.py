"""Where an A2A node keeps its tasks and push-notification configs.

A task is stored with the principal that created it (its *owner*): every read takes the
caller's principal and answers as if another principal's task did not exist, so one client can
never see, list, cancel or subscribe to another's work (spec 13.1). Next to the wire ``Task`` a
record keeps ``agent_state``, the runtime's own message history (tool calls included) as JSON, so
a follow-up message continues the conversation exactly where the model left it.

Two implementations: :class:`SQLiteTaskStore` (the default: one file, survives restarts, WAL
mode, one connection driven from a worker thread under a lock) and :class:`InMemoryTaskStore`
(tests, throwaway nodes).

Listing is ordered by status timestamp, newest first, with ``id`` as tie-breaker, and paginated
by an opaque cursor (the last row's ``(timestamp, id)``), never by offset (spec 3.1.4).
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import json
import sqlite3
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import anyio
import anyio.to_thread

from .errors import InvalidPageToken as InvalidPageToken  # re-exported: raised here
from .types import (
    Message,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    utc_now,
)

_T = TypeVar("_T")

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


@dataclass
class TaskRecord:
    """A stored task: the wire object, its owner, and the runtime's conversation state."""

    task: Task
    owner: str = ""
    agent_state: list[dict[str, Any]] = field(default_factory=list)


@dataclass(frozen=True)
class TaskQuery:
    """ListTasks filters, already validated."""

    context_id: str | None = None
    status: TaskState | None = None
    status_after: datetime | None = None
    page_size: int = DEFAULT_PAGE_SIZE
    page_token: str | None = None


@dataclass
class TaskPage:
    tasks: list[Task]
    next_page_token: str
    total_size: int


def _ts_ms(task: Task) -> int:
    ts = task.status.timestamp
    if ts is None:
        return 0
    return int(ts.timestamp() * 1000)


def encode_page_token(ts_ms: int, task_id: str) -> str:
    raw = f"{ts_ms}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


def decode_page_token(token: str) -> tuple[int, str]:
    try:
        padded = token + "=" * (-len(token) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
        ts_text, task_id = text.split("|", 1)
        return int(ts_text), task_id
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise InvalidPageToken(f"invalid pageToken {token[:40]!r}") from exc


def _fail_interrupted(task: Task) -> Task:
    """A task a restart caught mid-run: it can never finish, so it is marked failed."""
    note = Message.agent_text(
        "The agent node restarted while this task was running; the run was lost.",
        context_id=task.context_id,
        task_id=task.id,
    )
    return task.model_copy(
        update={"status": TaskStatus(state=TaskState.FAILED, message=note, timestamp=utc_now())}
    )


_RUNNING = (TaskState.SUBMITTED.value, TaskState.WORKING.value)


class TaskStore(ABC):
    """Storage for tasks and push configs, scoped by owner."""

    @abstractmethod
    async def save(self, record: TaskRecord) -> None:
        """Insert or replace a task (its owner never changes once stored)."""

    @abstractmethod
    async def get(self, task_id: str, owner: str) -> TaskRecord | None:
        """The task if it exists and belongs to ``owner``."""

    @abstractmethod
    async def list_tasks(self, owner: str, query: TaskQuery) -> TaskPage:
        """One page of ``owner``'s tasks, newest status first."""

    @abstractmethod
    async def latest_in_context(self, context_id: str, owner: str) -> TaskRecord | None:
        """The most recently updated task of ``owner`` in a context (for context inheritance)."""

    @abstractmethod
    async def recover(self) -> int:
        """Mark tasks left SUBMITTED/WORKING by a previous process FAILED; return how many."""

    @abstractmethod
    async def save_push_config(self, config: TaskPushNotificationConfig) -> None:
        """Insert or replace by (task_id, id); the caller has checked ownership of the task."""

    @abstractmethod
    async def get_push_config(
        self, task_id: str, config_id: str
    ) -> TaskPushNotificationConfig | None: ...

    @abstractmethod
    async def list_push_configs(self, task_id: str) -> list[TaskPushNotificationConfig]: ...

    @abstractmethod
    async def delete_push_config(self, task_id: str, config_id: str) -> None:
        """Idempotent."""

    async def close(self) -> None:  # noqa: B027 - optional hook
        """Release resources."""


# --------------------------------------------------------------------------- in memory


class InMemoryTaskStore(TaskStore):
    """Dicts in this process; gone at exit."""

    def __init__(self) -> None:
        self._tasks: dict[str, TaskRecord] = {}
        self._push: dict[str, dict[str, TaskPushNotificationConfig]] = {}

    async def save(self, record: TaskRecord) -> None:
        existing = self._tasks.get(record.task.id)
        if existing is not None and existing.owner != record.owner:
            raise PermissionError("task id belongs to another principal")
        self._tasks[record.task.id] = record

    async def get(self, task_id: str, owner: str) -> TaskRecord | None:
        record = self._tasks.get(task_id)
        if record is None or record.owner != owner:
            return None
        return record

    async def list_tasks(self, owner: str, query: TaskQuery) -> TaskPage:
        after_ms = (
            int(query.status_after.timestamp() * 1000) if query.status_after is not None else None
        )
        rows = []
        for record in self._tasks.values():
            task = record.task
            if record.owner != owner:
                continue
            if query.context_id is not None and task.context_id != query.context_id:
                continue
            if query.status is not None and task.status.state != query.status:
                continue
            ts = _ts_ms(task)
            if after_ms is not None and ts < after_ms:
                continue
            rows.append((ts, task.id, task))
        total = len(rows)
        rows.sort(key=lambda r: (r[0], r[1]), reverse=True)
        if query.page_token:
            cursor = decode_page_token(query.page_token)
            rows = [r for r in rows if (r[0], r[1]) < cursor]
        page = rows[: query.page_size]
        more = len(rows) > query.page_size
        token = encode_page_token(page[-1][0], page[-1][1]) if more and page else ""
        return TaskPage(tasks=[r[2] for r in page], next_page_token=token, total_size=total)

    async def latest_in_context(self, context_id: str, owner: str) -> TaskRecord | None:
        best: TaskRecord | None = None
        for record in self._tasks.values():
            if record.owner == owner and record.task.context_id == context_id:
                if best is None or _ts_ms(record.task) >= _ts_ms(best.task):
                    best = record
        return best

    async def recover(self) -> int:
        count = 0
        for record in self._tasks.values():
            if record.task.status.state.value in _RUNNING:
                record.task = _fail_interrupted(record.task)
                count += 1
        return count

    async def save_push_config(self, config: TaskPushNotificationConfig) -> None:
        assert config.task_id and config.id
        self._push.setdefault(config.task_id, {})[config.id] = config

    async def get_push_config(
        self, task_id: str, config_id: str
    ) -> TaskPushNotificationConfig | None:
        return self._push.get(task_id, {}).get(config_id)

    async def list_push_configs(self, task_id: str) -> list[TaskPushNotificationConfig]:
        return list(self._push.get(task_id, {}).values())

    async def delete_push_config(self, task_id: str, config_id: str) -> None:
        self._push.get(task_id, {}).pop(config_id, None)


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
        return TaskRecord(
            task=Task.model_validate_json(task_json),
            owner=owner,
            agent_state=json.loads(state_json),
        )

    async def save(self, record: TaskRecord) -> None:
        task = record.task
        params = (
            task.id,
            record.owner,
            task.context_id,
            task.status.state.value,
            _ts_ms(task),
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
        return None if row is None else self._row_to_record(row)

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
        more = len(rows) > query.page_size
        rows = rows[: query.page_size]
        token = encode_page_token(rows[-1][0], rows[-1][1]) if more and rows else ""
        tasks = [Task.model_validate_json(r[2]) for r in rows]
        return TaskPage(tasks=tasks, next_page_token=token, total_size=total)

    async def latest_in_context(self, context_id: str, owner: str) -> TaskRecord | None:
        def read(conn: sqlite3.Connection) -> tuple[str, str, str] | None:
            row = conn.execute(
                "SELECT owner, task_json, agent_state_json FROM tasks"
                " WHERE owner = ? AND context_id = ? ORDER BY updated_ms DESC, id DESC LIMIT 1",
                (owner, context_id),
            ).fetchone()
            return row  # type: ignore[no-any-return]

        row = await self._run(read)
        return None if row is None else self._row_to_record(row)

    async def recover(self) -> int:
        def fix(conn: sqlite3.Connection) -> int:
            rows = conn.execute(
                "SELECT id, task_json FROM tasks WHERE state IN (?, ?)", _RUNNING
            ).fetchall()
            conn.execute("BEGIN")
            try:
                for task_id, task_json in rows:
                    task = _fail_interrupted(Task.model_validate_json(task_json))
                    conn.execute(
                        "UPDATE tasks SET state = ?, updated_ms = ?, task_json = ? WHERE id = ?",
                        (task.status.state.value, _ts_ms(task), task.to_wire_json(), task_id),
                    )
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            return len(rows)

        return await self._run(fix)

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
