"""ScriptedModel, FunctionModel and SchemaModel: test agents without an LLM."""

from __future__ import annotations

import json
from enum import Enum
from typing import Any, Literal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from agent_runtime import Agent, tool
from agent_runtime.errors import UserError
from agent_runtime.schema import SchemaExampleError, compile_schema, example_for
from agent_runtime.testing import FunctionModel, SchemaModel, Turn
from agent_runtime.types import Message, ToolCall, ToolResultMessage, ToolSpec

pytestmark = pytest.mark.anyio


class Color(str, Enum):
    RED = "red"
    BLUE = "blue"


class Line(BaseModel):
    sku: str = Field(pattern=r"^[a-z]+$", min_length=3)
    qty: int = Field(ge=2, le=9, multiple_of=3)


@tool
def order(
    lines: list[Line], color: Color, mode: Literal["fast", "slow"], note: str | None = None
) -> str:
    """Place an order."""
    return f"{len(lines)} lines, {color.value}, {mode}"


@tool
def ping() -> str:
    """Ping."""
    return "pong"


async def test_schema_model_calls_every_tool_with_valid_arguments_then_answers() -> None:
    result = await Agent(SchemaModel(call_destructive=True), tools=[order, ping]).run("go")
    assert len(result.tool_calls) == 2
    assert all(not r.result.is_error for r in result.tool_calls), [
        r.result.text_content for r in result.tool_calls
    ]
    summary = json.loads(result.output)
    assert summary["ping"] == "pong"
    assert summary["order"].endswith("red, fast")


async def test_schema_model_can_restrict_tools() -> None:
    model = SchemaModel(call_tools=["ping"], call_destructive=True)
    result = await Agent(model, tools=[order, ping]).run("go")
    assert [r.call.name for r in result.tool_calls] == ["ping"]


@tool(read_only=True)
def lookup(key: str) -> str:
    """Look a key up."""
    return f"value of {key}"


@tool(destructive=False)
def toggle(flag: bool) -> str:
    """Flip a switch (not destructive, but not read-only either)."""
    return f"set {flag}"


@tool(read_only=False)
def erase(path: str) -> str:
    """Erase a file."""
    return f"erased {path}"


async def test_schema_model_leaves_tools_not_marked_read_only_alone(
    caplog: pytest.LogCaptureFixture,
) -> None:
    model = SchemaModel()
    result = await Agent(model, tools=[lookup, toggle, erase, ping]).run("go")
    assert [r.call.name for r in result.tool_calls] == ["lookup"]
    assert model.skipped == ["toggle", "erase", "ping"]
    assert "SchemaModel did not call 3 tool(s) not marked read-only: toggle, erase, ping" in (
        caplog.text
    )


async def test_schema_model_says_why_it_called_nothing() -> None:
    result = await Agent(SchemaModel(), tools=[erase]).run("go")
    assert result.tool_calls == []
    assert result.output == (
        "no tool calls: erase not marked read-only, and SchemaModel calls such tools only "
        "with call_destructive"
    )


async def test_schema_model_calls_tools_not_marked_read_only_with_call_destructive() -> None:
    result = await Agent(SchemaModel(call_destructive=True), tools=[lookup, erase]).run("go")
    assert [r.call.name for r in result.tool_calls] == ["lookup", "erase"]
    assert json.loads(result.output)["erase"] == "erased example"


def test_schema_model_call_destructive_must_be_a_boolean() -> None:
    with pytest.raises(UserError, match="call_destructive must be true or false"):
        SchemaModel(call_destructive="yes")  # type: ignore[arg-type]


async def test_schema_model_without_tools_answers_text() -> None:
    result = await Agent(SchemaModel(final_text="hello")).run("go")
    assert result.output == "hello"


async def test_function_model_answers_from_the_conversation_for_any_number_of_turns() -> None:
    seen_tools: list[list[str]] = []

    async def reply(messages: list[Message], tools: list[ToolSpec]) -> Turn:
        seen_tools.append([t.name for t in tools])
        if isinstance(messages[-1], ToolResultMessage):
            return f"ping said {messages[-1].result.text_content}"
        return ToolCall.of("ping") if messages[-1].content == "call" else "plain"  # type: ignore[union-attr]

    agent = Agent(FunctionModel(reply), tools=[ping])
    assert (await agent.run("call")).output == "ping said pong"
    assert (await agent.run("hello")).output == "plain"
    assert seen_tools == [["ping"]] * 3


