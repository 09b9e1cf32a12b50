"""Turn the tool schemas found in the wild into draft 2020-12 JSON Schema.

Real tool catalogues (BFCL's function docs, OpenAPI exports, hand-written MCP servers) use
Python type names (``"dict"``, ``"float"``, ``"tuple"``, ``"any"``), mark parameters with
``"optional": true`` or draft-3 style ``"required": true``, give defaults that break their own
schema, or leave out the root ``"type": "object"``. A strict validator would reject such a tool
outright, or worse, crash on it while checking a model's call. So every tool schema passes through
:func:`normalize_schema` first: each non-standard form is rewritten to the standard form that means
what its author meant, and each rewrite is recorded as a warning naming the JSON pointer of the
place it touched. Nothing is rejected unless it is not a schema at all.

The rule that keeps this safe: a schema that is already valid draft 2020-12 comes out unchanged.
The walker only visits keywords whose values are subschemas, so a property named ``"optional"``
or ``"type"`` is a property, and the values of ``const``, ``enum``, ``default`` and ``examples``
are data, never schemas.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Callable
from typing import Any

from ..errors import SchemaError
from .patterns import compile_pattern
from .wording import where as _where

__all__ = ["SUBSCHEMA_LIST", "SUBSCHEMA_MAP", "SUBSCHEMA_ONE", "normalize_schema"]

_STANDARD_TYPES = frozenset({"object", "array", "string", "number", "integer", "boolean", "null"})

# Type names seen in real catalogues (Python, Java and JavaScript spellings), lower-cased.
# ``None`` means "no constraint" (the type keyword is dropped).
_TYPE_ALIASES: dict[str, str | None] = {
    "dict": "object",
    "map": "object",
    "hashmap": "object",
    "mapping": "object",
    "float": "number",
    "double": "number",
    "decimal": "number",
    "int": "integer",
    "long": "integer",
    "short": "integer",
    "byte": "integer",
    "str": "string",
    "char": "string",
    "text": "string",
    "bool": "boolean",
    "list": "array",
    "tuple": "array",
    "arraylist": "array",
    "set": "array",
    "none": "null",
    "nonetype": "null",
    "any": None,
}

# Keywords whose value is one subschema, a list of subschemas, or a map of name -> subschema
# (``items`` and ``additionalItems`` may also hold a list in drafts before 2020-12). Shared with
# :mod:`.check`, which walks the same subschemas to check ``$ref``s.
SUBSCHEMA_ONE = (
    "additionalProperties",
    "additionalItems",
    "items",
    "contains",
    "propertyNames",
    "not",
    "if",
    "then",
    "else",
    "unevaluatedItems",
    "unevaluatedProperties",
    "contentSchema",
)
SUBSCHEMA_LIST = ("allOf", "anyOf", "oneOf", "prefixItems")
SUBSCHEMA_MAP = ("properties", "patternProperties", "$defs", "definitions", "dependentSchemas")

_LEGACY_DRAFT_MARKERS = ("draft-03", "draft-04", "draft-06", "draft-07", "draft/2019-09")


def normalize_schema(schema: Any, *, root_object: bool = True) -> tuple[dict[str, Any], list[str]]:
    """Return ``(normalised draft 2020-12 schema, warnings)``; never mutates ``schema``.

    ``root_object`` applies the rules for a tool's *input* schema, whose instances are always
    argument objects: a missing root ``type`` becomes ``"object"`` (unless a ``$ref`` or a
    combinator at the root already gives the shape), ``None`` or ``true`` become
    ``{"type": "object"}``. With ``root_object=False`` the root is treated like any other schema
    (``true`` becomes ``{}``, ``false`` becomes ``{"not": {}}``, which mean the same).

    Raises :class:`~agent_runtime.errors.SchemaError` for a root that is not a schema at all
    (a number, a list, a string).
    """
    warnings: list[str] = []
    if schema is None and root_object:
        warnings.append("(root): no schema given; using {'type': 'object'}")
        return {"type": "object"}, warnings
    if isinstance(schema, bool):
        if root_object and schema:
            warnings.append("(root): schema 'true' replaced by {'type': 'object'}")
            return {"type": "object"}, warnings
        return ({} if schema else {"not": {}}), warnings
    if not isinstance(schema, dict):
        raise SchemaError(
            f"a JSON Schema must be an object or a boolean, got {type(schema).__name__}: "
            f"{_short(schema)}"
        )
    out = copy.deepcopy(schema)
    walker = _Walker(warnings, legacy=_is_legacy(out))
    walker.walk(out, "")
    if root_object:
        _fix_root(out, warnings)
    if walker.defaults:
        _drop_bad_defaults(out, walker.defaults, warnings)
    return out, warnings


def _is_legacy(schema: dict[str, Any]) -> bool:
    """True when ``$schema`` names a draft before 2020-12 (list-form ``items`` is then standard)."""
    declared = schema.get("$schema")
    return isinstance(declared, str) and any(m in declared for m in _LEGACY_DRAFT_MARKERS)


def _short(value: Any, limit: int = 60) -> str:
    text = repr(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _escape(token: str) -> str:
    return token.replace("~", "~0").replace("/", "~1")


class _Walker:
    """Rewrites one schema tree in place, recording a warning for each change."""

    def __init__(self, warnings: list[str], *, legacy: bool) -> None:
        self.warnings = warnings
        self.legacy = legacy
        # (pointer, schema dict) of every schema that carries a "default", checked afterwards.
        self.defaults: list[tuple[str, dict[str, Any]]] = []
        # Depth of nested "$id" resources; defaults under one are not checked (their refs
        # resolve against another base URI).
        self._id_depth = 0

    def warn(self, pointer: str, text: str) -> None:
        self.warnings.append(f"{_where(pointer)}: {text}")

    def subschema(self, value: Any, pointer: str) -> Any:
        """Normalise a value found where a subschema must be; return what replaces it."""
        if isinstance(value, bool):
            return value
        if isinstance(value, dict):
            self.walk(value, pointer)
            return value
        if isinstance(value, str) and (value in _STANDARD_TYPES or value.lower() in _TYPE_ALIASES):
            replacement: dict[str, Any] = {"type": value}
            self.warn(
                pointer, f"type name {value!r} given instead of a schema; wrapped as a schema"
            )
            self.walk(replacement, pointer)
            return replacement
        self.warn(pointer, f"{_short(value)} is not a schema; replaced by {{}} (accepts anything)")
        return {}

    def walk(self, node: dict[str, Any], pointer: str) -> None:
        nested_id = bool(pointer) and "$id" in node
        self._id_depth += nested_id
        try:
            self._walk(node, pointer)
        finally:
            self._id_depth -= nested_id

    def _walk(self, node: dict[str, Any], pointer: str) -> None:
        if "type" in node:
            self._fix_type(node, pointer)
        if "nullable" in node and isinstance(node["nullable"], bool):
            self._fix_nullable(node, pointer)
        if "required" in node:
            self._fix_required_keyword(node, pointer)
        if "properties" in node:
            self._fix_properties(node, pointer)
        if "items" in node and isinstance(node["items"], list) and not self.legacy:
            self._fix_items_list(node, pointer)
        if "pattern" in node and isinstance(node["pattern"], str):
            self._check_pattern(node, pointer)

        for key in SUBSCHEMA_ONE:
            if key in node:
                value = node[key]
                sub = f"{pointer}/{key}"
                if isinstance(value, list) and key in ("items", "additionalItems"):
                    node[key] = [self.subschema(v, f"{sub}/{i}") for i, v in enumerate(value)]
                else:
                    node[key] = self.subschema(value, sub)
        for key in SUBSCHEMA_LIST:
            if key in node:
                value = node[key]
                if isinstance(value, list) and not value:
                    # Not a valid schema (minItems 1); an empty list was never meant to reject
                    # everything, so it is dropped.
                    self.warn(f"{pointer}/{key}", f"empty {key} removed")
                    del node[key]
                elif isinstance(value, list):
                    sub = f"{pointer}/{key}"
                    node[key] = [self.subschema(v, f"{sub}/{i}") for i, v in enumerate(value)]
                else:
                    self.warn(f"{pointer}/{key}", f"{key} must be a list of schemas; removed")
                    del node[key]
        for key in SUBSCHEMA_MAP:
            if key in node:
                self._walk_map(node, key, pointer)
        if "dependencies" in node and isinstance(node["dependencies"], dict):
            deps = node["dependencies"]
            for name, value in list(deps.items()):
                if not isinstance(value, list):
                    deps[name] = self.subschema(value, f"{pointer}/dependencies/{_escape(name)}")
        if "patternProperties" in node and isinstance(node["patternProperties"], dict):
            self._check_pattern_keys(node, pointer)
        if "default" in node and not self._id_depth:
            self.defaults.append((pointer, node))

    def _walk_map(self, node: dict[str, Any], key: str, pointer: str) -> None:
        value = node[key]
        if not isinstance(value, dict):
            self.warn(f"{pointer}/{key}", f"{key} must be an object of schemas; removed")
            del node[key]
            return
        for name, sub in list(value.items()):
            value[name] = self.subschema(sub, f"{pointer}/{key}/{_escape(name)}")

    # ------------------------------------------------------------------ individual rewrites

    def _fix_type(self, node: dict[str, Any], pointer: str) -> None:
        value = node["type"]
        if isinstance(value, str):
            if value in _STANDARD_TYPES:
                return
            mapped, known = _map_type(value)
            if mapped is None:
                del node["type"]
                what = "means any type" if known else "is not a JSON Schema type"
                self.warn(f"{pointer}/type", f"type {value!r} {what}; type constraint removed")
            else:
                node["type"] = mapped
                self.warn(f"{pointer}/type", f"type {value!r} replaced by {mapped!r}")
            return
        if isinstance(value, list):
            standard = all(isinstance(v, str) and v in _STANDARD_TYPES for v in value)
            if value and standard and len(set(value)) == len(value):
                return
            names: list[str] = []
            for item in value:
                mapped, known = _map_type(item) if isinstance(item, str) else (None, False)
                if mapped is None and known:  # "any" inside a union: the union accepts anything
                    del node["type"]
                    self.warn(f"{pointer}/type", f"type {value!r} contains 'any'; type removed")
                    return
                if mapped is not None and mapped not in names:
                    names.append(mapped)
            if names:
                node["type"] = names
                self.warn(f"{pointer}/type", f"type {value!r} replaced by {names!r}")
            else:
                del node["type"]
                self.warn(f"{pointer}/type", f"type {value!r} has no JSON Schema type; removed")
            return
        del node["type"]
        self.warn(f"{pointer}/type", f"type {_short(value)} is not a type name; removed")

    def _fix_nullable(self, node: dict[str, Any], pointer: str) -> None:
        # OpenAPI 3.0's way of saying "or null"; in 2020-12 it is an ignored annotation, so a
        # model sending null for such a field would be wrongly rejected.
        nullable = node.pop("nullable")
        kind = node.get("type")
        if nullable and isinstance(kind, str) and kind != "null":
            node["type"] = [kind, "null"]
            self.warn(f"{pointer}/nullable", f"nullable: true folded into type {node['type']!r}")
        elif nullable and isinstance(kind, list) and "null" not in kind:
            node["type"] = [*kind, "null"]
            self.warn(f"{pointer}/nullable", f"nullable: true folded into type {node['type']!r}")
        else:
            self.warn(f"{pointer}/nullable", f"nullable: {str(nullable).lower()} removed")

    def _fix_required_keyword(self, node: dict[str, Any], pointer: str) -> None:
        value = node["required"]
        if isinstance(value, list):
            names = [v for v in value if isinstance(v, str)]
            unique = list(dict.fromkeys(names))
            if unique != value:
                node["required"] = unique
                self.warn(f"{pointer}/required", f"required {_short(value)} cleaned to {unique!r}")
            return
        if isinstance(value, str):
            node["required"] = [value]
            self.warn(f"{pointer}/required", f"required {value!r} given as a string; made a list")
            return
        # A boolean here is draft-3 style on a schema that is not a property (handled by the
        # parent's properties) or anything else that is not a list of names.
        del node["required"]
        self.warn(
            f"{pointer}/required", f"required {_short(value)} is not a list of names; removed"
        )

    def _fix_properties(self, node: dict[str, Any], pointer: str) -> None:
        props = node["properties"]
        if isinstance(props, list):
            converted: dict[str, Any] = {}
            for entry in props:
                if isinstance(entry, dict) and isinstance(entry.get("name"), str):
                    body = {k: v for k, v in entry.items() if k != "name"}
                    converted[entry["name"]] = body
                elif isinstance(entry, str):
                    converted[entry] = {}
                else:
                    self.warn(f"{pointer}/properties", f"dropped list entry {_short(entry)}")
            node["properties"] = props = converted
            self.warn(
                f"{pointer}/properties",
                "properties given as a list; converted to an object keyed by name",
            )
        if not isinstance(props, dict):
            return  # _walk_map removes it with a warning
        required = node.get("required")
        for name, sub in props.items():
            if not isinstance(sub, dict):
                continue
            sub_pointer = f"{pointer}/properties/{_escape(name)}"
            if "optional" in sub:
                self._fix_optional(node, name, sub, sub_pointer)
                required = node.get("required")
            flag = sub.get("required")
            raw = flag
            if isinstance(flag, str) and not _names_property(sub, flag):
                # Draft-3 'required: "true"' on a property (a string where a boolean belongs);
                # a string naming one of the property's own properties is a one-name list.
                flag = _flag(flag)
            if isinstance(flag, bool):
                del sub["required"]
                given = _spelled(raw)
                if flag:
                    if not isinstance(required, list):
                        required = []
                    if name not in required:
                        required = [*required, name]
                    node["required"] = required
                    self.warn(
                        f"{sub_pointer}/required",
                        f"draft-3 required: {given} moved into the parent's required list",
                    )
                else:
                    self.warn(f"{sub_pointer}/required", f"draft-3 required: {given} removed")

    def _fix_optional(
        self, node: dict[str, Any], name: str, sub: dict[str, Any], sub_pointer: str
    ) -> None:
        """``optional`` (not a JSON Schema keyword) as catalogues write it: a boolean, or a
        string or number meaning one (``"true"``, ``"True"``, ``"yes"``, ``1``)."""
        raw = sub.pop("optional")
        optional = _flag(raw)
        given = _spelled(raw)
        required = node.get("required")
        if optional is None:
            self.warn(
                f"{sub_pointer}/optional",
                f"non-standard optional: {given} is neither true nor false; removed",
            )
        elif optional and isinstance(required, list) and name in required:
            node["required"] = [r for r in required if r != name]
            self.warn(
                f"{sub_pointer}/optional",
                f"optional: {given}; {name!r} removed from the parent's required list",
            )
        else:
            self.warn(f"{sub_pointer}/optional", f"non-standard optional: {given} removed")

    def _fix_items_list(self, node: dict[str, Any], pointer: str) -> None:
        # Draft 4-2019 tuple form: items: [..] (+ additionalItems) is prefixItems (+ items).
        tuple_items = node.pop("items")
        if "prefixItems" in node:
            self.warn(f"{pointer}/items", "list-form items beside prefixItems; removed")
            return
        node["prefixItems"] = tuple_items
        note = "list-form items renamed prefixItems"
        if "additionalItems" in node:
            node["items"] = node.pop("additionalItems")
            note += "; additionalItems renamed items"
        self.warn(f"{pointer}/items", note)

    def _check_pattern(self, node: dict[str, Any], pointer: str) -> None:
        try:
            compile_pattern(node["pattern"])
        except re.error as exc:
            self.warn(
                f"{pointer}/pattern",
                f"pattern {node['pattern']!r} does not compile ({exc}); removed",
            )
            del node["pattern"]

    def _check_pattern_keys(self, node: dict[str, Any], pointer: str) -> None:
        patterns = node["patternProperties"]
        for key in list(patterns):
            try:
                compile_pattern(key)
            except re.error as exc:
                del patterns[key]
                self.warn(
                    f"{pointer}/patternProperties/{_escape(key)}",
                    f"pattern {key!r} does not compile ({exc}); removed",
                )


_TRUE_WORDS = frozenset({"true", "yes", "y", "1", "on"})
_FALSE_WORDS = frozenset({"false", "no", "n", "0", "off"})


def _flag(value: Any) -> bool | None:
    """A yes/no as catalogues write it: a boolean, ``0``/``1``, or a word such as ``"true"``,
    ``"True"`` or ``"yes"``; ``None`` for anything else."""
    if isinstance(value, bool):
        return value
    if isinstance(value, int) and value in (0, 1):
        return bool(value)
    if isinstance(value, str):
        word = value.strip().lower()
        if word in _TRUE_WORDS:
            return True
        if word in _FALSE_WORDS:
            return False
    return None


def _spelled(value: Any) -> str:
    """How a flag was written, for a warning: ``true``, or ``'yes' (read as true)``."""
    if isinstance(value, bool):
        return str(value).lower()
    flag = _flag(value)
    if flag is None:
        return _short(value)
    return f"{_short(value)} (read as {str(flag).lower()})"


def _names_property(schema: dict[str, Any], name: str) -> bool:
    properties = schema.get("properties")
    return isinstance(properties, (dict, list)) and name in properties


def _map_type(name: str) -> tuple[str | None, bool]:
    """Map a type name to a standard one: ``(standard name or None, whether it was known)``."""
    if name in _STANDARD_TYPES:
        return name, True
    lower = name.lower()
    if lower in _STANDARD_TYPES:
        return lower, True
    if lower in _TYPE_ALIASES:
        return _TYPE_ALIASES[lower], True
    return None, False


_ROOT_SHAPERS = frozenset({"$ref", "allOf", "anyOf", "oneOf"})


def _fix_root(schema: dict[str, Any], warnings: list[str]) -> None:
    """Apply the tool-input rule: the root describes an arguments object.

    A root without ``type`` but with ``$ref`` or a combinator (pydantic's form for recursive
    models) is left alone: its target says what the object is.
    """
    kind = schema.get("type")
    if kind is None and _ROOT_SHAPERS.isdisjoint(schema):
        schema["type"] = "object"
        warnings.append("(root): missing 'type'; set to 'object' (tool arguments are an object)")
    elif (
        kind is not None and kind != "object" and not (isinstance(kind, list) and "object" in kind)
    ):
        warnings.append(
            f"(root): type {kind!r} does not allow an object, but tool arguments are always an "
            "object, so no call can be valid"
        )


def _drop_bad_defaults(
    root: dict[str, Any], found: list[tuple[str, dict[str, Any]]], warnings: list[str]
) -> None:
    """Remove each ``default`` that its own schema rejects.

    A default is an annotation, so dropping one never changes what validates; keeping a broken
    one misleads the model (it copies defaults) and any code that fills them in. The check runs
    in the root's context so ``$ref`` to ``$defs`` resolves; a default that cannot be checked
    (remote refs, nested ``$id``) is kept.
    """
    check = _default_checker(root)
    if check is None:
        return
    for pointer, node in found:
        try:
            ok = check(node, node["default"])
        except Exception:  # unresolvable refs and the like: keep the default
            continue
        if not ok:
            value = node.pop("default")
            warnings.append(
                f"{_where(pointer)}/default: default {_short(value)} does not match its own "
                "schema; removed"
            )


def _default_checker(root: dict[str, Any]) -> Callable[[dict[str, Any], Any], bool] | None:
    from jsonschema.validators import validator_for
    from referencing import Registry

    from .keywords import extended  # the keywords as the check evaluates them (exact multipleOf)

    try:
        cls = extended(validator_for(root, default=_draft202012()))
        base = cls(root, registry=Registry())  # empty registry: never fetch over the network
    except Exception:
        return None

    def check(node: dict[str, Any], value: Any) -> bool:
        return bool(base.evolve(schema=node).is_valid(value))

    return check


def _draft202012() -> Any:
    from jsonschema import Draft202012Validator

    return Draft202012Validator
