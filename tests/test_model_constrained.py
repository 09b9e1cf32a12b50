"""Grammar-constrained tool calls (``agent_runtime.model.constrained``).

Most tests are random walks: at every step the constraint masks a zero logits vector and one of
the tokens left finite is picked uniformly (sometimes the forced tokens are taken instead, as the
generation loop's jump-forward does), until the constraint says the turn is done. Whatever a walk
produces must then have the format's layout, name offered tools only, and carry arguments that
jsonschema and the dispatcher's validator accept. The tokenizers are the small trained ones of
``tokenizer_support`` (a vocabulary of a few hundred tokens, so uniform walks end soon).
"""

from __future__ import annotations

import json
import logging
import random
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import torch
from jsonschema import Draft202012Validator
from tokenizer_support import deepseek_tokenizer, kimi_tokenizer, kimi_tokenizer_folder

from agent_runtime.backend import ToolCallDelta
from agent_runtime.model import constrained
from agent_runtime.model.chat_format import (
    ChatFormat,
    DeepSeekV3ChatFormat,
    DeepSeekV31ChatFormat,
    KimiK2ChatFormat,
)
from agent_runtime.model.constrained import ToolConstraint, ToolGrammar, tool_grammar
from agent_runtime.model.tokenizer import KimiTokenizer
from agent_runtime.schema import compile_schema
from agent_runtime.types import ToolSpec

_DATA = Path(__file__).resolve().parent / "data" / "object_schemas_2020_12.json"

WEATHER = ToolSpec(
    name="get_weather",
    input_schema={
        "type": "object",
        "properties": {
            "city": {"type": "string", "maxLength": 12},
            "unit": {"enum": ["celsius", "fahrenheit"]},
        },
        "required": ["city", "unit"],
        "additionalProperties": False,
    },
)
SEARCH = ToolSpec(
    name="search",
    input_schema={
        "type": "object",
        "properties": {
            "query": {"type": "string", "minLength": 1, "maxLength": 10},
            "filters": {
                "type": "object",
                "properties": {
                    "site": {"type": "string", "format": "hostname", "maxLength": 20},
                    "after": {"type": "string", "format": "date"},
                    "kinds": {
                        "type": "array",
                        "items": {"enum": ["news", "web", "images"]},
                        "maxItems": 3,
                    },
                },
                "required": ["after"],
                "additionalProperties": False,
            },
            "limit": {"type": "integer", "minimum": 1, "maximum": 50},
        },
        "required": ["query", "filters"],
        "additionalProperties": False,
    },
)
SCHEDULE = ToolSpec(
    name="schedule",
    input_schema={
        "type": "object",
        "properties": {
            "at": {"type": "string", "format": "date-time"},
            "attendees": {
                "type": "array",
                "items": {
                    "type": "object",
                    "properties": {
                        "email": {"type": "string", "format": "email", "maxLength": 30},
                        "optional": {"type": "boolean"},
                    },
                    "required": ["email"],
                    "additionalProperties": False,
                },
                "minItems": 1,
                "maxItems": 2,
            },
            "repeat": {
                "oneOf": [
                    {
                        "type": "object",
                        "properties": {"kind": {"const": "daily"}, "days": {"type": "integer"}},
                        "required": ["kind"],
                        "additionalProperties": False,
                    },
                    {
                        "type": "object",
                        "properties": {
                            "kind": {"const": "weekly"},
                            "weekday": {"enum": ["mon", "tue", "wed"]},
                        },
                        "required": ["kind", "weekday"],
                        "additionalProperties": False,
                    },
                ]
            },
        },
        "required": ["at", "attendees"],
        "additionalProperties": False,
    },
)
TOOLS = [WEATHER, SEARCH, SCHEDULE]


# ------------------------------------------------------------------------------------ helpers


def _kimi() -> ChatFormat:
    return KimiK2ChatFormat(kimi_tokenizer())


def _formats() -> list[ChatFormat]:
    return [
        KimiK2ChatFormat(kimi_tokenizer()),
        DeepSeekV3ChatFormat(deepseek_tokenizer("v3")),
        DeepSeekV31ChatFormat(deepseek_tokenizer("v3.1")),
    ]


def _allowed(constraint: ToolConstraint, vocab: int) -> list[int]:
    logits = torch.zeros(vocab)
    constraint.mask(logits)
    return torch.isfinite(logits).nonzero().flatten().tolist()


