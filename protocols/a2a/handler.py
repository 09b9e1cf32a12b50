"""The binding-independent A2A request handler: every protocol method, once.

The JSON-RPC and HTTP+JSON bindings (``server.py``) only decode a request, call a method here
with the caller's principal, and encode what comes back; so both bindings behave the same by
construction (spec 5.1).

Each accepted message is handed to the served agent (:mod:`.executor`: any object with
``execute(context, reply)``; a runtime ``Agent`` is served through
:mod:`.runtime_adapter`) in a background task, with the typed request
(:mod:`.request_context`) and a reply (:mod:`.reply`) through which it answers:

- with a Message and no task (nothing is stored), or with a task that goes SUBMITTED ->
  WORKING -> COMPLETED, FAILED, CANCELED, REJECTED, INPUT_REQUIRED or AUTH_REQUIRED, with the
  artifacts and status updates it sends (:mod:`.live` publishes them);
- an agent that returns without an ending completes its task; one that raises fails it (a
  ``RunOutcome`` of :mod:`agent_runtime.outcome` ends it in the matching state instead).

Every stream on a task (any number, joining at any time) starts with a Task snapshot, then gets
every later event, in order, through the node's event bus (:mod:`.events`, keyed by task id,
outliving runs). A SendStreamingMessage stream closes when its run stops (terminal or
interrupted state); a SubscribeToTask stream follows the task through INPUT_REQUIRED /
AUTH_REQUIRED and the runs later messages start, and closes at a terminal state (spec 3.1.6).
Push configs added mid-run (:mod:`.push_methods`), on any node, get the rest of the events
likewise. What a message must be, and the prompt made of it, is :mod:`.intake`.

INPUT_REQUIRED / AUTH_REQUIRED: the client answers by sending a message with the task's
``taskId``. If the agent waits on ``reply.ask_input`` / ``ask_auth``, the message goes to it
(the task is stored WORKING again) and it carries on, on whichever node it waits
(:mod:`.cross_node` hands it over, :mod:`.node_requests` takes it); otherwise a new agent call starts on the task, given the
state the agent saved with it. A new task in an existing ``contextId`` is given the state saved with the latest task of
that context (same principal), so a conversation carries across tasks. Tasks named in a
message's ``referenceTaskIds`` (the caller's own) are given to the agent.

While a task's agent is at work, another message to it is refused (UnsupportedOperation);
cancel it or wait for it to stop.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator

import anyio

from agent_runtime.outcome import AuthRequired, InputRequired, Rejected, RunOutcome, find_outcome
from agent_runtime.telemetry.metrics import record_a2a_task_state

from .auth import A2AAuthConfig
from .card import AgentCardConfig, build_card, extended_card_available
from .continuation import continued, new_task, referenced, stored_task, waiting_for
from .cross_node import (
    REMOTE_CANCEL_WAIT_S as REMOTE_CANCEL_WAIT_S,  # re-exported: it used to live here
)
from .cross_node import (
    ForwardedAnswer,
    NodeLink,
    cancel_elsewhere,
    forward_answer,
)
from .errors import (
    InvalidPageToken,
    InvalidParamsError,
    TaskNotCancelableError,
    TaskNotFoundError,
    UnsupportedOperationError,
)
from .events import EventBus, Subscription, follow_task
from .executor import ServableAgent, as_served_agent
from .intake import check_message
from .live import LiveTask
from .node_requests import NodeRequestMethods
from .push import PushConfig, PushNotifier, check_webhook_url
from .push_methods import PushConfigMethods
from .request_context import RequestContext
from .runtime_adapter import DEFAULT_INPUT_REQUIRED_MARKER
from .store import (
    DEFAULT_PAGE_SIZE,
    MAX_PAGE_SIZE,
    RUNNING_STATES,
    StaleTaskError,
    TaskQuery,
    TaskRecord,
    TaskStore,
)
from .types import (
    AgentCard,
    CancelTaskRequest,
    GetTaskRequest,
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
    utc_now,
)

logger = logging.getLogger(__name__)

RunnableAgent = ServableAgent
"""What ``create_a2a_app`` serves: a :class:`~.executor.ServedAgent`, or a runtime ``Agent``."""

__all__ = ["DEFAULT_INPUT_REQUIRED_MARKER", "A2ARequestHandler", "RunnableAgent"]


def _outcome_state(outcome: RunOutcome) -> TaskState:
    if isinstance(outcome, InputRequired):
        return TaskState.INPUT_REQUIRED
    if isinstance(outcome, AuthRequired):
        return TaskState.AUTH_REQUIRED
    if isinstance(outcome, Rejected):
        return TaskState.REJECTED
    return TaskState.FAILED


def _with_history(task: Task, history_length: int | None) -> Task:
    if history_length is None or history_length >= len(task.history):
        return task
    if history_length <= 0:
        return task.model_copy(update={"history": []})
    return task.model_copy(update={"history": task.history[-history_length:]})


def _error_text(exc: BaseException) -> str:
    text = f"{type(exc).__name__}: {exc}"
    return text if len(text) <= 500 else text[:497] + "..."


class A2ARequestHandler(PushConfigMethods, NodeRequestMethods):
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
        self.agent = as_served_agent(agent, input_required_marker=input_required_marker)
        self.store = store
        self.card_config = card or AgentCardConfig()
        self.auth = auth
        self.push_config = push if push is not None else PushConfig()
        self.push_enabled = self.push_config.enabled
        self.notifier = PushNotifier(self.push_config)
        self.input_required_marker = input_required_marker
        self.events: EventBus = store.event_bus()
        self._link = NodeLink(self.events)
        self._live: dict[str, LiveTask] = {}
        self._runs: set[asyncio.Task[None]] = set()
        self._recovered = False
        self._closing = False

    # ------------------------------------------------------------------ lifecycle

    async def startup(self) -> None:
        """Mark tasks a previous process left running as failed (once); start the event bus."""
        if not self._recovered:
            self._recovered = True
            count = await self.store.recover()
            if count:
                logger.warning("marked %d interrupted task(s) failed after restart", count)
            await self.events.start(self._on_control)

    async def shutdown(self) -> None:
        """Cancel active runs and stop push delivery."""
        self._closing = True
        for live in list(self._live.values()):
            self._stop_run(live)
        runs = list(self._runs)
        if runs:
            with anyio.move_on_after(5.0):
                await asyncio.gather(*runs, return_exceptions=True)
        await self.events.aclose()  # open subscriptions end
        await self.notifier.aclose()

    # ------------------------------------------------------------------ card

    def build_card(
        self,
        jsonrpc_url: str,
        rest_url: str,
        *,
        extended: bool = False,
        grpc_url: str | None = None,
    ) -> AgentCard:
        return build_card(
            agent_name=self.agent.name,
            agent_description=self.agent.description,
            config=self.card_config,
            jsonrpc_url=jsonrpc_url,
            rest_url=rest_url,
            auth=self.auth,
            push_enabled=self.push_enabled,
            extended=extended,
            grpc_url=grpc_url,
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
    ) -> tuple[LiveTask, bool] | ForwardedAnswer:
        """Create or continue the task and register it live: ``(live, True)`` when a new agent
        call must start; ``(live, False)`` when the message went to an agent waiting on its
        ``ask_*`` here (the task's next phase has begun); a :class:`ForwardedAnswer` when it
        went to one waiting on another node."""
        if self._closing:
            raise UnsupportedOperationError("The agent node is shutting down")
        check_message(request, self.card_config, push_enabled=self.push_enabled)
        message = request.message
        config = request.configuration
        push_cfg = config.task_push_notification_config if config is not None else None
        if push_cfg is not None:
            await check_webhook_url(push_cfg.url, self.push_config)
        now = utc_now()
        waiting = waiting_for(self._live, principal, message)
        if waiting is not None:
            await self._answer_waiting(waiting, message, push_cfg)
            return waiting, False
        if message.task_id:
            stored = await stored_task(self.store, self._live, principal, message)
            holder = self._link.holder_elsewhere(stored)
            if holder is not None and stored.task.status.state.is_interrupted:
                push = push_cfg is not None
                if push_cfg is not None:  # the holder reloads its configs with the answer
                    await self._store_push_config(message.task_id, push_cfg)
                    push_cfg = None
                forwarded = await forward_answer(
                    self._link, self.store, principal, message, holder, push=push
                )
                if forwarded is not None:
                    return forwarded
            record = continued(stored, message, now, self._live)
            state = record.agent_state
        else:
            record, state = await new_task(self.store, principal, message, now)
        context = RequestContext(
            message=record.task.history[-1],
            task=record.task,
            principal=principal,
            referenced_tasks=await referenced(self.store, self._live, principal, message),
            configuration=config,
            request_metadata=request.metadata,
            state=state,
            continues_task=bool(message.task_id),
        )
        live = LiveTask(
            record=record,
            context=context,
            notifier=self.notifier,
            bus=self.events,
            store=self.store,
            opener=self._open,
            task_exists=bool(message.task_id),
            pending_push=push_cfg,
        )
        self._live[record.task.id] = live
        if live.task_exists:
            try:
                await self._open(live)  # stored as the message's answer is under way
            except BaseException:
                self._live.pop(record.task.id, None)
                raise
            live.first_snapshot = live.task
            live.decided.set()
        return live, True

    async def _answer_waiting(
        self,
        waiting: LiveTask,
        message: Message,
        push_cfg: TaskPushNotificationConfig | None,
        *,
        reload_push: bool = False,
    ) -> None:
        """Give ``message`` to the agent waiting on ``waiting``, with the push config sent with
        it (registered like any other; or, with ``reload_push``, stored by the node that took
        the message) in place for the events of the resumed run."""
        waiting.claim()
        try:
            if push_cfg is not None:
                await self._store_push_config(waiting.task.id, push_cfg)
            if push_cfg is not None or reload_push:
                waiting.push_configs = await self._push_configs_for(waiting.task.id)
        except BaseException:
            waiting.unclaim()
            raise
        await waiting.deliver(message.model_copy(update={"context_id": waiting.task.context_id}))

    async def _open(self, live: LiveTask) -> None:
        """Store the task the agent answers with, and tell its push configs it exists."""
        task = live.task
        # Stored as WORKING: the agent is at work, so ListTasks(status=WORKING) finds it, and
        # a crash before the end leaves a row that recover() marks failed. The client is
        # still answered with the snapshot as it was (SUBMITTED for a new task).
        working = task.model_copy(
            update={"status": task.status.model_copy(update={"state": TaskState.WORKING})}
        )
        live.record.task = working
        await self.store.save(live.record)
        if not live.task_exists:
            record_a2a_task_state(TaskState.SUBMITTED.value)
        record_a2a_task_state(TaskState.WORKING.value)
        # A new task's id is known to no one before this returns: it has no configs to read.
        live.push_configs = await self._push_configs_for(task.id) if live.task_exists else []
        if live.pending_push is not None:
            stored = await self._store_push_config(task.id, live.pending_push)
            live.push_configs.append(stored)
        if live.push_configs:
            self.notifier.notify(task.id, live.push_configs, StreamResponse(task=task))

    def _start(self, live: LiveTask) -> None:
        run = asyncio.get_running_loop().create_task(self._run(live))
        self._runs.add(run)
        run.add_done_callback(self._runs.discard)

    async def send_message(
        self, principal: str, request: SendMessageRequest
    ) -> SendMessageResponse:
        accepted = await self._accept(principal, request)
        config = request.configuration
        history_length = config.history_length if config is not None else None
        blocking = config is None or not config.return_immediately
        if isinstance(accepted, ForwardedAnswer):
            task = await accepted.result(wait=blocking)
            return SendMessageResponse(task=_with_history(task, history_length))
        live, new_call = accepted
        stopped = live.stopped  # this phase's (a delivered answer starts a fresh one)
        if new_call:
            self._start(live)
        await live.decided.wait()
        if live.message is not None:
            return SendMessageResponse(message=live.message)
        if blocking:
            await stopped.wait()
            task = live.task
        elif new_call:
            # The task as the agent opened it, as a stream's first event shows it; not however
            # far a quick agent got before this request's turn came (it may have finished).
            task = live.first_snapshot or live.task
        else:
            task = live.task  # resumed: WORKING again
        return SendMessageResponse(task=_with_history(task, history_length))

    async def send_message_stream(
        self, principal: str, request: SendMessageRequest
    ) -> AsyncIterator[StreamResponse]:
        """Validate and start now; the iterator yields the Task (or the agent's Message), then
        the task's events until it stops."""
        if not self.card_config.streaming:
            raise UnsupportedOperationError("This agent does not stream")
        accepted = await self._accept(principal, request)
        config = request.configuration
        history_length = config.history_length if config is not None else None
        if isinstance(accepted, ForwardedAnswer):
            first = _with_history(accepted.task, history_length)
            return follow_task(first, accepted.subscription, through_interruptions=False)
        live, new_call = accepted
        # No await from here to the start: the subscription misses nothing the snapshot lacks.
        subscription = self.events.subscribe(live.task.id)
        if not new_call:
            first = _with_history(live.snapshot(), history_length)
            return follow_task(first, subscription, through_interruptions=False)
        self._start(live)
        return self._answer_stream(live, subscription, history_length)

    async def _answer_stream(
        self, live: LiveTask, subscription: Subscription, history_length: int | None
    ) -> AsyncIterator[StreamResponse]:
        """The agent's Message alone, or the task as it was opened and then its events."""
        try:
            await live.decided.wait()
        except BaseException:
            subscription.close()
            raise
        if live.message is not None:
            subscription.close()
            yield StreamResponse(message=live.message)
            return
        first = _with_history(live.first_snapshot or live.snapshot(), history_length)
        async for event in follow_task(first, subscription, through_interruptions=False):
            yield event

    # ------------------------------------------------------------------ the agent call

    async def _run(self, live: LiveTask) -> None:
        """One call of the served agent: its reply moves the task; what it leaves undone (no
        ending, an exception, a cancel) the node settles here."""
        task_id = live.record.task.id
        reply = live.reply
        try:
            failure: Exception | None = None
            with anyio.CancelScope() as scope:
                live.scope = scope
                if live.cancel_requested:
                    scope.cancel()
                try:
                    await self.agent.execute(live.context, reply)
                except Exception as exc:
                    failure = exc
            live.scope = None
            outcome = find_outcome(failure) if failure is not None else None
            if reply.message is not None:
                if failure is not None:
                    logger.warning("task %s: agent raised after its reply: %r", task_id, failure)
            elif live.cancel_requested or (scope.cancelled_caught and failure is None):
                await reply.settle(TaskState.CANCELED)
            elif reply.closed:
                if failure is not None:  # the task keeps the ending the agent gave it
                    logger.warning("task %s: agent raised after ending: %r", task_id, failure)
            elif outcome is not None:
                await reply.settle(_outcome_state(outcome), str(outcome))
            elif failure is not None:
                logger.warning("task %s failed: %r", task_id, failure)
                await reply.settle(TaskState.FAILED, "The agent failed: " + _error_text(failure))
            else:
                await reply.settle(TaskState.COMPLETED)
        except Exception:
            logger.exception("task %s: error while finishing", task_id)
        finally:
            self._live.pop(task_id, None)
            self.notifier.finish(task_id)
            live.finish()

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
            self._stop_run(live)
            await live.done.wait()
            return live.task
        if self._link.holder_elsewhere(record) is not None or (
            self.events.spans_processes and record.task.status.state.value in RUNNING_STATES
        ):
            stopped = await cancel_elsewhere(self.events, self.store, principal, request.id)
            if stopped is not None:
                return stopped
            record = await self.store.get(request.id, principal) or record
        # Not running here (interrupted, or nobody answered): cancel in the store.
        task = record.task
        status = TaskStatus(state=TaskState.CANCELED, timestamp=utc_now())
        record = TaskRecord(
            task=task.model_copy(update={"status": status}),
            owner=record.owner,
            agent_state=record.agent_state,
        )
        try:
            await self.store.save(record)
        except StaleTaskError:  # it ended meanwhile (on another node)
            raise TaskNotCancelableError(
                f"Task {request.id} has ended and cannot be canceled",
                metadata={"taskId": request.id},
            ) from None
        record_a2a_task_state(TaskState.CANCELED.value)
        event = StreamResponse(
            status_update=TaskStatusUpdateEvent(
                task_id=task.id, context_id=task.context_id or "", status=status
            )
        )
        self.events.publish(task.id, event)  # subscribers following the task end here
        configs = await self._push_configs_for(task.id)
        if configs:
            self.notifier.notify(task.id, configs, event)
            self.notifier.finish(task.id)
        return record.task

    def _stop_run(self, live: LiveTask) -> None:
        live.cancel_requested = True
        if live.scope is not None:
            live.scope.cancel()

    async def subscribe(
        self, principal: str, request: SubscribeToTaskRequest
    ) -> AsyncIterator[StreamResponse]:
        if not self.card_config.streaming:
            raise UnsupportedOperationError("This agent does not stream")
        live = self._live.get(request.id)
        if live is not None and live.record.owner == principal:
            # Running here: no await between the snapshot and subscribing, nothing slips by.
            return follow_task(
                live.snapshot(), self.events.subscribe(request.id), through_interruptions=True
            )
        # Not running here (interrupted, or running on another node): subscribe first, then
        # read the task, so an event published while we read is queued, never lost.
        subscription = self.events.subscribe(request.id)
        try:
            record, live = await self._load(request.id, principal)
            if live is not None:  # a run started here while we read: its snapshot is current
                subscription.close()
                subscription = self.events.subscribe(request.id)
                task = live.snapshot()
            else:
                task = record.task
            state = task.status.state
            if state.is_terminal:
                raise UnsupportedOperationError(
                    f"Task {request.id} is {state.value}; a terminal task has no updates to follow",
                    metadata={"taskId": request.id},
                )
        except BaseException:
            subscription.close()
            raise
        return follow_task(task, subscription, through_interruptions=True)
