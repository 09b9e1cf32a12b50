"""What a model is told when its arguments break a tool's schema, and how schemas are compiled."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from agent_runtime.errors import SchemaError
from agent_runtime.schema import (
    CompiledSchema,
    Violation,
    compile_schema,
    format_violations,
)

ORDER: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer": {"type": "string", "minLength": 2},
        "email": {"type": "string", "format": "email"},
        "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
        "note": {"type": ["string", "null"], "maxLength": 10},
    },
    "required": ["customer", "items"],
    "additionalProperties": False,
    "$defs": {
        "Item": {
            "type": "object",
            "properties": {
                "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d+$"},
                "qty": {"type": "integer", "minimum": 1, "maximum": 10},
            },
            "required": ["sku", "qty"],
        }
    },
}


def by_pointer(violations: list[Violation]) -> dict[str, Violation]:
    return {v.pointer: v for v in violations}


def test_valid_arguments_have_no_violations() -> None:
    compiled = compile_schema(ORDER)
    args = {"customer": "Ann", "items": [{"sku": "ABC-1", "qty": 2}], "note": None}
    assert compiled.is_valid(args)
    assert compiled.violations(args) == []


def test_every_violation_is_listed_with_pointer_keyword_and_given_value() -> None:
    compiled = compile_schema(ORDER)
    args = {
        "customer": "A",
        "email": "not-an-address",
        "items": [{"sku": "ABC-1", "qty": 2}, {"sku": "abc", "qty": "3"}, {"qty": 12}],
        "note": 5,
        "colour": "red",
    }
    found = by_pointer(compiled.violations(args))
    assert set(found) == {
        "/colour",
        "/customer",
        "/email",
        "/items/1/qty",
        "/items/1/sku",
        "/items/2/qty",
        "/items/2/sku",
        "/note",
    }
    assert found["/items/2/qty"].keyword == "maximum"
    assert found["/items/2/qty"].expected == "integer <= 10"
    assert found["/items/2/qty"].given == "12"
    assert found["/items/1/qty"].keyword == "type"
    assert found["/items/1/qty"].given == '"3"'
    assert found["/items/1/sku"].keyword == "pattern"
    assert found["/items/2/sku"].keyword == "required"
    assert found["/items/2/sku"].given == "(missing)"
    assert "missing required property 'sku'" in found["/items/2/sku"].message
    assert found["/colour"].keyword == "additionalProperties"
    assert "customer, email, items, note" in found["/colour"].message
    assert found["/customer"].keyword == "minLength"
    assert found["/email"].keyword == "format"
    assert found["/note"].expected == "string or null"
    for violation in found.values():
        assert violation.message.startswith(violation.pointer)


def test_violations_are_sorted_by_pointer_in_natural_order() -> None:
    compiled = compile_schema(
        {"type": "object", "properties": {"xs": {"items": {"type": "integer"}}}}
    )
    xs = ["a"] * 12
    pointers = [v.pointer for v in compiled.violations({"xs": xs})]
    assert pointers == [f"/xs/{i}" for i in range(12)]


def test_root_violation_uses_empty_pointer() -> None:
    compiled = compile_schema({"type": "object"})
    [violation] = compiled.violations([1, 2])
    assert violation.pointer == ""
    assert violation.keyword == "type"
    assert violation.message.startswith("(root):")


def test_given_value_is_truncated_json() -> None:
    compiled = compile_schema({"type": "object", "properties": {"text": {"type": "integer"}}})
    [violation] = compiled.violations({"text": "x" * 500})
    assert len(violation.given) <= 80
    assert violation.given.startswith('"xxx')
    assert violation.given.endswith("…")


def test_escaped_pointer_for_keys_with_slash_and_tilde() -> None:
    compiled = compile_schema(
        {"type": "object", "properties": {"a/b": {"type": "integer"}, "c~d": {"type": "integer"}}}
    )
    pointers = {v.pointer for v in compiled.violations({"a/b": "x", "c~d": "y"})}
    assert pointers == {"/a~1b", "/c~0d"}


def test_nested_defs_and_refs_report_leaf_errors() -> None:
    schema = {
        "type": "object",
        "properties": {"tree": {"$ref": "#/$defs/Node"}},
        "$defs": {
            "Node": {
                "type": "object",
                "properties": {
                    "value": {"type": "integer"},
                    "children": {"type": "array", "items": {"$ref": "#/$defs/Node"}},
                },
                "required": ["value"],
            }
        },
    }
    compiled = compile_schema(schema)
    tree = {"value": 1, "children": [{"value": 2, "children": [{"value": "deep"}, {}]}]}
    found = by_pointer(compiled.violations({"tree": tree}))
    assert set(found) == {
        "/tree/children/0/children/0/value",
        "/tree/children/0/children/1/value",
    }
    assert found["/tree/children/0/children/0/value"].keyword == "type"
    assert found["/tree/children/0/children/1/value"].keyword == "required"


PET = {
    "type": "object",
    "properties": {
        "pet": {"anyOf": [{"$ref": "#/$defs/Cat"}, {"$ref": "#/$defs/Dog"}]},
        "size": {"oneOf": [{"type": "integer"}, {"type": "number", "minimum": 0}]},
        "id": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
    },
    "$defs": {
        "Cat": {
            "type": "object",
            "properties": {"kind": {"const": "cat"}, "lives": {"type": "integer"}},
            "required": ["kind", "lives"],
        },
        "Dog": {
            "type": "object",
            "properties": {"kind": {"const": "dog"}, "good": {"type": "boolean"}},
            "required": ["kind", "good"],
        },
    },
}


def test_any_of_reports_the_closest_alternative_errors() -> None:
    compiled = compile_schema(PET)
    [violation] = compiled.violations({"pet": {"kind": "dog", "good": "yes"}})
    assert violation.pointer == "/pet/good"
    assert violation.keyword == "type"
    assert "closest of the 2 anyOf alternatives: #1" in violation.message


def test_any_of_with_no_close_alternative_says_none_matched() -> None:
    compiled = compile_schema(PET)
    [violation] = compiled.violations({"id": True})
    assert violation.pointer == "/id"
    assert violation.keyword == "anyOf"
    assert "matched none of the 2 anyOf alternatives" in violation.message
    assert violation.expected == "string | integer"
    assert violation.given == "true"


def test_one_of_matching_several_names_them() -> None:
    compiled = compile_schema(PET)
    [violation] = compiled.violations({"size": 3})
    assert violation.keyword == "oneOf"
    assert "#0, #1" in violation.message
    assert "exactly one" in violation.message


def test_one_of_matching_none_reports_like_any_of() -> None:
    compiled = compile_schema(PET)
    [violation] = compiled.violations({"size": "big"})
    assert violation.keyword == "oneOf"
    assert "matched none of the 2 oneOf alternatives" in violation.message


@pytest.mark.parametrize(
    ("fmt", "good", "bad"),
    [
        ("date-time", "2024-05-01T12:30:00Z", "2024-13-01T12:30:00Z"),
        ("date", "2024-02-29", "2023-02-29"),
        ("time", "23:59:59+02:00", "25:00:00Z"),
        ("email", "ann@example.com", "ann.example.com"),
        ("ipv4", "192.0.2.1", "192.0.2.300"),
        ("ipv6", "2001:db8::1", "2001:db8:::1"),
        ("uri", "https://example.com/a?b=c#d", "not a uri"),
        ("uuid", "123e4567-e89b-12d3-a456-426614174000", "123e4567e89b12d3a456426614174000"),
        ("regex", "^a+$", "(unclosed"),
        ("hostname", "example.com", "-bad-.com"),
    ],
)
def test_formats_are_asserted(fmt: str, good: str, bad: str) -> None:
    compiled = compile_schema({"type": "object", "properties": {"v": {"format": fmt}}})
    assert compiled.is_valid({"v": good})
    [violation] = compiled.violations({"v": bad})
    assert violation.keyword == "format"
    assert fmt in violation.expected


def test_formats_can_be_annotation_only() -> None:
    compiled = compile_schema(
        {"type": "object", "properties": {"v": {"format": "email"}}}, check_formats=False
    )
    assert compiled.is_valid({"v": "nope"})


def test_unicode_property_escapes_in_patterns_work() -> None:
    compiled = compile_schema({"type": "object", "properties": {"name": {"pattern": "^\\p{L}+$"}}})
    assert compiled.is_valid({"name": "Zoë"})
    assert not compiled.is_valid({"name": "Zoë 2"})


def test_compile_is_cached_by_content() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}}
    first = compile_schema(schema)
    assert compile_schema(schema) is first
    assert compile_schema(copy.deepcopy(schema)) is first
    reordered = {"properties": {"a": {"type": "integer"}}, "type": "object"}
    assert compile_schema(reordered) is first


def test_compile_cache_notices_a_mutated_schema() -> None:
    schema: dict[str, Any] = {"type": "object", "properties": {"a": {"type": "integer"}}}
    first = compile_schema(schema)
    schema["properties"]["a"]["type"] = "string"
    second = compile_schema(schema)
    assert second is not first
    assert second.is_valid({"a": "x"})
    assert not first.is_valid({"a": "x"})


def test_compile_never_mutates_the_input() -> None:
    schema = {"type": "dict", "properties": {"a": {"type": "int", "optional": True}}}
    snapshot = copy.deepcopy(schema)
    compile_schema(schema)
    assert schema == snapshot


def test_normalisation_warnings_are_kept_on_the_compiled_schema() -> None:
    compiled = compile_schema({"type": "dict", "properties": {"x": {"type": "float"}}})
    assert compiled.schema == {"type": "object", "properties": {"x": {"type": "number"}}}
    assert any("/properties/x/type" in w and "'float'" in w for w in compiled.warnings)
    assert compiled.is_valid({"x": 1.5})
    assert not compiled.is_valid({"x": "1.5"})


def test_schema_that_is_not_a_schema_raises_schema_error() -> None:
    with pytest.raises(SchemaError, match="minimum"):
        compile_schema({"type": "object", "properties": {"a": {"minimum": "ten"}}})
    with pytest.raises(SchemaError, match="list"):
        compile_schema([1, 2])  # type: ignore[arg-type]


def test_unresolvable_remote_ref_is_a_schema_error_not_a_fetch() -> None:
    schema = {"type": "object", "properties": {"a": {"$ref": "https://example.invalid/s.json"}}}
    with pytest.raises(SchemaError, match="cannot be resolved"):
        compile_schema(schema)


def test_unresolvable_local_ref_is_a_schema_error() -> None:
    with pytest.raises(SchemaError, match="#/\\$defs/Missing"):
        compile_schema({"type": "object", "properties": {"a": {"$ref": "#/$defs/Missing"}}})


def test_remote_ref_resolves_through_a_registry() -> None:
    registry: Registry = Registry().with_resource(
        "http://localhost:1234/money.json",
        Resource.from_contents({"type": "number", "minimum": 0}, default_specification=DRAFT202012),
    )
    compiled = compile_schema(
        {"type": "object", "properties": {"price": {"$ref": "http://localhost:1234/money.json"}}},
        registry,
    )
    assert compiled.is_valid({"price": 3})
    [violation] = compiled.violations({"price": -1})
    assert violation.pointer == "/price"
    assert violation.keyword == "minimum"


def test_dependent_required_and_property_names() -> None:
    compiled = compile_schema(
        {
            "type": "object",
            "dependentRequired": {"card": ["cvv"]},
            "propertyNames": {"pattern": "^[a-z]+$"},
        }
    )
    found = compiled.violations({"card": "4111", "Bad": 1})
    keywords = {(v.pointer, v.keyword) for v in found}
    assert ("/cvv", "dependentRequired") in keywords
    assert ("", "pattern") in keywords
    assert any("property name" in v.message for v in found)


def test_format_violations_lists_every_problem_up_to_the_limit() -> None:
    compiled = compile_schema(
        {"type": "object", "properties": {"xs": {"type": "array", "items": {"type": "integer"}}}}
    )
    violations = compiled.violations({"xs": [str(i) for i in range(25)]})
    assert len(violations) == 25
    text = format_violations("sum_numbers", violations, limit=20)
    lines = text.splitlines()
    assert "sum_numbers" in lines[0] and "25 problems" in lines[0]
    assert sum(1 for line in lines if line.startswith("- /xs/")) == 20
    assert "... and 5 more" in text
    assert "/xs/0: expected integer" in text


def test_compiled_schema_is_the_public_type() -> None:
    assert isinstance(compile_schema({"type": "object"}), CompiledSchema)


def test_endlessly_recursive_schema_is_reported_not_raised() -> None:
    compiled = compile_schema(
        {"type": "object", "$ref": "#/$defs/a", "$defs": {"a": {"$ref": "#/$defs/a"}}}
    )
    assert not compiled.is_valid({})
    [violation] = compiled.violations({})
    assert violation.keyword == "$ref"
    assert "itself" in violation.message


def test_unevaluated_and_extra_items_name_the_extras() -> None:
    compiled = compile_schema(
        {
            "type": "object",
            "properties": {"pair": {"prefixItems": [{}, {}], "items": False}},
            "unevaluatedProperties": False,
        }
    )
    found = by_pointer(compiled.violations({"pair": [1, 2, 3], "stray": 1}))
    assert found["/pair"].keyword == "items"
    assert "[3]" in found["/pair"].message or "3" in found["/pair"].message
    assert found[""].keyword == "unevaluatedProperties"
    assert "stray" in found[""].message
