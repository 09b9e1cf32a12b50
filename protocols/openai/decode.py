"""Turn a chat completions answer into the runtime's model events.

Two shapes arrive: a stream of ``chat.completion.chunk`` objects over server-sent events (what
``stream: true`` asks for), and one ``chat.completion`` JSON object (from a server that ignores
``stream``). Both become the same events: ``TextDelta``, ``ToolCallDelta`` and one final
``ModelFinish``. Fields the runtime has no use for (``reasoning_content``, ``logprobs``, a role
announcement) are skipped; a value of the wrong shape raises ``ModelBackendError`` naming it.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterable, AsyncIterator
from typing import Any

from agent_runtime.backend import ModelEvent, ModelFinish, TextDelta, ToolCallDelta
from agent_runtime.errors import ModelBackendError
from agent_runtime.types import Usage

DONE = "[DONE]"
"""The data of the stream's last event in the OpenAI protocol."""


async def sse_data(lines: AsyncIterable[str]) -> AsyncIterator[str]:
    """The ``data`` of each server-sent event, from the response's lines.

    An event's ``data:`` lines are joined with newlines and the event ends at a blank line (or
    at the end of the stream). Comments (``: keep-alive``) and the other fields (``event``,
    ``id``, ``retry``) carry nothing for chat completions and are dropped.
    """
    data: list[str] = []
    async for raw in lines:
        line = raw.rstrip("\r\n")
        if not line:
            if data:
                yield "\n".join(data)
                data = []
            continue
        if line.startswith(":"):
            continue
        field, _, value = line.partition(":")
        if field == "data":
            data.append(value[1:] if value.startswith(" ") else value)
    if data:
        yield "\n".join(data)


def error_message(value: Any) -> str | None:
    """The human message in an error object as servers send it, or ``None``.

    OpenAI and current vLLM: ``{"error": {"message": ...}}``; older vLLM and SGLang:
    ``{"object": "error", "message": ...}``; FastAPI-style: ``{"detail": ...}``.
    """
    if not isinstance(value, dict):
        return None
    error = value.get("error")
    if isinstance(error, dict) and error.get("message"):
        return str(error["message"])
    if isinstance(error, str) and error:
        return error
    if value.get("object") == "error" and value.get("message"):
        return str(value["message"])
    detail = value.get("detail")
    if isinstance(detail, str) and detail:
        return detail
    return None


def _usage(value: Any) -> Usage | None:
    if not isinstance(value, dict):
        return None
    prompt = value.get("prompt_tokens")
    completion = value.get("completion_tokens")
    details = value.get("prompt_tokens_details")
    cached = details.get("cached_tokens") if isinstance(details, dict) else None
    return Usage(
        requests=1,
        input_tokens=prompt if isinstance(prompt, int) else 0,
        output_tokens=completion if isinstance(completion, int) else 0,
        cached_tokens=cached if isinstance(cached, int) else 0,
    )


def _arguments_text(value: Any) -> str:
    """Arguments as the raw text the dispatcher parses; a server that sends an object (some
    Ollama versions) gets it re-serialised."""
    if value is None:
        return ""
    if isinstance(value, str):
        return value
    return json.dumps(value, ensure_ascii=False)


