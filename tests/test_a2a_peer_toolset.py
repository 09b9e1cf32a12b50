"""A2APeerToolset: a peer agent (the official a2a-sdk echo server, a real subprocess) as a tool."""

from __future__ import annotations

import socket
from collections.abc import Iterator

import pytest
from a2a_interop_support.processes import sdk_echo_server

from agent_runtime.protocols.a2a.client import A2AClient
from agent_runtime.protocols.a2a.peer import A2APeerToolset
from agent_runtime.protocols.a2a.types import TaskState
from agent_runtime.toolset import ToolContext
from agent_runtime.types import DataPart, TextPart


@pytest.fixture(scope="module")
def sdk_url() -> Iterator[str]:
    with sdk_echo_server() as url:
        yield url


@pytest.mark.anyio
async def test_tool_is_named_after_the_peer_and_described_by_its_card(sdk_url: str) -> None:
    async with A2APeerToolset("echo", sdk_url) as peer:
        (spec,) = await peer.list_tools()
    assert spec.name == "ask_echo"
    assert spec.origin == "a2a:echo"
    assert "Echoes text back" in spec.description
    assert "Echo the input" in spec.description  # the skill
    assert spec.input_schema["required"] == ["message"]
    assert set(spec.input_schema["properties"]) == {"message", "context_id", "task_id"}


@pytest.mark.anyio
async def test_skills_as_tools_offers_one_tool_per_skill(sdk_url: str) -> None:
    async with A2APeerToolset("echo", sdk_url, skills_as_tools=True) as peer:
        specs = await peer.list_tools()
        assert [s.name for s in specs] == ["echo_echo"]
        result = await peer.call_tool("echo_echo", {"message": "via skill"}, ToolContext())
    assert result.text_content == "echo: via skill"


@pytest.mark.anyio
@pytest.mark.parametrize("streaming", [False, True])
async def test_call_returns_the_peers_artifacts_and_task_ids(sdk_url: str, streaming: bool) -> None:
    async with A2APeerToolset("echo", sdk_url, streaming=streaming) as peer:
        result = await peer.call_tool("ask_echo", {"message": "hello peer"}, ToolContext())
    assert not result.is_error
    assert result.text_content == "echo: hello peer"
    assert result.structured_content is not None
    assert result.structured_content["state"] == "completed"
    assert result.structured_content["task_id"]
    assert result.structured_content["context_id"]


@pytest.mark.anyio
async def test_data_artifacts_become_data_parts(sdk_url: str) -> None:
    async with A2APeerToolset("echo", sdk_url) as peer:
        result = await peer.call_tool("ask_echo", {"message": 'data:{"n": 7}'}, ToolContext())
    assert not result.is_error
    assert result.content == [DataPart(data={"n": 7})]


@pytest.mark.anyio
async def test_direct_message_reply_becomes_the_result(sdk_url: str) -> None:
    async with A2APeerToolset("echo", sdk_url) as peer:
        result = await peer.call_tool("ask_echo", {"message": "msg:short"}, ToolContext())
    assert result.content == [TextPart(text="echo: msg:short")]
    assert result.structured_content is not None
    assert result.structured_content["state"] == "message"


@pytest.mark.anyio
@pytest.mark.parametrize("streaming", [False, True])
async def test_input_required_is_a_question_the_model_can_answer(
    sdk_url: str, streaming: bool
) -> None:
    async with A2APeerToolset("echo", sdk_url, streaming=streaming) as peer:
        asked = await peer.call_tool("ask_echo", {"message": "ask:Which city?"}, ToolContext())
        assert not asked.is_error
        assert asked.structured_content is not None
        assert asked.structured_content["state"] == "input_required"
        task_id = asked.structured_content["task_id"]
        assert "Which city?" in asked.text_content
        assert task_id in asked.text_content
        answered = await peer.call_tool(
            "ask_echo",
            {
                "message": "Paris",
                "task_id": task_id,
                "context_id": asked.structured_content["context_id"],
            },
            ToolContext(),
        )
    assert not answered.is_error
    assert answered.text_content == "answer: Paris"
    assert answered.structured_content is not None
    assert answered.structured_content["task_id"] == task_id
    assert answered.structured_content["state"] == "completed"


@pytest.mark.anyio
async def test_failed_task_is_an_error_result_with_the_reason(sdk_url: str) -> None:
    async with A2APeerToolset("echo", sdk_url) as peer:
        result = await peer.call_tool("ask_echo", {"message": "fail:disk full"}, ToolContext())
    assert result.is_error
    assert "disk full" in result.text_content
    assert result.structured_content is not None
    assert result.structured_content["state"] == "failed"


@pytest.mark.anyio
async def test_unknown_task_id_is_an_error_result_not_an_exception(sdk_url: str) -> None:
    async with A2APeerToolset("echo", sdk_url) as peer:
        result = await peer.call_tool(
            "ask_echo", {"message": "hi", "task_id": "no-such-task"}, ToolContext()
        )
    assert result.is_error
    assert "TaskNotFound" in result.text_content


@pytest.mark.anyio
@pytest.mark.parametrize("streaming", [False, True])
async def test_timeout_cancels_the_remote_task(sdk_url: str, streaming: bool) -> None:
    async with A2APeerToolset("echo", sdk_url, timeout_s=1.5, streaming=streaming) as peer:
        result = await peer.call_tool("ask_echo", {"message": "slow:forever"}, ToolContext())
    assert result.is_error
    assert "did not finish" in result.text_content
    assert result.structured_content is not None
    task_id = result.structured_content["task_id"]
    assert task_id
    async with A2AClient(sdk_url) as client:
        task = await client.get_task(task_id)
    assert task.status.state == TaskState.CANCELED


@pytest.mark.anyio
async def test_unreachable_peer_is_an_error_result() -> None:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    # Nothing listens on ``port`` now: every connection is refused.
    async with A2APeerToolset("ghost", f"http://127.0.0.1:{port}", retries=1) as peer:
        (spec,) = await peer.list_tools()
        assert spec.name == "ask_ghost"
        result = await peer.call_tool("ask_ghost", {"message": "anyone?"}, ToolContext())
    assert result.is_error
    assert "Could not reach the peer agent 'ghost'" in result.text_content


def test_file_parts_become_binary_parts_and_resource_links() -> None:
    from agent_runtime.protocols.a2a.peer import parts_to_content
    from agent_runtime.protocols.a2a.types import Part
    from agent_runtime.types import BinaryPart, ResourceLink

    content = parts_to_content(
        [
            Part(text="see "),
            Part(text="attached"),
            Part(raw=b"\x89PNG", media_type="image/png"),
            Part(url="https://example.com/r.pdf", filename="r.pdf", media_type="application/pdf"),
            Part(data=[1, 2]),
        ]
    )
    assert content == [
        TextPart(text="see attached"),
        BinaryPart(data=b"\x89PNG", media_type="image/png"),
        ResourceLink(uri="https://example.com/r.pdf", name="r.pdf", media_type="application/pdf"),
        DataPart(data=[1, 2]),
    ]
