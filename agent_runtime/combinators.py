"""Toolset combinators: wrap any toolset to rename, hide, prefix or guard its tools, or merge many.

Each wrapper changes the tool list on the way out and maps names back on the way in, so the
wrapped toolset never knows it was wrapped. Wrappers forward entering and exiting to the inner
toolset, keep the inner specs' ``origin`` (so a clash error still says where a tool came from)
and pass the inner toolset's tools-changed notifications on to their own listeners.

``CombinedToolset`` merges several toolsets into one name space and refuses ambiguity: two
toolsets offering the same name raise ``ToolNameConflictError`` naming both origins, because
silently picking one would run the wrong tool.
"""

from __future__ import annotations

import re
import weakref
from collections.abc import Callable, Sequence
from contextlib import AsyncExitStack
from types import TracebackType
from typing import Any, Self

import anyio

from .errors import ToolNameConflictError, UserError
from .toolset import ToolContext, Toolset
from .types import ToolResult, ToolSpec

__all__ = [
    "ApprovalRequiredToolset",
    "CombinedToolset",
    "FilteredToolset",
    "PrefixedToolset",
    "RenamedToolset",
    "WrapperToolset",
]


def _listen_weakly(source: Toolset, target: Toolset, on_change: Callable[[Any], None]) -> None:
    """Call ``on_change(target)`` when ``source`` changes, without keeping ``target`` alive.

    A long-lived toolset may be wrapped many times (one wrapper per run, say); a strong
    listener would keep every wrapper ever made alive. A dead wrapper's listener removes itself
    the next time it fires.
    """
    ref = weakref.ref(target)

    def listener() -> None:
        obj = ref()
        if obj is None:
            source.remove_tools_changed_listener(listener)
        else:
            on_change(obj)

    source.add_tools_changed_listener(listener)


class WrapperToolset(Toolset):
    """A toolset that delegates to ``inner``; subclasses change what passes through."""

    def __init__(self, inner: Toolset) -> None:
        super().__init__()
        self.inner = inner
        self.name = inner.name
        _listen_weakly(inner, self, WrapperToolset._inner_changed)

    @property
    def enforces_timeout(self) -> bool:
        """Whatever the inner toolset does: a wrapper never changes how a call ends."""
        return self.inner.enforces_timeout

    def _inner_changed(self) -> None:
        """The inner list changed: drop what was derived from it and tell our listeners."""
        self.notify_tools_changed()

    async def __aenter__(self) -> Self:
        await self.inner.__aenter__()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.inner.__aexit__(exc_type, exc, tb)

    async def list_tools(self) -> list[ToolSpec]:
        return await self.inner.list_tools()

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        return await self.inner.call_tool(name, arguments, ctx)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.inner!r})"


class PrefixedToolset(WrapperToolset):
    """Offers ``inner``'s tools as ``{prefix}{sep}{name}``: the usual cure for a name clash."""

    def __init__(self, toolset: Toolset, prefix: str, sep: str = "__") -> None:
        if not prefix:
            raise UserError("a tool name prefix must not be empty")
        super().__init__(toolset)
        self.prefix = prefix
        self.sep = sep
        self._head = f"{prefix}{sep}"

    async def list_tools(self) -> list[ToolSpec]:
        head = self._head
        return [
            spec.model_copy(update={"name": head + spec.name})
            for spec in await self.inner.list_tools()
        ]

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        if not name.startswith(self._head):
            raise UserError(f"tool {name!r} does not start with this toolset's {self._head!r}")
        return await self.inner.call_tool(name[len(self._head) :], arguments, ctx)


class FilteredToolset(WrapperToolset):
    """Offers only the tools for which ``keep(spec)`` is true; the others cannot be called."""

    def __init__(self, toolset: Toolset, keep: Callable[[ToolSpec], bool]) -> None:
        super().__init__(toolset)
        self.keep = keep
        self._allowed: frozenset[str] | None = None

    def _inner_changed(self) -> None:
        self._allowed = None
        super()._inner_changed()

    async def list_tools(self) -> list[ToolSpec]:
        specs = [spec for spec in await self.inner.list_tools() if self.keep(spec)]
        self._allowed = frozenset(spec.name for spec in specs)
        return specs

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        # A hidden tool must stay hidden even if a model guesses its name.
        if self._allowed is None or name not in self._allowed:
            await self.list_tools()
            assert self._allowed is not None
            if name not in self._allowed:
                raise UserError(f"tool {name!r} is filtered out of toolset {self.name!r}")
        return await self.inner.call_tool(name, arguments, ctx)


