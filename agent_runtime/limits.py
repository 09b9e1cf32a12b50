"""Limits that end a run with a clear error instead of letting it loop or spend without bound."""

from __future__ import annotations

from dataclasses import dataclass

from .errors import UsageLimitExceeded
from .types import Message, Usage


@dataclass(frozen=True)
class UsageLimits:
    """``None`` disables a limit. Steps count model requests."""

    max_steps: int | None = 25
    max_tool_calls: int | None = None
    max_input_tokens: int | None = None
    max_output_tokens: int | None = None
    max_total_tokens: int | None = None

    def check_before_request(self, steps_done: int, messages: list[Message]) -> None:
        if self.max_steps is not None and steps_done >= self.max_steps:
            raise UsageLimitExceeded(
                f"The run reached its limit of {self.max_steps} model requests (max_steps) "
                "without a final answer.",
                messages,
            )

    def check_tokens(self, usage: Usage, messages: list[Message]) -> None:
        for label, used, limit in (
            ("input tokens", usage.input_tokens, self.max_input_tokens),
            ("output tokens", usage.output_tokens, self.max_output_tokens),
            ("total tokens", usage.total_tokens, self.max_total_tokens),
        ):
            if limit is not None and used > limit:
                raise UsageLimitExceeded(
                    f"The run used {used} {label}, over its limit of {limit}.", messages
                )

    def check_tool_calls(self, done: int, requested: int, messages: list[Message]) -> None:
        if self.max_tool_calls is not None and done + requested > self.max_tool_calls:
            raise UsageLimitExceeded(
                f"The model asked for {requested} more tool calls after {done}; the run's limit "
                f"is {self.max_tool_calls} (max_tool_calls).",
                messages,
            )
