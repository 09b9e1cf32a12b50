"""Chat formats: the runtime's messages as a model's prompt, and that model's tool-call layout.

A :class:`ChatFormat` ties a tokenizer, a chat template and a tool-call layout together:

* :meth:`ChatFormat.to_template_messages` turns ``agent_runtime.types`` messages and tool specs
  into the OpenAI-style dicts chat templates read;
* :meth:`ChatFormat.render_text` / :meth:`ChatFormat.render` give the prompt as text with its
  untrusted spans, and as token ids in which only the template's own markers are control tokens;
* :meth:`ChatFormat.parser` gives a streaming parser for the turn the model then generates;
* the marker attributes (``section_begin`` ... ``call_end``) describe the layout of a call for
  anything that must produce or constrain one (the grammar of constrained tool calls): one call
  is ``call_begin + call_name_prefix + NAME [+ call_index_separator + DIGITS] + argument_begin +
  ARGUMENTS + argument_end + call_end``, calls are joined by ``call_separator`` inside
  ``section_begin ... section_end`` (see :meth:`ChatFormat.call_text`).

Formats: Kimi K2 (``kimi_k2``), DeepSeek-V3-0324 (``deepseek_v3``), DeepSeek-V3.1
(``deepseek_v3.1``). :func:`load_chat_format` picks one from a model folder.

Decisions the formats share:

* a failed tool result is shown to the model as its text after :data:`TOOL_ERROR_PREFIX` (the
  chat layouts have no error flag; the OpenAI backend marks failures the same way);
* Kimi call ids: the model's own ``functions.NAME:IDX`` is kept and rendered back unchanged. An id
  of another form (another backend's ``call_x``, a hand-written history) is rendered as
  ``functions.NAME:IDX`` with IDX counting calls across the conversation, and the results that
  answer it carry the same rewritten id.
"""

from __future__ import annotations

import functools
import json
import logging
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any, ClassVar

from agent_runtime.errors import ConfigError
from agent_runtime.types import (
    AssistantMessage,
    Message,
    SystemMessage,
    ToolCall,
    ToolResultMessage,
    ToolSpec,
    UserMessage,
)

from .chat_template import (
    DEEPSEEK_V3_TEMPLATE,
    DEEPSEEK_V31_TEMPLATE,
    KIMI_K2_TEMPLATE,
    ChatTemplate,
    RenderedPrompt,
)
from .tokenizer import Tokenizer, UnknownTokenError
from .tool_parser import (
    DeepSeekV3ToolParser,
    DeepSeekV31ToolParser,
    KimiToolParser,
    ParserMarkers,
    ToolStreamParser,
)

__all__ = [
    "FORMAT_NAMES",
    "TOOL_ERROR_PREFIX",
    "ChatFormat",
    "ChatFormatError",
    "DeepSeekV3ChatFormat",
    "DeepSeekV31ChatFormat",
    "KimiK2ChatFormat",
    "kimi_template_messages",
    "load_chat_format",
]

_log = logging.getLogger(__name__)

TOOL_ERROR_PREFIX = "[tool error] "
"""Put before a failed tool's text (the same words as the OpenAI backend's prefix, so a model sees
failures alike whichever backend runs it)."""


class ChatFormatError(ConfigError):
    """No chat format fits, or the tokenizer lacks a control token the format needs."""


def _template_tools(tools: Sequence[ToolSpec]) -> list[dict[str, Any]] | None:
    """Tool specs as chat-completions ``function`` tools (``None`` when there are none)."""
    if not tools:
        return None
    return [
        {
            "type": "function",
            "function": {
                "name": spec.name,
                "description": spec.description,
                "parameters": spec.input_schema,
            },
        }
        for spec in tools
    ]


def _result_text(message: ToolResultMessage) -> str:
    text = message.result.text_content
    return TOOL_ERROR_PREFIX + text if message.result.is_error else text


