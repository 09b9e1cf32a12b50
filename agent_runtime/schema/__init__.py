"""JSON Schema in the runtime: the tool schemas found in the wild, made standard and checked.

Every tool schema is normalised to draft 2020-12 (:mod:`.normalize`) and compiled once
(:func:`compile_schema`); a model's arguments then get one check (:meth:`CompiledSchema.check`)
that says the tool may run, or lists every violation in words the model can act on.

The rooms, one concept each:

- :mod:`.check`: compiling, caching, checking, explaining violations (the public surface);
- :mod:`.normalize`: catalogue forms (``"type": "dict"``, ``"optional": true`` ...) rewritten;
- :mod:`.fast`: the compiled fast path that answers "valid?" for common schemas;
- :mod:`.keywords`: the keywords the runtime evaluates its own way (ECMA patterns, exact
  ``multipleOf``) and custom vocabularies;
- :mod:`.formats`: ``format`` checkers; :mod:`.patterns`: ECMA regular expressions;
  :mod:`.multiple_of`: exact decimal ``multipleOf``;
- :mod:`.wording`: the words of each error;
- :mod:`.examples`: a value a schema accepts, for testing agents without a model.
"""

from __future__ import annotations

from .check import Checked, CompiledSchema, Violation, compile_schema, format_violations
from .examples import SchemaExampleError, example_for
from .formats import FORMAT_CHECKER
from .normalize import normalize_schema

__all__ = [
    "FORMAT_CHECKER",
    "Checked",
    "CompiledSchema",
    "SchemaExampleError",
    "Violation",
    "compile_schema",
    "example_for",
    "format_violations",
    "normalize_schema",
]
