"""``SchemaModel``: a model with no LLM that calls the offered read-only tools.

The ``"schema"`` backend of a config: each offered read-only tool is called once with
arguments generated from its input schema, then the model answers with what came back. For
trying a config's tools and for testing agents without an LLM (``agent_runtime.testing``
offers it beside the other test models).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

from .backend import ModelSettings
from .errors import UserError
from .schema.examples import SchemaExampleError, example_for
from .turn_model import Turn, TurnModel
from .types import Message, ToolCall, ToolResultMessage, ToolSpec, UserMessage

__all__ = ["SchemaModel"]

logger = logging.getLogger("agent_runtime.schema_model")


class SchemaModel(TurnModel):
    """Calls each offered read-only tool once with schema-valid arguments, then answers.

    Made-up arguments are harmless only where a tool changes nothing, so a tool not marked
    read-only (MCP's ``readOnlyHint`` absent or false: destructive by default, per the MCP
    spec) is left alone, with a warning naming it, unless ``call_destructive`` is set.
    ``call_tools`` limits which tools are called (default: all). ``arguments`` fixes some
    arguments per tool (``{"tool": {"arg": value}}``) over the generated ones, for a demo or a
    test that needs a meaningful value. The final text lists each tool's result, so tests can
    assert on it.
    """

    name = "schema"

    def __init__(
        self,
        call_tools: Sequence[str] | None = None,
        *,
        include_optional: bool = False,
        final_text: str | None = None,
        arguments: Mapping[str, Mapping[str, Any]] | None = None,
        call_destructive: bool = False,
    ) -> None:
        if not isinstance(call_destructive, bool):
            raise UserError(
                f"SchemaModel: call_destructive must be true or false, not {call_destructive!r}"
            )
        self.call_tools = None if call_tools is None else list(call_tools)
        self.call_destructive = call_destructive
        self.skipped: list[str] = []
        """The tools left alone in the last request because they are not marked read-only."""
        self.include_optional = include_optional
        self.final_text = final_text
        self.arguments = {name: dict(values) for name, values in (arguments or {}).items()}

    async def _reply(
        self, messages: list[Message], tools: list[ToolSpec], settings: ModelSettings
    ) -> Turn:
        last_user = max(
            (i for i, m in enumerate(messages) if isinstance(m, UserMessage)), default=-1
        )
        results = [m for m in messages[last_user + 1 :] if isinstance(m, ToolResultMessage)]
        if results or not tools:
            return self._summary(results)
        calls = self._calls(tools)
        return calls if calls else self._summary([], self.skipped)

    def _calls(self, tools: Sequence[ToolSpec]) -> list[ToolCall]:
        calls = []
        self.skipped = []
        for index, spec in enumerate(tools):
            if self.call_tools is not None and spec.name not in self.call_tools:
                continue
            if spec.annotations.read_only is not True and not self.call_destructive:
                self.skipped.append(spec.name)
                continue
            try:
                args = example_for(spec.input_schema, include_optional=self.include_optional)
            except SchemaExampleError:
                if spec.name not in self.arguments:
                    continue
                args = {}
            args.update(self.arguments.get(spec.name, {}))
            calls.append(ToolCall(id=f"schema_{index}", name=spec.name, arguments=json.dumps(args)))
        if self.skipped:
            logger.warning(
                "SchemaModel did not call %d tool(s) not marked read-only: %s "
                "(call_destructive calls them with made-up arguments)",
                len(self.skipped),
                ", ".join(self.skipped),
            )
        return calls

    def _summary(self, results: Sequence[ToolResultMessage], skipped: Sequence[str] = ()) -> str:
        if self.final_text is not None:
            return self.final_text
        if not results and skipped:
            return (
                f"no tool calls: {', '.join(skipped)} not marked read-only, and SchemaModel "
                "calls such tools only with call_destructive"
            )
        if not results:
            return "success (no tool calls)"
        return json.dumps({m.tool_name: m.result.text_content for m in results}, ensure_ascii=False)
