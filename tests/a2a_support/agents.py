"""Agents for A2A server tests: an echo model with a few commands, no LLM.

The model answers the last user prompt:

- ``slow:<seconds>`` waits that long, then echoes (cancel and restart tests);
- ``ask:<question>`` answers ``[input-required] <question>``;
- ``fail`` raises, so the run fails;
- ``tool:<text>`` calls tool ``shout`` with the text, then answers with what it returned;
- anything else: ``echo: <prompt> (turn N)``, N = user messages in the conversation, so a test
  can see that history was carried over.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio

from agent_runtime.agent import Agent
from agent_runtime.backend import ModelBackend, ModelEvent, ModelFinish, ModelSettings, TextDelta
from agent_runtime.testing import FunctionModel, Turn
from agent_runtime.tools import tool
from agent_runtime.types import Message, ToolCall, ToolResultMessage, ToolSpec, Usage, UserMessage


@tool  # type: ignore[untyped-decorator]
def shout(text: str) -> str:
    """Return the text in capitals."""
    return text.upper() + "!"


async def _echo(messages: list[Message], tools: list[ToolSpec]) -> Turn:
    users = [m for m in messages if isinstance(m, UserMessage)]
    prompt = users[-1].content if users else ""
    last = messages[-1] if messages else None
    if isinstance(last, ToolResultMessage):
        return f"tool said: {last.result.text_content}"
    if prompt.startswith("slow:"):
        await anyio.sleep(float(prompt[5:] or 1))
    elif prompt.startswith("ask:"):
        return f"[input-required] {prompt[4:].strip()}"
    elif prompt == "fail":
        raise RuntimeError("the model broke on purpose")
    elif prompt.startswith("tool:"):
        return ToolCall.of("shout", {"text": prompt[5:]}, id="call_1")
    return f"echo: {prompt} (turn {len(users)})"


def echo_model() -> FunctionModel:
    """The echo model described above, as a fresh backend."""
    return FunctionModel(_echo, name="echo")


def echo_agent(name: str = "echo") -> Agent:
    return Agent(echo_model(), tools=[shout], name=name, description="Echoes what it is told")


class GatedModel(ModelBackend):
    """Streams ``first``, then waits for ``release`` before streaming ``second`` (or failing).

    A test controls exactly when the run moves on, so it can join a running task between two
    text chunks without any sleep.
    """

    name = "gated"

    def __init__(self, first: str = "alpha ", second: str = "beta", fail: bool = False) -> None:
        self.first = first
        self.second = second
        self.fail = fail
        self.release = anyio.Event()
        self.first_chunk_sent = anyio.Event()

    async def stream(
        self,
        messages: Sequence[Message],
        tools: Sequence[ToolSpec],
        settings: ModelSettings,
    ) -> AsyncIterator[ModelEvent]:
        yield TextDelta(text=self.first)
        self.first_chunk_sent.set()
        await self.release.wait()
        if self.fail:
            raise RuntimeError("the gated model broke on purpose")
        yield TextDelta(text=self.second)
        yield ModelFinish(usage=Usage(requests=1, input_tokens=1, output_tokens=1))


def gated_agent(
    first: str = "alpha ", second: str = "beta", fail: bool = False
) -> tuple[Agent, GatedModel]:
    model = GatedModel(first, second, fail)
    return Agent(model, name="gated", description="Streams in two gated chunks"), model
