"""DPoP (RFC 9449): tokens bound to a key held in this process, around any OAuth flow."""

from __future__ import annotations

import base64
import hashlib
import secrets
import time
from collections.abc import AsyncGenerator
from typing import Any

import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


class DPoPAuth(httpx2.Auth):
    """Proof of possession (RFC 9449) around another OAuth ``httpx2.Auth``.

    Every token request and every request carrying the token gets a fresh proof signed with a
    key that never leaves this process (ES256); tokens the server binds to that key are sent with
    the ``DPoP`` scheme. A ``use_dpop_nonce`` challenge from either server is answered once with
    the nonce it supplies, without disturbing the wrapped flow.
    """

    requires_response_body = True

    def __init__(self, inner: httpx2.Auth) -> None:
        self._inner = inner
        self._key = ec.generate_private_key(ec.SECP256R1())
        numbers = self._key.public_key().public_numbers()
        self._jwk = {
            "kty": "EC",
            "crv": "P-256",
            "x": _b64url(numbers.x.to_bytes(32, "big")),
            "y": _b64url(numbers.y.to_bytes(32, "big")),
        }
        self._nonces: dict[str, str] = {}
        self._bound = False

    @property
    def context(self) -> Any:
        """The wrapped provider's OAuth context (tokens, storage)."""
        return getattr(self._inner, "context", None)

    @staticmethod
    def _origin(url: httpx2.URL) -> str:
        return f"{url.scheme}://{url.netloc.decode('ascii')}"

    def _proof(self, request: httpx2.Request, access_token: str | None) -> str:
        url = request.url
        claims: dict[str, Any] = {
            "jti": secrets.token_urlsafe(16),
            "htm": request.method,
            "htu": f"{url.scheme}://{url.netloc.decode('ascii')}{url.path}",
            "iat": int(time.time()),
        }
        nonce = self._nonces.get(self._origin(url))
        if nonce is not None:
            claims["nonce"] = nonce
        if access_token is not None:
            digest = hashlib.sha256(access_token.encode("ascii")).digest()
            claims["ath"] = _b64url(digest)
        return jwt.encode(
            claims, self._key, algorithm="ES256", headers={"typ": "dpop+jwt", "jwk": self._jwk}
        )

    @staticmethod
    def _is_token_request(request: httpx2.Request) -> bool:
        kind = request.headers.get("content-type", "")
        return (
            request.method == "POST"
            and kind.startswith("application/x-www-form-urlencoded")
            and b"grant_type=" in request.content
        )

    def _sign(self, request: httpx2.Request) -> None:
        if self._is_token_request(request):
            request.headers["DPoP"] = self._proof(request, None)
            return
        authorization = request.headers.get("Authorization", "")
        scheme, _, token = authorization.partition(" ")
        if token and scheme.lower() in ("bearer", "dpop") and self._bound:
            request.headers["Authorization"] = f"DPoP {token}"
            request.headers["DPoP"] = self._proof(request, token)

    async def _note_nonce(self, response: httpx2.Response) -> bool:
        """Remember a server's nonce; ``True`` when the response demands a retry with it."""
        nonce = response.headers.get("DPoP-Nonce")
        if nonce is None:
            return False
        self._nonces[self._origin(response.request.url)] = nonce
        if response.status_code == 401:
            return "use_dpop_nonce" in response.headers.get("WWW-Authenticate", "")
        if response.status_code == 400:
            try:
                await response.aread()
                return bool(response.json().get("error") == "use_dpop_nonce")
            except ValueError:
                return False
        return False

    async def _unbind_token_response(
        self, request: httpx2.Request, response: httpx2.Response
    ) -> httpx2.Response:
        """Note a DPoP-bound token and show it to the wrapped flow as a plain one."""
        if response.status_code != 200 or not self._is_token_request(request):
            return response
        try:
            await response.aread()
            body = response.json()
        except ValueError:
            return response
        if not isinstance(body, dict) or str(body.get("token_type", "")).lower() != "dpop":
            return response
        self._bound = True
        return httpx2.Response(200, json={**body, "token_type": "Bearer"}, request=request)

    async def async_auth_flow(
        self, request: httpx2.Request
    ) -> AsyncGenerator[httpx2.Request, httpx2.Response]:
        flow = self._inner.async_auth_flow(request)
        try:
            outgoing = await flow.__anext__()
        except StopAsyncIteration:
            return
        while True:
            self._sign(outgoing)
            response = yield outgoing
            if await self._note_nonce(response):
                self._sign(outgoing)
                response = yield outgoing
                await self._note_nonce(response)
            response = await self._unbind_token_response(outgoing, response)
            try:
                outgoing = await flow.asend(response)
            except StopAsyncIteration:
                return
