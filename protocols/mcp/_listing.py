"""A server's tool list, screened so that one bad tool never costs the others.

Real servers list tools the SDK or the runtime cannot use: an input schema that is an array, a
string or a bare ``$ref``; two tools with one name; a tool that only runs as a task. The SDK
validates a listing as a whole (one malformed tool fails every tool of the server, with a raw
pydantic dump), and two tools with one name make the runtime's name index refuse the whole tool
set. In line with "normalised, not rejected", each such tool is left out on its own, with one
clear warning naming the server and the tool.

Tasks: a tool whose ``execution.taskSupport`` is ``"required"`` must be called as a task
(``tools/call`` with ``task``, then ``tasks/get`` / ``tasks/result`` / ``tasks/cancel``). The SDK
(2.3) defines the task types only: it validates the answer to ``tools/call`` as a plain result,
so a task's ``CreateTaskResult`` cannot pass through it, and it has no task methods. Such tools
are left out with a warning rather than offered and failing on every call. ``"optional"`` tools
are offered and called the ordinary way.
"""

from __future__ import annotations

import logging
from typing import Any, get_args

import mcp_types as mt
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_types import methods as wire_methods
from pydantic import BaseModel, ValidationError

from ._failures import brief

_MAX_PAGES = 1000
_PREVIEW_CHARS = 80


def _preview(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= _PREVIEW_CHARS else text[: _PREVIEW_CHARS - 3] + "..."


def _wire_tool_model(version: str | None) -> type[BaseModel] | None:
    """The SDK's wire model of a tool for ``version`` (what it will check the listing with)."""
    if version is None:
        return None
    listing = wire_methods.SERVER_RESULTS.get(("tools/list", version))
    if not isinstance(listing, type) or not issubclass(listing, BaseModel):
        return None
    field = listing.model_fields.get("tools")
    args = get_args(field.annotation) if field is not None else ()
    model = args[0] if args else None
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def _schema_problem(schema: Any) -> str | None:
    """Why an input schema cannot describe a tool's arguments (always a JSON object)."""
    if not isinstance(schema, dict):
        return f"its inputSchema is not a JSON Schema object (got {_preview(schema)})"
    kind = schema.get("type")
    if kind == "object":
        return None
    if kind is None and "$ref" in schema:
        return (
            'its inputSchema is a bare "$ref"; arguments are a JSON object, so the root must '
            'say "type": "object"'
        )
    return (
        f'its inputSchema has "type": {_preview(kind)}; arguments are a JSON object, so the '
        'root must be "type": "object"'
    )


def _requires_task(tool: mt.Tool) -> bool:
    execution = tool.execution
    return execution is not None and execution.task_support == "required"


class ToolScreen:
    """Screens one server's tool listings; each distinct problem is logged once per toolset
    (a listing is fetched again after every change or restart)."""

    def __init__(self, server: str, logger: logging.Logger) -> None:
        self.server = server
        self.logger = logger
        self.left_out: dict[str, str] = {}
        """Each tool the last listing left out, with the reason."""
        self._pending: dict[str, str] = {}  # left out of the pages of the listing under way
        self._noted: set[str] = set()
        self._models: dict[str | None, type[BaseModel] | None] = {}

    def _leave_out(self, name: str, reason: str) -> None:
        self._pending.setdefault(name, reason)
        message = f"MCP server {self.server!r}: tool {name!r} left out: {reason}"
        if message not in self._noted:
            self._noted.add(message)
            self.logger.warning("%s", message)

    def _problem(self, entry: Any, wire_model: type[BaseModel] | None) -> str | None:
        if not isinstance(entry, dict):
            return f"the entry is not an object (got {_preview(entry)})"
        problem = _schema_problem(entry.get("inputSchema"))
        if problem is not None:
            return problem
        try:
            if wire_model is not None:
                wire_model.model_validate(entry, by_name=False)
            mt.Tool.model_validate(entry, by_name=False)
        except ValidationError as exc:
            return f"it does not fit the MCP tool shape: {brief(exc)}"
        return None

    def screen_raw(self, result: dict[str, Any], version: str | None) -> None:
        """Drop, in place, the entries of a raw ``tools/list`` result that would fail the SDK's
        validation of the whole list, and later entries that repeat a name."""
        if version not in self._models:
            self._models[version] = _wire_tool_model(version)
        wire_model = self._models[version]
        entries: list[Any] = result["tools"]
        kept: list[Any] = []
        names: set[str] = set()
        for index, entry in enumerate(entries):
            raw_name = entry.get("name") if isinstance(entry, dict) else None
            name = raw_name if isinstance(raw_name, str) and raw_name else f"#{index}"
            problem = self._problem(entry, wire_model)
            if problem is None and name in names:
                problem = self._duplicate()
            if problem is not None:
                self._leave_out(name, problem)
                continue
            names.add(name)
            kept.append(entry)
        if len(kept) != len(entries):
            result["tools"] = kept

    def _duplicate(self) -> str:
        return "the server lists another tool of the same name before it (the first is kept)"

    def usable(self, tools: list[mt.Tool]) -> list[mt.Tool]:
        """The tools the runtime can offer, in the server's order (across all pages)."""
        out: list[mt.Tool] = []
        names: set[str] = set()
        for tool in tools:
            if tool.name in names:
                self._leave_out(tool.name, self._duplicate())
                continue
            names.add(tool.name)
            if _requires_task(tool):
                self._leave_out(
                    tool.name,
                    'it can only be called as a task (execution.taskSupport "required"), '
                    "which this client does not do",
                )
                continue
            out.append(tool)
        self.left_out, self._pending = self._pending, {}
        return out


async def fetch_tools(client: Client, meta: mt.RequestParamsMeta | None = None) -> list[mt.Tool]:
    """Every page of the server's tool list (none for a server without tools); ``meta``: the
    ``_meta`` each page's request carries."""
    caps = client.server_capabilities
    if caps.tools is None and (caps.resources is not None or caps.prompts is not None):
        return []  # a server of resources or prompts only
    tools: list[mt.Tool] = []
    cursor: str | None = None
    seen: set[str] = set()
    for _ in range(_MAX_PAGES):
        try:
            page = await client.list_tools(cursor=cursor, meta=meta)
        except MCPError as exc:
            if exc.code == mt.METHOD_NOT_FOUND and not tools:
                return []  # no tools capability, and said so only now
            raise
        tools.extend(page.tools)
        cursor = page.next_cursor
        if not cursor or cursor in seen:
            break
        seen.add(cursor)
    return tools
