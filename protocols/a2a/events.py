"""Where a task's stream events go: one hub keyed by task id, outliving runs and processes.

A running task publishes every ``StreamResponse`` it makes (status and artifact updates) to the
node's :class:`EventBus` under its task id; every stream on that task (SendStreamingMessage,
SubscribeToTask) is a :class:`Subscription` to the same id. A subscription is not tied to a run:
one that follows an INPUT_REQUIRED task keeps receiving the events of the runs that later
messages start, until its reader closes it.

- ``publish`` never blocks and never awaits: local subscribers get the event before it returns,
  in publish order, so code that takes a snapshot and subscribes with no ``await`` in between
  can miss nothing;
- ``subscribe`` registers synchronously, for the same reason.

:class:`InProcessEventBus` reaches the subscribers of this process only. A bus spanning
processes (``postgres_events.PostgresEventBus``) also delivers what other nodes publish, and
carries *control* requests between nodes (``send_control``, e.g. "stop the run of task X",
:mod:`.cross_node`), which a node receives through the handler passed to :meth:`EventBus.start`.

:func:`follow_task` is what a stream on a task sends: its snapshot, then its events until it
stops.
"""

from __future__ import annotations

import logging
import math
from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Callable, Coroutine
from types import TracebackType
from typing import Any

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .types import StreamResponse, Task, TaskState

logger = logging.getLogger(__name__)

ControlHandler = Callable[[dict[str, Any]], Coroutine[Any, Any, None]]
"""Receives a control request another node sent (a JSON object with at least ``op``)."""


class Subscription:
    """The events of one task from the moment of subscribing, in order; close it when done.

    Iterate it (``async for event in sub``); iteration ends when the bus closes. Closing is
    idempotent and unregisters it, so a reader that stops early leaves nothing behind.
    """

    def __init__(
        self,
        task_id: str,
        receive: MemoryObjectReceiveStream[StreamResponse],
        on_close: Callable[[Subscription], None],
    ) -> None:
        self.task_id = task_id
        self._receive = receive
        self._on_close = on_close
        self._closed = False

    def __aiter__(self) -> Subscription:
        return self

    async def __anext__(self) -> StreamResponse:
        try:
            return await self._receive.receive()
        except (anyio.EndOfStream, anyio.ClosedResourceError):
            raise StopAsyncIteration from None

    def close(self) -> None:
        if not self._closed:
            self._closed = True
            self._on_close(self)
            self._receive.close()

    def __enter__(self) -> Subscription:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


class EventBus(ABC):
    """Fan-out of task events to subscribers keyed by task id (local part shared by all buses).

    Subclasses decide how far an event reaches beyond this process (:meth:`publish`).
    """

    node_id: str | None = None
    """This node's name on a bus that spans processes (None in process)."""

    def __init__(self) -> None:
        self._subscribers: dict[
            str, dict[Subscription, MemoryObjectSendStream[StreamResponse]]
        ] = {}
        self._closed = False

    # ------------------------------------------------------------------ subscribers

    def subscribe(self, task_id: str) -> Subscription:
        """Every event published for ``task_id`` from now on (registered before returning)."""
        send, receive = anyio.create_memory_object_stream[StreamResponse](math.inf)
        sub = Subscription(task_id, receive, self._unsubscribe)
        if self._closed:
            send.close()
        else:
            self._subscribers.setdefault(task_id, {})[sub] = send
        return sub

    def _unsubscribe(self, sub: Subscription) -> None:
        subs = self._subscribers.get(sub.task_id)
        if subs is None:
            return
        send = subs.pop(sub, None)
        if send is not None:
            send.close()
        if not subs:
            del self._subscribers[sub.task_id]

    def has_subscribers(self, task_id: str) -> bool:
        return bool(self._subscribers.get(task_id))

    def deliver_local(self, task_id: str, event: StreamResponse) -> None:
        """Hand ``event`` to this process's subscribers of ``task_id`` (never blocks)."""
        subs = self._subscribers.get(task_id)
        if not subs:
            return
        for sub, send in list(subs.items()):
            try:
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                self._unsubscribe(sub)

    # ------------------------------------------------------------------ the bus

    @abstractmethod
    def publish(self, task_id: str, event: StreamResponse) -> None:
        """Send ``event`` to every subscriber of ``task_id`` (local ones before returning)."""

    @property
    def spans_processes(self) -> bool:
        """Whether other nodes may publish here and receive what this node publishes."""
        return False

    async def start(self, on_control: ControlHandler | None = None) -> None:  # noqa: B027
        """Begin receiving from other nodes (no-op in process); ``on_control`` gets requests."""

    async def send_control(self, message: dict[str, Any]) -> None:  # noqa: B027
        """Send a control request to every other node (in process: there is nobody)."""

    async def aclose(self) -> None:
        """Stop; every open subscription's iteration ends."""
        self._closed = True
        for subs in list(self._subscribers.values()):
            for send in subs.values():
                send.close()
        self._subscribers.clear()


class InProcessEventBus(EventBus):
    """Events reach the subscribers of this process only."""

    def publish(self, task_id: str, event: StreamResponse) -> None:
        self.deliver_local(task_id, event)


async def follow_task(
    first: Task, subscription: Subscription, *, through_interruptions: bool
) -> AsyncIterator[StreamResponse]:
    """The snapshot ``first``, then the task's events until it stops; closes ``subscription``.

    A SendStreamingMessage stream stops at a terminal or interrupted state (the run is over);
    a SubscribeToTask stream follows the task through interruptions, and the runs later
    messages start, until a terminal state (spec 3.1.6).
    """

    def stops(state: TaskState) -> bool:
        return state.is_terminal or (not through_interruptions and state.is_interrupted)

    with subscription:
        yield StreamResponse(task=first)
        if stops(first.status.state):
            return
        since = _Since(first)
        async for event in subscription:
            if since.already_seen(event):
                continue
            yield event
            update = event.status_update
            if update is not None and stops(update.status.state):
                return


class _Since:
    """Which events a snapshot already holds.

    The subscription is registered before the snapshot is read, so nothing is lost between
    them; but an event published before the snapshot may still arrive after it (another node's
    NOTIFY can trail its store write). Such an event is dropped: a status update equal to the
    snapshot's status or older than it and, while the snapshot is of a task that is not running
    (interrupted), any artifact update before the next status update (a later run always starts
    with one).
    """

    def __init__(self, first: Task) -> None:
        self.status = first.status
        self.idle = first.status.state.is_interrupted

    def already_seen(self, event: StreamResponse) -> bool:
        update = event.status_update
        if update is None:
            return self.idle and event.artifact_update is not None
        status = update.status
        if status == self.status:
            return True
        then, now = self.status.timestamp, status.timestamp
        if then is not None and now is not None and now < then:
            return True
        self.idle = False
        return False


__all__ = ["ControlHandler", "EventBus", "InProcessEventBus", "Subscription", "follow_task"]
