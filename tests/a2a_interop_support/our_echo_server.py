"""Our A2A node serving the echo agent (``echo_model.EchoModel``), runnable as a subprocess.

``python our_echo_server.py PORT [--store PATH|DSN | --memory] [--bearer TOKEN=PRINCIPAL ...]``
prints ``LISTENING <port>`` once it accepts connections. With ``--store`` the tasks live in that
SQLite file, or, for a ``postgresql://`` (or ``postgres://``) DSN, in that PostgreSQL database
(the node's PostgreSQL store), so a restarted server still knows them. Without ``--store`` (or
with ``--memory``) they live in memory.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from a2a_interop_support.echo_model import EchoModel  # noqa: E402
from agent_runtime.agent import Agent  # noqa: E402
from agent_runtime.protocols.a2a.auth import A2AAuthConfig  # noqa: E402
from agent_runtime.protocols.a2a.push import PushConfig  # noqa: E402
from agent_runtime.protocols.a2a.serve import serve  # noqa: E402
from agent_runtime.protocols.a2a.server import create_a2a_app  # noqa: E402
from agent_runtime.protocols.a2a.sqlite_store import SQLiteTaskStore  # noqa: E402
from agent_runtime.protocols.a2a.store import InMemoryTaskStore, TaskStore  # noqa: E402

POSTGRES_SCHEMES = ("postgresql://", "postgres://")


def open_store(memory: bool, store: str | None) -> TaskStore:
    """The task store the options name: memory, a PostgreSQL DSN, or a SQLite file path."""
    if memory or not store:
        return InMemoryTaskStore()
    if store.startswith(POSTGRES_SCHEMES):
        # Imported only here: asyncpg is needed for this store alone.
        from agent_runtime.protocols.a2a.postgres_store import PostgresTaskStore

        return PostgresTaskStore(store)
    return SQLiteTaskStore(store)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("port", type=int, nargs="?", default=0)
    parser.add_argument("--store", default=None, help="a SQLite file, or a postgresql:// DSN")
    parser.add_argument("--memory", action="store_true", help="tasks in memory (the default)")
    parser.add_argument("--bearer", action="append", default=[])
    args = parser.parse_args()
    agent = Agent(EchoModel(), name="Echo Agent", description="Echoes text back (agent-runtime)")
    store = open_store(args.memory, args.store)
    auth = None
    if args.bearer:
        auth = A2AAuthConfig(bearer_tokens=dict(item.split("=", 1) for item in args.bearer))
    app = create_a2a_app(agent, store=store, auth=auth, push=PushConfig(allow_private_urls=True))

    def listening(port: int) -> None:
        print(f"LISTENING {port}", flush=True)

    serve(app, "127.0.0.1", args.port, on_listening=listening)


if __name__ == "__main__":
    main()
