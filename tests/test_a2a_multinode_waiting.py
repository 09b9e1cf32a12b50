"""Two node processes on one PostgreSQL database: a task whose agent waits on node A, reached on B.

The served agent (``node_main.py``'s gate agent) waits in AUTH_REQUIRED (``ask_auth``) for an
approval, then says on which node it resumed; a new agent call says so instead. So an answer
sent to B that reached the waiting agent on A, rather than starting a second call on B, shows in
the task. A push config created on B for that task gets the events of A's resumed run.
"""

from __future__ import annotations

from typing import Any

import anyio
import httpx
import pytest
from a2a_support.bindings import BINDINGS, JsonRpcBinding, open_stream
from a2a_support.net import text_message
from a2a_support.postgres import (
    node_process,
    pg_dsn,  # noqa: F401 - fixture
)
from a2a_support.webhook import final_state, webhook

pytestmark = pytest.mark.anyio

GATE = {"agent": "gate", "push": {"allow_private_urls": True, "backoff_s": 0.01}}


@pytest.fixture(params=sorted(BINDINGS))
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _answer(text: str, task: dict[str, Any], **configuration: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"message": {**text_message(text), "taskId": task["id"]}}
    if configuration:
        params["configuration"] = configuration
    return params


def _status_text(status: dict[str, Any]) -> str:
    return "".join(p.get("text", "") for p in status.get("message", {}).get("parts", []))


async def test_an_approval_sent_to_another_node_resumes_the_waiting_agent(
    pg_dsn: str,  # noqa: F811
    binding: str,
) -> None:
    with (
        node_process(pg_dsn, "a", **GATE) as (_, base_a),
        node_process(pg_dsn, "b", **GATE) as (_, base_b),
    ):
        async with httpx.AsyncClient(timeout=30) as client:
            a, b = BINDINGS[binding](client, base_a), BINDINGS[binding](client, base_b)
            asked = (await a.send({"message": text_message("approve:deploy")})).unwrap()["task"]
            assert asked["status"]["state"] == "TASK_STATE_AUTH_REQUIRED"
            assert (await b.get(asked["id"])).unwrap()["status"]["state"] == (
                "TASK_STATE_AUTH_REQUIRED"
            )
            with anyio.fail_after(30):
                done = (await b.send(_answer("yes", asked))).unwrap()["task"]
            assert done["status"]["state"] == "TASK_STATE_COMPLETED"
            assert _status_text(done["status"]) == "yes: deploy done on a"
            texts = [m["parts"][0]["text"] for m in done["history"]]
            assert texts == ["approve:deploy", "approve deploy?", "yes", "yes: deploy done on a"]
            assert (await a.get(asked["id"])).unwrap() == done


async def test_a_stream_through_another_node_follows_the_resumed_run(
    pg_dsn: str,  # noqa: F811
) -> None:
    with (
        node_process(pg_dsn, "a", **GATE) as (_, base_a),
        node_process(pg_dsn, "b", **GATE) as (_, base_b),
    ):
        async with httpx.AsyncClient(timeout=30) as client:
            a, b = JsonRpcBinding(client, base_a), JsonRpcBinding(client, base_b)
            asked = (await a.send({"message": text_message("approve:merge")})).unwrap()["task"]
            async with open_stream(b, _answer("ok", asked)) as events:
                with anyio.fail_after(30):
                    seen = [e async for e in events]
    first = seen[0]["task"]
    assert first["id"] == asked["id"]
    assert first["status"]["state"] == "TASK_STATE_WORKING"  # the answer is in, A is at work
    assert first["history"][-1]["parts"] == [{"text": "ok"}]
    statuses = [e["statusUpdate"]["status"] for e in seen[1:] if "statusUpdate" in e]
    assert [_status_text(s) for s in statuses if s.get("message")] == [
        "resumed on a",
        "ok: merge done on a",
    ]
    assert statuses[-1]["state"] == "TASK_STATE_COMPLETED"


async def test_an_answer_with_another_context_id_is_refused_by_the_holding_node(
    pg_dsn: str,  # noqa: F811
) -> None:
    with (
        node_process(pg_dsn, "a", **GATE) as (_, base_a),
        node_process(pg_dsn, "b", **GATE) as (_, base_b),
    ):
        async with httpx.AsyncClient(timeout=30) as client:
            a, b = JsonRpcBinding(client, base_a), JsonRpcBinding(client, base_b)
            asked = (await a.send({"message": text_message("approve:x")})).unwrap()["task"]
            wrong = _answer("yes", asked)
            wrong["message"]["contextId"] = "another-context"
            refused = await b.send(wrong)
            assert refused.reason == "INVALID_PARAMS"
            # The agent on A still waits: the right answer, through B, resumes it.
            done = (await b.send(_answer("fine", asked))).unwrap()["task"]
            assert _status_text(done["status"]) == "fine: x done on a"


async def test_a_push_config_made_on_another_node_gets_the_resumed_run_s_events(
    pg_dsn: str,  # noqa: F811
) -> None:
    with (
        node_process(pg_dsn, "a", **GATE) as (_, base_a),
        node_process(pg_dsn, "b", **GATE) as (_, base_b),
    ):
        async with webhook() as hook, httpx.AsyncClient(timeout=30) as client:
            a, b = JsonRpcBinding(client, base_a), JsonRpcBinding(client, base_b)
            asked = (await a.send({"message": text_message("approve:ship")})).unwrap()["task"]
            (await b.push_create(asked["id"], {"url": hook.url, "token": "tok-b"})).unwrap()
            done = (await a.send(_answer("yes", asked))).unwrap()["task"]
            assert done["status"]["state"] == "TASK_STATE_COMPLETED"
            await hook.wait_for(lambda bodies: final_state(bodies) == "TASK_STATE_COMPLETED")
    texts = [
        _status_text(body["statusUpdate"]["status"])
        for body in hook.bodies()
        if "statusUpdate" in body
    ]
    assert "resumed on a" in texts and texts[-1] == "yes: ship done on a"
    assert {headers.get("x-a2a-notification-token") for headers, _ in hook.posts} == {"tok-b"}
