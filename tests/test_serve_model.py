"""``agent-runtime serve-model --path DIR`` as other programs use it: the official ``openai``
client against a real server process serving a tiny checkpoint built here (random weights, a
tokenizer trained here, the Kimi K2 format)."""

from __future__ import annotations

import json
import re
import time
from collections.abc import Iterator
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from model_support import local_checkpoint
from serve_model_support import serve_model
from tokenizer_support import kimi_tokenizer_folder

MODEL = "tiny"
WEATHER = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city.",
        "parameters": {
            "type": "object",
            "properties": {
                "city": {"type": "string", "maxLength": 8},
                "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
            },
            "required": ["city", "unit"],
            "additionalProperties": False,
        },
    },
}
DAYS = {
    "type": "function",
    "function": {
        "name": "days_until",
        "description": "Days from today until a date.",
        "parameters": {
            "type": "object",
            "properties": {"days": {"type": "integer", "minimum": 0, "maximum": 999}},
            "required": ["days"],
            "additionalProperties": False,
        },
    },
}
TOOLS: list[Any] = [WEATHER, DAYS]
SCHEMAS = {t["function"]["name"]: t["function"]["parameters"] for t in TOOLS}
KIMI_ID = re.compile(r"^functions\.([A-Za-z0-9_.\-]+):(\d+)$")


@pytest.fixture(scope="module")
def base_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("serve-model")
    checkpoint = local_checkpoint(root / "ckpt", kimi_tokenizer_folder(root / "tok"), seed=1)
    with serve_model("--path", str(checkpoint), "--served-model-name", MODEL) as url:
        yield url


@pytest.fixture(scope="module")
def client(base_url: str) -> Iterator[openai.OpenAI]:
    with openai.OpenAI(base_url=base_url, api_key="unused", max_retries=0, timeout=120) as c:
        yield c


def ask(text: str) -> list[Any]:
    return [{"role": "user", "content": text}]


def health(base_url: str) -> dict[str, Any]:
    answer = httpx.get(base_url.removesuffix("/v1") + "/health", timeout=10)
    assert answer.status_code == 200
    data: dict[str, Any] = answer.json()
    return data


def check_call(call: Any) -> None:
    match = KIMI_ID.match(call.id)
    assert match is not None, call.id
    assert match.group(1) == call.function.name
    jsonschema.validate(json.loads(call.function.arguments), SCHEMAS[call.function.name])


def test_models_lists_the_served_model_and_says_one_generation_at_a_time(
    client: openai.OpenAI, base_url: str
) -> None:
    models = client.models.list().data
    assert [m.id for m in models] == [MODEL]
    metadata = models[0].model_extra["metadata"]  # type: ignore[index]
    assert metadata["concurrency"] == 1
    assert metadata["scheduling"] == "fifo"
    assert client.models.retrieve(MODEL).id == MODEL
    assert health(base_url)["status"] == "ok"


def test_max_tokens_ends_a_whole_answer_with_length_and_counts_usage(
    client: openai.OpenAI,
) -> None:
    done = client.chat.completions.create(
        model=MODEL, messages=ask("Tell me a story."), max_tokens=5
    )
    assert done.object == "chat.completion"
    assert done.choices[0].finish_reason == "length"
    assert done.usage is not None
    assert done.usage.completion_tokens == 5
    assert done.usage.prompt_tokens > 0
    assert done.usage.total_tokens == done.usage.prompt_tokens + 5


def test_a_streamed_answer_is_the_whole_answer_in_pieces(client: openai.OpenAI) -> None:
    messages = ask("Describe the sea.")
    whole = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=12)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=messages,
        max_tokens=12,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    reasons = [c.choices[0].finish_reason for c in chunks if c.choices]
    assert chunks[0].choices[0].delta.role == "assistant"
    assert len(chunks) > 3
    assert text == whole.choices[0].message.content
    assert reasons[-1] == whole.choices[0].finish_reason == "length"
    assert chunks[-1].choices == []
    assert chunks[-1].usage is not None
    assert chunks[-1].usage.completion_tokens == 12


