"""Toolset combinators: prefix, filter, rename, approval, and the combined toolset."""

from __future__ import annotations

import gc
import weakref
from types import TracebackType
from typing import Any, Self

import anyio
import pytest

from agent_runtime.combinators import (
    ApprovalRequiredToolset,
    CombinedToolset,
    FilteredToolset,
    PrefixedToolset,
    RenamedToolset,
)
from agent_runtime.errors import ToolNameConflictError, UserError
from agent_runtime.tools import FunctionToolset
from agent_runtime.toolset import ToolContext, Toolset
from agent_runtime.types import ToolAnnotations, ToolResult, ToolSpec


class Recorder(Toolset):
    """A toolset that records what was asked of it."""

    def __init__(
        self,
        name: str,
        tools: list[str],
        *,
        log: list[str] | None = None,
        fail_enter: bool = False,
    ) -> None:
        super().__init__()
        self.name = name
        self.tool_names = list(tools)
        self.log = log if log is not None else []
        self.fail_enter = fail_enter
        self.list_count = 0
        self.calls: list[tuple[str, dict[str, Any]]] = []

    async def __aenter__(self) -> Self:
        if self.fail_enter:
            raise RuntimeError(f"{self.name} cannot start")
        self.log.append(f"enter {self.name}")
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.log.append(f"exit {self.name}")

    async def list_tools(self) -> list[ToolSpec]:
        self.list_count += 1
        return [
            ToolSpec(
                name=n,
                origin=f"mcp:{self.name}",
                annotations=ToolAnnotations(read_only=n.startswith("read")),
            )
            for n in self.tool_names
        ]

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if name not in self.tool_names:
            raise LookupError(name)
        self.calls.append((name, arguments))
        return ToolResult.text(f"{self.name}:{name}")

    def set_tools(self, tools: list[str]) -> None:
        self.tool_names = list(tools)
        self.notify_tools_changed()


def ctx() -> ToolContext:
    return ToolContext(call_id="c1")


async def names(toolset: Toolset) -> list[str]:
    return [spec.name for spec in await toolset.list_tools()]


# --------------------------------------------------------------------------- wrappers


@pytest.mark.anyio
async def test_prefix_is_added_on_list_and_stripped_on_call() -> None:
    inner = Recorder("fs", ["read", "write"])
    prefixed = inner.prefixed("fs")
    assert isinstance(prefixed, PrefixedToolset)
    assert await names(prefixed) == ["fs__read", "fs__write"]
    result = await prefixed.call_tool("fs__write", {"path": "a"}, ctx())
    assert result.text_content == "fs:write"
    assert inner.calls == [("write", {"path": "a"})]
    assert await names(PrefixedToolset(inner, "x", sep=".")) == ["x.read", "x.write"]


@pytest.mark.anyio
async def test_prefixed_call_without_the_prefix_is_refused() -> None:
    prefixed = Recorder("fs", ["read"]).prefixed("fs")
    with pytest.raises(UserError, match="does not start with"):
        await prefixed.call_tool("read", {}, ctx())
    with pytest.raises(UserError, match="must not be empty"):
        PrefixedToolset(Recorder("fs", []), "")


@pytest.mark.anyio
async def test_wrappers_keep_origin_and_inner_name() -> None:
    inner = Recorder("fs", ["read"])
    for wrapper in (
        inner.prefixed("p"),
        inner.filtered(lambda s: True),
        inner.renamed({"read": "r"}),
        inner.approval_required(),
    ):
        assert wrapper.name == "fs"
        assert [s.origin for s in await wrapper.list_tools()] == ["mcp:fs"]


@pytest.mark.anyio
async def test_filter_hides_tools_and_refuses_calls_to_them() -> None:
    inner = Recorder("fs", ["read", "write"])
    filtered = inner.filtered(lambda spec: bool(spec.annotations.read_only))
    assert isinstance(filtered, FilteredToolset)
    assert await names(filtered) == ["read"]
    assert (await filtered.call_tool("read", {}, ctx())).text_content == "fs:read"
    with pytest.raises(UserError, match="filtered out"):
        await filtered.call_tool("write", {}, ctx())
    assert inner.calls == [("read", {})]


@pytest.mark.anyio
async def test_filter_sees_tools_added_later() -> None:
    inner = Recorder("fs", ["read"])
    filtered = inner.filtered(lambda spec: spec.name.startswith("read"))
    assert await names(filtered) == ["read"]
    inner.set_tools(["read", "read_more"])
    assert (await filtered.call_tool("read_more", {}, ctx())).text_content == "fs:read_more"


