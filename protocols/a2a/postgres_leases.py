"""Node leases on a shared PostgreSQL store: which nodes are alive, and the runs of those that are not.

Each node keeps a row in ``a2a_nodes`` whose ``lease_until`` it pushes forward every
``heartbeat_s``; a task row that is running (or whose agent call waits for an answer) names its
node (``node_id``). On each beat a node finishes as FAILED the running tasks of nodes whose lease
has expired (killed, partitioned, or stalled past the lease) and publishes that status, so
subscribers anywhere see the task end. A node that was only stalled finds its later saves of
those tasks refused (the store never changes a terminal row), so the failure stands.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from typing import TYPE_CHECKING

from .postgres_events import LARGE_EVENT_TTL_S
from .store import PARSE_ERRORS, RUNNING_STATES, fail_interrupted, task_time_ms, unreadable_reason
from .types import INTERRUPTED_STATES, StreamResponse, Task, TaskStatusUpdateEvent

if TYPE_CHECKING:
    from .postgres_store import PostgresTaskStore

__all__ = ["NODE_LOST_NOTE", "LeaseKeeper"]

logger = logging.getLogger("agent_runtime.protocols.a2a.store")

NODE_LOST_NOTE = "The agent node running this task stopped; the run was lost."


class LeaseKeeper:
    """Renews one node's lease and fails the runs of nodes whose lease expired."""

    def __init__(self, store: PostgresTaskStore) -> None:
        self.store = store
        self._heartbeat: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Take the lease and start renewing it (idempotent)."""
        await self.renew()
        if self._heartbeat is None:
            self._heartbeat = asyncio.get_running_loop().create_task(self._beat())

    async def renew(self) -> None:
        await (await self.store.pool()).execute(
            "INSERT INTO a2a_nodes (node_id, lease_until)"
            " VALUES ($1, clock_timestamp() + $2::float8 * interval '1 second')"
            " ON CONFLICT (node_id) DO UPDATE SET lease_until = EXCLUDED.lease_until",
            self.store.node_id,
            self.store.lease_s,
        )

    async def _beat(self) -> None:
        while True:
            await asyncio.sleep(self.store.heartbeat_s)
            try:
                await self.renew()
                count = await self.reap(include_own=False)
                if count:
                    logger.warning("failed %d task(s) of A2A node(s) whose lease expired", count)
            except asyncio.CancelledError:
                raise
            except Exception:
                logger.warning("A2A node heartbeat failed; will retry", exc_info=True)

    async def reap(self, *, include_own: bool) -> int:
        """Finish as FAILED the running tasks of dead nodes (and ours, if ``include_own``).

        With ``include_own`` (a restart under a fixed node id) the waits of this node's lost
        agent calls are released too: the next message on such a task starts a new call.
        """
        node_id = self.store.node_id
        failed: list[Task] = []
        bad: list[tuple[str, str]] = []
        async with (await self.store.pool()).acquire() as conn, conn.transaction():
            rows = await conn.fetch(
                "SELECT t.id, t.task_json, t.node_id FROM a2a_tasks t"
                " WHERE t.state = ANY($1::text[]) AND ("
                " ($2::boolean AND t.node_id = $3) OR (t.node_id IS DISTINCT FROM $3 AND NOT EXISTS ("
                "  SELECT 1 FROM a2a_nodes n WHERE n.node_id = t.node_id"
                "  AND n.lease_until > clock_timestamp())))"
                " FOR UPDATE OF t SKIP LOCKED",
                list(RUNNING_STATES),
                include_own,
                node_id,
            )
            for task_id, task_json, row_node in rows:
                # Parse each row on its own: an unreadable one is moved aside, never allowed
                # to abort recovery (and with it a node's startup).
                try:
                    task = Task.model_validate_json(task_json)
                    own = row_node == node_id  # restarted here, or lost with another node
                    task = fail_interrupted(task, None if own else NODE_LOST_NOTE)
                    wire = task.to_wire_json()
                except PARSE_ERRORS as exc:
                    bad.append((task_id, unreadable_reason(exc)))
                    continue
                await conn.execute(
                    "UPDATE a2a_tasks SET state = $2, updated_ms = $3, task_json = $4,"
                    " node_id = NULL WHERE id = $1",
                    task_id,
                    task.status.state.value,
                    task_time_ms(task),
                    wire,
                )
                failed.append(task)
            await self.store.quarantine_rows(conn, bad)
            if include_own:
                await conn.execute(
                    "UPDATE a2a_tasks SET node_id = NULL WHERE node_id = $1"
                    " AND state = ANY($2::text[])",
                    node_id,
                    [s.value for s in INTERRUPTED_STATES],
                )
            await conn.execute(
                "DELETE FROM a2a_nodes WHERE lease_until < clock_timestamp() AND node_id <> $1",
                node_id,
            )
            await conn.execute(
                "DELETE FROM a2a_large_events"
                " WHERE created_at < clock_timestamp() - $1::float8 * interval '1 second'",
                float(LARGE_EVENT_TTL_S),
            )
        for task_id, reason in bad:
            logger.error(
                "A2A task store: interrupted task %r cannot be read (%s); moved to"
                " a2a_quarantined_tasks",
                task_id,
                reason,
            )
        bus = self.store.event_bus()
        for task in failed:
            update = TaskStatusUpdateEvent(
                task_id=task.id, context_id=task.context_id or "", status=task.status
            )
            bus.publish(task.id, StreamResponse(status_update=update))
        return len(failed)

    async def stop(self) -> None:
        """Stop renewing (the store releases the lease row when it closes)."""
        if self._heartbeat is not None:
            self._heartbeat.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._heartbeat
            self._heartbeat = None
