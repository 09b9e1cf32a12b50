"""Chat templates: a conversation rendered to prompt text, with the untrusted parts marked.

A checkpoint's own chat template (``chat_template.jinja``, or ``tokenizer_config.json``'s
``chat_template``) is the authority on its prompt layout, so :class:`ChatTemplate` renders it the
way transformers' ``apply_chat_template`` does: sandboxed jinja2 with ``trim_blocks`` and
``lstrip_blocks``, a ``tojson`` that is ``json.dumps(ensure_ascii=False)``, ``raise_exception``,
``strftime_now``, loop controls, and a *mutable* sandbox (Kimi's template appends to a list, which
jinja2's immutable sandbox refuses). A folder without a template gets one of the built-in
templates (``chat_template_builtins.py``, re-exported here), written for this project from the
formats' published layouts.

The rendered text alone is not enough to encode safely: a user message, a tool result or a tool
description may contain the *text* of a control token (``<|im_end|>``, ``<|tool_call_begin|>``),
and a tokenizer that turns every such text into the control token lets that content forge turns
and tool calls. So every string that came from the conversation or the tool specs is wrapped in a
per-render random delimiter before rendering; after rendering the delimiters are stripped and
where they stood becomes :attr:`RenderedPrompt.untrusted`, the character spans whose control-token
text must stay text (``Tokenizer.encode_prompt`` honours them).
"""

from __future__ import annotations

import json
import logging
import os
import re
import secrets
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.ext
import jinja2.nodes
import jinja2.parser
from jinja2.sandbox import SandboxedEnvironment

from agent_runtime.errors import ConfigError

from .chat_template_builtins import (
    DEEPSEEK_V3_TEMPLATE,
    DEEPSEEK_V31_TEMPLATE,
    KIMI_K2_COMPACT_TEMPLATE,
    KIMI_K2_TEMPLATE,
)

__all__ = [
    "DEEPSEEK_V31_TEMPLATE",
    "DEEPSEEK_V3_TEMPLATE",
    "KIMI_K2_COMPACT_TEMPLATE",
    "KIMI_K2_TEMPLATE",
    "ChatTemplate",
    "ChatTemplateError",
    "RenderedPrompt",
]

_log = logging.getLogger(__name__)


class ChatTemplateError(ConfigError):
    """A chat template that cannot be read or compiled."""


@dataclass(frozen=True)
class RenderedPrompt:
    """Prompt text plus the ``[start, end)`` character spans of it that came from untrusted
    sources (users, tools, documents, tool specs, call arguments, reasoning): control-token text
    inside those spans must be encoded as ordinary text."""

    text: str
    untrusted: tuple[tuple[int, int], ...] = ()

    def untrusted_text(self) -> list[str]:
        """The untrusted pieces, in order (what a test or a log wants to see)."""
        return [self.text[start:end] for start, end in self.untrusted]


# ---------------------------------------------------------------------------------- environment


class _GenerationTag(jinja2.ext.Extension):
    """``{% generation %}...{% endgeneration %}`` renders its body unchanged.

    transformers uses the tag to find assistant tokens for training masks; templates that carry it
    must still render here."""

    tags = {"generation"}

    def parse(self, parser: jinja2.parser.Parser) -> jinja2.nodes.Node:
        lineno = next(parser.stream).lineno
        body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
        return jinja2.nodes.CallBlock(self.call_method("_body"), [], [], body).set_lineno(lineno)

    def _body(self, caller: Any) -> str:
        return str(caller())


def _tojson(
    value: Any,
    ensure_ascii: bool = False,
    indent: int | str | None = None,
    separators: tuple[str, str] | None = None,
    sort_keys: bool = False,
) -> str:
    # jinja2's own tojson HTML-escapes; chat templates expect plain json.dumps (as transformers).
    return json.dumps(
        value, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys
    )


def _raise_exception(message: str) -> None:
    raise jinja2.TemplateError(message)


def _strftime_now(fmt: str) -> str:
    return datetime.now().strftime(fmt)


def _environment() -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        trim_blocks=True,
        lstrip_blocks=True,
        extensions=[jinja2.ext.loopcontrols, _GenerationTag],
    )
    env.filters["tojson"] = _tojson
    env.globals["raise_exception"] = _raise_exception
    env.globals["strftime_now"] = _strftime_now
    return env


_ENV = _environment()


# ---------------------------------------------------------------------------------- untrusted marks

# A key or value that is only letters, digits and ``_$-`` cannot hold any control-token text
# (every special token of the formats we read has punctuation: ``<|..|>``, ``<｜..｜>``, ``[EOS]``,
# ``<think>``), so schema keywords, property names and ``type`` values stay unwrapped and a
# template may still compare them (``param.type == 'string'``).
_PLAIN = re.compile(r"[A-Za-z0-9_$\-]*")
# Values a template switches on: left bare when plain, like dict keys.
_SWITCH_KEYS = frozenset({"role", "type"})


