"""Models for testing agents without an LLM.

``ScriptedModel`` replays assistant turns you give it and records what it was sent.
``FunctionModel`` answers each request with a function of the conversation.
``SchemaModel`` (defined in ``agent_runtime.schema_model``, the config's ``"schema"`` backend)
calls every offered read-only tool with arguments generated from its schema, then answers with
a summary of what came back.
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Sequence

from .backend import ModelSettings
from .errors import UserError
from .schema_model import SchemaModel
from .turn_model import Turn, TurnModel
from .types import Message, ToolSpec

__all__ = [
    "FunctionModel",
    "ReplyFunction",
    "SchemaModel",
    "ScriptStep",
    "ScriptedModel",
    "Turn",
]

ScriptStep = Turn | Callable[[list[Message]], Turn]
ReplyFunction = Callable[[list[Message], list[ToolSpec]], Turn | Awaitable[Turn]]


class ScriptedModel(TurnModel):
    """Plays the given turns in order, one per request.

    A step may be a callable receiving the conversation so far, to answer with what a tool
    returned. Every request is kept in ``requests`` as ``(messages, tools, settings)``.
    """

    name = "scripted"

    def __init__(self, turns: Sequence[ScriptStep]) -> None:
        self._turns = list(turns)
        self._next = 0
        self.requests: list[tuple[list[Message], list[ToolSpec], ModelSettings]] = []

    @property
    def remaining(self) -> int:
        return len(self._turns) - self._next

    async def _reply(
        self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings
    ) -> Turn:
        self.requests.append((list(messages), tools, settings))
        if self._next >= len(self._turns):
            raise UserError(
                f"ScriptedModel ran out of turns: it was given {len(self._turns)} and asked "
                f"for turn {self._next + 1}"
            )
        step = self._turns[self._next]
        self._next += 1
        return step(list(messages)) if callable(step) else step


class FunctionModel(TurnModel):
    """Answers every request with ``reply(messages, tools)``, for as many turns as asked.

    For a test double whose answers follow from the conversation (an echo agent, a model that
    calls a tool when told to) rather than from a fixed script. ``reply`` may be async (to
    wait, e.g. for a cancellation test) and may raise (a model that fails).
    """

    def __init__(self, reply: ReplyFunction, name: str = "function") -> None:
        self._reply_fn = reply
        self.name = name

    async def _reply(
        self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings
    ) -> Turn:
        turn = self._reply_fn(messages, tools)
        return await turn if inspect.isawaitable(turn) else turn
