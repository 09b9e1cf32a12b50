"""Chat templates: a conversation rendered to prompt text, with the untrusted parts marked.

A checkpoint's own chat template (``chat_template.jinja``, or ``tokenizer_config.json``'s
``chat_template``) is the authority on its prompt layout, so :class:`ChatTemplate` renders it the
way transformers' ``apply_chat_template`` does: sandboxed jinja2 with ``trim_blocks`` and
``lstrip_blocks``, a ``tojson`` that is ``json.dumps(ensure_ascii=False)``, ``raise_exception``,
``strftime_now``, loop controls, and a *mutable* sandbox (Kimi's template appends to a list, which
jinja2's immutable sandbox refuses). A folder without a template gets one of the built-in
templates below, written for this project from the formats' published layouts.

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


# ---------------------------------------------------------------------------------- built-ins
#
# Written for this project from the formats' layouts (reference facts and golden renderings), not
# copied. Jinja whitespace: every tag strips on both sides, so only literal text and {{ }} output.

# A message's content as text: a string, or the text parts of a list of parts.
_TEXT_OF_MACRO = r"""
{%- macro text_of(content) -%}
  {%- if content is string -%}
    {{- content -}}
  {%- elif content is iterable and content is not mapping -%}
    {%- for part in content -%}
      {%- if part is string -%}
        {{- part -}}
      {%- elif part is mapping and part.get('text') is string -%}
        {{- part['text'] -}}
      {%- endif -%}
    {%- endfor -%}
  {%- endif -%}
{%- endmacro -%}
"""

# Kimi K2's conversation part: turns back to back; assistant turns carry <think>...</think>
# (reasoning kept only after the last assistant turn without tool calls); calls as
# functions.NAME:IDX. Shared by the full template and the compact one of small models.
_KIMI_TURNS = r"""
{%- set turn = namespace(history_end=-1, calls=0, result=0) -%}
{%- set call_ids = [] -%}
{%- for m in messages -%}
  {%- if m['role'] == 'assistant' and not m.get('tool_calls') -%}
    {%- set turn.history_end = loop.index0 -%}
  {%- endif -%}
{%- endfor -%}
{{- tool_declaration(tools) -}}
{%- if default_system and (not messages or messages[0]['role'] != 'system') -%}
  {{- '<|im_system|>system<|im_middle|>' ~ default_system ~ '<|im_end|>' -}}
{%- endif -%}
{%- for m in messages -%}
  {%- set speaker = m.get('name') or m['role'] -%}
  {%- if m['role'] == 'user' -%}
    {{- '<|im_user|>' ~ speaker ~ '<|im_middle|>' -}}
  {%- elif m['role'] == 'assistant' -%}
    {{- '<|im_assistant|>' ~ speaker ~ '<|im_middle|>' -}}
  {%- else -%}
    {{- '<|im_system|>' ~ speaker ~ '<|im_middle|>' -}}
  {%- endif -%}
  {%- if m['role'] == 'assistant' -%}
    {%- if loop.index0 > turn.history_end and m.get('reasoning_content') is string -%}
      {{- '<think>' ~ m['reasoning_content'] ~ '</think>' -}}
    {%- else -%}
      {{- '<think></think>' -}}
    {%- endif -%}
    {{- text_of(m.get('content')) -}}
    {%- if m.get('tool_calls') -%}
      {%- set _ = call_ids.clear() -%}
      {%- set turn.result = 0 -%}
      {{- '<|tool_calls_section_begin|>' -}}
      {%- for call in m['tool_calls'] -%}
        {%- set fn = call.get('function') or call -%}
        {%- if call.get('id') -%}
          {%- set call_id = call['id'] -%}
        {%- else -%}
          {%- set call_id = 'functions.' ~ fn['name'] ~ ':' ~ turn.calls -%}
        {%- endif -%}
        {%- set _ = call_ids.append(call_id) -%}
        {%- set turn.calls = turn.calls + 1 -%}
        {%- set args = fn.get('arguments') -%}
        {{- '<|tool_call_begin|>' ~ call_id ~ '<|tool_call_argument_begin|>' -}}
        {%- if args is string -%}
          {{- args -}}
        {%- else -%}
          {{- (args if args is not none else {}) | tojson -}}
        {%- endif -%}
        {{- '<|tool_call_end|>' -}}
      {%- endfor -%}
      {{- '<|tool_calls_section_end|>' -}}
    {%- endif -%}
  {%- elif m['role'] == 'tool' -%}
    {%- if m.get('tool_call_id') -%}
      {%- set result_id = m['tool_call_id'] -%}
    {%- elif turn.result < call_ids | length -%}
      {%- set result_id = call_ids[turn.result] -%}
    {%- else -%}
      {%- set result_id = '' -%}
    {%- endif -%}
    {%- set turn.result = turn.result + 1 -%}
    {{- '## Return of ' ~ result_id ~ '\n' ~ text_of(m.get('content')) -}}
  {%- else -%}
    {{- text_of(m.get('content')) -}}
  {%- endif -%}
  {{- '<|im_end|>' -}}
{%- endfor -%}
{%- if add_generation_prompt -%}
  {{- '<|im_assistant|>assistant<|im_middle|>' -}}
{%- endif -%}
"""

# Kimi K2 (Thinking): tools declared first as JSON, a default system turn when the conversation
# has none.
KIMI_K2_TEMPLATE = (
    _TEXT_OF_MACRO
    + r"""
{%- macro tool_declaration(tools) -%}
  {%- if tools -%}
  {{- '<|im_system|>tool_declare<|im_middle|>' ~ (tools | tojson) ~ '<|im_end|>' -}}
{%- endif -%}
{%- endmacro -%}
{%- set default_system = 'You are Kimi, an AI assistant created by Moonshot AI.' -%}
"""
    + _KIMI_TURNS
)

# The same conversation layout with a compact tool declaration, for small models trained here:
# one line per tool (name: description) and one per parameter (name, ``?`` when optional, its
# type in words, its description), so a few hundred tokens hold several tools. No default system
# turn. ``$ref``s into ``$defs`` are followed by name (the reference text is untrusted, so it is
# matched, not cut).
KIMI_K2_COMPACT_TEMPLATE = (
    _TEXT_OF_MACRO
    + r"""
{%- macro type_of(s, defs) -%}
  {%- if s is not mapping -%}
    {{- 'any' -}}
  {%- elif s.get('$ref') is string -%}
    {%- set found = namespace(name='') -%}
    {%- for name in defs -%}
      {%- if ('/' ~ name) in s['$ref'] and name | length > found.name | length -%}
        {%- set found.name = name -%}
      {%- endif -%}
    {%- endfor -%}
    {{- type_of(defs[found.name], defs) if found.name else 'any' -}}
  {%- elif s.get('enum') -%}
    {{- 'one of ' ~ (s['enum'] | join(', ')) -}}
  {%- elif s.get('anyOf') or s.get('oneOf') -%}
    {%- for option in (s.get('anyOf') or s.get('oneOf')) if not (option is mapping and option.get('type') == 'null') -%}
      {{- (' or ' if not loop.first else '') ~ type_of(option, defs) -}}
    {%- endfor -%}
  {%- elif s.get('type') == 'array' -%}
    {{- 'list of ' ~ type_of(s.get('items') or {}, defs) -}}
  {%- elif s.get('type') == 'object' and s.get('properties') is mapping -%}
    {{- 'object {' -}}
    {%- for key, value in s['properties'].items() -%}
      {{- (', ' if not loop.first else '') ~ key ~ ('' if key in (s.get('required') or []) else '?') ~ ': ' ~ type_of(value, defs) -}}
    {%- endfor -%}
    {{- '}' -}}
  {%- elif s.get('type') is string -%}
    {{- s['type'] ~ ((' ' ~ s['format']) if s.get('format') is string else '') -}}
  {%- else -%}
    {{- 'any' -}}
  {%- endif -%}
{%- endmacro -%}
{%- macro tool_declaration(tools) -%}
  {%- if tools -%}
    {{- '<|im_system|>tool_declare<|im_middle|>' -}}
    {%- for tool in tools -%}
      {%- set fn = tool.get('function') or tool -%}
      {%- set params = fn.get('parameters') or {} -%}
      {%- set defs = params.get('$defs') or params.get('definitions') or {} -%}
      {{- fn['name'] ~ ': ' ~ (fn.get('description') or '') ~ '
' -}}
      {%- if params.get('properties') is mapping -%}
        {%- for key, value in params['properties'].items() -%}
          {{- '- ' ~ key ~ ('' if key in (params.get('required') or []) else '?') ~ ': ' ~ type_of(value, defs) -}}
          {%- if value is mapping and value.get('default') is not none -%}
            {{- ', default ' ~ value['default'] -}}
          {%- endif -%}
          {%- if value is mapping and value.get('description') -%}
            {{- '. ' ~ value['description'] -}}
          {%- endif -%}
          {{- '
' -}}
        {%- endfor -%}
      {%- endif -%}
    {%- endfor -%}
    {{- '<|im_end|>' -}}
  {%- endif -%}
{%- endmacro -%}
{%- set default_system = '' -%}
"""
    + _KIMI_TURNS
)

# The tool section the two DeepSeek templates put into the system prompt: every tool's name,
# description and JSON-schema parameters, then how a call is written (format-specific).
_DEEPSEEK_TOOLS_MACRO = (
    _TEXT_OF_MACRO
    + r"""
{%- macro tools_text(tools, example) -%}
  {{- '## Tools\n\nYou can call the following functions.\n' -}}
  {%- for tool in tools -%}
    {%- set fn = tool.get('function') or tool -%}
    {{- '\n### ' ~ fn['name'] ~ '\n' -}}
    {%- if fn.get('description') -%}
      {{- fn['description'] ~ '\n' -}}
    {%- endif -%}
    {{- 'Parameters (JSON schema): ' ~ (fn.get('parameters', {}) | tojson) ~ '\n' -}}
  {%- endfor -%}
  {{- '\nTo call functions, answer with exactly this layout (one block per call, arguments as '
      ~ 'JSON matching the function\'s parameters):\n' ~ example -}}
{%- endmacro -%}
{%- macro arguments_of(fn) -%}
  {%- set args = fn.get('arguments') -%}
  {%- if args is string -%}
    {{- args -}}
  {%- else -%}
    {{- (args if args is not none else {}) | tojson -}}
  {%- endif -%}
{%- endmacro -%}
{%- set ds = namespace(system='') -%}
{%- for m in messages -%}
  {%- if m['role'] == 'system' -%}
    {%- set ds.system = ds.system ~ ('\n\n' if ds.system else '') ~ text_of(m.get('content')) -%}
  {%- endif -%}
{%- endfor -%}
"""
)

DEEPSEEK_V3_TEMPLATE = (
    _DEEPSEEK_TOOLS_MACRO
    + r"""
{#- DeepSeek-V3 (0324) layout: BOS, the system prompt (system messages joined, tools appended),
    <｜User｜>/<｜Assistant｜> turns; calls as function<｜tool▁sep｜>NAME and a ```json fence;
    results grouped in <｜tool▁outputs▁begin｜>...<｜tool▁outputs▁end｜>, after which the
    assistant continues without a new <｜Assistant｜>. -#}
{%- if tools -%}
  {%- set example = '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>function<｜tool▁sep｜>FUNCTION_NAME\n'
      ~ '```json\n{"argument": "value"}\n```<｜tool▁call▁end｜>\n<｜tool▁call▁begin｜>function'
      ~ '<｜tool▁sep｜>OTHER_FUNCTION\n```json\n{}\n```<｜tool▁call▁end｜><｜tool▁calls▁end｜>' -%}
  {%- set ds.system = ds.system ~ ('\n\n' if ds.system else '') ~ tools_text(tools, example) -%}
{%- endif -%}
{%- set turn = namespace(outputs=false) -%}
{{- (bos_token if bos_token is defined and bos_token else '') ~ ds.system -}}
{%- for m in messages -%}
  {%- if m['role'] == 'tool' -%}
    {%- if turn.outputs -%}
      {{- '\n' -}}
    {%- else -%}
      {{- '<｜tool▁outputs▁begin｜>' -}}
      {%- set turn.outputs = true -%}
    {%- endif -%}
    {{- '<｜tool▁output▁begin｜>' ~ text_of(m.get('content')) ~ '<｜tool▁output▁end｜>' -}}
  {%- elif m['role'] != 'system' -%}
    {%- set after_outputs = turn.outputs -%}
    {%- if turn.outputs -%}
      {{- '<｜tool▁outputs▁end｜>' -}}
      {%- set turn.outputs = false -%}
    {%- endif -%}
    {%- if m['role'] == 'assistant' -%}
      {%- if not after_outputs -%}
        {{- '<｜Assistant｜>' -}}
      {%- endif -%}
      {{- text_of(m.get('content')) -}}
      {%- if m.get('tool_calls') -%}
        {{- '<｜tool▁calls▁begin｜>' -}}
        {%- for call in m['tool_calls'] -%}
          {%- set fn = call.get('function') or call -%}
          {{- ('\n' if not loop.first else '') ~ '<｜tool▁call▁begin｜>function<｜tool▁sep｜>'
              ~ fn['name'] ~ '\n```json\n' ~ arguments_of(fn) ~ '\n```<｜tool▁call▁end｜>' -}}
        {%- endfor -%}
        {{- '<｜tool▁calls▁end｜>' -}}
      {%- endif -%}
      {{- '<｜end▁of▁sentence｜>' -}}
    {%- else -%}
      {{- '<｜User｜>' ~ text_of(m.get('content')) -}}
    {%- endif -%}
  {%- endif -%}
{%- endfor -%}
{%- if turn.outputs -%}
  {{- '<｜tool▁outputs▁end｜>' -}}
{%- elif add_generation_prompt -%}
  {{- '<｜Assistant｜>' -}}
{%- endif -%}
"""
)

DEEPSEEK_V31_TEMPLATE = (
    _DEEPSEEK_TOOLS_MACRO
    + r"""
{#- DeepSeek-V3.1 layout (non-thinking): BOS, the system prompt (tools appended), <｜User｜>
    turns, assistant turns opened by <｜Assistant｜></think>; calls as NAME<｜tool▁sep｜>ARGS;
    each result in <｜tool▁output▁begin｜>...<｜tool▁output▁end｜>, after which the assistant
    continues without a new <｜Assistant｜>. -#}
{%- if tools -%}
  {%- set example = '<｜tool▁calls▁begin｜><｜tool▁call▁begin｜>FUNCTION_NAME<｜tool▁sep｜>'
      ~ '{"argument": "value"}<｜tool▁call▁end｜><｜tool▁call▁begin｜>OTHER_FUNCTION<｜tool▁sep｜>'
      ~ '{}<｜tool▁call▁end｜><｜tool▁calls▁end｜>\nCalls follow each other directly, with nothing '
      ~ 'between them.' -%}
  {%- set ds.system = ds.system ~ ('\n\n' if ds.system else '') ~ tools_text(tools, example) -%}
{%- endif -%}
{%- set turn = namespace(outputs=false) -%}
{{- (bos_token if bos_token is defined and bos_token else '') ~ ds.system -}}
{%- for m in messages -%}
  {%- if m['role'] == 'tool' -%}
    {%- set turn.outputs = true -%}
    {{- '<｜tool▁output▁begin｜>' ~ text_of(m.get('content')) ~ '<｜tool▁output▁end｜>' -}}
  {%- elif m['role'] == 'assistant' -%}
    {%- if not turn.outputs -%}
      {{- '<｜Assistant｜></think>' -}}
    {%- endif -%}
    {%- set turn.outputs = false -%}
    {{- text_of(m.get('content')) -}}
    {%- if m.get('tool_calls') -%}
      {{- '<｜tool▁calls▁begin｜>' -}}
      {%- for call in m['tool_calls'] -%}
        {%- set fn = call.get('function') or call -%}
        {{- '<｜tool▁call▁begin｜>' ~ fn['name'] ~ '<｜tool▁sep｜>' ~ arguments_of(fn)
            ~ '<｜tool▁call▁end｜>' -}}
      {%- endfor -%}
      {{- '<｜tool▁calls▁end｜>' -}}
    {%- endif -%}
    {{- '<｜end▁of▁sentence｜>' -}}
  {%- elif m['role'] != 'system' -%}
    {%- set turn.outputs = false -%}
    {{- '<｜User｜>' ~ text_of(m.get('content')) -}}
  {%- endif -%}
{%- endfor -%}
{%- if add_generation_prompt and not turn.outputs -%}
  {{- '<｜Assistant｜></think>' -}}
{%- endif -%}
"""
)
