"""A model and local tools for the ``agent-runtime mcp-serve`` tests (no LLM needed).

``command_model`` reads the last user prompt: ``call TOOL {json}`` makes it call ``TOOL`` with
those arguments, then answer ``result: <the tool's text>``; any other prompt is answered
``echo: <prompt>``. ``wait_here`` is a local tool that sleeps and leaves a trace in
``$SERVE_TEST_STATE`` (started, then finished or cancelled), so a test can see that a
cancelled request stopped the run.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import anyio

from agent_runtime import tool
from agent_runtime.testing import FunctionModel
from agent_runtime.turn_model import Turn
from agent_runtime.types import Message, ToolCall, ToolResultMessage, ToolSpec, UserMessage


def _reply(messages: list[Message], tools: list[ToolSpec]) -> Turn:
    last = messages[-1]
    if isinstance(last, ToolResultMessage):
        return f"result: {last.result.text_content}"
    prompt = last.content if isinstance(last, UserMessage) else ""
    if prompt.startswith("call "):
        name, _, args = prompt[5:].partition(" ")
        return ToolCall.of(name, json.loads(args or "{}"), id="call_1")
    return f"echo: {prompt}"


def command_model() -> FunctionModel:
    return FunctionModel(_reply, name="command-model")


def _trace(event: str) -> None:
    state = os.environ.get("SERVE_TEST_STATE")
    if state:
        with open(Path(state) / "local.log", "a", encoding="utf-8") as fh:
            fh.write(event + "\n")


@tool(read_only=True)
async def wait_here(seconds: float) -> str:
    """Sleep ``seconds`` seconds (a slow tool for cancellation tests)."""
    _trace("started")
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        _trace("cancelled")
        raise
    _trace("finished")
    return f"waited {seconds}"


@tool(read_only=True)
def shout(text: str) -> str:
    """Upper-case ``text``."""
    return text.upper()
