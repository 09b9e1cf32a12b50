"""The agent loop: model turn, tool calls through the dispatcher, results back, until an answer.

``Agent.run`` returns a ``RunResult``, and with ``on_event`` awaits a callback with each typed
event as it happens (no extra task or queue: the cheapest way to follow a run);
``Agent.run_stream`` yields the same events as an async iterator. All go through one loop
(``_loop``), which reports events to an optional sink. With telemetry configured
(:mod:`agent_runtime.telemetry`) a run is an ``invoke_agent`` span and each model turn a ``chat``
span inside it; with none, the loop pays one check per run and per turn.
"""

from __future__ import annotations

import math
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import anyio

from .backend import ModelBackend, ModelResponse, ModelSettings, TextDelta, TurnAssembler
from .dispatcher import DispatchConfig, Dispatcher, EventSink
from .errors import AgentRunError
from .events import ModelTurnFinished, RunEvent, RunFinished, TextDeltaEvent
from .limits import UsageLimits
from .policy import ToolPolicy
from .result import RunResult
from .telemetry.metrics import record_model_call
from .telemetry.spans import NO_SPAN, SpanScope, error_type_of, span, tracer
from .toolset import ToolsLike, to_toolsets
from .types import (
    Message,
    SystemMessage,
    ToolCallRecord,
    ToolResultMessage,
    ToolSpec,
    Usage,
    UserMessage,
)


class Agent:
    """A model, its tools and its instructions.

    Use ``async with agent:`` to keep toolsets (MCP servers, peers) connected across runs; a run
    outside that block connects them for its own duration.
    """

    def __init__(
        self,
        model: ModelBackend,
        tools: Sequence[ToolsLike] = (),
        *,
        instructions: str | None = None,
        limits: UsageLimits | None = None,
        settings: ModelSettings | None = None,
        policy: ToolPolicy | None = None,
        dispatch: DispatchConfig | None = None,
        name: str = "agent",
        description: str = "",
        reset_tool_choice: bool = True,
    ) -> None:
        """``reset_tool_choice``: once a turn has called tools, a ``tool_choice`` that forces
        calls (``required`` or a tool's name) goes back to ``auto`` for the rest of the run, so
        the model can answer from the results instead of calling tools until a limit stops it."""
        self.model = model
        self.reset_tool_choice = reset_tool_choice
        self.instructions = instructions
        self.limits = limits or UsageLimits()
        self.settings = settings or ModelSettings()
        self.name = name
        self.description = description
        config = dispatch or DispatchConfig()
        if policy is not None:
            config.policy = policy
        self.dispatcher = Dispatcher(to_toolsets(tools), config)
        self._users = 0
        self._lock = anyio.Lock()
        self._stack: AsyncExitStack | None = None

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        if self._users > 0:  # already connected (a served agent): no lock, nothing to await
            self._users += 1
            return self
        async with self._lock:
            if self._users == 0:
                stack = AsyncExitStack()
                await stack.enter_async_context(self.dispatcher)
                self._stack = stack
            self._users += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._users > 1:  # others still use the connections
            self._users -= 1
            return
        async with self._lock:
            self._users -= 1
            if self._users == 0 and self._stack is not None:
                stack, self._stack = self._stack, None
                await stack.aclose()

    # ------------------------------------------------------------------ running

    async def run(
        self,
        prompt: str,
        message_history: Sequence[Message] | None = None,
        *,
        settings: ModelSettings | None = None,
        on_event: EventSink | None = None,
    ) -> RunResult:
        """Run to a final answer; raises ``AgentRunError`` subclasses on limits or budgets.

        ``on_event`` is awaited with each event of the run, in order, in the task that emits it
        (the run's, or a parallel tool call's); the last one is ``RunFinished``. The run waits
        while it runs, and an exception it raises ends the run.
        """
        async with self:
            return await self._loop(prompt, message_history, settings, on_event)

    def run_stream(
        self,
        prompt: str,
        message_history: Sequence[Message] | None = None,
        *,
        settings: ModelSettings | None = None,
    ) -> RunStream:
        """Stream the run's events; the last one is ``RunFinished`` with the ``RunResult``."""
        return RunStream(self, prompt, message_history, settings)

    async def _loop(
        self,
        prompt: str,
        history: Sequence[Message] | None,
        settings: ModelSettings | None,
        emit: EventSink | None,
    ) -> RunResult:
        """The run, inside its ``invoke_agent`` span when tracing is on."""
        if tracer() is None:
            return await self._steps(prompt, history, settings, emit, NO_SPAN)
        attributes = {"gen_ai.operation.name": "invoke_agent", "gen_ai.agent.name": self.name}
        with span(f"invoke_agent {self.name}", attributes=attributes) as scope:
            return await self._steps(prompt, history, settings, emit, scope)

    async def _steps(
        self,
        prompt: str,
        history: Sequence[Message] | None,
        settings: ModelSettings | None,
        emit: EventSink | None,
        scope: SpanScope,
    ) -> RunResult:
        messages: list[Message] = list(history or [])
        if self.instructions and not any(isinstance(m, SystemMessage) for m in messages):
            messages.insert(0, SystemMessage(content=self.instructions))
        start = len(messages)
        messages.append(UserMessage(content=prompt))
        run_settings = self.settings.merged(settings)
        usage = Usage()
        records: list[ToolCallRecord] = []
        step = 0
        while True:
            self.limits.check_before_request(step, messages)
            tools = await self.dispatcher.tool_specs()
            response = await self._model_turn(messages, tools, run_settings, emit)
            step += 1
            turn_usage = response.usage.model_copy(
                update={"requests": max(1, response.usage.requests)}
            )
            usage = usage + turn_usage
            if scope.recording:
                scope.set_many(
                    {
                        "agent_runtime.steps": step,
                        "gen_ai.usage.input_tokens": usage.input_tokens,
                        "gen_ai.usage.output_tokens": usage.output_tokens,
                    }
                )
            messages.append(response.message)
            if emit is not None:
                await emit(ModelTurnFinished(message=response.message, usage=turn_usage, step=step))
            self.limits.check_tokens(usage, messages)
            calls = response.message.tool_calls
            if not calls:
                result = RunResult(
                    output=response.message.text,
                    messages=messages,
                    usage=usage,
                    tool_calls=records,
                    new_message_index=start,
                )
                if emit is not None:
                    await emit(RunFinished(result=result))
                return result
            if self.reset_tool_choice and run_settings.tool_choice not in ("auto", "none"):
                run_settings = run_settings.model_copy(update={"tool_choice": "auto"})
            self.limits.check_tool_calls(len(records), len(calls), messages)
            try:
                done = await self.dispatcher.dispatch(calls, emit)
            except AgentRunError as err:
                err.messages = list(messages)
                raise
            records.extend(done)
            if scope.recording:
                scope.set("agent_runtime.tool_calls", len(records))
            for record in done:
                messages.append(
                    ToolResultMessage(
                        tool_call_id=record.call.id,
                        tool_name=record.call.name,
                        result=record.result,
                    )
                )

    async def _model_turn(
        self,
        messages: list[Message],
        tools: list[ToolSpec],
        settings: ModelSettings,
        emit: EventSink | None,
    ) -> ModelResponse:
        """One streamed model turn, assembled; with its ``chat`` span and metrics."""
        model = self.model
        model_name = model.model_name
        scope = NO_SPAN
        if tracer() is not None:
            scope = span(
                f"chat {model_name}",
                kind="client",
                attributes={
                    "gen_ai.operation.name": "chat",
                    "gen_ai.request.model": model_name,
                    "gen_ai.provider.name": model.provider_name,
                    "gen_ai.agent.name": self.name,
                },
            )
        assembler = TurnAssembler()
        started = time.perf_counter()
        first: float | None = None
        with scope:
            try:
                async for event in model.stream(messages, tools, settings):
                    if first is None:
                        first = time.perf_counter()
                    assembler.add(event)
                    if emit is not None and isinstance(event, TextDelta) and event.text:
                        await emit(TextDeltaEvent(text=event.text))
            except BaseException as exc:
                record_model_call(
                    model=model_name,
                    operation="chat",
                    input_tokens=None,
                    output_tokens=None,
                    duration_s=time.perf_counter() - started,
                    error_type=error_type_of(exc),
                )
                raise
            response = assembler.response()
            usage = response.usage
            if scope.recording:
                scope.set_many(
                    {
                        "gen_ai.usage.input_tokens": usage.input_tokens,
                        "gen_ai.usage.output_tokens": usage.output_tokens,
                        "gen_ai.response.finish_reasons": [response.finish_reason],
                        "gen_ai.response.time_to_first_chunk": (
                            None if first is None else first - started
                        ),
                    }
                )
                if usage.cached_tokens:
                    scope.set("gen_ai.usage.cache_read.input_tokens", usage.cached_tokens)
        record_model_call(
            model=model_name,
            operation="chat",
            input_tokens=usage.input_tokens,
            output_tokens=usage.output_tokens,
            duration_s=time.perf_counter() - started,
        )
        return response


