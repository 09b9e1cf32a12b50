"""Writes ``object_schemas_2020_12.json``: varied tool-argument schemas for the grammar tests.

Source: the JSON Schema Test Suite, draft 2020-12 (https://github.com/json-schema-org/
JSON-Schema-Test-Suite, MIT-style licence, copied beside this file as
``JSON-Schema-Test-Suite-LICENSE``). Run from the repository root::

    .venv/bin/python tests/data/make_object_schemas.py [path/to/json-schema-test-suite]

(default: the copy vendored in ``tests/data/json-schema-test-suite``). Each schema of the suite becomes a candidate:

* as is, when it describes objects (``"type": "object"``, or object keywords and no other type;
  ``"type": "object"`` is then added, as the dispatcher's normalisation does for tool input);
* otherwise wrapped as ``{"type": "object", "properties": {"value": S}, "required": ["value"],
  "additionalProperties": false}``, when S has no ``$ref``/``$id``/anchors (which would resolve
  differently once nested).

A candidate is kept when the tool-call grammar compiles it in ``exact`` mode (see
``agent_runtime.model.constrained``) and every one of ``WALKS`` random walks through the grammar
(uniform over the allowed tokens) yields arguments the dispatcher's validator
(``agent_runtime.schema.compile_schema``) and plain jsonschema (Draft202012Validator, where it
can run the schema) both accept. The suite's valid instances are kept with it when the grammar
accepts them written the way the grammar writes JSON (``json.dumps`` separators, keys in schema
order; stored in that order).

What was found (llguidance 1.9.1): llguidance refuses ``not``, ``if``/``then``/``else``,
``contains``/``minContains``/``maxContains``, ``uniqueItems``, ``propertyNames``,
``dependentRequired``/``dependentSchemas``, ``unevaluated*``, ``$dynamicRef``/``$dynamicAnchor``,
remote ``$ref``, overlapping ``oneOf``, non-disjoint ``patternProperties``, float-valued
``minLength`` and friends (``2.0``), huge ``multipleOf`` digits, unknown formats: the grammar
relaxes those schemas or falls back, so they are not here. Of what it compiles, llguidance is
laxer than the dispatcher on formats (29 February of any year, year 0000, second 60 at any time,
host names and email domains without length and label rules); constrained.py tightens those
with patterns, and the walks here check the result. Also not here, as ``relaxed``: fractional
``multipleOf`` (the dispatcher, like jsonschema, divides in binary floating point and refuses
e.g. 358.3345 as a multiple of 0.0001, which the grammar allows). The grammar is stricter than
the schema in a few places (keys in schema order, integers without a fraction such as ``1.0``),
so some of the suite's valid instances are left out of ``valid``. With this rule nothing is left
in ``excluded`` at present.
"""

from __future__ import annotations

import json
import random
import sys
from pathlib import Path
from typing import Any

import torch
from jsonschema import Draft202012Validator

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "tests"))

from tokenizer_support import kimi_tokenizer  # noqa: E402

from agent_runtime.model.chat_format import KimiK2ChatFormat  # noqa: E402
from agent_runtime.model.constrained import tool_grammar  # noqa: E402
from agent_runtime.schema import compile_schema  # noqa: E402
from agent_runtime.types import ToolSpec  # noqa: E402

WALKS = 40
SEED = 20240917
OUT = Path(__file__).resolve().parent / "object_schemas_2020_12.json"

_OBJECT_KEYWORDS = {
    "properties",
    "patternProperties",
    "additionalProperties",
    "required",
    "minProperties",
    "maxProperties",
    "propertyNames",
    "dependentRequired",
    "dependentSchemas",
    "unevaluatedProperties",
}
_SCOPED = ("$ref", "$id", "$anchor", "$dynamicRef", "$dynamicAnchor", "$defs", "definitions")


def _mentions(node: Any, keys: tuple[str, ...]) -> bool:
    if isinstance(node, dict):
        return any(k in node for k in keys) or any(_mentions(v, keys) for v in node.values())
    if isinstance(node, list):
        return any(_mentions(v, keys) for v in node)
    return False


def _candidates(suite: Path) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for path in sorted((suite / "draft2020-12").glob("*.json")):
        for number, case in enumerate(json.loads(path.read_text(encoding="utf-8"))):
            schema = case["schema"]
            if not isinstance(schema, dict):
                continue
            ident = f"{path.stem}#{number}"
            valid = [t["data"] for t in case["tests"] if t["valid"]]
            kind = schema.get("type")
            objectish = kind == "object" or (kind is None and _OBJECT_KEYWORDS & set(schema))
            if objectish:
                as_object = dict(schema)
                as_object.setdefault("type", "object")
                instances = [v for v in valid if isinstance(v, dict)]
                found.append(_entry(ident, case, "as is", as_object, instances))
            elif not _mentions(schema, _SCOPED):
                inner = {k: v for k, v in schema.items() if k != "$schema"}
                wrapped = {
                    "$schema": "https://json-schema.org/draft/2020-12/schema",
                    "type": "object",
                    "properties": {"value": inner},
                    "required": ["value"],
                    "additionalProperties": False,
                }
                instances = [{"value": v} for v in valid]
                found.append(_entry(ident, case, "wrapped as value", wrapped, instances))
    return found


