"""Two node processes on one PostgreSQL database, sharing no memory.

A task created on node A can be read, listed, cancelled and subscribed to on node B (B's
subscriber sees every later event, even one too large for a NOTIFY payload); a node killed
mid-task (SIGKILL) has its task failed by the other once its lease expires, and subscribers on
the live node see that. Leases are short here (``lease_s``/``heartbeat_s`` in the store config).
"""

from __future__ import annotations

import signal
from collections.abc import AsyncIterator
from typing import Any

import anyio
import asyncpg
import httpx
import pytest
from a2a_support.bindings import BINDINGS, JsonRpcBinding, open_stream, open_subscribe
from a2a_support.net import text_message
from a2a_support.postgres import (
    node_process,
    pg_dsn,  # noqa: F401 - fixture
)

pytestmark = pytest.mark.anyio


def _states(events: list[dict[str, Any]]) -> list[str]:
    return [e["statusUpdate"]["status"]["state"] for e in events if "statusUpdate" in e]


async def _rest_of(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    with anyio.fail_after(30):
        return [e async for e in events]


def _answer(text: str, task: dict[str, Any]) -> dict[str, Any]:
    return {"message": {**text_message(text), "taskId": task["id"]}}


@pytest.fixture(params=sorted(BINDINGS))
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_task_made_on_one_node_is_read_and_followed_on_the_other(
    pg_dsn: str,  # noqa: F811
    binding: str,
) -> None:
    with node_process(pg_dsn, "a") as (_, base_a), node_process(pg_dsn, "b") as (_, base_b):
        async with httpx.AsyncClient(timeout=30) as client:
            a = BINDINGS[binding](client, base_a)
            b = BINDINGS[binding](client, base_b)
            asked = (await a.send({"message": text_message("ask:colour?")})).unwrap()["task"]
            assert (await b.get(asked["id"])).unwrap() == asked
            listed = (await b.list()).unwrap()
            assert [t["id"] for t in listed["tasks"]] == [asked["id"]]
            async with open_subscribe(b, asked["id"]) as on_b:
                snapshot = (await anext(on_b))["task"]
                assert snapshot["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
                # The answer goes to node A, which runs the task; B's subscriber follows it.
                async with open_stream(a, _answer("blue", asked)) as on_a:
                    seen_on_a = await _rest_of(on_a)
                seen_on_b = await _rest_of(on_b)
            assert _states(seen_on_a)[-1] == "TASK_STATE_COMPLETED"
            assert seen_on_b == seen_on_a[1:]  # every event, in order, and then the end
            final = (await b.get(asked["id"])).unwrap()
            assert final["artifacts"][0]["parts"] == [{"text": "echo: blue (turn 2)"}]


async def test_a_run_on_one_node_is_cancelled_from_the_other(pg_dsn: str) -> None:  # noqa: F811
    with node_process(pg_dsn, "a") as (_, base_a), node_process(pg_dsn, "b") as (_, base_b):
        async with httpx.AsyncClient(timeout=60) as client:
            a, b = JsonRpcBinding(client, base_a), JsonRpcBinding(client, base_b)
            params = {
                "message": text_message("slow:600"),
                "configuration": {"returnImmediately": True},
            }
            task = (await a.send(params)).unwrap()["task"]
            assert (await b.get(task["id"])).unwrap()["status"]["state"] == "TASK_STATE_WORKING"
            # B will not start a second run of a task that A is running.
            refused = await b.send(_answer("more", task))
            assert refused.reason == "UNSUPPORTED_OPERATION"
            async with open_subscribe(b, task["id"]) as on_b:
                await anext(on_b)
                canceled = (await b.cancel(task["id"])).unwrap()
                rest = await _rest_of(on_b)
            assert canceled["status"]["state"] == "TASK_STATE_CANCELED"
            assert _states(rest)[-1] == "TASK_STATE_CANCELED"
            # It was A's run that stopped (A saved the end), not just a row B rewrote.
            on_a = (await a.get(task["id"])).unwrap()
            assert on_a["status"]["state"] == "TASK_STATE_CANCELED"
            assert on_a == canceled


async def test_a_killed_node_s_task_is_failed_by_the_live_one(pg_dsn: str) -> None:  # noqa: F811
    with node_process(pg_dsn, "a") as (proc_a, base_a), node_process(pg_dsn, "b") as (_, base_b):
        async with httpx.AsyncClient(timeout=30) as client:
            a, b = JsonRpcBinding(client, base_a), JsonRpcBinding(client, base_b)
            params = {
                "message": text_message("slow:600"),
                "configuration": {"returnImmediately": True},
            }
            task = (await a.send(params)).unwrap()["task"]
            async with open_subscribe(b, task["id"]) as on_b:
                assert (await anext(on_b))["task"]["status"]["state"] == "TASK_STATE_WORKING"
                proc_a.send_signal(signal.SIGKILL)  # no shutdown hook runs on A
                proc_a.wait(10)
                rest = await _rest_of(on_b)
            # (A may have announced WORKING after B subscribed; nothing else came from A.)
            assert set(_states(rest)[:-1]) <= {"TASK_STATE_WORKING"}
            assert _states(rest)[-1] == "TASK_STATE_FAILED"
            lost = (await b.get(task["id"])).unwrap()
            assert lost["status"]["state"] == "TASK_STATE_FAILED"
            assert "stopped" in lost["status"]["message"]["parts"][0]["text"]
            assert lost["history"][0]["parts"] == [{"text": "slow:600"}]


async def test_an_event_too_big_for_notify_still_reaches_the_other_node(
    pg_dsn: str,  # noqa: F811
) -> None:
    big = "x" * 12000  # PostgreSQL refuses NOTIFY payloads over 8000 bytes
    with node_process(pg_dsn, "a") as (_, base_a), node_process(pg_dsn, "b") as (_, base_b):
        async with httpx.AsyncClient(timeout=30) as client:
            a, b = JsonRpcBinding(client, base_a), JsonRpcBinding(client, base_b)
            asked = (await a.send({"message": text_message("ask:what?")})).unwrap()["task"]
            async with open_subscribe(b, asked["id"]) as on_b:
                await anext(on_b)
                (await a.send(_answer(big, asked))).unwrap()
                rest = await _rest_of(on_b)
    chunks = [
        e["artifactUpdate"]["artifact"]["parts"][0]["text"] for e in rest if "artifactUpdate" in e
    ]
    assert chunks[-1] == f"echo: {big} (turn 2)"
    assert _states(rest)[-1] == "TASK_STATE_COMPLETED"
    conn = await asyncpg.connect(pg_dsn)
    try:
        assert await conn.fetchval("SELECT count(*) FROM a2a_large_events") >= 1
    finally:
        await conn.close()
