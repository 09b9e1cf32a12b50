"""An official ``a2a-sdk`` 1.3 server with an echo agent: the peer our client is tested against.

Run as ``python sdk_echo_server.py PORT`` (``PORT`` may be ``0``: the OS picks one). Once it
listens, it prints ``LISTENING <port>`` on stdout so a test can read the port back.

Behaviour of the echo agent (mirrors the server that produced the wire captures in
``shared/a2a/wire-a2a-sdk-python``):

- ``msg:<text>``   answers with a direct Message ``echo: msg:<text>`` (no task);
- ``slow:<text>``  works for ~30 s (cancellable), then completes;
- ``ask:<text>``   moves the task to INPUT_REQUIRED with the question ``<text>``; the
  follow-up message on that task completes it with artifact ``answer: <reply>``;
- ``fail:<text>``  fails the task with status message ``<text>``;
- ``data:<json>``  completes with an artifact holding one data part (the parsed JSON);
- anything else     completes with artifact ``a1`` = ``echo: `` + the text (two chunks) and
  status message ``done``.
"""

from __future__ import annotations

import asyncio
import json
import socket
import sys

import uvicorn
from a2a.helpers import new_text_message
from a2a.server.agent_execution import AgentExecutor, RequestContext
from a2a.server.events import EventQueue
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.routes import (
    create_agent_card_routes,
    create_jsonrpc_routes,
    create_rest_routes,
)
from a2a.server.tasks import InMemoryTaskStore, TaskUpdater
from a2a.types.a2a_pb2 import (
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentSkill,
    Part,
    Task,
    TaskState,
    TaskStatus,
)
from google.protobuf import struct_pb2
from starlette.applications import Starlette


class EchoExecutor(AgentExecutor):
    """The echo agent; see the module docstring for its scripted behaviours."""

    async def execute(self, context: RequestContext, event_queue: EventQueue) -> None:
        text = context.get_user_input()
        message = context.message
        assert message is not None
        task_id = context.task_id or ""
        context_id = context.context_id or ""
        current = context.current_task

        if text.startswith("msg:") and current is None:
            await event_queue.enqueue_event(
                new_text_message(f"echo: {text}", context_id=context_id)
            )
            return

        if current is None:
            await event_queue.enqueue_event(
                Task(
                    id=task_id,
                    context_id=context_id,
                    status=TaskStatus(state=TaskState.TASK_STATE_SUBMITTED),
                    history=[message],
                )
            )
        updater = TaskUpdater(event_queue, task_id, context_id)
        await updater.start_work()

        if current is not None and current.status.state == TaskState.TASK_STATE_INPUT_REQUIRED:
            await updater.add_artifact(
                [Part(text=f"answer: {text}")], artifact_id="a1", name="answer"
            )
            await updater.complete(new_text_message("done", context_id=context_id, task_id=task_id))
            return
        if text.startswith("slow:"):
            await asyncio.sleep(30)
        if text.startswith("ask:"):
            question = text.removeprefix("ask:")
            await updater.requires_input(
                new_text_message(question, context_id=context_id, task_id=task_id)
            )
            return
        if text.startswith("fail:"):
            await updater.failed(
                new_text_message(text.removeprefix("fail:"), context_id=context_id, task_id=task_id)
            )
            return
        if text.startswith("data:"):
            value = struct_pb2.Value()
            _fill_value(value, json.loads(text.removeprefix("data:")))
            await updater.add_artifact([Part(data=value)], artifact_id="d1", name="data")
            await updater.complete()
            return
        await updater.add_artifact([Part(text="echo: ")], artifact_id="a1", name="echo")
        await updater.add_artifact(
            [Part(text=text)], artifact_id="a1", append=True, last_chunk=True
        )
        await updater.complete(new_text_message("done", context_id=context_id, task_id=task_id))

    async def cancel(self, context: RequestContext, event_queue: EventQueue) -> None:
        updater = TaskUpdater(event_queue, context.task_id or "", context.context_id or "")
        await updater.cancel()


def _fill_value(target: struct_pb2.Value, value: object) -> None:
    from google.protobuf.json_format import ParseDict

    ParseDict(value, target)


def build_card(base_url: str) -> AgentCard:
    return AgentCard(
        name="Echo Agent",
        description="Echoes text back (a2a-sdk 1.3.0 test server)",
        supported_interfaces=[
            AgentInterface(
                url=f"{base_url}/a2a/jsonrpc", protocol_binding="JSONRPC", protocol_version="1.0"
            ),
            AgentInterface(
                url=f"{base_url}/a2a/rest", protocol_binding="HTTP+JSON", protocol_version="1.0"
            ),
        ],
        version="0.1.0",
        capabilities=AgentCapabilities(streaming=True, push_notifications=False),
        default_input_modes=["text/plain"],
        default_output_modes=["text/plain"],
        skills=[
            AgentSkill(
                id="echo",
                name="Echo",
                description="Echo the input",
                tags=["echo"],
                examples=["hello"],
            )
        ],
    )


def build_app(base_url: str, *, rest_first: bool = False) -> Starlette:
    card = build_card(base_url)
    if rest_first:
        interfaces = list(card.supported_interfaces)
        del card.supported_interfaces[:]
        card.supported_interfaces.extend(reversed(interfaces))
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(), task_store=InMemoryTaskStore(), agent_card=card
    )
    routes = [
        *create_agent_card_routes(card),
        *create_jsonrpc_routes(handler, "/a2a/jsonrpc"),
        *create_rest_routes(handler, path_prefix="/a2a/rest"),
    ]
    return Starlette(routes=routes)


def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    rest_first = "--rest-first" in sys.argv
    # IPPROTO_TCP, as our node's socket: asyncio then sets TCP_NODELAY on accepted connections,
    # so no response waits ~40 ms on Nagle + delayed ACK (the benchmark compares A2A code).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(2048)
    port = sock.getsockname()[1]
    app = build_app(f"http://127.0.0.1:{port}", rest_first=rest_first)
    config = uvicorn.Config(app, log_level="warning", access_log=False)
    server = uvicorn.Server(config)
    print(f"LISTENING {port}", flush=True)
    server.run(sockets=[sock])


if __name__ == "__main__":
    main()
