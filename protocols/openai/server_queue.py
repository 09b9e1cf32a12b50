"""The served model's queue: one generation at a time, in the order requests arrived.

A local model generates one turn at a time (it holds one latent cache and the CPU or GPU); the
server makes the requests that arrive meanwhile wait their turn, first come first served, up
to ``max_waiting`` of them; one more is refused (HTTP 429, which clients retry). A request
whose client leaves while it waits gives up its place. The counters are what the health
endpoint reports.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio

__all__ = ["GenerationQueue", "QueueFull"]


class QueueFull(Exception):
    """``max_waiting`` requests already wait for the model."""


class GenerationQueue:
    """A fair (FIFO) slot for one generation at a time, with counters."""

    concurrency = 1
    """Generations run at once (what ``/v1/models`` reports)."""

    def __init__(self, max_waiting: int = 64) -> None:
        if max_waiting < 0:
            raise ValueError("max_waiting must be >= 0")
        self.max_waiting = max_waiting
        self._lock = anyio.Lock()  # hands itself to waiters in the order they came
        self.waiting = 0
        self.active = 0
        self.served = 0
        """Generations that ran to their end."""
        self.cancelled = 0
        """Requests whose client left before the answer was complete."""

    @asynccontextmanager
    async def slot(self) -> AsyncIterator[None]:
        """Wait for the model (raises :class:`QueueFull` at once when the queue is full)."""
        if self._lock.locked() and self.waiting >= self.max_waiting:
            raise QueueFull(f"{self.waiting} requests already wait for the model")
        self.waiting += 1
        try:
            await self._lock.acquire()
        finally:
            self.waiting -= 1
        self.active += 1
        try:
            yield
        finally:
            self.active -= 1
            self._lock.release()

    def snapshot(self) -> dict[str, int]:
        return {
            "active": self.active,
            "waiting": self.waiting,
            "served": self.served,
            "cancelled": self.cancelled,
        }