class RunStream:
    """``async for event in agent.run_stream(prompt)``; ``.result`` is set when it ends.

    To stop early, use ``async with agent.run_stream(...) as events`` (or ``aclose()`` the
    iterator) so the run is cancelled in the task that started it.
    """

    def __init__(
        self,
        agent: Agent,
        prompt: str,
        history: Sequence[Message] | None,
        settings: ModelSettings | None,
    ) -> None:
        self._agent = agent
        self._prompt = prompt
        self._history = history
        self._settings = settings
        self._iterator: AsyncIterator[RunEvent] | None = None
        self.result: RunResult | None = None

    def __aiter__(self) -> AsyncIterator[RunEvent]:
        if self._iterator is None:
            self._iterator = self._events()
        return self._iterator

    async def __aenter__(self) -> AsyncIterator[RunEvent]:
        return self.__aiter__()

    async def __aexit__(self, *exc_info: Any) -> None:
        if self._iterator is not None:
            await self._iterator.aclose()  # type: ignore[attr-defined]

    async def _events(self) -> AsyncIterator[RunEvent]:
        send, receive = anyio.create_memory_object_stream[RunEvent](max_buffer_size=math.inf)
        failure: list[BaseException] = []

        async def drive() -> None:
            async with send:
                try:
                    async with self._agent:
                        self.result = await self._agent._loop(
                            self._prompt, self._history, self._settings, send.send
                        )
                except Exception as exc:  # re-raised in the consumer's task below
                    failure.append(exc)

        closed_early = False
        async with anyio.create_task_group() as group:
            group.start_soon(drive)
            try:
                async with receive:
                    async for event in receive:
                        yield event
            except GeneratorExit:
                # The consumer stopped: cancel the run here, in the task that owns it.
                closed_early = True
                group.cancel_scope.cancel()
        if failure and not closed_early:
            raise failure[0]
