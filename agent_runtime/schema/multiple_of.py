"""``multipleOf`` on the decimal numbers JSON texts write, not on binary floats.

JSON numbers are decimal. ``0.07`` is a multiple of ``0.01``, but as binary floats
``0.07 / 0.01`` is ``7.000000000000001``, so a float check refuses money-style values that a
schema means to accept; and a float check of ``NaN`` or a huge value raises instead of
answering. Here a float stands for its shortest decimal form (``repr``: the digits the JSON text
had, for any number written with up to 15 significant digits), and the test is exact integer
arithmetic on that decimal. The validator (jsonschema's keyword) and the compiled fast path use
the same function, so they give the same verdicts.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from decimal import Decimal
from fractions import Fraction
from typing import Any

__all__ = ["is_multiple_of", "multiple_of_check"]


def _ratio(number: Any) -> tuple[int, int] | None:
    """``number`` as an exact ``(numerator, denominator)`` of its decimal value, or ``None``
    when it has none (NaN, infinities, values that are not numbers)."""
    if isinstance(number, int):  # bool is excluded by the callers' type checks
        return int(number), 1
    if isinstance(number, float):
        if not math.isfinite(number):
            return None
        return Decimal(repr(number)).as_integer_ratio()
    if isinstance(number, Decimal):
        return number.as_integer_ratio() if number.is_finite() else None
    try:
        exact = Fraction(number)
    except (TypeError, ValueError, OverflowError):
        return None
    return exact.numerator, exact.denominator


def is_multiple_of(value: Any, divisor: Any) -> bool:
    """Whether ``value`` is an integer multiple of ``divisor``, exactly, in decimal.

    A value without a finite decimal value (NaN, infinity) is a multiple of nothing; so is
    anything when the divisor is not a positive number (the meta-schema forbids such a schema).
    """
    if type(value) is int and type(divisor) is int and divisor > 0:
        return value % divisor == 0
    return multiple_of_check(divisor)(value)


def multiple_of_check(divisor: Any) -> Callable[[Any], bool]:
    """A check for ``multipleOf: divisor`` with the divisor's decimal value worked out once."""
    ratio = _ratio(divisor)
    if ratio is None or ratio[0] <= 0:
        return lambda value: False
    top, bottom = ratio  # divisor = top / bottom

    def check(value: Any) -> bool:
        if type(value) is int and bottom == 1:
            return value % top == 0
        given = _ratio(value)
        if given is None:
            return False
        numerator, denominator = given
        # value / divisor = (numerator * bottom) / (denominator * top): an integer or not.
        return (numerator * bottom) % (denominator * top) == 0

    return check
