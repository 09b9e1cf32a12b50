"""FunctionToolset: Python functions offered as a toolset."""

from __future__ import annotations

import pytest
from pydantic import BaseModel

from agent_runtime.errors import UserError
from agent_runtime.tools import FunctionToolset, Tool, tool
from agent_runtime.toolset import ToolContext, Toolset, ToolsetProvider, to_toolsets
from agent_runtime.types import DataPart, TextPart


def ctx() -> ToolContext:
    return ToolContext(call_id="c1")


def add(a: int, b: int) -> int:
    """Add two numbers."""
    return a + b


async def shout(text: str) -> str:
    """Upper-case some text."""
    return text.upper()


@pytest.mark.anyio
async def test_lists_and_calls_functions_by_name() -> None:
    toolset = FunctionToolset([add, shout])
    specs = await toolset.list_tools()
    assert [s.name for s in specs] == ["add", "shout"]
    assert specs[0].description == "Add two numbers."
    assert (await toolset.call_tool("add", {"a": 2, "b": 3}, ctx())).content == [DataPart(data=5)]
    assert (await toolset.call_tool("shout", {"text": "hi"}, ctx())).content == [
        TextPart(text="HI")
    ]


@pytest.mark.anyio
async def test_toolset_name_is_the_origin_of_its_specs() -> None:
    decorated = tool(add)
    toolset = FunctionToolset([decorated], name="math")
    (spec,) = await toolset.list_tools()
    assert spec.origin == "math"
    assert decorated.spec.origin == "local"  # the tool's own spec is not changed


def test_duplicate_names_are_rejected() -> None:
    toolset = FunctionToolset([add])
    with pytest.raises(UserError, match="already has a tool named 'add'"):
        toolset.add(add)
    toolset.add(add, name="add2")
    assert set(toolset.tools) == {"add", "add2"}


@pytest.mark.anyio
async def test_toolset_tool_decorator_bare_and_with_options() -> None:
    toolset = FunctionToolset()

    @toolset.tool
    def first(x: int) -> int:
        return x

    @toolset.tool(name="second_tool", read_only=True, requires_approval=True)
    def second(x: int) -> int:
        return x * 2

    assert isinstance(first, Tool) and first(3) == 3
    specs = {s.name: s for s in await toolset.list_tools()}
    assert set(specs) == {"first", "second_tool"}
    assert specs["second_tool"].annotations.read_only is True
    assert specs["second_tool"].requires_approval is True
    assert (await toolset.call_tool("second_tool", {"x": 4}, ctx())).content == [DataPart(data=8)]


@pytest.mark.anyio
async def test_toolset_tool_on_nested_functions_sees_their_enclosing_scope() -> None:
    class Point(BaseModel):
        x: int

    toolset = FunctionToolset()

    @toolset.tool
    def bare(p: Point) -> int:
        return p.x

    @toolset.tool(name="with_options", title="Scaled")
    def scaled(p: Point) -> int:
        return p.x * 10

    added = toolset.add(lambda p: p.x, name="added")  # no hints: nothing to resolve
    assert added.name == "added"
    specs = {s.name: s for s in await toolset.list_tools()}
    for name in ("bare", "with_options"):
        assert specs[name].input_schema["$defs"]["Point"]["properties"] == {
            "x": {"type": "integer"}
        }
    assert specs["with_options"].annotations.title == "Scaled"
    assert (await toolset.call_tool("with_options", {"p": {"x": 2}}, ctx())).content == [
        DataPart(data=20)
    ]


def test_unknown_option_is_refused_like_an_unknown_keyword() -> None:
    toolset = FunctionToolset()
    with pytest.raises(TypeError, match="nmae"):
        toolset.tool(nmae="x")  # type: ignore[call-overload]
    with pytest.raises(TypeError, match="nmae"):
        toolset.add(add, nmae="x")  # type: ignore[call-arg]
    assert toolset.tools == {}


@pytest.mark.anyio
async def test_adding_and_removing_tools_notifies_listeners() -> None:
    toolset = FunctionToolset([add])
    changes: list[int] = []
    toolset.add_tools_changed_listener(lambda: changes.append(1))
    async with toolset:
        toolset.add(shout)
        assert len(changes) == 1
        assert [s.name for s in await toolset.list_tools()] == ["add", "shout"]
        toolset.remove("add")
        assert len(changes) == 2
        assert [s.name for s in await toolset.list_tools()] == ["shout"]


@pytest.mark.anyio
async def test_unknown_tool_raises() -> None:
    toolset = FunctionToolset([add])
    with pytest.raises(UserError, match="no tool 'sub'"):
        await toolset.call_tool("sub", {}, ctx())
    with pytest.raises(UserError, match="no tool 'sub'"):
        toolset.remove("sub")


def test_options_on_an_existing_tool_are_rejected() -> None:
    with pytest.raises(UserError, match="already a tool"):
        FunctionToolset().add(tool(add), name="other")


@pytest.mark.anyio
async def test_methods_are_added_through_an_instance() -> None:
    class Store:
        def __init__(self) -> None:
            self.items: list[str] = []

        @tool
        def put(self, item: str) -> int:
            """Store an item."""
            self.items.append(item)
            return len(self.items)

    store = Store()
    with pytest.raises(UserError, match="is a method"):
        FunctionToolset([Store.put])
    toolset = FunctionToolset([store.put])
    assert (await toolset.call_tool("put", {"item": "x"}, ctx())).content == [DataPart(data=1)]
    assert store.items == ["x"]

    plain = FunctionToolset([Store().put])  # a plain bound method works too
    (spec,) = await plain.list_tools()
    assert list(spec.input_schema["properties"]) == ["item"]


@pytest.mark.anyio
async def test_a_tool_is_a_toolset_provider() -> None:
    decorated = tool(add)
    assert isinstance(decorated, ToolsetProvider)
    (toolset,) = to_toolsets([decorated])
    assert isinstance(toolset, Toolset)
    assert [s.name for s in await toolset.list_tools()] == ["add"]
    assert (await toolset.call_tool("add", {"a": 1, "b": 1}, ctx())).content == [DataPart(data=2)]