def _walk(
    grammar: ToolGrammar,
    rng: random.Random,
    *,
    prefix: Sequence[int] = (),
    banned: frozenset[int] = frozenset(),
    inside_think: bool = False,
) -> list[int]:
    """One uniform random walk; ``banned`` tokens must never be allowed on the way."""
    constraint = grammar.matcher(inside_think=inside_think)
    constraint.accept_many(prefix)
    for _ in range(50_000):
        if constraint.is_done():
            break
        if rng.random() < 0.5 and (forced := constraint.forced_tokens()):
            assert not banned & set(forced)
            constraint.accept_many(forced)
            continue
        allowed = _allowed(constraint, grammar.vocab_size)
        assert allowed, "the grammar left no token"
        assert not banned & set(allowed)
        constraint.accept(rng.choice(allowed))
        assert constraint.error is None, constraint.error
    else:
        raise AssertionError("walk did not finish")
    return constraint.tokens


def _render(fmt: ChatFormat, tokens: Sequence[int]) -> str:
    """Tokens as text with every control token written ``\\x00ID\\x00``. JSON text never holds a
    raw NUL; free text may, so its NULs are written ``\\0`` to keep the layout unambiguous."""
    tok = fmt.tokenizer
    out: list[str] = []
    run: list[int] = []
    for token in [*tokens, None]:
        if token is None or tok.is_special(token):
            out.append(tok.decode(run).replace("\x00", "\\0"))
            run = []
            if token is not None:
                out.append(f"\x00{token}\x00")
        else:
            run.append(token)
    return "".join(out)


def _render_text(fmt: ChatFormat, text: str) -> str:
    specials = fmt.tokenizer.special_tokens
    names = sorted((n for n in specials if n in text), key=len, reverse=True)
    if not names:
        return text
    pattern = "|".join(map(re.escape, names))
    return re.sub(pattern, lambda m: f"\x00{specials[m.group(0)]}\x00", text)


def _turn(fmt: ChatFormat, tokens: Sequence[int]) -> tuple[str, list[tuple[str, str | None, str]]]:
    """``(text, [(name, index, arguments)])`` of a generated turn; asserts the format's layout:
    an optional leading reasoning block, free text without any control token, then optionally
    one tool section, then at most a stop token."""

    def r(text: str) -> str:
        return re.escape(_render_text(fmt, text))

    index = (r(fmt.call_index_separator) + "(?P<index>[0-9]+)") if fmt.call_index_separator else ""
    call = (
        r(fmt.call_begin + fmt.call_name_prefix)
        + f"(?P<name>[^\x00]*?){index}"
        + r(fmt.argument_begin)
        + "(?P<args>[^\x00]*)"
        + r(fmt.argument_end + fmt.call_end)
    )
    bare_call = re.sub(r"\(\?P<\w+>", "(?:", call)
    think = f"(?:{r(fmt.think_begin or '')}[^\x00]*{r(fmt.think_end or '')})?"
    section = f"(?P<section>{r(fmt.section_begin)}(?:{bare_call})(?:{r(fmt.call_separator)}(?:{bare_call}))*{r(fmt.section_end)})?"
    stops = "|".join(re.escape(f"\x00{s}\x00") for s in fmt.stop_token_ids)
    shape = f"{think}(?P<text>[^\x00]*){section}(?:{stops})?"
    rendered = _render(fmt, tokens)
    match = re.fullmatch(shape, rendered, re.DOTALL)
    assert match is not None, f"not the {fmt.name} layout: {rendered!r}"
    calls = [
        (m.group("name"), m.groupdict().get("index"), m.group("args"))
        for m in re.finditer(call, match.group("section") or "", re.DOTALL)
    ]
    return match.group("text"), calls


def _jsonschema_accepts(schema: dict[str, Any], value: Any) -> bool:
    """Plain jsonschema's verdict; ``True`` where it cannot run the schema (a ``\\p{...}``
    pattern Python's ``re`` lacks), leaving the verdict to the dispatcher's validator."""
    try:
        return bool(Draft202012Validator(schema).is_valid(value))
    except re.error:
        return True


def _check_arguments(tools: Sequence[ToolSpec], name: str, arguments: str) -> None:
    spec = next(t for t in tools if t.name == name)
    value = json.loads(arguments)
    assert _jsonschema_accepts(spec.input_schema, value), (name, arguments)
    assert compile_schema(spec.input_schema).is_valid(value), (name, arguments)


