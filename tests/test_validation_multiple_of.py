"""``multipleOf`` is checked on the decimal number the JSON text wrote, exactly.

In binary floating point ``0.07 / 0.01`` is ``7.000000000000001``, so money-style values were
refused for ``multipleOf: 0.01``; ``NaN``, infinities and huge values made the check raise. The
compiled fast path and jsonschema share one exact check, so both give these verdicts.
"""

from __future__ import annotations

from decimal import Decimal
from fractions import Fraction
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from agent_runtime.schema import compile_schema, normalize_schema
from agent_runtime.schema.multiple_of import is_multiple_of


def _both(schema: dict[str, Any]) -> list[Any]:
    fast = compile_schema(schema, root_object=False)
    slow = compile_schema(schema, root_object=False, fast_path=False)
    assert fast.fast_path and not slow.fast_path
    return [fast, slow]


@pytest.mark.parametrize(
    ("value", "step"),
    [
        (0.07, 0.01),
        (19.99, 0.01),
        (0.3, 0.1),
        (1234567.89, 0.01),
        (-0.01, 0.01),
        (4.5, 1.5),
        (0.0075, 0.0001),
        (1e308, 0.5),
        (10**40, 0.01),
        (0, 0.01),
        (2.5, 0.5),
        (15, 5),
    ],
)
def test_decimal_multiples_are_valid_on_both_paths(value: Any, step: Any) -> None:
    for compiled in _both({"type": "number", "multipleOf": step}):
        assert compiled.is_valid(value), (value, step)
        assert compiled.violations(value) == []


@pytest.mark.parametrize(
    ("value", "step"),
    [(0.075, 0.01), (19.991, 0.01), (0.00751, 0.0001), (1e308, 0.123456789), (7, 5), (0.5, 1)],
)
def test_values_that_are_not_multiples_are_refused_on_both_paths(value: Any, step: Any) -> None:
    for compiled in _both({"type": "number", "multipleOf": step}):
        assert not compiled.is_valid(value)
        [violation] = compiled.violations(value)
        assert violation.keyword == "multipleOf"


@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_values_are_invalid_and_never_raise(value: float) -> None:
    # The dispatcher refuses these when parsing; other callers (output schemas, hosts) may
    # still hand them in, and must get an answer rather than an exception.
    for compiled in _both({"type": "number", "multipleOf": 0.01}):
        assert not compiled.is_valid(value)
        assert compiled.violations(value)


def test_non_numbers_are_left_to_other_keywords() -> None:
    for compiled in _both({"multipleOf": 0.01}):
        for value in (True, "0.07", None, [0.07]):
            assert compiled.is_valid(value)


def test_a_money_default_is_kept_by_normalisation() -> None:
    schema = {"type": "number", "multipleOf": 0.01, "default": 0.07}
    assert normalize_schema(schema, root_object=False) == (schema, [])
    _, warnings = normalize_schema({**schema, "default": 0.075}, root_object=False)
    assert warnings == ["(root)/default: default 0.075 does not match its own schema; removed"]


def test_older_drafts_use_the_same_exact_check() -> None:
    for dialect, keyword in (
        ("http://json-schema.org/draft-04/schema#", "multipleOf"),
        ("http://json-schema.org/draft-03/schema#", "divisibleBy"),
    ):
        compiled = compile_schema({"$schema": dialect, keyword: 0.01}, root_object=False)
        assert compiled.is_valid(0.07) and not compiled.is_valid(0.075)


_DECIMAL_TEXT = st.builds(
    lambda digits, exponent: f"{digits}e{exponent}",
    st.integers(-(10**12), 10**12),
    st.integers(-12, 12),
)


@settings(max_examples=400, deadline=None)
@given(_DECIMAL_TEXT, _DECIMAL_TEXT.filter(lambda t: Decimal(t) > 0))
def test_the_verdict_is_decimal_arithmetic_on_the_texts(value: str, step: str) -> None:
    """For numbers written with up to 13 significant digits (any a model sends for money or
    measures), the float check agrees with exact decimal arithmetic on the JSON texts."""
    exact = (Fraction(Decimal(value)) / Fraction(Decimal(step))).denominator == 1
    assert is_multiple_of(float(value), float(step)) is exact
