"""The push-notification config methods of the request handler (spec 3.1.7 - 3.1.10).

A config is checked (its webhook screened) and stored with the task; a task running in this
node gets it for its later events at once, and one running on another node sharing the store is
told to reload its configs (:mod:`.cross_node`), so it does too. Tokens are never read back.
"""

from __future__ import annotations

import logging

from .cross_node import NodeLink
from .errors import InvalidParamsError, PushNotificationNotSupportedError, TaskNotFoundError
from .live import LiveTask
from .push import PushConfig, check_webhook_url, redact
from .store import TaskRecord, TaskStore
from .types import (
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    TaskPushNotificationConfig,
    new_id,
)

logger = logging.getLogger(__name__)

__all__ = ["PushConfigMethods"]


class PushConfigMethods:
    """Mixed into :class:`~.handler.A2ARequestHandler`, which provides what is declared here."""

    store: TaskStore
    push_config: PushConfig
    push_enabled: bool
    _live: dict[str, LiveTask]
    _link: NodeLink

    async def _load(self, task_id: str, principal: str) -> tuple[TaskRecord, LiveTask | None]:
        raise NotImplementedError

    async def _push_configs_for(self, task_id: str) -> list[TaskPushNotificationConfig]:
        if not self.push_enabled:
            return []
        return await self.store.list_push_configs(task_id)

    async def _store_push_config(
        self, task_id: str, config: TaskPushNotificationConfig
    ) -> TaskPushNotificationConfig:
        stored = config.model_copy(update={"task_id": task_id, "id": config.id or new_id()})
        await self.store.save_push_config(stored)
        return stored

    def _require_push(self) -> None:
        if not self.push_enabled:
            raise PushNotificationNotSupportedError()

    async def _configs_changed(self, record: TaskRecord, live: LiveTask | None) -> None:
        """The task's run (here, or on the node holding it) uses the stored configs from now."""
        task_id = record.task.id
        if live is not None:
            live.push_configs = await self._push_configs_for(task_id)
            return
        holder = self._link.holder_elsewhere(record)
        if holder is not None:
            reply = await self._link.ask(holder, "push_configs", {"task": task_id})
            if reply is None:
                logger.warning("task %s: node %s did not reload its push configs", task_id, holder)

    async def create_push_config(
        self, principal: str, request: TaskPushNotificationConfig
    ) -> TaskPushNotificationConfig:
        self._require_push()
        if not request.task_id:
            raise InvalidParamsError.from_violations([("taskId", "required")])
        record, _ = await self._load(request.task_id, principal)
        await check_webhook_url(request.url, self.push_config)
        stored = await self._store_push_config(request.task_id, request)
        await self._configs_changed(record, self._live.get(request.task_id))
        return redact(stored, keep_token=True)

    async def get_push_config(
        self, principal: str, request: GetTaskPushNotificationConfigRequest
    ) -> TaskPushNotificationConfig:
        self._require_push()
        await self._load(request.task_id, principal)
        config = await self.store.get_push_config(request.task_id, request.id)
        if config is None:
            raise TaskNotFoundError(
                "Push notification config not found",
                metadata={"taskId": request.task_id, "configId": request.id},
            )
        return redact(config)

    async def list_push_configs(
        self, principal: str, request: ListTaskPushNotificationConfigsRequest
    ) -> ListTaskPushNotificationConfigsResponse:
        self._require_push()
        await self._load(request.task_id, principal)
        configs = await self.store.list_push_configs(request.task_id)
        return ListTaskPushNotificationConfigsResponse(configs=[redact(c) for c in configs])

    async def delete_push_config(
        self, principal: str, request: DeleteTaskPushNotificationConfigRequest
    ) -> None:
        self._require_push()
        record, _ = await self._load(request.task_id, principal)
        await self.store.delete_push_config(request.task_id, request.id)
        await self._configs_changed(record, self._live.get(request.task_id))