def _markers(fmt: ChatFormat) -> frozenset[int]:
    ids = fmt.tokenizer.special_tokens
    texts = (fmt.section_begin, fmt.section_end, fmt.call_begin, fmt.call_end, fmt.header_end)
    return frozenset(ids[t] for t in texts)


# ------------------------------------------------------------------------------------ tool_choice


@pytest.mark.parametrize("fmt", _formats(), ids=lambda f: f.name)
def test_auto_walks_give_text_then_calls_to_offered_tools_with_valid_arguments(
    fmt: ChatFormat,
) -> None:
    grammar = tool_grammar(fmt, TOOLS, "auto")
    rng = random.Random(1)
    names = {t.name for t in TOOLS}
    shapes = set()
    for _ in range(30):
        if len(shapes) == 2 and _ >= 6:
            break
        _, calls = _turn(fmt, _walk(grammar, rng))
        shapes.add(bool(calls))
        for name, _, arguments in calls:
            assert name in names
            _check_arguments(TOOLS, name, arguments)
    assert shapes == {True, False}  # auto: some turns call, some only talk


@pytest.mark.parametrize("fmt", _formats(), ids=lambda f: f.name)
def test_required_walks_always_call_at_least_one_tool(fmt: ChatFormat) -> None:
    grammar = tool_grammar(fmt, TOOLS, "required")
    rng = random.Random(2)
    called = set()
    for _ in range(8):
        _, calls = _turn(fmt, _walk(grammar, rng))
        assert calls
        for name, index, arguments in calls:
            called.add(name)
            _check_arguments(TOOLS, name, arguments)
            if fmt.call_index_separator is not None:
                assert index is not None and index.isdigit()
    assert len(called) >= 2


def test_none_never_lets_a_tool_marker_through() -> None:
    fmt = _kimi()
    grammar = tool_grammar(fmt, TOOLS, "none")
    rng = random.Random(3)
    for _ in range(6):
        tokens = _walk(grammar, rng, banned=_markers(fmt))
        text, calls = _turn(fmt, tokens)
        assert calls == []
    assert grammar.tool_names == ()


def test_no_tools_means_text_only_whatever_the_tool_choice() -> None:
    fmt = _kimi()
    grammar = tool_grammar(fmt, [], "required")
    assert grammar.tool_choice == "none"
    tokens = _walk(grammar, random.Random(4), banned=_markers(fmt))
    assert _turn(fmt, tokens)[1] == []


@pytest.mark.parametrize("fmt", _formats(), ids=lambda f: f.name)
def test_named_choice_calls_exactly_that_tool_once(fmt: ChatFormat) -> None:
    grammar = tool_grammar(fmt, TOOLS, "search")
    rng = random.Random(5)
    for _ in range(6):
        text, calls = _turn(fmt, _walk(grammar, rng))
        assert text == ""  # a named tool starts the answer
        assert [name for name, _, _ in calls] == ["search"]
        _check_arguments(TOOLS, "search", calls[0][2])


def test_text_before_calls_decides_whether_the_section_may_wait() -> None:
    fmt = _kimi()
    ids = fmt.tokenizer.special_tokens
    vocab = fmt.tokenizer.vocab_size
    opening = {ids[fmt.section_begin], ids[fmt.think_begin or ""]}
    for choice, text in (("required", None), ("get_weather", None), ("required", False)):
        grammar = tool_grammar(fmt, TOOLS, choice, text_before_calls=text)
        assert set(_allowed(grammar.matcher(), vocab)) == opening
    for choice, text in (("required", True), ("get_weather", True)):
        grammar = tool_grammar(fmt, TOOLS, choice, text_before_calls=text)
        assert grammar.text_before_calls
        assert len(_allowed(grammar.matcher(), vocab)) > len(opening) + 100
    named = tool_grammar(fmt, TOOLS, "get_weather").matcher()
    named.accept_many([ids["<think>"], *fmt.tokenizer.encode("hm"), ids["</think>"]])
    assert fmt.tokenizer.decode(named.forced_tokens()) == (
        "<|tool_calls_section_begin|><|tool_call_begin|>functions.get_weather:"
    )


