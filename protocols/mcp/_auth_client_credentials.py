"""Machine-to-machine OAuth (client credentials grant): a secret or a private key, no person."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import httpx2
from mcp.client.auth import TokenStorage
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)

from .errors import OAuthConfigError


@dataclass(frozen=True)
class ClientCredentialsOAuth:
    """Machine-to-machine OAuth (client credentials grant).

    Give ``client_secret`` (sent as ``token_endpoint_auth_method``) or ``private_key_pem``
    (an RFC 7523 ``private_key_jwt`` assertion signed with ``signing_algorithm``). ``issuer``
    pins the authorization server the credentials belong to, so a server cannot redirect them.
    """

    client_id: str
    client_secret: str | None = None
    private_key_pem: str | None = None
    signing_algorithm: str = "ES256"
    token_endpoint_auth_method: Literal["client_secret_basic", "client_secret_post"] = (
        "client_secret_basic"
    )
    scope: str | None = None
    issuer: str | None = None
    dpop: bool = False
    """Bind tokens to a per-process key (RFC 9449)."""

    def __post_init__(self) -> None:
        if (self.client_secret is None) == (self.private_key_pem is None):
            raise OAuthConfigError(
                "client credentials need exactly one of client_secret, private_key_pem"
            )


def client_credentials_auth(
    server_url: str, config: ClientCredentialsOAuth, storage: TokenStorage
) -> httpx2.Auth:
    """The SDK's provider for ``config``: a client secret, or a signed ``private_key_jwt``."""
    if config.private_key_pem is not None:
        signer = SignedJWTParameters(
            issuer=config.client_id,
            subject=config.client_id,
            signing_algorithm=config.signing_algorithm,
            signing_key=config.private_key_pem,
        )
        return PrivateKeyJWTOAuthProvider(
            server_url=server_url,
            storage=storage,
            client_id=config.client_id,
            assertion_provider=signer.create_assertion_provider(),
            scope=config.scope,
            issuer=config.issuer,
        )
    assert config.client_secret is not None
    return ClientCredentialsOAuthProvider(
        server_url=server_url,
        storage=storage,
        client_id=config.client_id,
        client_secret=config.client_secret,
        token_endpoint_auth_method=config.token_endpoint_auth_method,
        scope=config.scope,
        issuer=config.issuer,
    )
