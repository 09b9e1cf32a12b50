"""Following an A2A task to the end: a task is not done when the peer first answers.

:func:`follow_task` and :func:`send_and_wait` (the client's methods of the same names) take a
task to a terminal or interrupted state: through ``SubscribeToTask`` when the card says the peer
streams, falling back to polling ``GetTask`` with growing intervals when a stream breaks or is
not offered. Streamed updates fold into a snapshot with :func:`apply_event`.
"""

from __future__ import annotations

from contextlib import aclosing
from typing import TYPE_CHECKING, Any

import anyio

from .errors import (
    A2AConnectionError,
    InvalidAgentResponseError,
    TaskFollowTimeout,
    UnsupportedOperationError,
)
from .types import (
    Message,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatusUpdateEvent,
)

if TYPE_CHECKING:
    from .client import A2AClient, SendOptions


# --------------------------------------------------------------------------- task snapshots


def apply_event(task: Task, event: TaskStatusUpdateEvent | TaskArtifactUpdateEvent) -> Task:
    """Fold one streamed update into a task snapshot (in place; returned for chaining).

    A status update replaces the status; an artifact update adds the artifact, or, with
    ``append``, extends the parts of the artifact with the same id.
    """
    if isinstance(event, TaskStatusUpdateEvent):
        task.status = event.status
        if event.context_id and not task.context_id:
            task.context_id = event.context_id
        return task
    incoming = event.artifact
    for index, existing in enumerate(task.artifacts):
        if existing.artifact_id == incoming.artifact_id:
            if event.append:
                existing.parts.extend(incoming.parts)
                if incoming.name and not existing.name:
                    existing.name = incoming.name
            else:
                task.artifacts[index] = incoming.model_copy(deep=True)
            return task
    task.artifacts.append(incoming.model_copy(deep=True))
    return task


def _is_settled(state: TaskState) -> bool:
    """Terminal, or waiting on the client (input/auth required): following stops here."""
    return state.is_terminal or state.is_interrupted


def _fold(snapshot: Task | None, event: StreamResponse) -> Task | None:
    """The snapshot after one streamed event (``None`` until a Task has been seen)."""
    if event.task is not None:
        return event.task
    if snapshot is None:
        if event.status_update is not None:
            update = event.status_update
            return Task(id=update.task_id, context_id=update.context_id, status=update.status)
        return None
    if event.status_update is not None:
        return apply_event(snapshot, event.status_update)
    if event.artifact_update is not None:
        return apply_event(snapshot, event.artifact_update)
    return snapshot


def _fold_settled(last: list[Task | None], event: StreamResponse) -> Task | None:
    """Fold ``event`` into the snapshot in ``last[0]``; the task once it has settled."""
    current = _fold(last[0], event)
    if current is not None:
        last[0] = current
        if _is_settled(current.status.state):
            return current
    return None


# --------------------------------------------------------------------------- following


async def follow_task(
    client: A2AClient,
    task: Task | str,
    *,
    timeout_s: float | None,
    poll_interval_s: float,
    max_poll_interval_s: float,
    use_streaming: bool | None,
) -> Task:
    """Wait until a task is terminal or interrupted and return its final snapshot.

    Subscribes when the card says the peer streams (``use_streaming`` overrides), and polls
    GetTask with growing intervals otherwise, or when the stream ends early or breaks.
    Raises :class:`~.errors.TaskFollowTimeout` after ``timeout_s``.
    """
    snapshot = task if isinstance(task, Task) else None
    task_id = task.id if isinstance(task, Task) else task
    if snapshot is not None and _is_settled(snapshot.status.state):
        return snapshot
    if use_streaming is None:
        use_streaming = bool((await client.get_card()).capabilities.streaming)
    last: list[Task | None] = [snapshot]
    try:
        with anyio.fail_after(timeout_s):
            return await _follow(
                client, task_id, last, use_streaming, poll_interval_s, max_poll_interval_s
            )
    except TimeoutError as exc:
        raise TaskFollowTimeout(
            f"task {task_id} did not settle within {timeout_s}s", last[0]
        ) from exc


async def _follow(
    client: A2AClient,
    task_id: str,
    last: list[Task | None],
    use_streaming: bool,
    poll_interval_s: float,
    max_poll_interval_s: float,
) -> Task:
    if use_streaming:
        try:
            async with aclosing(client.subscribe(task_id)) as events:
                async for event in events:
                    if (settled := _fold_settled(last, event)) is not None:
                        return settled
        except UnsupportedOperationError:
            pass  # already terminal (subscribe refuses those): read it below
        except A2AConnectionError:
            pass  # the stream broke: fall back to polling
    interval = poll_interval_s
    while True:
        current = await client.get_task(task_id)
        last[0] = current
        if _is_settled(current.status.state):
            return current
        await anyio.sleep(interval)
        interval = min(max_poll_interval_s, interval * 1.5)


async def send_and_wait(
    client: A2AClient,
    message: Message | str,
    *,
    timeout_s: float | None,
    streaming: bool | None,
    on_event: Any,
    return_immediately: bool,
    options: SendOptions,
) -> Task | Message:
    """Send a message and follow the task it starts until it is terminal or interrupted.

    See :meth:`~.client.A2AClient.send_and_wait`.
    """
    if streaming is None:
        streaming = bool((await client.get_card()).capabilities.streaming)
    last: list[Task | None] = [None]
    try:
        with anyio.fail_after(timeout_s):
            if not streaming:
                return await _send_then_poll(
                    client, message, last, on_event, return_immediately, options
                )
            return await _send_streaming(client, message, last, on_event, options)
    except TimeoutError as exc:
        raise TaskFollowTimeout(f"the peer did not settle within {timeout_s}s", last[0]) from exc


async def _send_then_poll(
    client: A2AClient,
    message: Message | str,
    last: list[Task | None],
    on_event: Any,
    return_immediately: bool,
    options: SendOptions,
) -> Task | Message:
    """Without streaming: one SendMessage, then GetTask until the task settles."""
    reply = await client.send_message(message, return_immediately=return_immediately, **options)
    if on_event is not None:
        event = StreamResponse(task=reply) if isinstance(reply, Task) else None
        await on_event(event or StreamResponse(message=reply))
    if isinstance(reply, Message):
        return reply
    last[0] = reply
    if _is_settled(reply.status.state):
        return reply
    return await _follow(client, reply.id, last, False, 0.05, 1.0)


async def _send_streaming(
    client: A2AClient,
    message: Message | str,
    last: list[Task | None],
    on_event: Any,
    options: SendOptions,
) -> Task | Message:
    """SendStreamingMessage, folding each event; polling takes over if the stream ends early."""
    try:
        async with aclosing(client.send_message_streaming(message, **options)) as events:
            async for event in events:
                if on_event is not None:
                    await on_event(event)
                if event.message is not None and last[0] is None:
                    return event.message
                if (settled := _fold_settled(last, event)) is not None:
                    return settled
    except A2AConnectionError:
        if last[0] is None:
            raise
    if last[0] is None:
        raise InvalidAgentResponseError("the stream ended before it named a task")
    return await _follow(client, last[0].id, last, False, 0.1, 2.0)