def test_unknown_tool_choice_is_a_caller_error() -> None:
    with pytest.raises(ValueError, match="not_offered"):
        tool_grammar(_kimi(), TOOLS, "not_offered")


def test_reasoning_block_may_open_the_turn_and_markers_stay_out_of_it() -> None:
    fmt = _kimi()
    ids = fmt.tokenizer.special_tokens
    grammar = tool_grammar(fmt, TOOLS, "required")
    constraint = grammar.matcher()
    assert ids["<think>"] in _allowed(constraint, grammar.vocab_size)
    constraint.accept(ids["<think>"])
    inside = set(_allowed(constraint, grammar.vocab_size))
    assert ids["</think>"] in inside
    assert not inside & _markers(fmt)
    constraint.accept_many([*fmt.tokenizer.encode("plan"), ids["</think>"]])
    assert ids["<think>"] not in _allowed(constraint, grammar.vocab_size)  # only one block


def test_reasoning_off_leaves_no_reasoning_block_to_open() -> None:
    fmt = _kimi()
    ids = fmt.tokenizer.special_tokens
    grammar = tool_grammar(fmt, TOOLS, "get_weather", reasoning=False)
    constraint = grammar.matcher()
    assert constraint.forced_tokens()[0] == ids[fmt.section_begin]
    free = tool_grammar(fmt, TOOLS, "auto", reasoning=False)
    assert ids["<think>"] not in _allowed(free.matcher(), free.vocab_size)
    with pytest.raises(ValueError):
        free.matcher(inside_think=True)


def test_inside_think_starts_in_the_reasoning_block_the_prompt_opened() -> None:
    fmt = DeepSeekV31ChatFormat(deepseek_tokenizer("v3.1"))
    ids = fmt.tokenizer.special_tokens
    grammar = tool_grammar(fmt, TOOLS, "required")
    constraint = grammar.matcher(inside_think=True)
    allowed = set(_allowed(constraint, grammar.vocab_size))
    assert ids["</think>"] in allowed
    assert ids["<think>"] not in allowed and ids[fmt.section_begin] not in allowed
    tokens = _walk(grammar, random.Random(6), inside_think=True)
    assert tokens.count(ids["</think>"]) == 1 and ids["<think>"] not in tokens


def test_parser_reads_the_calls_the_grammar_let_through() -> None:
    fmt = _kimi()
    grammar = tool_grammar(fmt, TOOLS, "required")
    rng = random.Random(7)
    for _ in range(4):
        tokens = _walk(grammar, rng)
        _, expected = _turn(fmt, tokens)
        names: dict[int, str] = {}
        arguments: dict[int, str] = {}
        for event in fmt.parser().parse(tokens):
            if isinstance(event, ToolCallDelta):
                if event.name:
                    names[event.index] = event.name
                arguments[event.index] = arguments.get(event.index, "") + (
                    event.arguments_delta or ""
                )
        got = [(names[i], json.loads(arguments[i])) for i in sorted(names)]
        assert got == [(name, json.loads(args)) for name, _, args in expected]


# ------------------------------------------------------------------------------------ jump-forward


def test_forced_tokens_cover_the_call_header_and_fixed_json_keys() -> None:
    fmt = _kimi()
    tok = fmt.tokenizer
    ids = tok.special_tokens
    grammar = tool_grammar(fmt, [WEATHER], "auto")
    constraint = grammar.matcher()
    assert constraint.forced_tokens() == []  # free text: the model chooses
    constraint.accept(ids[fmt.section_begin])
    forced = constraint.forced_tokens()
    assert forced[0] == ids[fmt.call_begin]
    assert tok.decode(forced) == "<|tool_call_begin|>functions.get_weather:"
    constraint.accept_many(forced)
    constraint.accept_many(tok.encode("3"))
    assert constraint.forced_tokens() == []  # more digits or the argument marker
    constraint.accept(ids[fmt.argument_begin])
    head = tok.decode(constraint.forced_tokens())
    assert '{"city":'.startswith(head) and head.startswith('{"')
    constraint.accept_many(tok.encode(head))
    constraint.accept_many(tok.encode(' "Oslo"'))
    assert tok.decode(constraint.forced_tokens()).startswith(', "unit": ')


