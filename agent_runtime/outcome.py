"""Typed ways for a run to end other than with an answer: input needed, authorisation needed,
or a refusal.

A tool raises one of these to stop the run there (the dispatcher lets them through instead of
turning them into an error result for the model); whoever runs the agent decides what it means.
A served agent (the A2A node) maps them to the task states ``INPUT_REQUIRED``,
``AUTH_REQUIRED`` and ``REJECTED``, with ``str(exc)`` as the status message; a caller of
``Agent.run`` catches them like any ``AgentRunError``, whose ``messages`` hold the history up to
the stop.
"""

from __future__ import annotations

from .errors import AgentRunError


class RunOutcome(AgentRunError):
    """The run stops in a state other than a final answer; ``str(exc)`` says why to the user."""


class InputRequired(RunOutcome):
    """The run needs more input from the user: the message is the question."""


class AuthRequired(RunOutcome):
    """The run needs an authorisation (a credential, a person's approval) before it goes on."""


class Rejected(RunOutcome):
    """The agent refuses the request: the message is the reason."""


def find_outcome(exc: BaseException) -> RunOutcome | None:
    """The ``RunOutcome`` that ``exc`` is, or the first one inside an exception group."""
    if isinstance(exc, RunOutcome):
        return exc
    if isinstance(exc, BaseExceptionGroup):
        for inner in exc.exceptions:
            found = find_outcome(inner)
            if found is not None:
                return found
    return None
