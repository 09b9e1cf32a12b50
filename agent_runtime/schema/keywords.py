"""The jsonschema validator classes with the runtime's keyword semantics.

jsonschema's own keywords are right for almost everything; these few are not, for tool
arguments: ``pattern`` and ``patternProperties`` are ECMA-262 regular expressions (``\\p{L}``
needs the ``regex`` module), ``additionalProperties`` must use the same pattern engine, and
``multipleOf`` must be exact on decimal values (:mod:`.multiple_of`) and never raise. A custom
meta-schema's ``$vocabulary`` turns keyword families off. Kept apart from :mod:`.check`, which
compiles, caches and explains.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from typing import Any

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.validators import extend
from referencing import Registry
from referencing.exceptions import Unresolvable

from .multiple_of import multiple_of_check
from .patterns import compile_pattern

__all__ = ["extended", "for_custom_dialect"]


def _pattern(validator: Any, pattern: str, instance: Any, schema: Any) -> Iterator[ValidationError]:
    if validator.is_type(instance, "string") and not compile_pattern(pattern).search(instance):
        yield ValidationError(f"{instance!r} does not match {pattern!r}")


def _pattern_properties(
    validator: Any, patterns: Mapping[str, Any], instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    for pattern, subschema in patterns.items():
        regex = compile_pattern(pattern)
        for name, value in instance.items():
            if regex.search(name):
                yield from validator.descend(value, subschema, path=name, schema_path=pattern)


def _additional_properties(
    validator: Any, additional: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if not validator.is_type(instance, "object"):
        return
    extras = _extra_names(instance, schema)
    if validator.is_type(additional, "object"):
        for name in extras:
            yield from validator.descend(instance[name], additional, path=name)
    elif not additional and extras:
        listed = ", ".join(repr(name) for name in extras)
        yield ValidationError(f"Additional properties are not allowed ({listed} unexpected)")


def _extra_names(instance: Mapping[str, Any], schema: Mapping[str, Any]) -> list[str]:
    properties = schema.get("properties", {})
    patterns = [compile_pattern(p) for p in schema.get("patternProperties", {})]
    return [
        name
        for name in instance
        if name not in properties and not any(p.search(name) for p in patterns)
    ]


def _multiple_of(
    validator: Any, divisor: Any, instance: Any, schema: Any
) -> Iterator[ValidationError]:
    if validator.is_type(instance, "number") and not multiple_of_check(divisor)(instance):
        yield ValidationError(f"{instance!r} is not a multiple of {divisor!r}")


_EXTENDED: dict[type[Any], type[Any]] = {}


def extended(cls: type[Any]) -> type[Any]:
    """``cls`` with the runtime's ``pattern``, ``patternProperties``, ``additionalProperties``
    and ``multipleOf`` (draft 3's ``divisibleBy`` too)."""
    found = _EXTENDED.get(cls)
    if found is None:
        keywords = {
            "pattern": _pattern,
            "patternProperties": _pattern_properties,
            "additionalProperties": _additional_properties,
            "multipleOf": _multiple_of,
        }
        if "divisibleBy" in cls.VALIDATORS:
            keywords["divisibleBy"] = _multiple_of
        found = extend(cls, validators=keywords)  # type: ignore[no-untyped-call]
        _EXTENDED[cls] = found
    return found


_VOCABULARY = "https://json-schema.org/draft/2020-12/vocab/"
_VOCABULARY_KEYWORDS: dict[str, tuple[str, ...]] = {
    _VOCABULARY + "applicator": (
        "prefixItems",
        "items",
        "contains",
        "additionalProperties",
        "properties",
        "patternProperties",
        "dependentSchemas",
        "propertyNames",
        "if",
        "then",
        "else",
        "allOf",
        "anyOf",
        "oneOf",
        "not",
    ),
    _VOCABULARY + "unevaluated": ("unevaluatedItems", "unevaluatedProperties"),
    _VOCABULARY + "validation": (
        "type",
        "const",
        "enum",
        "multipleOf",
        "maximum",
        "exclusiveMaximum",
        "minimum",
        "exclusiveMinimum",
        "maxLength",
        "minLength",
        "pattern",
        "maxItems",
        "minItems",
        "uniqueItems",
        "maxContains",
        "minContains",
        "maxProperties",
        "minProperties",
        "required",
        "dependentRequired",
    ),
}


def _ignore(validator: Any, value: Any, instance: Any, schema: Any) -> Iterator[ValidationError]:
    return iter(())


def for_custom_dialect(dialect: str, registry: Registry) -> type[Any]:
    """A 2020-12 validator limited to the vocabularies a custom meta-schema declares.

    A meta-schema's ``$vocabulary`` says which keyword families apply; one that leaves out the
    validation vocabulary makes ``minimum`` and friends plain annotations. An unknown or
    unavailable meta-schema means plain 2020-12.
    """
    base = extended(Draft202012Validator)
    try:
        meta = registry.resolver().lookup(dialect).contents
    except Unresolvable:
        return base
    vocabularies = meta.get("$vocabulary") if isinstance(meta, dict) else None
    if not isinstance(vocabularies, dict):
        return base
    disabled = {
        keyword
        for vocabulary, keywords in _VOCABULARY_KEYWORDS.items()
        if vocabulary not in vocabularies
        for keyword in keywords
    }
    if not disabled:
        return base
    limited: type[Any] = extend(base, validators=dict.fromkeys(disabled, _ignore))  # type: ignore[no-untyped-call]
    return limited
