"""Check a model's tool arguments against the tool's JSON Schema, and say precisely what is wrong.

A model fixes a bad call only when told exactly where and how it went wrong, so a failed check
yields *every* violation, each at the leaf where it happened: the JSON pointer of the bad value,
the failing keyword, what was expected and what was given (truncated). For ``anyOf``/``oneOf``
the closest alternative's own errors are reported instead of an opaque "not valid under any".

Schemas are normalised (:mod:`.normalize`) and compiled once per distinct schema. The valid path
is one ``is_valid`` call, answered for common schemas by plain compiled closures (:mod:`.fast`,
an order of magnitude quicker than jsonschema and held to give the same verdicts); jsonschema
explains the errors, which are only computed on failure. ``format`` is asserted with the
checkers of :mod:`.formats`; the keywords the runtime evaluates its own way (ECMA patterns,
exact decimal ``multipleOf``) are in :mod:`.keywords`, the wording of each error in
:mod:`.wording`. Checking never raises, whatever the instance: a check that fails to answer is
"not valid", with a violation that says why. Remote ``$ref`` targets are never fetched over the
network: they resolve through the ``referencing.Registry`` a caller passes in, or not at all.

:meth:`CompiledSchema.check` is the one check a tool call gets: valid, valid once the ``null``
sent for optional arguments is left out, or every violation.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, NamedTuple

from jsonschema import Draft202012Validator
from jsonschema.exceptions import ValidationError
from jsonschema.protocols import Validator
from jsonschema.validators import validator_for
from jsonschema_specifications import REGISTRY as _SPECIFICATIONS
from referencing import Registry
from referencing.exceptions import Unresolvable
from referencing.jsonschema import DRAFT202012, specification_with

from ..errors import SchemaError
from .fast import fast_check
from .formats import FORMAT_CHECKER as FORMAT_CHECKER
from .keywords import extended, for_custom_dialect
from .normalize import SUBSCHEMA_LIST, SUBSCHEMA_MAP, SUBSCHEMA_ONE, normalize_schema
from .patterns import compile_pattern
from .wording import describe as _describe
from .wording import dump as _dump
from .wording import expectation as _expectation
from .wording import given as _given
from .wording import pointer as _pointer
from .wording import truncate as _truncate
from .wording import where as _where

__all__ = [
    "Checked",
    "CompiledSchema",
    "Violation",
    "compile_schema",
    "format_violations",
]

_CACHE_LIMIT = 4096


@dataclass(frozen=True)
class Violation:
    """One way the instance breaks the schema, at the leaf where it happens."""

    pointer: str
    """JSON pointer of the bad value in the instance (``""`` for the root)."""
    keyword: str
    """The failing keyword: ``type``, ``required``, ``maximum``, ``additionalProperties`` ..."""
    expected: str
    """What was expected, in words: ``integer <= 10``."""
    given: str
    """The given value as JSON, truncated; ``(missing)`` for a missing property."""
    message: str
    """One line the model can act on."""


class Checked(NamedTuple):
    """The verdict on one tool call's arguments (:meth:`CompiledSchema.check`)."""

    arguments: Any
    """What the tool gets: the arguments as sent, less the ``dropped`` ones."""
    dropped: tuple[str, ...] = ()
    """Optional arguments sent as ``null`` and left out, which made the call valid."""
    violations: tuple[Violation, ...] = ()
    """Every violation of the arguments as sent; empty when the call may run."""


