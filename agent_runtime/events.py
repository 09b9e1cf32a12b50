"""Events a run streams to its caller (``Agent.run_stream``)."""

from __future__ import annotations

from typing import Annotated, Literal

from pydantic import BaseModel, Field

from .result import RunResult
from .types import AssistantMessage, ToolCall, ToolCallRecord, Usage


class TextDeltaEvent(BaseModel):
    kind: Literal["text_delta"] = "text_delta"
    text: str


class ToolCallStarted(BaseModel):
    kind: Literal["tool_call_started"] = "tool_call_started"
    call: ToolCall


class ToolCallProgress(BaseModel):
    kind: Literal["tool_call_progress"] = "tool_call_progress"
    call_id: str
    progress: float
    total: float | None = None
    message: str | None = None


class ToolCallFinished(BaseModel):
    kind: Literal["tool_call_finished"] = "tool_call_finished"
    record: ToolCallRecord


class ModelTurnFinished(BaseModel):
    kind: Literal["model_turn_finished"] = "model_turn_finished"
    message: AssistantMessage
    usage: Usage
    step: int


class RunFinished(BaseModel):
    kind: Literal["run_finished"] = "run_finished"
    result: RunResult


RunEvent = Annotated[
    TextDeltaEvent
    | ToolCallStarted
    | ToolCallProgress
    | ToolCallFinished
    | ModelTurnFinished
    | RunFinished,
    Field(discriminator="kind"),
]