def test_a_tool_round_trip_calls_with_kimi_ids_then_answers_from_the_result(
    client: openai.OpenAI,
) -> None:
    messages = ask("Weather in Paris?")
    called = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice="required", max_tokens=200
    )
    choice = called.choices[0]
    assert choice.finish_reason == "tool_calls"
    calls = choice.message.tool_calls
    assert calls
    for call in calls:
        check_call(call)
    messages.append(choice.message.model_dump(exclude_none=True))
    for call in calls:
        messages.append({"role": "tool", "tool_call_id": call.id, "content": "11 C, rain"})
    answer = client.chat.completions.create(
        model=MODEL, messages=messages, tools=TOOLS, tool_choice="none", max_tokens=20
    )
    final = answer.choices[0]
    assert not final.message.tool_calls
    assert isinstance(final.message.content, str) and final.message.content
    assert final.finish_reason in ("stop", "length")
    # The second turn's prompt starts with the first (the call rendered back as generated).
    assert answer.usage is not None and called.usage is not None
    assert answer.usage.prompt_tokens > called.usage.prompt_tokens


def test_a_named_tool_choice_calls_that_tool_and_none_calls_nothing(
    client: openai.OpenAI,
) -> None:
    named = client.chat.completions.create(
        model=MODEL,
        messages=ask("How long until my birthday?"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "days_until"}},
        max_tokens=100,
    )
    calls = named.choices[0].message.tool_calls or []
    assert calls and {c.function.name for c in calls} == {"days_until"}
    for call in calls:
        check_call(call)
    for choice in ("none", "auto"):
        turn = client.chat.completions.create(
            model=MODEL,
            messages=ask("How long until my birthday?"),
            tools=TOOLS,
            tool_choice=choice,  # type: ignore[arg-type]
            max_tokens=60,
        )
        made = turn.choices[0].message.tool_calls or []
        if choice == "none":
            assert made == []
        for call in made:  # whatever auto chose is a constrained, valid call
            check_call(call)
        assert (turn.choices[0].finish_reason == "tool_calls") == bool(made)


def test_streamed_tool_calls_send_id_and_name_before_the_argument_pieces(
    client: openai.OpenAI,
) -> None:
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ask("Weather in Oslo?"),
        tools=TOOLS,
        tool_choice={"type": "function", "function": {"name": "get_weather"}},
        max_tokens=200,
        stream=True,
    )
    pieces: dict[int, list[Any]] = {}
    reasons = []
    for chunk in stream:
        for choice in chunk.choices:
            reasons.append(choice.finish_reason)
            for delta in choice.delta.tool_calls or []:
                pieces.setdefault(delta.index, []).append(delta)
    assert reasons[-1] == "tool_calls"
    assert sorted(pieces) == list(range(len(pieces)))  # indexes from 0 in each answer
    for deltas in pieces.values():
        first = deltas[0]
        assert first.id and first.function and first.function.name == "get_weather"
        assert all(d.id is None for d in deltas[1:])
        arguments = "".join((d.function.arguments or "") for d in deltas if d.function)
        jsonschema.validate(json.loads(arguments), SCHEMAS["get_weather"])
        assert KIMI_ID.match(first.id)


def test_a_repeated_prefix_is_reported_as_cached_prompt_tokens(client: openai.OpenAI) -> None:
    messages = ask("A question nobody asked before: why is the sky blue, twice?")
    first = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    again = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=3)
    assert first.usage is not None and again.usage is not None
    assert first.usage.prompt_tokens_details is not None
    assert again.usage.prompt_tokens_details is not None
    before = first.usage.prompt_tokens_details.cached_tokens or 0
    cached = again.usage.prompt_tokens_details.cached_tokens or 0
    assert cached > before
    assert cached > again.usage.prompt_tokens // 2
    assert again.choices[0].message.content == first.choices[0].message.content


