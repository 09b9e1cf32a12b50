"""The runtime's error hierarchy.

The model's faults (bad JSON, unknown tools, schema violations) never raise: they become
``is_error`` tool results. What raises is what the developer must act on: a misconfiguration
(``UserError``), a run that hit one of its limits (``UsageLimitExceeded``), or a model that keeps
failing after its retry budget is spent (``ToolRetriesExhausted``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .types import Message


class AgentRuntimeError(Exception):
    """Base class of every error the runtime raises on purpose."""


class UserError(AgentRuntimeError):
    """The developer's mistake: bad configuration, a name clash, a bad schema."""


class ToolNameConflictError(UserError):
    """Two toolsets offer the same tool name and no prefix tells them apart."""


class SchemaError(UserError):
    """A tool's JSON Schema is not a schema, even after normalisation."""


class ConfigError(UserError):
    """A config file that cannot be used, with the reason and where."""


class ModelBackendError(AgentRuntimeError):
    """The model backend failed (connection, bad response)."""


class AgentRunError(AgentRuntimeError):
    """A run stopped before the model gave a final answer.

    ``messages`` holds the history up to the stop, so nothing is lost: a caller can inspect it or
    continue from it.
    """

    def __init__(self, message: str, messages: Sequence[Message] = ()) -> None:
        super().__init__(message)
        self.messages: list[Message] = list(messages)


class UsageLimitExceeded(AgentRunError):
    """A limit on steps, tool calls or tokens was reached."""


class ToolRetriesExhausted(AgentRunError):
    """The model made too many invalid calls to one tool."""


class ApprovalDenied(AgentRuntimeError):
    """Raised by an approval callback to deny with a reason (the model sees the reason)."""