def test_named_choice_forces_the_whole_call_head_and_the_section_end() -> None:
    fmt = DeepSeekV31ChatFormat(deepseek_tokenizer("v3.1"))
    tok = fmt.tokenizer
    ids = tok.special_tokens
    grammar = tool_grammar(fmt, [WEATHER, SEARCH], "get_weather")
    constraint = grammar.matcher()
    constraint.accept(ids[fmt.section_begin])
    forced = constraint.forced_tokens()
    head = "<｜tool▁call▁begin｜>get_weather<｜tool▁sep｜>"
    assert tok.decode(forced).startswith(head + "{")
    constraint.accept_many(forced)
    arguments = '{"city": "Oslo", "unit": "celsius"}'
    written = tok.decode(forced)[len(head) :]
    assert arguments.startswith(written)
    constraint.accept_many(tok.encode(arguments[len(written) :]))
    assert constraint.error is None
    assert constraint.forced_tokens() == [ids[fmt.call_end], ids[fmt.section_end]]
    constraint.accept_many([ids[fmt.call_end], ids[fmt.section_end]])
    assert constraint.is_done() and constraint.error is None


# ------------------------------------------------------------------------------------ schemas


def test_uncompilable_schema_falls_back_to_any_object_with_a_warning_naming_the_tool(
    caplog: pytest.LogCaptureFixture,
) -> None:
    remote = ToolSpec(
        name="remote_ref_tool",
        input_schema={"$ref": "https://example.com/schemas/arguments.json"},
    )
    with caplog.at_level(logging.WARNING, logger=constrained.__name__):
        grammar = tool_grammar(_kimi(), [remote, WEATHER], "remote_ref_tool")
    assert grammar.schema_modes == {"remote_ref_tool": "fallback", "get_weather": "exact"}
    assert any("remote_ref_tool" in r.getMessage() for r in caplog.records)
    _, calls = _turn(_kimi(), _walk(grammar, random.Random(8)))
    assert isinstance(json.loads(calls[0][2]), dict)


def test_keywords_llguidance_lacks_are_relaxed_not_dropped(
    caplog: pytest.LogCaptureFixture,
) -> None:
    tags = ToolSpec(
        name="tag_items",
        input_schema={
            "type": "object",
            "properties": {
                "tags": {"type": "array", "items": {"type": "integer"}, "uniqueItems": True},
                "mode": {"not": {"const": "x"}, "type": "string", "maxLength": 3},
            },
            "required": ["tags"],
            "additionalProperties": False,
        },
    )
    with caplog.at_level(logging.WARNING, logger=constrained.__name__):
        grammar = tool_grammar(_kimi(), [tags], "tag_items")
    assert grammar.schema_modes["tag_items"] == "relaxed"
    assert any("tag_items" in r.getMessage() for r in caplog.records)
    for _ in range(3):  # the rest of the schema still holds
        _, calls = _turn(_kimi(), _walk(grammar, random.Random(9)))
        value = json.loads(calls[0][2])
        assert set(value) <= {"tags", "mode"} and all(isinstance(t, int) for t in value["tags"])


@pytest.mark.parametrize(
    "schema",
    [
        {"type": "object", "properties": {"v": {"enum": [f"value_{i}" for i in range(100_000)]}}},
        {"type": "object", "properties": {"v": {"type": "number", "minimum": -1.5e300}}},
    ],
    ids=["enum-100k", "float-range"],
)
def test_schema_that_blows_grammar_limits_falls_back_without_raising(
    schema: dict[str, Any],
) -> None:
    deep: dict[str, Any] = {"type": "string"}
    for _ in range(200):
        deep = {"type": "object", "properties": {"a": deep}}
    tools = [ToolSpec(name="big", input_schema=schema), ToolSpec(name="deep", input_schema=deep)]
    grammar = tool_grammar(_kimi(), tools, "auto")
    assert grammar.schema_modes == {"big": "fallback", "deep": "fallback"}


def test_discriminated_oneof_stays_exact_and_overlapping_oneof_is_relaxed() -> None:
    overlapping = ToolSpec(
        name="overlap",
        input_schema={
            "type": "object",
            "properties": {"v": {"oneOf": [{"type": "string"}, {"maxLength": 3}]}},
        },
    )
    grammar = tool_grammar(_kimi(), [SCHEDULE, overlapping], "auto")
    assert grammar.schema_modes == {"schedule": "exact", "overlap": "relaxed"}