class CompiledSchema:
    """A normalised schema with its validator built once; check instances against it."""

    __slots__ = ("schema", "warnings", "_validator", "_is_valid", "_fast")

    def __init__(
        self,
        schema: dict[str, Any],
        warnings: list[str],
        validator: Validator,
        fast_check: Callable[[Any], bool] | None = None,
    ) -> None:
        self.schema = schema
        self.warnings = warnings
        self._validator = validator
        # The compiled fast check gives the same answer as jsonschema for the keywords it
        # supports (proved against the JSON Schema Test Suite); otherwise use jsonschema.
        self._is_valid = fast_check or validator.is_valid
        self._fast = fast_check is not None

    @property
    def fast_path(self) -> bool:
        """Whether valid instances are checked by the compiled fast path (else jsonschema)."""
        return self._fast

    def is_valid(self, instance: Any) -> bool:
        """Whether ``instance`` is valid; the cheap path, no error objects are built.

        Never raises: a value that cannot be checked (nested too deeply, a schema that cannot
        be evaluated, a keyword implementation that fails on it) is not valid, and
        :meth:`violations` says why.
        """
        try:
            return bool(self._is_valid(instance))
        except Exception:  # noqa: BLE001 - whatever the model sent, the answer is "not valid"
            return False
        except BaseException as exc:
            if _is_panic(exc):
                return False
            raise

    def check(self, arguments: Any) -> Checked:
        """Check a tool call's arguments once: what the tool gets, or every violation.

        ``null`` for an optional argument counts as "not given": models in strict
        structured-output modes send ``null`` for every optional field, so when leaving out
        exactly those makes the call valid, it is valid without them and ``dropped`` names
        them (the tool gets other arguments than the model sent). Otherwise the violations are
        those of the arguments as sent. Never raises: a check that fails is a violation.
        """
        if self.is_valid(arguments):
            return Checked(arguments)
        try:
            if isinstance(arguments, dict):
                required = self.schema.get("required", ())
                cleaned = {k: v for k, v in arguments.items() if v is not None or k in required}
                if len(cleaned) != len(arguments) and self.is_valid(cleaned):
                    return Checked(cleaned, tuple(k for k in arguments if k not in cleaned))
            found = self._violations(arguments)
        except Exception as exc:  # noqa: BLE001 - whatever the model sent, the answer is a verdict
            found = [_unchecked(arguments, exc)]
        return Checked(arguments, (), tuple(found))

    def violations(self, instance: Any) -> list[Violation]:
        """Every violation, leaf level, sorted by pointer; empty when ``instance`` is valid."""
        if self.is_valid(instance):
            return []
        return self._violations(instance)

    def _violations(self, instance: Any) -> list[Violation]:
        """The violations of an instance already found invalid."""
        found: list[Violation] = []
        try:
            for error in self._validator.iter_errors(instance):
                found.extend(self._explain(error))
        except Exception as exc:  # noqa: BLE001 - a check that fails is reported, never raised
            found.append(_unchecked(instance, exc))
        except BaseException as exc:
            if not _is_panic(exc):
                raise
            found.append(_unchecked(instance, RecursionError(str(exc))))
        if not found:  # never say "invalid" without a reason
            found.append(
                _violation(
                    [],
                    "schema",
                    "a value matching the schema",
                    instance,
                    f"the arguments do not match the schema; given {_given(instance)}",
                )
            )
        return _sorted_unique(found)

    def __repr__(self) -> str:
        return f"CompiledSchema({_truncate(_dump(self.schema), 60)})"

    # ------------------------------------------------------------------ explaining errors

    def _explain(self, error: ValidationError) -> list[Violation]:
        keyword = error.validator
        if keyword in ("anyOf", "oneOf"):
            if error.context:
                return self._explain_alternatives(error)
            if keyword == "oneOf":
                return [self._explain_several(error)]
        return _leaf(error)

    def _explain_alternatives(self, error: ValidationError) -> list[Violation]:
        """No alternative matched: report the closest one's errors, or a summary."""
        keyword = str(error.validator)
        branches: list[Any] = list(_value_of(error))
        by_branch: dict[int, list[ValidationError]] = {}
        for sub in error.context or ():
            # A ``false`` branch's error carries no schema path: nothing to say about it.
            index = sub.relative_schema_path[0] if sub.relative_schema_path else None
            if isinstance(index, int):
                by_branch.setdefault(index, []).append(sub)
        pointer = _pointer(error.absolute_path)
        depth = len(error.absolute_path)
        ranked: list[tuple[tuple[bool, int, int], int, list[Violation]]] = []
        for index, errors in by_branch.items():
            leaves = [v for e in errors for v in self._explain(e)]
            shallow = any(
                len(e.absolute_path) == depth and e.validator in _SHAPE_KEYWORDS for e in errors
            )
            ranked.append(((shallow, len(leaves), index), index, leaves))
        ranked.sort(key=lambda item: item[0])
        n = len(branches)
        if ranked and not ranked[0][0][0]:
            # The closest alternative has the right shape; its own errors are what to fix.
            _, index, leaves = ranked[0]
            note = f" (closest of the {n} {keyword} alternatives: #{index})"
            return [
                Violation(v.pointer, v.keyword, v.expected, v.given, v.message + note)
                for v in leaves
            ]
        expected = " | ".join(_describe(b) for b in branches)
        given = _given(error.instance)
        return [
            Violation(
                pointer=pointer,
                keyword=keyword,
                expected=_truncate(expected, 160),
                given=given,
                message=f"{_where(pointer)}: matched none of the {n} {keyword} alternatives "
                f"(expected {_truncate(expected, 160)}), given {given}",
            )
        ]

    def _explain_several(self, error: ValidationError) -> Violation:
        """``oneOf`` matched more than one alternative: say which."""
        branches: list[Any] = list(_value_of(error))
        instance: Any = error.instance
        matching: list[int] = []
        for index, branch in enumerate(branches):
            try:
                if self._validator.evolve(schema=branch).is_valid(instance):
                    matching.append(index)
            except Exception:  # a branch we cannot evaluate alone (relative refs): skip it
                continue
        pointer = _pointer(error.absolute_path)
        given = _given(error.instance)
        which = ", ".join(f"#{i}" for i in matching) if len(matching) > 1 else "several"
        return Violation(
            pointer=pointer,
            keyword="oneOf",
            expected=f"exactly one of the {len(branches)} oneOf alternatives",
            given=given,
            message=f"{_where(pointer)}: matches {which} of the {len(branches)} oneOf "
            f"alternatives but must match exactly one; given {given}",
        )


