"""Which task a message belongs to: a new one, a stored one it continues, or one whose agent waits.

A message without ``taskId`` makes a new task (in its ``contextId``, inheriting the state the
agent saved with that context's latest task). A message with one continues that task, which must
be the caller's, in the same context and not terminal; it goes to the agent call waiting on the
task if there is one (:func:`waiting_for`), else a new agent call starts on it
(:func:`continued`), unless the task is at work. The handler (:mod:`.handler`) decides what to
do with the answer; these are the rules.

``live`` is the handler's map of the tasks whose agent call is in progress in this node.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime
from typing import Any

from .errors import InvalidParamsError, TaskNotFoundError, UnsupportedOperationError
from .live import LiveTask
from .store import RUNNING_STATES, TaskRecord, TaskStore
from .types import Message, Task, TaskState, TaskStatus, new_id

__all__ = ["continued", "new_task", "referenced", "stored_task", "waiting_for"]

MAX_REFERENCED_TASKS = 10


def _still_running(task_id: str) -> UnsupportedOperationError:
    return UnsupportedOperationError(
        f"Task {task_id} is still running; wait for it or cancel it",
        metadata={"taskId": task_id},
    )


def _context_mismatch(task_id: str) -> InvalidParamsError:
    return InvalidParamsError.from_violations(
        [("message.contextId", f"does not match the contextId of task {task_id}")]
    )


def waiting_for(live: Mapping[str, LiveTask], principal: str, message: Message) -> LiveTask | None:
    """The caller's live task that ``message`` answers, if its agent waits on an ``ask_*``."""
    found = live.get(message.task_id or "")
    if found is None or found.record.owner != principal or not found.awaiting_reply:
        return None
    if message.context_id and message.context_id != found.task.context_id:
        raise _context_mismatch(found.task.id)
    return found


async def stored_task(
    store: TaskStore, live: Mapping[str, LiveTask], principal: str, message: Message
) -> TaskRecord:
    """The caller's task that ``message`` (with a ``taskId``) answers, if it may take messages."""
    task_id = message.task_id or ""
    running = live.get(task_id)
    if running is not None and running.record.owner == principal:
        raise _still_running(task_id)
    record = await store.get(task_id, principal)
    if record is None:
        raise TaskNotFoundError(metadata={"taskId": task_id})
    task = record.task
    if message.context_id and message.context_id != task.context_id:
        raise _context_mismatch(task_id)
    if task.status.state.is_terminal:
        raise UnsupportedOperationError(
            f"Task {task_id} is {task.status.state.value}; a terminal task accepts no"
            " more messages",
            metadata={"taskId": task_id, "state": task.status.state.value},
        )
    return record


def continued(
    record: TaskRecord, message: Message, now: datetime, live: Mapping[str, LiveTask]
) -> TaskRecord:
    """``record``'s task with ``message`` added, SUBMITTED for a new agent call."""
    task = record.task
    if task.id in live or task.status.state.value in RUNNING_STATES:
        # Started by a concurrent request while we read, or running on another node.
        raise _still_running(task.id)
    incoming = message.model_copy(update={"context_id": task.context_id})
    task = task.model_copy(
        update={
            "history": [*task.history, incoming],
            "status": TaskStatus(state=TaskState.SUBMITTED, timestamp=now),
        }
    )
    return TaskRecord(task=task, owner=record.owner, agent_state=record.agent_state)


async def new_task(
    store: TaskStore, principal: str, message: Message, now: datetime
) -> tuple[TaskRecord, list[dict[str, Any]]]:
    """A new task for ``message``; the agent state of the latest task in its context."""
    context_id = message.context_id or new_id()
    state: list[dict[str, Any]] = []
    if message.context_id:
        previous = await store.latest_in_context(context_id, principal)
        if previous is not None:
            state = previous.agent_state
    task_id = new_id()
    incoming = message.model_copy(update={"context_id": context_id, "task_id": task_id})
    task = Task(
        id=task_id,
        context_id=context_id,
        status=TaskStatus(state=TaskState.SUBMITTED, timestamp=now),
        history=[incoming],
    )
    return TaskRecord(task=task, owner=principal, agent_state=[]), state


async def referenced(
    store: TaskStore, live: Mapping[str, LiveTask], principal: str, message: Message
) -> tuple[Task, ...]:
    """The tasks ``message`` references that belong to the caller (spec 3.4.3); at most 10,
    and unknown ones or others' are left out without a word."""
    found = []
    for ref in message.reference_task_ids[:MAX_REFERENCED_TASKS]:
        running = live.get(ref)
        if running is not None and running.record.owner == principal:
            found.append(running.snapshot())
            continue
        record = await store.get(ref, principal)
        if record is not None:
            found.append(record.task)
    return tuple(found)