@pytest.mark.parametrize(
    ("fmt_name", "value", "ok"),
    [
        ("date", "2024-02-29", True),
        ("date", "2023-02-29", False),
        ("date", "0000-01-01", False),
        ("date-time", "2023-05-01T23:59:59Z", True),
        ("date-time", "2023-05-01T12:00:60Z", False),
        ("time", "24:00:00Z", False),
        ("hostname", "a" * 63 + ".example", True),
        ("hostname", "a" * 64 + ".example", False),
        ("hostname", "ab--cd.example", False),
        ("email", "x@" + "b" * 64 + ".org", False),
        ("email", "x@example.org", True),
    ],
)
def test_formats_are_held_to_what_the_dispatcher_accepts(
    fmt_name: str, value: str, ok: bool
) -> None:
    schema = {
        "type": "object",
        "properties": {"v": {"type": "string", "format": fmt_name}},
        "required": ["v"],
    }
    fmt = _kimi()
    ids = fmt.tokenizer.special_tokens
    grammar = tool_grammar(fmt, [ToolSpec(name="f", input_schema=schema)], "f")
    constraint = grammar.matcher()
    head = fmt.tokenizer.encode("functions.f:0")
    constraint.accept_many([ids[fmt.section_begin], ids[fmt.call_begin], *head])
    constraint.accept(ids[fmt.argument_begin])
    constraint.accept_many(fmt.tokenizer.encode(json.dumps({"v": value})))
    constraint.accept(ids[fmt.call_end])
    assert (constraint.error is None) == ok
    assert compile_schema(schema).is_valid({"v": value}) or not ok


def _data() -> list[dict[str, Any]]:
    return list(json.loads(_DATA.read_text(encoding="utf-8"))["schemas"])


def test_every_schema_of_the_suite_data_yields_arguments_the_validators_accept() -> None:
    fmt = _kimi()
    tok = fmt.tokenizer
    ids = tok.special_tokens
    rng = random.Random(10)
    entries = _data()
    assert len(entries) >= 100
    for entry in entries:
        tool = ToolSpec(name="t", input_schema=entry["schema"])
        grammar = tool_grammar(fmt, [tool], "t")
        assert grammar.schema_modes["t"] == "exact", entry["id"]
        tokens = _walk(grammar, rng, prefix=[ids[fmt.section_begin]])
        (_, _, arguments), *more = _turn(fmt, tokens)[1]
        assert not more
        value = json.loads(arguments)
        assert compile_schema(entry["schema"]).is_valid(value), (entry["id"], arguments)
        assert _jsonschema_accepts(entry["schema"], value), (entry["id"], arguments)


def test_the_suite_data_valid_instances_are_accepted_by_the_grammar() -> None:
    fmt = _kimi()
    tok = fmt.tokenizer
    ids = tok.special_tokens
    checked = 0
    for entry in _data():
        grammar = tool_grammar(fmt, [ToolSpec(name="t", input_schema=entry["schema"])], "t")
        for value in entry["valid"]:
            constraint = grammar.matcher()
            constraint.accept_many([ids[fmt.section_begin], ids[fmt.call_begin]])
            constraint.accept_many(tok.encode("functions.t:0"))
            constraint.accept(ids[fmt.argument_begin])
            constraint.accept_many(tok.encode(json.dumps(value, ensure_ascii=False)))
            constraint.accept(ids[fmt.call_end])
            assert constraint.error is None, (entry["id"], value)
            checked += 1
    assert checked >= 100


# ------------------------------------------------------------------------------------ the mask


def test_mask_sets_disallowed_and_padding_ids_to_minus_inf_and_keeps_the_rest() -> None:
    fmt = _kimi()
    grammar = tool_grammar(fmt, [WEATHER], "required")
    constraint = grammar.matcher()
    constraint.accept(fmt.tokenizer.special_tokens[fmt.section_begin])
    constraint.accept(fmt.tokenizer.special_tokens[fmt.call_begin])
    logits = torch.randn(1, grammar.vocab_size + 16)
    before = logits.clone()
    out = constraint.mask(logits)
    assert out is logits and out.shape == (1, grammar.vocab_size + 16)
    finite = torch.isfinite(logits[0])
    assert finite.sum().item() >= 1
    assert not finite[grammar.vocab_size :].any()
    assert torch.equal(logits[0][finite], before[0][finite])
    allowed_text = {fmt.tokenizer.decode([int(i)]) for i in finite.nonzero().flatten()}
    assert all("functions.get_weather:".startswith(t) for t in allowed_text)


