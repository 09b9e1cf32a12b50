"""Read an incoming OpenAI chat completions request into the runtime's messages, tools and
settings (the server side of :mod:`.request`).

Everything a client may send is checked here, before a model sees it: a field of the wrong type,
a value out of range, a tool message that answers no call, a ``tool_choice`` naming a tool that
is not offered, a feature this server cannot honour (``n > 1``, log probabilities, a response
format). Each problem is a :class:`RequestError` carrying the OpenAI error fields (HTTP status,
``message``, ``type``, ``param``, ``code``), which the server sends back as a 4xx answer.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

import jsonschema

from agent_runtime.backend import ModelSettings
from agent_runtime.types import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolResult,
    ToolResultMessage,
    ToolSpec,
    UserMessage,
)

from .request import TOOL_ERROR_PREFIX

__all__ = ["ChatRequest", "RequestError", "check_json_value", "parse_chat_request"]

MAX_DEPTH = 64
"""How deeply a request body may nest (tool schemas included)."""

_TOOL_NAME = re.compile(r"^[A-Za-z0-9_.\-]{1,64}$")
_KIMI_ID = re.compile(r"^functions\.(.+):\d+$")
_TEXT_PART_TYPES = frozenset({"text", "input_text"})
_SEED_RANGE = (-(2**63), 2**64 - 1)  # what torch.Generator.manual_seed takes


class RequestError(Exception):
    """A request the server will not run, with the fields of an OpenAI error object."""

    def __init__(
        self,
        message: str,
        *,
        param: str | None = None,
        status: int = 400,
        type: str = "invalid_request_error",
        code: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.param = param
        self.status = status
        self.type = type
        self.code = code

    def body(self) -> dict[str, Any]:
        """The JSON answer: ``{"error": {"message", "type", "param", "code"}}``."""
        return {
            "error": {
                "message": self.message,
                "type": self.type,
                "param": self.param,
                "code": self.code,
            }
        }


@dataclass(frozen=True)
class ChatRequest:
    """A checked chat completions request, in the runtime's terms."""

    model: str
    messages: list[Message]
    tools: list[ToolSpec]
    settings: ModelSettings
    stream: bool = False
    include_usage: bool = False
    """``stream_options.include_usage``: a last chunk with the usage, as OpenAI sends it."""
    ignored: list[str] = field(default_factory=list)
    """Fields accepted with their neutral value (``frequency_penalty: 0`` ...)."""


def check_json_value(value: Any) -> None:
    """Refuse a decoded body nested deeper than :data:`MAX_DEPTH` or holding a string that
    is not valid Unicode (a lone surrogate from a ``\\ud800`` escape): neither can reach a
    tokenizer."""
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth > MAX_DEPTH:
            raise RequestError(f"the request nests deeper than {MAX_DEPTH} levels")
        if isinstance(item, str):
            _check_text(item)
        elif isinstance(item, dict):
            for key, inner in item.items():
                _check_text(key)
                stack.append((inner, depth + 1))
        elif isinstance(item, list):
            stack.extend((inner, depth + 1) for inner in item)


def _check_text(text: str) -> None:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise RequestError(
            "the request holds a string that is not valid Unicode (a lone surrogate)"
        ) from None


def parse_chat_request(body: Any) -> ChatRequest:
    """Check a decoded JSON body and turn it into a :class:`ChatRequest`."""
    if not isinstance(body, dict):
        raise RequestError("the request body must be a JSON object")
    check_json_value(body)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise RequestError("'model' is required: the id /v1/models lists", param="model")
    ignored = _unsupported(body)
    tools = _tools(body.get("tools"))
    settings = ModelSettings(
        max_tokens=_max_tokens(body),
        temperature=_number(body, "temperature", 0.0, 2.0),
        top_p=_number(body, "top_p", 0.0, 1.0, low_open=True),
        top_k=_top_k(body.get("top_k")),
        seed=_seed(body.get("seed")),
        stop=_stop(body.get("stop")),
        tool_choice=_tool_choice(body.get("tool_choice"), tools),
    )
    stream = body.get("stream", False)
    if stream is not None and not isinstance(stream, bool):
        raise RequestError("'stream' must be a boolean", param="stream")
    options = body.get("stream_options")
    if options is not None and not isinstance(options, dict):
        raise RequestError("'stream_options' must be an object", param="stream_options")
    include_usage = bool(options and options.get("include_usage") is True)
    return ChatRequest(
        model=model,
        messages=_messages(body.get("messages")),
        tools=tools,
        settings=settings,
        stream=bool(stream),
        include_usage=include_usage,
        ignored=ignored,
    )


# ---------------------------------------------------------------------------- features


