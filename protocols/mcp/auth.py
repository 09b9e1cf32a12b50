"""OAuth for streamable-HTTP MCP servers.

MCP servers on HTTP may answer ``401`` and expect the client to run OAuth 2.1: discover the
protected-resource and authorization-server metadata, register (dynamically, by a client-ID
metadata document, or not at all when pre-registered), obtain a token, retry, refresh, step up
scopes on ``403 insufficient_scope``. The official SDK already implements every one of those
steps as ``httpx2.Auth`` classes; this module does not re-implement them. It gives the runtime a
small typed configuration surface over them:

* :class:`AuthorizationCodeOAuth` - the interactive flow a desktop host runs (browser login),
  with a pluggable :data:`Authorizer` that turns an authorization URL into a code.
  :class:`LoopbackAuthorizer` (open the browser, catch the redirect on 127.0.0.1) is the default;
  :class:`HeadlessAuthorizer` follows the URL itself, for authorization servers that approve
  without a person (test servers, pre-consented enterprise clients).
* :class:`ClientCredentialsOAuth` - machine-to-machine, with a client secret or a private key.
* :class:`EnterpriseOAuth` - SEP-990: the user's enterprise IdP login is exchanged for an
  identity assertion grant, then for an MCP token (no per-server consent screen).
* :class:`WorkloadIdentityOAuth` - a workload's platform-issued JWT as the grant (RFC 7523).
* ``dpop=True`` on the first two (or :class:`DPoPAuth` around any of them) binds tokens to a key
  held in this process (RFC 9449), answering servers' nonce challenges.
* :class:`MemoryTokenStorage` / :class:`FileTokenStorage` - where tokens and registrations live,
  so a restarted host does not log in again.

The SDK lacks only the IdP leg of SEP-990, the public-client jwt-bearer grant and DPoP; those
are the parts written here, each small and on top of the SDK's discovery and token helpers.
Each flow has its own module (``_auth_code``, ``_auth_client_credentials``, ``_auth_enterprise``,
``_auth_workload``, ``_auth_dpop``, with ``_auth_storage``); this one is the public surface.

:func:`build_oauth` turns a config into the ``httpx2.Auth`` that ``HttpServerConfig(auth=...)``
takes; :func:`oauth_config_from_dict` reads the ``"oauth"`` object of an ``mcpServers`` entry.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx2
from mcp.client.auth import TokenStorage
from mcp.shared.auth import AuthorizationCodeResult

from ._auth_client_credentials import ClientCredentialsOAuth, client_credentials_auth
from ._auth_code import (
    DEFAULT_REDIRECT_URI,
    AuthorizationCodeOAuth,
    Authorizer,
    HeadlessAuthorizer,
    LoopbackAuthorizer,
    authorization_code_auth,
)
from ._auth_dpop import DPoPAuth
from ._auth_enterprise import EnterpriseOAuth, discover_authorization_servers, enterprise_auth
from ._auth_storage import FileTokenStorage, MemoryTokenStorage
from ._auth_workload import JwtBearerGrantAuth, WorkloadIdentityOAuth
from .errors import OAuthConfigError

__all__ = [
    "AuthorizationCodeOAuth",
    "AuthorizationCodeResult",
    "Authorizer",
    "ClientCredentialsOAuth",
    "DPoPAuth",
    "EnterpriseOAuth",
    "FileTokenStorage",
    "HeadlessAuthorizer",
    "LoopbackAuthorizer",
    "MemoryTokenStorage",
    "OAuthConfig",
    "OAuthConfigError",
    "TokenStorage",
    "WorkloadIdentityOAuth",
    "auth_from_config",
    "build_oauth",
    "discover_authorization_servers",
    "oauth_config_from_dict",
]

OAuthConfig = (
    AuthorizationCodeOAuth | ClientCredentialsOAuth | EnterpriseOAuth | WorkloadIdentityOAuth
)


def build_oauth(
    server_url: str, config: OAuthConfig, storage: TokenStorage | None = None
) -> httpx2.Auth:
    """The ``httpx2.Auth`` that runs ``config`` against the MCP server at ``server_url``."""
    store: TokenStorage = storage if storage is not None else MemoryTokenStorage()
    if isinstance(config, ClientCredentialsOAuth):
        auth = client_credentials_auth(server_url, config, store)
        return DPoPAuth(auth) if config.dpop else auth
    if isinstance(config, WorkloadIdentityOAuth):
        return JwtBearerGrantAuth(server_url, config, store)
    if isinstance(config, EnterpriseOAuth):
        return enterprise_auth(server_url, config, store)
    provider = authorization_code_auth(server_url, config, store)
    return DPoPAuth(provider) if config.dpop else provider


def oauth_config_from_dict(raw: Mapping[str, Any]) -> OAuthConfig:
    """Read the ``"oauth"`` object of an ``mcpServers`` entry.

    ``{"grant": "client_credentials", "clientId": ..., "clientSecret": ... | "privateKeyPem": ...}``
    or ``{"grant": "authorization_code", "redirectUri": ..., "clientId": ..., "scope": ...}``
    (the default grant). Keys may be camelCase or snake_case.
    """

    def get(name: str) -> Any:
        camel = name.split("_")[0] + "".join(p.title() for p in name.split("_")[1:])
        return raw.get(name, raw.get(camel))

    grant = get("grant") or (
        "client_credentials" if get("private_key_pem") else "authorization_code"
    )
    if grant == "client_credentials":
        client_id = get("client_id")
        if not client_id:
            raise OAuthConfigError("oauth client_credentials needs clientId")
        return ClientCredentialsOAuth(
            client_id=str(client_id),
            client_secret=get("client_secret"),
            private_key_pem=get("private_key_pem"),
            signing_algorithm=get("signing_algorithm") or "ES256",
            token_endpoint_auth_method=get("token_endpoint_auth_method") or "client_secret_basic",
            scope=get("scope"),
            issuer=get("issuer"),
            dpop=bool(get("dpop")),
        )
    if grant != "authorization_code":
        raise OAuthConfigError(f"unknown oauth grant {grant!r}")
    return AuthorizationCodeOAuth(
        redirect_uri=get("redirect_uri") or DEFAULT_REDIRECT_URI,
        client_name=get("client_name") or "agent-runtime",
        scope=get("scope"),
        client_id=get("client_id"),
        client_secret=get("client_secret"),
        token_endpoint_auth_method=get("token_endpoint_auth_method"),
        client_metadata_url=get("client_metadata_url"),
        dpop=bool(get("dpop")),
    )


def auth_from_config(server_url: str, raw: Mapping[str, Any]) -> httpx2.Auth:
    """The ``httpx2.Auth`` for an ``mcpServers`` entry's ``"oauth"`` object.

    ``"tokenFile"`` (``~`` expanded) keeps tokens across runs in a :class:`FileTokenStorage`;
    without it they live in memory for the process.
    """
    token_file = raw.get("tokenFile", raw.get("token_file"))
    storage: TokenStorage = (
        FileTokenStorage(Path(str(token_file)).expanduser()) if token_file else MemoryTokenStorage()
    )
    return build_oauth(server_url, oauth_config_from_dict(raw), storage)
