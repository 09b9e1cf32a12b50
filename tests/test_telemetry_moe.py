"""Telemetry of the local MoE backend: each turn is a ``moe generate`` span, a child of the agent's
model-call span (across the worker thread), with prompt, prefix-cache hit, generated tokens and
prefill/decode speeds, and two children, ``moe prefill`` then ``moe decode``, each with its own
times, tokens and speed; a cancelled turn's spans end too, the decode marked cancelled."""

from __future__ import annotations

from pathlib import Path

import pytest
from model_support import local_checkpoint
from opentelemetry.sdk.trace import ReadableSpan
from telemetry_support import Recorded, attrs, parent_of, span_id
from tokenizer_support import kimi_tokenizer_folder

from agent_runtime import Agent
from agent_runtime.backend import ModelSettings, TextDelta
from agent_runtime.model import LocalMoEModel
from agent_runtime.types import UserMessage

pytestmark = pytest.mark.anyio


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("moe-telemetry")
    return local_checkpoint(root / "ckpt", kimi_tokenizer_folder(root / "tok"), seed=1)


async def test_each_turn_is_a_moe_span_under_the_model_call_with_tokens_and_speeds(
    checkpoint: Path,
    recorded: Recorded,
) -> None:
    model = LocalMoEModel.from_pretrained(checkpoint)
    assert model.provider_name == "local_moe"
    settings = ModelSettings(max_tokens=6, tool_choice="none")
    agent = Agent(model, tools=[], settings=settings, name="moe-agent")
    first = await agent.run("Weather in Paris?")
    # The second run repeats the first conversation and adds to it: its prompt starts with
    # what the prefix cache kept.
    second = await agent.run("And in Rome?", first.messages)
    turns = recorded.named("moe generate")
    assert len(turns) == 2
    chats = recorded.named(f"chat {model.model_name}")
    assert len(chats) == 2
    for turn, chat, result in zip(turns, chats, (first, second), strict=True):
        a = attrs(turn)
        assert turn.parent is not None and turn.parent.span_id == chat.context.span_id
        assert turn.context.trace_id == chat.context.trace_id
        assert a["gen_ai.provider.name"] == "local_moe"
        assert a["gen_ai.request.model"] == model.model_name
        assert a["gen_ai.usage.input_tokens"] == result.usage.input_tokens
        assert a["gen_ai.usage.output_tokens"] == result.usage.output_tokens == 6
        assert a["agent_runtime.moe.generated_tokens"] == 6
        assert a["agent_runtime.moe.prompt_tokens"] == result.usage.input_tokens
        assert a["agent_runtime.moe.prefix_cache_hit_tokens"] == result.usage.cached_tokens
        assert (
            a["agent_runtime.moe.prefill_tokens"]
            == result.usage.input_tokens - result.usage.cached_tokens
        )
        assert a["gen_ai.response.finish_reasons"] == ("length",)
        for key in (
            "agent_runtime.moe.prefill_s",
            "agent_runtime.moe.decode_s",
            "agent_runtime.moe.prefill_tokens_per_s",
            "agent_runtime.moe.decode_tokens_per_s",
        ):
            value = a[key]
            assert isinstance(value, float) and value > 0, key
        assert turn.status.is_ok

        prefill, decode = _phases(recorded, turn)
        p, d = attrs(prefill), attrs(decode)
        assert p["agent_runtime.moe.prefill_tokens"] == a["agent_runtime.moe.prefill_tokens"]
        assert p["agent_runtime.moe.prefix_cache_hit_tokens"] == result.usage.cached_tokens
        # The first token comes out of the prefill; the decode makes the rest.
        assert 0 < d["agent_runtime.moe.decode_tokens"] < result.usage.output_tokens
        assert d["agent_runtime.moe.decode_tokens"] == a["agent_runtime.moe.decode_tokens"]
        assert "agent_runtime.moe.decode_tokens" not in p
        assert "agent_runtime.moe.prefill_tokens" not in d
        # Each phase's speed is its tokens over its own span's duration (the turn's figure too).
        for phase, tokens in ((prefill, "prefill_tokens"), (decode, "decode_tokens")):
            own = attrs(phase)
            speed = own[f"agent_runtime.moe.{tokens}_per_s"]
            assert speed == a[f"agent_runtime.moe.{tokens}_per_s"]
            assert speed == pytest.approx(
                own[f"agent_runtime.moe.{tokens}"] / _seconds(phase), rel=1e-3
            )
            assert phase.status.is_ok and "error.type" not in own
    assert attrs(turns[0])["agent_runtime.moe.prefix_cache_hit_tokens"] == 0
    assert attrs(turns[1])["agent_runtime.moe.prefix_cache_hit_tokens"] > 0
    assert len(recorded.named("moe prefill")) == len(recorded.named("moe decode")) == 2


