"""The compiled fast path answers ``is_valid`` exactly as jsonschema does.

Valid calls are the common case, so they skip jsonschema (about ten times slower); these tests
generate schemas from the keywords the fast path supports, and instances near their edges, and
require the same verdict from both.
"""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.errors import SchemaError
from agent_runtime.schema import compile_schema

_NAMES = st.sampled_from(["a", "b", "c", "x1", "é"])
_SCALARS = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(-3, 12),
    st.sampled_from([0.0, 1.0, 2.5, -1.5, 10.0, 0.07, 0.3, 19.99, 1e308, 10**30]),
    st.sampled_from(["", "a", "abc", "x1", "ABC-1", "ann@example.com", "2024-05-01", "é"]),
)
_INSTANCE = st.recursive(
    _SCALARS,
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(_NAMES, inner, max_size=4),
    max_leaves=10,
)
_TYPES = st.sampled_from(["object", "array", "string", "number", "integer", "boolean", "null"])

_LEAF = st.one_of(
    st.booleans(),
    st.just({}),
    st.builds(lambda t: {"type": t}, _TYPES),
    st.builds(lambda ts: {"type": ts}, st.lists(_TYPES, min_size=1, max_size=3, unique=True)),
    st.builds(lambda v: {"const": v}, _INSTANCE),
    st.builds(lambda vs: {"enum": vs}, st.lists(_INSTANCE, min_size=1, max_size=3)),
    st.builds(
        lambda k, n: {k: n},
        st.sampled_from(["minimum", "maximum", "exclusiveMinimum", "exclusiveMaximum"]),
        st.integers(-2, 10) | st.sampled_from([0.5, 2.5]),
    ),
    st.builds(lambda k, n: {k: n}, st.sampled_from(["minLength", "maxLength"]), st.integers(0, 3)),
    st.builds(lambda n: {"multipleOf": n}, st.sampled_from([2, 3, 0.5, 0.1, 0.01, 0.123456789])),
    st.builds(lambda p: {"pattern": p}, st.sampled_from(["^a", "b$", "^[A-Z]{3}-\\d+$", "\\p{L}"])),
    st.builds(lambda f: {"format": f}, st.sampled_from(["email", "date", "uri", "unknown"])),
    st.builds(lambda k, n: {k: n}, st.sampled_from(["minItems", "maxItems"]), st.integers(0, 3)),
    st.builds(
        lambda k, n: {k: n}, st.sampled_from(["minProperties", "maxProperties"]), st.integers(0, 3)
    ),
    st.builds(lambda names: {"required": sorted(set(names))}, st.lists(_NAMES, max_size=3)),
    st.builds(lambda k, v: {"dependentRequired": {k: [v]}}, _NAMES, _NAMES),
    st.just({"$ref": "#/$defs/d"}),
)


def _merge(parts: list[dict[str, Any] | bool]) -> dict[str, Any] | bool:
    merged: dict[str, Any] = {}
    for part in parts:
        if isinstance(part, bool):
            return part
        merged.update(part)
    return merged


_SCHEMA = st.recursive(
    st.builds(_merge, st.lists(_LEAF, min_size=1, max_size=3)),
    lambda inner: st.one_of(
        st.builds(lambda p: {"properties": p}, st.dictionaries(_NAMES, inner, max_size=3)),
        st.builds(
            lambda p, extra: {"properties": p, "additionalProperties": extra},
            st.dictionaries(_NAMES, inner, max_size=3),
            inner,
        ),
        st.builds(
            lambda s, extra: {"patternProperties": {"^x": s}, "additionalProperties": extra},
            inner,
            inner,
        ),
        st.builds(lambda s: {"propertyNames": s}, inner),
        st.builds(lambda s: {"items": s}, inner),
        st.builds(
            lambda ss, rest: {"prefixItems": ss, "items": rest},
            st.lists(inner, min_size=1, max_size=2),
            inner,
        ),
        st.builds(
            lambda k, ss: {k: ss},
            st.sampled_from(["anyOf", "oneOf", "allOf"]),
            st.lists(inner, min_size=1, max_size=3),
        ),
        st.builds(lambda s: {"not": s}, inner),
        st.builds(lambda a, b, c: {"if": a, "then": b, "else": c}, inner, inner, inner),
        st.builds(lambda a, b: {"if": a, "then": b}, inner, inner),
    ),
    max_leaves=8,
)


def _endless(violations: list[Any]) -> bool:
    return any("refers to itself without end" in v.message for v in violations)


@settings(max_examples=300, deadline=None)
@given(_SCHEMA, _SCHEMA, st.lists(_INSTANCE, min_size=1, max_size=6))
def test_fast_path_agrees_with_jsonschema(body: Any, target: Any, instances: list[Any]) -> None:
    # "#/$defs/d" anywhere in the body resolves to the root's $defs (which may refer to itself).
    schema = {"$defs": {"d": target}, "allOf": [body]}
    fast = compile_schema(schema, root_object=False)
    slow = compile_schema(schema, root_object=False, fast_path=False)
    assert fast.fast_path
    assert not slow.fast_path
    for instance in instances:
        verdict = slow.is_valid(instance)
        if not verdict and _endless(slow.violations(instance)):
            # jsonschema follows the "#/$defs/d" cycle before anything else and never ends; the
            # fast path may settle the instance on another keyword first. Such a schema has no
            # verdict to agree on.
            continue
        assert fast.is_valid(instance) is verdict, (schema, instance)
        # Errors come from jsonschema either way: none exactly when valid.
        assert (fast.violations(instance) == []) is verdict


