"""The words of a validation error: what was expected and what was given, for the model.

A model reads these to fix its next call, so each says the expectation in plain words
(``integer <= 10``, ``string in 'date-time' format (for example ...)``) and shows the given
value as JSON, truncated. Pure functions of values and schemas, kept apart from
:mod:`.check`, which decides which errors to report.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from typing import Any

__all__ = [
    "a_json_type",
    "describe",
    "dump",
    "expectation",
    "given",
    "json_type",
    "pointer",
    "truncate",
    "type_words",
    "where",
]

GIVEN_LIMIT = 80
"""How much of a given value an error shows."""


def expectation(
    keyword: Any, value: Any, schema: dict[str, Any], instance: Any, original: str
) -> tuple[str, str]:
    """Return ``(expected, message text without the pointer)`` for a leaf keyword.

    ``original`` is jsonschema's own message, used where it already says it best.
    """
    kind = schema.get("type") if isinstance(schema.get("type"), str) else None
    shown = given(instance)
    number = kind or "number"
    bounds = {
        "maximum": "<=",
        "minimum": ">=",
        "exclusiveMaximum": "<",
        "exclusiveMinimum": ">",
    }
    if keyword == "type":
        expected = type_words(value)
        return expected, f"expected {expected}, given {shown} ({json_type(instance)})"
    if keyword in bounds:
        expected = f"{number} {bounds[keyword]} {dump(value)}"
        return expected, f"expected {expected}, given {shown}"
    if keyword == "multipleOf":
        expected = f"{number} that is a multiple of {dump(value)}"
        return expected, f"expected {expected}, given {shown}"
    if keyword in ("minLength", "maxLength"):
        bound = "at least" if keyword == "minLength" else "at most"
        expected = f"string of {bound} {value} characters"
        length = len(instance) if isinstance(instance, str) else "?"
        return expected, f"expected {expected}, given {shown} ({length} characters)"
    if keyword in ("minItems", "maxItems"):
        bound = "at least" if keyword == "minItems" else "at most"
        expected = f"array with {bound} {value} items"
        size = len(instance) if isinstance(instance, list) else "?"
        return expected, f"expected {expected}, given {size} items: {shown}"
    if keyword in ("minProperties", "maxProperties"):
        bound = "at least" if keyword == "minProperties" else "at most"
        expected = f"object with {bound} {value} properties"
        size = len(instance) if isinstance(instance, dict) else "?"
        return expected, f"expected {expected}, given {size} properties: {shown}"
    if keyword == "pattern":
        expected = f"string matching the pattern {value!r}"
        return expected, f"expected {expected}, given {shown}"
    if keyword == "format":
        expected = f"string in {value!r} format"
        example = _FORMAT_EXAMPLES.get(value)
        hint = f" (for example {example})" if example else ""
        return expected, f"expected a valid {value} string{hint}, given {shown}"
    if keyword == "enum":
        expected = "one of " + truncate(dump(value), 120)
        return expected, f"expected {expected}, given {shown}"
    if keyword == "const":
        expected = "exactly " + truncate(dump(value), 120)
        return expected, f"expected {expected}, given {shown}"
    if keyword == "uniqueItems":
        return "array with unique items", f"expected all items to be unique, given {shown}"
    if keyword in ("contains", "minContains", "maxContains"):
        contains = schema.get("contains", True)
        low = schema.get("minContains", 1)
        high = schema.get("maxContains")
        count = f"between {low} and {high}" if high is not None else f"at least {low}"
        expected = f"array with {count} items matching {describe(contains)}"
        return expected, f"expected {expected}, given {shown}"
    if keyword == "not":
        expected = f"a value that is NOT {describe(value)}"
        return expected, f"expected {expected}, given {shown}"
    if keyword is None:
        return "no value here", f"no value is allowed here, given {shown}"
    if keyword in ("unevaluatedProperties", "unevaluatedItems", "items", "additionalItems"):
        # jsonschema's own text already names the unexpected members.
        return f"no {keyword} beyond those defined", truncate(original, 200)
    return str(keyword), truncate(original, 200)


_FORMAT_EXAMPLES = {
    "date-time": '"2024-05-01T12:30:00Z"',
    "date": '"2024-05-01"',
    "time": '"12:30:00Z"',
    "email": '"name@example.com"',
    "uri": '"https://example.com/path"',
    "uuid": '"123e4567-e89b-12d3-a456-426614174000"',
    "ipv4": '"192.0.2.1"',
    "ipv6": '"2001:db8::1"',
    "hostname": '"example.com"',
}


def pointer(path: Sequence[Any] | Iterator[Any] | Any) -> str:
    return "".join("/" + str(p).replace("~", "~0").replace("/", "~1") for p in path)


def where(pointer: str) -> str:
    return pointer or "(root)"


def dump(value: Any) -> str:
    try:
        return json.dumps(value, ensure_ascii=False, default=repr)
    except (TypeError, ValueError, RecursionError):
        try:
            return repr(value)
        except RecursionError:
            return f"(a {json_type(value)} nested too deeply to show)"


def truncate(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def given(value: Any) -> str:
    return truncate(dump(value), GIVEN_LIMIT)


def json_type(value: Any) -> str:
    """The JSON Schema type name of a value (``integer``, ``array`` ...), the runtime's one
    wording for "what was given"."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, int):
        return "integer"
    if isinstance(value, float):
        return "number"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "object"
    return type(value).__name__


def a_json_type(value: Any) -> str:
    """:func:`json_type` with its article, for a sentence: ``an array``, ``a string``, ``null``."""
    kind = json_type(value)
    if kind == "null":
        return kind
    return ("an " if kind[:1] in ("a", "e", "i", "o", "u") else "a ") + kind


def type_words(value: Any) -> str:
    if isinstance(value, list):
        return " or ".join(str(v) for v in value)
    return str(value)


def describe(schema: Any) -> str:
    """A short human summary of a schema, for "expected ..." texts."""
    if schema is True:
        return "anything"
    if schema is False or not isinstance(schema, dict):
        return "nothing"
    if "$ref" in schema and isinstance(schema["$ref"], str):
        return schema["$ref"].rsplit("/", 1)[-1] or schema["$ref"]
    if "const" in schema:
        return truncate(dump(schema["const"]), 40)
    if "enum" in schema:
        return "one of " + truncate(dump(schema["enum"]), 60)
    words: list[str] = []
    if "type" in schema:
        words.append(type_words(schema["type"]))
    for key, op in (
        ("minimum", ">="),
        ("exclusiveMinimum", ">"),
        ("maximum", "<="),
        ("exclusiveMaximum", "<"),
    ):
        if key in schema:
            words.append(f"{op} {dump(schema[key])}")
    if "format" in schema:
        words.append(f"in {schema['format']!r} format")
    if "pattern" in schema:
        words.append(f"matching {schema['pattern']!r}")
    if isinstance(schema.get("required"), list) and schema["required"]:
        words.append("with " + ", ".join(str(r) for r in schema["required"][:6]))
    for key in ("anyOf", "oneOf"):
        if isinstance(schema.get(key), list):
            words.append("(" + " | ".join(describe(s) for s in schema[key]) + ")")
    return " ".join(words) or "a value matching the schema"
