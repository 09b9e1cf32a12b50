"""``MCPServers``: many MCP servers started together, a failing one left out.

A host with ten configured servers should not wait for them one by one, nor fail because one of
them is misconfigured. All servers connect concurrently; each one that fails is logged with its
reason (and its stderr) in ``failures`` and left out of ``toolsets``. Every session owner task
lives in one task group that this object enters and exits itself, so cleanup happens in the
task that entered it.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import anyio
import anyio.abc

from agent_runtime.combinators import CombinedToolset
from agent_runtime.errors import UserError
from agent_runtime.toolset import ToolContext, Toolset
from agent_runtime.types import ToolResult, ToolSpec

from ._lifecycle import TaskGroupLifecycle
from .config import ServerConfig, load_mcp_config
from .errors import MCPConnectionError
from .toolset import MCPToolset

logger = logging.getLogger("agent_runtime.mcp")


class MCPServers(TaskGroupLifecycle, Toolset):
    """Start every configured MCP server concurrently; keep the ones that came up.

    ``toolset_kwargs`` go to each ``MCPToolset`` (``call_timeout_s``, ``sampling_model``,
    ``roots`` ...); they are defaults that a server's own config overrides (its ``timeout_s``
    and ``protocol``). After entering, ``toolsets`` lists the connected servers in config order
    and ``failures`` maps each server that failed to start to the reason (without the server's
    name; stderr tail included). Each failure is logged once, as a warning naming the server.
    A server that starts but later keeps crashing is given up by its toolset (see
    ``MCPToolset``): its tools drop out of the list and the other servers go on.

    It is itself a ``Toolset``: ``Agent(model, [servers])`` offers the union of the connected
    servers' (prefixed) tools, routes each call to its server, and hears any server's
    tools/list_changed. Entering is counted, so entering it yourself and handing it to an agent
    that enters it again starts the servers once.
    """

    enforces_timeout = True  # each request carries ctx.timeout_s; the server is told to cancel

    name = "mcp"

    def __init__(self, configs: Mapping[str, ServerConfig], **toolset_kwargs: Any) -> None:
        super().__init__()
        self.configs = dict(configs)
        self._kwargs = toolset_kwargs
        self.toolsets: list[MCPToolset] = []
        self.failures: dict[str, str] = {}
        self._all: list[MCPToolset] = []
        self._tg: anyio.abc.TaskGroup | None = None
        self._combined: CombinedToolset | None = None

    @classmethod
    def from_config(
        cls,
        source: Mapping[str, Any] | str | Path,
        *,
        environ: Mapping[str, str] | None = None,
        base_dir: str | Path | None = None,
        **toolset_kwargs: Any,
    ) -> MCPServers:
        """Servers from a host's MCP config (a path or the parsed JSON; see ``load_mcp_config``,
        which ``environ`` and ``base_dir`` go to).

        ``call_timeout_s`` (a toolset keyword) is the default call timeout for servers whose
        entry sets none; the file's top-level ``mcp_timeout_s`` fills it in before that.
        """
        return cls(load_mcp_config(source, environ, base_dir=base_dir), **toolset_kwargs)

    def __getitem__(self, name: str) -> MCPToolset:
        for toolset in self.toolsets:
            if toolset.name == name:
                return toolset
        raise KeyError(name)

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Start every server concurrently in ``tg``; keep the ones that came up."""
        self._tg = tg
        self._all = [
            MCPToolset(name, config, **self._kwargs) for name, config in self.configs.items()
        ]
        results: dict[str, str | None] = {}

        async def start_one(toolset: MCPToolset) -> None:
            try:
                await toolset.start(tg)
                results[toolset.name] = None
            except MCPConnectionError as exc:
                # The reason alone: whoever shows it names the server once, not twice.
                results[toolset.name] = exc.reason + (
                    f"\n--- last lines of its stderr ---\n{exc.stderr_tail}"
                    if exc.stderr_tail
                    else ""
                )
            except Exception as exc:  # noqa: BLE001 - one bad server must not stop the rest
                results[toolset.name] = f"{type(exc).__name__}: {exc}"

        async with anyio.create_task_group() as starters:
            for toolset in self._all:
                starters.start_soon(start_one, toolset)
        self.toolsets, self.failures = [], {}
        for toolset in self._all:
            failure = results.get(toolset.name)
            if failure is None:
                self.toolsets.append(toolset)
            else:
                self.failures[toolset.name] = failure
                logger.warning(
                    "MCP server %r failed to start and is left out: %s", toolset.name, failure
                )
        self._combined = CombinedToolset(self.toolsets, name=self.name)
        self._combined.add_tools_changed_listener(self.notify_tools_changed)

    async def stop(self) -> None:
        """Stop every server this object started."""
        self._combined = None
        self.toolsets = []
        async with anyio.create_task_group() as stoppers:
            for toolset in self._all:
                stoppers.start_soon(toolset.stop)

    def _require(self) -> CombinedToolset:
        if self._combined is None:
            raise UserError("MCPServers is not entered: use `async with servers:` (or an Agent)")
        return self._combined

    async def list_tools(self) -> list[ToolSpec]:
        """The connected servers' tools (names must not clash: see the toolsets' prefixes)."""
        return await self._require().list_tools()

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Route the call to the server that lists ``name``."""
        return await self._require().call_tool(name, arguments, ctx)

    def __repr__(self) -> str:
        return f"MCPServers({list(self.configs)!r})"


def mcp_toolsets_from_config(
    source: Mapping[str, Any] | str | Path,
    environ: Mapping[str, str] | None = None,
    base_dir: str | Path | None = None,
    **toolset_kwargs: Any,
) -> MCPServers:
    """``MCPServers`` for a host's MCP config (a path or the parsed JSON)."""
    return MCPServers.from_config(source, environ=environ, base_dir=base_dir, **toolset_kwargs)
