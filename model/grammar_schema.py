"""A tool's input schema as the tool-call grammar takes it: exact, relaxed or fallback.

Each schema is normalised, tightened where llguidance is laxer than the dispatcher's checks
(formats held by patterns, disjoint ``oneOf`` as ``anyOf``), then test-compiled: a schema
llguidance implements exactly goes in as it is, one with keywords it does not implement is
compiled leniently ("relaxed"), one it cannot take at all becomes any JSON object ("fallback").
``constrained.py``'s module docstring gives the reasons; this module is the how.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from llguidance import LLMatcher, LLTokenizer

from agent_runtime.schema.normalize import (
    SUBSCHEMA_LIST,
    SUBSCHEMA_MAP,
    SUBSCHEMA_ONE,
    normalize_schema,
)

from .grammar_lark import first_line, parser_limits

__all__ = [
    "PreparedSchema",
    "SchemaMode",
    "fallback_schema",
    "schema_for_grammar",
]

SchemaMode = Literal["exact", "relaxed", "fallback"]
"""How faithfully the grammar holds a tool's arguments to its schema: ``exact`` (the grammar
admits what the schema admits, up to the tightenings described in the module docstring),
``relaxed`` (some keywords are not enforced: a superset of the valid calls), ``fallback``
(any JSON object)."""

# JSON layout inside arguments: what ``json.dumps`` writes, which is how the chat templates
# render past calls (``tojson``), so the model sees this form in its prompt. Fixed separators and no free
# whitespace also make keys and punctuation forced (jump-forward).
_JSON_OPTIONS: dict[str, Any] = {
    "whitespace_flexible": False,
    "item_separator": ", ",
    "key_separator": ": ",
}

# ``format`` values llguidance 1.9 implements; others make it refuse the schema.
_LLGUIDANCE_FORMATS = frozenset(
    {"date-time", "time", "date", "duration", "email", "hostname", "ipv4", "ipv6", "uuid", "uri"}
)

# Patterns that hold llguidance's formats to what the dispatcher's format checkers accept.
# llguidance's date allows 29 February in every year and year 0000, its time allows second 60
# at any minute, its host names have no length limit and allow "--" in any label.
_YEAR = "(?:[0-9]{3}[1-9]|[0-9]{2}[1-9]0|[0-9][1-9]00|[1-9]000)"
_LEAP_YEAR = "(?:[0-9]{2}(?:0[48]|[2468][048]|[13579][26])|(?:0[48]|[2468][048]|[13579][26])00)"
_DATE = (
    f"(?:{_YEAR}-(?:0[13-9]|1[0-2])-[0-9]{{2}}|{_YEAR}-02-(?:0[1-9]|1[0-9]|2[0-8])"
    f"|{_LEAP_YEAR}-02-29)"
)
_TIME = (
    "(?:[01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](?:\\.[0-9]+)?"
    "(?:[Zz]|[+-](?:[01][0-9]|2[0-3]):[0-5][0-9])"
)
_ALNUM = "[A-Za-z0-9]"
_HYPH = "[A-Za-z0-9-]"
# 1 to 63 characters, letters/digits/hyphens, no hyphen first or last, no "--" in places 3-4.
_LABEL = (
    f"{_ALNUM}(?:{_ALNUM}|{_HYPH}{_ALNUM}|{_HYPH}{_HYPH}{_ALNUM}"
    f"|{_HYPH}(?:{_ALNUM}{_HYPH}|-{_ALNUM}){_HYPH}{{0,58}}{_ALNUM})?"
)
_HOST = f"{_LABEL}(?:\\.{_LABEL})*"
_ATEXT = "[A-Za-z0-9!#$%&'*+/=?^_`{|}~-]+"
# format -> (pattern, maxLength, keep llguidance's format). Email drops llguidance's format:
# intersecting its regex with these patterns is more than llguidance's regex analysis takes.
# A host name of at most 253 characters; an email of at most 255 has a domain of at most 253.
_FORMAT_RULES: dict[str, tuple[str, int | None, bool]] = {
    "date": (f"^{_DATE}$", None, True),
    "date-time": (f"^{_DATE}[Tt]{_TIME}$", None, True),
    "time": (f"^{_TIME}$", None, True),
    "hostname": (f"^{_HOST}$", 253, True),
    "email": (f"^{_ATEXT}(?:\\.{_ATEXT})*@{_HOST}$", 255, False),
}

# How far the compile check walks a schema's grammar to catch limits hit only while parsing
# (a row of thousands of Earley items at the first property name, for example).
_PROBE_STEPS = 6


@dataclass(frozen=True)
class PreparedSchema:
    grammar_schema: str
    """The schema as it goes after ``%json`` (with llguidance's options)."""
    mode: SchemaMode
    reason: str


def fallback_schema(reason: str) -> PreparedSchema:
    return PreparedSchema(_with_options({"type": "object"}, {}), "fallback", reason)


def _with_options(schema: dict[str, Any], extra: Mapping[str, Any]) -> str:
    return json.dumps({**schema, "x-guidance": {**_JSON_OPTIONS, **extra}}, ensure_ascii=False)


def schema_for_grammar(lltok: LLTokenizer, raw: Any) -> PreparedSchema:
    """Decide how a tool's schema goes into the grammar: exact, relaxed or fallback."""
    try:
        schema, _ = normalize_schema(raw)
    except Exception as exc:  # not a schema at all: the dispatcher will say so
        return fallback_schema(f"not a JSON Schema ({exc})")
    notes: list[str] = []
    try:
        tightened = _tighten(schema, notes)
    except RecursionError:
        return fallback_schema("schema nested too deeply")
    strict = _with_options(tightened, {})
    error = _check_grammar(lltok, strict)
    if error is None:
        mode: SchemaMode = "relaxed" if notes else "exact"
        return PreparedSchema(strict, mode, "; ".join(notes))
    lenient = _with_options(tightened, {"lenient": True, "coerce_one_of": True})
    if _check_grammar(lltok, lenient) is None:
        return PreparedSchema(lenient, "relaxed", error)
    return fallback_schema(error)


def _check_grammar(lltok: LLTokenizer, grammar_schema: str) -> str | None:
    """llguidance's complaint about a schema, or ``None``: compiled, then walked a few steps."""
    grammar = LLMatcher.grammar_from_lark(f"start: %json {grammar_schema}")
    try:
        matcher = LLMatcher(lltok, grammar, log_level=0, limits=parser_limits())
    except Exception as exc:  # API-level refusal (llguidance raises for malformed input)
        return first_line(str(exc))
    words = (lltok.vocab_size + 31) // 32
    buffer = np.zeros(words, dtype=np.int32)
    for _ in range(_PROBE_STEPS):
        if matcher.is_error() or matcher.is_stopped():
            break
        forced = matcher.compute_ff_tokens()
        if forced:
            matcher.consume_tokens(forced)
            continue
        matcher.unsafe_compute_mask_ptr(buffer.ctypes.data, buffer.nbytes)
        if matcher.is_error():
            break
        bits = np.unpackbits(buffer.view(np.uint8), count=lltok.vocab_size, bitorder="little")
        allowed = np.flatnonzero(bits)
        if allowed.size == 0:
            break
        matcher.consume_token(int(allowed[0]))
    if matcher.is_error():
        return first_line(matcher.get_error())
    return None


def _tighten(schema: dict[str, Any], notes: list[str]) -> dict[str, Any]:
    """A copy of ``schema`` llguidance holds to the dispatcher's own verdicts.

    * ``oneOf`` whose branches cannot overlap (distinct types, or a required property with
      distinct constants: a discriminated union) becomes ``anyOf``, which llguidance implements;
    * formats llguidance gets laxer than the dispatcher gain patterns (see ``_FORMAT_RULES``);
    * formats llguidance does not know are dropped (noted when the dispatcher checks them).
    """
    from agent_runtime.schema.formats import FORMAT_CHECKER

    checked_formats = frozenset(FORMAT_CHECKER.checkers)
    root = json.loads(json.dumps(schema))

    def visit(node: dict[str, Any]) -> dict[str, Any]:
        fmt = node.get("format")
        if isinstance(fmt, str):
            if fmt not in _LLGUIDANCE_FORMATS:
                del node["format"]
                if fmt in checked_formats:
                    notes.append(f"format {fmt!r} is not enforced")
            elif fmt in _FORMAT_RULES:
                node = _held_format(node, *_FORMAT_RULES[fmt])
        branches = node.get("oneOf")
        if isinstance(branches, list) and branches and _disjoint(branches, root):
            node = dict(node)
            del node["oneOf"]
            if "anyOf" in node:
                node["allOf"] = [*node.get("allOf", []), {"anyOf": branches}]
            else:
                node["anyOf"] = branches
        return node

    return _map_subschemas(root, visit)


def _held_format(
    node: dict[str, Any], pattern: str, max_length: int | None, keep_format: bool
) -> dict[str, Any]:
    node = dict(node)
    if not keep_format:
        del node["format"]
    if max_length is not None:
        current = node.get("maxLength")
        if not isinstance(current, int) or current > max_length:
            node["maxLength"] = max_length
    if "pattern" in node:
        node["allOf"] = [*node.get("allOf", []), {"pattern": pattern}]
    else:
        node["pattern"] = pattern
    return node


def _map_subschemas(
    node: dict[str, Any], fn: Callable[[dict[str, Any]], dict[str, Any]]
) -> dict[str, Any]:
    """Apply ``fn`` bottom-up to every schema object in ``node`` (subschema positions only)."""
    out = dict(node)
    for key in SUBSCHEMA_ONE:
        value = out.get(key)
        if isinstance(value, dict):
            out[key] = _map_subschemas(value, fn)
        elif isinstance(value, list) and key in ("items", "additionalItems"):
            out[key] = [_map_subschemas(v, fn) if isinstance(v, dict) else v for v in value]
    for key in SUBSCHEMA_LIST:
        value = out.get(key)
        if isinstance(value, list):
            out[key] = [_map_subschemas(v, fn) if isinstance(v, dict) else v for v in value]
    for key in SUBSCHEMA_MAP:
        value = out.get(key)
        if isinstance(value, dict):
            out[key] = {
                k: _map_subschemas(v, fn) if isinstance(v, dict) else v for k, v in value.items()
            }
    return fn(out)


def _resolve(node: Any, root: dict[str, Any]) -> Any:
    """Follow a local ``$ref`` (``#/...``) a few times; other refs resolve to ``None``."""
    for _ in range(8):
        if not isinstance(node, dict) or "$ref" not in node:
            return node
        ref = node["$ref"]
        if not isinstance(ref, str) or not ref.startswith("#"):
            return None
        target: Any = root
        for part in ref[1:].split("/")[1:] if ref != "#" else []:
            part = part.replace("~1", "/").replace("~0", "~")
            if isinstance(target, dict) and part in target:
                target = target[part]
            elif isinstance(target, list) and part.isdigit() and int(part) < len(target):
                target = target[int(part)]
            else:
                return None
        node = target
    return None


def _type_set(branch: dict[str, Any]) -> frozenset[str] | None:
    kind = branch.get("type")
    names = [kind] if isinstance(kind, str) else kind if isinstance(kind, list) else None
    if names is None or not all(isinstance(n, str) for n in names):
        return None
    expanded = set(names)
    if "number" in expanded:
        expanded.add("integer")
    return frozenset(expanded)


def _constants(schema: Any, root: dict[str, Any]) -> frozenset[str] | None:
    schema = _resolve(schema, root)
    if not isinstance(schema, dict):
        return None
    if "const" in schema:
        values = [schema["const"]]
    elif isinstance(schema.get("enum"), list):
        values = schema["enum"]
    else:
        return None
    return frozenset(_canonical_value(v) for v in values)


def _canonical_value(value: Any) -> str:
    if isinstance(value, float) and value.is_integer():
        value = int(value)
    return json.dumps(value, sort_keys=True)


def _pairwise_disjoint(sets: Sequence[frozenset[str]]) -> bool:
    seen: set[str] = set()
    for item in sets:
        if seen & item:
            return False
        seen |= item
    return True


def _disjoint(branches: list[Any], root: dict[str, Any]) -> bool:
    """True when no instance can match two branches (so oneOf means anyOf)."""
    resolved = [_resolve(b, root) for b in branches]
    if not all(isinstance(b, dict) for b in resolved):
        return False
    types = [_type_set(b) for b in resolved]
    if all(t is not None for t in types) and _pairwise_disjoint([t for t in types if t]):
        return True
    required = [
        set(b.get("required", [])) if isinstance(b.get("required"), list) else set()
        for b in resolved
    ]
    common = set.intersection(*required) if required else set()
    for name in sorted(common):
        values = [
            _constants(b.get("properties", {}).get(name), root)
            if isinstance(b.get("properties"), dict)
            else None
            for b in resolved
        ]
        if all(v is not None for v in values) and _pairwise_disjoint([v for v in values if v]):
            return True
    return False
