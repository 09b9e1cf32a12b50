"""A task whose agent call is in progress in this node: where its reply's changes go.

:class:`LiveTask` is the :class:`~.reply.TaskChannel` of a served agent's
:class:`~.reply.TaskReply`: the events the reply builds are published to the node's
:class:`~.events.EventBus` under the task id, where every stream on the task
(SendStreamingMessage, SubscribeToTask, any number of them, joining at any time, on any node
sharing the bus) subscribes; push configs get them too. An ending or an interruption is stored
first, then announced, so a client that sees it can read it back.

The reply holds the task as it stands (artifacts streamed so far included), so a stream that
joins later starts from a snapshot that its ``append`` chunks extend. A task interrupted by
``ask_input`` / ``ask_auth`` stays live (its agent call waits) until the caller's next message
on it is delivered (:meth:`LiveTask.claim`, then :meth:`LiveTask.deliver`: the task is stored
WORKING again before the agent wakes), or it is canceled.

A save refused because another node already ended the task (this node stalled past its lease:
:class:`~.store.StaleTaskError`) stops the run here and announces nothing: the stored ending
stands.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import anyio

from agent_runtime.telemetry.metrics import record_a2a_task_state

from .events import EventBus
from .push import PushNotifier
from .reply import TaskReply
from .request_context import RequestContext
from .store import StaleTaskError, TaskRecord, TaskStore
from .types import (
    Message,
    StreamResponse,
    Task,
    TaskPushNotificationConfig,
    TaskStatus,
    TaskStatusUpdateEvent,
)

logger = logging.getLogger(__name__)


@dataclass(eq=False)
class LiveTask:
    """A task whose agent call is in progress in this process (see the module docstring).

    ``opener`` stores a new task the first time the agent answers with one (the handler's
    part: the record, push configs). ``decided`` is set once the caller can be answered (a task
    exists, or a Message was replied, or the call ended); ``stopped`` once the current phase
    ends (an ending or an interruption); ``done`` once the agent call is over.
    """

    record: TaskRecord
    context: RequestContext
    notifier: PushNotifier
    bus: EventBus
    store: TaskStore
    opener: Callable[[LiveTask], Awaitable[None]]
    task_exists: bool = False
    # asyncio's events: a tenth of anyio's cost to make, and three per request.
    done: asyncio.Event = field(default_factory=asyncio.Event)
    decided: asyncio.Event = field(default_factory=asyncio.Event)
    stopped: asyncio.Event = field(default_factory=asyncio.Event)
    scope: anyio.CancelScope | None = None
    cancel_requested: bool = False
    push_configs: list[TaskPushNotificationConfig] = field(default_factory=list)
    pending_push: TaskPushNotificationConfig | None = None
    """A push config sent with the message: stored when the task is."""
    first_snapshot: Task | None = None
    """The task as it was when the agent opened it (before any of its events)."""
    message: Message | None = None
    """The Message the agent answered with instead of a task."""
    reply: TaskReply = field(init=False)
    _answered: asyncio.Event | None = None
    _answer: Message | None = None
    _claimed: bool = False

    def __post_init__(self) -> None:
        self.reply = TaskReply(self.record.task, self, task_exists=self.task_exists)

    @property
    def task(self) -> Task:
        """The task as it stands (the reply's view)."""
        return self.reply.task

    def snapshot(self) -> Task:
        """The task as a client should see it now: with the artifacts streamed so far."""
        return self.reply.task

    @property
    def awaiting_reply(self) -> bool:
        """Interrupted by ``ask_input`` / ``ask_auth``: the next message on the task goes to
        the waiting agent."""
        answered = self._answered
        return answered is not None and not answered.is_set() and not self._claimed

    # ------------------------------------------------------------------ publishing

    def wants_events(self) -> bool:
        """Whether anyone may receive an event now (events are only built when so)."""
        bus = self.bus
        return (
            bus.spans_processes
            or bool(self.push_configs)
            or bus.has_subscribers(self.record.task.id)
        )

    def publish(self, event: StreamResponse) -> None:
        """To the task's subscribers (through the bus) and its push configs."""
        self.bus.publish(self.record.task.id, event)
        if self.push_configs:
            self.notifier.notify(self.record.task.id, self.push_configs, event)

    # ------------------------------------------------------------------ TaskChannel

    async def open_task(self) -> None:
        self.first_snapshot = self.reply.task
        await self.opener(self)
        self.decided.set()

    async def stop(self, status: TaskStatus, *, waiting: bool = False) -> None:
        task = self.reply.task
        self.record.task = task
        self.record.agent_waits = waiting
        if self.reply.state_saved:
            self.record.agent_state = self.reply.state
        try:
            with anyio.CancelScope(shield=True):
                await self.store.save(self.record)
        except StaleTaskError as exc:
            logger.warning("task %s: ended elsewhere meanwhile; run stopped (%s)", task.id, exc)
            self.cancel_requested = True
            if self.scope is not None:
                self.scope.cancel()
        except BaseException:
            # Announced even when saving failed: streams on the task must learn it stopped.
            self._announce(task, status)
            raise
        else:
            record_a2a_task_state(status.state.value)
            self._announce(task, status)
        finally:
            self.stopped.set()
            self.decided.set()

    def _announce(self, task: Task, status: TaskStatus) -> None:
        if not self.wants_events():
            return
        assert task.context_id is not None
        self.publish(
            StreamResponse(
                status_update=TaskStatusUpdateEvent(
                    task_id=task.id, context_id=task.context_id, status=status
                )
            )
        )

    async def respond(self, message: Message) -> None:
        self.message = message
        self.decided.set()
        self.stopped.set()

    async def next_message(self) -> Message:
        self._answered = answered = asyncio.Event()
        await answered.wait()
        assert self._answer is not None
        answer, self._answer = self._answer, None
        return answer

    def claim(self) -> None:
        """Take the wait for one answer (no other message is delivered); then :meth:`deliver`
        it, or :meth:`unclaim` if it cannot be."""
        assert self.awaiting_reply
        self._claimed = True

    def unclaim(self) -> None:
        self._claimed = False

    async def deliver(self, message: Message) -> None:
        """The caller's next message on an interrupted task (claimed): store the task WORKING
        again (so reads and ``ListTasks(status=WORKING)`` see it at work), then wake the
        waiting agent with it. A new phase starts (``stopped`` is a fresh event)."""
        assert self._answered is not None and self._claimed
        self.reply.resume(message)
        self.record.task = self.reply.task
        self.record.agent_waits = False
        self.stopped = asyncio.Event()
        record_a2a_task_state(self.record.task.status.state.value)
        try:
            with anyio.CancelScope(shield=True):
                await self.store.save(self.record)
        except Exception:
            # The answer still reaches the agent; the stored status catches up at its next stop.
            logger.warning("task %s: could not store its resumption", self.task.id, exc_info=True)
        finally:
            self._claimed = False
            self._answer = message
            self._answered.set()

    def finish(self) -> None:
        """The agent call is over: wake everyone waiting on it."""
        self.decided.set()
        self.stopped.set()
        self.done.set()
