"""A node process for restart tests: ``python node_main.py DB_PATH`` serves the echo agent on a
free loopback port with its SQLite store at DB_PATH and prints ``LISTENING <port>``."""

from __future__ import annotations

import sys
from pathlib import Path

# Run as a script, this folder comes first on sys.path; the tests folder is what we need.
sys.path[0] = str(Path(__file__).resolve().parent.parent)

from a2a_support.agents import echo_agent  # noqa: E402
from agent_runtime.protocols.a2a.serve import run_a2a_node  # noqa: E402


def main() -> None:
    config = {"a2a": {"store": {"kind": "sqlite", "path": sys.argv[1]}, "version": "9.9.9"}}
    run_a2a_node(
        config,
        echo_agent(),
        "127.0.0.1",
        0,
        on_listening=lambda port: print(f"LISTENING {port}", flush=True),
    )


if __name__ == "__main__":
    main()
