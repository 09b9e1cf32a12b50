"""Caller authentication for an A2A node: bearer tokens and API keys.

A configured node declares its schemes in the agent card (``securitySchemes`` plus one
``securityRequirements`` entry per scheme, meaning "any one of these") and checks every protocol
request; the public card stays public. Each credential maps to a *principal* name, and the
principal is what owns tasks (see ``store.py``). Without configuration every caller is the
anonymous principal ``""`` and nothing is checked.

Secrets are compared in constant time, and all of them are compared, so timing does not tell
which (or whether any) credential is close.
"""

from __future__ import annotations

import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field

from .errors import UnauthenticatedError
from .types import (
    APIKeySecurityScheme,
    HTTPAuthSecurityScheme,
    SecurityRequirement,
    SecurityScheme,
)

ANONYMOUS = ""
BEARER_SCHEME_NAME = "bearer"
API_KEY_SCHEME_NAME = "apiKey"


@dataclass
class A2AAuthConfig:
    """Credentials this node accepts.

    ``bearer_tokens`` maps a token (``Authorization: Bearer <token>``) to its principal;
    ``api_keys`` maps a key sent in header ``api_key_header`` to its principal.
    """

    bearer_tokens: dict[str, str] = field(default_factory=dict)
    api_keys: dict[str, str] = field(default_factory=dict)
    api_key_header: str = "X-API-Key"
    bearer_format: str | None = None

    @property
    def enabled(self) -> bool:
        return bool(self.bearer_tokens or self.api_keys)

    def security_schemes(self) -> dict[str, SecurityScheme]:
        schemes: dict[str, SecurityScheme] = {}
        if self.bearer_tokens:
            schemes[BEARER_SCHEME_NAME] = SecurityScheme(
                http_auth_security_scheme=HTTPAuthSecurityScheme(
                    scheme="Bearer",
                    bearer_format=self.bearer_format,
                    description="Authorization: Bearer <token>",
                )
            )
        if self.api_keys:
            schemes[API_KEY_SCHEME_NAME] = SecurityScheme(
                api_key_security_scheme=APIKeySecurityScheme(
                    location="header",
                    name=self.api_key_header,
                    description=f"{self.api_key_header}: <key>",
                )
            )
        return schemes

    def security_requirements(self) -> list[SecurityRequirement]:
        return [SecurityRequirement.of(name) for name in self.security_schemes()]

    def authenticate(self, headers: Mapping[str, str]) -> str:
        """The caller's principal; raises ``UnauthenticatedError`` when credentials are bad.

        ``headers`` must be case-insensitive (starlette's ``Headers`` is).
        """
        if not self.enabled:
            return ANONYMOUS
        principal: str | None = None
        auth = headers.get("authorization")
        if auth and self.bearer_tokens:
            scheme, _, token = auth.partition(" ")
            if scheme.lower() == "bearer" and token:
                principal = _match(token.strip(), self.bearer_tokens)
        key = headers.get(self.api_key_header.lower())
        if principal is None and key and self.api_keys:
            principal = _match(key, self.api_keys)
        if principal is None:
            supplied = bool(auth or key)
            raise UnauthenticatedError(
                "Invalid credentials" if supplied else "Authentication required"
            )
        return principal

    def challenge(self) -> str:
        """The ``WWW-Authenticate`` value sent with a 401."""
        if self.bearer_tokens:
            return 'Bearer realm="a2a"'
        return f'ApiKey header="{self.api_key_header}"'


def _match(secret: str, table: Mapping[str, str]) -> str | None:
    found: str | None = None
    given = secret.encode()
    for candidate, principal in table.items():
        if hmac.compare_digest(given, candidate.encode()) and found is None:
            found = principal
    return found
