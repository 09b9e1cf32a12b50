"""Two agents over loopback: agent A delegates to agent B through A2A and uses B's answer.

Both agents are served by our A2A node under real uvicorn servers on free ports. A's model is
scripted to call the ``ask_b`` tool (an ``A2APeerToolset`` pointing at B) and to build its final
answer from what the tool returned; B's model answers with something only B knows.
"""

from __future__ import annotations

from collections.abc import Sequence
from contextlib import AbstractAsyncContextManager

import pytest
from a2a_interop_support.processes import serve_app

from agent_runtime.agent import Agent
from agent_runtime.protocols.a2a.client import A2AClient
from agent_runtime.protocols.a2a.peer import A2APeerToolset
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore
from agent_runtime.protocols.a2a.types import Task, TaskState
from agent_runtime.testing import ScriptedModel
from agent_runtime.types import Message, ToolCall, ToolResultMessage, UserMessage

SECRET = "the vault code is 7-4-1-9"


def _last_tool_result(messages: Sequence[Message]) -> ToolResultMessage:
    results = [m for m in messages if isinstance(m, ToolResultMessage)]
    assert results, "the model was called without a tool result"
    return results[-1]


def _serve(agent: Agent) -> AbstractAsyncContextManager[str]:
    return serve_app(create_a2a_app(agent, store=InMemoryTaskStore()))


@pytest.mark.anyio
@pytest.mark.parametrize("streaming", [True, False])
async def test_agent_a_delegates_to_agent_b_and_uses_its_answer(streaming: bool) -> None:
    def b_answers(messages: list[Message]) -> str:
        question = [m for m in messages if isinstance(m, UserMessage)][-1].content
        return f"B heard {question!r}; {SECRET}"

    model_b = ScriptedModel([b_answers])
    agent_b = Agent(model_b, name="vault keeper", description="Knows the vault code")

    def a_concludes(messages: list[Message]) -> str:
        return f"According to B: {_last_tool_result(messages).result.text_content}"

    async with _serve(agent_b) as b_url:
        peer = A2APeerToolset("b", b_url, streaming=streaming)
        model_a = ScriptedModel(
            [[ToolCall.of("ask_b", {"message": "What is the vault code?"}, id="c1")], a_concludes]
        )
        agent_a = Agent(model_a, tools=[peer], name="front desk", description="Answers users")
        async with _serve(agent_a) as a_url:
            async with A2AClient(a_url) as user:
                reply = await user.send_and_wait("Please find the vault code", timeout_s=30)

    assert isinstance(reply, Task)
    assert reply.status.state == TaskState.COMPLETED
    answer = reply.artifacts[-1].text
    assert answer.startswith("According to B:")
    assert SECRET in answer
    assert "What is the vault code?" in answer  # B really saw A's question
    # A was offered B as a tool described by B's card.
    tools = model_a.requests[0][1]
    (ask_b,) = [t for t in tools if t.name == "ask_b"]
    assert "Knows the vault code" in ask_b.description
    # B's model got exactly A's delegated message.
    b_messages = model_b.requests[0][0]
    assert [m.content for m in b_messages if isinstance(m, UserMessage)] == [
        "What is the vault code?"
    ]


@pytest.mark.anyio
async def test_peer_asks_for_input_and_agent_a_answers_in_its_next_call() -> None:
    def b_needs_more(messages: list[Message]) -> str:
        return "[input-required]For which vault: north or south?"

    def b_answers(messages: list[Message]) -> str:
        reply = [m for m in messages if isinstance(m, UserMessage)][-1].content
        return f"The {reply} vault code is 5-5-0-2"

    model_b = ScriptedModel([b_needs_more, b_answers])
    agent_b = Agent(model_b, name="vault keeper", description="Knows the vault codes")

    def a_answers_question(messages: list[Message]) -> list[ToolCall]:
        result = _last_tool_result(messages).result
        assert not result.is_error
        assert result.structured_content is not None
        assert result.structured_content["state"] == "input_required"
        assert "north or south" in result.text_content
        return [
            ToolCall.of(
                "ask_b",
                {"message": "north", "task_id": result.structured_content["task_id"]},
                id="c2",
            )
        ]

    def a_concludes(messages: list[Message]) -> str:
        return f"Done: {_last_tool_result(messages).result.text_content}"

    async with _serve(agent_b) as b_url:
        peer = A2APeerToolset("b", b_url)
        model_a = ScriptedModel(
            [
                [ToolCall.of("ask_b", {"message": "What is the vault code?"}, id="c1")],
                a_answers_question,
                a_concludes,
            ]
        )
        agent_a = Agent(model_a, tools=[peer], name="front desk")
        result = await agent_a.run("Get me the vault code")

    assert result.output == "Done: The north vault code is 5-5-0-2"
    first, second = result.tool_calls
    assert first.result.structured_content is not None
    assert second.result.structured_content is not None
    # The answer continued B's task, in B's context.
    assert second.result.structured_content["task_id"] == first.result.structured_content["task_id"]
    assert (
        second.result.structured_content["context_id"]
        == first.result.structured_content["context_id"]
    )
    assert second.result.structured_content["state"] == "completed"


@pytest.mark.anyio
async def test_peer_tool_activity_reaches_the_caller_as_progress() -> None:
    from agent_runtime.tools import tool
    from agent_runtime.toolset import ToolContext

    @tool  # type: ignore[untyped-decorator]
    def lookup_code(vault: str) -> str:
        """Look up a vault's code."""
        return f"{vault}: 3-1-4-1"

    model_b = ScriptedModel(
        [
            [ToolCall.of("lookup_code", {"vault": "east"}, id="t1")],
            lambda messages: f"Found it. {_last_tool_result(messages).result.text_content}",
        ]
    )
    agent_b = Agent(model_b, tools=[lookup_code], name="vault keeper")
    notes: list[tuple[float, str | None]] = []

    async def progress(done: float, total: float | None, message: str | None) -> None:
        notes.append((done, message))

    async with _serve(agent_b) as b_url, A2APeerToolset("b", b_url, streaming=True) as peer:
        result = await peer.call_tool(
            "ask_b", {"message": "east vault?"}, ToolContext(report_progress=progress)
        )
    assert not result.is_error
    assert result.text_content == "Found it. east: 3-1-4-1"
    assert "peer calls lookup_code" in [m for _, m in notes]
    assert [d for d, _ in notes] == sorted(d for d, _ in notes)


@pytest.mark.anyio
async def test_dispatcher_timeout_cancels_the_peers_task() -> None:
    from a2a_interop_support.echo_model import EchoModel

    from agent_runtime.dispatcher import DispatchConfig

    agent_b = Agent(EchoModel(), name="slowpoke")
    async with _serve(agent_b) as b_url:
        peer = A2APeerToolset("b", b_url)
        model_a = ScriptedModel(
            [
                [ToolCall.of("ask_b", {"message": "slow:take your time"}, id="c1")],
                lambda messages: _last_tool_result(messages).result.text_content,
            ]
        )
        agent_a = Agent(model_a, tools=[peer], dispatch=DispatchConfig(call_timeout_s=2.0))
        result = await agent_a.run("ask b, but do not wait long")
        (record,) = result.tool_calls
        assert record.result.is_error
        assert record.result.structured_content is not None
        task_id = record.result.structured_content["task_id"]
        async with A2AClient(b_url) as client:
            task = await client.get_task(task_id)
    assert task.status.state == TaskState.CANCELED
    assert "did not finish" in result.output
