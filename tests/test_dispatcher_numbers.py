"""Numbers and checks a model can break: each is an error result, never an exception.

Python's JSON parser accepts ``NaN``, ``Infinity`` and ``1e400`` (as infinity); jsonschema's
``multipleOf`` then raised ``ValueError``/``OverflowError`` out of ``Dispatcher.dispatch`` and
``Agent.run``. A number too long to convert, a pattern or ``format: regex`` value that makes
Python's regex engine overflow, and arguments nested too deeply to check did the same or
blamed the wrong party.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from agent_runtime import Agent
from agent_runtime.dispatcher import DispatchConfig, Dispatcher
from agent_runtime.testing import ScriptedModel
from agent_runtime.toolset import ToolContext, Toolset
from agent_runtime.types import ToolCall, ToolCallRecord, ToolResult, ToolSpec

pytestmark = pytest.mark.anyio

_SCHEMAS: dict[str, dict[str, Any]] = {
    "pay": {
        "type": "object",
        "properties": {
            "amount": {"type": "number", "multipleOf": 0.01},
            "count": {"type": "integer", "multipleOf": 5},
        },
        "required": ["amount"],
    },
    "tree": {
        "type": "object",
        "$defs": {"node": {"type": "array", "items": {"$ref": "#/$defs/node"}}},
        "properties": {"root": {"$ref": "#/$defs/node"}},
    },
    "find": {
        "type": "object",
        "properties": {"regex": {"type": "string", "format": "regex"}},
        "required": ["regex"],
    },
}


class _Ledger(Toolset):
    """Tools with the schemas above; a call answers with what it was given."""

    name = "ledger"

    def __init__(self, schemas: dict[str, dict[str, Any]] | None = None) -> None:
        super().__init__()
        self.schemas = schemas or _SCHEMAS
        self.ran: list[dict[str, Any]] = []

    async def list_tools(self) -> list[ToolSpec]:
        return [ToolSpec(name=n, origin="ledger", input_schema=s) for n, s in self.schemas.items()]

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        self.ran.append(arguments)
        return ToolResult.text(f"{name} {json.dumps(arguments)}")


async def _one(text: str, name: str = "pay", ledger: _Ledger | None = None) -> ToolCallRecord:
    ledger = ledger or _Ledger()
    async with Dispatcher([ledger], DispatchConfig(max_retries=100)) as dispatcher:
        [record] = await dispatcher.dispatch([ToolCall(id="c1", name=name, arguments=text)])
    return record


@pytest.mark.parametrize("literal", ["NaN", "Infinity", "-Infinity"])
async def test_nan_and_infinity_are_parse_errors_that_name_the_value(literal: str) -> None:
    ledger = _Ledger()
    record = await _one(f'{{"amount": {literal}}}', ledger=ledger)
    assert record.error_kind == "parse"
    text = record.result.text_content
    assert f"{literal} is not a number JSON allows" in text
    assert "character 11" in text and "finite number" in text
    assert ledger.ran == []


@pytest.mark.parametrize("literal", ["1e400", "-1e400", "1E309", "9" * 400 + ".5"])
async def test_numbers_beyond_the_float_range_are_parse_errors(literal: str) -> None:
    record = await _one(f'{{"amount": {literal}}}')
    assert record.error_kind == "parse"
    assert "too large for a number" in record.result.text_content


async def test_the_largest_and_smallest_floats_are_still_numbers() -> None:
    for text in ('{"amount": 1e308}', '{"amount": 5e-324}', '{"amount": -0.0}'):
        record = await _one(text)
        assert record.error_kind in (None, "validation"), record.result.text_content
        assert record.error_kind != "parse"


async def test_non_finite_numbers_in_padded_or_nested_text_are_parse_errors() -> None:
    # Not the bare-object fast path: leading space, and NaN deep inside an array.
    record = await _one(' {"amount": 1, "count": [1, [NaN]]} ')
    assert record.error_kind == "parse"
    assert "NaN is not a number JSON allows" in record.result.text_content


async def test_an_integer_too_long_to_read_is_a_parse_error() -> None:
    record = await _one('{"amount": 1' + "0" * 5000 + "}")
    assert record.error_kind == "parse"
    assert "digits" in record.result.text_content


async def test_fractional_multiple_of_accepts_money_values_exactly() -> None:
    ledger = _Ledger()
    for amount in ("0.07", "19.99", "0.3", "1234567.89", "-0.01", "1e308"):
        record = await _one(f'{{"amount": {amount}}}', ledger=ledger)
        assert record.error_kind is None, (amount, record.result.text_content)
    assert [a["amount"] for a in ledger.ran] == [0.07, 19.99, 0.3, 1234567.89, -0.01, 1e308]


async def test_fractional_multiple_of_still_refuses_what_is_not_a_multiple() -> None:
    for amount in ("0.075", "19.991", "1e-05"):
        record = await _one(f'{{"amount": {amount}}}')
        assert record.error_kind == "validation"
        assert f"/amount: expected number that is a multiple of 0.01, given {amount}" in (
            record.result.text_content
        )
    record = await _one('{"amount": 1, "count": 12}')
    assert record.error_kind == "validation"
    assert "/count" in record.result.text_content


async def test_a_regex_that_overflows_the_engine_is_an_invalid_format_not_a_crash() -> None:
    record = await _one('{"regex": "a{4294967296}"}', name="find")
    assert record.error_kind == "validation"
    assert "expected a valid regex string" in record.result.text_content
    assert (await _one('{"regex": "^a+$"}', name="find")).error_kind is None


async def test_a_schema_pattern_that_overflows_the_engine_leaves_the_tool_usable() -> None:
    ledger = _Ledger(
        {"code": {"type": "object", "properties": {"c": {"pattern": "a{99999999999}"}}}}
    )
    async with Dispatcher([ledger]) as dispatcher:
        [record] = await dispatcher.dispatch([ToolCall.of("code", {"c": "x"})])
        assert any("does not compile" in w and "'code'" in w for w in dispatcher.warnings)
    assert record.error_kind is None, record.result.text_content


async def test_arguments_nested_too_deeply_to_check_blame_the_arguments() -> None:
    deep = "[" * 450 + "]" * 450
    record = await _one(f'{{"root": {deep}}}', name="tree")
    assert record.error_kind == "validation"
    text = record.result.text_content
    assert "nested too deeply to check" in text
    assert "tool's fault" not in text


async def test_an_exception_while_checking_becomes_a_validation_error(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # A keyword implementation that raises on some value (a bug in a checker): the model gets a
    # validation error and the run goes on.
    from agent_runtime.schema.formats import FORMAT_CHECKER

    def broken(value: object) -> bool:
        raise ArithmeticError("checker bug")

    monkeypatch.setitem(FORMAT_CHECKER.checkers, "regex", (broken, ()))
    record = await _one('{"regex": "x"}', name="find")
    assert record.error_kind == "validation"
    assert "could not be checked" in record.result.text_content
    assert "ArithmeticError: checker bug" in record.result.text_content


async def test_agent_run_with_a_nan_call_goes_on_to_the_answer() -> None:
    model = ScriptedModel(
        [[ToolCall(id="a", name="pay", arguments='{"amount": NaN}')], "I will fix the amount."]
    )
    result = await Agent(model, tools=[_Ledger()]).run("pay")
    assert result.output == "I will fix the amount."
    assert result.tool_calls[0].error_kind == "parse"
