"""The runtime's config file, and the composition root that turns it into live parts.

One JSON file describes an agent: its model, instructions, limits, local Python tools
(``"module:attribute"``), MCP servers (the ``mcpServers`` object desktop hosts use, read as is),
A2A peers, and the A2A node it serves. ``build_agent(load_config(path))`` is the whole agent a
file describes, for the CLI and for library users alike; ``build_model``, ``build_toolsets``
and the other ``build_*`` functions are its parts.

This is the one core module allowed to import ``tools/``, ``protocols/`` and ``model/`` (their
toolsets, models and the A2A node); it does so lazily, only for the sections a config uses. A
config that names no model gets the embedded one (``agent_runtime.model.embedded``), a real
local model shipped with the package.
"""

from __future__ import annotations

import importlib
import json
import logging
import sys
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .backend import ModelBackend, ModelSettings
from .errors import ConfigError
from .limits import UsageLimits
from .policy import ApprovalCallback, ToolPolicy
from .toolset import Toolset, ToolsetProvider

if TYPE_CHECKING:
    from .agent import Agent

log = logging.getLogger("agent_runtime.config")

ElicitationCallback = Callable[[str, dict[str, Any]], Awaitable[dict[str, Any] | None]]
"""``(message, requested_schema) -> answer or None``: asks someone for what an MCP server
requests (the CLI prompts at the terminal); ``None`` declines."""


class ModelConfig(BaseModel):
    model_config = ConfigDict(extra="allow")

    backend: str | None = None
    """``embedded`` (the default, also when no backend is named: the small MoE shipped with
    the package, run in this process; options ``threads``, ``dtype``, ``device``,
    ``constrain``), ``local`` (a checkpoint folder run in this process: options ``path``,
    ``dtype``, ``threads``, ``device``, ``chat_format``), ``schema`` (no LLM, for testing: calls
    the read-only tools with schema-valid arguments; ``call_destructive`` the others too),
    ``openai`` (an OpenAI-compatible server: options ``base_url``, ``model``, ``api_key_env``
    ...) or ``module:factory``."""
    settings: dict[str, Any] = Field(default_factory=dict)
    """Default ``ModelSettings`` of every request (``max_tokens``, ``temperature``,
    ``tool_choice`` ...)."""


class LimitsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    max_steps: int | None = 25
    max_tool_calls: int | None = None
    max_total_tokens: int | None = None


class PolicyConfig(BaseModel):
    """Which tools run without asking: shell-style patterns over the names the model sees
    (``time__*``). ``deny`` wins, then ``ask``, then ``allow``; a tool no pattern names runs
    if it is marked read-only and is asked about otherwise."""

    model_config = ConfigDict(extra="forbid")

    allow: list[str] = Field(default_factory=list)
    deny: list[str] = Field(default_factory=list)
    ask: list[str] = Field(default_factory=list)


class RuntimeConfig(BaseModel):
    model_config = ConfigDict(extra="allow", populate_by_name=True)

    name: str = "agent"
    description: str = ""
    instructions: str | None = None
    model: ModelConfig = Field(default_factory=ModelConfig)
    limits: LimitsConfig = Field(default_factory=LimitsConfig)
    policy: PolicyConfig = Field(default_factory=PolicyConfig)
    tools: list[str] = Field(default_factory=list)
    mcp_servers: dict[str, Any] = Field(default_factory=dict, alias="mcpServers")
    a2a_peers: dict[str, Any] = Field(default_factory=dict, alias="a2aPeers")
    a2a: dict[str, Any] = Field(default_factory=dict)
    roots: list[str] = Field(default_factory=list)
    """Folders offered to MCP servers as roots (relative to the config file)."""
    base_dir: Path = Path(".")


def load_config(source: str | Path | dict[str, Any]) -> RuntimeConfig:
    """Read a config file (or dict); errors name the file and the bad field."""
    where = "<dict>"
    base = Path(".")
    if isinstance(source, dict):
        data = source
    else:
        path = Path(source)
        where = str(path)
        base = path.resolve().parent
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigError(f"config file {where} does not exist") from None
        except json.JSONDecodeError as err:
            raise ConfigError(
                f"config file {where} is not valid JSON: {err.msg} at line {err.lineno} "
                f"column {err.colno}"
            ) from None
    if not isinstance(data, dict):
        raise ConfigError(f"config {where} must be a JSON object")
    try:
        config = RuntimeConfig.model_validate({**data, "base_dir": base})
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"config {where}: {problems}") from None
    return config


