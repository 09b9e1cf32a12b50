"""A 2026-07-28 host asked for input by a server behind the gateway, through InputRequiredResult.

The gateway (a real ``agent-runtime mcp-serve --gateway --http`` subprocess) fronts our SDK-built
test server over the 2025-11-25 handshake, whose ``confirm_action`` elicits and ``ask_model``
samples in the middle of its call. The host is the official ``mcp`` client speaking 2026-07-28
over HTTP: it gets the question as an ``InputRequiredResult``, answers, and retries with the
state; the waiting call behind goes on. Tokens are single-use, bound to the host and the call,
and expire with their question.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import anyio
import mcp_types as mt
import pytest
from mcp import Client
from mcp.shared.exceptions import MCPError
from mcp_support.gateway_http import gateway_before_test_server
from mcp_support.helpers import calls_to

pytestmark = pytest.mark.anyio

MODERN = "2026-07-28"


def _text(result: mt.CallToolResult) -> str:
    return "".join(block.text for block in result.content if isinstance(block, mt.TextContent))


class Host:
    """The host's answers: a form filled in, a completion written; each question recorded."""

    def __init__(self) -> None:
        self.forms: list[str] = []
        self.samples: list[str] = []

    async def elicit(self, ctx: Any, params: mt.ElicitRequestParams) -> mt.ElicitResult:
        self.forms.append(params.message)
        return mt.ElicitResult(action="accept", content={"confirm": True, "reason": "ok"})

    async def sample(
        self, ctx: Any, params: mt.CreateMessageRequestParams
    ) -> mt.CreateMessageResult:
        first = params.messages[0].content
        self.samples.append(first.text if isinstance(first, mt.TextContent) else "")
        return mt.CreateMessageResult(
            role="assistant", content=mt.TextContent(type="text", text="42"), model="host"
        )

    def client(self, url: str, name: str = "host") -> Client:
        return Client(
            url,
            mode=MODERN,
            elicitation_callback=self.elicit,
            sampling_callback=self.sample,
            client_info=mt.Implementation(name=name, version="1.0"),
            read_timeout_seconds=60,
        )


async def _first_round(client: Client, action: str) -> mt.InputRequiredResult:
    first = await client.session.call_tool(
        "test__confirm_action", {"action": action}, allow_input_required=True
    )
    assert isinstance(first, mt.InputRequiredResult), first
    return first


def _accept(first: mt.InputRequiredResult) -> mt.InputResponses:
    assert first.input_requests is not None
    return {
        key: mt.ElicitResult(action="accept", content={"confirm": True, "reason": "manual"})
        for key in first.input_requests
    }


async def test_elicitation_and_sampling_behind_the_gateway_reach_a_2026_07_28_host(
    tmp_path: Path,
) -> None:
    host = Host()
    with gateway_before_test_server(tmp_path) as url:
        async with host.client(url) as client:
            assert client.protocol_version == MODERN
            confirmed = await client.call_tool("test__confirm_action", {"action": "launch"})
            sampled = await client.call_tool("test__ask_model", {"question": "the answer?"})
    assert not confirmed.is_error, _text(confirmed)
    assert _text(confirmed) == "confirmed=True reason=ok"
    assert host.forms == ["May I launch?"]
    assert not sampled.is_error, _text(sampled)
    assert _text(sampled) == "model said: 42"
    assert host.samples == ["the answer?"]


async def test_the_agent_tool_passes_a_question_from_behind_to_a_2026_07_28_host(
    tmp_path: Path,
) -> None:
    host = Host()
    prompt = 'call test__confirm_action {"action": "deploy"}'
    with gateway_before_test_server(tmp_path, yes=True) as url:
        async with host.client(url) as client:
            answered = await client.call_tool("ask_front", {"prompt": prompt})
    assert not answered.is_error, _text(answered)
    assert _text(answered) == "result: confirmed=True reason=ok"
    assert host.forms == ["May I deploy?"]


async def test_the_input_round_is_plain_wire_data_and_its_token_is_single_use(
    tmp_path: Path,
) -> None:
    with gateway_before_test_server(tmp_path) as url:
        async with Host().client(url) as client:
            first = await _first_round(client, "launch")
            assert first.input_requests is not None
            (request,) = first.input_requests.values()
            answers = _accept(first)
            done = await client.session.call_tool(
                "test__confirm_action",
                {"action": "launch"},
                input_responses=answers,
                request_state=first.request_state,
            )
            with pytest.raises(MCPError, match="already used"):
                await client.session.call_tool(
                    "test__confirm_action",
                    {"action": "launch"},
                    input_responses=answers,
                    request_state=first.request_state,
                )
            with pytest.raises(MCPError, match="not issued by this gateway"):
                await client.session.call_tool(
                    "test__confirm_action",
                    {"action": "launch"},
                    input_responses=answers,
                    request_state="forged-" + (first.request_state or ""),
                )
            with pytest.raises(MCPError, match="without the requestState"):
                await client.session.call_tool(
                    "test__confirm_action", {"action": "launch"}, input_responses=answers
                )
    assert isinstance(request, mt.ElicitRequest)
    assert request.params.message == "May I launch?"
    assert isinstance(done, mt.CallToolResult)
    assert _text(done) == "confirmed=True reason=manual"
    assert calls_to(tmp_path / "state", "confirm_action") == 1


async def test_a_token_is_bound_to_its_host_and_its_call(tmp_path: Path) -> None:
    with gateway_before_test_server(tmp_path) as url:
        async with Host().client(url, name="host") as client:
            first = await _first_round(client, "launch")
            answers = _accept(first)
            async with Host().client(url, name="intruder") as other:
                with pytest.raises(MCPError, match="another host or another call"):
                    await other.session.call_tool(
                        "test__confirm_action",
                        {"action": "launch"},
                        input_responses=answers,
                        request_state=first.request_state,
                    )
            with pytest.raises(MCPError, match="another host or another call"):
                await client.session.call_tool(
                    "test__confirm_action",
                    {"action": "something else"},
                    input_responses=answers,
                    request_state=first.request_state,
                )
            # Refusing the others did not spend it: its own host and call still can.
            done = await client.session.call_tool(
                "test__confirm_action",
                {"action": "launch"},
                input_responses=answers,
                request_state=first.request_state,
            )
    assert isinstance(done, mt.CallToolResult)
    assert _text(done) == "confirmed=True reason=manual"


async def test_an_unanswered_question_expires_and_the_server_behind_is_told(
    tmp_path: Path,
) -> None:
    env = {"AGENT_RUNTIME_MCP_INPUT_WAIT_S": "1"}
    host = Host()
    with gateway_before_test_server(tmp_path, env=env) as url:
        async with host.client(url) as client:
            first = await _first_round(client, "launch")
            await anyio.sleep(3)  # well past the gateway's one-second wait
            with pytest.raises(MCPError, match="has expired"):
                await client.session.call_tool(
                    "test__confirm_action",
                    {"action": "launch"},
                    input_responses=_accept(first),
                    request_state=first.request_state,
                )
            # The gateway goes on serving: a question answered in time still gets through.
            again = await client.call_tool("test__confirm_action", {"action": "retry"})
    log = (tmp_path / "gateway.err").read_text(encoding="utf-8")
    assert "elicitation cancelled: the host in front did not answer in time" in log
    assert _text(again) == "confirmed=True reason=ok"
    assert host.forms == ["May I retry?"]
    # The expired call never confirmed anything; only the answered one ran its body.
    assert calls_to(tmp_path / "state", "confirm_action") == 1
