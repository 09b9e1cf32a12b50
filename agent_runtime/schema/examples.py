"""Generate a JSON value that satisfies a JSON Schema, deterministically.

Used by ``SchemaModel`` so agents can be tested with no LLM: every offered tool is called with
arguments its schema accepts. Covers the forms tool schemas use (objects, arrays, scalars with
bounds, enums, consts, formats, ``$ref``/``$defs``, ``anyOf``/``oneOf``/``allOf``, type arrays);
each candidate is checked against the schema and the next alternative is tried if it fails.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from typing import Any

from jsonschema import Draft202012Validator

from ..errors import AgentRuntimeError
from .check import compile_schema

__all__ = ["SchemaExampleError", "example_for"]

_FORMAT_SAMPLES = {
    "date-time": "2026-01-01T00:00:00Z",
    "date": "2026-01-01",
    "time": "12:00:00Z",
    "email": "user@example.com",
    "uri": "https://example.com/",
    "uri-reference": "https://example.com/",
    "iri": "https://example.com/",
    "url": "https://example.com/",
    "uuid": "12345678-1234-5678-1234-567812345678",
    "ipv4": "127.0.0.1",
    "ipv6": "::1",
    "hostname": "example.com",
    "regex": "^a$",
    "duration": "P1D",
}

_MAX_DEPTH = 12


class SchemaExampleError(AgentRuntimeError, ValueError):
    """No value satisfying the schema was found (a ``ValueError`` too, as it always was)."""


def example_for(schema: dict[str, Any], *, include_optional: bool = False) -> Any:
    """A value valid against ``schema`` (draft 2020-12), or ``SchemaExampleError``."""
    compiled = compile_schema(schema)
    root = compiled.schema
    for candidate in _candidates(root, root, include_optional, 0):
        if compiled.is_valid(candidate):
            return candidate
    raise SchemaExampleError(f"could not generate a value for schema {schema!r:.200}")


def _resolve(node: dict[str, Any], root: dict[str, Any]) -> dict[str, Any]:
    seen = 0
    while "$ref" in node and isinstance(node["$ref"], str) and node["$ref"].startswith("#"):
        target: Any = root
        for token in node["$ref"][1:].split("/")[1:]:
            token = token.replace("~1", "/").replace("~0", "~")
            target = target[int(token)] if isinstance(target, list) else target[token]
        merged = {k: v for k, v in node.items() if k != "$ref"}
        node = {**target, **merged}
        seen += 1
        if seen > 32:
            break
    return node


def _candidates(node: Any, root: dict[str, Any], optional: bool, depth: int) -> Iterator[Any]:
    if node is True or node is None:
        yield "example"
        return
    if node is False or not isinstance(node, dict) or depth > _MAX_DEPTH:
        return
    node = _resolve(node, root)
    if "const" in node:
        yield node["const"]
        return
    if "enum" in node and isinstance(node["enum"], list):
        yield from node["enum"]
        return
    if "default" in node:
        yield node["default"]
    if "examples" in node and isinstance(node["examples"], list):
        yield from node["examples"]
    if "allOf" in node and isinstance(node["allOf"], list):
        merged = {k: v for k, v in node.items() if k != "allOf"}
        for sub in node["allOf"]:
            merged = _merge(merged, _resolve(sub, root) if isinstance(sub, dict) else {})
        yield from _candidates(merged, root, optional, depth + 1)
        return
    for key in ("oneOf", "anyOf"):
        if key in node and isinstance(node[key], list):
            rest = {k: v for k, v in node.items() if k != key}
            for branch in node[key]:
                branch_node = _resolve(branch, root) if isinstance(branch, dict) else branch
                if isinstance(branch_node, dict):
                    yield from _candidates(_merge(rest, branch_node), root, optional, depth + 1)
            return
    types = node.get("type")
    if isinstance(types, str):
        types = [types]
    if not types:
        types = _guess_types(node)
    for kind in types:
        yield from _for_type(kind, node, root, optional, depth)


def _merge(a: dict[str, Any], b: dict[str, Any]) -> dict[str, Any]:
    out = dict(a)
    for key, value in b.items():
        if key == "properties" and isinstance(out.get(key), dict):
            out[key] = {**out[key], **value}
        elif key == "required" and isinstance(out.get(key), list):
            out[key] = list(dict.fromkeys([*out[key], *value]))
        else:
            out[key] = value
    return out


def _guess_types(node: dict[str, Any]) -> list[str]:
    if "properties" in node or "required" in node or "additionalProperties" in node:
        return ["object"]
    if "items" in node or "prefixItems" in node:
        return ["array"]
    if any(k in node for k in ("minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum")):
        return ["number"]
    if any(k in node for k in ("minLength", "maxLength", "pattern", "format")):
        return ["string"]
    return ["string", "object", "integer", "boolean", "null"]


def _for_type(
    kind: str, node: dict[str, Any], root: dict[str, Any], optional: bool, depth: int
) -> Iterator[Any]:
    if kind == "object":
        yield from _object(node, root, optional, depth)
    elif kind == "array":
        yield from _array(node, root, optional, depth)
    elif kind == "string":
        yield from _string(node)
    elif kind in ("integer", "number"):
        yield from _number(node, integer=kind == "integer")
    elif kind == "boolean":
        yield False
        yield True
    elif kind == "null":
        yield None


def _object(
    node: dict[str, Any], root: dict[str, Any], optional: bool, depth: int
) -> Iterator[Any]:
    properties = node.get("properties") or {}
    required = [k for k in node.get("required") or [] if isinstance(k, str)]
    names = list(properties) if optional else [k for k in properties if k in required]
    names += [k for k in required if k not in names]
    value: dict[str, Any] = {}
    for name in names:
        sub = properties.get(name, node.get("additionalProperties", True))
        if sub is False:
            sub = True
        chosen = next(iter(_valid_candidates(sub, root, optional, depth + 1)), _MISSING)
        if chosen is _MISSING:
            return
        value[name] = chosen
    minimum = node.get("minProperties", 0)
    extra = 0
    while len(value) < minimum and extra < 64:
        value[f"key{extra}"] = "value"
        extra += 1
    yield value


_MISSING = object()


def _valid_candidates(node: Any, root: dict[str, Any], optional: bool, depth: int) -> Iterator[Any]:
    if not isinstance(node, dict):
        yield from _candidates(node, root, optional, depth)
        return
    resolved = _resolve(node, root)
    # A fragment is checked as it stands (no tool-input normalisation), with the root's $defs.
    try:
        checker = Draft202012Validator(
            {**resolved, "$defs": root.get("$defs", {})},
            format_checker=Draft202012Validator.FORMAT_CHECKER,
        )
    except Exception:  # noqa: BLE001 - a fragment we cannot compile alone; trust the outer check
        yield from _candidates(resolved, root, optional, depth)
        return
    for candidate in _candidates(resolved, root, optional, depth):
        if checker.is_valid(candidate):
            yield candidate


def _array(node: dict[str, Any], root: dict[str, Any], optional: bool, depth: int) -> Iterator[Any]:
    prefix = node.get("prefixItems") or []
    items = node.get("items", True)
    count = max(int(node.get("minItems", 0)), len(prefix) if node.get("minItems") else 0)
    if "contains" in node:
        count = max(count, int(node.get("minContains", 1)))
    out: list[Any] = []
    for index in range(count):
        sub = prefix[index] if index < len(prefix) else items
        if sub is False:
            return
        if index >= len(prefix) and "contains" in node:
            sub = node["contains"]
        chosen = next(iter(_valid_candidates(sub, root, optional, depth + 1)), _MISSING)
        if chosen is _MISSING:
            return
        if node.get("uniqueItems") and chosen in out:
            chosen = _distinct(sub, root, optional, depth, out)
            if chosen is _MISSING:
                return
        out.append(chosen)
    yield out


def _distinct(sub: Any, root: dict[str, Any], optional: bool, depth: int, taken: list[Any]) -> Any:
    for candidate in _valid_candidates(sub, root, optional, depth + 1):
        if candidate not in taken:
            return candidate
    return _MISSING


def _string(node: dict[str, Any]) -> Iterator[Any]:
    low = int(node.get("minLength", 0))
    high = node.get("maxLength")
    fmt = node.get("format")
    if isinstance(fmt, str) and fmt in _FORMAT_SAMPLES:
        yield _FORMAT_SAMPLES[fmt]
    base = "example"
    length = max(low, min(len(base), high if isinstance(high, int) else len(base)))
    text = (base * (length // len(base) + 1))[:length]
    yield text
    yield "a" * max(low, 1)
    for k in range(1, 16):
        variant = (text + str(k))[-length:] if length else str(k)
        if isinstance(high, int) and len(variant) > high:
            break
        yield variant


def _number(node: dict[str, Any], *, integer: bool) -> Iterator[Any]:
    low = node.get("minimum", -math.inf)
    high = node.get("maximum", math.inf)
    if "exclusiveMinimum" in node and isinstance(node["exclusiveMinimum"], (int, float)):
        low = max(low, node["exclusiveMinimum"] + (1 if integer else 1e-6))
    if "exclusiveMaximum" in node and isinstance(node["exclusiveMaximum"], (int, float)):
        high = min(high, node["exclusiveMaximum"] - (1 if integer else 1e-6))
    step = node.get("multipleOf")
    start = 0 if low <= 0 <= high else (low if low != -math.inf else high)
    if integer:
        start = math.ceil(start) if start != -math.inf else 0
    if isinstance(step, (int, float)) and step > 0:
        start = math.ceil(start / step) * step
        if integer:
            start = int(start)
    yield start
    if low != -math.inf:
        yield math.ceil(low) if integer else low
    if high != math.inf:
        yield math.floor(high) if integer else high
    # More distinct values, for uniqueItems and for retries after a failed candidate.
    increment = step if isinstance(step, (int, float)) and step > 0 else 1
    for k in range(1, 16):
        value = start + k * increment
        if value > high:
            break
        yield value
