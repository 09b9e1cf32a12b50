"""A task whose run is in progress in this node: who follows it, and the events it sends.

Every stream on a task (SendStreamingMessage, SubscribeToTask, any number of them, joining at any
time) and every push config gets the run's events, built here from the agent's run events:

- text deltas stream as ``artifactUpdate`` chunks of the artifact ``response`` (``append``); the
  final answer replaces them in one last chunk (``append=false``, ``lastChunk=true``);
- tool activity streams as WORKING ``statusUpdate`` events whose message carries a ``data`` part
  ``{"toolCall": {...}}`` or ``{"toolResult": {...}}`` (not kept in history).

The text streamed so far is kept even with nobody listening, so a stream that joins later
starts from a snapshot that its ``append`` chunks extend.
"""

from __future__ import annotations

import math
from collections.abc import AsyncIterable
from dataclasses import dataclass, field
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from agent_runtime.events import RunFinished, TextDeltaEvent, ToolCallFinished, ToolCallStarted
from agent_runtime.result import RunResult

from .push import PushNotifier
from .store import TaskRecord
from .types import (
    Artifact,
    Message,
    Part,
    Role,
    StreamResponse,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    new_id,
    utc_now,
)

RESPONSE_ARTIFACT_ID = "response"


@dataclass
class LiveTask:
    """A task whose run is in progress in this process."""

    record: TaskRecord
    notifier: PushNotifier
    done: anyio.Event = field(default_factory=anyio.Event)
    listeners: set[MemoryObjectSendStream[StreamResponse]] = field(default_factory=set)
    scope: anyio.CancelScope | None = None
    cancel_requested: bool = False
    push_configs: list[TaskPushNotificationConfig] = field(default_factory=list)
    streamed: list[str] = field(default_factory=list)
    """Text chunks of this run's ``response`` artifact so far (kept even with nobody listening,
    so a stream that joins later starts from a snapshot its ``append`` chunks extend)."""

    @property
    def task(self) -> Task:
        return self.record.task

    def snapshot(self) -> Task:
        """The task as a client should see it now: with the response text streamed so far."""
        task = self.record.task
        if not self.streamed:
            return task
        artifact = Artifact(
            artifact_id=RESPONSE_ARTIFACT_ID,
            name=RESPONSE_ARTIFACT_ID,
            parts=[Part(text="".join(self.streamed))],
        )
        others = [a for a in task.artifacts if a.artifact_id != RESPONSE_ARTIFACT_ID]
        return task.model_copy(update={"artifacts": [*others, artifact]})

    # ------------------------------------------------------------------ listeners

    def listen(self) -> MemoryObjectReceiveStream[StreamResponse]:
        """A new listener: it gets every event published from now on."""
        send, receive = anyio.create_memory_object_stream[StreamResponse](math.inf)
        self.listeners.add(send)
        return receive

    def close_listeners(self) -> None:
        """End every listener's stream (the run is over)."""
        for send in list(self.listeners):
            send.close()
        self.listeners.clear()

    def wants_events(self) -> bool:
        return bool(self.listeners or self.push_configs)

    def publish(self, event: StreamResponse) -> None:
        for send in list(self.listeners):
            try:
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self.listeners.discard(send)
        if self.push_configs:
            self.notifier.notify(self.task.id, self.push_configs, event)

    # ------------------------------------------------------------------ events

    def set_status(self, status: TaskStatus, *, publish: bool = True) -> None:
        task = self.task
        self.record.task = task.model_copy(update={"status": status})
        if publish and (self.listeners or self.push_configs):
            assert task.context_id is not None
            self.publish(
                StreamResponse(
                    status_update=TaskStatusUpdateEvent(
                        task_id=task.id, context_id=task.context_id, status=status
                    )
                ),
            )

    def activity(self, data: dict[str, Any]) -> None:
        task = self.task
        assert task.context_id is not None
        note = Message(
            message_id=new_id(),
            role=Role.AGENT,
            parts=[Part(data=data)],
            context_id=task.context_id,
            task_id=task.id,
        )
        self.set_status(TaskStatus(state=TaskState.WORKING, message=note, timestamp=utc_now()))

    def artifact_chunk(self, text: str, *, append: bool, last: bool) -> None:
        task = self.task
        assert task.context_id is not None
        self.publish(
            StreamResponse(
                artifact_update=TaskArtifactUpdateEvent(
                    task_id=task.id,
                    context_id=task.context_id,
                    artifact=Artifact(
                        artifact_id=RESPONSE_ARTIFACT_ID,
                        name=None if append else RESPONSE_ARTIFACT_ID,
                        parts=[Part(text=text)],
                    ),
                    append=append,
                    last_chunk=last,
                )
            ),
        )

    def set_answer(self, output: str) -> None:
        """The run's final answer replaces the text streamed so far in the response artifact."""
        task = self.task
        artifact = Artifact(
            artifact_id=RESPONSE_ARTIFACT_ID, name=RESPONSE_ARTIFACT_ID, parts=[Part(text=output)]
        )
        artifacts = [a for a in task.artifacts if a.artifact_id != RESPONSE_ARTIFACT_ID]
        self.record.task = task.model_copy(update={"artifacts": [*artifacts, artifact]})
        self.streamed.clear()
        if self.wants_events():
            self.artifact_chunk(output, append=False, last=True)

    def settle(self, state: TaskState, text: str | None) -> TaskStatus:
        """Put the task in its final ``state`` (the agent's ``text`` joins its history).

        Nothing is published yet: the caller stores the task first, then publishes the status.
        """
        self.streamed.clear()  # a failed or canceled run leaves no half-written answer
        task = self.task
        message = None
        if text is not None:
            message = Message.agent_text(text, context_id=task.context_id, task_id=task.id)
            self.record.task = task.model_copy(update={"history": [*task.history, message]})
        status = TaskStatus(state=state, message=message, timestamp=utc_now())
        self.set_status(status, publish=False)
        return status

    async def follow_run(self, events: AsyncIterable[Any]) -> RunResult | None:
        """Turn the agent's run events into task state and stream events; the run's result.

        Events are only built when someone listens; the streamed text is kept regardless.
        """
        result: RunResult | None = None
        async for event in events:
            if isinstance(event, TextDeltaEvent):
                if event.text:
                    append = bool(self.streamed)
                    self.streamed.append(event.text)
                    if self.wants_events():
                        self.artifact_chunk(event.text, append=append, last=False)
            elif isinstance(event, ToolCallStarted):
                call = event.call
                self.activity(
                    {"toolCall": {"id": call.id, "name": call.name, "arguments": call.arguments}}
                )
            elif isinstance(event, ToolCallFinished):
                rec = event.record
                self.activity(
                    {
                        "toolResult": {
                            "id": rec.call.id,
                            "name": rec.call.name,
                            "isError": rec.result.is_error,
                            "text": rec.result.text_content[:2000],
                        }
                    },
                )
            elif isinstance(event, RunFinished):
                result = event.result
        return result
