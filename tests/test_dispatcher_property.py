"""Property: nothing the model emits as a name or argument text makes the dispatcher raise."""

from __future__ import annotations

import json
from typing import Any

import anyio
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from pydantic import BaseModel, Field

from agent_runtime.dispatcher import Dispatcher
from agent_runtime.tools import FunctionToolset, tool
from agent_runtime.types import ToolCall


class Point(BaseModel):
    x: float
    y: float = Field(ge=0)


@tool
def plot(points: list[Point], title: str = "", style: dict[str, str] | None = None) -> str:
    """Plot points."""
    return f"{len(points)} points"


@tool
def echo(text: str) -> str:
    """Echo."""
    return text


json_values = st.recursive(
    st.none() | st.booleans() | st.floats(allow_nan=False) | st.integers() | st.text(max_size=20),
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=20,
)

arguments_text = st.one_of(
    st.text(max_size=200),
    json_values.map(json.dumps),
    st.dictionaries(st.sampled_from(["points", "title", "style", "text", "x"]), json_values).map(
        json.dumps
    ),
    st.just("{" * 5000),
    st.just("[" * 100_000),
)
names = st.one_of(st.sampled_from(["plot", "echo", "PLOT", "ech", ""]), st.text(max_size=30))


def _run(calls: list[ToolCall]) -> list[Any]:
    async def main() -> list[Any]:
        async with Dispatcher([FunctionToolset([plot, echo])]) as dispatcher:
            return await dispatcher.dispatch(calls)

    return anyio.run(main)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.tuples(names, arguments_text), min_size=1, max_size=3))
def test_any_name_and_argument_text_gives_error_result_or_valid_call(
    calls: list[tuple[str, str]],
) -> None:
    tool_calls = [ToolCall(id=f"c{i}", name=n, arguments=a) for i, (n, a) in enumerate(calls)]
    records = _run(tool_calls)
    assert [r.call.id for r in records] == [c.id for c in tool_calls]
    for record in records:
        if record.result.is_error:
            assert record.error_kind in {"parse", "unknown_tool", "validation", "tool_error"}
            assert record.result.text_content
        else:
            assert record.error_kind is None
            assert record.call.name in ("plot", "echo")
            assert isinstance(record.arguments, dict)
