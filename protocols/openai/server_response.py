"""Write a backend's model events as OpenAI chat completions answers (the server side of
:mod:`.decode`).

A streamed answer is ``chat.completion.chunk`` objects: one announcing the assistant role, then
text deltas (``content``), thinking (``reasoning_content``, as vLLM and DeepSeek send it) and
tool-call deltas (``id``, ``type`` and ``name`` first, then ``arguments`` pieces), a chunk with
the ``finish_reason``, and, when asked for, a last chunk with empty ``choices`` and the usage. A
whole answer is one ``chat.completion`` object built from the same events.

Call ids are the backend's own (the local MoE's ``functions.NAME:IDX``); call indexes are
renumbered from 0 for each answer, as the API has them, whatever the backend counted before.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from agent_runtime.backend import (
    ModelEvent,
    ModelFinish,
    ModelResponse,
    ReasoningDelta,
    TextDelta,
    ToolCallDelta,
)
from agent_runtime.types import Usage

__all__ = ["ChunkEncoder", "completion_body", "usage_body"]


def usage_body(usage: Usage) -> dict[str, Any]:
    """Usage in the API's form, cached prompt tokens in ``prompt_tokens_details``."""
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.total_tokens,
        "prompt_tokens_details": {"cached_tokens": usage.cached_tokens},
    }


def _new_id() -> str:
    return f"chatcmpl-{uuid.uuid4().hex}"


def completion_body(response: ModelResponse, model: str) -> dict[str, Any]:
    """One whole ``chat.completion`` object."""
    message: dict[str, Any] = {"role": "assistant", "content": response.message.text}
    if response.message.reasoning:
        message["reasoning_content"] = response.message.reasoning
    if response.message.tool_calls:
        message["content"] = response.message.text or None
        message["tool_calls"] = [
            {
                "id": call.id,
                "type": "function",
                "function": {"name": call.name, "arguments": call.arguments},
            }
            for call in response.message.tool_calls
        ]
    reason = response.finish_reason
    if reason == "stop" and response.message.tool_calls:
        reason = "tool_calls"
    return {
        "id": _new_id(),
        "object": "chat.completion",
        "created": int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": reason,
                "logprobs": None,
            }
        ],
        "usage": usage_body(response.usage),
    }


class ChunkEncoder:
    """The ``chat.completion.chunk`` objects of one streamed answer, event by event."""

    def __init__(self, model: str) -> None:
        self.id = _new_id()
        self.model = model
        self.created = int(time.time())
        self.usage: Usage | None = None
        """The usage the finish carried (for the last chunk, when the client asked for it)."""
        self._indexes: dict[int, int] = {}

    def _chunk(self, choices: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
        return {
            "id": self.id,
            "object": "chat.completion.chunk",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            **extra,
        }

    def _delta(self, delta: dict[str, Any], finish_reason: str | None = None) -> dict[str, Any]:
        return self._chunk(
            [{"index": 0, "delta": delta, "finish_reason": finish_reason, "logprobs": None}]
        )

    def start(self) -> dict[str, Any]:
        """The first chunk: the assistant role, no content yet."""
        return self._delta({"role": "assistant", "content": ""})

    def encode(self, event: ModelEvent) -> dict[str, Any] | None:
        """The chunk for one event (``None`` for an event with nothing to send)."""
        if isinstance(event, TextDelta):
            return self._delta({"content": event.text}) if event.text else None
        if isinstance(event, ReasoningDelta):
            return self._delta({"reasoning_content": event.text}) if event.text else None
        if isinstance(event, ToolCallDelta):
            return self._delta({"tool_calls": [self._call(event)]})
        return self._finish(event)

    def _call(self, event: ToolCallDelta) -> dict[str, Any]:
        index = self._indexes.setdefault(event.index, len(self._indexes))
        call: dict[str, Any] = {"index": index}
        function: dict[str, Any] = {}
        if event.id:
            call["id"] = event.id
            call["type"] = "function"
        if event.name:
            function["name"] = event.name
        function["arguments"] = event.arguments_delta
        call["function"] = function
        return call

    def _finish(self, event: ModelFinish) -> dict[str, Any]:
        self.usage = event.usage
        reason = event.finish_reason
        if reason == "stop" and self._indexes:
            reason = "tool_calls"
        return self._delta({}, finish_reason=reason)

    def usage_chunk(self) -> dict[str, Any]:
        """The last chunk of a stream whose client set ``stream_options.include_usage``."""
        return self._chunk([], usage=usage_body(self.usage or Usage()))
