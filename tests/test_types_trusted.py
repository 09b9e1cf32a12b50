"""Models built unvalidated on the per-call path behave exactly like validated ones."""

from __future__ import annotations

import copy
import pickle
from typing import Any

import pytest
from pydantic import ValidationError

from agent_runtime.types import TextPart, ToolCall, ToolCallRecord, ToolResult


def _same(fast: Any, slow: Any) -> None:
    assert fast == slow
    assert type(fast) is type(slow)
    assert fast.model_dump() == slow.model_dump()
    assert fast.model_dump_json() == slow.model_dump_json()
    assert fast.model_dump(exclude_unset=True) == slow.model_dump(exclude_unset=True)
    assert fast.model_fields_set == slow.model_fields_set
    assert repr(fast) == repr(slow)
    assert copy.copy(fast) == slow
    assert copy.deepcopy(fast) == slow
    assert pickle.loads(pickle.dumps(fast)) == slow
    assert type(slow).model_validate_json(fast.model_dump_json()) == slow


def test_text_part_and_text_results_equal_validated_ones() -> None:
    _same(TextPart.of("héllo"), TextPart(text="héllo"))
    _same(ToolResult.text("ok"), ToolResult(content=[TextPart(text="ok")], is_error=False))
    _same(ToolResult.error("bad"), ToolResult(content=[TextPart(text="bad")], is_error=True))


def test_results_from_parts_equal_validated_ones() -> None:
    parts: list[Any] = [TextPart.of("a"), TextPart.of("b")]
    fast = ToolResult.of_parts(parts, {"n": 1}, False)
    slow = ToolResult(
        content=[TextPart(text="a"), TextPart(text="b")],
        structured_content={"n": 1},
        is_error=False,
    )
    _same(fast, slow)


def test_calls_from_dicts_equal_validated_ones() -> None:
    _same(
        ToolCall.of("t", {"a": [1, "x"]}, id="c1"),
        ToolCall(id="c1", name="t", arguments='{"a": [1, "x"]}'),
    )
    _same(ToolCall.of("t"), ToolCall(id="call_t", name="t", arguments="{}"))
    with pytest.raises(ValidationError):
        ToolCall.of(None)  # type: ignore[arg-type]


def test_records_equal_validated_ones() -> None:
    call = ToolCall.of("t", {"a": 1}, id="c1")
    result = ToolResult.text("done")
    fast = ToolCallRecord.of(call, result, {"a": 1}, None, 0.25)
    slow = ToolCallRecord(
        call=call, result=result, arguments={"a": 1}, error_kind=None, duration_s=0.25
    )
    _same(fast, slow)
    _same(
        ToolCallRecord.of(call, ToolResult.error("x"), None, "validation", 0.0),
        ToolCallRecord(
            call=call,
            result=ToolResult.error("x"),
            arguments=None,
            error_kind="validation",
            duration_s=0.0,
        ),
    )


def test_unvalidated_instances_stay_editable_and_copyable() -> None:
    result = ToolResult.text("ok")
    changed = result.model_copy(update={"is_error": True})
    assert changed.is_error and not result.is_error
    result.is_error = True
    assert result == ToolResult(content=[TextPart(text="ok")], is_error=True)


def test_values_of_other_types_are_still_validated() -> None:
    with pytest.raises(ValidationError):
        ToolResult.text(123)  # type: ignore[arg-type]
    with pytest.raises(ValidationError):
        TextPart.of(None)  # type: ignore[arg-type]

    # A str subclass is validated into a plain str, as before.
    class Name(str):
        pass

    assert type(TextPart.of(Name("x")).text) is str
