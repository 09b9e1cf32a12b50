"""The agent-runtime command and the config file it reads."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from agent_runtime import __version__
from agent_runtime.cli import main
from agent_runtime.config import load_config, local_toolsets
from agent_runtime.errors import ConfigError

TOOLS_MODULE = '''
from agent_runtime import tool

@tool
def shout(text: str) -> str:
    """Upper-case a text.

    More detail on a second paragraph.
    """
    return text.upper()

@tool(name="count_words")
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
