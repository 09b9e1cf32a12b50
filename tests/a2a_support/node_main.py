"""A node process for restart and multi-node tests: ``python node_main.py STORE [OPTIONS_JSON]``.

Serves the echo agent on a free loopback port and prints ``LISTENING <port>``. ``STORE`` is a
SQLite file path, or a PostgreSQL DSN (``postgresql://...``); ``OPTIONS_JSON`` adds keys to the
store config (e.g. ``{"node_id": "a", "heartbeat_s": 0.2, "lease_s": 1}``), except two:
``"agent": "gate"`` serves :class:`GateAgent` instead, and ``"push"`` is the node's push config.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

# Run as a script, this folder comes first on sys.path; the tests folder is what we need.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from a2a_support.agents import echo_agent  # noqa: E402
from agent_runtime.protocols.a2a.reply import TaskReply  # noqa: E402
from agent_runtime.protocols.a2a.request_context import RequestContext  # noqa: E402
from agent_runtime.protocols.a2a.serve import run_a2a_node  # noqa: E402


class GateAgent:
    """``approve:<what>`` waits in AUTH_REQUIRED (``ask_auth``) for the caller's answer, then
    says which node it resumed on; anything else is answered by a new call, which says so."""

    name = "gate"
    description = "Asks for approval, then goes on"

    def __init__(self, node: str) -> None:
        self.node = node

    async def execute(self, context: RequestContext, reply: TaskReply) -> None:
        text = context.text
        if text.startswith("approve:"):
            what = text.removeprefix("approve:")
            answer = await reply.ask_auth(f"approve {what}?")
            await reply.status(f"resumed on {self.node}")
            await reply.complete(f"{answer.text}: {what} done on {self.node}")
            return
        await reply.complete(f"new call on {self.node}: {text}")


def main() -> None:
    target = sys.argv[1]
    store: dict[str, Any]
    if target.startswith("postgresql://"):
        store = {"kind": "postgres", "dsn": target}
    else:
        store = {"kind": "sqlite", "path": target}
    options: dict[str, Any] = json.loads(sys.argv[2]) if len(sys.argv) > 2 else {}
    agent: Any = (
        GateAgent(str(options.get("node_id"))) if options.pop("agent", "") == "gate" else None
    )
    push = options.pop("push", None)
    store.update(options)
    config: dict[str, Any] = {"a2a": {"store": store, "version": "9.9.9"}}
    if push is not None:
        config["a2a"]["push"] = push
    run_a2a_node(
        config,
        agent or echo_agent(),
        "127.0.0.1",
        0,
        on_listening=lambda port: print(f"LISTENING {port}", flush=True),
    )


if __name__ == "__main__":
    main()
