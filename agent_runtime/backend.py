"""The ModelBackend interface: the one thing the agent loop needs from a model.

A backend is given the conversation, the tools on offer and the settings, and streams
events: text deltas, tool-call deltas (name and raw argument text, possibly in pieces), and one
finish event with usage. Implementations: the local MoE (``agent_runtime.model``), an
OpenAI-compatible HTTP client (vLLM, SGLang ...), and the test models in
``agent_runtime.testing``.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import AsyncIterator, Sequence
from typing import Literal

from pydantic import BaseModel, Field

from .types import AssistantMessage, Message, ToolCall, ToolSpec, Usage


class ModelSettings(BaseModel):
    """Sampling and output settings a backend honours where it can."""

    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)
    tool_choice: Literal["auto", "required", "none"] | str = "auto"
    """``auto``, ``required``, ``none``, or one tool's name to force it."""

    def merged(self, other: ModelSettings | None) -> ModelSettings:
        if other is None:
            return self
        data = self.model_dump()
        data.update(other.model_dump(exclude_unset=True))
        return ModelSettings(**data)


class TextDelta(BaseModel):
    kind: Literal["text_delta"] = "text_delta"
    text: str


class ReasoningDelta(BaseModel):
    """A piece of the model's visible thinking (a reasoning model's ``<think>`` block)."""

    kind: Literal["reasoning_delta"] = "reasoning_delta"
    text: str


class ToolCallDelta(BaseModel):
    """A piece of tool call ``index``. ``id`` and ``name`` arrive once; arguments accumulate."""

    kind: Literal["tool_call_delta"] = "tool_call_delta"
    index: int
    id: str | None = None
    name: str | None = None
    arguments_delta: str = ""


class ModelFinish(BaseModel):
    kind: Literal["finish"] = "finish"
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str = "stop"


ModelEvent = TextDelta | ReasoningDelta | ToolCallDelta | ModelFinish


class ModelResponse(BaseModel):
    message: AssistantMessage
    usage: Usage = Field(default_factory=Usage)
    finish_reason: str = "stop"


class ModelBackend(ABC):
    """A language model the agent loop can drive.

    ``name`` labels the backend in logs; ``model_name`` and ``provider_name`` are what telemetry
    records of each model call (``gen_ai.request.model``, ``gen_ai.provider.name``): the model's
    own id (by default ``name``) and who serves it (``"openai"``, ``"local_moe"``,
    ``"scripted"`` ...). A backend sets ``provider_name`` as a class attribute and
    ``model_name`` by assigning it (or overriding the property).
    """

    name: str = "model"
    provider_name: str = "custom"
    _model_name: str | None = None

    @property
    def model_name(self) -> str:
        """The model id recorded on model-call spans and metrics (default: ``name``)."""
        return self._model_name or self.name

    @model_name.setter
    def model_name(self, value: str) -> None:
        self._model_name = value

    @abstractmethod
    def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        settings: ModelSettings,
    ) -> AsyncIterator[ModelEvent]:
        """Stream one assistant turn as events; the last event is a ``ModelFinish``."""

    async def complete(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        settings: ModelSettings,
    ) -> ModelResponse:
        """One whole assistant turn (the stream, assembled)."""
        assembler = TurnAssembler()
        async for event in self.stream(messages, tools, settings):
            assembler.add(event)
        return assembler.response()


class TurnAssembler:
    """Builds an assistant turn from a backend's event stream."""

    def __init__(self) -> None:
        self._text: list[str] = []
        self._reasoning: list[str] = []
        self._calls: dict[int, dict[str, str]] = {}
        self.usage = Usage()
        self.finish_reason = "stop"

    def add(self, event: ModelEvent) -> None:
        if isinstance(event, TextDelta):
            self._text.append(event.text)
        elif isinstance(event, ToolCallDelta):
            slot = self._calls.setdefault(event.index, {"id": "", "name": "", "arguments": ""})
            if event.id:
                slot["id"] = event.id
            if event.name:
                slot["name"] += event.name
            slot["arguments"] += event.arguments_delta
        elif isinstance(event, ReasoningDelta):
            self._reasoning.append(event.text)
        else:
            self.usage = event.usage
            self.finish_reason = event.finish_reason

    def response(self) -> ModelResponse:
        calls = []
        for index in sorted(self._calls):
            slot = self._calls[index]
            calls.append(
                ToolCall(
                    id=slot["id"] or f"call_{index}",
                    name=slot["name"],
                    arguments=slot["arguments"] or "{}",
                )
            )
        message = AssistantMessage(
            text="".join(self._text), tool_calls=calls, reasoning="".join(self._reasoning)
        )
        return ModelResponse(message=message, usage=self.usage, finish_reason=self.finish_reason)
