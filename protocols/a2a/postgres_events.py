"""The event bus that spans every node on one PostgreSQL database (LISTEN/NOTIFY).

Task events go out on channel ``a2a_events``; an event too large for a NOTIFY payload
(PostgreSQL's limit is 8000 bytes) is stored in ``a2a_large_events`` and its id is notified
instead. Control requests between nodes (stop a run, hand an answer to a waiting agent, reload
push configs: :mod:`.cross_node`) use ``a2a_control``. The tables are made by the store
(:mod:`.postgres_store`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from typing import TYPE_CHECKING, Any

import asyncpg

from .events import ControlHandler, EventBus
from .types import StreamResponse

if TYPE_CHECKING:
    from .postgres_store import PostgresTaskStore

__all__ = ["PostgresEventBus"]

logger = logging.getLogger("agent_runtime.protocols.a2a.store")

EVENTS_CHANNEL = "a2a_events"
CONTROL_CHANNEL = "a2a_control"
MAX_NOTIFY_BYTES = 7900
"""Larger payloads go through ``a2a_large_events`` (PostgreSQL refuses over 8000 bytes)."""
LARGE_EVENT_TTL_S = 600
"""How long a large event's row is kept (the lease keeper deletes older ones)."""
# A batch of notifications in one statement (unnest yields, and so notifies, in array order).
_NOTIFY_MANY = "SELECT pg_notify(c, p) FROM unnest($1::text[], $2::text[]) AS t(c, p)"