@pytest.mark.anyio
async def test_rename_maps_old_to_new_both_ways() -> None:
    inner = Recorder("fs", ["read_file", "stat"])
    renamed = inner.renamed({"read_file": "read"})
    assert isinstance(renamed, RenamedToolset)
    assert await names(renamed) == ["read", "stat"]
    assert (await renamed.call_tool("read", {}, ctx())).text_content == "fs:read_file"
    assert (await renamed.call_tool("stat", {}, ctx())).text_content == "fs:stat"
    with pytest.raises(UserError, match="was renamed to 'read'"):
        await renamed.call_tool("read_file", {}, ctx())


@pytest.mark.anyio
async def test_rename_can_swap_names() -> None:
    swapped = Recorder("s", ["a", "b"]).renamed({"a": "b", "b": "a"})
    assert await names(swapped) == ["b", "a"]
    assert (await swapped.call_tool("a", {}, ctx())).text_content == "s:b"


@pytest.mark.anyio
async def test_rename_conflicts_are_errors() -> None:
    with pytest.raises(UserError, match="maps both"):
        Recorder("s", ["a", "b"]).renamed({"a": "x", "b": "x"})
    clashing = Recorder("s", ["a", "b"]).renamed({"a": "b"})
    with pytest.raises(ToolNameConflictError, match="clashes"):
        await clashing.list_tools()


@pytest.mark.anyio
async def test_approval_required_marks_all_or_selected_tools() -> None:
    inner = Recorder("fs", ["read", "write"])
    everything = inner.approval_required()
    assert isinstance(everything, ApprovalRequiredToolset)
    assert [s.requires_approval for s in await everything.list_tools()] == [True, True]
    writes = inner.approval_required(lambda spec: not spec.annotations.read_only)
    assert {s.name: s.requires_approval for s in await writes.list_tools()} == {
        "read": False,
        "write": True,
    }
    assert (await writes.call_tool("write", {}, ctx())).text_content == "fs:write"


@pytest.mark.anyio
async def test_approval_flag_does_not_change_the_inner_specs() -> None:
    inner = FunctionToolset(name="local")

    @inner.tool
    def delete(path: str) -> str:
        return path

    await inner.approval_required().list_tools()
    assert [s.requires_approval for s in await inner.list_tools()] == [False]
    assert delete.spec.requires_approval is False


@pytest.mark.anyio
async def test_wrappers_stack() -> None:
    inner = Recorder("fs", ["read", "write", "delete"])
    stacked = inner.filtered(lambda s: s.name != "delete").renamed({"write": "put"}).prefixed("fs")
    assert await names(stacked) == ["fs__read", "fs__put"]
    assert (await stacked.call_tool("fs__put", {}, ctx())).text_content == "fs:write"


@pytest.mark.anyio
async def test_change_notification_propagates_through_wrappers() -> None:
    inner = FunctionToolset(name="local")
    outer = inner.filtered(lambda s: True).prefixed("p").approval_required()
    changes: list[str] = []
    outer.add_tools_changed_listener(lambda: changes.append("changed"))

    def later(x: int) -> int:
        return x

    inner.add(later)
    assert changes == ["changed"]
    assert await names(outer) == ["p__later"]


def test_a_dropped_wrapper_is_not_kept_alive_by_its_inner_toolset() -> None:
    inner = Recorder("fs", ["read"])
    ref = weakref.ref(inner.prefixed("p"))
    gc.collect()
    assert ref() is None
    inner.notify_tools_changed()  # the dead wrapper's listener removes itself quietly
    inner.notify_tools_changed()


@pytest.mark.anyio
async def test_wrapper_forwards_enter_and_exit() -> None:
    log: list[str] = []
    inner = Recorder("fs", ["read"], log=log)
    async with inner.prefixed("p").filtered(lambda s: True) as wrapper:
        assert log == ["enter fs"]
        assert isinstance(wrapper, FilteredToolset)
    assert log == ["enter fs", "exit fs"]


# --------------------------------------------------------------------------- combined


