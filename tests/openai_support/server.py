"""A small OpenAI-compatible chat completions server for tests, standing in for vLLM/SGLang.

vLLM and SGLang need a GPU and model weights, neither of which this machine has, so the backend's
tests talk to this server instead: real HTTP on loopback, served by uvicorn in the test's event
loop. It records every request (headers and JSON body) and answers each with the next scripted
``Reply``: a stream of server-sent events shaped like vLLM's chunks, a whole JSON body, an error
status, a stream cut off mid-way, or a stall.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

import anyio
from a2a_interop_support.processes import serve_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

MODEL = "moonshotai/Kimi-K2-Instruct"


@dataclass
class Reply:
    """One scripted answer.

    ``events``: SSE items, a dict sent as ``data: <json>``, a string sent as written (use it for
    ``"data: [DONE]\\n\\n"``, comments, malformed lines). ``body``: a JSON answer instead of a
    stream. ``cut_after``: break the connection after that many events. ``stall_s``: wait that
    long before sending anything.
    """

    status: int = 200
    events: list[dict[str, Any] | str] = field(default_factory=list)
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)
    media_type: str = "text/event-stream"
    cut_after: int | None = None
    stall_s: float = 0.0


@dataclass
class Recorded:
    headers: dict[str, str]
    body: dict[str, Any]


class CutOff(Exception):
    """Raised inside a streaming answer so that uvicorn drops the connection."""


class ScriptedServer:
    """The server's state: what it will answer, and what it was asked."""

    def __init__(self, replies: list[Reply]) -> None:
        self.replies = list(replies)
        self.requests: list[Recorded] = []
        self.url = ""

    @property
    def bodies(self) -> list[dict[str, Any]]:
        return [r.body for r in self.requests]

    async def handle(self, request: Request) -> Response:
        self.requests.append(Recorded(dict(request.headers), await request.json()))
        if not self.replies:
            return JSONResponse({"error": {"message": "no scripted reply left"}}, status_code=500)
        reply = self.replies.pop(0)
        if reply.stall_s:
            await anyio.sleep(reply.stall_s)
        if reply.body is not None:
            return JSONResponse(reply.body, status_code=reply.status, headers=reply.headers)
        return StreamingResponse(
            _encode(reply),
            status_code=reply.status,
            headers=reply.headers,
            media_type=reply.media_type,
        )


async def _encode(reply: Reply) -> AsyncIterator[bytes]:
    for number, item in enumerate(reply.events):
        if reply.cut_after is not None and number >= reply.cut_after:
            raise CutOff("scripted cut-off")
        text = item if isinstance(item, str) else f"data: {json.dumps(item)}\n\n"
        yield text.encode()


@asynccontextmanager
async def scripted_server(*replies: Reply) -> AsyncIterator[ScriptedServer]:
    """Serve the replies on a free loopback port; ``server.url`` is the ``/v1`` base URL."""
    server = ScriptedServer(list(replies))
    app = Starlette(routes=[Route("/v1/chat/completions", server.handle, methods=["POST"])])
    async with serve_app(app) as base_url:
        server.url = f"{base_url}/v1"
        yield server


# ---------------------------------------------------------------------------- chunks


def chunk(
    delta: dict[str, Any] | None = None,
    finish_reason: str | None = None,
    usage: dict[str, int] | None = None,
) -> dict[str, Any]:
    """A ``chat.completion.chunk`` as vLLM sends it; with ``delta=None``, a usage-only chunk."""
    choices = (
        []
        if delta is None and finish_reason is None
        else [{"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish_reason}]
    )
    out: dict[str, Any] = {
        "id": "chatcmpl-test",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": MODEL,
        "choices": choices,
    }
    if usage is not None:
        out["usage"] = usage
    return out


def usage_chunk(prompt: int, completion: int) -> dict[str, Any]:
    return chunk(
        usage={
            "prompt_tokens": prompt,
            "completion_tokens": completion,
            "total_tokens": prompt + completion,
        }
    )


DONE = "data: [DONE]\n\n"


def text_reply(*pieces: str, prompt: int = 10, completion: int = 3) -> Reply:
    """A streamed plain-text answer in ``pieces``, then usage and ``[DONE]``."""
    events: list[dict[str, Any] | str] = [chunk({"role": "assistant", "content": ""})]
    events += [chunk({"content": piece}) for piece in pieces]
    events += [chunk({}, "stop"), usage_chunk(prompt, completion), DONE]
    return Reply(events=events)


def call_start(index: int, call_id: str, name: str, arguments: str = "") -> dict[str, Any]:
    """The first piece of a tool call: its id and name (vLLM sends empty arguments here)."""
    return chunk(
        {
            "tool_calls": [
                {
                    "index": index,
                    "id": call_id,
                    "type": "function",
                    "function": {"name": name, "arguments": arguments},
                }
            ]
        }
    )


def call_arguments(index: int, piece: str) -> dict[str, Any]:
    """A later piece of tool call ``index``: only more argument text."""
    return chunk({"tool_calls": [{"index": index, "function": {"arguments": piece}}]})
