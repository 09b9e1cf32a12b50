"""The runtime ``Agent`` served over A2A: one run per message, as a task.

:class:`RuntimeAgentExecutor` is the :class:`~.executor.ServedAgent` the node uses for an
``agent_runtime.Agent``:

- the prompt is the message's parts (:func:`~.intake.prompt_of`), after a note per referenced
  task (``[referenced task <id> (<state>): <artifact text>]``, spec 3.4.3); the run continues the
  runtime history saved with the task (or with the latest task of its context);
- the run's events come through its ``on_event`` callback (``Agent.run``: no stream, task or
  queue per run); text deltas stream as chunks of the artifact ``response``; tool activity
  streams as WORKING status updates whose message carries a data part ``{"toolCall": ...}`` or
  ``{"toolResult": ...}``; when the run ends, one last chunk (``append=false``,
  ``lastChunk=true``) replaces the streamed text with the final answer, which also completes the
  task as its status message;
- a final answer starting with ``input_required_marker`` (default ``[input-required]``) asks the
  rest as a question (INPUT_REQUIRED); a tool raising ``InputRequired``, ``AuthRequired`` or
  ``Rejected`` (:mod:`agent_runtime.outcome`) ends the task in that state with its message;
- a tool call the policy asks about (and that no other approver can decide) puts the task in
  AUTH_REQUIRED: spec 7.6 names "human approval before a destructive action" as in-task
  authorisation. The status message names the call (text, and a data part
  ``{"approvalRequest": {"toolCallId", "tool", "arguments"}}``); the caller's next message on the
  task decides (a data part ``{"approved": true|false}``, or text starting with yes / approve /
  allow / ok for yes, anything else no) and the run carries on with that decision.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from contextlib import asynccontextmanager
from typing import Any, Protocol

import anyio
from pydantic import TypeAdapter, ValidationError

from agent_runtime.events import RunEvent, TextDeltaEvent, ToolCallFinished, ToolCallStarted
from agent_runtime.outcome import AuthRequired, InputRequired, Rejected, RunOutcome
from agent_runtime.policy import run_approver
from agent_runtime.result import RunResult
from agent_runtime.types import AssistantMessage, ToolCall, ToolResult, ToolResultMessage, ToolSpec
from agent_runtime.types import Message as RuntimeMessage

from .reply import TaskReply
from .request_context import RequestContext
from .types import Message, Part

DEFAULT_INPUT_REQUIRED_MARKER = "[input-required]"
RESPONSE_ARTIFACT_ID = "response"

_HISTORY = TypeAdapter(list[RuntimeMessage])
_YES = ("yes", "y", "approve", "approved", "allow", "allowed", "ok", "true")


class RunnableAgent(Protocol):
    """What the adapter needs of ``agent_runtime.Agent``: a name, and runs that report their
    events (the last one ``RunFinished``) to a callback as they happen."""

    name: str
    description: str

    async def run(
        self,
        prompt: str,
        message_history: Sequence[RuntimeMessage] | None = None,
        *,
        on_event: Callable[[RunEvent], Awaitable[None]] | None = None,
    ) -> RunResult: ...


def approval_answer(message: Message) -> bool:
    """Whether the caller's message approves: a data part's ``approved``, else its text."""
    for part in message.parts:
        if isinstance(part.data, dict) and isinstance(part.data.get("approved"), bool):
            return bool(part.data["approved"])
    words = message.text.strip().lower().split()
    return bool(words) and words[0].strip(".,!") in _YES


def history_of(state: Any) -> list[RuntimeMessage]:
    """The runtime history saved as a task's state (empty for none or for another shape)."""
    if not state:
        return []
    try:
        return _HISTORY.validate_python(state)
    except ValidationError:
        return []


def prompt_with_references(context: RequestContext) -> str:
    """The message's prompt after one note per referenced task (what it produced)."""
    notes = []
    for task in context.referenced_tasks:
        outputs = " ".join(a.text for a in task.artifacts if a.text)
        notes.append(f"[referenced task {task.id} ({task.status.state.value}): {outputs[:4000]}]")
    return "\n".join([*notes, context.text])


def _closed_calls(messages: list[RuntimeMessage], reason: str) -> list[RuntimeMessage]:
    """``messages`` with a result for each call of the last turn that has none, so the history
    a stopped run leaves can be continued."""
    answered = {m.tool_call_id for m in messages if isinstance(m, ToolResultMessage)}
    last = next((m for m in reversed(messages) if isinstance(m, AssistantMessage)), None)
    if last is None:
        return messages
    closed = [
        ToolResultMessage(tool_call_id=call.id, tool_name=call.name, result=ToolResult.text(reason))
        for call in last.tool_calls
        if call.id not in answered
    ]
    return [*messages, *closed]


