"""The desktop-host ``mcpServers`` config loader."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agent_runtime.errors import ConfigError
from agent_runtime.protocols.mcp import HttpServerConfig, StdioServerConfig, load_mcp_config


def test_stdio_and_http_entries_become_configs_named_by_key() -> None:
    configs = load_mcp_config(
        {
            "mcpServers": {
                "files": {
                    "command": "npx",
                    "args": ["-y", "server-filesystem", "/data"],
                    "env": {"LOG": "1"},
                    "cwd": "/srv",
                },
                "remote": {"url": "https://example.com/mcp", "headers": {"X-Team": "a"}},
                "typed": {"type": "streamable-http", "url": "http://127.0.0.1:9/mcp"},
                "explicit": {"type": "stdio", "command": "srv"},
            }
        },
        environ={},
    )
    assert list(configs) == ["files", "remote", "typed", "explicit"]
    assert configs["files"] == StdioServerConfig(
        command="npx", args=["-y", "server-filesystem", "/data"], env={"LOG": "1"}, cwd="/srv"
    )
    assert configs["remote"] == HttpServerConfig(
        url="https://example.com/mcp", headers={"X-Team": "a"}
    )
    assert isinstance(configs["typed"], HttpServerConfig)
    assert configs["explicit"] == StdioServerConfig(command="srv")


def test_disabled_entries_are_left_out() -> None:
    configs = load_mcp_config(
        {"mcpServers": {"on": {"command": "a"}, "off": {"command": "b", "disabled": True}}},
        environ={},
    )
    assert list(configs) == ["on"]


def test_variables_expand_in_every_string_with_defaults() -> None:
    environ = {"HOME_DIR": "/home/ada", "TOKEN": "s3cret", "PORT": "8123"}
    configs = load_mcp_config(
        {
            "mcpServers": {
                "local": {
                    "command": "${HOME_DIR}/bin/srv",
                    "args": ["--root", "${HOME_DIR}/data", "--level=${LEVEL:-info}"],
                    "env": {"API_KEY": "${TOKEN}", "MODE": "${MODE:-fast}"},
                    "cwd": "${WORK:-/tmp}",
                },
                "remote": {
                    "url": "http://127.0.0.1:${PORT}/mcp",
                    "headers": {"Authorization": "Bearer ${TOKEN}", "X-Empty": "${NONE:-}"},
                },
            }
        },
        environ=environ,
    )
    local = configs["local"]
    assert isinstance(local, StdioServerConfig)
    assert local.command == "/home/ada/bin/srv"
    assert local.args == ["--root", "/home/ada/data", "--level=info"]
    assert local.env == {"API_KEY": "s3cret", "MODE": "fast"}
    assert local.cwd == "/tmp"
    remote = configs["remote"]
    assert isinstance(remote, HttpServerConfig)
    assert remote.url == "http://127.0.0.1:8123/mcp"
    assert remote.headers == {"Authorization": "Bearer s3cret", "X-Empty": ""}


def test_unset_variable_without_default_names_server_and_variable() -> None:
    with pytest.raises(ConfigError) as info:
        load_mcp_config(
            {"mcpServers": {"github": {"command": "gh-mcp", "env": {"TOKEN": "${GITHUB_TOKEN}"}}}},
            environ={},
        )
    message = str(info.value)
    assert "'github'" in message
    assert "GITHUB_TOKEN" in message


def test_variables_default_to_the_process_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENT_RUNTIME_TEST_VAR", "from-env")
    configs = load_mcp_config({"mcpServers": {"s": {"command": "${AGENT_RUNTIME_TEST_VAR}"}}})
    assert configs["s"] == StdioServerConfig(command="from-env")


@pytest.mark.parametrize(
    ("entry", "fragment"),
    [
        ({"args": ["x"]}, "'command' is required"),
        ({"command": 3}, "'command' must be a string"),
        ({"command": "a", "args": "not-a-list"}, "'args' must be a list of strings"),
        ({"command": "a", "args": [1]}, "'args' must be a list of strings"),
        ({"command": "a", "env": ["A=1"]}, "'env' must be an object"),
        ({"command": "a", "env": {"A": {"nested": 1}}}, "env.A must be a string"),
        ({"command": "a", "disabled": "yes"}, "'disabled' must be true or false"),
        ({"command": "a", "bogus": 1}, "unknown field 'bogus'"),
        ({"url": "ftp://host/mcp"}, "must be an http(s) URL"),
        ({"type": "http"}, "'url' is required"),
        ({"type": "websocket", "url": "ws://x"}, "unknown type 'websocket'"),
        ({"url": "http://h/mcp", "headers": "x"}, "'headers' must be an object"),
        ("npx server", "entry must be an object"),
    ],
)
def test_bad_shapes_name_the_server_and_field(entry: object, fragment: str) -> None:
    with pytest.raises(ConfigError) as info:
        load_mcp_config({"mcpServers": {"broken": entry}}, environ={})
    assert "'broken'" in str(info.value)
    assert fragment in str(info.value)


def test_sse_transport_is_rejected_with_a_clear_reason() -> None:
    with pytest.raises(ConfigError, match="'old'.*'sse'.*not supported"):
        load_mcp_config({"mcpServers": {"old": {"type": "sse", "url": "http://h/sse"}}}, environ={})


def test_file_is_read_and_bad_json_reports_line(tmp_path: Path) -> None:
    good = tmp_path / "mcp.json"
    good.write_text(json.dumps({"mcpServers": {"t": {"command": "srv", "args": ["-v"]}}}))
    assert load_mcp_config(good, environ={}) == {"t": StdioServerConfig("srv", ["-v"])}
    assert load_mcp_config(str(good), environ={}) == {"t": StdioServerConfig("srv", ["-v"])}
    bad = tmp_path / "bad.json"
    bad.write_text('{"mcpServers": {\n  "t": {"command": }\n}}')
    with pytest.raises(ConfigError, match="not valid JSON: line 2"):
        load_mcp_config(bad)
    with pytest.raises(ConfigError, match="cannot read MCP config"):
        load_mcp_config(tmp_path / "missing.json")


def test_config_without_mcp_servers_object_is_rejected() -> None:
    with pytest.raises(ConfigError, match="'mcpServers'"):
        load_mcp_config({"servers": {}})
    with pytest.raises(ConfigError, match="'mcpServers'"):
        load_mcp_config({"mcpServers": ["a"]})
