"""The binding-independent A2A request handler: every protocol method, once.

The JSON-RPC and HTTP+JSON bindings (``server.py``) only decode a request, call a method here
with the caller's principal, and encode what comes back; so both bindings behave the same by
construction (spec 5.1).

Each accepted message becomes a run of the runtime ``Agent`` in a background task:

- the task goes SUBMITTED -> WORKING -> COMPLETED, FAILED, CANCELED or INPUT_REQUIRED;
- text deltas stream as ``artifactUpdate`` chunks of the artifact ``response`` (``append``); when
  the run ends, one last ``artifactUpdate`` (``append=false``, ``lastChunk=true``) replaces it with
  the final answer, so text the model wrote before a tool call never lingers in the artifact;
- tool activity streams as WORKING ``statusUpdate`` events whose message carries a ``data`` part
  ``{"toolCall": {...}}`` or ``{"toolResult": {...}}`` (not kept in history);
- the final status carries the agent's answer as a message, which is also appended to history.

Every stream on a task (SendStreamingMessage, SubscribeToTask, any number of them, joining at any
time) starts with a Task snapshot whose ``response`` artifact holds the text streamed so far, then
gets every later event of the run, in order, until the task stops (terminal or interrupted
state); then the stream closes. Push configs added mid-run get the rest of the events likewise.

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
import json
import logging
import math
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream
from pydantic import TypeAdapter

from agent_runtime.events import (
    RunFinished,
    TextDeltaEvent,
    ToolCallFinished,
    ToolCallStarted,
)
from agent_runtime.result import RunResult
from agent_runtime.types import Message as RuntimeMessage

from .auth import A2AAuthConfig
from .card import AgentCardConfig, build_card, extended_card_available
from .errors import (
    ContentTypeNotSupportedError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from .push import PushConfig, PushNotifier, check_webhook_url, redact
from .store import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    InvalidPageToken,
    TaskQuery,
    TaskRecord,
    TaskStore,
)
from .types import (
    AgentCard,
    Artifact,
    CancelTaskRequest,
    DeleteTaskPushNotificationConfigRequest,
    GetTaskPushNotificationConfigRequest,
    GetTaskRequest,
    ListTaskPushNotificationConfigsRequest,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    Part,
    Role,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskArtifactUpdateEvent,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
    new_id,
    utc_now,
)

logger = logging.getLogger(__name__)

RESPONSE_ARTIFACT_ID = "response"
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


@dataclass
class _Live:
    """A task whose run is in progress in this process."""

    record: TaskRecord
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


def _with_history(task: Task, history_length: int | None) -> Task:
    if history_length is None or history_length >= len(task.history):
        return task
    if history_length <= 0:
        return task.model_copy(update={"history": []})
    return task.model_copy(update={"history": task.history[-history_length:]})


def _part_to_prompt(part: Part) -> str:
    if part.text is not None:
        return part.text
    if part.data is not None:
        return json.dumps(part.data, ensure_ascii=False)
    label = part.filename or part.media_type or "file"
    if part.url is not None:
        return f"[{label}: {part.url}]"
    return f"[{label}, {len(part.raw or b'')} bytes]"


def _prompt_of(message: Message) -> str:
    return "\n".join(_part_to_prompt(p) for p in message.parts)


def _media_ok(media_type: str, accepted: Sequence[str]) -> bool:
    media = media_type.split(";", 1)[0].strip().lower()
    major = media.split("/", 1)[0]
    for mode in accepted:
        m = mode.split(";", 1)[0].strip().lower()
        if m in ("*/*", "*", media) or (m.endswith("/*") and m[:-2] == major):
            return True
    return False


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
        self._live: dict[str, _Live] = {}
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

    async def _load(self, task_id: str, principal: str) -> tuple[TaskRecord, _Live | None]:
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

    def _check_message(self, request: SendMessageRequest) -> None:
        message = request.message
        if not message.parts:
            raise InvalidParamsError.from_violations(
                [("message.parts", "at least one part is required")]
            )
        if not message.message_id:
            raise InvalidParamsError.from_violations(
                [("message.messageId", "a message id is required")]
            )
        if message.role != Role.USER:
            # ROLE_AGENT marks what the server says; a client's message is the user's turn.
            raise InvalidParamsError.from_violations(
                [("message.role", f"must be {Role.USER.value} (got {message.role.value})")]
            )
        inputs = self.card_config.default_input_modes
        for index, part in enumerate(message.parts):
            if part.media_type and not _media_ok(part.media_type, inputs):
                raise ContentTypeNotSupportedError(
                    f"message.parts[{index}] has media type {part.media_type!r}; this agent"
                    f" accepts {', '.join(inputs)}",
                    metadata={"mediaType": part.media_type},
                )
        config = request.configuration
        if config is not None and config.accepted_output_modes:
            outputs = self.card_config.default_output_modes
            if not any(_media_ok(o, config.accepted_output_modes) for o in outputs):
                raise ContentTypeNotSupportedError(
                    "None of the accepted output modes"
                    f" ({', '.join(config.accepted_output_modes)}) is produced by this agent"
                    f" ({', '.join(outputs)})"
                )
        if config is not None and config.task_push_notification_config is not None:
            if not self.push_enabled:
                raise PushNotificationNotSupportedError()

    async def _accept(
        self, principal: str, request: SendMessageRequest
    ) -> tuple[_Live, str, list[RuntimeMessage]]:
        """Create or continue the task; register it live. Returns (live, prompt, history)."""
        if self._closing:
            raise UnsupportedOperationError("The agent node is shutting down")
        self._check_message(request)
        message = request.message
        config = request.configuration
        push_cfg = config.task_push_notification_config if config is not None else None
        if push_cfg is not None:
            await check_webhook_url(push_cfg.url, self.push_config)
        now = utc_now()
        if message.task_id:
            task_id = message.task_id
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
                    [
                        (
                            "message.contextId",
                            f"does not match the contextId of task {task_id}",
                        )
                    ]
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
            record = TaskRecord(task=task, owner=principal, agent_state=record.agent_state)
        else:
            context_id = message.context_id or new_id()
            history = []
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
            record = TaskRecord(task=task, owner=principal, agent_state=[])
        live = _Live(record=record)
        self._live[task_id] = live
        try:
            # Stored as WORKING: the run starts right away, so ListTasks(status=WORKING) finds
            # it, and a crash before the end leaves a row that recover() marks failed. The
            # client is still answered with the SUBMITTED snapshot.
            working = task.model_copy(
                update={"status": task.status.model_copy(update={"state": TaskState.WORKING})}
            )
            await self.store.save(
                TaskRecord(task=working, owner=principal, agent_state=record.agent_state)
            )
            live.push_configs = await self._push_configs_for(task_id)
            if push_cfg is not None:
                stored = await self._store_push_config(task_id, push_cfg)
                live.push_configs.append(stored)
        except BaseException:
            self._live.pop(task_id, None)
            raise
        if live.push_configs:
            self.notifier.notify(task_id, live.push_configs, StreamResponse(task=task))
        prompt = _prompt_of(message)
        if message.reference_task_ids:
            prompt = await self._with_references(principal, message, prompt)
        return live, prompt, history

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

    def _start(self, live: _Live, prompt: str, history: list[RuntimeMessage]) -> None:
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
        receive = self._listen(live)
        self._start(live, prompt, history)
        return self._stream(snapshot, receive)

    def _listen(self, live: _Live) -> MemoryObjectReceiveStream[StreamResponse]:
        send, receive = anyio.create_memory_object_stream[StreamResponse](math.inf)
        live.listeners.add(send)
        return receive

    async def _stream(
        self, first: Task, receive: MemoryObjectReceiveStream[StreamResponse]
    ) -> AsyncIterator[StreamResponse]:
        async with receive:
            yield StreamResponse(task=first)
            async for event in receive:
                yield event

    # ------------------------------------------------------------------ the run

    def _wants_events(self, live: _Live) -> bool:
        return bool(live.listeners or live.push_configs)

    def _publish(self, live: _Live, event: StreamResponse) -> None:
        for send in list(live.listeners):
            try:
                send.send_nowait(event)
            except (anyio.BrokenResourceError, anyio.ClosedResourceError):
                live.listeners.discard(send)
        if live.push_configs:
            self.notifier.notify(live.task.id, live.push_configs, event)

    def _set_status(self, live: _Live, status: TaskStatus, *, publish: bool = True) -> None:
        task = live.task
        live.record.task = task.model_copy(update={"status": status})
        if publish and (live.listeners or live.push_configs):
            assert task.context_id is not None
            self._publish(
                live,
                StreamResponse(
                    status_update=TaskStatusUpdateEvent(
                        task_id=task.id, context_id=task.context_id, status=status
                    )
                ),
            )

    def _activity(self, live: _Live, data: dict[str, Any]) -> None:
        task = live.task
        assert task.context_id is not None
        note = Message(
            message_id=new_id(),
            role=Role.AGENT,
            parts=[Part(data=data)],
            context_id=task.context_id,
            task_id=task.id,
        )
        self._set_status(
            live, TaskStatus(state=TaskState.WORKING, message=note, timestamp=utc_now())
        )

    def _artifact_chunk(self, live: _Live, text: str, *, append: bool, last: bool) -> None:
        task = live.task
        assert task.context_id is not None
        self._publish(
            live,
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

    async def _drive(
        self, live: _Live, prompt: str, history: list[RuntimeMessage]
    ) -> RunResult | None:
        """Run the agent, turning its events into task state and stream events.

        The run always streams, even when nobody listens yet: a subscriber or push config may
        join at any moment and must get every later event, and its snapshot must hold the text
        streamed before it joined (``live.streamed``). Events are only built when someone
        listens.
        """
        result: RunResult | None = None
        async with self.agent.run_stream(prompt, message_history=history) as events:
            async for event in events:
                if isinstance(event, TextDeltaEvent):
                    if event.text:
                        append = bool(live.streamed)
                        live.streamed.append(event.text)
                        if self._wants_events(live):
                            self._artifact_chunk(live, event.text, append=append, last=False)
                elif isinstance(event, ToolCallStarted):
                    call = event.call
                    self._activity(
                        live,
                        {
                            "toolCall": {
                                "id": call.id,
                                "name": call.name,
                                "arguments": call.arguments,
                            }
                        },
                    )
                elif isinstance(event, ToolCallFinished):
                    rec = event.record
                    self._activity(
                        live,
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

    async def _run(self, live: _Live, prompt: str, history: list[RuntimeMessage]) -> None:
        task_id = live.task.id
        try:
            result: RunResult | None = None
            failure: BaseException | None = None
            with anyio.CancelScope() as scope:
                live.scope = scope
                if live.cancel_requested:
                    scope.cancel()
                self._set_status(live, TaskStatus(state=TaskState.WORKING, timestamp=utc_now()))
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
            for send in list(live.listeners):
                send.close()
            live.listeners.clear()
            self.notifier.finish(task_id)
            live.done.set()

    async def _finish(self, live: _Live, result: RunResult) -> None:
        output = result.output
        state = TaskState.COMPLETED
        marker = self.input_required_marker
        if marker and output.lstrip().startswith(marker):
            state = TaskState.INPUT_REQUIRED
            output = output.lstrip()[len(marker) :].strip()
        live.record.agent_state = _HISTORY.dump_python(result.messages, mode="json")
        task = live.task
        artifact = Artifact(
            artifact_id=RESPONSE_ARTIFACT_ID, name=RESPONSE_ARTIFACT_ID, parts=[Part(text=output)]
        )
        artifacts = [a for a in task.artifacts if a.artifact_id != RESPONSE_ARTIFACT_ID]
        live.record.task = task.model_copy(update={"artifacts": [*artifacts, artifact]})
        live.streamed.clear()
        if self._wants_events(live):
            self._artifact_chunk(live, output, append=False, last=True)
        await self._end(live, state, output)

    async def _end(self, live: _Live, state: TaskState, text: str | None) -> None:
        live.streamed.clear()  # a failed or canceled run leaves no half-written answer
        task = live.task
        message = None
        if text is not None:
            message = Message.agent_text(text, context_id=task.context_id, task_id=task.id)
            live.record.task = task.model_copy(update={"history": [*task.history, message]})
        status = TaskStatus(state=state, message=message, timestamp=utc_now())
        self._set_status(live, status, publish=False)
        with anyio.CancelScope(shield=True):
            await self.store.save(live.record)
        self._set_status(live, status, publish=True)

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
        return self._stream(live.snapshot(), self._listen(live))

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
