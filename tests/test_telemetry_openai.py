"""The OpenAI-compatible backend's model calls on traces: a real streamed completion over
loopback HTTP becomes a ``chat {model}`` span with the model id, provider ``openai``, the usage
and the finish reason the server sent, and its token usage reaches the metrics. The API key sent
as a bearer token is on no span."""

from __future__ import annotations

import json

import pytest
from openai_support.server import MODEL, scripted_server, text_reply
from telemetry_support import Recorded

from agent_runtime import Agent
from agent_runtime.protocols.openai.chat import OpenAIChatModel

pytestmark = pytest.mark.anyio


async def test_openai_model_call_span(recorded: Recorded) -> None:
    async with scripted_server(text_reply("hel", "lo", prompt=21, completion=5)) as server:
        async with OpenAIChatModel(server.url, MODEL, api_key="sk-test-key-0123456789abc") as model:
            result = await Agent(model, name="remote").run("hi")
    assert result.output == "hello"
    chat = recorded.one(f"chat {MODEL}")
    attrs = dict(chat.attributes or {})
    assert attrs["gen_ai.request.model"] == MODEL
    assert attrs["gen_ai.provider.name"] == "openai"
    assert attrs["gen_ai.usage.input_tokens"] == 21
    assert attrs["gen_ai.usage.output_tokens"] == 5
    assert attrs["gen_ai.response.finish_reasons"] == ("stop",)
    assert attrs["gen_ai.response.time_to_first_chunk"] > 0
    run = recorded.one("invoke_agent remote")
    assert chat.parent is not None and chat.parent.span_id == run.context.span_id
    points = recorded.metric_points("gen_ai.client.token.usage")
    sums = {p.attributes["gen_ai.token.type"]: p.sum for p in points}
    assert sums == {"input": 21, "output": 5}
    blob = json.dumps([dict(s.attributes or {}) for s in recorded.spans()])
    assert "sk-test-key" not in blob
