"""The request body of an OpenAI chat completion, built from the runtime's messages and settings.

Everything here is pure data mapping, kept apart from HTTP so that what a server is sent can be
read (and tested) in one place. The body follows the OpenAI chat completions API as vLLM, SGLang,
Ollama and Moonshot's API accept it; fields they add beyond OpenAI (``top_k``, guided decoding,
``chat_template_kwargs``) go at the top level, where those servers read them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from agent_runtime.backend import ModelSettings
from agent_runtime.types import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolResultMessage,
    ToolSpec,
    UserMessage,
)

TOOL_ERROR_PREFIX = "[tool error] "
"""Put before a failed tool's text: the chat API has no error flag on a tool message, and the
model must still tell a failure from a result."""

_NAMED_CHOICES = frozenset({"auto", "required", "none"})


def tool_message_content(message: ToolResultMessage) -> str:
    """What the model reads for a tool result: its text, marked when the call failed."""
    text = message.result.text_content
    return TOOL_ERROR_PREFIX + text if message.result.is_error else text


def chat_message(message: Message) -> dict[str, Any]:
    """One runtime message in the chat completions form."""
    if isinstance(message, SystemMessage):
        return {"role": "system", "content": message.content}
    if isinstance(message, UserMessage):
        return {"role": "user", "content": message.content}
    if isinstance(message, AssistantMessage):
        out: dict[str, Any] = {"role": "assistant", "content": message.text}
        if message.tool_calls:
            out["tool_calls"] = [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": call.name, "arguments": call.arguments},
                }
                for call in message.tool_calls
            ]
        return out
    if isinstance(message, ToolResultMessage):
        return {
            "role": "tool",
            "tool_call_id": message.tool_call_id,
            "content": tool_message_content(message),
        }
    raise TypeError(f"not a chat message: {message!r}")


def chat_tool(spec: ToolSpec) -> dict[str, Any]:
    """One tool as a chat completions ``function`` tool."""
    function: dict[str, Any] = {"name": spec.name, "parameters": spec.input_schema}
    if spec.description:
        function["description"] = spec.description
    return {"type": "function", "function": function}


def tool_choice(choice: str) -> str | dict[str, Any]:
    """``auto``/``required``/``none`` as they are; any other value names the tool to force."""
    if choice in _NAMED_CHOICES:
        return choice
    return {"type": "function", "function": {"name": choice}}


def chat_request_body(
    model: str,
    messages: Sequence[Message],
    tools: Sequence[ToolSpec],
    settings: ModelSettings,
    extra_body: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """The JSON body of one streaming chat completion request.

    Settings left unset are left out, so the server's own defaults (often the model's
    ``generation_config``) apply. ``tools`` and ``tool_choice`` are sent only when there are
    tools: OpenAI rejects a ``tool_choice`` without them. ``extra_body`` is merged last, at the top
    level, and wins over what is built here.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [chat_message(m) for m in messages],
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    if tools:
        body["tools"] = [chat_tool(spec) for spec in tools]
        body["tool_choice"] = tool_choice(settings.tool_choice)
    if settings.max_tokens is not None:
        body["max_tokens"] = settings.max_tokens
    if settings.temperature is not None:
        body["temperature"] = settings.temperature
    if settings.top_p is not None:
        body["top_p"] = settings.top_p
    if settings.top_k is not None:
        body["top_k"] = settings.top_k  # not OpenAI's; vLLM and SGLang read it at the top level
    if settings.seed is not None:
        body["seed"] = settings.seed
    if settings.stop:
        body["stop"] = list(settings.stop)
    if extra_body:
        body.update(extra_body)
    return body