@pytest.mark.parametrize("density", [0.0005, 0.3, 0.9995, 1.0])
def test_every_mask_path_bans_exactly_the_clear_bits(density: float) -> None:
    # The trained test vocabularies are small enough that only the sparse paths run; this
    # drives each path (few allowed, few banned, dense) at a real vocabulary size.
    import numpy as np

    width = 32_000 + 7
    rng = np.random.default_rng(int(density * 10_000))
    bits = rng.random(((width + 31) // 32) * 32) < density
    bits[width:] = False
    words = np.packbits(bits, bitorder="little").view(np.int32).copy()
    row = torch.randn(width + 5)
    before = row.clone()
    row[width:] = float("-inf")
    constrained._apply(row, words, width)
    expected = torch.where(torch.from_numpy(bits[:width]), before[:width], float("-inf"))
    assert torch.equal(row[:width], expected)
    on_device = constrained._unpack_on(torch.device("cpu"), words, width)
    assert torch.equal(on_device, ~torch.from_numpy(bits[:width]))


def test_a_refused_token_is_recorded_and_the_constraint_goes_inert(
    caplog: pytest.LogCaptureFixture,
) -> None:
    fmt = _kimi()
    grammar = tool_grammar(fmt, [WEATHER], "required")
    constraint = grammar.matcher()
    with caplog.at_level(logging.WARNING, logger=constrained.__name__):
        constraint.accept(fmt.tokenizer.special_tokens[fmt.section_end])  # no section open
    assert constraint.error
    assert caplog.records
    logits = torch.randn(grammar.vocab_size)
    before = logits.clone()
    constraint.mask(logits)
    assert torch.equal(logits, before)
    assert constraint.forced_tokens() == []
    constraint.accept(0)  # still no exception
    stray = grammar.matcher()
    stray.accept(-1)
    assert stray.error is not None and "outside the vocabulary" in stray.error


def test_stop_token_ends_the_turn_only_where_the_grammar_is_complete() -> None:
    fmt = _kimi()
    ids = fmt.tokenizer.special_tokens
    grammar = tool_grammar(fmt, [WEATHER], "auto")
    constraint = grammar.matcher()
    constraint.accept_many(fmt.tokenizer.encode("Hello"))
    assert set(fmt.stop_token_ids) <= set(_allowed(constraint, grammar.vocab_size))
    constraint.accept(ids[fmt.section_begin])
    assert not set(fmt.stop_token_ids) & set(_allowed(constraint, grammar.vocab_size))
    text = fmt.tokenizer.encode("Hi")
    done = grammar.matcher()
    done.accept_many([*text, fmt.stop_token_ids[0]])
    assert done.is_done() and done.error is None


# ------------------------------------------------------------------------------------ caching


def test_same_tools_and_choice_return_the_same_compiled_grammar() -> None:
    fmt = _kimi()
    first = tool_grammar(fmt, TOOLS, "auto")
    again = tool_grammar(KimiK2ChatFormat(fmt.tokenizer), [t.model_copy() for t in TOOLS], "auto")
    assert again is first
    assert tool_grammar(fmt, TOOLS, "required") is not first
    assert tool_grammar(fmt, TOOLS[:2], "auto") is not first


def test_grammar_cache_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(constrained, "_GRAMMAR_CACHE_SIZE", 2)
    fmt = _kimi()
    first = tool_grammar(fmt, [WEATHER], "auto")
    tool_grammar(fmt, [WEATHER], "required")
    tool_grammar(fmt, [WEATHER], "none")
    assert tool_grammar(fmt, [WEATHER], "auto") is not first


def test_llguidance_tokenizer_is_built_once_per_tokenizer(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    built: list[object] = []
    real = constrained._build_lltokenizer

    def counting(tokenizer: Any, eos: Sequence[int]) -> Any:
        built.append(tokenizer)
        return real(tokenizer, eos)

    monkeypatch.setattr(constrained, "_build_lltokenizer", counting)
    fmt = KimiK2ChatFormat(KimiTokenizer.from_folder(kimi_tokenizer_folder(tmp_path)))
    tool_grammar(fmt, [WEATHER], "auto")
    tool_grammar(fmt, TOOLS, "required")
    tool_grammar(fmt, [], "auto")
    assert len(built) == 1
