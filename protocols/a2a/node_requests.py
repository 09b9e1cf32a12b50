"""What a node does for the requests of the other nodes sharing its event bus.

The asking side is :mod:`.cross_node`; here the node that runs a task (holds its agent call)
stops the run (``cancel``), hands a caller's answer to its waiting agent (``answer``: the same
checks and effects as an answer sent to this node) or reloads the task's push configs
(``push_configs``), and replies.
"""

from __future__ import annotations

import logging
from typing import Any

from .continuation import waiting_for
from .cross_node import NodeLink, refusal
from .errors import A2AError, InternalError, UnsupportedOperationError
from .live import LiveTask
from .types import Message, TaskPushNotificationConfig

logger = logging.getLogger(__name__)

__all__ = ["NodeRequestMethods"]


class NodeRequestMethods:
    """Mixed into :class:`~.handler.A2ARequestHandler`, which provides what is declared here."""

    _live: dict[str, LiveTask]
    _link: NodeLink

    def _stop_run(self, live: LiveTask) -> None:
        raise NotImplementedError

    async def _push_configs_for(self, task_id: str) -> list[TaskPushNotificationConfig]:
        raise NotImplementedError

    async def _answer_waiting(
        self,
        waiting: LiveTask,
        message: Message,
        push_cfg: TaskPushNotificationConfig | None,
        *,
        reload_push: bool = False,
    ) -> None:
        raise NotImplementedError

    async def _on_control(self, message: dict[str, Any]) -> None:
        """A request from another node on the same event bus (:mod:`.cross_node`)."""
        link = self._link
        if not link.addressed_here(message) or link.take_reply(message):
            return
        op = message.get("op")
        task_id = str(message.get("task"))
        if op == "cancel":
            live = self._live.get(task_id)
            if live is not None:
                self._stop_run(live)
        elif op == "answer":
            await link.reply(message, await self._answer_from_elsewhere(message))
        elif op == "push_configs":
            live = self._live.get(task_id)
            if live is not None:
                live.push_configs = await self._push_configs_for(task_id)
            await link.reply(message, {})

    async def _answer_from_elsewhere(self, request: dict[str, Any]) -> dict[str, Any]:
        """Another node's caller answers a task whose agent waits here (:mod:`.cross_node`)."""
        task_id = str(request.get("task"))
        principal = str(request.get("principal"))
        live = self._live.get(task_id)
        if live is None or live.record.owner != principal:
            return {"held": False}
        try:
            message = Message.from_wire(request.get("message"))
            waiting = waiting_for(self._live, principal, message)
            if waiting is None:
                raise UnsupportedOperationError(
                    f"Task {task_id} is still running; wait for it or cancel it",
                    metadata={"taskId": task_id},
                )
            await self._answer_waiting(
                waiting, message, None, reload_push=bool(request.get("push"))
            )
            return {"held": True, "task": waiting.snapshot().to_wire()}
        except A2AError as exc:
            return refusal(exc)
        except Exception as exc:
            logger.warning("task %s: could not take an answer from another node: %r", task_id, exc)
            return refusal(InternalError("The node running the task could not take the answer"))
