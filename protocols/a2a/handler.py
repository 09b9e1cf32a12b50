"""The binding-independent A2A request handler: every protocol method, once.

The JSON-RPC and HTTP+JSON bindings (``server.py``) only decode a request, call a method here
with the caller's principal, and encode what comes back; so both bindings behave the same by
construction (spec 5.1).

Each accepted message becomes a run of the runtime ``Agent`` in a background task:

- the task goes SUBMITTED -> WORKING -> COMPLETED, FAILED, CANCELED or INPUT_REQUIRED;
- the run's text and tool activity stream as events (:mod:`.live`); when the run ends, one last
  ``artifactUpdate`` replaces the streamed text with the final answer, so text the model wrote
  before a tool call never lingers in the artifact;
- the final status carries the agent's answer as a message, which is also appended to history.

Every stream on a task (any number, joining at any time) starts with a Task snapshot, then gets
every later event of the run, in order, until the task stops (terminal or interrupted state);
then the stream closes. Push configs added mid-run get the rest of the events likewise. What a
message must be, and the prompt made of it, is :mod:`.intake`.

INPUT_REQUIRED: a run whose final text starts with ``input_required_marker`` (default
``[input-required]``) ends the task in INPUT_REQUIRED with the rest of the text as the question.
The client answers by sending a message with the task's ``taskId``; the run continues with the
task's full runtime history (tool calls included), in the task's own ``contextId``.

A new task in an existing ``contextId`` starts from the runtime history of the latest task of
that context (same principal), so a conversation carries across tasks. Tasks named in a
message's ``referenceTaskIds`` (the caller's own) are put before the prompt as
``[referenced task <id> (<state>): <artifact text>]``.

While a task's run is active, another message to it is refused (UnsupportedOperation); cancel
it or wait for it to stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator, Sequence
from datetime import datetime
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream
from pydantic import TypeAdapter

from agent_runtime.result import RunResult
from agent_runtime.types import Message as RuntimeMessage

from .auth import A2AAuthConfig
from .card import AgentCardConfig, build_card, extended_card_available
from .errors import (
    InvalidPageToken,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from .intake import check_message, prompt_of
from .live import LiveTask
from .push import PushConfig, PushNotifier, check_webhook_url, redact
from .store import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    TaskQuery,
    TaskRecord,
    TaskStore,
)
from .types import (
    AgentCard,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    new_id,
    utc_now,
)

logger = logging.getLogger(__name__)

DEFAULT_INPUT_REQUIRED_MARKER = "[input-required]"

_HISTORY = TypeAdapter(list[RuntimeMessage])


class RunnableAgent(Protocol):
    """What the handler needs of ``agent_runtime.Agent``: a name, and streamed runs.

    Every run is streamed (``run_stream`` as an async context manager yielding run events, the
    last one ``RunFinished``), so a listener can join a task at any time.
    """

    name: str
    description: str

    def run_stream(
        self, prompt: str, message_history: Sequence[RuntimeMessage] | None = None
    ) -> Any: ...


def _with_history(task: Task, history_length: int | None) -> Task:
    if history_length is None or history_length >= len(task.history):
        return task
    if history_length <= 0:
        return task.model_copy(update={"history": []})
    return task.model_copy(update={"history": task.history[-history_length:]})


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


class A2ARequestHandler:
    """Implements the A2A operations over an agent, a task store and a push notifier."""

    def __init__(
        self,
        agent: RunnableAgent,
        store: TaskStore,
        *,
        card: AgentCardConfig | None = None,
        auth: A2AAuthConfig | None = None,
        push: PushConfig | None = None,
        input_required_marker: str | None = DEFAULT_INPUT_REQUIRED_MARKER,
    ) -> None:
        self.agent = agent
        self.store = store
        self.card_config = card or AgentCardConfig()
        self.auth = auth
        self.push_config = push if push is not None else PushConfig()
        self.push_enabled = self.push_config.enabled
        self.notifier = PushNotifier(self.push_config)
        self.input_required_marker = input_required_marker
        self._live: dict[str, LiveTask] = {}
        self._runs: set[asyncio.Task[None]] = set()
        self._recovered = False
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        """Mark tasks a previous process left running as failed (once)."""
        if not self._recovered:
            self._recovered = True
            count = await self.store.recover()
            if count:
                logger.warning("marked %d interrupted task(s) failed after restart", count)

    async def shutdown(self) -> None:
        """Cancel active runs and stop push delivery."""
        self._closing = True
        for live in list(self._live.values()):
            live.cancel_requested = True
            if live.scope is not None:
                live.scope.cancel()
        runs = list(self._runs)
        if runs:
            with anyio.move_on_after(5.0):
                await asyncio.gather(*runs, return_exceptions=True)
        await self.notifier.aclose()

    # ------------------------------------------------------------------ card

    def build_card(self, jsonrpc_url: str, rest_url: str, *, extended: bool = False) -> AgentCard:
        return build_card(
            agent_name=self.agent.name,
            agent_description=self.agent.description,
            config=self.card_config,
            jsonrpc_url=jsonrpc_url,
            rest_url=rest_url,
            auth=self.auth,
            push_enabled=self.push_enabled,
            extended=extended,
        )

    def check_extended_card(self) -> None:
        """The extended card is offered exactly when callers are authenticated."""
        if not extended_card_available(self.card_config, self.auth):
            raise UnsupportedOperationError(
                "The agent does not support authenticated extended cards"
            )

    # ------------------------------------------------------------------ lookups

    async def _load(self, task_id: str, principal: str) -> tuple[TaskRecord, LiveTask | None]:
        live = self._live.get(task_id)
        if live is not None:
            if live.record.owner != principal:
                raise TaskNotFoundError(metadata={"taskId": task_id})
            return live.record, live
        record = await self.store.get(task_id, principal)
        if record is None:
            raise TaskNotFoundError(metadata={"taskId": task_id})
        live = self._live.get(task_id)  # it may have started while we read
        return (live.record, live) if live is not None else (record, None)

    # ------------------------------------------------------------------ SendMessage

    async def _accept(
        self, principal: str, request: SendMessageRequest
    ) -> tuple[LiveTask, str, list[RuntimeMessage]]:
        """Create or continue the task; register it live. Returns (live, prompt, history)."""
        if self._closing:
            raise UnsupportedOperationError("The agent node is shutting down")
        check_message(request, self.card_config, push_enabled=self.push_enabled)
        message = request.message
        config = request.configuration
        push_cfg = config.task_push_notification_config if config is not None else None
        if push_cfg is not None:
            await check_webhook_url(push_cfg.url, self.push_config)
        now = utc_now()
        if message.task_id:
            record, history = await self._continue_task(principal, message, message.task_id, now)
        else:
            record, history = await self._new_task(principal, message, now)
        live = await self._go_live(record, push_cfg)
        prompt = prompt_of(message)
        if message.reference_task_ids:
            prompt = await self._with_references(principal, message, prompt)
        return live, prompt, history

    async def _continue_task(
        self, principal: str, message: Message, task_id: str, now: datetime
    ) -> tuple[TaskRecord, list[RuntimeMessage]]:
        """The caller's task that ``message`` answers, with the message added; its history."""
        live = self._live.get(task_id)
        if live is not None and live.record.owner == principal:
            raise UnsupportedOperationError(
                f"Task {task_id} is still running; wait for it or cancel it",
                metadata={"taskId": task_id},
            )
        record = await self.store.get(task_id, principal)
        if record is None:
            raise TaskNotFoundError(metadata={"taskId": task_id})
        task = record.task
        if message.context_id and message.context_id != task.context_id:
            raise InvalidParamsError.from_violations(
                [("message.contextId", f"does not match the contextId of task {task_id}")]
            )
        if task.status.state.is_terminal:
            raise UnsupportedOperationError(
                f"Task {task_id} is {task.status.state.value}; a terminal task accepts no"
                " more messages",
                metadata={"taskId": task_id, "state": task.status.state.value},
            )
        if task_id in self._live:  # started by a concurrent request while we read
            raise UnsupportedOperationError(
                f"Task {task_id} is still running; wait for it or cancel it"
            )
        history = _HISTORY.validate_python(record.agent_state)
        incoming = message.model_copy(update={"context_id": task.context_id})
        task = task.model_copy(
            update={
                "history": [*task.history, incoming],
                "status": TaskStatus(state=TaskState.SUBMITTED, timestamp=now),
            }
        )
        return TaskRecord(task=task, owner=principal, agent_state=record.agent_state), history

    async def _new_task(
        self, principal: str, message: Message, now: datetime
    ) -> tuple[TaskRecord, list[RuntimeMessage]]:
        """A new task for ``message``; the history of the latest task in its context, if any."""
        context_id = message.context_id or new_id()
        history: list[RuntimeMessage] = []
        if message.context_id:
            previous = await self.store.latest_in_context(context_id, principal)
            if previous is not None:
                history = _HISTORY.validate_python(previous.agent_state)
        task_id = new_id()
        incoming = message.model_copy(update={"context_id": context_id, "task_id": task_id})
        task = Task(
            id=task_id,
            context_id=context_id,
            status=TaskStatus(state=TaskState.SUBMITTED, timestamp=now),
            history=[incoming],
        )
        return TaskRecord(task=task, owner=principal, agent_state=[]), history

    async def _go_live(
        self, record: TaskRecord, push_cfg: TaskPushNotificationConfig | None
    ) -> LiveTask:
        """Register the task as running, store it, and tell its push configs it exists."""
        task = record.task
        live = LiveTask(record=record, notifier=self.notifier)
        self._live[task.id] = live
        try:
            # Stored as WORKING: the run starts right away, so ListTasks(status=WORKING) finds
            # it, and a crash before the end leaves a row that recover() marks failed. The
            # client is still answered with the SUBMITTED snapshot.
            working = task.model_copy(
                update={"status": task.status.model_copy(update={"state": TaskState.WORKING})}
            )
            await self.store.save(
                TaskRecord(task=working, owner=record.owner, agent_state=record.agent_state)
            )
            live.push_configs = await self._push_configs_for(task.id)
            if push_cfg is not None:
                stored = await self._store_push_config(task.id, push_cfg)
                live.push_configs.append(stored)
        except BaseException:
            self._live.pop(task.id, None)
            raise
        if live.push_configs:
            self.notifier.notify(task.id, live.push_configs, StreamResponse(task=task))
        return live

    async def _with_references(self, principal: str, message: Message, prompt: str) -> str:
        """Prepend what referenced tasks produced (spec 3.4.3: agents SHOULD use them)."""
        notes = []
        for ref in message.reference_task_ids[:10]:
            live = self._live.get(ref)
            record = live.record if live is not None and live.record.owner == principal else None
            if record is None:
                record = await self.store.get(ref, principal)
            if record is None:
                continue  # unknown or not the caller's: say nothing about it
            outputs = " ".join(a.text for a in record.task.artifacts if a.text)
            state = record.task.status.state.value
            notes.append(f"[referenced task {ref} ({state}): {outputs[:4000]}]")
        return "\n".join([*notes, prompt]) if notes else prompt

    def _start(self, live: LiveTask, prompt: str, history: list[RuntimeMessage]) -> None:
        run = asyncio.get_running_loop().create_task(self._run(live, prompt, history))
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)

    async def send_message(
        self, principal: str, request: SendMessageRequest
    ) -> SendMessageResponse:
        live, prompt, history = await self._accept(principal, request)
        self._start(live, prompt, history)
        config = request.configuration
        history_length = config.history_length if config is not None else None
        if config is None or not config.return_immediately:
            await live.done.wait()
        return SendMessageResponse(task=_with_history(live.task, history_length))

    async def send_message_stream(
        self, principal: str, request: SendMessageRequest
    ) -> AsyncIterator[StreamResponse]:
        """Validate and start now; the iterator yields the Task, then its events."""
        if not self.card_config.streaming:
            raise UnsupportedOperationError("This agent does not stream")
        live, prompt, history = await self._accept(principal, request)
        config = request.configuration
        history_length = config.history_length if config is not None else None
        snapshot = _with_history(live.task, history_length)
        receive = live.listen()
        self._start(live, prompt, history)
        return self._stream(snapshot, receive)

    async def _stream(
        self, first: Task, receive: MemoryObjectReceiveStream[StreamResponse]
    ) -> AsyncIterator[StreamResponse]:
        async with receive:
            yield StreamResponse(task=first)
            async for event in receive:
                yield event

    # ------------------------------------------------------------------ the run

    async def _drive(
        self, live: LiveTask, prompt: str, history: list[RuntimeMessage]
    ) -> RunResult | None:
        """Run the agent, turning its events into task state and stream events.

        The run always streams, even when nobody listens yet: a subscriber or push config may
        join at any moment and must get every later event, and its snapshot must hold the text
        streamed before it joined (``live.streamed``).
        """
        async with self.agent.run_stream(prompt, message_history=history) as events:
            return await live.follow_run(events)

    async def _run(self, live: LiveTask, prompt: str, history: list[RuntimeMessage]) -> None:
        task_id = live.task.id
        try:
            result: RunResult | None = None
            failure: BaseException | None = None
            with anyio.CancelScope() as scope:
                live.scope = scope
                if live.cancel_requested:
                    scope.cancel()
                live.set_status(TaskStatus(state=TaskState.WORKING, timestamp=utc_now()))
                try:
                    result = await self._drive(live, prompt, history)
                except Exception as exc:
                    failure = exc
            live.scope = None
            if live.cancel_requested or (scope.cancelled_caught and failure is None):
                await self._end(live, TaskState.CANCELED, None)
            elif failure is not None or result is None:
                logger.warning("task %s failed: %r", task_id, failure)
                text = "The agent failed: " + (_error_text(failure) if failure else "no result")
                await self._end(live, TaskState.FAILED, text)
            else:
                await self._finish(live, result)
        except Exception:
            logger.exception("task %s: error while finishing", task_id)
        finally:
            self._live.pop(task_id, None)
            live.close_listeners()
            self.notifier.finish(task_id)
            live.done.set()

    async def _finish(self, live: LiveTask, result: RunResult) -> None:
        output = result.output
        state = TaskState.COMPLETED
        marker = self.input_required_marker
        if marker and output.lstrip().startswith(marker):
            state = TaskState.INPUT_REQUIRED
            output = output.lstrip()[len(marker) :].strip()
        live.record.agent_state = _HISTORY.dump_python(result.messages, mode="json")
        live.set_answer(output)
        await self._end(live, state, output)

    async def _end(self, live: LiveTask, state: TaskState, text: str | None) -> None:
        status = live.settle(state, text)
        with anyio.CancelScope(shield=True):
            await self.store.save(live.record)
        live.set_status(status, publish=True)

    # ------------------------------------------------------------------ tasks

    async def get_task(self, principal: str, request: GetTaskRequest) -> Task:
        if request.history_length is not None and request.history_length < 0:
            raise InvalidParamsError.from_violations([("historyLength", "must be >= 0")])
        record, live = await self._load(request.id, principal)
        task = live.snapshot() if live is not None else record.task
        return _with_history(task, request.history_length)

    async def list_tasks(self, principal: str, request: ListTasksRequest) -> ListTasksResponse:
        page_size = DEFAULT_PAGE_SIZE if request.page_size is None else request.page_size
        violations = []
        if page_size < 1 or page_size > MAX_PAGE_SIZE:
            violations.append(("pageSize", f"must be between 1 and {MAX_PAGE_SIZE}"))
        if request.history_length is not None and request.history_length < 0:
            violations.append(("historyLength", "must be >= 0"))
        if violations:
            raise InvalidParamsError.from_violations(violations)
        query = TaskQuery(
            context_id=request.context_id or None,
            status=request.status if request.status not in (None, TaskState.UNSPECIFIED) else None,
            status_after=request.status_timestamp_after,
            page_size=page_size,
            page_token=request.page_token or None,
        )
        try:
            page = await self.store.list_tasks(principal, query)
        except InvalidPageToken as exc:
            raise InvalidParamsError.from_violations([("pageToken", str(exc))]) from None
        tasks = []
        for stored in page.tasks:
            live = self._live.get(stored.id)
            task = live.snapshot() if live is not None else stored
            task = _with_history(task, request.history_length)
            if not request.include_artifacts and task.artifacts:
                task = task.model_copy(update={"artifacts": []})
            tasks.append(task)
        return ListTasksResponse(
            tasks=tasks,
            next_page_token=page.next_page_token,
            page_size=page_size,
            total_size=page.total_size,
        )

    async def cancel_task(self, principal: str, request: CancelTaskRequest) -> Task:
        record, live = await self._load(request.id, principal)
        if record.task.status.state.is_terminal:
            raise TaskNotCancelableError(
                f"Task {request.id} is {record.task.status.state.value} and cannot be canceled",
                metadata={"taskId": request.id},
            )
        if live is not None:
            live.cancel_requested = True
            if live.scope is not None:
                live.scope.cancel()
            await live.done.wait()
            return live.task
        # Not running here (interrupted, or left over): cancel in the store.
        task = record.task
        status = TaskStatus(state=TaskState.CANCELED, timestamp=utc_now())
        record = TaskRecord(
            task=task.model_copy(update={"status": status}),
            owner=record.owner,
            agent_state=record.agent_state,
        )
        await self.store.save(record)
        configs = await self._push_configs_for(task.id)
        if configs and task.context_id is not None:
            event = StreamResponse(
                status_update=TaskStatusUpdateEvent(
                    task_id=task.id, context_id=task.context_id, status=status
                )
            )
            self.notifier.notify(task.id, configs, event)
            self.notifier.finish(task.id)
        return record.task

    async def subscribe(
        self, principal: str, request: SubscribeToTaskRequest
    ) -> AsyncIterator[StreamResponse]:
        if not self.card_config.streaming:
            raise UnsupportedOperationError("This agent does not stream")
        record, live = await self._load(request.id, principal)
        state = record.task.status.state
        if state.is_terminal:
            raise UnsupportedOperationError(
                f"Task {request.id} is {state.value}; a terminal task has no updates to follow",
                metadata={"taskId": request.id},
            )
        if live is None:
            return self._single(record.task)
        # No await between the snapshot and registering the listener: nothing can slip between.
        return self._stream(live.snapshot(), live.listen())

    async def _single(self, task: Task) -> AsyncIterator[StreamResponse]:
        yield StreamResponse(task=task)

    # ------------------------------------------------------------------ push configs

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

    async def create_push_config(
        self, principal: str, request: TaskPushNotificationConfig
    ) -> TaskPushNotificationConfig:
        self._require_push()
        if not request.task_id:
            raise InvalidParamsError.from_violations([("taskId", "required")])
        await self._load(request.task_id, principal)
        await check_webhook_url(request.url, self.push_config)
        stored = await self._store_push_config(request.task_id, request)
        live = self._live.get(request.task_id)
        if live is not None:
            live.push_configs = [c for c in live.push_configs if c.id != stored.id] + [stored]
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
        await self._load(request.task_id, principal)
        await self.store.delete_push_config(request.task_id, request.id)
        live = self._live.get(request.task_id)
        if live is not None:
            live.push_configs = [c for c in live.push_configs if c.id != request.id]
