"""How a served agent answers a request: a Message, or a task it moves through its states.

A :class:`TaskReply` is handed to the agent with the :class:`~.request_context.RequestContext`.
Its first call decides the shape of the answer:

- ``reply(...)`` before anything else answers with a Message and no task (spec 3.1.1: a
  SendMessage may return a Message); nothing is stored;
- anything else makes a task the caller gets back: ``start`` / ``status`` (WORKING, with a
  message), ``add_artifact`` / ``artifact_chunk`` (sent to streams exactly as given: ids, names,
  parts of any kind, ``append`` and ``lastChunk``), then one ending: ``complete``, ``fail``,
  ``reject`` (REJECTED), ``require_input`` (INPUT_REQUIRED) or ``require_auth``
  (AUTH_REQUIRED). An agent that returns without an ending completes the task.

``ask_input`` and ``ask_auth`` stop the task in INPUT_REQUIRED / AUTH_REQUIRED and wait: the
caller's next message on that task (``SendMessage`` with its ``taskId``) is returned, the task
goes back to WORKING and the agent carries on where it was. ``require_input`` and
``require_auth`` instead end this call of the agent; the next message on the task starts a new
one, with the saved ``state``.

The node decides where the changes go through a :class:`TaskChannel` (stored, streamed, pushed).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Protocol

from .types import (
    Artifact,
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    new_id,
    utc_now,
)


class TaskChannel(Protocol):
    """What the node does with a reply's decisions (implemented by the request handler)."""

    async def open_task(self) -> None:
        """The agent answers with a task: store it and give it to the caller."""

    def wants_events(self) -> bool:
        """Whether an event published now could reach anyone (a stream, a push config, another
        node); when not, the reply does not build it (the task's snapshot still has it all)."""

    def publish(self, event: StreamResponse) -> None:
        """A change of the task (``TaskReply.task`` already shows it) for streams and push."""

    async def stop(self, status: TaskStatus, *, waiting: bool = False) -> None:
        """The task ends or is interrupted in ``status``: store it, then announce it.
        ``waiting``: interrupted by an ``ask_*`` whose agent call waits for the answer."""

    async def respond(self, message: Message) -> None:
        """The agent answers with ``message`` and no task."""

    async def next_message(self) -> Message:
        """After an interrupting ``stop``: wait for the caller's next message on the task."""


class ReplyClosedError(RuntimeError):
    """The agent changed a task it had already ended, or answered twice."""


MessageContent = str | Message | Sequence[Part] | None