class ChatFormat(ABC):
    """One model family's prompt and tool-call layout over a given tokenizer and template."""

    name: ClassVar[str]
    """``kimi_k2``, ``deepseek_v3`` or ``deepseek_v3.1``."""
    builtin_template: ClassVar[str]
    """Our own template, used when the model folder brings none."""

    # -- the layout of the tool section (token texts and plain text; see the module doc)
    section_begin: ClassVar[str]
    section_end: ClassVar[str]
    call_begin: ClassVar[str]
    call_name_prefix: ClassVar[str]
    """Text between ``call_begin`` and the function name (may contain control tokens)."""
    call_index_separator: ClassVar[str | None]
    """Kimi: ``":"``, followed by the call's index in decimal digits; ``None``: no index."""
    argument_begin: ClassVar[str]
    """Text between the name (and index) and the JSON arguments."""
    argument_end: ClassVar[str]
    """Text between the JSON arguments and ``call_end``."""
    call_end: ClassVar[str]
    call_separator: ClassVar[str]
    """Text between two calls of one section."""
    header_end: ClassVar[str]
    """The control token that ends a call's header (what the parser keys on)."""
    think_begin: ClassVar[str | None]
    think_end: ClassVar[str | None]
    end_of_turn: ClassVar[str]
    """The control token that ends an assistant turn (a stop token)."""
    call_id_form: ClassVar[str]
    """A call's id from its ``name`` and ``index`` in the conversation: Kimi's own id
    ``functions.{name}:{index}`` (the model writes it); ``call_{index}`` for DeepSeek, whose
    layouts carry no id (the parser makes it up, the template does not show it)."""

    tokenizer: Tokenizer
    template: ChatTemplate
    stop_token_ids: tuple[int, ...]
    """Generation stops on these: the format's end of turn, then the tokenizer's EOS ids."""

    def __init__(self, tokenizer: Tokenizer, template: ChatTemplate | None = None) -> None:
        self.tokenizer = tokenizer
        self.template = template if template is not None else ChatTemplate(self.builtin_template)
        stops = dict.fromkeys([self._id(self.end_of_turn), *tokenizer.eos_ids])
        self.stop_token_ids = tuple(stops)
        self._markers = ParserMarkers(
            section_begin=self._id(self.section_begin),
            section_end=self._id(self.section_end),
            call_begin=self._id(self.call_begin),
            call_end=self._id(self.call_end),
            header_end=self._id(self.header_end),
            stops=frozenset(self.stop_token_ids),
            think_begin=self._optional_id(self.think_begin),
            think_end=self._optional_id(self.think_end),
        )

    def _id(self, text: str) -> int:
        try:
            return self.tokenizer.special_id(text)
        except UnknownTokenError:
            raise ChatFormatError(
                f"the {self.name} chat format needs the control token {text!r}, which this "
                "tokenizer does not have"
            ) from None

    def _optional_id(self, text: str | None) -> int | None:
        if text is None:
            return None
        return self.tokenizer.special_tokens.get(text)

    # -- the layout
    @property
    def control_tokens(self) -> dict[str, int]:
        """The tool section's control tokens, text -> id."""
        texts = (
            self.section_begin,
            self.section_end,
            self.call_begin,
            self.header_end,
            self.call_end,
        )
        return {text: self.tokenizer.special_id(text) for text in texts}

    def call_id(self, name: str, index: int) -> str:
        """The id of the conversation's ``index``-th call (what the parser reports for it)."""
        return self.call_id_form.format(name=name, index=index)

    def call_text(self, name: str, arguments: str, index: int = 0) -> str:
        """One call as the model writes it (``index`` only shows in Kimi's layout)."""
        head = self.call_begin + self.call_name_prefix + name
        if self.call_index_separator is not None:
            head += f"{self.call_index_separator}{index}"
        return head + self.argument_begin + arguments + self.argument_end + self.call_end

    @functools.cached_property
    def empty_reasoning(self) -> tuple[int, ...]:
        """The empty thinking block (``<think></think>``) this format's template writes at the
        start of an assistant turn that had no reasoning, or ``()`` when it writes none.

        A model that does not reason is given these tokens after the generation prompt, as if
        it had written them: its turn then tokenizes exactly as the template renders it back,
        so the next agent step finds the whole turn in the prefix cache."""
        if self.think_begin is None or self.think_end is None:
            return ()
        probe: list[Message] = [
            UserMessage(content="a"),
            AssistantMessage(text="b"),
            UserMessage(content="c"),
        ]
        block = self.think_begin + self.think_end
        if block + "b" not in self.render_text(probe, []).text:
            return ()
        ids = (self._optional_id(self.think_begin), self._optional_id(self.think_end))
        return tuple(i for i in ids if i is not None) if None not in ids else ()

    # -- rendering
    @abstractmethod
    def to_template_messages(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        """The conversation and tools as the dicts a chat template reads."""

    def render_text(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        add_generation_prompt: bool = True,
    ) -> RenderedPrompt:
        """The prompt text and its untrusted spans."""
        template_messages, template_tools = self.to_template_messages(messages, tools)
        return self.template.render(
            template_messages,
            template_tools,
            add_generation_prompt=add_generation_prompt,
            **self._template_extra(),
        )

    def render(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        *,
        add_generation_prompt: bool = True,
    ) -> list[int]:
        """The prompt's token ids: control-token text inside untrusted spans stays text."""
        prompt = self.render_text(messages, tools, add_generation_prompt=add_generation_prompt)
        return self.tokenizer.encode_prompt(prompt.text, prompt.untrusted)

    def _template_extra(self) -> dict[str, Any]:
        """What transformers passes a template besides the messages: the special-token texts."""
        by_id = {token_id: text for text, token_id in self.tokenizer.special_tokens.items()}
        extra: dict[str, Any] = {}
        if self.tokenizer.bos_id is not None and self.tokenizer.bos_id in by_id:
            extra["bos_token"] = by_id[self.tokenizer.bos_id]
        if self.tokenizer.eos_ids and self.tokenizer.eos_ids[0] in by_id:
            extra["eos_token"] = by_id[self.tokenizer.eos_ids[0]]
        return extra

    # -- parsing
    @abstractmethod
    def parser(self, *, first_call_index: int = 0) -> ToolStreamParser:
        """A fresh streaming parser for one assistant turn. ``first_call_index``: how many calls
        the conversation already holds (numbers calls whose id the model left incomplete)."""


def _assistant_dict(message: AssistantMessage, calls: list[dict[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {"role": "assistant", "content": message.text}
    if calls:
        out["tool_calls"] = calls
    return out


def _call_dict(call: ToolCall, call_id: str) -> dict[str, Any]:
    return {
        "id": call_id,
        "type": "function",
        "function": {"name": call.name, "arguments": call.arguments},
    }


# ---------------------------------------------------------------------------------- Kimi K2


class KimiK2ChatFormat(ChatFormat):
    """Kimi K2 / K2 Thinking: ``<|im_*|>`` turns, calls as ``functions.NAME:IDX``."""

    name = "kimi_k2"
    builtin_template = KIMI_K2_TEMPLATE
    section_begin = "<|tool_calls_section_begin|>"
    section_end = "<|tool_calls_section_end|>"
    call_begin = "<|tool_call_begin|>"
    call_name_prefix = "functions."
    call_index_separator = ":"
    argument_begin = "<|tool_call_argument_begin|>"
    argument_end = ""
    call_end = "<|tool_call_end|>"
    call_separator = ""
    header_end = "<|tool_call_argument_begin|>"
    think_begin = "<think>"
    think_end = "</think>"
    end_of_turn = "<|im_end|>"

    call_id_form = "functions.{name}:{index}"

    def to_template_messages(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        return kimi_template_messages(messages, tools)

    def parser(self, *, first_call_index: int = 0) -> ToolStreamParser:
        return KimiToolParser(self.tokenizer, self._markers, first_call_index=first_call_index)


def kimi_template_messages(
    messages: Sequence[Message], tools: Sequence[ToolSpec]
) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
    """The conversation and tools as a Kimi K2 template reads them: call ids are the model's own
    ``functions.NAME:IDX`` (ids from other backends rewritten, their results following)."""
    ids = iter(_kimi_call_ids(messages))
    latest: dict[str, str] = {}  # a call's id in the history -> its rendered id
    out: list[dict[str, Any]] = []
    for message in messages:
        if isinstance(message, SystemMessage | UserMessage):
            out.append({"role": message.role, "content": message.content})
        elif isinstance(message, AssistantMessage):
            calls = []
            for call in message.tool_calls:
                rendered = next(ids)
                latest[call.id] = rendered
                calls.append(_call_dict(call, rendered))
            entry = _assistant_dict(message, calls)
            if message.reasoning:
                entry["reasoning_content"] = message.reasoning
            out.append(entry)
        elif isinstance(message, ToolResultMessage):
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": latest.get(message.tool_call_id, message.tool_call_id),
                    "content": _result_text(message),
                }
            )
    return out, _template_tools(tools)


def _is_kimi_id(call: ToolCall) -> bool:
    return re.fullmatch(rf"functions\.{re.escape(call.name)}:\d+", call.id) is not None


def _kimi_call_ids(messages: Sequence[Message]) -> list[str]:
    """The id each call of the conversation renders with, in order: its own when it is a Kimi id
    for its name, else ``functions.NAME:IDX`` with IDX the call's place in the conversation, moved
    on past any id the conversation already uses so that no two calls share one."""
    calls = [c for m in messages if isinstance(m, AssistantMessage) for c in m.tool_calls]
    taken = {c.id for c in calls if _is_kimi_id(c)}
    out: list[str] = []
    for position, call in enumerate(calls):
        if _is_kimi_id(call):
            out.append(call.id)
            continue
        index = position
        while (candidate := f"functions.{call.name}:{index}") in taken:
            index += 1
        taken.add(candidate)
        out.append(candidate)
    return out


# ---------------------------------------------------------------------------------- DeepSeek


class _DeepSeekChatFormat(ChatFormat):
    section_begin = "<｜tool▁calls▁begin｜>"
    section_end = "<｜tool▁calls▁end｜>"
    call_begin = "<｜tool▁call▁begin｜>"
    call_end = "<｜tool▁call▁end｜>"
    header_end = "<｜tool▁sep｜>"
    end_of_turn = "<｜end▁of▁sentence｜>"
    # V3.1 reasons in non-default mode; V3 does not, but tokenizers of both know the markers, so
    # a turn that opens with them is read as reasoning either way (the grammar allows them too).
    think_begin = "<think>"
    think_end = "</think>"
    call_id_form = "call_{index}"

    def to_template_messages(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]] | None]:
        # DeepSeek's layouts carry no call ids: results answer calls by position, and reasoning
        # of earlier turns is not shown again.
        out: list[dict[str, Any]] = []
        for message in messages:
            if isinstance(message, SystemMessage | UserMessage):
                out.append({"role": message.role, "content": message.content})
            elif isinstance(message, AssistantMessage):
                calls = [_call_dict(call, call.id) for call in message.tool_calls]
                out.append(_assistant_dict(message, calls))
            elif isinstance(message, ToolResultMessage):
                out.append(
                    {
                        "role": "tool",
                        "tool_call_id": message.tool_call_id,
                        "content": _result_text(message),
                    }
                )
        return out, _template_tools(tools)


class DeepSeekV3ChatFormat(_DeepSeekChatFormat):
    """DeepSeek-V3 (0324): ``function<｜tool▁sep｜>NAME`` and a ```` ```json ```` fence per call."""

    name = "deepseek_v3"
    builtin_template = DEEPSEEK_V3_TEMPLATE
    call_name_prefix = "function<｜tool▁sep｜>"
    call_index_separator = None
    argument_begin = "\n```json\n"
    argument_end = "\n```"
    call_separator = "\n"

    def parser(self, *, first_call_index: int = 0) -> ToolStreamParser:
        return DeepSeekV3ToolParser(
            self.tokenizer, self._markers, first_call_index=first_call_index
        )


class DeepSeekV31ChatFormat(_DeepSeekChatFormat):
    """DeepSeek-V3.1 (non-thinking): ``NAME<｜tool▁sep｜>ARGUMENTS`` per call."""

    name = "deepseek_v3.1"
    builtin_template = DEEPSEEK_V31_TEMPLATE
    call_name_prefix = ""
    call_index_separator = None
    argument_begin = "<｜tool▁sep｜>"
    argument_end = ""
    call_separator = ""

    def parser(self, *, first_call_index: int = 0) -> ToolStreamParser:
        return DeepSeekV31ToolParser(
            self.tokenizer, self._markers, first_call_index=first_call_index
        )


# ---------------------------------------------------------------------------------- choosing

_FORMATS: dict[str, type[ChatFormat]] = {
    cls.name: cls for cls in (KimiK2ChatFormat, DeepSeekV3ChatFormat, DeepSeekV31ChatFormat)
}
FORMAT_NAMES: tuple[str, ...] = tuple(_FORMATS)


def _format_of_template(source: str) -> str | None:
    """Which layout a template writes, from the markers in its text (``None``: cannot tell)."""
    if "<|tool_calls_section_begin|>" in source or "<|im_middle|>" in source:
        return KimiK2ChatFormat.name
    if "<｜tool▁sep｜>" in source or "<｜Assistant｜>" in source:
        # V3 wraps arguments in a json fence; V3.1 writes them bare and knows </think>.
        if "```json" in source:
            return DeepSeekV3ChatFormat.name
        if "</think>" in source or "<｜tool▁sep｜>" in source:
            return DeepSeekV31ChatFormat.name
        return DeepSeekV3ChatFormat.name
    return None


def _format_of_tokenizer(tokenizer: Tokenizer) -> str | None:
    if KimiK2ChatFormat.section_begin in tokenizer.special_tokens:
        return KimiK2ChatFormat.name
    if _DeepSeekChatFormat.section_begin in tokenizer.special_tokens:
        return DeepSeekV3ChatFormat.name
    return None


def load_chat_format(
    path: str | os.PathLike[str],
    tokenizer: Tokenizer,
    *,
    config: Mapping[str, Any] | None = None,
    explicit: str | None = None,
) -> ChatFormat:
    """The chat format of the model in ``path``.

    ``explicit`` (a name from :data:`FORMAT_NAMES`) wins. Otherwise ``config.json``'s
    ``model_type`` (``config`` when given, else the folder's file): ``kimi_k2`` is Kimi,
    ``deepseek_v3`` is DeepSeek, V3 or V3.1 as the folder's template writes calls (V3 when there is
    no template: V3.1 checkpoints share V3's config and tokenizer). Without a telling
    ``model_type``, the template's markers, then the tokenizer's control tokens decide.

    The folder's own template renders when it writes the chosen layout (or its layout cannot be
    told); otherwise, and when the folder has none, the format's built-in template does.
    """
    folder = Path(path)
    template = ChatTemplate.from_folder(folder)
    template_format = _format_of_template(template.source) if template is not None else None
    if config is None:
        config = _read_config(folder / "config.json")
    model_type = config.get("model_type")

    if explicit is not None:
        if explicit not in _FORMATS:
            raise ChatFormatError(
                f"unknown chat format {explicit!r}; known: {', '.join(FORMAT_NAMES)}"
            )
        name = explicit
    elif model_type == "kimi_k2":
        name = KimiK2ChatFormat.name
    elif model_type == "deepseek_v3":
        deepseek = (DeepSeekV3ChatFormat.name, DeepSeekV31ChatFormat.name)
        name = template_format if template_format in deepseek else DeepSeekV3ChatFormat.name
    else:
        found = template_format or _format_of_tokenizer(tokenizer)
        if found is None:
            raise ChatFormatError(
                f"cannot tell the chat format of {folder}: config.json's model_type is "
                f"{model_type!r}, and neither a chat template nor the tokenizer's control tokens "
                f"name a known layout; pass one of {', '.join(FORMAT_NAMES)} explicitly"
            )
        name = found

    if template is not None and template_format not in (None, name):
        _log.info(
            "%s: the folder's chat template writes the %s layout, not %s; using the built-in "
            "%s template",
            folder,
            template_format,
            name,
            name,
        )
        template = None
    return _FORMATS[name](tokenizer, template)


def _read_config(file: Path) -> Mapping[str, Any]:
    if not file.is_file():
        return {}
    try:
        data = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ChatFormatError(f"cannot read {file}: {exc}") from exc
    return data if isinstance(data, dict) else {}
