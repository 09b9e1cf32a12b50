"""The agent card: what a node tells the world about itself at ``/.well-known/agent-card.json``.

Built from the runtime ``Agent`` (name, description) and an :class:`AgentCardConfig` (version,
skills, provider ...), plus what the server knows: the URLs of both bindings, whether push
notifications and an extended card are on, and the security schemes of its auth config.

The card endpoint answers with an ``ETag`` (a hash of the exact bytes) and ``Cache-Control:
public, max-age=N``; a request whose ``If-None-Match`` matches gets ``304 Not Modified`` and no
body (spec 8.6).
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

from .auth import A2AAuthConfig
from .types import (
    GRPC_BINDING,
    HTTP_JSON_BINDING,
    JSONRPC_BINDING,
    PROTOCOL_VERSION,
    AgentCapabilities,
    AgentCard,
    AgentInterface,
    AgentProvider,
    AgentSkill,
)

WELL_KNOWN_CARD_PATH = "/.well-known/agent-card.json"


@dataclass
class AgentCardConfig:
    """What the card says beyond what the agent and server know. ``None`` = from the agent."""

    name: str | None = None
    description: str | None = None
    version: str = "0.1.0"
    skills: list[AgentSkill] = field(default_factory=list)
    """Empty: one skill named after the agent."""
    provider: AgentProvider | None = None
    documentation_url: str | None = None
    icon_url: str | None = None
    default_input_modes: list[str] = field(
        default_factory=lambda: ["text/plain", "application/json"]
    )
    default_output_modes: list[str] = field(default_factory=lambda: ["text/plain"])
    streaming: bool = True
    extended_skills: list[AgentSkill] = field(default_factory=list)
    """Extra skills shown only to authenticated callers (GetExtendedAgentCard)."""
    extended_description: str | None = None
    cache_max_age: int = 300
    """Seconds a client may cache the card (``Cache-Control: max-age``)."""
    preferred_binding: str = JSONRPC_BINDING
    """Which interface comes first in ``supportedInterfaces`` (clients prefer the first)."""

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> AgentCardConfig:
        """From the ``a2a`` section of a node config (snake_case keys; skills as dicts)."""
        known = {f for f in cls.__dataclass_fields__}
        kwargs: dict[str, Any] = {k: v for k, v in data.items() if k in known}
        for key in ("skills", "extended_skills"):
            if key in kwargs:
                kwargs[key] = [AgentSkill.model_validate(s) for s in kwargs[key]]
        if isinstance(kwargs.get("provider"), dict):
            kwargs["provider"] = AgentProvider.model_validate(kwargs["provider"])
        return cls(**kwargs)


def build_card(
    *,
    agent_name: str,
    agent_description: str,
    config: AgentCardConfig,
    jsonrpc_url: str,
    rest_url: str,
    auth: A2AAuthConfig | None,
    push_enabled: bool,
    extended: bool = False,
    grpc_url: str | None = None,
) -> AgentCard:
    """The public card, or with ``extended`` the card for authenticated callers.

    ``supportedInterfaces`` lists JSON-RPC, HTTP+JSON and, when the node serves it, gRPC
    (``grpc_url``: a ``host:port`` target); ``config.preferred_binding`` comes first.
    """
    name = config.name or agent_name
    description = config.description or agent_description or f"The {name} agent"
    skills = list(config.skills) or [
        AgentSkill(
            id=_slug(name),
            name=name,
            description=description,
            tags=["general"],
        )
    ]
    if extended:
        skills = skills + list(config.extended_skills)
        if config.extended_description:
            description = config.extended_description
    interfaces = [
        AgentInterface(url=jsonrpc_url, protocol_binding=JSONRPC_BINDING),
        AgentInterface(url=rest_url, protocol_binding=HTTP_JSON_BINDING),
    ]
    if grpc_url:
        interfaces.append(AgentInterface(url=grpc_url, protocol_binding=GRPC_BINDING))
    # A stable sort: the preferred binding first, the others in the order above.
    interfaces.sort(key=lambda iface: iface.protocol_binding != config.preferred_binding)
    for iface in interfaces:
        iface.protocol_version = PROTOCOL_VERSION
    auth_on = auth is not None and auth.enabled
    return AgentCard(
        name=name,
        description=description,
        supported_interfaces=interfaces,
        provider=config.provider,
        version=config.version,
        documentation_url=config.documentation_url,
        icon_url=config.icon_url,
        capabilities=AgentCapabilities(
            streaming=config.streaming,
            push_notifications=push_enabled,
            extended_agent_card=extended_card_available(config, auth),
        ),
        security_schemes=auth.security_schemes() if auth_on and auth else {},
        security_requirements=auth.security_requirements() if auth_on and auth else [],
        default_input_modes=list(config.default_input_modes),
        default_output_modes=list(config.default_output_modes),
        skills=skills,
    )


def extended_card_available(config: AgentCardConfig, auth: A2AAuthConfig | None) -> bool:
    """Offered whenever callers authenticate: the public card plus ``extended_skills``."""
    return auth is not None and auth.enabled


def card_etag(body: bytes) -> str:
    return '"' + hashlib.sha256(body).hexdigest()[:32] + '"'


def etag_matches(if_none_match: str | None, etag: str) -> bool:
    """RFC 9110 weak comparison of an ``If-None-Match`` list against our ETag."""
    if not if_none_match:
        return False
    if if_none_match.strip() == "*":
        return True
    ours = etag.removeprefix("W/")
    for candidate in if_none_match.split(","):
        if candidate.strip().removeprefix("W/") == ours:
            return True
    return False


def _slug(text: str) -> str:
    out = "".join(c.lower() if c.isalnum() else "-" for c in text).strip("-")
    return out or "agent"
