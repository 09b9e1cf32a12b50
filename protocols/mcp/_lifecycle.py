"""Counted ``async with`` around a task group: shared by ``MCPToolset`` and ``MCPServers``.

Both may be entered more than once (by the host, then again by an agent that is handed them):
the first enter opens a task group for the session owner tasks and starts; the last exit stops
and closes it. Stopping runs shielded, so cleanup completes even when the caller was cancelled,
and the task group is exited only after it: cancel scopes must exit in reverse order of entry.
"""

from __future__ import annotations

from types import TracebackType
from typing import Self

import anyio
import anyio.abc


class TaskGroupLifecycle:
    """Mixin: ``async with`` enters once, however often it is nested.

    Subclasses implement ``start(tg)`` (which records ``tg`` in ``self._tg``) and ``stop()``,
    the public lifecycle that a host owning a task group calls itself. An object started that
    way (``MCPServers`` starting its toolsets in its own task group) counts entries but neither
    starts nor stops on them.
    """

    _tg: anyio.abc.TaskGroup | None = None
    _depth = 0
    _owns_tg = False

    async def start(self, tg: anyio.abc.TaskGroup) -> None:
        """Start, running background tasks in ``tg`` (which outlives this object's use)."""
        raise NotImplementedError

    async def stop(self) -> None:
        """Stop what :meth:`start` started; the task group is its owner's to exit."""
        raise NotImplementedError

    async def __aenter__(self) -> Self:
        if self._depth > 0 or self._tg is not None:
            self._depth += 1
            return self
        tg = anyio.create_task_group()
        await tg.__aenter__()
        try:
            await self.start(tg)
        except BaseException:
            await self._shut_down(tg)
            raise
        self._owns_tg = True
        self._depth = 1
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self._depth -= 1
        if self._depth > 0 or not self._owns_tg:
            return
        self._owns_tg = False
        await self._shut_down(self._tg)

    async def _shut_down(self, tg: anyio.abc.TaskGroup | None) -> None:
        self._tg = None
        with anyio.CancelScope(shield=True):
            await self.stop()
        if tg is not None:
            # Every child has finished, so this exit neither waits nor re-raises; the caller's
            # own exception (if any) propagates unchanged.
            await tg.__aexit__(None, None, None)
