"""SubscribeToTask follows a task through INPUT_REQUIRED until a terminal state (spec 3.1.6).

A subscription is not tied to one run: on an interrupted task (not running) it starts with the
snapshot, stays open, and carries the events of the runs that later messages start, closing only
when the task is terminal. SendStreamingMessage still ends at the interruption. Nothing
published while a subscription is being set up may be lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import anyio.lowlevel
import pytest
from a2a_support.agents import gated_agent
from a2a_support.bindings import BINDINGS, open_stream, open_subscribe
from a2a_support.fixtures import node
from a2a_support.net import text_message

from agent_runtime.protocols.a2a.handler import A2ARequestHandler
from agent_runtime.protocols.a2a.store import InMemoryTaskStore, TaskRecord
from agent_runtime.protocols.a2a.types import (
    StreamResponse,
    SubscribeToTaskRequest,
    Task,
    TaskState,
    TaskStatus,
    TaskStatusUpdateEvent,
)

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(BINDINGS))
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


def _states(events: list[dict[str, Any]]) -> list[str]:
    return [e["statusUpdate"]["status"]["state"] for e in events if "statusUpdate" in e]


async def _until(events: AsyncIterator[dict[str, Any]], state: str) -> list[dict[str, Any]]:
    """Events up to and including the status update to ``state`` (bounded wait)."""
    seen = []
    with anyio.fail_after(10):
        async for event in events:
            seen.append(event)
            if "statusUpdate" in event and event["statusUpdate"]["status"]["state"] == state:
                return seen
    raise AssertionError(f"the stream closed before {state}: {_states(seen)}")


async def _rest_of(events: AsyncIterator[dict[str, Any]]) -> list[dict[str, Any]]:
    with anyio.fail_after(10):
        return [e async for e in events]


def _message(text: str, task: dict[str, Any]) -> dict[str, Any]:
    return {"message": {**text_message(text), "taskId": task["id"]}}


async def test_subscribing_to_an_input_required_task_follows_the_next_run(binding: str) -> None:
    async with node() as (base, client):
        api = BINDINGS[binding](client, base)
        asked = (await api.send({"message": text_message("ask:colour?")})).unwrap()["task"]
        assert asked["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
        async with open_subscribe(api, asked["id"]) as events:
            snapshot = (await anext(events))["task"]
            assert snapshot["id"] == asked["id"]
            assert snapshot["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
            answered = (await api.send(_message("blue", asked))).unwrap()["task"]
            assert answered["status"]["state"] == "TASK_STATE_COMPLETED"
            rest = await _rest_of(events)
    assert _states(rest)[0] == "TASK_STATE_WORKING"
    assert _states(rest)[-1] == "TASK_STATE_COMPLETED"
    assert "statusUpdate" in rest[-1]  # closed right after the terminal state
    final = [e["artifactUpdate"] for e in rest if "artifactUpdate" in e][-1]
    assert final["artifact"]["parts"] == [{"text": "echo: blue (turn 2)"}]


async def test_a_subscription_stays_open_through_repeated_interruptions(binding: str) -> None:
    async with node() as (base, client):
        api = BINDINGS[binding](client, base)
        task = (await api.send({"message": text_message("ask:first?")})).unwrap()["task"]
        async with open_subscribe(api, task["id"]) as events:
            await anext(events)
            await api.send(_message("ask:second?", task))
            second = await _until(events, "TASK_STATE_INPUT_REQUIRED")
            assert second[-1]["statusUpdate"]["status"]["message"]["parts"] == [{"text": "second?"}]
            await api.send(_message("done", task))
            rest = await _rest_of(events)
    assert _states(rest)[-1] == "TASK_STATE_COMPLETED"
    assert "TASK_STATE_INPUT_REQUIRED" not in _states(rest)


async def test_a_subscription_on_a_running_task_outlives_its_input_required_end(
    binding: str,
) -> None:
    # The gated model always ends its turn asking for input, so only a cancel ends the task.
    agent, model = gated_agent(first="[input-required] ", second="size?")
    async with node(agent=agent) as (base, client):
        api = BINDINGS[binding](client, base)
        params = {"message": text_message("go"), "configuration": {"returnImmediately": True}}
        task = (await api.send(params)).unwrap()["task"]
        async with open_subscribe(api, task["id"]) as events:
            assert (await anext(events))["task"]["status"]["state"] in (
                "TASK_STATE_SUBMITTED",
                "TASK_STATE_WORKING",
            )
            model.release.set()
            await _until(events, "TASK_STATE_INPUT_REQUIRED")
            again = (await api.send(_message("large", task))).unwrap()["task"]
            assert again["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
            second_run = await _until(events, "TASK_STATE_INPUT_REQUIRED")
            (await api.cancel(task["id"])).unwrap()
            rest = await _rest_of(events)
    assert _states(second_run)[0] == "TASK_STATE_WORKING"
    assert _states(rest) == ["TASK_STATE_CANCELED"]


async def test_canceling_an_input_required_task_ends_its_subscriptions(binding: str) -> None:
    async with node() as (base, client):
        api = BINDINGS[binding](client, base)
        task = (await api.send({"message": text_message("ask:colour?")})).unwrap()["task"]
        async with open_subscribe(api, task["id"]) as events:
            await anext(events)
            canceled = (await api.cancel(task["id"])).unwrap()
            assert canceled["status"]["state"] == "TASK_STATE_CANCELED"
            rest = await _rest_of(events)
    assert _states(rest) == ["TASK_STATE_CANCELED"]


async def test_send_streaming_message_still_ends_at_input_required(binding: str) -> None:
    async with node() as (base, client):
        api = BINDINGS[binding](client, base)
        task = (await api.send({"message": text_message("ask:colour?")})).unwrap()["task"]
        async with open_stream(api, _message("ask:again?", task)) as events:
            everything = await _rest_of(events)
    assert _states(everything)[-1] == "TASK_STATE_INPUT_REQUIRED"
    assert "statusUpdate" in everything[-1]


class _PausingStore(InMemoryTaskStore):
    """``get`` waits for ``resume`` once ``armed``, so a test can publish mid-read."""

    def __init__(self) -> None:
        super().__init__()
        self.armed = False
        self.reading = anyio.Event()
        self.resume = anyio.Event()

    async def get(self, task_id: str, owner: str) -> TaskRecord | None:
        if self.armed:
            self.reading.set()
            await self.resume.wait()
        return await super().get(task_id, owner)


async def test_an_event_published_while_the_snapshot_is_read_is_not_lost() -> None:
    from a2a_support.agents import echo_agent

    store = _PausingStore()
    handler = A2ARequestHandler(echo_agent(), store)
    status = TaskStatus(state=TaskState.INPUT_REQUIRED)
    await store.save(TaskRecord(task=Task(id="t1", context_id="c1", status=status), owner="p"))
    store.armed = True
    working = StreamResponse(
        status_update=TaskStatusUpdateEvent(
            task_id="t1", context_id="c1", status=TaskStatus(state=TaskState.WORKING)
        )
    )
    done = StreamResponse(
        status_update=TaskStatusUpdateEvent(
            task_id="t1", context_id="c1", status=TaskStatus(state=TaskState.COMPLETED)
        )
    )
    got: list[StreamResponse] = []

    async def subscribe() -> None:
        stream = await handler.subscribe("p", SubscribeToTaskRequest(id="t1"))
        got.extend([event async for event in stream])

    with anyio.fail_after(10):
        async with anyio.create_task_group() as tg:
            tg.start_soon(subscribe)
            await store.reading.wait()  # the subscriber is reading its snapshot now
            handler.events.publish("t1", working)  # e.g. another node's run started
            store.resume.set()
            await anyio.lowlevel.checkpoint()
            handler.events.publish("t1", done)
    assert got[0].task is not None and got[0].task.status.state == TaskState.INPUT_REQUIRED
    assert got[1:] == [working, done]
    assert not handler.events.has_subscribers("t1")  # the closed stream left nothing behind


async def test_events_the_snapshot_already_holds_are_not_sent_again() -> None:
    """Another node's NOTIFY can trail its store write: an event published before the snapshot
    may reach the subscription after it. The follower drops what the snapshot already holds
    (its own status, older statuses, the finished run's artifact chunks) and sends the rest."""
    from datetime import timedelta

    from agent_runtime.protocols.a2a.events import InProcessEventBus, follow_task
    from agent_runtime.protocols.a2a.types import (
        Artifact,
        Part,
        TaskArtifactUpdateEvent,
        utc_now,
    )

    bus = InProcessEventBus()
    asked_at = utc_now()
    waiting = TaskStatus(state=TaskState.INPUT_REQUIRED, timestamp=asked_at)
    task = Task(id="t1", context_id="c1", status=waiting)

    def status(state: TaskState, at_ms: int) -> StreamResponse:
        at = asked_at + timedelta(milliseconds=at_ms)
        return StreamResponse(
            status_update=TaskStatusUpdateEvent(
                task_id="t1", context_id="c1", status=TaskStatus(state=state, timestamp=at)
            )
        )

    def chunk(text: str) -> StreamResponse:
        artifact = Artifact(artifact_id="response", parts=[Part(text=text)])
        return StreamResponse(
            artifact_update=TaskArtifactUpdateEvent(
                task_id="t1", context_id="c1", artifact=artifact
            )
        )

    subscription = bus.subscribe("t1")
    stale = [
        chunk("the first run's answer"),
        status(TaskState.WORKING, -5),
        StreamResponse(
            status_update=TaskStatusUpdateEvent(task_id="t1", context_id="c1", status=waiting)
        ),
    ]
    fresh = [
        status(TaskState.WORKING, 1),
        chunk("the second run's answer"),
        status(TaskState.COMPLETED, 2),
    ]
    for event in [*stale, *fresh]:
        bus.publish("t1", event)
    with anyio.fail_after(5):
        got = [e async for e in follow_task(task, subscription, through_interruptions=True)]
    assert got[0].task == task
    assert got[1:] == fresh
