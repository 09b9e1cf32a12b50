"""Normalising the non-standard tool schemas found in real catalogues, and leaving standard ones alone."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.errors import SchemaError
from agent_runtime.schema import compile_schema, normalize_schema
from agent_runtime.tool_names import normalize_tool_name


def norm(schema: Any, **kwargs: Any) -> tuple[dict[str, Any], list[str]]:
    snapshot = copy.deepcopy(schema)
    result = normalize_schema(schema, **kwargs)
    assert schema == snapshot, "normalize_schema mutated its input"
    return result


@pytest.mark.parametrize(
    ("given_type", "standard"),
    [
        ("dict", "object"),
        ("float", "number"),
        ("tuple", "array"),
        ("list", "array"),
        ("int", "integer"),
        ("str", "string"),
        ("bool", "boolean"),
        ("String", "string"),
        ("HashMap", "object"),
        ("ArrayList", "array"),
        ("long", "integer"),
        ("double", "number"),
    ],
)
def test_python_and_java_type_names_become_standard(given_type: str, standard: str) -> None:
    out, warnings = norm({"type": "object", "properties": {"x": {"type": given_type}}})
    assert out["properties"]["x"] == {"type": standard}
    assert warnings == [f"/properties/x/type: type {given_type!r} replaced by {standard!r}"]


def test_any_type_removes_the_constraint() -> None:
    out, warnings = norm(
        {"type": "object", "properties": {"x": {"type": "any", "description": "d"}}}
    )
    assert out["properties"]["x"] == {"description": "d"}
    assert "/properties/x/type" in warnings[0] and "any" in warnings[0]


def test_unknown_type_name_is_dropped_with_a_warning() -> None:
    out, warnings = norm({"type": "object", "properties": {"x": {"type": "Widget"}}})
    assert out["properties"]["x"] == {}
    assert "'Widget' is not a JSON Schema type" in warnings[0]


def test_array_valued_type_is_kept_with_names_normalised() -> None:
    out, warnings = norm(
        {"type": "object", "properties": {"x": {"type": ["int", "null", "integer"]}}}
    )
    assert out["properties"]["x"]["type"] == ["integer", "null"]
    assert len(warnings) == 1
    out, warnings = norm({"type": "object", "properties": {"x": {"type": ["string", "null"]}}})
    assert out["properties"]["x"]["type"] == ["string", "null"] and warnings == []
    out, _ = norm({"type": "object", "properties": {"x": {"type": ["any", "string"]}}})
    assert "type" not in out["properties"]["x"]
    out, _ = norm({"type": "object", "properties": {"x": {"type": ["string", "string"]}}})
    assert out["properties"]["x"]["type"] == ["string"]
    out, _ = norm({"type": "object", "properties": {"x": {"type": []}}})
    assert out["properties"]["x"] == {}


def test_optional_true_removes_the_property_from_required() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string", "optional": True}},
        "required": ["a", "b"],
    }
    out, warnings = norm(schema)
    assert out["required"] == ["a"]
    assert out["properties"]["b"] == {"type": "string"}
    assert warnings and warnings[0].startswith("/properties/b/optional:")


@pytest.mark.parametrize("flag", ["true", "True", "TRUE", "yes", "Yes", " yes ", 1])
def test_optional_given_as_a_string_or_number_is_read_as_the_boolean(flag: object) -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"type": "string"}, "b": {"type": "string", "optional": flag}},
        "required": ["a", "b"],
    }
    out, warnings = norm(schema)
    assert out["required"] == ["a"]
    assert out["properties"]["b"] == {"type": "string"}
    assert warnings == [
        f"/properties/b/optional: optional: {flag!r} (read as true); 'b' removed from the "
        "parent's required list"
    ]


@pytest.mark.parametrize("flag", ["false", "False", "no", 0])
def test_optional_false_as_a_string_keeps_the_property_required(flag: object) -> None:
    schema = {
        "type": "object",
        "properties": {"b": {"type": "string", "optional": flag}},
        "required": ["b"],
    }
    out, warnings = norm(schema)
    assert out == {"type": "object", "properties": {"b": {"type": "string"}}, "required": ["b"]}
    assert warnings == [
        f"/properties/b/optional: non-standard optional: {flag!r} (read as false) removed"
    ]


def test_optional_that_is_neither_yes_nor_no_is_removed_and_named() -> None:
    schema = {
        "type": "object",
        "properties": {"b": {"type": "string", "optional": "sometimes"}},
        "required": ["b"],
    }
    out, warnings = norm(schema)
    assert out["required"] == ["b"] and out["properties"]["b"] == {"type": "string"}
    assert warnings == [
        "/properties/b/optional: non-standard optional: 'sometimes' is neither true nor false; "
        "removed"
    ]


def test_draft3_required_given_as_a_string_is_read_as_the_boolean() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "required": "true"},
            "b": {"type": "string", "required": "no"},
            # An object property whose own property is named "true": a one-name list.
            "c": {"type": "object", "properties": {"true": {}}, "required": "true"},
        },
    }
    out, _ = norm(schema)
    assert out["required"] == ["a"]
    assert out["properties"]["a"] == {"type": "string"}
    assert out["properties"]["b"] == {"type": "string"}
    assert out["properties"]["c"]["required"] == ["true"]


def test_draft3_required_boolean_moves_into_parent_required() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "string", "required": True},
            "b": {"type": "string", "required": False},
        },
    }
    out, warnings = norm(schema)
    assert out["required"] == ["a"]
    assert out["properties"] == {"a": {"type": "string"}, "b": {"type": "string"}}
    assert len(warnings) == 2


def test_property_named_optional_or_required_is_a_property() -> None:
    schema = {
        "type": "object",
        "properties": {
            "optional": {"type": "boolean"},
            "required": {"type": "boolean"},
            "type": {"type": "string"},
        },
        "required": ["optional", "required"],
    }
    assert norm(schema) == (schema, [])


def test_defaults_that_break_their_schema_are_removed() -> None:
    schema = {
        "type": "object",
        "properties": {
            "unit": {"type": "string", "enum": ["c", "f"], "default": "kelvin"},
            "days": {"type": "integer", "default": 3},
            "limit": {"type": "integer", "default": "None"},
            "item": {"$ref": "#/$defs/Item", "default": {"qty": "many"}},
        },
        "$defs": {"Item": {"type": "object", "properties": {"qty": {"type": "integer"}}}},
    }
    out, warnings = norm(schema)
    props = out["properties"]
    assert "default" not in props["unit"]
    assert props["days"]["default"] == 3
    assert "default" not in props["limit"]
    assert "default" not in props["item"]
    assert sorted(w.split(":")[0] for w in warnings) == [
        "/properties/item/default",
        "/properties/limit/default",
        "/properties/unit/default",
    ]


def test_root_gets_type_object() -> None:
    out, warnings = norm({"properties": {"a": {"type": "integer"}}})
    assert out == {"type": "object", "properties": {"a": {"type": "integer"}}}
    assert warnings and "(root)" in warnings[0]
    out, _ = norm({})
    assert out == {"type": "object"}
    out, _ = norm(None)
    assert out == {"type": "object"}
    recursive = {"$ref": "#/$defs/Node", "$defs": {"Node": {"type": "object"}}}
    assert norm(recursive) == (recursive, [])


def test_root_rules_are_off_for_plain_schemas() -> None:
    assert norm({"properties": {"a": {}}}, root_object=False) == ({"properties": {"a": {}}}, [])
    assert norm(True, root_object=False) == ({}, [])
    assert norm(False, root_object=False) == ({"not": {}}, [])


def test_non_object_root_type_is_kept_with_a_warning() -> None:
    out, warnings = norm({"type": "string"})
    assert out == {"type": "string"}
    assert "no call can be valid" in warnings[0]


def test_properties_given_as_a_list_are_keyed_by_name() -> None:
    schema = {
        "type": "object",
        "properties": [
            {"name": "city", "type": "str", "required": True},
            {"name": "days", "type": "int"},
        ],
    }
    out, warnings = norm(schema)
    assert out["properties"] == {"city": {"type": "string"}, "days": {"type": "integer"}}
    assert out["required"] == ["city"]
    assert any("properties given as a list" in w for w in warnings)


def test_nested_schemas_are_normalised_everywhere() -> None:
    schema = {
        "type": "object",
        "properties": {
            "a": {"type": "list", "items": {"type": "float"}},
            "b": {"anyOf": [{"type": "int"}, {"type": "str"}]},
            "c": {"type": "dict", "additionalProperties": {"type": "bool"}},
            "d": {"not": {"type": "int"}},
            "e": {"if": {"type": "int"}, "then": {"type": "int"}, "else": {"type": "str"}},
            "f": {"type": "tuple", "prefixItems": [{"type": "int"}, {"type": "str"}]},
        },
        "$defs": {"X": {"type": "float"}},
        "definitions": {"Y": {"type": "dict"}},
    }
    out, warnings = norm(schema)
    props = out["properties"]
    assert props["a"] == {"type": "array", "items": {"type": "number"}}
    assert props["b"] == {"anyOf": [{"type": "integer"}, {"type": "string"}]}
    assert props["c"] == {"type": "object", "additionalProperties": {"type": "boolean"}}
    assert props["d"] == {"not": {"type": "integer"}}
    assert props["e"] == {
        "if": {"type": "integer"},
        "then": {"type": "integer"},
        "else": {"type": "string"},
    }
    assert props["f"] == {"type": "array", "prefixItems": [{"type": "integer"}, {"type": "string"}]}
    assert out["$defs"] == {"X": {"type": "number"}}
    assert out["definitions"] == {"Y": {"type": "object"}}
    assert len(warnings) == 15


def test_const_enum_default_and_examples_values_are_never_walked() -> None:
    data = {"type": "dict", "optional": True, "required": True}
    schema = {
        "type": "object",
        "properties": {
            "a": {"const": data},
            "b": {"enum": [data]},
            "c": {"default": data, "examples": [data]},
        },
    }
    assert norm(schema) == (schema, [])


def test_nullable_folds_into_type() -> None:
    out, warnings = norm(
        {"type": "object", "properties": {"a": {"type": "string", "nullable": True}}}
    )
    assert out["properties"]["a"] == {"type": ["string", "null"]}
    assert "nullable" in warnings[0]


def test_type_name_given_instead_of_a_schema_is_wrapped() -> None:
    out, warnings = norm({"type": "object", "properties": {"a": "string", "b": 5}})
    assert out["properties"] == {"a": {"type": "string"}, "b": {}}
    assert len(warnings) == 2


def test_list_form_items_becomes_prefix_items() -> None:
    out, warnings = norm(
        {"type": "array", "items": [{"type": "int"}], "additionalItems": False}, root_object=False
    )
    assert out == {"type": "array", "prefixItems": [{"type": "integer"}], "items": False}
    legacy = {"$schema": "http://json-schema.org/draft-07/schema#", "type": "array", "items": [{}]}
    assert norm(legacy, root_object=False) == (legacy, [])


def test_uncompilable_pattern_is_dropped() -> None:
    out, warnings = norm(
        {"type": "object", "properties": {"a": {"type": "string", "pattern": "(oops"}}}
    )
    assert out["properties"]["a"] == {"type": "string"}
    assert "/properties/a/pattern" in warnings[0]


def test_root_that_is_not_a_schema_raises() -> None:
    with pytest.raises(SchemaError):
        normalize_schema(42)
    with pytest.raises(SchemaError):
        normalize_schema("object")


@pytest.mark.parametrize(
    ("name", "wire"),
    [
        ("math.factorial", "math_factorial"),
        ("get_weather", "get_weather"),
        ("weather-v2", "weather-v2"),
        ("a b/c", "a_b_c"),
        ("..", "tool"),
    ],
)
def test_tool_names_become_wire_safe(name: str, wire: str) -> None:
    assert normalize_tool_name(name) == wire


def test_long_tool_names_are_cut_to_64_and_stay_distinct() -> None:
    a = normalize_tool_name("x" * 100 + ".a")
    b = normalize_tool_name("x" * 100 + ".b")
    assert len(a) == len(b) == 64
    assert a != b


# ---------------------------------------------------------------------- real catalogue examples

BFCL_FACTORIAL: dict[str, Any] = {
    "name": "math.factorial",
    "description": "Calculate the factorial of a given number.",
    "parameters": {
        "type": "dict",
        "properties": {"number": {"type": "integer", "description": "The number."}},
        "required": ["number"],
    },
}

BFCL_TRIANGLE: dict[str, Any] = {
    "name": "calculate_triangle_area",
    "parameters": {
        "type": "dict",
        "properties": {
            "base": {"type": "float", "description": "The base of the triangle."},
            "height": {"type": "float", "description": "The height of the triangle."},
            "unit": {"type": "string", "description": "Unit of measure.", "default": "units"},
            "precision": {"type": "integer", "description": "Decimals.", "default": "None"},
        },
        "required": ["base", "height"],
    },
}

BFCL_JAVA: dict[str, Any] = {
    "name": "DataLoader.loadBatch",
    "parameters": {
        "type": "dict",
        "properties": {
            "loader": {"type": "any", "description": "The loader object."},
            "keys": {"type": "ArrayList", "items": {"type": "String"}},
            "options": {"type": "HashMap", "optional": True},
            "point": {"type": "tuple", "items": {"type": "float"}},
        },
        "required": ["loader", "keys", "options"],
    },
}


def test_bfcl_factorial_schema() -> None:
    compiled = compile_schema(BFCL_FACTORIAL["parameters"])
    assert compiled.schema["type"] == "object"
    assert compiled.is_valid({"number": 5})
    assert [v.pointer for v in compiled.violations({})] == ["/number"]
    assert normalize_tool_name(str(BFCL_FACTORIAL["name"])) == "math_factorial"


def test_bfcl_triangle_schema_drops_broken_default() -> None:
    compiled = compile_schema(BFCL_TRIANGLE["parameters"])
    props = compiled.schema["properties"]
    assert props["base"]["type"] == "number"
    assert props["unit"]["default"] == "units"
    assert "default" not in props["precision"]
    assert any("/properties/precision/default" in w for w in compiled.warnings)
    assert compiled.is_valid({"base": 3, "height": 4.5})
    [violation] = compiled.violations({"base": "3", "height": 4})
    assert (violation.pointer, violation.keyword) == ("/base", "type")


def test_bfcl_java_schema() -> None:
    compiled = compile_schema(BFCL_JAVA["parameters"])
    props = compiled.schema["properties"]
    assert props["loader"] == {"description": "The loader object."}
    assert props["keys"] == {"type": "array", "items": {"type": "string"}}
    assert props["options"] == {"type": "object"}
    assert props["point"] == {"type": "array", "items": {"type": "number"}}
    assert compiled.schema["required"] == ["loader", "keys"]
    assert compiled.is_valid({"loader": None, "keys": ["a"], "point": [1.0, 2]})


# ---------------------------------------------------------------------- property: identity

_NAMES = st.sampled_from(["a", "b", "optional", "required", "type", "default", "items", "x/y"])
_JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 5) | st.text(max_size=4),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(_NAMES, inner, max_size=3),
    max_leaves=6,
)
_TRAP = st.just({"type": "dict", "optional": True, "required": True, "nullable": True})
_TYPES = st.sampled_from(["object", "array", "string", "number", "integer", "boolean", "null"])

_LEAF = st.one_of(
    st.booleans(),
    st.just({}),
    st.builds(lambda t: {"type": t}, _TYPES),
    st.builds(lambda ts: {"type": ts}, st.lists(_TYPES, min_size=1, max_size=3, unique=True)),
    st.builds(lambda v: {"const": v}, _JSON | _TRAP),
    st.builds(
        lambda vs: {"enum": vs, "default": vs[0]}, st.lists(_JSON | _TRAP, min_size=1, max_size=3)
    ),
    st.builds(lambda v: {"default": v, "examples": [v]}, _JSON | _TRAP),
    st.builds(lambda n: {"type": "integer", "minimum": n, "maximum": n + 5}, st.integers(-9, 9)),
    st.builds(
        lambda n: {"type": "string", "maxLength": n, "pattern": "^[a-z]*$"}, st.integers(0, 9)
    ),
    st.builds(
        lambda f: {"type": "string", "format": f}, st.sampled_from(["email", "date-time", "uri"])
    ),
    st.builds(lambda d: {"description": d, "title": d}, st.text(max_size=8)),
)


def _object(props: dict[str, Any], required: list[str]) -> dict[str, Any]:
    schema: dict[str, Any] = {"type": "object", "properties": props}
    names = [n for n in required if n in props]
    if names:
        schema["required"] = sorted(set(names))
    return schema


_SCHEMA = st.recursive(
    _LEAF,
    lambda inner: st.one_of(
        st.builds(
            _object, st.dictionaries(_NAMES, inner, max_size=4), st.lists(_NAMES, max_size=3)
        ),
        st.builds(lambda s: {"type": "array", "items": s}, inner),
        st.builds(lambda ss: {"prefixItems": ss}, st.lists(inner, min_size=1, max_size=3)),
        st.builds(
            lambda k, ss: {k: ss},
            st.sampled_from(["anyOf", "oneOf", "allOf"]),
            st.lists(inner, min_size=1, max_size=3),
        ),
        st.builds(lambda s: {"not": s}, inner),
        st.builds(lambda a, b, c: {"if": a, "then": b, "else": c}, inner, inner, inner),
        st.builds(lambda s: {"type": "object", "additionalProperties": s}, inner),
        st.builds(
            lambda s: {"patternProperties": {"^x": s}, "propertyNames": {"maxLength": 5}}, inner
        ),
        st.builds(
            lambda d, s: {"$defs": d, "$ref": "#/$defs/a" if "a" in d else "#"},
            st.dictionaries(_NAMES, inner, max_size=2),
            inner,
        ),
    ),
    max_leaves=12,
)


@settings(max_examples=300, deadline=None)
@given(_SCHEMA)
def test_standard_schemas_come_out_unchanged(schema: Any) -> None:
    if isinstance(schema, bool):
        return
    out, warnings = norm(schema, root_object=False)
    assert warnings == []
    assert out == schema


@settings(max_examples=150, deadline=None)
@given(st.dictionaries(_NAMES, _SCHEMA, max_size=4), st.lists(_NAMES, max_size=3))
def test_standard_tool_input_schemas_come_out_unchanged(
    props: dict[str, Any], required: list[str]
) -> None:
    schema = _object(props, required)
    out, warnings = norm(schema)
    assert warnings == []
    assert out == schema


def test_empty_combinator_lists_and_duplicate_required_are_cleaned() -> None:
    schema = {
        "type": "object",
        "properties": {"a": {"anyOf": []}, "b": {"type": "string"}},
        "required": ["b", "b"],
    }
    out, warnings = norm(schema)
    assert out == {
        "type": "object",
        "properties": {"a": {}, "b": {"type": "string"}},
        "required": ["b"],
    }
    assert len(warnings) == 2
    assert compile_schema(schema).is_valid({"a": 1, "b": "x"})


def test_pydantic_generated_schemas_are_unchanged_and_validate_their_own_dumps() -> None:
    """Schemas from the @tool decorator (pydantic) are standard: no rewrites, fast checks."""
    import datetime
    import enum
    import uuid
    from typing import Annotated, Literal

    from pydantic import BaseModel, Field

    class Colour(enum.Enum):
        RED = "red"
        BLUE = "blue"

    class Line(BaseModel):
        sku: Annotated[str, Field(pattern=r"^[A-Z]+-\d+$")]
        qty: Annotated[int, Field(ge=1, le=10)] = 1

    class Order(BaseModel):
        customer: str
        lines: list[Line]
        colour: Colour = Colour.RED
        unit: Literal["c", "f"] | None = None
        when: datetime.datetime
        ref: uuid.UUID
        point: tuple[int, str]
        tags: dict[str, int] = {}
        parent: Order | None = None

    schema = Order.model_json_schema()
    out, warnings = norm(schema)
    assert warnings == []
    assert out == schema
    compiled = compile_schema(schema)
    assert compiled.fast_path
    order = Order(
        customer="Ann",
        lines=[Line(sku="AB-1", qty=2)],
        when=datetime.datetime(2024, 5, 1, 12, 30, tzinfo=datetime.UTC),
        ref=uuid.UUID(int=7),
        point=(1, "a"),
        parent=Order(
            customer="Bo",
            lines=[],
            when=datetime.datetime(2024, 5, 1, tzinfo=datetime.UTC),
            ref=uuid.UUID(int=8),
            point=(2, "b"),
        ),
    )
    dumped = order.model_dump(mode="json")
    assert compiled.is_valid(dumped)
    dumped["parent"]["lines"] = [{"sku": "bad", "qty": 11}]
    pointers = {(v.pointer, v.keyword) for v in compiled.violations(dumped)}
    assert pointers == {("/parent/lines/0/qty", "maximum"), ("/parent/lines/0/sku", "pattern")}
