"""The Toolset interface: where tools come from.

A toolset is an async context manager (entering it may start a subprocess or open a
connection), lists its tools, runs one tool by name, and tells listeners when its list changed.
Implementations: Python functions (``agent_runtime.tools``), one MCP server
(``agent_runtime.protocols.mcp``), one A2A peer (``agent_runtime.protocols.a2a``).
Combinators in ``agent_runtime.combinators`` wrap any toolset.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import TYPE_CHECKING, Any, Protocol, Self, runtime_checkable

from .types import ToolResult, ToolSpec

if TYPE_CHECKING:
    from .combinators import (
        ApprovalRequiredToolset,
        FilteredToolset,
        PrefixedToolset,
        RenamedToolset,
    )

ProgressCallback = Callable[[float, float | None, str | None], Awaitable[None]]
"""``(progress, total, message)``: a tool reporting how far it got."""

ToolsChangedListener = Callable[[], None]


async def _ignore_progress(progress: float, total: float | None, message: str | None) -> None:
    return None


@dataclass
class ToolContext:
    """What a running tool may know about its call and use to report back."""

    call_id: str = ""
    tool_name: str = ""
    report_progress: ProgressCallback = _ignore_progress
    timeout_s: float | None = None
    """The dispatcher's deadline for this call, so a remote tool can pass it on."""
    extra: dict[str, Any] = field(default_factory=dict)
    """Run-scoped values a host hands to its tools (dependencies, the run's id ...)."""

    @property
    def wants_progress(self) -> bool:
        """Whether anyone listens to progress; a remote tool can skip asking for it if not."""
        return self.report_progress is not _ignore_progress


class Toolset(ABC):
    """A source of tools. Subclasses implement ``list_tools`` and ``call_tool``.

    ``call_tool`` receives arguments that the dispatcher has already parsed and validated
    against the tool's input schema. It returns a ``ToolResult``; raising is allowed and the
    dispatcher turns the exception into an ``is_error`` result.
    """

    #: Label used in ``ToolSpec.origin`` and in error messages.
    name: str = "toolset"

    def __init__(self) -> None:
        self._listeners: list[ToolsChangedListener] = []

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        return None

    @property
    def enforces_timeout(self) -> bool:
        """True when ``call_tool`` itself ends a call at ``ToolContext.timeout_s`` (a remote
        protocol that cancels the request on the server does); the dispatcher then adds no
        deadline of its own.

        A toolset that does says so with a class attribute (``enforces_timeout = True``); a
        wrapper answers for its inner toolset (``WrapperToolset``), so none has to copy it.
        """
        return False

    @abstractmethod
    async def list_tools(self) -> list[ToolSpec]:
        """The tools on offer now."""

    @abstractmethod
    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Run tool ``name`` (the name this toolset lists) with validated ``arguments``."""

    # ------------------------------------------------------------------ change notification

    def add_tools_changed_listener(self, listener: ToolsChangedListener) -> None:
        """Call ``listener`` whenever this toolset's tool list changes."""
        if not hasattr(self, "_listeners"):
            self._listeners = []
        self._listeners.append(listener)

    def remove_tools_changed_listener(self, listener: ToolsChangedListener) -> None:
        if listener in getattr(self, "_listeners", []):
            self._listeners.remove(listener)

    def notify_tools_changed(self) -> None:
        """Implementations call this when their list changed (e.g. MCP ``list_changed``)."""
        for listener in list(getattr(self, "_listeners", [])):
            listener()

    # ------------------------------------------------------------------ combinators

    def prefixed(self, prefix: str, sep: str = "__") -> PrefixedToolset:
        from .combinators import PrefixedToolset

        return PrefixedToolset(self, prefix, sep)

    def filtered(self, keep: Callable[[ToolSpec], bool]) -> FilteredToolset:
        from .combinators import FilteredToolset

        return FilteredToolset(self, keep)

    def renamed(self, mapping: dict[str, str]) -> RenamedToolset:
        from .combinators import RenamedToolset

        return RenamedToolset(self, mapping)

    def approval_required(
        self, when: Callable[[ToolSpec], bool] | None = None
    ) -> ApprovalRequiredToolset:
        from .combinators import ApprovalRequiredToolset

        return ApprovalRequiredToolset(self, when)


@runtime_checkable
class ToolsetProvider(Protocol):
    """Anything that can present itself as a toolset (a ``@tool`` function does)."""

    def as_toolset(self) -> Toolset: ...


ToolsLike = Toolset | ToolsetProvider
"""What ``Agent(tools=[...])`` accepts."""


def to_toolsets(items: Sequence[ToolsLike]) -> list[Toolset]:
    """Turn ``Agent(tools=...)`` items into toolsets, with a clear error for anything else."""
    from .errors import UserError

    out: list[Toolset] = []
    for item in items:
        if isinstance(item, Toolset):
            out.append(item)
        elif isinstance(item, ToolsetProvider):
            out.append(item.as_toolset())
        else:
            raise UserError(
                f"{item!r} is not a tool: decorate functions with @agent_runtime.tool "
                "or pass a Toolset"
            )
    return out
