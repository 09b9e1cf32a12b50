"""Work on a task that another node runs: requests between the nodes that share an event bus.

A task's agent call runs in one node; a request about the task may arrive at any node sharing
the store, which reads the live node holding it from the store (``TaskRecord.node_id``). Over
the bus's control channel (:meth:`.events.EventBus.send_control`) it asks that node to:

- ``cancel``: stop the run (sent to all; the asking node watches the store for the end);
- ``answer``: hand the caller's message to the agent call waiting on the task (``ask_input`` /
  ``ask_auth``). The holder replies with the task as it is once the answer is in (WORKING), and
  the asking node answers its caller as the holder would: that task, or the task once the phase
  stops, or a stream of its events, all followed on the bus. A holder that no longer holds the
  task says so, and the asking node then starts a new agent call itself;
- ``push_configs``: reload the task's push configs, so a config created or deleted on another
  node gets (or stops getting) the run's later events.

A request that needs a reply names the node it is for (``to``) and carries a ``request`` id; the
reply is ``{"op": "reply", "to": <asking node>, "request": <id>, ...}``.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

import anyio

from .errors import A2AError, TaskNotFoundError, UnsupportedOperationError, error_from_jsonrpc
from .events import EventBus, Subscription
from .store import TaskRecord, TaskStore
from .types import Message, Task, new_id

__all__ = [
    "FORWARD_WAIT_S",
    "REMOTE_CANCEL_WAIT_S",
    "ForwardedAnswer",
    "NodeLink",
    "cancel_elsewhere",
    "forward_answer",
    "refusal",
]

logger = logging.getLogger(__name__)

REMOTE_CANCEL_WAIT_S = 30.0
"""How long a cancel waits for another node to stop the task's run (then cancels in the store)."""
FORWARD_WAIT_S = 10.0
"""How long a node waits for the node holding a task to reply to a request."""


class NodeLink:
    """Requests to other nodes on ``bus``, and the replies to ours (see the module docstring)."""

    def __init__(self, bus: EventBus) -> None:
        self.bus = bus
        self._replies: dict[str, asyncio.Future[dict[str, Any]]] = {}

    def holder_elsewhere(self, record: TaskRecord) -> str | None:
        """The other live node that runs ``record``'s task or holds its waiting agent call."""
        node = record.node_id
        return node if node is not None and node != self.bus.node_id else None

    def addressed_here(self, message: dict[str, Any]) -> bool:
        """Whether a control message is for this node (sent to all, or to us)."""
        to = message.get("to")
        return to is None or to == self.bus.node_id

    def take_reply(self, message: dict[str, Any]) -> bool:
        """Hand a reply to the request waiting for it; False when ``message`` is no reply."""
        if message.get("op") != "reply":
            return False
        future = self._replies.get(str(message.get("request")))
        if future is not None and not future.done():
            future.set_result(message)
        return True

    async def ask(
        self, node: str, op: str, fields: dict[str, Any], timeout_s: float = FORWARD_WAIT_S
    ) -> dict[str, Any] | None:
        """Send ``op`` to ``node`` and wait for its reply (None when none came in time)."""
        request = new_id()
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._replies[request] = future
        try:
            await self.bus.send_control({**fields, "op": op, "to": node, "request": request})
            with anyio.move_on_after(timeout_s):
                return await future
            return None
        finally:
            self._replies.pop(request, None)

    async def reply(self, request: dict[str, Any], fields: dict[str, Any]) -> None:
        """Answer ``request`` (a control message from another node)."""
        await self.bus.send_control(
            {**fields, "op": "reply", "to": request.get("node"), "request": request.get("request")}
        )


@dataclass
class ForwardedAnswer:
    """A message handed to the agent waiting on another node: the task as that node answered
    (``task``), and the task's events from before the hand-over on (``subscription``)."""

    task: Task
    subscription: Subscription
    store: TaskStore
    principal: str

    async def result(self, *, wait: bool) -> Task:
        """``task``; with ``wait``, the task once this phase stops (as its node stored it)."""
        with self.subscription:
            if not wait:
                return self.task
            async for event in self.subscription:
                update = event.status_update
                state = update.status.state if update is not None else None
                if state is not None and (state.is_terminal or state.is_interrupted):
                    break
        record = await self.store.get(self.task.id, self.principal)
        return record.task if record is not None else self.task


async def forward_answer(
    link: NodeLink,
    store: TaskStore,
    principal: str,
    message: Message,
    holder: str,
    *,
    push: bool = False,
) -> ForwardedAnswer | None:
    """Hand ``message`` (on task ``message.task_id``) to the agent waiting on node ``holder``;
    ``push``: a push config sent with it is stored, the holder is to reload its configs.

    None when ``holder`` no longer holds the task (the caller starts a new call); the holder's
    refusal (another contextId, a task at work) is raised as the A2A error it sent.
    """
    task_id = message.task_id or ""
    subscription = link.bus.subscribe(task_id)  # before the hand-over: no event slips by
    try:
        fields = {
            "task": task_id,
            "principal": principal,
            "message": message.to_wire(),
            "push": push,
        }
        reply = await link.ask(holder, "answer", fields)
        if reply is None:
            raise UnsupportedOperationError(
                f"Task {task_id} waits on another node, which did not answer; try again",
                metadata={"taskId": task_id},
            )
        error = reply.get("error")
        if isinstance(error, dict):
            raise error_from_jsonrpc(error)
        if not reply.get("held"):
            subscription.close()
            return None
        task = Task.from_wire(reply.get("task"))
    except BaseException:
        subscription.close()
        raise
    return ForwardedAnswer(task=task, subscription=subscription, store=store, principal=principal)


def refusal(exc: A2AError) -> dict[str, Any]:
    """A holder's reply that refuses a forwarded answer with ``exc``."""
    return {"error": exc.to_jsonrpc_error()}


async def cancel_elsewhere(
    bus: EventBus, store: TaskStore, principal: str, task_id: str
) -> Task | None:
    """Ask the node running ``task_id`` to stop it; the task once terminal.

    None when it is not terminal after ``REMOTE_CANCEL_WAIT_S`` (the caller then cancels it in
    the store). A run on a node that died ends FAILED once its lease expires.
    """
    with bus.subscribe(task_id) as subscription:
        await bus.send_control({"op": "cancel", "task": task_id})
        with anyio.move_on_after(REMOTE_CANCEL_WAIT_S):
            while True:
                record = await store.get(task_id, principal)
                if record is None:
                    raise TaskNotFoundError(metadata={"taskId": task_id})
                if record.task.status.state.is_terminal:
                    return record.task
                # Wake on the task's next event (its node saves before publishing), or poll
                # again after a while.
                with anyio.move_on_after(1.0):
                    await anext(subscription, None)
    return None
