"""The composition root: an agent built from a config, as the CLI and library users build it."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from agent_runtime import testing
from agent_runtime.combinators import CombinedToolset
from agent_runtime.config import build_agent, build_toolsets, load_config
from agent_runtime.schema_model import SchemaModel
from agent_runtime.tools import FunctionToolset
from agent_runtime.toolset import ToolContext, Toolset
from agent_runtime.types import ToolCall, ToolResult, ToolSpec

pytestmark = pytest.mark.anyio

NOTES_MODULE = '''
from agent_runtime.tools import tool

@tool(read_only=True)
def read_note(name: str) -> str:
    """Read a note."""
    return "note " + name

@tool
def erase_note(name: str) -> str:
    """Erase a note."""
    return "erased " + name
'''


def _notes_config(folder: Path, **model: Any) -> Path:
    (folder / "build_agent_notes.py").write_text(NOTES_MODULE)
    path = folder / "agent.json"
    path.write_text(
        '{"name": "notes", "instructions": "Be brief.", "limits": {"max_steps": 4}, '
        '"tools": ["build_agent_notes:read_note", "build_agent_notes:erase_note"], '
        f'"model": {{"backend": "schema", "call_destructive": {str(bool(model)).lower()}}}}}'
    )
    return path


async def test_build_agent_gives_the_configured_agent(
    tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO, logger="agent_runtime.config")
    agent = build_agent(load_config(_notes_config(tmp_path)))
    assert isinstance(agent.model, SchemaModel)
    assert (agent.name, agent.instructions, agent.limits.max_steps) == ("notes", "Be brief.", 4)
    assert "model: schema (backend schema)" in caplog.text
    result = await agent.run("go")
    # The read-only tool runs; the other is left alone by the schema model.
    assert [r.call.name for r in result.tool_calls] == ["read_note"]


@pytest.mark.parametrize("answer", [True, False])
async def test_build_agent_asks_its_approval_callback_for_tools_not_marked_read_only(
    tmp_path: Path, answer: bool
) -> None:
    asked: list[str] = []

    def approval(call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]) -> bool:
        asked.append(spec.name)
        return answer

    agent = build_agent(load_config(_notes_config(tmp_path, destructive=True)), approval=approval)
    result = await agent.run("go")
    assert asked == ["erase_note"]
    erase = next(r for r in result.tool_calls if r.call.name == "erase_note")
    assert erase.result.is_error is (not answer)


async def test_build_agent_without_approval_denies_what_would_be_asked(tmp_path: Path) -> None:
    agent = build_agent(load_config(_notes_config(tmp_path, destructive=True)))
    result = await agent.run("go")
    erase = next(r for r in result.tool_calls if r.call.name == "erase_note")
    assert erase.result.is_error
    assert "no approver" in erase.result.text_content


def test_build_toolsets_gives_the_local_tools_unentered(tmp_path: Path) -> None:
    toolsets = build_toolsets(load_config(_notes_config(tmp_path)))
    assert len(toolsets) == 1 and isinstance(toolsets[0], FunctionToolset)
    assert set(toolsets[0].tools) == {"read_note", "erase_note"}


def test_schema_model_is_still_offered_by_the_testing_module() -> None:
    assert testing.SchemaModel is SchemaModel


class _Remote(Toolset):
    enforces_timeout = True

    async def list_tools(self) -> list[ToolSpec]:
        return []

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        raise AssertionError("not called")


def test_every_wrapper_enforces_timeouts_as_its_inner_toolset_does() -> None:
    wrapped = _Remote().prefixed("r").filtered(lambda spec: True).renamed({}).approval_required()
    assert wrapped.enforces_timeout is True
    assert FunctionToolset().prefixed("local").enforces_timeout is False
    assert CombinedToolset([_Remote()]).enforces_timeout is False


def _toolset_of(fn: Any) -> FunctionToolset:
    return FunctionToolset([fn])


async def test_nested_tool_added_through_a_helper_sees_its_defining_scope() -> None:
    """The defining scope is found by its code, wherever the toolset is made."""

    class Point(BaseModel):
        x: int

    def double(p: Point) -> int:
        return p.x * 2

    toolset = _toolset_of(double)
    spec = (await toolset.list_tools())[0]
    assert spec.input_schema["$defs"]["Point"]["properties"] == {"x": {"type": "integer"}}
