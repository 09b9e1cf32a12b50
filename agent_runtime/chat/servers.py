"""The MCP servers behind a chat, as the person sees them: state, failures, stderr, log lines.

The chat is core code and does not import the MCP package: it recognises a group of servers by
its shape (``ServerGroup``: ``configs``, the connected ``toolsets`` and the ``failures`` of those
that did not start) and a server by its attributes. ``ChatLog`` takes over Python logging for
the session: warnings are printed as the session's own lines (above a prompt or a running
turn), and what each stdio server writes to stderr (logged at DEBUG by its toolset) is kept,
the last lines per server, for ``/servers``.
"""

from __future__ import annotations

import logging
import threading
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any, Protocol, runtime_checkable

_MCP_LOGGER = "agent_runtime.mcp"
_STDERR_PREFIX = "stderr: "
_STDERR_LINES = 20


@runtime_checkable
class ServerGroup(Protocol):
    """A toolset that is a group of MCP servers (``MCPServers``)."""

    configs: dict[str, Any]
    toolsets: list[Any]
    failures: dict[str, str]


def server_groups(toolsets: Iterable[object]) -> list[ServerGroup]:
    return [t for t in toolsets if isinstance(t, ServerGroup)]


def wire_sampling_approval(
    groups: Iterable[ServerGroup], approval: Callable[[str, Any], Any]
) -> None:
    """Make every connected server's sampling requests ask ``approval(server, params)``."""
    for group in groups:
        for server in group.toolsets:
            if getattr(server, "sampling_model", None) is not None:
                name = str(getattr(server, "name", "?"))
                server.sampling_approval = _bound(approval, name)


def _bound(approval: Callable[[str, Any], Any], name: str) -> Callable[[Any], Any]:
    def ask(params: Any) -> Any:
        return approval(name, params)

    return ask


class ChatLog(logging.Handler):
    """Python logging during a chat: shown lines and kept server stderr."""

    def __init__(self, show: Callable[[logging.LogRecord], None], level: int) -> None:
        super().__init__(logging.DEBUG)
        self._show = show
        self._show_level = level
        self._stderr: dict[str, deque[str]] = {}
        self._guard = threading.Lock()
        self._owner = threading.get_ident()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # noqa: BLE001 - a bad log call must not break the chat
            return
        if record.name.startswith(_MCP_LOGGER + ".") and message.startswith(_STDERR_PREFIX):
            server = record.name[len(_MCP_LOGGER) + 1 :]
            with self._guard:
                lines = self._stderr.setdefault(server, deque(maxlen=_STDERR_LINES))
                lines.append(message[len(_STDERR_PREFIX) :])
            return
        if record.levelno >= self._show_level and threading.get_ident() == self._owner:
            self._show(record)

    def stderr_of(self, server: str) -> list[str]:
        """The last lines ``server`` wrote to stderr while it ran."""
        with self._guard:
            return list(self._stderr.get(server, ()))

    def install(self) -> Callable[[], None]:
        """Route all logging here (server stderr kept) until the returned function is called."""
        root = logging.getLogger()
        mcp = logging.getLogger(_MCP_LOGGER)
        saved_handlers, saved_level = list(root.handlers), mcp.level
        root.handlers = [self]
        mcp.setLevel(logging.DEBUG)

        def restore() -> None:
            root.handlers = saved_handlers
            mcp.setLevel(saved_level)

        return restore