class ChunkDecoder:
    """Folds ``chat.completion.chunk`` objects into events, remembering what the end needs.

    ``finished`` is true once the stream has said how it ended (a ``finish_reason``);
    ``finish()`` gives the closing ``ModelFinish`` with the last usage seen (servers send it in
    a chunk of its own after the finish, with empty ``choices``; some repeat it on every chunk).
    """

    def __init__(self) -> None:
        self.finish_reason: str | None = None
        self.usage: Usage | None = None
        self._names: dict[int, str] = {}
        self._ids: dict[str, int] = {}
        self._last_index = -1

    @property
    def finished(self) -> bool:
        return self.finish_reason is not None

    def feed(self, chunk: Any) -> list[ModelEvent]:
        if not isinstance(chunk, dict):
            raise ModelBackendError(f"stream chunk is not a JSON object: {_excerpt(chunk)}")
        message = error_message(chunk)
        if message is not None and "choices" not in chunk:
            raise ModelBackendError(f"the server reported an error mid-stream: {message}")
        usage = _usage(chunk.get("usage"))
        if usage is not None:
            self.usage = usage
        choices = chunk.get("choices") or []
        if not isinstance(choices, list):
            raise ModelBackendError(f"stream chunk 'choices' is not a list: {_excerpt(chunk)}")
        events: list[ModelEvent] = []
        for choice in choices:
            if not isinstance(choice, dict):
                raise ModelBackendError(f"stream chunk choice is not an object: {_excerpt(chunk)}")
            if choice.get("index", 0) != 0:
                continue  # only the first choice is the turn (n=1 is all the runtime asks for)
            delta = choice.get("delta") or {}
            if not isinstance(delta, dict):
                raise ModelBackendError(f"stream chunk delta is not an object: {_excerpt(chunk)}")
            content = delta.get("content")
            if isinstance(content, str) and content:
                events.append(TextDelta(text=content))
            calls = delta.get("tool_calls") or []
            if not isinstance(calls, list):
                raise ModelBackendError(f"delta 'tool_calls' is not a list: {_excerpt(chunk)}")
            for position, call in enumerate(calls):
                events.append(self._call_delta(call, position))
            reason = choice.get("finish_reason")
            if isinstance(reason, str) and reason:
                self.finish_reason = reason
        return events

    def finish(self) -> ModelFinish:
        return ModelFinish(
            usage=self.usage or Usage(requests=1), finish_reason=self.finish_reason or "stop"
        )

    def _call_delta(self, call: Any, position: int) -> ToolCallDelta:
        if not isinstance(call, dict):
            raise ModelBackendError(f"tool call delta is not an object: {_excerpt(call)}")
        call_id = call.get("id") if isinstance(call.get("id"), str) else None
        function = call.get("function") or {}
        if not isinstance(function, dict):
            raise ModelBackendError(f"tool call 'function' is not an object: {_excerpt(call)}")
        index = self._index(call.get("index"), call_id, position)
        name = function.get("name") if isinstance(function.get("name"), str) else None
        if name:
            # Some servers repeat the whole name on every piece; the assembler would append it.
            if self._names.get(index) == name:
                name = None
            else:
                self._names[index] = self._names.get(index, "") + name
        return ToolCallDelta(
            index=index,
            id=call_id or None,
            name=name or None,
            arguments_delta=_arguments_text(function.get("arguments")),
        )

    def _index(self, index: Any, call_id: str | None, position: int) -> int:
        """The call's slot: ``index`` when the server sends it (the spec says it must); else a
        new id opens a new slot and a piece without one continues the last call."""
        if isinstance(index, int) and not isinstance(index, bool):
            chosen = index
        elif call_id and call_id in self._ids:
            chosen = self._ids[call_id]
        elif call_id or self._last_index < 0:
            chosen = max(self._last_index + 1, position)
        else:
            chosen = self._last_index
        if call_id:
            self._ids.setdefault(call_id, chosen)
        self._last_index = max(self._last_index, chosen)
        return chosen


def completion_events(body: Any) -> list[ModelEvent]:
    """The events of a whole (non-streamed) ``chat.completion`` object."""
    message = error_message(body)
    if message is not None:
        raise ModelBackendError(f"the server reported an error: {message}")
    if not isinstance(body, dict) or not isinstance(body.get("choices"), list):
        raise ModelBackendError(f"not a chat completion (no 'choices' list): {_excerpt(body)}")
    choices = [c for c in body["choices"] if isinstance(c, dict) and c.get("index", 0) == 0]
    if not choices:
        raise ModelBackendError(f"chat completion without a first choice: {_excerpt(body)}")
    choice = choices[0]
    reply = choice.get("message")
    if not isinstance(reply, dict):
        raise ModelBackendError(f"chat completion choice without a message: {_excerpt(body)}")
    # The whole message is one delta; the chunk decoder already knows that shape.
    decoder = ChunkDecoder()
    events = decoder.feed(
        {
            "choices": [
                {
                    "index": 0,
                    "delta": reply,
                    "finish_reason": choice.get("finish_reason") or "stop",
                }
            ],
            "usage": body.get("usage"),
        }
    )
    events.append(decoder.finish())
    return events


def _excerpt(value: Any, limit: int = 300) -> str:
    text = value if isinstance(value, str) else json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= limit else text[:limit] + "..."
