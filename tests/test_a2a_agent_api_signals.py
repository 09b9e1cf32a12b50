"""The core pieces a served agent builds on: typed run outcomes and the run-scoped approver.

A tool raising ``InputRequired`` / ``AuthRequired`` / ``Rejected`` ends the run with that very
exception (one call or several in parallel), its ``messages`` holding the history so far; other
tool errors still go back to the model. ``run_approver`` answers for calls the policy asks
about when the policy's own approver is missing or has no one to ask, and only then.
"""

from __future__ import annotations

import json

import pytest

from agent_runtime.agent import Agent
from agent_runtime.outcome import AuthRequired, InputRequired, Rejected, find_outcome
from agent_runtime.policy import ApprovalUnavailable, ToolPolicy, run_approver
from agent_runtime.testing import ScriptedModel
from agent_runtime.tools import tool
from agent_runtime.types import AssistantMessage, ToolCall, ToolResultMessage, ToolSpec

pytestmark = pytest.mark.anyio


@tool
def ask_user(question: str) -> str:
    """Ask the user."""
    raise InputRequired(question)


@tool
def sign_in(service: str) -> str:
    """Needs a credential."""
    raise AuthRequired(f"sign in to {service}")


@tool
def broken(x: int) -> str:
    """Fails like any tool may."""
    raise ValueError("plain failure")


@tool(requires_approval=True)
def guarded(x: int) -> str:
    """Runs only once approved."""
    return f"ran {x}"


def _call(name: str, call_id: str, **arguments: object) -> ToolCall:
    return ToolCall(id=call_id, name=name, arguments=json.dumps(arguments))


async def test_tool_raising_input_required_ends_the_run_with_history() -> None:
    model = ScriptedModel([_call("ask_user", "c1", question="which one?"), "never reached"])
    agent = Agent(model, tools=[ask_user])
    with pytest.raises(InputRequired) as caught:
        await agent.run("start")
    assert str(caught.value) == "which one?"
    last = caught.value.messages[-1]
    assert isinstance(last, AssistantMessage) and last.tool_calls[0].id == "c1"
    assert model.remaining == 1


async def test_outcome_from_one_of_parallel_calls_is_raised_as_is() -> None:
    turn = [_call("broken", "c1", x=1), _call("sign_in", "c2", service="calendar")]
    agent = Agent(ScriptedModel([turn, "never reached"]), tools=[broken, sign_in])
    with pytest.raises(AuthRequired, match="sign in to calendar"):
        await agent.run("start")


async def test_a_plain_tool_error_still_goes_back_to_the_model() -> None:
    model = ScriptedModel([_call("broken", "c1", x=1), "recovered"])
    result = await Agent(model, tools=[broken]).run("start")
    assert result.output == "recovered"
    results = [m for m in result.messages if isinstance(m, ToolResultMessage)]
    assert results[0].result.is_error and "plain failure" in results[0].result.text_content


def test_find_outcome_looks_inside_exception_groups() -> None:
    refusal = Rejected("no")
    group = BaseExceptionGroup("x", [ValueError("a"), ExceptionGroup("y", [refusal])])
    assert find_outcome(group) is refusal
    assert find_outcome(ValueError("a")) is None


def _guarded_spec() -> ToolSpec:
    return guarded.spec


async def test_run_approver_answers_when_the_policy_has_no_approver() -> None:
    policy = ToolPolicy()
    call = _call("guarded", "c1", x=1)
    denied = await policy.check(call, _guarded_spec(), {"x": 1})
    assert not denied.allowed and "no approver" in denied.reason
    asked: list[str] = []

    async def approve(call: ToolCall, spec: ToolSpec, arguments: dict[str, object]) -> bool:
        asked.append(spec.name)
        return True

    with run_approver(approve):
        verdict = await policy.check(call, _guarded_spec(), {"x": 1})
    assert verdict.allowed and asked == ["guarded"]


async def test_run_approver_is_asked_only_when_the_policy_approver_cannot_answer() -> None:
    def no_one(call: ToolCall, spec: ToolSpec, arguments: dict[str, object]) -> bool:
        raise ApprovalUnavailable("no terminal")

    def says_no(call: ToolCall, spec: ToolSpec, arguments: dict[str, object]) -> bool:
        return False

    def says_yes(call: ToolCall, spec: ToolSpec, arguments: dict[str, object]) -> bool:
        return True

    call = _call("guarded", "c1", x=1)
    with run_approver(says_yes):
        assert (await ToolPolicy(approval=no_one).check(call, _guarded_spec(), {})).allowed
        decided = await ToolPolicy(approval=says_no).check(call, _guarded_spec(), {})
        assert not decided.allowed and "denied" in decided.reason
    unavailable = await ToolPolicy(approval=no_one).check(call, _guarded_spec(), {})
    assert not unavailable.allowed and "no terminal" in unavailable.reason


async def test_run_approver_reaches_the_tool_call_of_an_agent_run() -> None:
    model = ScriptedModel([_call("guarded", "c1", x=7), "finished"])
    agent = Agent(model, tools=[guarded])

    def approve(call: ToolCall, spec: ToolSpec, arguments: dict[str, object]) -> bool:
        return arguments == {"x": 7}

    with run_approver(approve):
        result = await agent.run("go")
    assert result.tool_calls[0].result.text_content == "ran 7"
