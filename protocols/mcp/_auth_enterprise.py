"""Enterprise-managed authorization (SEP-990): the user's IdP login grants MCP access.

The SDK has the second leg (an ID-JAG traded for an access token at the MCP authorization
server); the first, the RFC 8693 token exchange at the enterprise IdP, is written here.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Literal
from urllib.parse import urlsplit

import httpx2
from mcp.client.auth import TokenStorage
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider


@dataclass(frozen=True)
class EnterpriseOAuth:
    """Enterprise-managed authorization (SEP-990): the user's IdP login grants MCP access.

    Two legs: the enterprise IdP exchanges the user's ID token (RFC 8693 token exchange at
    ``idp_token_endpoint``) for an identity assertion grant (ID-JAG) naming the MCP
    authorization server and resource; that server's token endpoint trades the ID-JAG for an
    access token (RFC 7523 jwt-bearer), authenticating with ``client_id``/``client_secret``.
    ``issuer`` is that authorization server: configuration, never taken from the MCP server.
    ``id_token`` is the token itself or an async callable returning a fresh one.
    """

    idp_token_endpoint: str
    id_token: str | Callable[[], Awaitable[str]]
    issuer: str
    client_id: str
    client_secret: str
    idp_client_id: str | None = None
    idp_client_secret: str | None = None
    scope: str | None = None
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_basic"
    )


_TOKEN_EXCHANGE = "urn:ietf:params:oauth:grant-type:token-exchange"
_ID_TOKEN = "urn:ietf:params:oauth:token-type:id_token"
_ID_JAG = "urn:ietf:params:oauth:token-type:id-jag"


class _IdJagExchange:
    """Leg one of SEP-990: trade the user's ID token for an ID-JAG at the enterprise IdP."""

    def __init__(self, config: EnterpriseOAuth) -> None:
        self._config = config

    async def __call__(self, audience: str, resource: str) -> str:
        config = self._config
        id_token = config.id_token if isinstance(config.id_token, str) else await config.id_token()
        form = {
            "grant_type": _TOKEN_EXCHANGE,
            "subject_token": id_token,
            "subject_token_type": _ID_TOKEN,
            "requested_token_type": _ID_JAG,
            "audience": audience,
            "resource": resource,
        }
        if config.scope:
            form["scope"] = config.scope
        auth: httpx2.Auth | None = None
        if config.idp_client_id and config.idp_client_secret:
            auth = httpx2.BasicAuth(config.idp_client_id, config.idp_client_secret)
        elif config.idp_client_id:
            form["client_id"] = config.idp_client_id
        async with httpx2.AsyncClient(timeout=30.0, auth=auth) as client:
            response = await client.post(config.idp_token_endpoint, data=form)
        if response.status_code != 200:
            raise PermissionError(
                f"identity provider refused the token exchange ({response.status_code}): "
                f"{response.text[:300]}"
            )
        body = response.json()
        if body.get("issued_token_type") not in (None, _ID_JAG) or "access_token" not in body:
            raise PermissionError(f"identity provider returned no ID-JAG: {sorted(body)}")
        return str(body["access_token"])


def enterprise_auth(server_url: str, config: EnterpriseOAuth, store: TokenStorage) -> httpx2.Auth:
    """The SDK's identity-assertion provider, with the IdP leg written here."""
    return IdentityAssertionOAuthProvider(
        server_url=server_url,
        storage=store,
        client_id=config.client_id,
        client_secret=config.client_secret,
        issuer=config.issuer,
        assertion_provider=_IdJagExchange(config),
        scope=config.scope,
        token_endpoint_auth_method=config.token_endpoint_auth_method,
    )


async def discover_authorization_servers(server_url: str, *, timeout_s: float = 30.0) -> list[str]:
    """The authorization servers an MCP server's protected-resource metadata names (RFC 9728).

    For setting up configuration (e.g. :attr:`EnterpriseOAuth.issuer`) once, with a person
    checking the answer; the flows themselves never trust it for a pinned issuer.
    """
    parts = urlsplit(server_url)
    origin = f"{parts.scheme}://{parts.netloc}"
    path = parts.path.rstrip("/")
    candidates = [f"{origin}/.well-known/oauth-protected-resource{path}"] if path else []
    candidates.append(f"{origin}/.well-known/oauth-protected-resource")
    async with httpx2.AsyncClient(timeout=timeout_s) as client:
        for url in candidates:
            response = await client.get(url)
            if response.status_code == 200:
                servers = response.json().get("authorization_servers") or []
                return [str(server) for server in servers]
    return []
