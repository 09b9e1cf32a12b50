"""Client entry point for the MCP conformance suite (``@modelcontextprotocol/conformance``).

The harness starts a mock MCP server per scenario and runs
``python tests/mcp_support/conformance_client.py <url>`` with the scenario name in
``MCP_CONFORMANCE_SCENARIO``, the protocol version to speak in ``MCP_CONFORMANCE_PROTOCOL_VERSION``
and scenario data (credentials, tool calls) in ``MCP_CONFORMANCE_CONTEXT``. This module only maps
scenarios to actions; the connection, OAuth and calls go through the runtime's own MCP toolset and
``auth`` module, so the suite measures what an agent would use.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import anyio
import httpx2
from mcp.types import Implementation

from agent_runtime.dispatcher import DispatchConfig, Dispatcher
from agent_runtime.protocols.mcp.auth import (
    AuthorizationCodeOAuth,
    ClientCredentialsOAuth,
    EnterpriseOAuth,
    HeadlessAuthorizer,
    OAuthConfig,
    WorkloadIdentityOAuth,
    build_oauth,
    discover_authorization_servers,
)
from agent_runtime.protocols.mcp.config import HttpServerConfig
from agent_runtime.protocols.mcp.toolset import MCPToolset, Mode
from agent_runtime.types import ToolCall, ToolSpec

logger = logging.getLogger("agent_runtime.mcp.conformance")

_REDIRECT_URI = "http://localhost:3000/callback"
_CLIENT_METADATA_URL = "https://conformance-test.local/client-metadata.json"


class _Run:
    """One scenario run: URL, protocol version, context."""

    def __init__(self, url: str, scenario: str, version: str, context: dict[str, Any]) -> None:
        self.url = url
        self.scenario = scenario
        self.version = version
        self.context = context

    @property
    def mode(self) -> Mode:
        """The toolset's default: probe ``server/discover``, fall back to ``initialize``.

        The same setting passes every era's scenarios, so the suite checks what hosts get.
        """
        return "auto"


def _accept_with_defaults(message: str, schema: dict[str, Any]) -> dict[str, Any]:
    """Accept a form elicitation, filling every field that declares a default (SEP-1034)."""
    properties = schema.get("properties") or {}
    return {
        key: prop["default"]
        for key, prop in properties.items()
        if isinstance(prop, dict) and "default" in prop
    }


def _sample_arguments(spec: ToolSpec) -> dict[str, Any]:
    """Plausible arguments for a tool's required primitive parameters."""
    samples = {"string": "us-west1", "integer": 1, "number": 1.5, "boolean": True}
    properties = spec.input_schema.get("properties") or {}
    out: dict[str, Any] = {}
    for key in spec.input_schema.get("required") or []:
        kind = (properties.get(key) or {}).get("type")
        if isinstance(kind, str) and kind in samples:
            out[key] = samples[kind]
    return out


Plan = Callable[[list[ToolSpec]], list[tuple[str, dict[str, Any]]]]


def _fixed(*calls: tuple[str, dict[str, Any]]) -> Plan:
    return lambda specs: list(calls)


def _every_tool(specs: list[ToolSpec]) -> list[tuple[str, dict[str, Any]]]:
    return [(spec.name, _sample_arguments(spec)) for spec in specs]


def _first_tool(specs: list[ToolSpec]) -> list[tuple[str, dict[str, Any]]]:
    return [(specs[0].name, _sample_arguments(specs[0]))] if specs else []


def _echo_schema(specs: list[ToolSpec]) -> list[tuple[str, dict[str, Any]]]:
    """Send the focal tool's input schema back, exactly as our toolset holds it."""
    return [
        ("json_schema_echo", {"schema": spec.input_schema})
        for spec in specs
        if spec.name != "json_schema_echo"
    ][:1]


async def _session(run: _Run, plan: Plan, auth: httpx2.Auth | None = None) -> None:
    """Connect one ``MCPToolset`` and run ``plan``'s calls through the agent's dispatcher."""
    toolset = MCPToolset(
        "conformance",
        HttpServerConfig(url=run.url, auth=auth),
        prefix=None,
        mode=run.mode,
        call_timeout_s=30.0,
        elicitation_callback=_accept_with_defaults,
        client_info=Implementation(name="agent-runtime-conformance", version="0.1.0"),
    )
    dispatcher = Dispatcher([toolset], DispatchConfig(call_timeout_s=30.0))
    async with dispatcher:
        specs = await toolset.list_tools()
        logger.info("tools: %s", [spec.name for spec in specs])
        calls = _context_calls(run) or plan(specs)
        for index, (name, args) in enumerate(calls):
            (record,) = await dispatcher.dispatch([ToolCall.of(name, args, id=f"call_{index}")])
            logger.info(
                "%s -> error=%s %s", name, record.result.is_error, record.result.text_content
            )


