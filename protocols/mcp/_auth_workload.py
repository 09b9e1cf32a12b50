"""Workload identity federation: a platform-issued JWT as the grant (RFC 7523 jwt-bearer).

The SDK lacks the public-client jwt-bearer grant; it is written here, on top of the SDK's
discovery and token helpers.
"""

from __future__ import annotations

import time
from collections.abc import AsyncGenerator, Awaitable, Callable
from dataclasses import dataclass

import anyio
import httpx2
from mcp.client.auth import OAuthFlowError, OAuthTokenError, TokenStorage
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    create_oauth_metadata_request,
    handle_auth_metadata_response,
    handle_token_response_scopes,
    validate_metadata_issuer,
)
from mcp.shared.auth import OAuthToken
from mcp.shared.auth_utils import calculate_token_expiry, resource_url_from_server_url


@dataclass(frozen=True)
class WorkloadIdentityOAuth:
    """Workload identity federation (RFC 7523 jwt-bearer grant, SEP-1933).

    A workload that already holds a signed JWT from its platform (a cloud or CI identity token)
    presents it as the grant; no secret is stored. ``assertion`` is the JWT or an async callable
    that gets one for an audience (the authorization server's issuer). ``issuer`` is
    configuration. A refused grant is reported, never retried or swapped for another grant.
    """

    assertion: str | Callable[[str], Awaitable[str]]
    issuer: str
    client_id: str | None = None
    scope: str | None = None


_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class JwtBearerGrantAuth(httpx2.Auth):
    """Bearer tokens from an RFC 7523 jwt-bearer grant at a configured authorization server."""

    requires_response_body = True

    def __init__(
        self, server_url: str, config: WorkloadIdentityOAuth, storage: TokenStorage
    ) -> None:
        self._config = config
        self._storage = storage
        self._resource = resource_url_from_server_url(server_url)
        self._token_endpoint: str | None = None
        self._tokens: OAuthToken | None = None
        self._expiry: float | None = None
        self._loaded = False
        self._lock = anyio.Lock()

    def _valid(self) -> bool:
        return self._tokens is not None and (self._expiry is None or time.time() < self._expiry)

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        async with self._lock:
            if not self._loaded:
                self._tokens = await self._storage.get_tokens()
                self._loaded = True
            if self._valid():
                assert self._tokens is not None
                request.headers["Authorization"] = f"Bearer {self._tokens.access_token}"
            response = yield request
            if response.status_code != 401:
                return
            config = self._config
            if self._token_endpoint is None:
                for url in build_oauth_authorization_server_metadata_discovery_urls(
                    config.issuer, config.issuer
                ):
                    ok, metadata = await handle_auth_metadata_response(
                        (yield create_oauth_metadata_request(url))
                    )
                    if not ok:
                        break
                    if metadata is not None:
                        validate_metadata_issuer(metadata, config.issuer)
                        self._token_endpoint = str(metadata.token_endpoint)
                        break
                if self._token_endpoint is None:
                    raise OAuthFlowError(f"no authorization server metadata at {config.issuer}")
            assertion = (
                config.assertion
                if isinstance(config.assertion, str)
                else await config.assertion(config.issuer)
            )
            form = {"grant_type": _JWT_BEARER, "assertion": assertion, "resource": self._resource}
            if config.client_id:
                form["client_id"] = config.client_id
            if config.scope:
                form["scope"] = config.scope
            token_response = yield httpx2.Request(
                "POST",
                self._token_endpoint,
                data=form,
                headers={"Content-Type": "application/x-www-form-urlencoded"},
            )
            if token_response.status_code != 200:
                body = (await token_response.aread()).decode(errors="replace")
                raise OAuthTokenError(
                    f"jwt-bearer grant refused ({token_response.status_code}): {body[:300]}"
                )
            tokens = await handle_token_response_scopes(token_response)
            self._tokens = tokens
            self._expiry = calculate_token_expiry(tokens.expires_in)
            await self._storage.set_tokens(tokens)
            request.headers["Authorization"] = f"Bearer {tokens.access_token}"
            yield request
