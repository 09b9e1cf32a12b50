"""The pieces of ``agent-runtime chat`` that decide what a person's answer means and when
streamed text is final: form fields parsed and checked against their schema, markdown blocks
that are complete, and a chat refused where there is no terminal."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest

from agent_runtime.chat.approvals import FieldError, parse_field
from agent_runtime.chat.render import split_finished_blocks


@pytest.mark.parametrize(
    ("raw", "field", "value"),
    [
        ("yes", {"type": "boolean"}, True),
        ("N", {"type": "boolean"}, False),
        (" 42 ", {"type": "integer", "minimum": 1}, 42),
        ("2.5", {"type": "number"}, 2.5),
        ("3", {"type": "number"}, 3),
        ("blue", {"type": "string", "enum": ["red", "blue"]}, "blue"),
        ("a@example.org", {"type": "string", "format": "email"}, "a@example.org"),
        (
            "x, y",
            {"type": "array", "items": {"type": "string", "enum": ["x", "y", "z"]}},
            ["x", "y"],
        ),
    ],
)
def test_an_answer_that_fits_its_field_is_typed(
    raw: str, field: dict[str, Any], value: Any
) -> None:
    parsed = parse_field(raw, field)
    assert parsed == value and type(parsed) is type(value)


@pytest.mark.parametrize(
    ("raw", "field", "why"),
    [
        ("maybe", {"type": "boolean"}, "yes or no"),
        ("4.5", {"type": "integer"}, "whole number"),
        ("ten", {"type": "number"}, "a number"),
        ("0", {"type": "integer", "minimum": 1}, "less than the minimum of 1"),
        ("green", {"type": "string", "enum": ["red", "blue"]}, "is not one of"),
        ("ab", {"type": "string", "minLength": 3}, "is too short"),
        ("not-an-email", {"type": "string", "format": "email"}, "is not a 'email'"),
        ("x, w", {"type": "array", "items": {"enum": ["x", "y"]}}, "'w' is not one of"),
    ],
)
def test_an_answer_that_does_not_fit_says_why(raw: str, field: dict[str, Any], why: str) -> None:
    with pytest.raises(FieldError, match=why):
        parse_field(raw, field)


def test_only_blocks_ended_by_a_blank_line_outside_a_code_fence_are_final() -> None:
    text = "# Title\n\nA paragraph.\n\n```\ncode\n\nmore code\n"
    finished, rest = split_finished_blocks(text)
    assert finished == "# Title\n\nA paragraph.\n\n"
    assert rest == "```\ncode\n\nmore code\n"  # the fence is still open
    finished, rest = split_finished_blocks(rest + "```\n\ntail")
    assert finished.endswith("```\n\n") and rest == "tail"


def test_chat_without_a_terminal_says_what_to_use_instead() -> None:
    done = subprocess.run(
        [sys.executable, "-m", "agent_runtime.cli", "chat"],
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 1
    assert "agent-runtime chat needs a terminal" in done.stderr
    assert "agent-runtime run --config FILE PROMPT" in done.stderr