def import_object(reference: str) -> Any:
    """Import ``package.module:attribute`` (the attribute may be dotted)."""
    module_name, _, attribute = reference.partition(":")
    if not module_name or not attribute:
        raise ConfigError(f"'{reference}' is not of the form 'package.module:attribute'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as err:
        raise ConfigError(f"cannot import '{module_name}' for '{reference}': {err}") from None
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"'{reference}': '{part}' not found") from None
    return target


def local_toolsets(references: Sequence[str], base_dir: Path | None = None) -> list[Toolset]:
    """Toolsets for ``"tools": [...]`` entries: a Toolset, an @tool function, or a list.

    Modules are imported as usual, and also from the config file's folder (``base_dir``), so a
    config can name tools that sit beside it.
    """
    from agent_runtime.tools import FunctionToolset

    toolsets: list[Toolset] = []
    functions = FunctionToolset(name="local")
    folder = str(base_dir.resolve()) if base_dir is not None else None
    if folder is not None and folder not in sys.path:
        sys.path.append(folder)
    for reference in references:
        target = import_object(reference)
        items = target if isinstance(target, (list, tuple)) else [target]
        for item in items:
            if isinstance(item, Toolset):
                toolsets.append(item)
            elif isinstance(item, ToolsetProvider) or callable(item):
                functions.add(item)
            else:
                raise ConfigError(f"'{reference}' is not a tool, a toolset or a list of them")
    if functions.tools:
        toolsets.insert(0, functions)
    return toolsets


def build_model(config: RuntimeConfig) -> ModelBackend:
    """The model a config names: ``embedded`` (the shipped model; also when none is named),
    ``local`` (a checkpoint folder), ``schema`` (needs no LLM), ``openai`` (an
    OpenAI-compatible server), or ``module:attribute`` of a ``ModelBackend`` (or a factory of
    one)."""
    backend = config.model.backend
    options = dict(config.model.model_extra or {})
    if backend is None or backend == "embedded":
        from agent_runtime.model.embedded import load_embedded_model

        try:
            embedded: ModelBackend = load_embedded_model(**options)
        except TypeError as err:
            raise ConfigError(f"model options for the embedded model: {err}") from None
        return embedded
    if backend == "local":
        path = options.pop("path", None)
        if not isinstance(path, str) or not path:
            raise ConfigError('model.path: the local backend needs "path": a checkpoint folder')
        from agent_runtime.model import LocalMoEModel

        try:
            local: ModelBackend = LocalMoEModel.from_pretrained(config.base_dir / path, **options)
        except TypeError as err:
            raise ConfigError(f"model options for the local backend: {err}") from None
        return local
    if backend == "schema":
        from .schema_model import SchemaModel

        try:
            return SchemaModel(**options)
        except TypeError as err:
            raise ConfigError(f"model options for the schema backend: {err}") from None
    if backend == "openai":
        # A served model (vLLM, SGLang, Moonshot's API, Ollama): base_url, model, api_key_env ...
        from agent_runtime.protocols.openai import OpenAIChatModel

        try:
            served: ModelBackend = OpenAIChatModel(**options)
        except TypeError as err:
            raise ConfigError(f"model options for the openai backend: {err}") from None
        return served
    factory = import_object(backend)
    model = factory(**options) if callable(factory) else factory
    if not isinstance(model, ModelBackend):
        raise ConfigError(f"model backend '{backend}' did not give a ModelBackend")
    return model


def build_policy(config: RuntimeConfig, approval: ApprovalCallback | None = None) -> ToolPolicy:
    """The ``policy`` block as the dispatcher's policy: tools not marked read-only (MCP:
    ``readOnlyHint`` not true) ask ``approval`` unless an ``allow`` pattern pre-approves them,
    since a configured agent drives real servers whose tools may write, delete or send."""
    return ToolPolicy(
        allow=list(config.policy.allow),
        deny=list(config.policy.deny),
        ask=list(config.policy.ask),
        approve_unless_read_only=True,
        approval=approval,
    )


def build_settings(config: RuntimeConfig) -> ModelSettings:
    """The ``model.settings`` block as the agent's default ``ModelSettings``."""
    try:
        return ModelSettings.model_validate(config.model.settings)
    except ValidationError as err:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in err.errors()
        )
        raise ConfigError(f"model.settings: {problems}") from None


