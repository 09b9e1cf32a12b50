"""The official JSON Schema Test Suite (draft 2020-12, required cases) through ``compile_schema``.

Every schema goes through normalisation first, exactly as a tool's schema does, so a pass here
proves both that validation follows the spec and that normalisation never changes what a standard
schema means. The suite is vendored in ``tests/data/json-schema-test-suite`` (draft 2020-12 and
the remotes its ``$ref`` cases load, with the suite's LICENSE), so a clone runs every case; a
missing suite fails, it does not skip.
"""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path
from typing import Any

import pytest
from referencing import Registry, Resource
from referencing.jsonschema import DRAFT202012

from agent_runtime.schema import compile_schema, normalize_schema

_SUITE = Path(__file__).resolve().parent / "data" / "json-schema-test-suite"

# Format files whose format this runtime asserts; the rest of optional/format is out of scope.
_CLAIMED_FORMATS = (
    "date",
    "date-time",
    "time",
    "email",
    "hostname",
    "ipv4",
    "ipv6",
    "uri",
    "uri-reference",
    "uuid",
    "regex",
)

# Cases known to disagree with the suite, keyed by test id, with the reason. jsonschema and the
# runtime's own additions (vocabularies, ECMA \p escapes, stricter formats) pass all required
# cases, so this is empty unless the optional ``regex`` module is missing.
_EXPECTED_FAILURES: dict[str, str] = {}
if importlib.util.find_spec("regex") is None:  # pragma: no cover - regex ships with transformers
    for _id in (
        "pattern/pattern with Unicode property escape requires unicode mode/ASCII letters match",
        "pattern/pattern with Unicode property escape requires unicode mode/Non-ASCII letters match",
        "pattern/pattern with Unicode property escape requires unicode mode/Digits do not match",
        "patternProperties/patternProperties with Unicode property escape/"
        "Unicode letter property name matches",
        "patternProperties/patternProperties with Unicode property escape/"
        "Non-letter property name does not match pattern",
    ):
        _EXPECTED_FAILURES[_id] = "Python's re lacks \\p{...}; install the regex module"


def _draft_dir() -> Path:
    for candidate in (_SUITE / "tests" / "draft2020-12", _SUITE / "draft2020-12"):
        if candidate.is_dir():
            return candidate
    return _SUITE / "tests" / "draft2020-12"


def _registry() -> Registry:
    """The suite's remotes, served as http://localhost:1234/<path> without any network."""
    remotes = _SUITE / "remotes"
    resources = []
    for path in sorted(remotes.rglob("*.json")):
        uri = "http://localhost:1234/" + path.relative_to(remotes).as_posix()
        contents = json.loads(path.read_text(encoding="utf-8"))
        resources.append((uri, Resource.from_contents(contents, default_specification=DRAFT202012)))
    return Registry().with_resources(resources)


def _cases(folder: Path, names: tuple[str, ...] | None = None) -> list[Any]:
    params = []
    for path in sorted(folder.glob("*.json")):
        if names is not None and path.stem not in names:
            continue
        for group in json.loads(path.read_text(encoding="utf-8")):
            for test in group["tests"]:
                test_id = f"{path.stem}/{group['description']}/{test['description']}"
                marks = []
                if test_id in _EXPECTED_FAILURES:
                    marks.append(pytest.mark.xfail(reason=_EXPECTED_FAILURES[test_id], strict=True))
                params.append(
                    pytest.param(
                        group["schema"], test["data"], test["valid"], id=test_id, marks=marks
                    )
                )
    return params


_REQUIRED = _cases(_draft_dir()) if _draft_dir().is_dir() else []
_FORMATS = (
    _cases(_draft_dir() / "optional" / "format", _CLAIMED_FORMATS) if _draft_dir().is_dir() else []
)


@pytest.fixture(scope="module")
def registry() -> Registry:
    return _registry()


def test_suite_is_present_and_complete() -> None:
    assert _draft_dir().is_dir(), f"JSON Schema Test Suite not found at {_SUITE}"
    assert (_SUITE / "remotes").is_dir(), f"suite remotes missing at {_SUITE / 'remotes'}"
    assert len(_REQUIRED) > 1200, f"only {len(_REQUIRED)} required cases found"
    assert len(_FORMATS) > 300, f"only {len(_FORMATS)} format cases found"
    assert len(_EXPECTED_FAILURES) <= 5


def _check(schema: Any, data: Any, valid: bool, registry: Registry, *, formats: bool) -> None:
    compiled = compile_schema(schema, registry, root_object=False, check_formats=formats)
    assert compiled.is_valid(data) is valid
    violations = compiled.violations(data)
    assert (violations == []) is valid, violations
    for violation in violations:
        assert violation.message and violation.keyword
    if compiled.fast_path:
        # The compiled fast path and jsonschema must agree on every case.
        slow = compile_schema(
            schema, registry, root_object=False, check_formats=formats, fast_path=False
        )
        assert not slow.fast_path
        assert slow.is_valid(data) is valid


@pytest.mark.parametrize(("schema", "data", "valid"), _REQUIRED)
def test_required_suite_case(schema: Any, data: Any, valid: bool, registry: Registry) -> None:
    # Format is an annotation in the required suite (format-annotation vocabulary).
    _check(schema, data, valid, registry, formats=False)


@pytest.mark.parametrize(("schema", "data", "valid"), _FORMATS)
def test_asserted_format_case(schema: Any, data: Any, valid: bool, registry: Registry) -> None:
    _check(schema, data, valid, registry, formats=True)


def test_fast_path_covers_most_suite_schemas(registry: Registry) -> None:
    """The suite exercises the fast path broadly, so the agreement checks above mean something."""
    groups = [
        group
        for path in sorted(_draft_dir().glob("*.json"))
        for group in json.loads(path.read_text(encoding="utf-8"))
    ]
    fast = sum(
        compile_schema(g["schema"], registry, root_object=False, check_formats=False).fast_path
        for g in groups
    )
    assert fast > len(groups) // 2, (fast, len(groups))


def test_normalisation_leaves_suite_schemas_unchanged() -> None:
    """Standard schemas come out identical; the only rewrite is dropping defaults that break
    their own schema (an annotation, so meaning is kept)."""
    changed = []
    for path in sorted(_draft_dir().glob("*.json")):
        for group in json.loads(path.read_text(encoding="utf-8")):
            normalised, warnings = normalize_schema(group["schema"], root_object=False)
            if normalised != group["schema"] and group["schema"] not in (True, False):
                changed.append((path.stem, group["description"], warnings))
    assert [c[:2] for c in changed] == [
        ("default", "invalid type for default"),
        ("default", "invalid string value for default"),
        ("default", "the default keyword does not do anything if the property is missing"),
    ]
    assert all(
        len(warnings) == 1 and "does not match its own schema" in warnings[0]
        for *_, warnings in changed
    )
