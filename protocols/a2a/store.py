"""Where an A2A node keeps its tasks and push-notification configs.

A task is stored with the principal that created it (its *owner*): every read takes the
caller's principal and answers as if another principal's task did not exist, so one client can
never see, list, cancel or subscribe to another's work (spec 13.1). Next to the wire ``Task`` a
record keeps ``agent_state``, the runtime's own message history (tool calls included) as JSON, so
a follow-up message continues the conversation exactly where the model left it.

Two implementations: ``SQLiteTaskStore`` (:mod:`.sqlite_store`, the default: one file,
survives restarts, WAL mode, one connection driven from a worker thread under a lock; unreadable
rows quarantined) and :class:`InMemoryTaskStore` (tests, throwaway nodes).

Listing is ordered by status timestamp, newest first, with ``id`` as tie-breaker, and paginated
by an opaque cursor (the last row's ``(timestamp, id)``), never by offset (spec 3.1.4).
"""

from __future__ import annotations

import base64
import binascii
import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypeVar

from .errors import InvalidPageToken as InvalidPageToken  # re-exported: raised here
from .events import EventBus, InProcessEventBus
from .types import (
    Message,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    utc_now,
)

_T = TypeVar("_T")

logger = logging.getLogger(__name__)

DEFAULT_PAGE_SIZE = 50
MAX_PAGE_SIZE = 100


@dataclass
class TaskRecord:
    """A stored task: the wire object, its owner, and the runtime's conversation state."""

    task: Task
    owner: str = ""
    agent_state: list[dict[str, Any]] = field(default_factory=list)
    agent_waits: bool = False
    """Saved by a node whose agent call waits on this interrupted task (``ask_input`` /
    ``ask_auth``): the next message on the task must go to that node."""
    node_id: str | None = None
    """Read back from a store that several nodes share: the live node that runs the task or
    holds its waiting agent call (None when no live node does, and in single-node stores)."""


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


def task_time_ms(task: Task) -> int:
    ts = task.status.timestamp
    if ts is None:
        return 0
    return int(ts.timestamp() * 1000)


def encode_page_token(ts_ms: int, task_id: str) -> str:
    raw = f"{ts_ms}|{task_id}".encode()
    return base64.urlsafe_b64encode(raw).decode("ascii").rstrip("=")


_TOKEN_MAX_CHARS = 2048
_INT64_MIN, _INT64_MAX = -(2**63), 2**63 - 1


def decode_page_token(token: str) -> tuple[int, str]:
    """The ``(timestamp ms, task id)`` cursor in a token from :func:`encode_page_token`.

    Anything else (not base64, not UTF-8, no separator, a timestamp outside the signed 64-bit
    range a database column holds, an oversized token) is :class:`InvalidPageToken`.
    """
    try:
        if len(token) > _TOKEN_MAX_CHARS:
            raise ValueError("too long")
        padded = token + "=" * (-len(token) % 4)
        text = base64.urlsafe_b64decode(padded.encode("ascii")).decode()
        ts_text, task_id = text.split("|", 1)
        ts_ms = int(ts_text)
        if not _INT64_MIN <= ts_ms <= _INT64_MAX:
            raise ValueError("timestamp out of range")
        return ts_ms, task_id
    except (ValueError, binascii.Error, UnicodeError) as exc:
        raise InvalidPageToken(f"invalid pageToken {token[:40]!r}") from exc


class StaleTaskError(RuntimeError):
    """A save refused because the stored task is terminal and the save would change it.

    A node that stalled past its lease finds its task already ended by another node (failed as
    lost); what it saves later must not bring the task back (fencing by state).
    """


RESTART_NOTE = "The agent node restarted while this task was running; the run was lost."


def fail_interrupted(task: Task, note_text: str | None = None) -> Task:
    """A task whose run was lost (node restarted or died): it can never finish, so it fails.

    ``note_text`` is the status message (default: :data:`RESTART_NOTE`).
    """
    note = Message.agent_text(
        note_text or RESTART_NOTE,
        context_id=task.context_id,
        task_id=task.id,
    )
    return task.model_copy(
        update={"status": TaskStatus(state=TaskState.FAILED, message=note, timestamp=utc_now())}
    )


RUNNING_STATES = (TaskState.SUBMITTED.value, TaskState.WORKING.value)


def unreadable_reason(exc: BaseException) -> str:
    """A short, single-line description of why a stored row could not be parsed."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:300]}"


PARSE_ERRORS = (ValueError, TypeError, RecursionError)
"""What parsing a stored row may raise when the row is unreadable."""


def parse_page(
    rows: Sequence[tuple[int, str, str]], page_size: int
) -> tuple[list[Task], list[tuple[str, str]], str]:
    """A ListTasks page from ``(updated_ms, id, task_json)`` rows, newest first, read with one
    row more than ``page_size`` (whether a next page exists): the tasks that parse, the
    ``(id, reason)`` of rows that do not (for quarantine), and the next page token."""
    more = len(rows) > page_size
    rows = rows[:page_size]
    token = encode_page_token(rows[-1][0], rows[-1][1]) if more and rows else ""
    tasks: list[Task] = []
    bad: list[tuple[str, str]] = []
    for _, task_id, task_json in rows:
        try:
            tasks.append(Task.model_validate_json(task_json))
        except PARSE_ERRORS as exc:
            bad.append((task_id, unreadable_reason(exc)))
    return tasks, bad, token


class TaskStore(ABC):
    """Storage for tasks and push configs, scoped by owner."""

    @abstractmethod
    async def save(self, record: TaskRecord) -> None:
        """Insert or replace a task (its owner never changes once stored).

        A store that several nodes share refuses to change a terminal task
        (:class:`StaleTaskError`); re-saving it unchanged is allowed.
        """

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

    def event_bus(self) -> EventBus:
        """The bus a node on this store publishes task events to (:mod:`.events`).

        A store that only this process can reach gets an in-process bus; a store that several
        nodes share (PostgreSQL) returns a bus that spans them. One bus per store.
        """
        bus: EventBus | None = getattr(self, "_event_bus", None)
        if bus is None:
            bus = InProcessEventBus()
            self._event_bus = bus
        return bus

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
            ts = task_time_ms(task)
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
                if best is None or task_time_ms(record.task) >= task_time_ms(best.task):
                    best = record
        return best

    async def recover(self) -> int:
        count = 0
        for record in self._tasks.values():
            if record.task.status.state.value in RUNNING_STATES:
                record.task = fail_interrupted(record.task)
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
