"""The compiled fast path: answer "valid?" with plain closures instead of jsonschema.

jsonschema spends ~30 us on even a small tool schema (generators, error objects, a validator
per subschema). Most tool schemas use a handful of keywords, so those compile to plain
closures that answer "valid?" exactly as jsonschema does; errors still come from jsonschema.
Any keyword or identifier outside the supported set (dynamic refs, $id, unevaluated*, ...)
means no fast check (:func:`fast_check` returns ``None``), never an approximate one; the
caller then uses jsonschema's ``is_valid``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

from .multiple_of import multiple_of_check
from .patterns import compile_pattern

__all__ = ["fast_check"]


class _NotFast(Exception):
    """The schema uses something the fast path does not evaluate."""


_FAST_DIALECTS = frozenset(
    {
        "https://json-schema.org/draft/2020-12/schema",
        "https://json-schema.org/draft/2020-12/schema#",
    }
)
_FAST_BLOCKERS = frozenset(
    {"$id", "$anchor", "$dynamicAnchor", "$dynamicRef", "$recursiveRef", "$recursiveAnchor"}
)
_FAST_UNSUPPORTED = frozenset(Draft202012Validator.VALIDATORS) - {
    "$ref",
    "additionalProperties",
    "allOf",
    "anyOf",
    "const",
    "dependentRequired",
    "enum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "format",
    "if",
    "items",
    "maxItems",
    "maxLength",
    "maxProperties",
    "maximum",
    "minItems",
    "minLength",
    "minProperties",
    "minimum",
    "multipleOf",
    "not",
    "oneOf",
    "pattern",
    "patternProperties",
    "prefixItems",
    "properties",
    "propertyNames",
    "required",
    "type",
}

_Check = Callable[[Any], bool]

_KEYWORDS = frozenset(Draft202012Validator.VALIDATORS) | {"$ref"}
"""Keywords that constrain an instance; the rest (title, description, $defs ...) do not."""
_PLAIN_OBJECT = frozenset({"type", "properties", "required", "additionalProperties"})
_PLAIN_TYPES: dict[str, type] = {
    "string": str,
    "boolean": bool,
    "object": dict,
    "array": list,
    "null": type(None),
}


def _plain_type(schema: Any) -> type | None:
    """The Python type that decides ``schema`` when ``type`` is its only keyword (and one
    that ``isinstance`` answers exactly: not number or integer, where ``bool`` must fail)."""
    if not isinstance(schema, dict) or _KEYWORDS.intersection(schema) != {"type"}:
        return None
    kind = schema["type"]
    return _PLAIN_TYPES.get(kind) if isinstance(kind, str) else None


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _is_integer(x: Any) -> bool:
    if isinstance(x, bool):
        return False
    return isinstance(x, int) or (isinstance(x, float) and x.is_integer())


def _instance_of(kind: type) -> _Check:
    return lambda x: isinstance(x, kind)


_TYPE_CHECKS: dict[str, _Check] = {
    **{name: _instance_of(kind) for name, kind in _PLAIN_TYPES.items()},
    "number": _is_number,
    "integer": _is_integer,
}


def _json_equal(one: Any, two: Any) -> bool:
    """Equality as JSON Schema means it: ``true`` is not ``1``, ``1`` is ``1.0``."""
    if one is two:
        return True
    if isinstance(one, str) or isinstance(two, str):
        return bool(one == two)
    if isinstance(one, list) and isinstance(two, list):
        return len(one) == len(two) and all(
            _json_equal(a, b) for a, b in zip(one, two, strict=True)
        )
    if isinstance(one, dict) and isinstance(two, dict):
        return len(one) == len(two) and all(
            key in two and _json_equal(value, two[key]) for key, value in one.items()
        )
    if isinstance(one, (list, dict)) or isinstance(two, (list, dict)):
        return False
    if isinstance(one, bool) or isinstance(two, bool):
        return one is two
    return bool(one == two)


def fast_check(schema: dict[str, Any], formats: FormatChecker | None) -> _Check | None:
    """A closure equivalent to the validator's ``is_valid``, or ``None`` if not supported."""
    if not _fast_eligible(schema, top=True):
        return None
    try:
        return _FastCompiler(schema, formats).compile(schema)
    except _NotFast:
        return None