def _unsupported(body: dict[str, Any]) -> list[str]:
    """Refuse what this server cannot honour; list what it accepts at the neutral value."""
    n = body.get("n")
    if n is not None and n != 1:
        raise RequestError(
            "this server generates one choice per request ('n' must be 1)", param="n"
        )
    if body.get("logprobs") or body.get("top_logprobs"):
        raise RequestError("log probabilities are not supported by this server", param="logprobs")
    response_format = body.get("response_format")
    if response_format is not None and (
        not isinstance(response_format, dict) or response_format.get("type") != "text"
    ):
        raise RequestError(
            "only response_format {'type': 'text'} is supported; constrain the output with tools "
            "and tool_choice instead",
            param="response_format",
        )
    if body.get("logit_bias"):
        raise RequestError("logit_bias is not supported by this server", param="logit_bias")
    ignored = []
    for name in ("frequency_penalty", "presence_penalty"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_number(value) or value != 0:
            raise RequestError(f"'{name}' is not supported by this server (only 0)", param=name)
        ignored.append(name)
    return ignored


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _number(
    body: dict[str, Any], name: str, low: float, high: float, *, low_open: bool = False
) -> float | None:
    value = body.get(name)
    if value is None:
        return None
    if not _is_number(value) or value != value:  # NaN fails both checks below too
        raise RequestError(f"'{name}' must be a number", param=name)
    if value > high or value < low or (low_open and value == low):
        bracket = "(" if low_open else "["
        raise RequestError(f"'{name}' must be in {bracket}{low:g}, {high:g}]", param=name)
    return float(value)


def _max_tokens(body: dict[str, Any]) -> int | None:
    for name in ("max_completion_tokens", "max_tokens"):
        value = body.get(name)
        if value is None:
            continue
        if not _is_int(value) or value < 1:
            raise RequestError(f"'{name}' must be an integer >= 1", param=name)
        return int(value)
    return None


def _top_k(value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or value < -1:
        raise RequestError("'top_k' must be an integer >= 0 (or -1: no limit)", param="top_k")
    return max(int(value), 0)


def _seed(value: Any) -> int | None:
    if value is None:
        return None
    if not _is_int(value) or not _SEED_RANGE[0] <= value <= _SEED_RANGE[1]:
        raise RequestError("'seed' must be a 64-bit integer", param="seed")
    return int(value)


def _stop(value: Any) -> list[str]:
    if value is None:
        return []
    items = [value] if isinstance(value, str) else value
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise RequestError("'stop' must be a string or a list of strings", param="stop")
    if len(items) > 16:
        raise RequestError("'stop' may hold at most 16 strings", param="stop")
    return [s for s in items if s]


# ---------------------------------------------------------------------------- tools


def _tools(value: Any) -> list[ToolSpec]:
    if value is None:
        return []
    if not isinstance(value, list):
        raise RequestError("'tools' must be a list", param="tools")
    specs: list[ToolSpec] = []
    seen: set[str] = set()
    for i, tool in enumerate(value):
        where = f"tools[{i}]"
        if not isinstance(tool, dict) or tool.get("type", "function") != "function":
            raise RequestError(
                f"{where} must be {{'type': 'function', 'function': {{...}}}}", param=where
            )
        function = tool.get("function")
        if not isinstance(function, dict):
            raise RequestError(f"{where}.function must be an object", param=f"{where}.function")
        name = function.get("name")
        if not isinstance(name, str) or not _TOOL_NAME.match(name):
            raise RequestError(
                f"{where}.function.name must be 1-64 letters, digits, '_', '.' or '-'",
                param=f"{where}.function.name",
            )
        if name in seen:
            raise RequestError(f"two tools are named {name!r}", param=f"{where}.function.name")
        seen.add(name)
        description = function.get("description", "")
        if not isinstance(description, str):
            raise RequestError(
                f"{where}.function.description must be a string",
                param=f"{where}.function.description",
            )
        schema = function.get("parameters", {"type": "object", "properties": {}})
        specs.append(
            ToolSpec(
                name=name,
                description=description,
                input_schema=_schema(schema, f"{where}.function.parameters"),
                origin="request",
            )
        )
    return specs


def _schema(schema: Any, where: str) -> dict[str, Any]:
    if not isinstance(schema, dict):
        raise RequestError(f"{where} must be a JSON Schema object", param=where)
    if schema.get("type", "object") != "object":
        raise RequestError(f"{where} must describe an object ('type': 'object')", param=where)
    try:
        jsonschema.Draft202012Validator.check_schema(schema)
    except jsonschema.SchemaError as err:
        pointer = "/".join(str(p) for p in err.absolute_path)
        raise RequestError(
            f"{where} is not a valid JSON Schema at '/{pointer}': {err.message}", param=where
        ) from None
    return schema


def _tool_choice(value: Any, tools: list[ToolSpec]) -> str:
    if value is None:
        return "auto"
    if isinstance(value, str):
        if value not in ("auto", "required", "none"):
            raise RequestError(
                "'tool_choice' must be 'auto', 'required', 'none' or "
                "{'type': 'function', 'function': {'name': ...}}",
                param="tool_choice",
            )
        if value == "required" and not tools:
            raise RequestError("tool_choice 'required' needs 'tools'", param="tool_choice")
        return value
    function = value.get("function") if isinstance(value, dict) else None
    name = function.get("name") if isinstance(function, dict) else None
    if not isinstance(value, dict) or value.get("type") != "function" or not isinstance(name, str):
        raise RequestError(
            "a named 'tool_choice' is {'type': 'function', 'function': {'name': ...}}",
            param="tool_choice",
        )
    offered = [t.name for t in tools]
    if name not in offered:
        raise RequestError(
            f"tool_choice names {name!r}, which is not in 'tools' ({', '.join(offered) or 'none'})",
            param="tool_choice",
        )
    return name


# ---------------------------------------------------------------------------- messages


def _messages(value: Any) -> list[Message]:
    if not isinstance(value, list) or not value:
        raise RequestError("'messages' must be a non-empty list", param="messages")
    out: list[Message] = []
    call_names: dict[str, str] = {}
    for i, raw in enumerate(value):
        where = f"messages[{i}]"
        if not isinstance(raw, dict):
            raise RequestError(f"{where} must be an object", param=where)
        role = raw.get("role")
        if role in ("system", "developer"):
            out.append(SystemMessage(content=_text(raw.get("content"), f"{where}.content")))
        elif role == "user":
            out.append(UserMessage(content=_text(raw.get("content"), f"{where}.content")))
        elif role == "assistant":
            message = _assistant(raw, where)
            call_names.update((c.id, c.name) for c in message.tool_calls)
            out.append(message)
        elif role == "tool":
            out.append(_tool_result(raw, where, call_names))
        else:
            raise RequestError(
                f"{where}.role must be 'system', 'developer', 'user', 'assistant' or 'tool', "
                f"not {role!r}",
                param=f"{where}.role",
            )
    return out


def _text(value: Any, where: str, *, optional: bool = False) -> str:
    """A message's text: a string, or a list of text parts joined."""
    if value is None and optional:
        return ""
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        pieces = []
        for j, part in enumerate(value):
            if not isinstance(part, dict) or part.get("type") not in _TEXT_PART_TYPES:
                kind = part.get("type") if isinstance(part, dict) else type(part).__name__
                raise RequestError(
                    f"{where}[{j}]: this model reads text only (a {kind!r} part was sent)",
                    param=f"{where}[{j}]",
                )
            text = part.get("text")
            if not isinstance(text, str):
                raise RequestError(
                    f"{where}[{j}].text must be a string", param=f"{where}[{j}].text"
                )
            pieces.append(text)
        return "".join(pieces)
    raise RequestError(f"{where} must be a string or a list of text parts", param=where)


def _assistant(raw: dict[str, Any], where: str) -> AssistantMessage:
    text = _text(raw.get("content"), f"{where}.content", optional=True)
    reasoning = raw.get("reasoning_content", raw.get("reasoning"))
    if reasoning is not None and not isinstance(reasoning, str):
        raise RequestError(
            f"{where}.reasoning_content must be a string", param=f"{where}.reasoning_content"
        )
    calls_value = raw.get("tool_calls") or []
    if not isinstance(calls_value, list):
        raise RequestError(f"{where}.tool_calls must be a list", param=f"{where}.tool_calls")
    calls = [_call(call, f"{where}.tool_calls[{j}]") for j, call in enumerate(calls_value)]
    return AssistantMessage(text=text, tool_calls=calls, reasoning=reasoning or "")


def _call(raw: Any, where: str) -> ToolCall:
    function = raw.get("function") if isinstance(raw, dict) else None
    if not isinstance(raw, dict) or not isinstance(function, dict):
        raise RequestError(
            f"{where} must be {{'id', 'type': 'function', 'function': {{'name', 'arguments'}}}}",
            param=where,
        )
    call_id = raw.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise RequestError(f"{where}.id must be a non-empty string", param=f"{where}.id")
    name = function.get("name")
    if not isinstance(name, str) or not name:
        raise RequestError(
            f"{where}.function.name must be a non-empty string", param=f"{where}.function.name"
        )
    arguments = function.get("arguments", "{}")
    if isinstance(arguments, dict):  # some clients send the object itself
        arguments = json.dumps(arguments, ensure_ascii=False)
    if not isinstance(arguments, str):
        raise RequestError(
            f"{where}.function.arguments must be a JSON string",
            param=f"{where}.function.arguments",
        )
    return ToolCall(id=call_id, name=name, arguments=arguments)


def _tool_result(raw: dict[str, Any], where: str, call_names: dict[str, str]) -> ToolResultMessage:
    call_id = raw.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise RequestError(
            f"{where}.tool_call_id must be a non-empty string", param=f"{where}.tool_call_id"
        )
    name = call_names.get(call_id)
    if name is None:
        kimi = _KIMI_ID.match(call_id)
        if kimi is None:
            raise RequestError(
                f"{where}.tool_call_id {call_id!r} answers no tool call of an earlier assistant "
                "message",
                param=f"{where}.tool_call_id",
            )
        name = kimi.group(1)
    text = _text(raw.get("content"), f"{where}.content")
    # A client that marks failures the runtime's way (OpenAIChatModel does) gets the flag back,
    # so the model reads the result exactly as it would in-process.
    failed = text.startswith(TOOL_ERROR_PREFIX)
    if failed:
        text = text[len(TOOL_ERROR_PREFIX) :]
    return ToolResultMessage(
        tool_call_id=call_id, tool_name=name, result=ToolResult.text(text, is_error=failed)
    )