def _entry(
    ident: str, case: dict[str, Any], how: str, schema: dict[str, Any], valid: list[Any]
) -> dict[str, Any]:
    return {
        "id": ident,
        "description": case["description"],
        "how": how,
        "schema": schema,
        "valid": valid,
    }


def _walk(grammar: Any, vocab: int, rng: random.Random, start: int) -> list[int] | None:
    """Uniform over the allowed tokens (forced ones taken half the time), from ``start`` (the
    section opener: the free text before it is not what is tested here)."""
    constraint = grammar.matcher()
    constraint.accept(start)
    for _ in range(20000):
        if constraint.is_done():
            return constraint.tokens
        forced = constraint.forced_tokens()
        if forced and rng.random() < 0.5:
            constraint.accept_many(forced)
            continue
        logits = torch.zeros(vocab)
        constraint.mask(logits)
        allowed = torch.nonzero(torch.isfinite(logits)).flatten().tolist()
        constraint.accept(allowed[rng.randrange(len(allowed))])
        if constraint.error:
            raise RuntimeError(constraint.error)
    return None


def _arguments(tokens: list[int], tokenizer: Any, begin: int, end: int) -> str:
    return str(tokenizer.decode(tokens[tokens.index(begin) + 1 : tokens.index(end)]))


def _jsonschema_ok(schema: dict[str, Any], instance: Any) -> bool:
    try:
        return bool(Draft202012Validator(schema).is_valid(instance))
    except Exception:  # e.g. a \\p{...} pattern Python's re cannot compile: dispatcher decides
        return True


def _ordered(instance: Any, schema: Any) -> Any:
    """``instance`` with object keys in the schema's ``properties`` order, then the rest."""
    if isinstance(instance, dict) and isinstance(schema, dict):
        props = schema.get("properties") if isinstance(schema.get("properties"), dict) else {}
        keys = [k for k in props if k in instance] + [k for k in instance if k not in props]
        return {k: _ordered(instance[k], props.get(k, {})) for k in keys}
    if isinstance(instance, list) and isinstance(schema, dict):
        items = schema.get("items", {})
        return [_ordered(v, items) for v in instance]
    return instance


def _grammar_accepts(grammar: Any, tokenizer: Any, call_prefix: list[int], text: str) -> bool:
    constraint = grammar.matcher()
    constraint.accept_many(call_prefix)
    constraint.accept_many(tokenizer.encode(text))
    return constraint.error is None


def main() -> None:
    suite = (
        Path(sys.argv[1])
        if len(sys.argv) > 1
        else Path(__file__).resolve().parent / "json-schema-test-suite"
    )
    fmt = KimiK2ChatFormat(kimi_tokenizer())
    tok = fmt.tokenizer
    ids = tok.special_tokens
    begin, end = ids["<|tool_call_argument_begin|>"], ids["<|tool_call_end|>"]
    rng = random.Random(SEED)
    kept: list[dict[str, Any]] = []
    excluded: list[dict[str, str]] = []
    seen: set[str] = set()
    for entry in _candidates(suite):
        canonical = json.dumps(entry["schema"], sort_keys=True)
        if canonical in seen:
            continue
        seen.add(canonical)
        tool = ToolSpec(name="t", input_schema=entry["schema"])
        grammar = tool_grammar(fmt, [tool], "t")
        mode = grammar.schema_modes["t"]
        if mode != "exact":
            continue  # llguidance refuses it (or not all of it): not a test of exact grammars
        checker = compile_schema(entry["schema"])
        reason = ""
        for _ in range(WALKS):
            tokens = _walk(grammar, tok.vocab_size, rng, ids["<|tool_calls_section_begin|>"])
            if tokens is None:
                reason = "a walk did not finish"
                break
            text = _arguments(tokens, tok, begin, end)
            value = json.loads(text)
            if not checker.is_valid(value) or not _jsonschema_ok(entry["schema"], value):
                reason = f"generated arguments refused by the validator: {text[:200]}"
                break
        if reason:
            excluded.append(
                {"id": entry["id"], "description": entry["description"], "reason": reason}
            )
            continue
        prefix = [
            ids["<|tool_calls_section_begin|>"],
            ids["<|tool_call_begin|>"],
            *tok.encode("functions.t:0"),
            begin,
        ]
        ordered = [_ordered(v, entry["schema"]) for v in entry["valid"] if checker.is_valid(v)]
        entry["valid"] = [
            v
            for v in ordered
            if _grammar_accepts(grammar, tok, prefix, json.dumps(v, ensure_ascii=False))
        ]
        kept.append(entry)
    document = {
        "source": "JSON Schema Test Suite, tests/draft2020-12 "
        "(https://github.com/json-schema-org/JSON-Schema-Test-Suite)",
        "license": "MIT-style, Copyright (c) 2012 Julian Berman; see JSON-Schema-Test-Suite-LICENSE",
        "generated_by": "tests/data/make_object_schemas.py",
        "schemas": kept,
        "excluded": excluded,
    }
    OUT.write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
    print(f"{len(kept)} schemas kept, {len(excluded)} excluded -> {OUT}")
    for item in excluded:
        print(" excluded", item["id"], item["description"], ":", item["reason"][:120])


if __name__ == "__main__":
    main()