async def test_function_model_may_be_sync_and_may_fail() -> None:
    def broken(messages: list[Message], tools: list[ToolSpec]) -> Turn:
        raise RuntimeError("model down")

    assert (await Agent(FunctionModel(lambda m, t: "sync")).run("x")).output == "sync"
    with pytest.raises(RuntimeError, match="model down"):
        await Agent(FunctionModel(broken)).run("x")
    with pytest.raises(UserError, match="FunctionModel cannot play 42"):
        await Agent(FunctionModel(lambda m, t: 42)).run("x")  # type: ignore[arg-type,return-value]


SCHEMAS: list[dict[str, Any]] = [
    {
        "type": "object",
        "properties": {"n": {"type": "integer", "exclusiveMinimum": 5}},
        "required": ["n"],
    },
    {
        "type": "object",
        "properties": {"s": {"type": "string", "format": "email"}},
        "required": ["s"],
    },
    {
        "type": "object",
        "properties": {"t": {"type": ["null", "number"], "maximum": -3}},
        "required": ["t"],
    },
    {
        "type": "object",
        "$defs": {"P": {"type": "object", "properties": {"x": {"const": 3}}, "required": ["x"]}},
        "properties": {
            "p": {"$ref": "#/$defs/P"},
            "q": {"anyOf": [{"type": "boolean"}, {"type": "null"}]},
        },
        "required": ["p", "q"],
    },
    {
        "type": "object",
        "properties": {
            "a": {"type": "array", "minItems": 3, "uniqueItems": True, "items": {"type": "integer"}}
        },
        "required": ["a"],
    },
    {
        "type": "object",
        "properties": {"o": {"oneOf": [{"type": "string", "maxLength": 2}, {"type": "integer"}]}},
        "required": ["o"],
    },
    {
        "type": "object",
        "properties": {"e": {"enum": ["x", 2, None]}},
        "required": ["e"],
        "additionalProperties": False,
    },
    {
        "type": "object",
        "properties": {"m": {"allOf": [{"type": "integer"}, {"minimum": 10}]}},
        "required": ["m"],
    },
]


@pytest.mark.parametrize("schema", SCHEMAS)
def test_generated_example_satisfies_schema(schema: dict[str, Any]) -> None:
    value = example_for(schema, include_optional=True)
    assert compile_schema(schema).is_valid(value)


def test_unsatisfiable_schema_raises() -> None:
    with pytest.raises(SchemaExampleError):
        example_for(
            {
                "type": "object",
                "properties": {"x": {"type": "integer", "minimum": 5, "maximum": 1}},
                "required": ["x"],
            }
        )


@settings(max_examples=60, deadline=None)
@given(
    st.fixed_dictionaries(
        {
            "low": st.integers(-50, 50),
            "span": st.integers(0, 50),
            "min_len": st.integers(0, 10),
            "items": st.integers(0, 4),
        }
    )
)
def test_generated_examples_are_valid_for_random_bounds(p: dict[str, int]) -> None:
    schema = {
        "type": "object",
        "properties": {
            "n": {"type": "integer", "minimum": p["low"], "maximum": p["low"] + p["span"]},
            "s": {"type": "string", "minLength": p["min_len"]},
            "l": {"type": "array", "minItems": p["items"], "items": {"type": "number"}},
        },
        "required": ["n", "s", "l"],
    }
    assert compile_schema(schema).is_valid(example_for(schema))


async def test_schema_model_uses_fixed_arguments_over_generated_ones() -> None:
    model = SchemaModel(
        arguments={"order": {"mode": "slow", "color": "blue"}}, call_destructive=True
    )
    result = await Agent(model, tools=[order, ping]).run("go")
    record = next(r for r in result.tool_calls if r.call.name == "order")
    assert record.result.text_content.endswith("blue, slow")
