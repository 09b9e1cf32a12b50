"""``FunctionToolset``: a toolset of Python functions.

The local counterpart of an MCP server or an A2A peer: it lists the ``@tool`` functions it holds
and runs one by name. Its ``name`` becomes the ``origin`` of its tools' specs, which is what a
name-clash error reports.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from typing import Any, ParamSpec, TypeVar, Unpack, overload

from agent_runtime.errors import UserError
from agent_runtime.toolset import ToolContext, Toolset
from agent_runtime.types import ToolResult, ToolSpec

from .decorator import Tool
from .options import ToolOptions, check_options

__all__ = ["FunctionToolset"]

P = ParamSpec("P")
R = TypeVar("R")


class FunctionToolset(Toolset):
    """Python functions offered as tools.

    ``FunctionToolset([get_weather, search], name="local")``, then ``.add(fn)`` or the
    ``@toolset.tool`` decorator for more. Adding or removing a tool notifies listeners, so an
    agent that is already running sees the new list on its next step.
    """

    def __init__(
        self,
        functions: Iterable[Callable[..., Any] | Tool[..., Any]] = (),
        name: str = "local",
    ) -> None:
        super().__init__()
        self.name = name
        self._tools: dict[str, Tool[..., Any]] = {}
        self._specs: dict[str, ToolSpec] = {}
        for fn in functions:
            self._add(fn, {})

    # ------------------------------------------------------------------ building

    def add(
        self, fn: Callable[..., Any] | Tool[..., Any], **options: Unpack[ToolOptions]
    ) -> Tool[..., Any]:
        """Add a function (or an existing ``Tool``) and return its ``Tool``."""
        return self._add(fn, options)

    @overload
    def tool(self, fn: Callable[P, R], /) -> Tool[P, R]: ...

    @overload
    def tool(self, /, **options: Unpack[ToolOptions]) -> Callable[[Callable[P, R]], Tool[P, R]]: ...

    def tool(
        self, fn: Callable[P, R] | None = None, /, **options: Unpack[ToolOptions]
    ) -> Tool[P, R] | Callable[[Callable[P, R]], Tool[P, R]]:
        """Decorator that makes a function a tool of this toolset: ``@toolset.tool``."""
        check_options(options)

        def make(func: Callable[P, R]) -> Tool[P, R]:
            return self._add(func, options)

        return make(fn) if fn is not None else make

    def remove(self, name: str) -> None:
        """Stop offering tool ``name``."""
        if name not in self._tools:
            raise UserError(f"toolset {self.name!r} has no tool {name!r}")
        del self._tools[name]
        del self._specs[name]
        self.notify_tools_changed()

    def _add(self, fn: Callable[..., Any] | Tool[..., Any], options: ToolOptions) -> Tool[Any, Any]:
        check_options(options)
        if isinstance(fn, Tool):
            if any(v not in (None, False) for v in options.values()):
                raise UserError(
                    f"{fn.name!r} is already a tool; set its options in its @tool(...) decorator"
                )
            item: Tool[..., Any] = fn
        else:
            item = Tool(fn, **options)
        if item.needs_binding:
            raise UserError(
                f"tool {item.name!r} is a method: add it through an instance (obj.{item.name})"
            )
        if item.name in self._tools:
            raise UserError(
                f"toolset {self.name!r} already has a tool named {item.name!r}; "
                "pass name=... to tell them apart"
            )
        spec = item.spec
        if spec.origin != self.name:
            spec = spec.model_copy(update={"origin": self.name})
        self._tools[item.name] = item
        self._specs[item.name] = spec
        self.notify_tools_changed()
        return item

    # ------------------------------------------------------------------ the Toolset face

    @property
    def tools(self) -> Mapping[str, Tool[..., Any]]:
        """The tools held, by name (a copy)."""
        return dict(self._tools)

    async def list_tools(self) -> list[ToolSpec]:
        return list(self._specs.values())

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        item = self._tools.get(name)
        if item is None:
            raise UserError(f"toolset {self.name!r} has no tool {name!r}")
        return await item.call(arguments, ctx)
