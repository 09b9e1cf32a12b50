"""One SendMessage / SendStreamingMessage through either official SDK client, as ProtoJSON.

A test builds the request once as a ProtoJSON dict and gets back what the SDK client returned,
serialised by that SDK (Python: ``MessageToDict`` of the protobuf; JS: the SDK's ``toJSON`` in
``js_protocol_client.mjs``). So one scenario checks what a Python caller and a JS caller really
see, on either binding.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Protocol

import anyio
import grpc.aio
from a2a.client import ClientConfig, create_client
from a2a.types.a2a_pb2 import SendMessageRequest
from google.protobuf.json_format import MessageToDict, ParseDict

from .processes import node_binary

HERE = Path(__file__).resolve().parent
JS_DRIVER = HERE / "js_protocol_client.mjs"
REPO_ROOT = HERE.parents[1]


class Caller(Protocol):
    """An SDK client on one binding."""

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        """``{"task": ...}`` or ``{"message": ...}``."""

    async def stream(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        """The stream's events (StreamResponse each)."""


class PythonSdkCaller:
    """The official a2a-sdk client, given only ``binding`` (JSONRPC, HTTP+JSON or GRPC)."""

    def __init__(self, url: str, binding: str) -> None:
        self.url = url
        self.binding = binding

    async def _events(self, request: dict[str, Any], *, streaming: bool) -> list[dict[str, Any]]:
        config = ClientConfig(
            streaming=streaming,
            supported_protocol_bindings=[self.binding],
            grpc_channel_factory=grpc.aio.insecure_channel,  # used by the GRPC binding only
        )
        client = await create_client(self.url, config)
        try:
            message = ParseDict(request, SendMessageRequest())
            with anyio.fail_after(20):
                return [MessageToDict(e) async for e in client.send_message(message)]
        finally:
            await client.close()

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        events = await self._events(request, streaming=False)
        assert len(events) == 1, events
        return events[0]

    async def stream(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        return await self._events(request, streaming=True)


class JsSdkCaller:
    """The official @a2a-js/sdk client (a node subprocess per call), given only ``binding``."""

    def __init__(self, url: str, binding: str) -> None:
        self.url = url
        self.binding = binding

    async def _run(self, mode: str, request: dict[str, Any]) -> dict[str, Any]:
        cmd = [node_binary(), str(JS_DRIVER), self.url, self.binding, mode, json.dumps(request)]
        with anyio.fail_after(30):
            done = await anyio.run_process(cmd, cwd=REPO_ROOT, check=False)
        out = done.stdout.decode()
        if done.returncode != 0:
            raise AssertionError(f"{mode} on {self.binding} failed:\n{out}\n{done.stderr.decode()}")
        result: dict[str, Any] = json.loads(out)
        assert result["transport"] == self.binding
        return result

    async def send(self, request: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = (await self._run("send", request))["result"]
        return result

    async def stream(self, request: dict[str, Any]) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = (await self._run("stream", request))["events"]
        return events
