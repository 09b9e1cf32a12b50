"""A reply builds stream events only when someone may receive them; the task has it all anyway."""

from __future__ import annotations

import pytest

from agent_runtime.protocols.a2a.reply import TaskReply
from agent_runtime.protocols.a2a.types import (
    Message,
    Part,
    StreamResponse,
    Task,
    TaskState,
    TaskStatus,
)

pytestmark = pytest.mark.anyio


class Channel:
    """A TaskChannel that records what the reply publishes."""

    def __init__(self, listening: bool) -> None:
        self.listening = listening
        self.published: list[StreamResponse] = []
        self.stops: list[TaskState] = []

    async def open_task(self) -> None:
        pass

    def wants_events(self) -> bool:
        return self.listening

    def publish(self, event: StreamResponse) -> None:
        self.published.append(event)

    async def stop(self, status: TaskStatus, *, waiting: bool = False) -> None:
        self.stops.append(status.state)

    async def respond(self, message: Message) -> None:
        pass

    async def next_message(self) -> Message:
        raise AssertionError("not asked")


def _task() -> Task:
    return Task(id="t1", context_id="c1", status=TaskStatus(state=TaskState.SUBMITTED))


async def _work(reply: TaskReply) -> None:
    await reply.start()
    await reply.artifact_chunk([Part(text="ec")], artifact_id="a", append=False, name="a")
    await reply.artifact_chunk([Part(text="ho")], artifact_id="a")
    await reply.status("still going")
    await reply.complete("done")


@pytest.mark.parametrize("listening", [True, False])
async def test_the_task_is_the_same_whether_or_not_anyone_listens(listening: bool) -> None:
    channel = Channel(listening)
    reply = TaskReply(_task(), channel, task_exists=False)
    await _work(reply)
    task = reply.task
    assert [p.text for p in task.artifacts[0].parts] == ["ec", "ho"]
    assert task.artifacts[0].name == "a"
    assert task.status.state == TaskState.COMPLETED and channel.stops == [TaskState.COMPLETED]
    assert task.history[-1].text == "done"
    if listening:
        kinds = ["status" if e.status_update is not None else "artifact" for e in channel.published]
        assert kinds == ["status", "artifact", "artifact", "status"]
        chunks = [e.artifact_update for e in channel.published if e.artifact_update is not None]
        assert [(c.append, c.artifact.parts[0].text) for c in chunks] == [
            (False, "ec"),
            (True, "ho"),
        ]
    else:
        assert channel.published == []  # nothing built for no one
