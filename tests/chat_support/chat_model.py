"""A model for the chat tests that does what the person types, streaming its text word by word.

- ``call NAME {json}``: call tool NAME with those arguments, then answer with what came back;
- ``talk slowly``: stream words slowly for a long time (to be interrupted);
- ``who are you``: the model's name, the temperature it was sent and the turn's number (for the
  ``/model`` tests: several of these models with their own names stand for several models);
- anything else: an answer in markdown that echoes the prompt and counts the earlier turns
  (so a test can see that the conversation carries over, and that /reset clears it).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Sequence
from typing import Any

import anyio

from agent_runtime.backend import (
    ModelBackend,
    ModelEvent,
    ModelFinish,
    ModelSettings,
    TextDelta,
    ToolCallDelta,
)
from agent_runtime.types import Message, ToolResultMessage, ToolSpec, Usage, UserMessage


class DirectiveModel(ModelBackend):
    name = "directive-test-model"

    def __init__(self, delay_s: float = 0.01, name: str | None = None) -> None:
        self.delay_s = delay_s
        if name is not None:
            self.name = name

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], settings: ModelSettings
    ) -> AsyncIterator[ModelEvent]:
        users = [m for m in messages if isinstance(m, UserMessage)]
        prompt = users[-1].content if users else ""
        last = messages[-1] if messages else None
        if isinstance(last, ToolResultMessage):
            results = []
            for message in reversed(messages):
                if not isinstance(message, ToolResultMessage):
                    break
                results.append(message.result.text_content)
            text = "**Tool answered.** It said: " + " | ".join(reversed(results))
            async for event in self._words(text):
                yield event
        elif prompt.startswith("call "):
            _, name, *rest = prompt.split(" ", 2)
            arguments: dict[str, Any] = json.loads(rest[0]) if rest else {}
            yield ToolCallDelta(
                index=0,
                id=f"call_{len(messages)}",
                name=name,
                arguments_delta=json.dumps(arguments),
            )
            yield ModelFinish(usage=Usage(requests=1), finish_reason="tool_calls")
            return
        elif prompt == "who are you":
            text = (
                f"I am {self.name} at temperature {settings.temperature}; this is turn "
                f"{len(users)} of the conversation."
            )
            async for event in self._words(text):
                yield event
        elif prompt == "talk slowly":
            async for event in self._words("blah " * 2000, delay_s=0.05):
                yield event
        else:
            text = (
                f"# Reply {len(users)}\n\nYou said *{prompt}*; this is turn **{len(users)}** "
                f"of the conversation.\n\n- first point\n- second point\n"
            )
            async for event in self._words(text):
                yield event
        yield ModelFinish(usage=Usage(requests=1, output_tokens=10), finish_reason="stop")

    async def _words(self, text: str, delay_s: float | None = None) -> AsyncIterator[ModelEvent]:
        for word in text.split(" "):
            await anyio.sleep(self.delay_s if delay_s is None else delay_s)
            yield TextDelta(text=word + " ")


def make(**options: Any) -> DirectiveModel:
    return DirectiveModel(**options)