_PLAIN_PROPERTY = st.one_of(
    st.builds(lambda t: {"type": t, "description": "d"}, _TYPES),
    _LEAF,
    st.builds(
        lambda p, r: {"type": "object", "properties": p, "required": r},
        st.dictionaries(_NAMES, st.builds(lambda t: {"type": t}, _TYPES), max_size=2),
        st.lists(_NAMES, max_size=2, unique=True),
    ),
)
_PLAIN_OBJECT = st.builds(
    lambda typed, props, required, closed: {
        **({"type": "object"} if typed else {}),
        "properties": props,
        "required": required,
        **({"additionalProperties": closed} if closed is not None else {}),
        "title": "a tool",
        "$defs": {"d": {"type": "integer"}},
    },
    st.booleans(),
    st.dictionaries(_NAMES, _PLAIN_PROPERTY, max_size=4),
    st.lists(_NAMES, max_size=3, unique=True),
    st.sampled_from([None, True, False]),
)


@settings(max_examples=300, deadline=None)
@given(_PLAIN_OBJECT, st.lists(_INSTANCE | st.dictionaries(_NAMES, _INSTANCE), max_size=8))
def test_plain_object_schemas_agree_with_jsonschema(
    schema: dict[str, Any], instances: list[Any]
) -> None:
    # The usual tool schema (typed properties, required, additionalProperties) is checked by
    # one fused closure; it must give jsonschema's verdict on objects and non-objects alike.
    fast = compile_schema(schema, root_object=False)
    slow = compile_schema(schema, root_object=False, fast_path=False)
    assert fast.fast_path
    for instance in instances:
        assert fast.is_valid(instance) is slow.is_valid(instance), (schema, instance)


def test_plain_object_types_are_json_types() -> None:
    compiled = compile_schema(
        {
            "type": "object",
            "properties": {
                "s": {"type": "string"},
                "b": {"type": "boolean"},
                "o": {"type": "object"},
                "a": {"type": "array"},
                "z": {"type": "null"},
                "n": {"type": "number"},
            },
            "required": ["s"],
            "additionalProperties": False,
        }
    )
    assert compiled.fast_path
    assert compiled.is_valid({"s": "x", "b": False, "o": {}, "a": [], "z": None, "n": 1.5})
    for bad in (
        {"s": 1},
        {"s": "x", "b": 1},
        {"s": "x", "o": []},
        {"s": "x", "a": {}},
        {"s": "x", "z": 0},
        {"s": "x", "n": True},
        {"s": "x", "extra": 1},
        {"b": True},
        ["s"],
    ):
        assert not compiled.is_valid(bad), bad


def test_recursive_ref_is_handled_by_the_fast_path() -> None:
    schema = {
        "type": "object",
        "properties": {"root": {"$ref": "#/$defs/node"}},
        "$defs": {
            "node": {
                "type": "object",
                "properties": {"kids": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
                "additionalProperties": False,
            }
        },
    }
    compiled = compile_schema(schema)
    assert compiled.fast_path
    assert compiled.is_valid({"root": {"kids": [{"kids": []}, {}]}})
    assert not compiled.is_valid({"root": {"kids": [{"kids": [{"other": 1}]}]}})


def test_unsupported_keywords_fall_back_to_jsonschema() -> None:
    for schema in (
        {"type": "object", "properties": {"a": {"contains": {"type": "string"}}}},
        {"type": "object", "properties": {"a": {"uniqueItems": True}}},
        {"type": "object", "unevaluatedProperties": False},
        {"type": "object", "$defs": {"a": {"$id": "https://example.com/a"}}},
    ):
        compiled = compile_schema(schema)
        assert not compiled.fast_path
        assert compiled.is_valid({})


def test_integer_valued_floats_and_booleans_follow_json_schema() -> None:
    compiled = compile_schema(
        {"type": "object", "properties": {"n": {"type": "integer"}, "e": {"enum": [1, "1"]}}}
    )
    assert compiled.fast_path
    assert compiled.is_valid({"n": 3.0, "e": 1.0})
    assert not compiled.is_valid({"n": True})
    assert not compiled.is_valid({"e": True})


_KEYS = st.sampled_from(
    ["type", "properties", "required", "items", "prefixItems", "anyOf", "oneOf", "not", "$ref"]
    + ["$defs", "enum", "const", "minimum", "pattern", "format", "additionalProperties"]
    + ["optional", "nullable", "default", "if", "then", "propertyNames", "a", "b"]
)
_GARBAGE = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-3, 3)
    | st.sampled_from(["dict", "int", "string", "object", "#/$defs/a", "#", "(", "^a", "email"]),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_KEYS, inner, max_size=4),
    max_leaves=15,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_KEYS, _GARBAGE, max_size=5), st.lists(_GARBAGE, max_size=3))
def test_any_schema_compiles_or_raises_schema_error_and_never_crashes(
    schema: dict[str, Any], instances: list[Any]
) -> None:
    try:
        compiled = compile_schema(schema)
    except SchemaError:
        return
    slow = compile_schema(schema, fast_path=False)
    for instance in instances:
        violations = compiled.violations(instance)
        assert (violations == []) is compiled.is_valid(instance) is slow.is_valid(instance)