# Keywords that fail when the value has the wrong shape altogether (not a detail inside it).
_SHAPE_KEYWORDS = frozenset({"type", "const", "enum", None, "not", "anyOf", "oneOf"})


def _value_of(error: ValidationError) -> Any:
    return error.validator_value


def _leaf(error: ValidationError) -> list[Violation]:
    """Translate one leaf ``ValidationError`` into violations (several for ``required``)."""
    keyword: Any = error.validator
    path = list(error.absolute_path)
    instance: Any = error.instance
    schema: dict[str, Any] = error.schema if isinstance(error.schema, dict) else {}
    value = _value_of(error)

    if keyword == "required" and isinstance(instance, dict) and isinstance(value, list):
        return [
            _missing(path, name, "required", f"property {name!r} (required)", "")
            for name in value
            if isinstance(name, str) and name not in instance
        ]
    if keyword == "dependentRequired" and isinstance(instance, dict) and isinstance(value, dict):
        out = []
        for trigger, names in value.items():
            if trigger in instance:
                for name in names:
                    if name not in instance:
                        why = f", required when {trigger!r} is present"
                        out.append(
                            _missing(path, name, "dependentRequired", f"property {name!r}", why)
                        )
        return out
    if keyword == "additionalProperties" and value is False and isinstance(instance, dict):
        allowed = sorted(schema.get("properties", {}) or {})
        patterns = list((schema.get("patternProperties") or {}).keys())
        extras = [
            k
            for k in instance
            if k not in allowed and not any(compile_pattern(p).search(k) for p in patterns)
        ]
        allowed_text = ", ".join(allowed) if allowed else "none"
        if patterns:
            allowed_text += "; or names matching " + ", ".join(repr(p) for p in patterns)
        return [
            _violation(
                [*path, name],
                "additionalProperties",
                f"no property {name!r} (allowed: {allowed_text})",
                instance[name],
                f"unexpected property {name!r} (given {_given(instance[name])}); "
                f"allowed properties: {allowed_text}",
            )
            for name in extras
        ]

    given = instance
    expected, text = _expectation(keyword, value, schema, instance, error.message)
    if "propertyNames" in error.absolute_schema_path:
        text = f"property name {_given(instance)} is invalid: {text}"
    return [_violation(path, keyword if keyword else "false", expected, given, text)]


def _missing(path: list[Any], name: str, keyword: str, expected: str, why: str) -> Violation:
    pointer = _pointer([*path, name])
    return Violation(
        pointer=pointer,
        keyword=keyword,
        expected=expected,
        given="(missing)",
        message=f"{pointer}: missing required property {name!r}{why}",
    )


def _violation(path: list[Any], keyword: str, expected: str, value: Any, text: str) -> Violation:
    pointer = _pointer(path)
    return Violation(pointer, keyword, expected, _given(value), f"{_where(pointer)}: {text}")


