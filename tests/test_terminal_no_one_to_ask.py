"""The terminal's line on stderr when no one can answer at it tells what really happens: the
call is passed to the run's own approver (a served task's peer) when there is one, else denied."""

from __future__ import annotations

import io
from typing import Any

import pytest

from agent_runtime._terminal import Terminal
from agent_runtime.policy import ToolPolicy, run_approver
from agent_runtime.types import ToolCall, ToolSpec

pytestmark = pytest.mark.anyio

SHRED = ToolSpec(name="shred", description="Delete a file.")


def served_terminal(stderr: io.StringIO) -> Terminal:
    return Terminal(
        interactive=False, no_one_to_ask="no one to ask in a served agent", stderr=stderr
    )


async def test_with_a_run_approver_the_call_is_passed_on_not_reported_denied() -> None:
    stderr = io.StringIO()
    policy = ToolPolicy(approve_unless_read_only=True, approval=served_terminal(stderr).approve)
    asked: list[str] = []

    def peer(call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]) -> bool:
        asked.append(spec.name)
        return True

    with run_approver(peer):
        verdict = await policy.check(ToolCall.of("shred"), SHRED, {})
    assert verdict.allowed and asked == ["shred"]
    line = stderr.getvalue()
    assert "denied" not in line and "no one to ask" not in line
    assert (
        "shred needs approval: it is not marked read-only; asking whoever this run is for" in line
    )
    assert '"policy": {"allow": ["shred"]}' in line


async def test_a_run_approver_that_refuses_is_the_users_denial() -> None:
    stderr = io.StringIO()
    policy = ToolPolicy(approve_unless_read_only=True, approval=served_terminal(stderr).approve)

    def peer(call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]) -> bool:
        return False

    with run_approver(peer):
        verdict = await policy.check(ToolCall.of("shred"), SHRED, {})
    assert not verdict.allowed
    assert verdict.reason == "The user denied this call to 'shred'."
    assert "denied" not in stderr.getvalue()


async def test_without_a_run_approver_the_call_is_denied_and_says_so() -> None:
    stderr = io.StringIO()
    policy = ToolPolicy(approve_unless_read_only=True, approval=served_terminal(stderr).approve)
    verdict = await policy.check(ToolCall.of("shred"), SHRED, {})
    assert not verdict.allowed
    assert "there is no one to ask in a served agent" in verdict.reason
    line = stderr.getvalue()
    assert "denied shred: it is not marked read-only, and there is no one to ask" in line
    assert "--yes" in line and '"policy": {"allow": ["shred"]}' in line