class TaskReply:
    """A served agent's answer to one request (see the module docstring)."""

    def __init__(self, task: Task, channel: TaskChannel, *, task_exists: bool) -> None:
        self._task = task
        self._channel = channel
        self._artifacts: dict[str, Artifact] = {a.artifact_id: a for a in task.artifacts}
        self._artifacts_changed = False
        self._opened = task_exists
        self._closed = False
        self._state_set = False
        self.state: list[dict[str, Any]] = []
        """What ``save_state`` kept (stored with the task)."""
        self.message: Message | None = None
        """The Message answered instead of a task, if any."""

    # ------------------------------------------------------------------ the task as it stands

    @property
    def task(self) -> Task:
        """The task with every change made so far (what a subscriber joining now is shown)."""
        if self._artifacts_changed:
            artifacts = list(self._artifacts.values())
            self._task = self._task.model_copy(update={"artifacts": artifacts})
            self._artifacts_changed = False
        return self._task

    @property
    def opened(self) -> bool:
        """Whether the answer is a task (a Message can no longer be given)."""
        return self._opened

    @property
    def closed(self) -> bool:
        """Whether the agent gave its ending (or a Message)."""
        return self._closed

    @property
    def state_saved(self) -> bool:
        return self._state_set

    def save_state(self, state: list[dict[str, Any]]) -> None:
        """Keep ``state`` (JSON objects) with the task; the next request on this task (or a new
        task in its context) finds it as ``RequestContext.state``."""
        self.state = state
        self._state_set = True

    # ------------------------------------------------------------------ building messages

    def agent_message(self, content: MessageContent, *, data: Any = None) -> Message | None:
        """An agent message of this task from text, parts or a message (``None`` for none)."""
        task = self._task
        if content is None and data is None:
            return None
        if isinstance(content, Message):
            return content.model_copy(
                update={"role": Role.AGENT, "task_id": task.id, "context_id": task.context_id}
            )
        parts: list[Part] = []
        if isinstance(content, str):
            parts.append(Part(text=content))
        elif content is not None:
            parts.extend(content)
        if data is not None:
            parts.append(Part(data=data))
        return Message(
            message_id=new_id(),
            role=Role.AGENT,
            parts=parts,
            context_id=task.context_id,
            task_id=task.id,
        )

    # ------------------------------------------------------------------ a Message, no task

    async def reply(self, content: str | Message | Sequence[Part]) -> None:
        """Answer with a Message and no task; on a task that exists already (a continued
        task, or after other calls), the message completes it instead."""
        if self._opened:
            await self.complete(content)
            return
        self._check_open()
        message = self.agent_message(content)
        assert message is not None
        message = message.model_copy(update={"task_id": None})
        self._closed = True
        self.message = message
        await self._channel.respond(message)

    # ------------------------------------------------------------------ task updates

    async def start(self, content: MessageContent = None) -> None:
        """Answer with a task, WORKING (with an optional status message)."""
        await self.status(content)

    async def status(self, content: MessageContent = None, *, data: Any = None) -> None:
        """A WORKING status update; its message (progress, activity) is not kept in history."""
        await self._open()
        status = TaskStatus(
            state=TaskState.WORKING,
            message=self.agent_message(content, data=data),
            timestamp=utc_now(),
        )
        self._set_status(status)
        if self._channel.wants_events():
            self._channel.publish(self._status_event(status))

    async def add_artifact(
        self,
        parts: Sequence[Part],
        *,
        artifact_id: str | None = None,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """A whole artifact in one event (``lastChunk``); replaces one with the same id. Parts
        may be text, ``raw`` bytes or a ``url`` (with ``filename`` / ``mediaType``) or data."""
        return await self.artifact_chunk(
            parts,
            artifact_id=artifact_id,
            name=name,
            description=description,
            metadata=metadata,
            append=False,
            last_chunk=True,
        )

    async def artifact_chunk(
        self,
        parts: Sequence[Part],
        *,
        artifact_id: str | None = None,
        append: bool = True,
        last_chunk: bool = False,
        name: str | None = None,
        description: str | None = None,
        metadata: dict[str, Any] | None = None,
    ) -> str:
        """One chunk of an artifact, sent as given: ``append`` adds ``parts`` to the artifact
        so far (the first chunk of a new artifact is its start), otherwise they replace it.
        Returns the artifact id (a new one when none is given)."""
        await self._open()
        artifact_id = artifact_id or new_id()
        chunk = Artifact(
            artifact_id=artifact_id,
            name=name,
            description=description,
            parts=list(parts),
            metadata=metadata,
        )
        before = self._artifacts.get(artifact_id)
        if append and before is not None:
            self._artifacts[artifact_id] = before.model_copy(
                update={
                    "parts": [*before.parts, *chunk.parts],
                    "name": name or before.name,
                    "description": description or before.description,
                    "metadata": metadata or before.metadata,
                }
            )
        else:
            self._artifacts[artifact_id] = chunk
        self._artifacts_changed = True
        if not self._channel.wants_events():
            return artifact_id
        task = self._task
        assert task.context_id is not None
        self._channel.publish(
            StreamResponse(
                artifact_update=TaskArtifactUpdateEvent(
                    task_id=task.id,
                    context_id=task.context_id,
                    artifact=chunk,
                    append=append,
                    last_chunk=last_chunk,
                )
            )
        )
        return artifact_id

    def discard_artifact(self, artifact_id: str) -> None:
        """Drop an artifact from the task without an event (streams saw its chunks; the task
        keeps nothing of it), e.g. a half-written answer of a run that failed."""
        if self._artifacts.pop(artifact_id, None) is not None:
            self._artifacts_changed = True

    # ------------------------------------------------------------------ endings

    async def complete(self, content: MessageContent = None) -> None:
        """COMPLETED, with an optional final message (kept in history)."""
        await self._stop(TaskState.COMPLETED, content)

    async def fail(self, content: MessageContent = None) -> None:
        await self._stop(TaskState.FAILED, content)

    async def reject(self, content: MessageContent = None) -> None:
        """REJECTED: the agent refuses the request (say why)."""
        await self._stop(TaskState.REJECTED, content)

    async def require_input(self, content: MessageContent, *, data: Any = None) -> None:
        """INPUT_REQUIRED with the question; this call of the agent ends."""
        await self._stop(TaskState.INPUT_REQUIRED, content, data=data)

    async def require_auth(self, content: MessageContent, *, data: Any = None) -> None:
        """AUTH_REQUIRED, saying what must be authorised; this call of the agent ends."""
        await self._stop(TaskState.AUTH_REQUIRED, content, data=data)

    async def ask_input(self, content: MessageContent, *, data: Any = None) -> Message:
        """INPUT_REQUIRED with the question, then wait for the caller's answer and go on."""
        return await self._ask(TaskState.INPUT_REQUIRED, content, data)

    async def ask_auth(self, content: MessageContent, *, data: Any = None) -> Message:
        """AUTH_REQUIRED saying what to authorise, then wait for the caller's answer (a
        message on the task: approve, deny, a credential) and go on."""
        return await self._ask(TaskState.AUTH_REQUIRED, content, data)

    # ------------------------------------------------------------------ internals

    def _check_open(self) -> None:
        if self._closed:
            raise ReplyClosedError(f"task {self._task.id} has already been answered")

    async def _open(self) -> None:
        self._check_open()
        if not self._opened:
            self._opened = True
            await self._channel.open_task()

    def _set_status(self, status: TaskStatus) -> None:
        self._task = self.task.model_copy(update={"status": status})

    def _status_event(self, status: TaskStatus) -> StreamResponse:
        task = self._task
        assert task.context_id is not None
        return StreamResponse(
            status_update=TaskStatusUpdateEvent(
                task_id=task.id, context_id=task.context_id, status=status
            )
        )

    async def _stop(
        self, state: TaskState, content: MessageContent, *, data: Any = None, waiting: bool = False
    ) -> None:
        await self._open()
        message = self.agent_message(content, data=data)
        status = TaskStatus(state=state, message=message, timestamp=utc_now())
        task = self.task
        history = [*task.history, message] if message is not None else task.history
        self._task = task.model_copy(update={"status": status, "history": history})
        self._closed = True
        await self._channel.stop(status, waiting=waiting)

    async def _ask(self, state: TaskState, content: MessageContent, data: Any) -> Message:
        await self._stop(state, content, data=data, waiting=True)
        answer = await self._channel.next_message()
        self._channel.publish(self._status_event(self._task.status))
        return answer

    # ------------------------------------------------------------------ for the node

    def resume(self, answer: Message) -> None:
        """The caller's ``answer`` to an ``ask_*`` arrived: it joins the history and the task
        is WORKING again (announced when the waiting agent wakes)."""
        self._closed = False
        task = self.task
        status = TaskStatus(state=TaskState.WORKING, timestamp=utc_now())
        self._task = task.model_copy(update={"status": status, "history": [*task.history, answer]})

    async def settle(self, state: TaskState, content: MessageContent = None) -> None:
        """End the task in ``state`` whatever the agent did before (a failure, a cancel)."""
        if not self._opened:
            self._opened = True
            await self._channel.open_task()
        self._closed = False
        await self._stop(state, content)

    def final_event(self) -> StreamResponse:
        """The status event announcing the task's current status."""
        return self._status_event(self._task.status)
