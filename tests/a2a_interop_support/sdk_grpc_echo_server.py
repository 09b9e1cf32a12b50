"""The official ``a2a-sdk`` 1.3 echo agent served over gRPC (and its card over HTTP).

Run as ``python sdk_grpc_echo_server.py PORT``: the card is served over HTTP on ``PORT`` (0: the
OS picks) and lists the SDK's gRPC server first, then its JSON-RPC endpoint. Prints
``LISTENING <port>`` once both listen. The agent is ``sdk_echo_server.EchoExecutor``.
"""

from __future__ import annotations

import asyncio
import socket
import sys

import grpc.aio
import uvicorn
from a2a.server.request_handlers import DefaultRequestHandler
from a2a.server.request_handlers.grpc_handler import GrpcHandler
from a2a.server.routes import create_agent_card_routes, create_jsonrpc_routes
from a2a.server.tasks import InMemoryTaskStore
from a2a.types import a2a_pb2_grpc
from a2a.types.a2a_pb2 import AgentInterface
from sdk_echo_server import EchoExecutor, build_card
from starlette.applications import Starlette


async def main() -> None:
    port = int(sys.argv[1]) if len(sys.argv) > 1 else 0
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(128)
    port = sock.getsockname()[1]

    grpc_server = grpc.aio.server()
    grpc_port = grpc_server.add_insecure_port("127.0.0.1:0")
    card = build_card(f"http://127.0.0.1:{port}")
    interfaces = [
        AgentInterface(
            url=f"127.0.0.1:{grpc_port}", protocol_binding="GRPC", protocol_version="1.0"
        ),
        card.supported_interfaces[0],  # JSON-RPC
    ]
    del card.supported_interfaces[:]
    card.supported_interfaces.extend(interfaces)
    handler = DefaultRequestHandler(
        agent_executor=EchoExecutor(), task_store=InMemoryTaskStore(), agent_card=card
    )
    a2a_pb2_grpc.add_A2AServiceServicer_to_server(GrpcHandler(handler), grpc_server)
    await grpc_server.start()

    app = Starlette(
        routes=[*create_agent_card_routes(card), *create_jsonrpc_routes(handler, "/a2a/jsonrpc")]
    )
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", access_log=False))
    print(f"LISTENING {port}", flush=True)
    try:
        await server.serve(sockets=[sock])
    finally:
        await grpc_server.stop(None)


if __name__ == "__main__":
    asyncio.run(main())