def _fast_eligible(node: Any, *, top: bool = False) -> bool:
    if isinstance(node, dict):
        if _FAST_BLOCKERS.intersection(node):
            return False
        if "$schema" in node and not (top and node["$schema"] in _FAST_DIALECTS):
            return False
        return all(_fast_eligible(v) for v in node.values())
    if isinstance(node, list):
        return all(_fast_eligible(v) for v in node)
    return True


def _all_of(checks: list[_Check]) -> _Check:
    if not checks:
        return lambda x: True
    if len(checks) == 1:
        return checks[0]
    frozen = tuple(checks)

    def check(x: Any) -> bool:
        for c in frozen:
            if not c(x):
                return False
        return True

    return check


class _FastCompiler:
    def __init__(self, root: dict[str, Any], formats: FormatChecker | None) -> None:
        self.root = root
        self.formats = formats
        self.refs: dict[str, _Check] = {}

    def compile(self, schema: Any) -> _Check:
        if schema is True:
            return lambda x: True
        if schema is False:
            return lambda x: False
        if not isinstance(schema, dict):
            raise _NotFast
        if _FAST_UNSUPPORTED.intersection(schema):
            raise _NotFast
        plain = self._plain_object(schema)
        if plain is not None:
            return plain
        checks: list[_Check] = []
        if "type" in schema:
            checks.append(self._type(schema["type"]))
        if "const" in schema:
            const = schema["const"]
            checks.append(lambda x: _json_equal(x, const))
        if "enum" in schema:
            checks.append(self._enum(schema["enum"]))
        checks.extend(self._numeric(schema))
        checks.extend(self._string(schema))
        checks.extend(self._array(schema))
        checks.extend(self._object(schema))
        if "format" in schema and self.formats is not None:
            conforms, fmt = self.formats.conforms, schema["format"]
            checks.append(lambda x: conforms(x, fmt))
        for key in ("allOf", "anyOf", "oneOf"):
            if key in schema:
                checks.append(self._combinator(key, schema[key]))
        if "not" in schema:
            negated = self.compile(schema["not"])
            checks.append(lambda x: not negated(x))
        if "if" in schema:
            checks.append(self._conditional(schema))
        if "$ref" in schema:
            checks.append(self._ref(schema["$ref"]))
        return _all_of(checks)

    def _plain_object(self, schema: dict[str, Any]) -> _Check | None:
        """One closure for the usual tool schema: an object with typed properties.

        Applies when the only keywords are ``type: object``, ``properties``, ``required`` and a
        boolean ``additionalProperties``; a property whose only keyword is a string, boolean,
        object, array or null ``type`` is checked inline. The general path would chain a
        closure per keyword and per property, which costs more than the checks themselves.
        """
        keywords = _KEYWORDS.intersection(schema)
        if not keywords <= _PLAIN_OBJECT or schema.get("type", "object") != "object":
            return None
        closed = schema.get("additionalProperties", True)
        properties = schema.get("properties", {})
        required = schema.get("required", [])
        if not (
            isinstance(closed, bool) and isinstance(properties, dict) and isinstance(required, list)
        ):
            return None
        required_names = tuple(required)
        typed: list[tuple[str, type]] = []
        checked: list[tuple[str, _Check]] = []
        for name, sub in properties.items():
            simple = _plain_type(sub)
            if simple is not None:
                typed.append((name, simple))
            else:
                checked.append((name, self.compile(sub)))
        typed_props, checked_props = tuple(typed), tuple(checked)
        known = frozenset(properties) if closed is False else None
        non_object_ok = "type" not in schema

        def plain_object(x: Any) -> bool:
            if not isinstance(x, dict):
                return non_object_ok
            for name in required_names:
                if name not in x:
                    return False
            for name, kind in typed_props:
                if name in x and not isinstance(x[name], kind):
                    return False
            for name, check in checked_props:
                if name in x and not check(x[name]):
                    return False
            return known is None or x.keys() <= known

        return plain_object

    def _type(self, kind: Any) -> _Check:
        names = kind if isinstance(kind, list) else [kind]
        try:
            tests = [_TYPE_CHECKS[name] for name in names]
        except (KeyError, TypeError):
            raise _NotFast from None
        if len(tests) == 1:
            return tests[0]
        return lambda x: any(t(x) for t in tests)

    def _enum(self, values: Any) -> _Check:
        if not isinstance(values, list):
            raise _NotFast
        if values and all(isinstance(v, str) for v in values):
            members = frozenset(values)
            return lambda x: isinstance(x, str) and x in members
        return lambda x: any(_json_equal(v, x) for v in values)

    def _numeric(self, schema: dict[str, Any]) -> list[_Check]:
        checks: list[_Check] = []
        if "minimum" in schema:
            low = schema["minimum"]
            checks.append(lambda x: not _is_number(x) or x >= low)
        if "maximum" in schema:
            high = schema["maximum"]
            checks.append(lambda x: not _is_number(x) or x <= high)
        if "exclusiveMinimum" in schema:
            xlow = schema["exclusiveMinimum"]
            checks.append(lambda x: not _is_number(x) or x > xlow)
        if "exclusiveMaximum" in schema:
            xhigh = schema["exclusiveMaximum"]
            checks.append(lambda x: not _is_number(x) or x < xhigh)
        if "multipleOf" in schema:
            multiple = multiple_of_check(schema["multipleOf"])
            checks.append(lambda x: not _is_number(x) or multiple(x))
        return checks

    def _string(self, schema: dict[str, Any]) -> list[_Check]:
        checks: list[_Check] = []
        if "minLength" in schema:
            shortest = schema["minLength"]
            checks.append(lambda x: not isinstance(x, str) or len(x) >= shortest)
        if "maxLength" in schema:
            longest = schema["maxLength"]
            checks.append(lambda x: not isinstance(x, str) or len(x) <= longest)
        if "pattern" in schema:
            search = compile_pattern(schema["pattern"]).search
            checks.append(lambda x: not isinstance(x, str) or search(x) is not None)
        return checks

    def _array(self, schema: dict[str, Any]) -> list[_Check]:
        checks: list[_Check] = []
        if "minItems" in schema:
            fewest = schema["minItems"]
            checks.append(lambda x: not isinstance(x, list) or len(x) >= fewest)
        if "maxItems" in schema:
            most = schema["maxItems"]
            checks.append(lambda x: not isinstance(x, list) or len(x) <= most)
        prefix = [self.compile(s) for s in schema.get("prefixItems", [])]
        if prefix:

            def prefix_items(x: Any) -> bool:
                if not isinstance(x, list):
                    return True
                return all(c(item) for c, item in zip(prefix, x, strict=False))

            checks.append(prefix_items)
        if "items" in schema:
            start = len(prefix)
            item_check = self.compile(schema["items"])

            def items(x: Any) -> bool:
                if not isinstance(x, list):
                    return True
                for item in x[start:] if start else x:
                    if not item_check(item):
                        return False
                return True

            checks.append(items)
        return checks

    def _object(self, schema: dict[str, Any]) -> list[_Check]:
        checks: list[_Check] = []
        if "required" in schema:
            required = tuple(schema["required"])

            def has_required(x: Any) -> bool:
                if not isinstance(x, dict):
                    return True
                for name in required:
                    if name not in x:
                        return False
                return True

            checks.append(has_required)
        if "minProperties" in schema:
            fewest = schema["minProperties"]
            checks.append(lambda x: not isinstance(x, dict) or len(x) >= fewest)
        if "maxProperties" in schema:
            most = schema["maxProperties"]
            checks.append(lambda x: not isinstance(x, dict) or len(x) <= most)
        properties = {k: self.compile(v) for k, v in schema.get("properties", {}).items()}
        if properties:
            pairs = tuple(properties.items())

            def props(x: Any) -> bool:
                if not isinstance(x, dict):
                    return True
                for name, check in pairs:
                    if name in x and not check(x[name]):
                        return False
                return True

            checks.append(props)
        patterns = [
            (compile_pattern(p).search, self.compile(s))
            for p, s in schema.get("patternProperties", {}).items()
        ]
        if patterns:

            def pattern_props(x: Any) -> bool:
                if not isinstance(x, dict):
                    return True
                for search, check in patterns:
                    for name, value in x.items():
                        if search(name) is not None and not check(value):
                            return False
                return True

            checks.append(pattern_props)
        if "additionalProperties" in schema:
            checks.append(self._additional(schema, properties, [p[0] for p in patterns]))
        if "dependentRequired" in schema:
            dependencies = [(k, tuple(v)) for k, v in schema["dependentRequired"].items()]

            def dependent(x: Any) -> bool:
                if not isinstance(x, dict):
                    return True
                return all(all(d in x for d in deps) for k, deps in dependencies if k in x)

            checks.append(dependent)
        if "propertyNames" in schema:
            name_check = self.compile(schema["propertyNames"])
            checks.append(lambda x: not isinstance(x, dict) or all(name_check(k) for k in x))
        return checks

    def _additional(
        self, schema: dict[str, Any], properties: dict[str, _Check], searches: list[Any]
    ) -> _Check:
        extra = schema["additionalProperties"]
        if extra is True:
            return lambda x: True
        known = frozenset(properties)
        if extra is False and not searches:
            return lambda x: not isinstance(x, dict) or x.keys() <= known
        extra_check = self.compile(extra)

        def additional(x: Any) -> bool:
            if not isinstance(x, dict):
                return True
            for name, value in x.items():
                if name in known or any(s(name) is not None for s in searches):
                    continue
                if not extra_check(value):
                    return False
            return True

        return additional

    def _combinator(self, key: str, branches: Any) -> _Check:
        if not isinstance(branches, list):
            raise _NotFast
        compiled = [self.compile(b) for b in branches]
        if key == "allOf":
            return _all_of(compiled)
        if key == "anyOf":
            return lambda x: any(c(x) for c in compiled)

        def one_of(x: Any) -> bool:
            matched = 0
            for c in compiled:
                if c(x):
                    matched += 1
                    if matched > 1:
                        return False
            return matched == 1

        return one_of

    def _conditional(self, schema: dict[str, Any]) -> _Check:
        condition = self.compile(schema["if"])
        then = self.compile(schema["then"]) if "then" in schema else None
        otherwise = self.compile(schema["else"]) if "else" in schema else None

        def conditional(x: Any) -> bool:
            if condition(x):
                return then is None or then(x)
            return otherwise is None or otherwise(x)

        return conditional

    def _ref(self, ref: Any) -> _Check:
        if not isinstance(ref, str) or not ref.startswith("#"):
            raise _NotFast
        found = self.refs.get(ref)
        if found is not None:
            return found
        cell: list[_Check] = []
        self.refs[ref] = lambda x: cell[0](x)  # recursion: filled in below
        cell.append(self.compile(self._resolve(ref)))
        return self.refs[ref]

    def _resolve(self, ref: str) -> Any:
        from urllib.parse import unquote

        node: Any = self.root
        fragment = unquote(ref[1:])
        if not fragment:
            return node
        if not fragment.startswith("/"):
            raise _NotFast
        for raw in fragment[1:].split("/"):
            token = raw.replace("~1", "/").replace("~0", "~")
            if isinstance(node, dict) and token in node:
                node = node[token]
            elif isinstance(node, list) and token.isdigit() and int(token) < len(node):
                node = node[int(token)]
            else:
                raise _NotFast
        return node