@pytest.mark.anyio
async def test_combined_routes_calls_to_the_owning_toolset() -> None:
    a, b = Recorder("a", ["one"]), Recorder("b", ["two"])
    combined = CombinedToolset([a, b])
    assert await names(combined) == ["one", "two"]
    assert (await combined.call_tool("two", {"k": 1}, ctx())).text_content == "b:two"
    assert b.calls == [("two", {"k": 1})] and a.calls == []
    with pytest.raises(UserError, match="no toolset offers a tool named 'three'"):
        await combined.call_tool("three", {}, ctx())


@pytest.mark.anyio
async def test_name_clash_names_both_origins_and_suggests_a_prefix() -> None:
    combined = CombinedToolset([Recorder("files", ["read"]), Recorder("web", ["read"])])
    with pytest.raises(ToolNameConflictError) as caught:
        await combined.list_tools()
    message = str(caught.value)
    assert "'read'" in message
    assert "mcp:files" in message and "mcp:web" in message
    assert ".prefixed('web')" in message


@pytest.mark.anyio
async def test_name_clash_between_local_and_remote_tools() -> None:
    local = FunctionToolset(name="local")

    @local.tool
    def read(path: str) -> str:
        return path

    with pytest.raises(ToolNameConflictError, match="'local'.*'mcp:fs'"):
        await CombinedToolset([local, Recorder("fs", ["read"])]).list_tools()


@pytest.mark.anyio
async def test_prefix_resolves_a_clash() -> None:
    files, web = Recorder("files", ["read"]), Recorder("web", ["read"])
    combined = CombinedToolset([files, web.prefixed("web")])
    assert await names(combined) == ["read", "web__read"]
    assert (await combined.call_tool("web__read", {}, ctx())).text_content == "web:read"
    assert (await combined.call_tool("read", {}, ctx())).text_content == "files:read"


@pytest.mark.anyio
async def test_combined_caches_its_tool_map_until_a_member_changes() -> None:
    a, b = Recorder("a", ["one"]), Recorder("b", ["two"])
    wrapped_b = b.prefixed("b")
    combined = CombinedToolset([a, wrapped_b])
    changes: list[int] = []
    combined.add_tools_changed_listener(lambda: changes.append(1))

    assert await names(combined) == ["one", "b__two"]
    await combined.list_tools()
    await combined.call_tool("one", {}, ctx())
    assert (a.list_count, b.list_count) == (1, 1)

    b.set_tools(["two", "three"])  # notification travels through the prefix wrapper
    assert changes == [1]
    assert await names(combined) == ["one", "b__two", "b__three"]
    assert (a.list_count, b.list_count) == (2, 2)


@pytest.mark.anyio
async def test_combined_relists_when_asked_for_a_name_it_does_not_know() -> None:
    silent = Recorder("s", ["one"])
    combined = CombinedToolset([silent])
    await combined.list_tools()
    silent.tool_names.append("two")  # changed without notifying
    assert (await combined.call_tool("two", {}, ctx())).text_content == "s:two"


@pytest.mark.anyio
async def test_combined_lists_members_concurrently() -> None:
    started_a, started_b = anyio.Event(), anyio.Event()

    class Waiting(Recorder):
        def __init__(self, name: str, mine: anyio.Event, other: anyio.Event) -> None:
            super().__init__(name, [f"{name}_tool"])
            self.mine, self.other = mine, other

        async def list_tools(self) -> list[ToolSpec]:
            self.mine.set()
            await self.other.wait()  # deadlocks if members are listed one after another
            return await super().list_tools()

    combined = CombinedToolset(
        [Waiting("a", started_a, started_b), Waiting("b", started_b, started_a)]
    )
    with anyio.fail_after(5):
        assert await names(combined) == ["a_tool", "b_tool"]


@pytest.mark.anyio
async def test_combined_enters_in_order_and_exits_in_reverse() -> None:
    log: list[str] = []
    combined = CombinedToolset([Recorder("a", [], log=log), Recorder("b", [], log=log)])
    async with combined:
        async with combined:  # re-entering does not enter the members twice
            pass
        assert log == ["enter a", "enter b"]
    assert log == ["enter a", "enter b", "exit b", "exit a"]


@pytest.mark.anyio
async def test_combined_exits_entered_members_when_one_fails_to_enter() -> None:
    log: list[str] = []
    combined = CombinedToolset(
        [
            Recorder("a", [], log=log),
            Recorder("b", [], log=log, fail_enter=True),
            Recorder("c", [], log=log),
        ]
    )
    with pytest.raises(RuntimeError, match="b cannot start"):
        async with combined:
            pass
    assert log == ["enter a", "exit a"]
