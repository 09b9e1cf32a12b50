"""SSE streams on both bindings: who gets which events, and when a stream ends.

Every stream on a task, whenever it joins, starts with a Task snapshot that already holds the
text streamed so far, then gets every later event of the run. A SendStreamingMessage stream
closes when the task stops (terminal or interrupted state); a SubscribeToTask stream closes at a
terminal state (following interrupted tasks: tests/test_a2a_subscribe_interrupted.py). The ``GatedModel`` lets a test join a run
between two text chunks deterministically (no sleeps).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from a2a_support.agents import gated_agent
from a2a_support.bindings import BINDINGS, open_stream, open_subscribe
from a2a_support.fixtures import node
from a2a_support.net import text_message

pytestmark = pytest.mark.anyio

RESPONSE = "response"


def _response_text(task: dict[str, Any]) -> str:
    for artifact in task.get("artifacts", []):
        if artifact["artifactId"] == RESPONSE:
            return "".join(p.get("text", "") for p in artifact["parts"])
    return ""


def _rebuild(snapshot: dict[str, Any], events: list[dict[str, Any]]) -> list[str]:
    """The response artifact as a client sees it after the snapshot and after each chunk."""
    text = _response_text(snapshot)
    seen = [text]
    for event in events:
        update = event.get("artifactUpdate")
        if update is None:
            continue
        assert update["artifact"]["artifactId"] == RESPONSE
        chunk = "".join(p.get("text", "") for p in update["artifact"]["parts"])
        text = text + chunk if update.get("append") else chunk
        seen.append(text)
    return seen


def _states(events: list[dict[str, Any]]) -> list[str]:
    return [e["statusUpdate"]["status"]["state"] for e in events if "statusUpdate" in e]


async def _rest_of(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    """Read to the end of the stream; the server must close it (bounded wait)."""
    with anyio.fail_after(10):
        return [e async for e in events]


@pytest.fixture(params=sorted(BINDINGS))
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def test_a_late_subscriber_gets_the_text_so_far_and_every_later_chunk(
    binding: str,
) -> None:
    agent, model = gated_agent()
    async with node(agent=agent) as (base, client):
        api = BINDINGS[binding](client, base)
        params = {"message": text_message("go"), "configuration": {"returnImmediately": True}}
        task = (await api.send(params)).unwrap()["task"]
        with anyio.fail_after(10):
            await model.first_chunk_sent.wait()  # the run is under way; nobody listened
        async with open_subscribe(api, task["id"]) as events:
            first = await anext(events)
            snapshot = first["task"]
            assert snapshot["id"] == task["id"]
            assert snapshot["status"]["state"] == "TASK_STATE_WORKING"
            model.release.set()
            rest = await _rest_of(events)
    texts = _rebuild(snapshot, rest)
    assert texts[-2] == "alpha beta"  # built from the chunks, before the final replace
    assert texts[-1] == "alpha beta"
    assert any(
        e["artifactUpdate"].get("append")
        and e["artifactUpdate"]["artifact"]["parts"][0]["text"] == "beta"
        for e in rest
        if "artifactUpdate" in e
    )
    assert rest[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_a_second_stream_joining_mid_run_sees_what_the_first_sees(binding: str) -> None:
    agent, model = gated_agent()
    async with node(agent=agent) as (base, client):
        api = BINDINGS[binding](client, base)
        async with open_stream(api, {"message": text_message("go")}) as first:
            head = []
            with anyio.fail_after(10):
                async for event in first:
                    head.append(event)
                    if "artifactUpdate" in event:
                        break
            task_id = head[0]["task"]["id"]
            assert head[-1]["artifactUpdate"]["artifact"]["parts"] == [{"text": "alpha "}]
            # Polling sees the text streamed so far too.
            polled = (await api.get(task_id)).unwrap()
            assert _response_text(polled) == "alpha "
            async with open_subscribe(api, task_id) as second:
                snapshot = (await anext(second))["task"]
                assert _response_text(snapshot) == "alpha "
                model.release.set()
                first_rest = await _rest_of(first)
                second_rest = await _rest_of(second)
    assert second_rest == first_rest
    assert _rebuild(snapshot, second_rest)[-1] == "alpha beta"
    assert _rebuild(head[0]["task"], head[1:] + first_rest)[-1] == "alpha beta"
    assert _states(first_rest)[-1] == "TASK_STATE_COMPLETED"


@pytest.mark.parametrize(
    ("prompt", "state"),
    [
        ("hello", "TASK_STATE_COMPLETED"),
        ("ask:which one?", "TASK_STATE_INPUT_REQUIRED"),
        ("fail", "TASK_STATE_FAILED"),
    ],
)
async def test_send_streaming_message_ends_after_the_task_stops(
    binding: str, prompt: str, state: str
) -> None:
    async with node() as (base, client):
        api = BINDINGS[binding](client, base)
        async with open_stream(api, {"message": text_message(prompt)}) as events:
            everything = await _rest_of(events)
    assert "task" in everything[0]
    assert _states(everything)[-1] == state
    assert "statusUpdate" in everything[-1]  # nothing after the final status
    assert _states(everything).count(state) == 1


async def test_send_streaming_message_ends_after_a_cancel(binding: str) -> None:
    async with node() as (base, client):
        api = BINDINGS[binding](client, base)
        async with open_stream(api, {"message": text_message("slow:30")}) as events:
            task_id = (await anext(events))["task"]["id"]
            canceled = (await api.cancel(task_id)).unwrap()
            assert canceled["status"]["state"] == "TASK_STATE_CANCELED"
            rest = await _rest_of(events)
    assert rest[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_CANCELED"


@pytest.mark.parametrize(
    ("ending", "state"),
    [
        ("release", "TASK_STATE_COMPLETED"),
        ("fail", "TASK_STATE_FAILED"),
        ("cancel", "TASK_STATE_CANCELED"),
    ],
)
async def test_a_subscription_ends_when_the_task_is_terminal(
    binding: str, ending: str, state: str
) -> None:
    agent, model = gated_agent(fail=ending == "fail")
    async with node(agent=agent) as (base, client):
        api = BINDINGS[binding](client, base)
        params = {"message": text_message("go"), "configuration": {"returnImmediately": True}}
        task_id = (await api.send(params)).unwrap()["task"]["id"]
        async with open_subscribe(api, task_id) as events:
            assert (await anext(events))["task"]["id"] == task_id
            if ending == "cancel":
                (await api.cancel(task_id)).unwrap()
            else:
                model.release.set()
            rest = await _rest_of(events)
    assert rest[-1]["statusUpdate"]["status"]["state"] == state
    assert _states(rest).count(state) == 1


async def test_the_first_task_of_a_stream_honours_history_length(binding: str) -> None:
    async with node() as (base, client):
        api = BINDINGS[binding](client, base)
        params = {"message": text_message("short"), "configuration": {"historyLength": 0}}
        async with open_stream(api, params) as events:
            everything = await _rest_of(events)
    assert "history" not in everything[0]["task"]
    assert _states(everything)[-1] == "TASK_STATE_COMPLETED"
