"""Agents that use the whole served-agent API, for the tests of ``tests/test_a2a_agent_api*.py``.

``ShowcaseAgent`` is a plain Python object served directly (``execute(context, reply)``); the
first word of the message picks what it does:

- ``inspect``   one data artifact ``seen`` holding everything it read of the request;
- ``artifacts`` three named artifacts: text + data, inline file bytes, a file URL;
- ``chunks``    two artifacts streamed in interleaved chunks (append / lastChunk as listed in
  ``CHUNKS``);
- ``message``   a Message reply, no task;
- ``reject``    REJECTED with a reason;
- ``auth``      AUTH_REQUIRED, waits for the caller's next message, completes with it;
- ``input``     INPUT_REQUIRED (ends); the next message on the task completes it.

``runtime_agent()`` is a runtime ``Agent`` whose model calls tools: ``delete`` calls a tool that
requires approval, ``ask`` one that raises ``InputRequired``, ``refuse`` one that raises
``Rejected``.
"""

from __future__ import annotations

import base64
import json
from typing import Any

from agent_runtime.agent import Agent
from agent_runtime.outcome import InputRequired, Rejected
from agent_runtime.protocols.a2a.reply import TaskReply
from agent_runtime.protocols.a2a.request_context import RequestContext
from agent_runtime.protocols.a2a.types import Part
from agent_runtime.testing import FunctionModel, Turn
from agent_runtime.tools import tool
from agent_runtime.types import Message, ToolCall, ToolResultMessage, ToolSpec, UserMessage

PNG_BYTES = b"\x89PNG\r\n\x1a\n-not-really-an-image-\x00\xff"
CHUNKS: list[tuple[str, list[dict[str, Any]], bool, bool]] = [
    # (artifact id, parts as ProtoJSON, append, lastChunk)
    ("log", [{"text": "line 1\n"}], False, False),
    ("table", [{"data": {"row": 1}}], False, False),
    ("log", [{"text": "line 2\n"}], True, False),
    ("table", [{"data": {"row": 2}}], True, True),
    ("log", [{"text": "line 3\n"}, {"data": {"lines": 3}}], True, True),
]


def _part_summary(part: Part) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "filename": part.filename,
        "mediaType": part.media_type,
        "metadata": part.metadata,
    }
    if part.text is not None:
        summary["text"] = part.text
    if part.data is not None:
        summary["data"] = part.data
    if part.url is not None:
        summary["url"] = part.url
    if part.raw is not None:
        summary["raw"] = base64.b64encode(part.raw).decode()
    return summary


def _part_from_json(value: dict[str, Any]) -> Part:
    return Part.model_validate(value)


class ShowcaseAgent:
    """A plain object served directly (see the module docstring)."""

    name = "Showcase Agent"
    description = "Uses every part of the A2A agent API"

    async def execute(self, context: RequestContext, reply: TaskReply) -> None:
        if context.state == [{"asked": "colour"}]:
            await reply.complete(f"colour: {context.text}")
            return
        command = context.text.split(maxsplit=1)[0] if context.text.strip() else ""
        if command == "inspect":
            await reply.add_artifact([Part(data=self._seen(context))], name="seen")
            await reply.complete("inspected")
        elif command == "artifacts":
            await reply.add_artifact(
                [Part(text="summary"), Part(data={"total": 3, "items": ["a", "b"]})],
                artifact_id="report",
                name="report",
                description="text and data",
                metadata={"kind": "report"},
            )
            await reply.add_artifact(
                [Part(raw=PNG_BYTES, filename="pic.png", media_type="image/png")],
                artifact_id="image",
                name="image",
            )
            await reply.add_artifact(
                [
                    Part(
                        url="https://example.com/f.pdf",
                        filename="f.pdf",
                        media_type="application/pdf",
                    )
                ],
                artifact_id="link",
                name="link",
            )
            await reply.complete("three artifacts")
        elif command == "chunks":
            for artifact_id, parts, append, last in CHUNKS:
                await reply.artifact_chunk(
                    [_part_from_json(p) for p in parts],
                    artifact_id=artifact_id,
                    append=append,
                    last_chunk=last,
                    name=None if append else artifact_id,
                )
            await reply.complete("chunked")
        elif command == "message":
            await reply.reply([Part(text="just a message"), Part(data={"noTask": True})])
        elif command == "reject":
            await reply.reject("I will not do that")
        elif command == "auth":
            answer = await reply.ask_auth(
                "Sign in to the calendar first", data={"authUrl": "https://example.com/login"}
            )
            await reply.complete(f"authorised: {answer.text}")
        elif command == "input":
            reply.save_state([{"asked": "colour"}])
            await reply.require_input("Which colour?")
        else:
            await reply.complete(f"unknown command {command!r}")

    @staticmethod
    def _seen(context: RequestContext) -> dict[str, Any]:
        message = context.message
        return {
            "messageId": context.message_id,
            "contextId": context.context_id,
            "taskId": context.task_id,
            "messageTaskId": message.task_id,
            "metadata": context.metadata,
            "requestMetadata": context.request_metadata,
            "extensions": message.extensions,
            "parts": [_part_summary(p) for p in context.parts],
            "referenceTaskIds": message.reference_task_ids,
            "referencedTasks": [
                {"id": t.id, "state": t.status.state.value} for t in context.referenced_tasks
            ],
            "principal": context.principal,
            "continuesTask": context.continues_task,
        }


# ---------------------------------------------------------------------- the runtime Agent

DELETED: list[str] = []
"""Paths the approval-gated tool really deleted (it only runs once approved)."""


@tool(requires_approval=True)
def delete_file(path: str) -> str:
    """Delete a file (needs the user's approval)."""
    DELETED.append(path)
    return f"deleted {path}"


@tool
def need_detail(question: str) -> str:
    """Ask the user a question."""
    raise InputRequired(question)


@tool
def refuse(reason: str) -> str:
    """Refuse the request."""
    raise Rejected(reason)


def _model_reply(messages: list[Message], tools: list[ToolSpec]) -> Turn:
    last = messages[-1]
    if isinstance(last, ToolResultMessage):
        return f"done: {last.result.text_content}"
    users = [m for m in messages if isinstance(m, UserMessage)]
    text = users[-1].content if users else ""
    word = text.split(maxsplit=1)[0] if text.strip() else ""
    rest = text[len(word) :].strip()
    if word == "delete":
        return ToolCall(id="call-1", name="delete_file", arguments=json.dumps({"path": rest}))
    if word == "ask":
        return ToolCall(id="call-2", name="need_detail", arguments=json.dumps({"question": rest}))
    if word == "refuse":
        return ToolCall(id="call-3", name="refuse", arguments=json.dumps({"reason": rest}))
    return f"you said: {text}"


def runtime_agent() -> Agent:
    """A runtime Agent whose scripted model calls the tools above."""
    return Agent(
        FunctionModel(_model_reply),
        tools=[delete_file, need_detail, refuse],
        name="Runtime Agent",
        description="A runtime agent with approval-gated tools",
    )
