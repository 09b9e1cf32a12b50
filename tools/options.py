"""The options a function is made a tool with, shared by ``@tool``, ``Tool(...)``,
``FunctionToolset.add`` and ``@toolset.tool``."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, TypedDict

from agent_runtime.types import ToolAnnotations

__all__ = ["ToolOptions", "check_options"]


class ToolOptions(TypedDict, total=False):
    """The options of ``@tool(...)``, ``Tool(...)``, ``FunctionToolset.add`` and ``.tool``.

    ``annotations`` or the flag shortcuts (``title``, ``read_only``, ``destructive``,
    ``idempotent``, ``open_world``; a shortcut wins over the same field of ``annotations``)
    tell hosts how careful to be; ``requires_approval`` makes the dispatcher ask before each
    call.
    """

    name: str | None
    description: str | None
    annotations: ToolAnnotations | None
    title: str | None
    read_only: bool | None
    destructive: bool | None
    idempotent: bool | None
    open_world: bool | None
    requires_approval: bool


def check_options(options: Mapping[str, Any]) -> None:
    """Refuse an unknown option as Python refuses an unknown keyword argument."""
    unknown = sorted(options.keys() - ToolOptions.__optional_keys__)
    if unknown:
        raise TypeError(f"unexpected tool option(s): {', '.join(unknown)}")
