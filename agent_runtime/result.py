"""What a finished run returns."""

from __future__ import annotations

from pydantic import BaseModel, Field

from .types import Message, ToolCallRecord, Usage


class RunResult(BaseModel):
    """The model's final text, the whole history, usage, and every tool call with its result."""

    output: str
    messages: list[Message]
    usage: Usage = Field(default_factory=Usage)
    tool_calls: list[ToolCallRecord] = Field(default_factory=list)
    new_message_index: int = 0
    """Where this run's messages start in ``messages`` (earlier ones came from history)."""

    def new_messages(self) -> list[Message]:
        return self.messages[self.new_message_index :]