class RenamedToolset(WrapperToolset):
    """Offers some of ``inner``'s tools under new names.

    ``mapping`` is ``{inner_name: new_name}``, read as "rename X to Y". Tools not in the
    mapping keep their names; a renamed tool is no longer reachable under its old name.
    """

    def __init__(self, toolset: Toolset, mapping: dict[str, str]) -> None:
        super().__init__(toolset)
        self.mapping = dict(mapping)
        self._reverse: dict[str, str] = {}
        for old, new in self.mapping.items():
            if new in self._reverse:
                raise UserError(
                    f"RenamedToolset maps both {self._reverse[new]!r} and {old!r} to {new!r}"
                )
            self._reverse[new] = old

    async def list_tools(self) -> list[ToolSpec]:
        out: list[ToolSpec] = []
        seen: dict[str, str] = {}
        for spec in await self.inner.list_tools():
            new = self.mapping.get(spec.name, spec.name)
            if new in seen:
                raise ToolNameConflictError(
                    f"renaming {spec.name!r} to {new!r} in toolset {self.name!r} clashes "
                    f"with its tool {seen[new]!r}"
                )
            seen[new] = spec.name
            out.append(spec if new == spec.name else spec.model_copy(update={"name": new}))
        return out

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        old = self._reverse.get(name)
        if old is None:
            if name in self.mapping:
                raise UserError(f"tool {name!r} was renamed to {self.mapping[name]!r}")
            old = name
        return await self.inner.call_tool(old, arguments, ctx)


class ApprovalRequiredToolset(WrapperToolset):
    """Marks tools as needing approval (all of them, or those ``when(spec)`` selects).

    The marking is ``ToolSpec.requires_approval``; the dispatcher asks the run's approval
    callback before running a marked tool.
    """

    def __init__(self, toolset: Toolset, when: Callable[[ToolSpec], bool] | None = None) -> None:
        super().__init__(toolset)
        self.when = when

    async def list_tools(self) -> list[ToolSpec]:
        when = self.when
        return [
            spec.model_copy(update={"requires_approval": True})
            if not spec.requires_approval and (when is None or when(spec))
            else spec
            for spec in await self.inner.list_tools()
        ]


_Entry = tuple[Toolset, ToolSpec]


class CombinedToolset(Toolset):
    """Several toolsets as one: tool names must be unique across them.

    The merged ``name -> (toolset, spec)`` map is built once (members listed concurrently) and
    kept until a member reports that its list changed, so a step of the agent loop does not
    re-list every MCP server. Entering enters the members in order; if one fails, those already
    entered are exited again. Exiting happens in reverse order, in the entering task (MCP
    clients require that).
    """

    def __init__(self, toolsets: Sequence[Toolset], name: str = "combined") -> None:
        super().__init__()
        self.toolsets: list[Toolset] = list(toolsets)
        self.name = name
        self._merged: dict[str, _Entry] | None = None
        self._generation = 0
        self._stack: AsyncExitStack | None = None
        self._depth = 0
        for member in self.toolsets:
            _listen_weakly(member, self, CombinedToolset._member_changed)

    def _member_changed(self) -> None:
        self._merged = None
        self._generation += 1
        self.notify_tools_changed()

    async def __aenter__(self) -> Self:
        if self._depth == 0:
            async with AsyncExitStack() as stack:
                for member in self.toolsets:
                    await stack.enter_async_context(member)
                self._stack = stack.pop_all()
        self._depth += 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._depth == 0:
            return
        self._depth -= 1
        if self._depth == 0 and self._stack is not None:
            stack, self._stack = self._stack, None
            await stack.__aexit__(exc_type, exc, tb)

    async def _tool_map(self) -> dict[str, _Entry]:
        merged = self._merged
        if merged is not None:
            return merged
        generation = self._generation
        listed: list[list[ToolSpec]] = [[] for _ in self.toolsets]

        async def list_one(index: int, member: Toolset) -> None:
            listed[index] = await member.list_tools()

        if len(self.toolsets) == 1:
            await list_one(0, self.toolsets[0])
        else:
            async with anyio.create_task_group() as tg:
                for index, member in enumerate(self.toolsets):
                    tg.start_soon(list_one, index, member)

        merged = {}
        for member, specs in zip(self.toolsets, listed, strict=True):
            for spec in specs:
                other = merged.get(spec.name)
                if other is not None:
                    raise _conflict(spec.name, other, (member, spec))
                merged[spec.name] = (member, spec)
        if generation == self._generation:  # no change arrived while we were listing
            self._merged = merged
        return merged

    async def list_tools(self) -> list[ToolSpec]:
        return [spec for _, spec in (await self._tool_map()).values()]

    async def members_by_tool(self) -> dict[str, tuple[Toolset, ToolSpec]]:
        """Each tool name with the member toolset that offers it (cached like ``list_tools``).

        Lets a caller that resolves names itself (the dispatcher) call the member directly.
        """
        return dict(await self._tool_map())

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        entry = (await self._tool_map()).get(name)
        if entry is None:
            self._merged = None  # a member may have changed without telling us
            entry = (await self._tool_map()).get(name)
            if entry is None:
                raise UserError(f"no toolset offers a tool named {name!r}")
        return await entry[0].call_tool(name, arguments, ctx)

    def __repr__(self) -> str:
        return f"CombinedToolset({self.toolsets!r}, name={self.name!r})"


def _conflict(name: str, first: _Entry, second: _Entry) -> ToolNameConflictError:
    (first_set, first_spec), (second_set, second_spec) = first, second
    suggestion = re.sub(r"\W+", "_", second_set.name).strip("_") or "other"
    return ToolNameConflictError(
        f"tool name {name!r} is offered by both {first_spec.origin!r} (toolset "
        f"{first_set.name!r}) and {second_spec.origin!r} (toolset {second_set.name!r}); "
        f"give one of them a prefix, e.g. toolset.prefixed({suggestion!r})"
    )
