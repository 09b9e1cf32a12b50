"""A tiny ModelBackend that echoes the user: the agent behind our A2A echo node.

It plays the same script as the official-SDK echo server (``sdk_echo_server.py``), so tests and
the benchmark can put either server behind the same client calls:

- ``slow:<text>``  works for ~30 s (cancellable);
- ``ask:<text>``   asks ``<text>`` back (INPUT_REQUIRED through the node's marker); the next
  message in that task is answered with ``answer: <reply>``;
- ``fail:<text>``  raises, so the task fails with ``<text>``;
- anything else     ``echo: <text>``, streamed in two pieces.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence

import anyio

from agent_runtime.backend import ModelBackend, ModelEvent, ModelFinish, ModelSettings, TextDelta
from agent_runtime.types import AssistantMessage, Message, ToolSpec, Usage, UserMessage

INPUT_REQUIRED_MARKER = "[input-required]"


class EchoModel(ModelBackend):
    name = "echo"

    async def stream(
        self, messages: Sequence[Message], tools: Sequence[ToolSpec], settings: ModelSettings
    ) -> AsyncIterator[ModelEvent]:
        users = [m for m in messages if isinstance(m, UserMessage)]
        text = users[-1].content if users else ""
        assistants = [m for m in messages if isinstance(m, AssistantMessage)]
        if assistants and assistants[-1].text.startswith(INPUT_REQUIRED_MARKER):
            yield TextDelta(text=f"answer: {text}")
        elif text.startswith("slow:"):
            await anyio.sleep(30)
            yield TextDelta(text=f"echo: {text}")
        elif text.startswith("ask:"):
            yield TextDelta(text=INPUT_REQUIRED_MARKER + text.removeprefix("ask:"))
        elif text.startswith("fail:"):
            raise RuntimeError(text.removeprefix("fail:"))
        else:
            yield TextDelta(text="echo: ")
            yield TextDelta(text=text)
        yield ModelFinish(usage=Usage(requests=1))