def _is_panic(exc: BaseException) -> bool:
    """A Rust extension's panic: pyo3's ``PanicException`` derives from ``BaseException``.

    ``referencing`` keeps its registry in ``rpds`` maps, whose lookups call back into Python;
    when a schema that refers to itself without end exhausts the stack inside such a callback,
    the ``RecursionError`` surfaces as a panic instead.
    """
    return type(exc).__name__ == "PanicException"


_DEEP = 64
"""Nesting beyond which a failed check is blamed on the arguments' depth, not the schema."""


def _unchecked(instance: Any, exc: Exception) -> Violation:
    """The violation for a check that raised instead of answering: whose fault, in words."""
    if isinstance(exc, RecursionError) and _depth(instance, _DEEP) >= _DEEP:
        return _violation(
            [],
            "depth",
            "arguments nested less deeply",
            instance,
            "the arguments are nested too deeply to check; send a flatter value",
        )
    if isinstance(exc, (RecursionError, Unresolvable)):
        reason = (
            "refers to itself without end"
            if isinstance(exc, RecursionError)
            else f"has a reference that cannot be resolved ({exc})"
        )
        return _violation(
            [],
            "$ref",
            "a schema that can be evaluated",
            instance,
            f"the tool's schema {reason}; this is the tool's fault, not the arguments'",
        )
    return _violation(
        [],
        "schema",
        "values the schema can check",
        instance,
        f"the arguments could not be checked against the schema ({type(exc).__name__}: "
        f"{_truncate(str(exc), 120)}); send plainer values",
    )


def _depth(value: Any, limit: int) -> int:
    """How deeply ``value`` nests, counted without recursion and up to ``limit``."""
    level, deepest = [value], 0
    while level and deepest < limit:
        deepest += 1
        level = [
            child
            for node in level
            if isinstance(node, (dict, list))
            for child in (node.values() if isinstance(node, dict) else node)
        ]
    return deepest


def _sorted_unique(found: list[Violation]) -> list[Violation]:
    seen: set[tuple[str, str, str]] = set()
    unique = []
    for v in found:
        key = (v.pointer, v.keyword, v.expected)
        if key not in seen:
            seen.add(key)
            unique.append(v)
    unique.sort(key=lambda v: (_pointer_key(v.pointer), v.keyword, v.message))
    return unique


def _pointer_key(pointer: str) -> tuple[tuple[int, int, str], ...]:
    # Natural order: /items/2 before /items/10.
    parts = pointer.split("/")[1:] if pointer else []
    return tuple((0, int(p), "") if p.isdigit() else (1, 0, p) for p in parts)


# ---------------------------------------------------------------------- compiling and caching


_BY_KEY: dict[tuple[str, int, bool, bool, bool], tuple[Registry | None, CompiledSchema]] = {}
_BY_ID: dict[tuple[int, int, bool, bool, bool], tuple[Any, Any, CompiledSchema]] = {}


