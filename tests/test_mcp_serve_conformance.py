"""The MCP conformance suite's server scenarios against ``mcp-serve --gateway``.

The gateway fronts the SDK's "everything" server (npm ``@modelcontextprotocol/server-everything``,
over stdio); the same suite (npm ``@modelcontextprotocol/conformance`` 0.1.16, server mode, over
streamable HTTP) runs against the bare "everything" server. Every scenario the bare server
passes, the gateway must pass too. (Neither passes the scenarios that need the suite's fixture
tools, such as ``test_tool_with_progress``: "everything" does not have them.)
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from mcp_support.helpers import NODE_MODULES, everything_js, node
from support_processes import free_port, stop_process, wait_for_port

HARNESS = NODE_MODULES / "@modelcontextprotocol" / "conformance" / "dist" / "index.js"
_LINE = re.compile(r"^(?P<mark>[✓✗]) (?P<name>\S+): \d+ passed, \d+ failed", re.MULTILINE)


@contextmanager
def _serving(args: list[str], port: int, env: dict[str, str]) -> Iterator[str]:
    proc = subprocess.Popen(
        args, env={**os.environ, **env}, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    try:
        wait_for_port(port, proc, timeout_s=60)
        yield f"http://127.0.0.1:{port}/mcp"
    finally:
        stop_process(proc, timeout_s=10)


def _scenarios(url: str) -> dict[str, bool]:
    run = subprocess.run(
        [node(), str(HARNESS), "server", "--url", url],
        capture_output=True,
        text=True,
        timeout=300,
        cwd=NODE_MODULES.parent,
    )
    results = {m["name"]: m["mark"] == "✓" for m in _LINE.finditer(run.stdout)}
    assert results, f"the harness reported no scenarios:\n{run.stdout[-2000:]}{run.stderr[-2000:]}"
    return results


def test_gateway_passes_every_scenario_the_bare_everything_server_passes(tmp_path: Path) -> None:
    port = free_port()
    with _serving([node(), everything_js(), "streamableHttp"], port, {"PORT": str(port)}) as url:
        bare = _scenarios(url)
    config = {
        "name": "gateway",
        "model": {"backend": "schema"},
        "mcpServers": {
            "everything": {
                "command": node(),
                "args": [everything_js(), "stdio"],
                "protocol": "2025-11-25",
            }
        },
    }
    path = tmp_path / "gateway.json"
    path.write_text(json.dumps(config), encoding="utf-8")
    port = free_port()
    command = [sys.executable, "-m", "agent_runtime.cli", "mcp-serve", "--gateway"]
    with _serving([*command, "--http", str(port), "--config", str(path)], port, {}) as url:
        gateway = _scenarios(url)
    passed_bare = {name for name, ok in bare.items() if ok}
    passed_gateway = {name for name, ok in gateway.items() if ok}
    # The suite's basics must be among them, or the comparison says nothing.
    assert {
        "server-initialize",
        "ping",
        "tools-list",
        "resources-list",
        "prompts-list",
    } <= passed_bare
    assert passed_bare - passed_gateway == set(), (bare, gateway)
    assert set(gateway) == set(bare)
