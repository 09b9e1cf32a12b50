"""A model that decides each reply whole, then streams it in pieces as a real model does.

The base of the models that need no LLM: ``ScriptedModel`` and ``FunctionModel``
(``agent_runtime.testing``) and ``SchemaModel`` (``agent_runtime.schema_model``). A subclass
implements ``_reply``: the whole assistant turn for a request, as text, tool calls or a
message; ``TurnModel`` streams it as text deltas, tool-call deltas and a finish with estimated
usage, so the agent loop sees what a real backend would send.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import AsyncIterator, Sequence

from .backend import ModelBackend, ModelEvent, ModelFinish, ModelSettings, TextDelta, ToolCallDelta
from .errors import UserError
from .types import AssistantMessage, Message, ToolCall, ToolSpec, Usage

__all__ = ["Turn", "TurnModel"]

Turn = AssistantMessage | str | ToolCall | list[ToolCall]
"""One whole reply: text, one tool call, several, or the assistant message itself."""


def _estimate_tokens(text: str) -> int:
    return max(1, len(text) // 4) if text else 0


def _messages_tokens(messages: Sequence[Message]) -> int:
    return sum(_estimate_tokens(m.model_dump_json()) for m in messages)


async def _stream_turn(
    message: AssistantMessage, messages: Sequence[Message]
) -> AsyncIterator[ModelEvent]:
    text = message.text
    if text:
        middle = len(text) // 2
        for piece in (text[:middle], text[middle:]):
            if piece:
                yield TextDelta(text=piece)
    for index, call in enumerate(message.tool_calls):
        half = len(call.arguments) // 2
        yield ToolCallDelta(
            index=index, id=call.id, name=call.name, arguments_delta=call.arguments[:half]
        )
        yield ToolCallDelta(index=index, arguments_delta=call.arguments[half:])
    output_tokens = _estimate_tokens(text) + sum(
        _estimate_tokens(c.name + c.arguments) for c in message.tool_calls
    )
    yield ModelFinish(
        usage=Usage(
            requests=1, input_tokens=_messages_tokens(messages), output_tokens=output_tokens
        ),
        finish_reason="tool_calls" if message.tool_calls else "stop",
    )


def _as_message(turn: Turn, model: str) -> AssistantMessage:
    if isinstance(turn, AssistantMessage):
        return turn
    if isinstance(turn, str):
        return AssistantMessage(text=turn)
    if isinstance(turn, ToolCall):
        return AssistantMessage(tool_calls=[turn])
    if isinstance(turn, list) and all(isinstance(c, ToolCall) for c in turn):
        return AssistantMessage(tool_calls=list(turn))
    raise UserError(f"{model} cannot play {turn!r}: give text, ToolCalls or a message")


class TurnModel(ModelBackend):
    """A model that decides each reply whole, then streams it in pieces as a real model does."""

    provider_name = "scripted"
    """No LLM behind it: telemetry labels its calls ``gen_ai.provider.name="scripted"``."""

    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        settings: ModelSettings,
    ) -> AsyncIterator[ModelEvent]:
        turn = await self._reply(list(messages), list(tools), settings)
        async for event in _stream_turn(_as_message(turn, type(self).__name__), messages):
            yield event

    @abstractmethod
    async def _reply(
        self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings
    ) -> Turn:
        """The whole reply to this request."""
