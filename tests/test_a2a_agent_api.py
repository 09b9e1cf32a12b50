"""The served-agent API on the wire, both bindings: what the node does with what an agent does.

Plain objects with ``execute(context, reply)`` are served directly; the requests are raw HTTP
(``a2a_support.bindings``), so the wire is what is checked: an agent that raises, returns
without an ending, raises a typed outcome, or raises after its ending; a Message reply that
stores nothing; a cancel while the agent waits for authorisation; an answer that resumes a
waiting agent (stored WORKING while it works, its push config registered); a runtime agent whose
parallel tool calls include one that needs approval.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from a2a_support.bindings import BINDINGS, Binding
from a2a_support.fixtures import node
from a2a_support.net import text_message
from a2a_support.webhook import final_state, webhook

from agent_runtime.agent import Agent
from agent_runtime.outcome import InputRequired
from agent_runtime.protocols.a2a.push import PushConfig
from agent_runtime.protocols.a2a.reply import TaskReply
from agent_runtime.protocols.a2a.request_context import RequestContext
from agent_runtime.protocols.a2a.types import Part
from agent_runtime.testing import ScriptedModel
from agent_runtime.tools import tool
from agent_runtime.types import ToolCall

pytestmark = pytest.mark.anyio


class Scripted:
    """Serves one behaviour per first word of the message."""

    name = "Scripted"
    description = "test agent"

    def __init__(self) -> None:
        self.resumed: list[str] = []
        self.at_work = anyio.Event()
        self.release = anyio.Event()

    async def execute(self, context: RequestContext, reply: TaskReply) -> None:
        word = context.text.split()[0]
        if word == "boom":
            await reply.status("about to fail")
            raise ValueError("boom inside")
        if word == "quiet":
            await reply.add_artifact([Part(text="only an artifact")], name="out")
            return  # no ending: the node completes the task
        if word == "late":
            await reply.complete("done")
            raise RuntimeError("after the ending")
        if word == "typed":
            raise InputRequired("which one?")
        if word == "message":
            await reply.reply("no task for this")
            return
        if word == "wait":
            answer = await reply.ask_auth("approve?")
            self.resumed.append(answer.text)
            await reply.complete("resumed")
            return
        if word == "hold":  # resumes, then works until the test releases it
            answer = await reply.ask_auth("approve?")
            self.resumed.append(answer.text)
            self.at_work.set()
            await self.release.wait()
            await reply.complete("released")
            return
        await reply.complete(f"unknown {word}")


@pytest.fixture(params=sorted(BINDINGS))
def binding_name(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def scripted(binding_name: str) -> AsyncIterator[tuple[Binding, Scripted]]:
    agent = Scripted()
    async with node(agent=agent) as (base, client):
        yield BINDINGS[binding_name](client, base), agent


async def _send(api: Binding, text: str, **message: Any) -> dict[str, Any]:
    result: dict[str, Any] = (await api.send({"message": text_message(text, **message)})).unwrap()
    return result


def _status_text(task: dict[str, Any]) -> str:
    parts = task["status"].get("message", {}).get("parts", [])
    return "".join(p.get("text", "") for p in parts)


async def test_an_agent_that_raises_fails_its_task_with_the_error(
    scripted: tuple[Binding, Scripted],
) -> None:
    api, _ = scripted
    task = (await _send(api, "boom"))["task"]
    assert task["status"]["state"] == "TASK_STATE_FAILED"
    assert _status_text(task) == "The agent failed: ValueError: boom inside"


async def test_an_agent_that_returns_without_an_ending_completes_its_task(
    scripted: tuple[Binding, Scripted],
) -> None:
    api, _ = scripted
    task = (await _send(api, "quiet"))["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    assert task["artifacts"][0]["parts"] == [{"text": "only an artifact"}]
    assert task["artifacts"][0]["name"] == "out"


async def test_an_exception_after_the_ending_keeps_the_ending(
    scripted: tuple[Binding, Scripted],
) -> None:
    api, _ = scripted
    task = (await _send(api, "late"))["task"]
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    stored = (await api.get(task["id"])).unwrap()
    assert stored["status"]["state"] == "TASK_STATE_COMPLETED"
    assert _status_text(stored) == "done"


async def test_a_typed_outcome_raised_by_a_plain_agent_sets_the_state(
    scripted: tuple[Binding, Scripted],
) -> None:
    api, _ = scripted
    task = (await _send(api, "typed"))["task"]
    assert task["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    assert _status_text(task) == "which one?"


async def test_a_message_reply_stores_no_task(scripted: tuple[Binding, Scripted]) -> None:
    api, _ = scripted
    context_id = "ctx-message-only"
    result = await _send(api, "message", contextId=context_id)
    assert set(result) == {"message"}
    assert result["message"]["parts"] == [{"text": "no task for this"}]
    assert result["message"]["contextId"] == context_id
    listed = (await api.list(contextId=context_id)).unwrap()
    assert listed["tasks"] == []


async def test_cancel_while_waiting_for_authorisation_cancels_and_never_resumes(
    scripted: tuple[Binding, Scripted],
) -> None:
    api, agent = scripted
    task = (await _send(api, "wait"))["task"]
    assert task["status"]["state"] == "TASK_STATE_AUTH_REQUIRED"
    assert (await api.get(task["id"])).unwrap()["status"]["state"] == "TASK_STATE_AUTH_REQUIRED"
    canceled = (await api.cancel(task["id"])).unwrap()
    assert canceled["status"]["state"] == "TASK_STATE_CANCELED"
    again = await api.send(
        {"message": text_message("yes", taskId=task["id"], contextId=task["contextId"])}
    )
    assert again.reason == "UNSUPPORTED_OPERATION"
    assert agent.resumed == []


async def test_an_answer_with_another_context_id_is_refused_and_the_agent_keeps_waiting(
    scripted: tuple[Binding, Scripted],
) -> None:
    api, agent = scripted
    task = (await _send(api, "wait"))["task"]
    wrong = await api.send(
        {"message": text_message("yes", taskId=task["id"], contextId="another-context")}
    )
    assert not wrong.ok and agent.resumed == []
    done = (await _send(api, "yes", taskId=task["id"]))["task"]
    assert done["status"]["state"] == "TASK_STATE_COMPLETED"
    assert agent.resumed == ["yes"]
    texts = [m["parts"][0].get("text") for m in done["history"]]
    assert texts == ["wait", "approve?", "yes", "resumed"]


async def test_an_answer_to_a_waiting_agent_is_stored_working_and_its_push_config_used(
    binding_name: str,
) -> None:
    agent = Scripted()
    push = PushConfig(allow_private_urls=True, backoff_s=0.01)
    async with webhook() as hook, node(agent=agent, push=push) as (base, client):
        api = BINDINGS[binding_name](client, base)
        task = (await _send(api, "hold"))["task"]
        assert task["status"]["state"] == "TASK_STATE_AUTH_REQUIRED"
        answer = {
            "message": text_message("yes", taskId=task["id"]),
            "configuration": {
                "returnImmediately": True,
                "taskPushNotificationConfig": {"url": hook.url, "token": "tok"},
            },
        }
        resumed = (await api.send(answer)).unwrap()["task"]
        assert resumed["status"]["state"] == "TASK_STATE_WORKING"
        with anyio.fail_after(10):
            await agent.at_work.wait()
        assert (await api.get(task["id"])).unwrap()["status"]["state"] == "TASK_STATE_WORKING"
        working = (await api.list(status="TASK_STATE_WORKING")).unwrap()["tasks"]
        assert [t["id"] for t in working] == [task["id"]]
        configs = (await api.push_list(task["id"])).unwrap()["configs"]
        assert [c["url"] for c in configs] == [hook.url]
        agent.release.set()
        await hook.wait_for(lambda bodies: final_state(bodies) == "TASK_STATE_COMPLETED")
    assert agent.resumed == ["yes"]
    assert {headers.get("x-a2a-notification-token") for headers, _ in hook.posts} == {"tok"}


# ---------------------------------------------------------------------- the runtime Agent

RAN: list[str] = []


@tool(read_only=True)
def look(name: str) -> str:
    """Read something."""
    RAN.append(f"look {name}")
    return f"saw {name}"


@tool(requires_approval=True)
def change(name: str) -> str:
    """Change something (needs approval)."""
    RAN.append(f"change {name}")
    return f"changed {name}"


async def test_parallel_calls_wait_for_the_one_approval_then_all_report(
    binding_name: str,
) -> None:
    RAN.clear()
    turn = [
        ToolCall(id="a", name="look", arguments=json.dumps({"name": "x"})),
        ToolCall(id="b", name="change", arguments=json.dumps({"name": "y"})),
    ]
    agent = Agent(ScriptedModel([turn, "all done"]), tools=[look, change])
    async with node(agent=agent) as (base, client):
        api = BINDINGS[binding_name](client, base)
        first = (await _send(api, "go"))["task"]
        assert first["status"]["state"] == "TASK_STATE_AUTH_REQUIRED"
        assert "change y" not in RAN
        with anyio.fail_after(20):
            events = await api.stream(
                {"message": text_message("yes", taskId=first["id"], contextId=first["contextId"])}
            )
    assert sorted(RAN) == ["change y", "look x"]
    results = [
        part["data"]["toolResult"]
        for e in events
        if "statusUpdate" in e
        for part in e["statusUpdate"]["status"].get("message", {}).get("parts", [])
        if "toolResult" in part.get("data", {})
    ]
    assert sorted(r["text"] for r in results) == ["changed y", "saw x"]
    final = events[-1]["statusUpdate"]
    assert final["status"]["state"] == "TASK_STATE_COMPLETED"
    assert _status_text(final) == "all done"