class _Gate:
    """Closed while the task waits in AUTH_REQUIRED for an approval: the task takes no other
    update then, so the run's other events wait at the gate. Parallel calls ask one at a time
    (the task has one status). Nothing is allocated until a first approval is asked."""

    def __init__(self) -> None:
        self._open: anyio.Event | None = None  # None: open
        self._asking: anyio.Lock | None = None

    @asynccontextmanager
    async def closed(self) -> AsyncIterator[None]:
        if self._asking is None:
            self._asking = anyio.Lock()
        async with self._asking:
            self._open = opened = anyio.Event()
            try:
                yield
            finally:
                opened.set()

    async def wait(self) -> None:
        # Checked again after each wait, and no checkpoint once open: the caller's next update
        # runs before an approval can close the gate.
        while self._open is not None and not self._open.is_set():
            await self._open.wait()


class RuntimeAgentExecutor:
    """Serves a runtime ``Agent`` (see the module docstring)."""

    def __init__(
        self,
        agent: RunnableAgent,
        *,
        input_required_marker: str | None = DEFAULT_INPUT_REQUIRED_MARKER,
    ) -> None:
        self.agent = agent
        self.name = agent.name
        self.description = agent.description
        self.input_required_marker = input_required_marker

    async def execute(self, context: RequestContext, reply: TaskReply) -> None:
        await reply.start()
        prompt = prompt_with_references(context)
        gate = _Gate()

        async def approve(call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]) -> bool:
            async with gate.closed():
                shown = json.dumps(arguments, ensure_ascii=False)
                shown = shown if len(shown) <= 500 else shown[:497] + "..."
                answer = await reply.ask_auth(
                    f"Approve the call to tool '{spec.name}' with arguments {shown}?"
                    " Reply yes or no.",
                    data={
                        "approvalRequest": {
                            "toolCallId": call.id,
                            "tool": spec.name,
                            "arguments": arguments,
                        }
                    },
                )
            return approval_answer(answer)

        finished = False
        try:
            with run_approver(approve):
                try:
                    result = await self.agent.run(
                        prompt,
                        message_history=history_of(context.state),
                        on_event=self._follower(reply, gate),
                    )
                except RunOutcome as outcome:
                    reply.discard_artifact(RESPONSE_ARTIFACT_ID)
                    await self._stop(reply, outcome)
                    finished = True
                    return
            await self._finish(reply, result)
            finished = True
        finally:
            if not finished:  # failed or canceled: no half-written answer stays in the task
                reply.discard_artifact(RESPONSE_ARTIFACT_ID)

    def _follower(self, reply: TaskReply, gate: _Gate) -> Callable[[RunEvent], Awaitable[None]]:
        """The run's event callback: its text and tool activity to the task. An event that
        comes while the task waits for an approval (a parallel call finishing) waits at the
        gate, and its call with it, until the task resumes."""
        streamed = False

        async def on_event(event: RunEvent) -> None:
            nonlocal streamed
            await gate.wait()
            if isinstance(event, TextDeltaEvent):
                if event.text:
                    await reply.artifact_chunk(
                        [Part(text=event.text)],
                        artifact_id=RESPONSE_ARTIFACT_ID,
                        append=streamed,
                        name=None if streamed else RESPONSE_ARTIFACT_ID,
                    )
                    streamed = True
            elif isinstance(event, ToolCallStarted):
                call = event.call
                await reply.status(
                    data={
                        "toolCall": {"id": call.id, "name": call.name, "arguments": call.arguments}
                    }
                )
            elif isinstance(event, ToolCallFinished):
                rec = event.record
                await reply.status(
                    data={
                        "toolResult": {
                            "id": rec.call.id,
                            "name": rec.call.name,
                            "isError": rec.result.is_error,
                            "text": rec.result.text_content[:2000],
                        }
                    }
                )

        return on_event

    async def _finish(self, reply: TaskReply, result: RunResult) -> None:
        output = result.output
        marker = self.input_required_marker
        asks = bool(marker) and output.lstrip().startswith(marker or "")
        if asks:
            output = output.lstrip()[len(marker or "") :].strip()
        reply.save_state(_HISTORY.dump_python(result.messages, mode="json"))
        await reply.add_artifact(
            [Part(text=output)], artifact_id=RESPONSE_ARTIFACT_ID, name=RESPONSE_ARTIFACT_ID
        )
        if asks:
            await reply.require_input(output)
        else:
            await reply.complete(output)

    async def _stop(self, reply: TaskReply, outcome: RunOutcome) -> None:
        text = str(outcome)
        messages = _closed_calls(outcome.messages, f"The run stopped here: {text}")
        reply.save_state(_HISTORY.dump_python(messages, mode="json"))
        if isinstance(outcome, InputRequired):
            await reply.require_input(text)
        elif isinstance(outcome, AuthRequired):
            await reply.require_auth(text)
        elif isinstance(outcome, Rejected):
            await reply.reject(text)
        else:
            await reply.fail(text)
