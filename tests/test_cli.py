"""The agent-runtime command and the config file it reads."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from agent_runtime import __version__
from agent_runtime.cli import main
from agent_runtime.config import load_config, local_toolsets
from agent_runtime.errors import ConfigError

TOOLS_MODULE = '''
from agent_runtime import tool

@tool(read_only=True)
def shout(text: str) -> str:
    """Upper-case a text.

    More detail on a second paragraph.
    """
    return text.upper()

@tool(name="count_words", read_only=True)
def words(text: str) -> int:
    """Count words."""
    return len(text.split())

all_tools = [shout, words]
'''


@pytest.fixture
def config_dir(tmp_path: Path) -> Path:
    (tmp_path / "my_cli_tools.py").write_text(TOOLS_MODULE)
    config = {
        "name": "cli-test",
        "model": {"backend": "schema"},
        "tools": ["my_cli_tools:all_tools"],
    }
    (tmp_path / "agent.json").write_text(json.dumps(config))
    return tmp_path


def _cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "agent_runtime.cli", *args],
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_version_flag_prints_version() -> None:
    done = _cli("--version")
    assert done.returncode == 0
    assert done.stdout.strip() == f"agent-runtime {__version__}"


def test_tools_lists_name_origin_and_one_line_description(config_dir: Path) -> None:
    done = _cli("tools", "--config", str(config_dir / "agent.json"))
    assert done.returncode == 0, done.stderr
    lines = done.stdout.strip().splitlines()
    assert len(lines) == 2
    assert lines[0].split()[:2] == ["shout", "local"]
    assert lines[0].endswith("Upper-case a text.")
    assert lines[1].split()[:2] == ["count_words", "local"]


def test_tools_json_output_has_schemas(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tools", "--config", str(config_dir / "agent.json"), "--json"]) == 0
    specs = json.loads(capsys.readouterr().out)
    assert specs[0]["input_schema"]["required"] == ["text"]


def test_run_executes_the_configured_agent(
    config_dir: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["run", "--config", str(config_dir / "agent.json"), "hi"]) == 0
    out = capsys.readouterr().out
    assert "tool shout:" in out and "tool count_words:" in out


def test_missing_config_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["tools", "--config", str(tmp_path / "nope.json")]) == 1
    assert "does not exist" in capsys.readouterr().err


def test_malformed_config_names_the_position(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"name": "x",,}')
    with pytest.raises(ConfigError, match="line 1 column 14"):
        load_config(path)


def test_bad_field_type_names_the_field(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="limits.max_steps"):
        load_config({"limits": {"max_steps": "many"}})


def test_bad_tool_reference_is_a_clear_error() -> None:
    with pytest.raises(ConfigError, match="not of the form"):
        local_toolsets(["no_colon_here"])
    with pytest.raises(ConfigError, match="cannot import 'surely_missing_module'"):
        local_toolsets(["surely_missing_module:x"])


def test_no_subcommand_prints_help(capsys: pytest.CaptureFixture[str]) -> None:
    assert main([]) == 2
    assert "tools" in capsys.readouterr().out


def test_import_agent_runtime_stays_light() -> None:
    code = (
        "import sys, agent_runtime\n"
        "from agent_runtime import Agent, tool\n"
        "heavy = [m for m in ('torch', 'transformers', 'mcp', 'uvicorn', 'starlette') if m in sys.modules]\n"
        "print(heavy)\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "[]", done.stdout + done.stderr


def test_tools_lists_mcp_servers_from_the_same_config(config_dir: Path) -> None:
    config = json.loads((config_dir / "agent.json").read_text())
    config["mcpServers"] = {
        "time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]},
        "off": {"command": "does-not-matter", "disabled": True},
        "broken": {"command": sys.executable, "args": ["-c", "import sys; sys.exit('no luck')"]},
    }
    (config_dir / "mcp.json").write_text(json.dumps(config))
    done = _cli("tools", "--config", str(config_dir / "mcp.json"))
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:2] for line in done.stdout.strip().splitlines()]
    assert ["time__get_current_time", "mcp:time"] in rows
    assert ["time__convert_time", "mcp:time"] in rows
    assert not any(name.startswith("off__") for name, _ in rows)
    assert "broken" in done.stderr and "no luck" in done.stderr


def test_each_failed_mcp_server_is_reported_once(config_dir: Path) -> None:
    config = json.loads((config_dir / "agent.json").read_text())
    config["mcpServers"] = {
        "broken": {"command": sys.executable, "args": ["-c", "import sys; sys.exit('no luck')"]},
        "missing": {"command": str(config_dir / "no-such-server")},
    }
    (config_dir / "mcp.json").write_text(json.dumps(config))
    for command in ("tools", "run"):
        args = [command, "--config", str(config_dir / "mcp.json")]
        done = _cli(*args, *(["hi"] if command == "run" else []))
        assert done.returncode == 0, done.stderr
        for name in ("broken", "missing"):
            lines = [line for line in done.stderr.splitlines() if f"'{name}'" in line]
            assert len(lines) == 1, (command, done.stderr)
            assert lines[0].count(name) == 1, (command, lines[0])  # the name, said once
            assert lines[0].startswith("agent-runtime: warning: ")
        assert "no luck" in done.stderr and "no-such-server" in done.stderr


@pytest.mark.parametrize("missing", ["no model block", "no backend key"])
def test_config_without_a_model_runs_the_embedded_model_and_no_tool_blindly(
    config_dir: Path, missing: str
) -> None:
    """A config that names no model gets the shipped local model, not a test model; a tool not
    marked read-only still needs approval, which no one can give without a terminal."""
    (config_dir / "marking_writer.py").write_text(MARKING_WRITER_MODULE)
    config: dict[str, object] = {
        "tools": ["marking_writer:write_file"],
        "limits": {"max_steps": 2},
    }
    if missing == "no backend key":
        config["model"] = {"settings": {"max_tokens": 24}}
    (config_dir / "nomodel.json").write_text(json.dumps(config))
    done = subprocess.run(
        [sys.executable, "-m", "agent_runtime.cli", "-v", "run", "--config", "nomodel.json", "hi"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=config_dir,
        stdin=subprocess.DEVNULL,
    )
    assert "agent-runtime: info: model: embedded" in done.stderr, done.stderr
    assert "Traceback" not in done.stderr
    # Whatever the model answers: done, or stopped by the step limit after a denied call.
    assert done.returncode == 0 or "agent-runtime: error:" in done.stderr, done.stderr
    assert not (config_dir / "write_file_ran").exists()


MARKING_WRITER_MODULE = '''
from pathlib import Path

from agent_runtime import tool


@tool
def write_file(path: str, text: str) -> str:
    """Write a file."""
    Path(__file__).with_name("write_file_ran").write_text(path)
    return "written"
'''

SLOW_MODULE = '''
import time
from pathlib import Path

import anyio

from agent_runtime import tool


@tool(read_only=True)
async def wait_async(tag: str) -> str:
    """Wait a long time, cancellably."""
    Path("started").write_text("yes")
    await anyio.sleep(300)
    return "done"


@tool(read_only=True)
def wait_sync(tag: str) -> str:
    """Wait a long time in a thread Python cannot stop."""
    Path("started").write_text("yes")
    time.sleep(300)
    return "done"
'''


def _children(pid: int) -> list[int]:
    """The processes whose parent is ``pid`` (from /proc)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        parent = int(stat.rpartition(")")[2].split()[1])
        if parent == pid:
            found.append(int(entry.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.parametrize("tool_name", ["wait_async", "wait_sync"])
def test_ctrl_c_ends_a_run_with_130_and_no_traceback(tmp_path: Path, tool_name: str) -> None:
    (tmp_path / "slow_tools.py").write_text(SLOW_MODULE)
    config = {
        "model": {"backend": "schema", "call_tools": [tool_name]},
        "tools": [f"slow_tools:{tool_name}"],
        "mcpServers": {"time": {"command": sys.executable, "args": ["-m", "mcp_server_time"]}},
    }
    (tmp_path / "slow.json").write_text(json.dumps(config))
    proc = subprocess.Popen(
        [sys.executable, "-m", "agent_runtime.cli", "run", "--config", "slow.json", "go"],
        cwd=tmp_path,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not (tmp_path / "started").exists():
            assert proc.poll() is None, proc.communicate()
            time.sleep(0.05)
        servers = _children(proc.pid)
        assert servers, "the MCP server should be running"
        os.kill(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err
    assert err.endswith("agent-runtime: interrupted\n")
    for noise in ("Traceback", "KeyboardInterrupt", "CancelledError", "Exception"):
        assert noise not in err
    assert out == ""
    deadline = time.monotonic() + 10
    while any(_alive(pid) for pid in servers) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not any(_alive(pid) for pid in servers), "the run's MCP server outlived it"


def test_tools_reads_vs_code_servers_shape_beside_the_config(config_dir: Path) -> None:
    # A relative envFile resolves beside the config file, not in the CLI's working directory.
    (config_dir / "time.env").write_text("TZ=Asia/Tokyo\n")
    config = json.loads((config_dir / "agent.json").read_text())
    config["servers"] = {
        "time": {
            "type": "stdio",
            "command": sys.executable,
            "args": ["-m", "mcp_server_time"],
            "envFile": "time.env",
        }
    }
    (config_dir / "vscode.json").write_text(json.dumps(config))
    done = _cli("tools", "--config", str(config_dir / "vscode.json"))
    assert done.returncode == 0, done.stderr
    rows = [line.split()[:2] for line in done.stdout.strip().splitlines()]
    assert ["time__get_current_time", "mcp:time"] in rows