def test_stop_cuts_the_text_before_the_stop_string(client: openai.OpenAI) -> None:
    messages = ask("Count for me.")
    free = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24)
    text = free.choices[0].message.content or ""
    assert len(text) >= 6, text
    stop = text[len(text) // 2 : len(text) // 2 + 2]
    cut = client.chat.completions.create(model=MODEL, messages=messages, max_tokens=24, stop=stop)
    assert cut.choices[0].message.content == text[: text.find(stop)]
    assert cut.choices[0].finish_reason == "stop"


def test_a_seed_repeats_a_sampled_answer_and_another_seed_differs(
    client: openai.OpenAI,
) -> None:
    def sample(seed: int) -> str:
        done = client.chat.completions.create(
            model=MODEL, messages=ask("Say anything."), temperature=1.0, seed=seed, max_tokens=30
        )
        return done.choices[0].message.content or ""

    first = sample(7)
    assert sample(7) == first
    assert sample(8) != first


def test_a_client_that_disconnects_stops_its_generation(
    client: openai.OpenAI, base_url: str
) -> None:
    before = health(base_url)
    stream = client.chat.completions.create(
        model=MODEL,
        messages=ask("Talk forever."),
        temperature=1.0,
        seed=3,
        max_tokens=1500,
        stream=True,
    )
    for seen, _ in enumerate(stream):
        if seen == 3:
            break
    stream.close()
    deadline = time.monotonic() + 60
    while True:  # the server notices the closed connection and closes the model's stream
        now = health(base_url)
        if now["cancelled"] > before["cancelled"] and now["active"] == 0:
            break
        assert time.monotonic() < deadline, now
        time.sleep(0.05)
    assert now["served"] == before["served"]  # the cut request never ran to its end
    after = client.chat.completions.create(model=MODEL, messages=ask("Hi."), max_tokens=3)
    assert after.usage is not None and after.usage.completion_tokens == 3
    assert health(base_url)["served"] == before["served"] + 1


@pytest.mark.parametrize(
    ("changes", "param"),
    [
        ({"n": 2}, "n"),
        ({"max_tokens": 0}, "max_tokens"),
        ({"temperature": "hot"}, "temperature"),
        ({"top_p": 0}, "top_p"),
        ({"seed": 2**70}, "seed"),
        ({"stop": [1]}, "stop"),
        ({"tool_choice": {"type": "function", "function": {"name": "nope"}}}, "tool_choice"),
        ({"tool_choice": "required", "tools": None}, "tool_choice"),
        ({"tools": [{"type": "function", "function": {"name": "bad name"}}]}, None),
        (
            {"tools": [{"type": "function", "function": {"name": "t", "parameters": {"type": 5}}}]},
            "tools[0].function.parameters",
        ),
        ({"messages": []}, "messages"),
        ({"messages": [{"role": "wizard", "content": "x"}]}, "messages[0].role"),
        (
            {"messages": [{"role": "user", "content": [{"type": "image_url", "image_url": {}}]}]},
            "messages[0].content[0]",
        ),
        (
            {"messages": [{"role": "tool", "tool_call_id": "call_1", "content": "x"}]},
            "messages[0].tool_call_id",
        ),
        ({"response_format": {"type": "json_object"}}, "response_format"),
    ],
)
def test_bad_requests_get_openai_errors_naming_the_field(
    client: openai.OpenAI, changes: dict[str, Any], param: str | None
) -> None:
    body: dict[str, Any] = {"model": MODEL, "messages": ask("Hi."), "tools": TOOLS}
    body.update(changes)
    body = {k: v for k, v in body.items() if v is not None}
    with pytest.raises(openai.BadRequestError) as caught:
        client.chat.completions.create(**body)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["type"] == "invalid_request_error"
    assert error["message"]
    if param is not None:
        assert error["param"] == param
    else:
        assert str(error["param"]).startswith("tools[0]")


def test_an_unknown_model_is_404_and_malformed_bodies_are_400_not_500(
    client: openai.OpenAI, base_url: str
) -> None:
    with pytest.raises(openai.NotFoundError) as caught:
        client.chat.completions.create(model="gpt-9", messages=ask("Hi."))
    assert "tiny" in str(caught.value)
    url = f"{base_url}/chat/completions"
    deep = '{"model": "tiny", "messages": ' + "[" * 200 + "]" * 200 + "}"
    lone = '{"model": "tiny", "messages": [{"role": "user", "content": "\\ud800"}]}'
    for raw in ("{not json", "[1, 2]", deep, lone, b"\xff\xfe"):
        answer = httpx.post(url, content=raw, timeout=30)
        assert answer.status_code == 400, (raw, answer.text)
        assert answer.json()["error"]["type"] == "invalid_request_error"
    wrong_method = httpx.get(url, timeout=10)
    assert wrong_method.status_code == 405
    assert "error" in wrong_method.json()
    assert health(base_url)["status"] == "ok"