def compile_schema(
    schema: Mapping[str, Any] | bool,
    registry: Registry | None = None,
    *,
    root_object: bool = True,
    check_formats: bool = True,
    fast_path: bool = True,
) -> CompiledSchema:
    """Normalise and compile ``schema``; the same schema returns the same object.

    ``registry`` resolves ``$ref`` to other documents (nothing is ever fetched over the
    network). ``root_object`` applies the tool-input rules of :func:`normalize_schema`;
    ``check_formats`` asserts ``format`` (the spec's default is annotation only, but a tool
    that says ``"format": "date-time"`` wants one). ``fast_path=False`` answers ``is_valid``
    with jsonschema even where the compiled fast check applies (for cross-checking).

    Raises :class:`~agent_runtime.errors.SchemaError` when the schema is not a schema even
    after normalisation, or refers to something that cannot be resolved.
    """
    reg_id = id(registry) if registry is not None else 0
    options = (root_object, check_formats, fast_path)
    fast_key = (id(schema), reg_id, *options)
    hit = _BY_ID.get(fast_key)
    if hit is not None and hit[0] is schema and hit[1] == schema:
        return hit[2]
    try:
        canonical = json.dumps(schema, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        raise SchemaError(f"schema is not JSON: {exc}") from None
    key = (canonical, reg_id, *options)
    entry = _BY_KEY.get(key)
    if entry is not None and entry[0] is registry:
        compiled = entry[1]
    else:
        compiled = _compile(
            schema,
            registry,
            root_object=root_object,
            check_formats=check_formats,
            fast_path=fast_path,
        )
        if len(_BY_KEY) >= _CACHE_LIMIT:
            _BY_KEY.clear()
        _BY_KEY[key] = (registry, compiled)
    if len(_BY_ID) >= _CACHE_LIMIT:
        _BY_ID.clear()
    # Keep the schema object alive (its id cannot be reused) and a snapshot to detect mutation.
    _BY_ID[fast_key] = (schema, copy.deepcopy(schema), compiled)
    return compiled


def _compile(
    schema: Any,
    registry: Registry | None,
    *,
    root_object: bool,
    check_formats: bool,
    fast_path: bool,
) -> CompiledSchema:
    normalised, warnings = normalize_schema(schema, root_object=root_object)
    combined = _SPECIFICATIONS.combine(registry) if registry is not None else _SPECIFICATIONS
    known = validator_for(normalised, default=None)  # type: ignore[arg-type]
    if known is None and isinstance(normalised.get("$schema"), str):
        cls = for_custom_dialect(normalised["$schema"], combined)
    else:
        cls = extended(known or Draft202012Validator)
    meta_errors = sorted(
        cls(cls.META_SCHEMA, registry=_SPECIFICATIONS).iter_errors(normalised),
        key=lambda e: len(list(e.absolute_path)),
    )
    if meta_errors:
        first = meta_errors[0]
        raise SchemaError(
            f"not a valid JSON Schema at {_where(_pointer(first.absolute_path))}: {first.message}"
        )
    validator = cls(
        normalised,
        registry=combined,
        format_checker=FORMAT_CHECKER if check_formats else None,
    )
    _check_refs(normalised, combined)
    fast = None
    if (
        fast_path
        and known in (None, Draft202012Validator)
        and cls is extended(Draft202012Validator)
    ):
        fast = fast_check(normalised, FORMAT_CHECKER if check_formats else None)
    return CompiledSchema(normalised, warnings, validator, fast)


def _check_refs(schema: dict[str, Any], registry: Registry) -> None:
    """Fail at compile time on a ``$ref`` that cannot resolve, rather than on the first call."""
    dialect = schema.get("$schema")
    specification = (
        specification_with(dialect, default=DRAFT202012)
        if isinstance(dialect, str)
        else DRAFT202012
    )
    resource = specification.create_resource(schema)
    resolver = registry.resolver_with_root(resource)
    stack: list[tuple[Any, Any, str]] = [(schema, resolver, "")]
    while stack:
        node, current, pointer = stack.pop()
        if not isinstance(node, dict):
            continue
        if pointer:
            current = current.in_subresource(specification.create_resource(node))
        ref = node.get("$ref")
        if isinstance(ref, str):
            try:
                current.lookup(ref)
            except Unresolvable as exc:
                raise SchemaError(
                    f"$ref {ref!r} at {_where(pointer)} cannot be resolved ({exc}); remote "
                    "references are never fetched, pass a referencing.Registry that holds them"
                ) from None
        for key, value in node.items():
            if key in SUBSCHEMA_ONE:
                stack.append((value, current, f"{pointer}/{key}"))
            elif key in SUBSCHEMA_LIST and isinstance(value, list):
                stack.extend((v, current, f"{pointer}/{key}/{i}") for i, v in enumerate(value))
            elif key in SUBSCHEMA_MAP and isinstance(value, dict):
                stack.extend((v, current, f"{pointer}/{key}/{k}") for k, v in value.items())


def format_violations(tool_name: str, violations: Sequence[Violation], limit: int = 20) -> str:
    """A message for the model listing every violation (up to ``limit``), one per line."""
    count = len(violations)
    if count == 0:
        return f"Arguments for tool {tool_name!r} are valid."
    noun = "problem" if count == 1 else "problems"
    lines = [f"Invalid arguments for tool {tool_name!r} ({count} {noun}):"]
    for v in violations[:limit]:
        lines.append(f"- {v.message} [{v.keyword}]")
    if count > limit:
        lines.append(f"... and {count - limit} more")
    lines.append(f"Fix every problem listed and call {tool_name!r} again.")
    return "\n".join(lines)