class _Marks:
    """One render's delimiters: letters and digits only, so json escaping, HTML escaping and
    ``ensure_ascii`` all leave them intact; random, so no content can forge them."""

    def __init__(self) -> None:
        nonce = secrets.token_hex(8)
        self.open = f"UNTRUSTED{nonce}BEGIN"
        self.close = f"UNTRUSTED{nonce}END"
        self.pattern = re.compile(f"{self.open}|{self.close}")

    def wrap_str(self, text: str) -> str:
        """``text`` with its non-blank core delimited. Leading/trailing whitespace stays outside,
        so ``trim`` and truthiness tests in a template see what they would without the marks (a
        blank string is returned unchanged: whitespace holds no control tokens)."""
        core = text.strip()
        if not core:
            return text
        start = text.index(core[0])
        end = start + len(core)
        return f"{text[:start]}{self.open}{core}{self.close}{text[end:]}"

    def wrap(self, value: Any) -> Any:
        """A copy of JSON-like ``value`` with every string that could hold control-token text
        wrapped (see ``_PLAIN``); containers are copied, so the caller's data is never changed."""
        if isinstance(value, str):
            # A plain value (a required name, an enum word) cannot hold control-token text;
            # left bare, a template may compare it (``key in required``).
            return value if _PLAIN.fullmatch(value) else self.wrap_str(value)
        if isinstance(value, Mapping):
            out: dict[Any, Any] = {}
            for key, item in value.items():
                new_key = self._wrap_key(key)
                if key in _SWITCH_KEYS and isinstance(item, str) and _PLAIN.fullmatch(item):
                    out[new_key] = item
                else:
                    out[new_key] = self.wrap(item)
            return out
        if isinstance(value, list | tuple):
            return [self.wrap(item) for item in value]
        return value

    def _wrap_key(self, key: Any) -> Any:
        if isinstance(key, str) and not _PLAIN.fullmatch(key):
            return self.wrap_str(key)
        return key

    def strip(self, text: str) -> RenderedPrompt:
        """The rendered text without delimiters, and the spans they enclosed.

        A template that cuts an untrusted string (slicing, ``split``) can leave a delimiter
        without its partner. Then the text between the orphan and the nearest other delimiter
        counts as untrusted too: a template marker lost to that is a wrong prompt, while the
        opposite mistake would let content forge control tokens."""
        pieces: list[str] = []
        spans: list[tuple[int, int]] = []
        out_len = 0
        pos = 0
        depth = 0
        span_start = 0
        last_mark = 0  # output position of the previous delimiter
        orphans = 0
        for match in self.pattern.finditer(text):
            piece = text[pos : match.start()]
            pieces.append(piece)
            out_len += len(piece)
            pos = match.end()
            if match.group() == self.open:
                if depth == 0:
                    span_start = out_len
                depth += 1
            elif depth > 0:
                depth -= 1
                if depth == 0:
                    spans.append((span_start, out_len))
            else:
                orphans += 1
                spans.append((last_mark, out_len))
            last_mark = out_len
        tail = text[pos:]
        pieces.append(tail)
        out_len += len(tail)
        if depth > 0:
            orphans += 1
            spans.append((span_start, out_len))
        if orphans:
            _log.warning(
                "chat template cut %d untrusted string(s) apart; the text around them is "
                "treated as untrusted",
                orphans,
            )
        return RenderedPrompt("".join(pieces), _merged(spans))


def _merged(spans: Sequence[tuple[int, int]]) -> tuple[tuple[int, int], ...]:
    out: list[tuple[int, int]] = []
    for start, end in sorted(s for s in spans if s[0] < s[1]):
        if out and start <= out[-1][1]:
            out[-1] = (out[-1][0], max(out[-1][1], end))
        else:
            out.append((start, end))
    return tuple(out)


# ---------------------------------------------------------------------------------- the template


class ChatTemplate:
    """A compiled chat template (jinja2 source) that renders OpenAI-style message dicts."""

    def __init__(self, source: str) -> None:
        self.source = source
        try:
            self._template = _ENV.from_string(source)
        except jinja2.TemplateSyntaxError as exc:
            raise ChatTemplateError(f"chat template does not compile: {exc}") from exc

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str]) -> ChatTemplate | None:
        """The checkpoint's own template: ``chat_template.jinja``, else ``chat_template.json``'s
        or ``tokenizer_config.json``'s ``chat_template``; ``None`` when the folder has none.

        A template list (``[{"name": ..., "template": ...}]``) gives its ``tool_use`` entry, else
        ``default``, else the first: this runtime always renders for tool use."""
        folder = Path(path)
        jinja_file = folder / "chat_template.jinja"
        if jinja_file.is_file():
            return cls(jinja_file.read_text(encoding="utf-8"))
        for name in ("chat_template.json", "tokenizer_config.json"):
            file = folder / name
            if not file.is_file():
                continue
            try:
                data = json.loads(file.read_text(encoding="utf-8"))
            except (OSError, ValueError) as exc:
                raise ChatTemplateError(f"cannot read {file}: {exc}") from exc
            source = _template_source(data.get("chat_template") if isinstance(data, dict) else None)
            if source is not None:
                return cls(source)
        return None

    def render(
        self,
        messages: list[dict[str, Any]],
        tools: list[dict[str, Any]] | None = None,
        *,
        add_generation_prompt: bool = True,
        **extra: Any,
    ) -> RenderedPrompt:
        """Render the conversation. ``messages`` and ``tools`` are untrusted data (every string in
        them ends up in :attr:`RenderedPrompt.untrusted`); ``extra`` (``bos_token``, template
        switches) is trusted and passed as is."""
        marks = _Marks()
        text = self._template.render(
            messages=marks.wrap(messages),
            tools=None if tools is None else marks.wrap(tools),
            add_generation_prompt=add_generation_prompt,
            **extra,
        )
        return marks.strip(text)


def _template_source(value: Any) -> str | None:
    if isinstance(value, str):
        return value
    if isinstance(value, list):
        named = {
            item.get("name"): item.get("template")
            for item in value
            if isinstance(item, dict) and isinstance(item.get("template"), str)
        }
        for name in ("tool_use", "default"):
            if name in named:
                return str(named[name])
        if named:
            return str(next(iter(named.values())))
    return None
