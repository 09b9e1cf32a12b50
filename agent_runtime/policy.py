"""Which tool calls may run: allow, deny, or ask an approval callback.

The policy is consulted after a call has parsed and validated, just before it runs. A denial
becomes an ``is_error`` result carrying the reason, so the model can change course.

Whoever runs the agent for someone (the A2A node, for the peer that sent the task) can name who
answers for that one run with ``run_approver``: it is asked when the policy has no approval
callback, or when that callback has no one to ask (``ApprovalUnavailable``).
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Awaitable, Callable, Iterator, Sequence
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

from .errors import ApprovalDenied
from .types import ToolCall, ToolSpec


class Decision(str, Enum):
    ALLOW = "allow"
    DENY = "deny"
    ASK = "ask"


ApprovalCallback = Callable[[ToolCall, ToolSpec, dict[str, Any]], Awaitable[bool] | bool]
"""Return True to run the call, False (or raise ``ApprovalDenied(reason)``) to refuse it."""


_RUN_APPROVER: ContextVar[ApprovalCallback | None] = ContextVar("run_approver", default=None)


@contextmanager
def run_approver(approval: ApprovalCallback) -> Iterator[None]:
    """Within this block (and the tasks it starts), ``approval`` answers for calls that the
    policy asks about and that its own callback cannot decide (none, or no one to ask)."""
    token = _RUN_APPROVER.set(approval)
    try:
        yield
    finally:
        _RUN_APPROVER.reset(token)


def has_run_approver() -> bool:
    """Whether a ``run_approver`` answers here: an approver with no one to ask can say that
    the call is passed on rather than denied."""
    return _RUN_APPROVER.get() is not None


@dataclass(frozen=True)
class Verdict:
    allowed: bool
    reason: str = ""


def approval_reason(spec: ToolSpec, ask_patterns: Sequence[str] = ()) -> str:
    """Why a call to ``spec``'s tool needs a person's yes, in words for that person."""
    if spec.requires_approval:
        return "it requires approval"
    if any(fnmatch.fnmatchcase(spec.name, pattern) for pattern in ask_patterns):
        return "the config's policy asks before it runs"
    if spec.annotations.destructive:
        return "it is marked destructive"
    return "it is not marked read-only"


class ApprovalUnavailable(ApprovalDenied):
    """Raised by an approver that has no one to ask (no terminal, a server): the call is not
    run, and the reason is given as is, since no user took the decision."""


@dataclass
class ToolPolicy:
    """Rules matched by tool name (shell-style patterns such as ``fs__*``).

    Order of precedence: ``deny`` patterns, then ``ask`` patterns (and tools that require
    approval: flagged by the approval-required combinator, or destructive ones when
    ``approve_destructive`` is set), then ``allow`` patterns, then (with
    ``approve_unless_read_only``) asking for every tool not marked read-only, then ``default``.

    ``approve_unless_read_only`` is the host default of the MCP spec: a tool is destructive
    unless it says otherwise (``readOnlyHint`` true), so only tools marked read-only run
    without a person's yes; an ``allow`` pattern is how a config pre-approves the others.
    """

    default: Decision = Decision.ALLOW
    allow: Sequence[str] = ()
    deny: Sequence[str] = ()
    ask: Sequence[str] = ()
    approve_destructive: bool = False
    approve_unless_read_only: bool = False
    approval: ApprovalCallback | None = None
    _cache: dict[tuple[str, bool, bool | None, bool | None], Decision] = field(
        default_factory=dict, repr=False
    )

    def decision_for(self, spec: ToolSpec) -> Decision:
        annotations = spec.annotations
        key = (spec.name, spec.requires_approval, annotations.destructive, annotations.read_only)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        decision = self._decide(spec)
        self._cache[key] = decision
        return decision

    def _decide(self, spec: ToolSpec) -> Decision:
        name = spec.name
        if _matches(name, self.deny):
            return Decision.DENY
        if _matches(name, self.ask) or spec.requires_approval:
            return Decision.ASK
        if self.approve_destructive and spec.annotations.destructive:
            return Decision.ASK
        if _matches(name, self.allow):
            return Decision.ALLOW
        if self.approve_unless_read_only and spec.annotations.read_only is not True:
            return Decision.ASK
        return self.default

    async def check(self, call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]) -> Verdict:
        decision = self.decision_for(spec)
        if decision is Decision.ALLOW:
            return _ALLOWED
        if decision is Decision.DENY:
            return Verdict(False, f"Tool '{spec.name}' is not allowed by the runtime's policy.")
        approvers = [a for a in (self.approval, _RUN_APPROVER.get()) if a is not None]
        if not approvers:
            return Verdict(
                False,
                f"Tool '{spec.name}' requires approval and no approver is configured; "
                "the call was not run.",
            )
        try:
            answer = await _ask(approvers, call, spec, arguments)
        except ApprovalUnavailable as unavailable:
            return Verdict(False, f"Tool '{spec.name}' was not run: {unavailable}")
        except ApprovalDenied as denied:
            return Verdict(False, f"The user denied this call to '{spec.name}': {denied}")
        if answer:
            return _ALLOWED
        return Verdict(False, f"The user denied this call to '{spec.name}'.")


_ALLOWED = Verdict(True)


async def _ask(
    approvers: Sequence[ApprovalCallback],
    call: ToolCall,
    spec: ToolSpec,
    arguments: dict[str, Any],
) -> bool:
    """The first answer from ``approvers`` in order; one with no one to ask passes it on."""
    for index, approval in enumerate(approvers):
        try:
            answer = approval(call, spec, arguments)
            if inspect.isawaitable(answer):
                answer = await answer
            return bool(answer)
        except ApprovalUnavailable:
            if index == len(approvers) - 1:
                raise
    return False


def _matches(name: str, patterns: Sequence[str]) -> bool:
    return any(fnmatch.fnmatchcase(name, pattern) for pattern in patterns)