def build_limits(config: RuntimeConfig) -> UsageLimits:
    return UsageLimits(
        max_steps=config.limits.max_steps,
        max_tool_calls=config.limits.max_tool_calls,
        max_total_tokens=config.limits.max_total_tokens,
    )


def build_toolsets(
    config: RuntimeConfig,
    model: ModelBackend | None = None,
    *,
    elicitation_callback: ElicitationCallback | None = None,
) -> list[Toolset]:
    """Every toolset a config provides: its local tools, its MCP servers (one toolset for all
    of them) and its A2A peers, unentered.

    ``model`` answers the MCP servers' sampling requests (the agent's own model);
    ``elicitation_callback`` answers their elicitation requests (none: they are declined).
    """
    toolsets = local_toolsets(config.tools, config.base_dir)
    # The MCP part of the file in whichever host's shape it came (mcpServers, VS Code's servers
    # and inputs, mcp_timeout_s); read beside the file, so envFile and ${workspaceFolder} resolve.
    from agent_runtime.protocols.mcp.config import has_mcp_servers

    mcp_part = {**(config.model_extra or {}), "mcpServers": config.mcp_servers}
    if has_mcp_servers(mcp_part):
        from agent_runtime.protocols.mcp import MCPServers

        options: dict[str, Any] = {}
        if model is not None:
            # Servers' sampling requests are answered by the agent's own model.
            options["sampling_model"] = model
        if elicitation_callback is not None:
            options["elicitation_callback"] = elicitation_callback
        if config.roots:
            options["roots"] = [config.base_dir / root for root in config.roots]
        toolsets.append(MCPServers.from_config(mcp_part, base_dir=config.base_dir, **options))
    if config.a2a_peers:
        from agent_runtime.protocols.a2a.peer import peers_from_config

        toolsets.extend(peers_from_config(config.a2a_peers))
    return toolsets


def build_agent(
    config: RuntimeConfig,
    *,
    approval: ApprovalCallback | None = None,
    elicitation_callback: ElicitationCallback | None = None,
    toolsets: Sequence[Toolset] | None = None,
) -> Agent:
    """The agent a config describes: its model, toolsets, instructions, limits, settings and
    policy, ready to ``run`` (entering it starts the MCP servers).

    ``approval`` is asked about each call the policy does not settle (a tool not marked
    read-only, or one an ``ask`` pattern names); without it such calls are denied.
    ``elicitation_callback`` answers MCP servers' elicitation requests. ``toolsets`` replaces
    the config's own (``build_toolsets``), for a host that wires them itself. Which model runs
    is logged at INFO level.
    """
    from .agent import Agent

    model = build_model(config)
    if config.model.backend is None:
        log.info("model: %s (the config names no model: the embedded default)", model.name)
    else:
        log.info("model: %s (backend %s)", model.name, config.model.backend)
    return Agent(
        model,
        (
            toolsets
            if toolsets is not None
            else build_toolsets(config, model, elicitation_callback=elicitation_callback)
        ),
        instructions=config.instructions,
        limits=build_limits(config),
        settings=build_settings(config),
        policy=build_policy(config, approval=approval),
        name=config.name,
        description=config.description,
    )


def serve_a2a(config: RuntimeConfig, agent: Agent, *, host: str, port: int) -> None:
    """Serve ``agent`` as the A2A node of the config's ``a2a`` block (blocks until stopped)."""
    from agent_runtime.protocols.a2a.serve import run_a2a_node

    run_a2a_node(config.a2a, agent, host=host, port=port)


def serve_mcp(
    config: RuntimeConfig,
    *,
    approval: ApprovalCallback | None = None,
    gateway: bool = False,
    http_port: int | None = None,
    host: str = "127.0.0.1",
) -> None:
    """Serve the agent a config describes to MCP hosts (``agent-runtime mcp-serve``): over
    stdio, or streamable HTTP on ``http_port``; ``gateway`` serves its toolsets' tools too.
    Requests of its MCP servers (elicitation, sampling, logs) go to the host in front."""
    from agent_runtime.protocols.mcp.server_face import run_mcp_face
    from agent_runtime.protocols.mcp.server_relay import HostRelay

    relay = HostRelay()
    toolsets = build_toolsets(config, relay.sampling_model, elicitation_callback=relay.elicit)
    agent = build_agent(config, approval=relay.approval(approval), toolsets=toolsets)
    run_mcp_face(agent, relay, toolsets, gateway=gateway, http_port=http_port, host=host)
