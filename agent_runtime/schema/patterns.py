"""Regular expressions as JSON Schema writes them (``pattern``, ``patternProperties``,
``format: regex``), compiled once for every part of the check that needs one."""

from __future__ import annotations

import functools
import re

__all__ = ["compile_pattern"]


@functools.lru_cache(maxsize=2048)
def compile_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a JSON Schema regular expression, falling back to the ``regex`` module.

    JSON Schema patterns are ECMA-262; Python's ``re`` lacks Unicode property escapes such as
    ``\\p{Letter}``, which schemas generated from TypeScript use. The third-party ``regex``
    module (present wherever ``transformers`` is) understands them. Raises ``re.error`` when
    neither engine can compile the pattern, whatever the engines raised: ``re`` raises
    ``OverflowError`` for ``a{4294967296}`` and ``RecursionError`` for deep nesting, and a
    pattern comes from a server's schema or, for ``format: regex``, from the model.
    """
    try:
        return re.compile(pattern)
    except re.error:
        pass
    except (OverflowError, RecursionError, ValueError, TypeError) as exc:
        raise re.error(f"{type(exc).__name__}: {exc}") from None
    try:
        import regex
    except ImportError:
        raise re.error(f"cannot compile {pattern!r}") from None
    try:
        return regex.compile(pattern)  # type: ignore[no-any-return]
    except Exception as exc:  # noqa: BLE001 - regex.error and its engine's other failures
        raise re.error(str(exc)) from None
