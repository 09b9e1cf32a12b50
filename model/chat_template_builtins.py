"""The built-in chat templates: Kimi K2 (full and compact), DeepSeek-V3 (0324) and DeepSeek-V3.1.

A checkpoint folder without a template of its own gets one of these; :class:`ChatTemplate`
(``chat_template.py``) is the engine that renders them. Written for this project from the formats'
layouts (reference facts and golden renderings), not copied. Jinja whitespace: every tag strips on
both sides, so only literal text and ``{{ }}`` output reach the prompt.
"""

from __future__ import annotations

__all__ = [
    "DEEPSEEK_V31_TEMPLATE",
    "DEEPSEEK_V3_TEMPLATE",
    "KIMI_K2_COMPACT_TEMPLATE",
    "KIMI_K2_TEMPLATE",
]

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