def _context_calls(run: _Run) -> list[tuple[str, dict[str, Any]]]:
    """The calls the harness asks for, sent as a model would make them (a ``null`` for an
    optional argument is the dispatcher's to handle, as it is for a model's calls)."""
    return [(c["name"], dict(c.get("arguments") or {})) for c in run.context.get("toolCalls", [])]


def _oauth_for(run: _Run) -> OAuthConfig:
    ctx = run.context
    if run.scenario == "auth/client-credentials-jwt":
        return ClientCredentialsOAuth(
            client_id=ctx["client_id"],
            private_key_pem=ctx["private_key_pem"],
            signing_algorithm=ctx.get("signing_algorithm", "ES256"),
            issuer=ctx.get("issuer"),
        )
    if run.scenario == "auth/client-credentials-basic":
        return ClientCredentialsOAuth(
            client_id=ctx["client_id"], client_secret=ctx["client_secret"], issuer=ctx.get("issuer")
        )
    return AuthorizationCodeOAuth(
        redirect_uri=_REDIRECT_URI,
        client_name="agent-runtime-conformance",
        client_id=ctx.get("client_id"),
        client_secret=ctx.get("client_secret"),
        client_metadata_url=_CLIENT_METADATA_URL,
        authorizer=HeadlessAuthorizer(),
        dpop=run.scenario.startswith("auth/dpop"),
    )


async def _enterprise(run: _Run) -> OAuthConfig:
    """SEP-990: the harness names the IdP; the MCP authorization server is looked up once."""
    ctx = run.context
    (issuer, *_) = await discover_authorization_servers(run.url)
    return EnterpriseOAuth(
        idp_token_endpoint=ctx["idp_token_endpoint"],
        id_token=ctx["idp_id_token"],
        idp_client_id=ctx.get("idp_client_id"),
        issuer=issuer,
        client_id=ctx["client_id"],
        client_secret=ctx["client_secret"],
    )


async def _workload_identity(run: _Run) -> OAuthConfig:
    (issuer, *_) = await discover_authorization_servers(run.url)
    return WorkloadIdentityOAuth(
        assertion=run.context["valid_jwt"], issuer=issuer, client_id=run.context.get("client_id")
    )


_DISCOVERED = {
    "auth/cross-app-access-complete-flow": _enterprise,
    "auth/enterprise-managed-authorization": _enterprise,
    "auth/wif-jwt-bearer": _workload_identity,
}


async def _auth(run: _Run) -> None:
    configure = _DISCOVERED.get(run.scenario)
    config = await configure(run) if configure is not None else _oauth_for(run)
    await _session(run, _first_tool, auth=build_oauth(run.url, config))


_PLANS: dict[str, Plan] = {
    "initialize": _fixed(),
    "tools_call": _fixed(("add_numbers", {"a": 5, "b": 3})),
    "sse-retry": _fixed(("test_reconnection", {})),
    "elicitation-sep1034-client-defaults": _fixed(("test_client_elicitation_defaults", {})),
    "sep-2322-client-request-state": _every_tool,
    "http-invalid-tool-headers": _every_tool,
    "json-schema-2020-12-preservation": _echo_schema,
}


async def _scenario(run: _Run) -> None:
    if run.scenario.startswith("auth/"):
        await _auth(run)
    else:
        await _session(run, _PLANS.get(run.scenario, _fixed()))


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if not args:
        print("usage: python tests/mcp_support/conformance_client.py URL", file=sys.stderr)
        return 2
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(name)s %(message)s")
    scenario = os.environ.get("MCP_CONFORMANCE_SCENARIO", "initialize")
    version = os.environ.get("MCP_CONFORMANCE_PROTOCOL_VERSION", "2025-11-25")
    context = json.loads(os.environ.get("MCP_CONFORMANCE_CONTEXT") or "{}")
    run = _Run(args[-1], scenario, version, context)
    logger.info("scenario %s at %s (context keys %s)", scenario, version, sorted(context))
    anyio.run(_scenario, run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