def _phases(recorded: Recorded, turn: ReadableSpan) -> tuple[ReadableSpan, ReadableSpan]:
    """The ``moe prefill`` and ``moe decode`` children of ``turn``, checked to be its only
    children, in order, inside it: the prefill ends before the decode starts."""
    children = [s for s in recorded.spans() if parent_of(s) == span_id(turn)]
    assert sorted(s.name for s in children) == ["moe decode", "moe prefill"]
    (prefill,) = [s for s in children if s.name == "moe prefill"]
    (decode,) = [s for s in children if s.name == "moe decode"]
    for child in children:
        assert child.context is not None and turn.context is not None
        assert child.context.trace_id == turn.context.trace_id
    assert turn.start_time is not None and turn.end_time is not None
    assert prefill.start_time is not None and prefill.end_time is not None
    assert decode.start_time is not None and decode.end_time is not None
    assert turn.start_time <= prefill.start_time < prefill.end_time
    assert prefill.end_time <= decode.start_time < decode.end_time <= turn.end_time
    return prefill, decode


def _seconds(span: ReadableSpan) -> float:
    assert span.start_time is not None and span.end_time is not None
    return (span.end_time - span.start_time) / 1e9


async def test_a_turn_closed_early_ends_its_span_as_cancelled(
    checkpoint: Path,
    recorded: Recorded,
) -> None:
    model = LocalMoEModel.from_pretrained(checkpoint)
    settings = ModelSettings(max_tokens=200, tool_choice="none", temperature=1.0, seed=7)
    stream = model.stream([UserMessage(content="Tell me a story")], [], settings)
    seen = 0
    async for event in stream:
        if isinstance(event, TextDelta):
            seen += 1
            if seen == 2:
                break
    await stream.aclose()  # type: ignore[attr-defined]
    turn = recorded.one("moe generate")  # ended: exported
    assert attrs(turn)["error.type"] == "cancelled"
    assert attrs(turn)["agent_runtime.moe.generated_tokens"] < 200
    # The prefill had finished; the decode was stopped.
    prefill, decode = _phases(recorded, turn)
    assert prefill.status.is_ok and "error.type" not in attrs(prefill)
    assert attrs(decode)["error.type"] == "cancelled"
    assert not decode.status.is_ok
    assert 0 < attrs(decode)["agent_runtime.moe.decode_tokens"] < 200
    # The model serves the next turn (the lock was released with the span).
    done = await model.complete(
        [
            UserMessage(content="Hi"),
        ],
        [],
        ModelSettings(max_tokens=2, tool_choice="none"),
    )
    assert done.usage.output_tokens == 2
    assert len(recorded.named("moe generate")) == 2


def test_with_tracing_off_a_turn_makes_no_span(checkpoint: Path) -> None:
    import anyio

    model = LocalMoEModel.from_pretrained(checkpoint)
    assert model._span(3).recording is False
    result = anyio.run(
        model.complete,
        [UserMessage(content="Hi")],
        [],
        ModelSettings(max_tokens=2, tool_choice="none"),
    )
    assert result.usage.output_tokens == 2
