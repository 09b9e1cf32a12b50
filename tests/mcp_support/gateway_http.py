"""The gateway (``agent-runtime mcp-serve --gateway --http PORT``) as a real subprocess, in front
of our SDK-built test server, for tests that drive it with the official client over HTTP."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mcp_support.helpers import TEST_SERVER
from support_processes import free_port, stop_process, wait_for_port

SUPPORT = Path(__file__).resolve().parent


@contextmanager
def gateway_before_test_server(
    tmp_path: Path, *, env: dict[str, str] | None = None, yes: bool = False
) -> Iterator[str]:
    """Yields the gateway's ``/mcp`` URL; its agent (``serve_agent:command_model``) is
    ``front`` and the test server behind is ``test`` (spoken to with the 2025-11-25 handshake,
    so it asks for input mid-call). The test server records its events in ``tmp_path/state``."""
    state = tmp_path / "state"
    state.mkdir(exist_ok=True)
    config = {
        "name": "front",
        "model": {"backend": "serve_agent:command_model"},
        "mcpServers": {
            "test": {
                "command": sys.executable,
                "args": [str(TEST_SERVER)],
                "env": {"MCP_TEST_STATE_DIR": str(state)},
                "protocol": "2025-11-25",
            }
        },
    }
    path = tmp_path / "agent.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "agent_runtime.cli", "mcp-serve", "--gateway"]
    if yes:
        command.append("--yes")
    with open(tmp_path / "gateway.err", "wb") as err:
        proc = subprocess.Popen(
            [*command, "--http", str(port), "--config", str(path)],
            env={
                **os.environ,
                **(env or {}),
                "PYTHONPATH": os.pathsep.join([str(SUPPORT), os.environ.get("PYTHONPATH", "")]),
            },
            stdout=subprocess.DEVNULL,
            stderr=err,
        )
        try:
            wait_for_port(port, proc, timeout_s=60)
            yield f"http://127.0.0.1:{port}/mcp"
        finally:
            stop_process(proc, timeout_s=10)
