"""Where an MCP server lives, and the desktop hosts' ``mcpServers`` JSON that lists them.

The same file format that desktop hosts read (``{"mcpServers": {"name": {...}}}``) works here,
so a user can point the runtime at the config they already have. Every string in an entry may
use ``${VAR}`` or ``${VAR:-default}``; a missing variable without a default is an error that
names the server and the variable, never a silently empty string.

This module has no dependency on the MCP SDK, so loading and checking a config stays cheap.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent_runtime.errors import ConfigError


@dataclass(frozen=True)
class StdioServerConfig:
    """A server started as a subprocess that speaks MCP on its stdin and stdout.

    ``env`` is added to a small safe subset of the parent's environment (what the SDK passes:
    ``PATH``, ``HOME`` ...), not to all of it, so secrets in the host's environment do not leak
    into every server.
    """

    command: str
    args: list[str] = field(default_factory=list)
    env: dict[str, str] | None = None
    cwd: str | None = None


@dataclass(frozen=True)
class HttpServerConfig:
    """A server reached over streamable HTTP at ``url``.

    ``auth`` is an ``httpx2.Auth`` (the HTTP client the MCP SDK uses), e.g. an OAuth provider;
    it is typed loosely so that this module does not import the SDK.
    """

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    auth: Any = None


ServerConfig = StdioServerConfig | HttpServerConfig

_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")
_HTTP_TYPES = {"http", "streamable-http", "streamable_http", "streamableHttp"}
_STDIO_KEYS = {"type", "command", "args", "env", "cwd", "disabled"}
_HTTP_KEYS = {"type", "url", "headers", "disabled"}
# Keys some hosts write for their own use; accepted and ignored.
_HOST_KEYS = {"description", "timeout", "autoApprove", "alwaysAllow", "transportType"}


def _expand(value: str, server: str, where: str, environ: Mapping[str, str]) -> str:
    def replace(match: re.Match[str]) -> str:
        var, default = match.group(1), match.group(2)
        if var in environ:
            return environ[var]
        if default is not None:
            return default
        raise ConfigError(
            f"MCP server {server!r}: {where} uses ${{{var}}}, but {var} is not set "
            f"(set it, or write ${{{var}:-default}})"
        )

    return _VAR.sub(replace, value)


def _string(
    entry: Mapping[str, Any], key: str, server: str, environ: Mapping[str, str]
) -> str | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, str):
        raise ConfigError(
            f"MCP server {server!r}: field {key!r} must be a string, got {type(value).__name__}"
        )
    return _expand(value, server, key, environ)


def _string_list(
    entry: Mapping[str, Any], key: str, server: str, environ: Mapping[str, str]
) -> list[str]:
    value = entry.get(key, [])
    if not isinstance(value, list) or not all(isinstance(item, str) for item in value):
        raise ConfigError(f"MCP server {server!r}: field {key!r} must be a list of strings")
    return [_expand(item, server, f"{key}[{i}]", environ) for i, item in enumerate(value)]


def _string_map(
    entry: Mapping[str, Any], key: str, server: str, environ: Mapping[str, str]
) -> dict[str, str] | None:
    value = entry.get(key)
    if value is None:
        return None
    if not isinstance(value, dict):
        raise ConfigError(f"MCP server {server!r}: field {key!r} must be an object of strings")
    out: dict[str, str] = {}
    for k, v in value.items():
        if not isinstance(v, str | int | float | bool) or isinstance(v, bool):
            raise ConfigError(
                f"MCP server {server!r}: field {key}.{k} must be a string, got {type(v).__name__}"
            )
        out[str(k)] = _expand(str(v), server, f"{key}.{k}", environ)
    return out


def parse_server_entry(
    server: str, entry: Any, environ: Mapping[str, str] | None = None
) -> ServerConfig:
    """Turn one ``mcpServers`` entry into a config, expanding variables from ``environ``."""
    env_source = os.environ if environ is None else environ
    if not isinstance(entry, dict):
        raise ConfigError(f"MCP server {server!r}: entry must be an object")
    kind = entry.get("type")
    if kind is not None and not isinstance(kind, str):
        raise ConfigError(f"MCP server {server!r}: field 'type' must be a string")
    if kind == "sse":
        raise ConfigError(
            f"MCP server {server!r}: type 'sse' (the deprecated HTTP+SSE transport) is not "
            "supported; use the server's streamable HTTP endpoint with type 'http'"
        )
    if kind is not None and kind != "stdio" and kind not in _HTTP_TYPES:
        raise ConfigError(
            f"MCP server {server!r}: unknown type {kind!r} (expected 'stdio' or 'http')"
        )
    is_http = kind in _HTTP_TYPES or (kind is None and "url" in entry)
    allowed = (_HTTP_KEYS if is_http else _STDIO_KEYS) | _HOST_KEYS
    unknown = sorted(set(entry) - allowed)
    if unknown:
        raise ConfigError(
            f"MCP server {server!r}: unknown field {unknown[0]!r} for a "
            f"{'http' if is_http else 'stdio'} server (allowed: {', '.join(sorted(allowed))})"
        )
    if is_http:
        url = _string(entry, "url", server, env_source)
        if not url:
            raise ConfigError(f"MCP server {server!r}: field 'url' is required for an http server")
        if not url.startswith(("http://", "https://")):
            raise ConfigError(
                f"MCP server {server!r}: field 'url' must be an http(s) URL, got {url!r}"
            )
        return HttpServerConfig(
            url=url, headers=_string_map(entry, "headers", server, env_source) or {}
        )
    command = _string(entry, "command", server, env_source)
    if not command:
        raise ConfigError(
            f"MCP server {server!r}: field 'command' is required (or give 'url' for an http server)"
        )
    return StdioServerConfig(
        command=command,
        args=_string_list(entry, "args", server, env_source),
        env=_string_map(entry, "env", server, env_source),
        cwd=_string(entry, "cwd", server, env_source),
    )


def load_mcp_config(
    source: Mapping[str, Any] | str | Path, environ: Mapping[str, str] | None = None
) -> dict[str, ServerConfig]:
    """Read a desktop-host style ``{"mcpServers": {...}}`` config into server configs by name.

    ``source`` is the parsed JSON, or a path to the file. Entries with ``"disabled": true`` are
    left out. ``environ`` (default ``os.environ``) supplies ``${VAR}`` values. Every problem
    raises ``ConfigError`` naming the server and the field.
    """
    if isinstance(source, str | Path):
        path = Path(source)
        try:
            data: Any = json.loads(path.read_text(encoding="utf-8"))
        except OSError as exc:
            raise ConfigError(f"cannot read MCP config {str(path)!r}: {exc}") from exc
        except json.JSONDecodeError as exc:
            raise ConfigError(
                f"MCP config {str(path)!r} is not valid JSON: line {exc.lineno} "
                f"column {exc.colno}: {exc.msg}"
            ) from exc
    else:
        data = source
    if not isinstance(data, Mapping):
        raise ConfigError("MCP config must be a JSON object with an 'mcpServers' object")
    servers = data.get("mcpServers")
    if not isinstance(servers, Mapping):
        raise ConfigError("MCP config must have an 'mcpServers' object mapping names to servers")
    out: dict[str, ServerConfig] = {}
    for name, entry in servers.items():
        if not isinstance(name, str) or not name:
            raise ConfigError(f"MCP server name must be a non-empty string, got {name!r}")
        if isinstance(entry, dict):
            disabled = entry.get("disabled", False)
            if not isinstance(disabled, bool):
                raise ConfigError(f"MCP server {name!r}: field 'disabled' must be true or false")
            if disabled:
                continue
        out[name] = parse_server_entry(name, entry, environ)
    return out