class PostgresEventBus(EventBus):
    """Task events and control requests across every node on the store's database.

    Local subscribers get an event as it is published; other nodes get it through NOTIFY, sent
    in publish order by one sender task. Received events are handled in arrival order by one
    receiver task; a node ignores its own notifications. A malformed notification is logged and
    dropped, never allowed to stop the receiver.
    """

    def __init__(self, store: PostgresTaskStore) -> None:
        super().__init__()
        self.store = store
        self.node_id = store.node_id
        self._outbox: asyncio.Queue[tuple[str, str] | None] = asyncio.Queue()
        self._inbox: asyncio.Queue[tuple[str, str]] = asyncio.Queue()
        self._listener: asyncpg.Connection | None = None
        self._sender: asyncio.Task[None] | None = None
        self._receiver: asyncio.Task[None] | None = None
        self._on_control: ControlHandler | None = None
        self._control_tasks: set[asyncio.Task[None]] = set()
        self._reconnect: asyncio.Task[None] | None = None

    @property
    def spans_processes(self) -> bool:
        return True

    def _envelope(self, **fields: Any) -> dict[str, Any]:
        return {"node": self.node_id, **fields}

    def publish(self, task_id: str, event: StreamResponse) -> None:
        self.deliver_local(task_id, event)
        if not self._closed:
            envelope = json.dumps(self._envelope(task=task_id))
            # Splice the event's own JSON in, rather than re-encoding a dict of it.
            payload = envelope[:-1] + ', "event": ' + event.to_wire_json() + "}"
            self._outbox.put_nowait((EVENTS_CHANNEL, payload))

    async def send_control(self, message: dict[str, Any]) -> None:
        payload = json.dumps(self._envelope(**message))
        await (await self.store.pool()).execute(
            "SELECT pg_notify($1, $2)", CONTROL_CHANNEL, payload
        )

    async def start(self, on_control: ControlHandler | None = None) -> None:
        if self._listener is not None or self._closed:
            return
        self._on_control = on_control
        await self.store.pool()  # the schema exists before anyone reads a2a_large_events
        await self._listen()
        loop = asyncio.get_running_loop()
        self._sender = loop.create_task(self._send_loop())
        self._receiver = loop.create_task(self._receive_loop())

    async def _listen(self) -> None:
        conn = await asyncpg.connect(self.store.dsn)
        await conn.add_listener(EVENTS_CHANNEL, self._heard)
        await conn.add_listener(CONTROL_CHANNEL, self._heard)
        conn.add_termination_listener(self._lost)
        self._listener = conn

    def _heard(self, conn: Any, pid: int, channel: str, payload: str) -> None:
        self._inbox.put_nowait((channel, payload))

    def _lost(self, conn: Any) -> None:
        """The LISTEN connection broke (server restart, network): listen again, with retries.

        What other nodes publish in the gap does not reach this node's subscribers.
        """
        if self._closed or conn is not self._listener:
            return
        logger.warning("A2A event bus lost its PostgreSQL LISTEN connection; reconnecting")
        self._listener = None
        self._reconnect = asyncio.get_running_loop().create_task(self._listen_again())

    async def _listen_again(self) -> None:
        while not self._closed:
            try:
                await self._listen()
                return
            except Exception:
                logger.warning("A2A event bus: LISTEN reconnect failed; retrying", exc_info=True)
                await asyncio.sleep(1.0)

    # ------------------------------------------------------------------ sending

    async def _send_loop(self) -> None:
        while True:
            item = await self._outbox.get()
            batch: list[tuple[str, str]] = []
            stop = item is None
            if item is not None:
                batch.append(item)
            while not stop and not self._outbox.empty():
                more = self._outbox.get_nowait()
                if more is None:
                    stop = True
                else:
                    batch.append(more)
            if batch:
                try:
                    await self._notify(batch)
                except Exception:
                    logger.warning("could not send %d A2A event(s)", len(batch), exc_info=True)
            if stop:
                return

    async def _notify(self, batch: list[tuple[str, str]]) -> None:
        """One statement for the whole batch (one round trip): NOTIFYs are delivered at commit,
        in order. Payloads too large for a NOTIFY are stored first, in the same transaction."""
        async with (await self.store.pool()).acquire() as conn:
            large = [i for i, (_, p) in enumerate(batch) if len(p.encode()) > MAX_NOTIFY_BYTES]
            if not large:
                await conn.execute(_NOTIFY_MANY, [c for c, _ in batch], [p for _, p in batch])
                return
            async with conn.transaction():
                batch = list(batch)
                for i in large:
                    channel, payload = batch[i]
                    ref = await conn.fetchval(
                        "INSERT INTO a2a_large_events (payload) VALUES ($1) RETURNING id", payload
                    )
                    envelope = json.loads(payload)
                    batch[i] = (channel, json.dumps(self._envelope(task=envelope["task"], ref=ref)))
                await conn.execute(_NOTIFY_MANY, [c for c, _ in batch], [p for _, p in batch])

    # ------------------------------------------------------------------ receiving

    async def _receive_loop(self) -> None:
        while True:
            channel, payload = await self._inbox.get()
            try:
                await self._received(channel, payload)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("dropped a malformed A2A notification on %s", channel, exc_info=True)

    async def _received(self, channel: str, payload: str) -> None:
        data = json.loads(payload)
        if not isinstance(data, dict) or data.get("node") == self.node_id:
            return
        if channel == CONTROL_CHANNEL:
            if self._on_control is not None:
                # Handled on its own, so a slow request never holds up the events behind it.
                job = asyncio.get_running_loop().create_task(self._on_control(data))
                self._control_tasks.add(job)
                job.add_done_callback(self._control_tasks.discard)
            return
        task_id = data.get("task")
        if not isinstance(task_id, str) or not self.has_subscribers(task_id):
            return
        if "ref" in data:
            text = await (await self.store.pool()).fetchval(
                "SELECT payload FROM a2a_large_events WHERE id = $1", int(data["ref"])
            )
            if text is None:
                raise ValueError(f"large event {data['ref']!r} is gone")
            data = json.loads(text)
        event = StreamResponse.from_wire(data["event"])
        self.deliver_local(task_id, event)

    # ------------------------------------------------------------------ shutdown

    async def aclose(self) -> None:
        if self._closed:
            return
        await super().aclose()
        if self._sender is not None:
            self._outbox.put_nowait(None)  # send what is queued, then stop
            try:
                await asyncio.wait_for(self._sender, timeout=5.0)
            except (TimeoutError, asyncio.CancelledError):
                self._sender.cancel()
        for job in [self._receiver, self._reconnect, *self._control_tasks]:
            if job is not None:
                job.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await job
        if self._listener is not None:
            with contextlib.suppress(Exception):
                await self._listener.close(timeout=5)
            self._listener = None
