"""What the A2A node serves: an agent with a name, a description and one method, ``execute``.

``execute(context, reply)`` is called for every message the node accepts: ``context``
(:class:`~.request_context.RequestContext`) is the typed incoming message and its task,
read-only; ``reply`` (:class:`~.reply.TaskReply`) is how the agent answers (a Message, or a task
with artifacts, status updates and an ending). Any object with these three members can be served
(``create_a2a_app(my_object)``); the runtime ``Agent`` is served through
:class:`~.runtime_adapter.RuntimeAgentExecutor`, which :func:`as_served_agent` picks for it.

An exception out of ``execute`` fails the task; a ``RunOutcome``
(:mod:`agent_runtime.outcome`) ends it in the matching state instead.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from .reply import TaskReply
from .request_context import RequestContext


class ServableAgent(Protocol):
    """What ``create_a2a_app`` takes: a :class:`ServedAgent`, or a runtime ``Agent`` (with
    ``run_stream``) that :func:`as_served_agent` wraps."""

    name: str
    description: str


@runtime_checkable
class ServedAgent(Protocol):
    """An agent the node serves (see the module docstring)."""

    name: str
    description: str

    async def execute(self, context: RequestContext, reply: TaskReply) -> None: ...


def as_served_agent(
    agent: ServableAgent | Any, *, input_required_marker: str | None
) -> ServedAgent:
    """``agent`` itself when it has ``execute``; a runtime ``Agent`` (anything with
    ``run_stream``) wrapped in :class:`~.runtime_adapter.RuntimeAgentExecutor`."""
    if isinstance(agent, ServedAgent):
        return agent
    if callable(getattr(agent, "run_stream", None)):
        from .runtime_adapter import RunnableAgent, RuntimeAgentExecutor

        runnable: RunnableAgent = agent  # type: ignore[assignment]  # checked just above
        return RuntimeAgentExecutor(runnable, input_required_marker=input_required_marker)
    raise TypeError(
        f"cannot serve {type(agent).__name__}: it needs execute(context, reply) or run_stream"
    )
