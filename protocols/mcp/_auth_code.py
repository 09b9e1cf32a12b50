"""The interactive OAuth flow (authorization code + PKCE): a person approves in a browser.

An :data:`Authorizer` turns the authorization URL into the redirect's code:
:class:`LoopbackAuthorizer` (open the browser, catch the redirect on 127.0.0.1) is the default;
:class:`HeadlessAuthorizer` follows the URL itself, for authorization servers that approve
without a person. Discovery, registration, PKCE and refresh are the SDK's
``OAuthClientProvider``.
"""

from __future__ import annotations

import logging
import webbrowser
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
from mcp.client.auth import OAuthClientProvider, TokenStorage
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from pydantic import AnyUrl

from .errors import OAuthConfigError

if TYPE_CHECKING:
    from anyio.abc import SocketStream

logger = logging.getLogger("agent_runtime.protocols.mcp.auth")

Authorizer = Callable[[str], Awaitable[AuthorizationCodeResult]]
"""Given the authorization URL, get the user's consent and return the redirect's code, state and
``iss``. The SDK checks ``state`` and ``iss``; an authorizer only reports what came back."""

TokenAuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]

DEFAULT_REDIRECT_URI = "http://127.0.0.1:33418/callback"


@dataclass(frozen=True)
class AuthorizationCodeOAuth:
    """The interactive OAuth flow (authorization code + PKCE).

    Registration: ``client_id`` (and ``client_secret``) when pre-registered; otherwise the SDK
    uses ``client_metadata_url`` if the server accepts metadata documents, else dynamic client
    registration. ``scope`` is only a fallback: the server's challenge or metadata decides.
    """

    redirect_uri: str = DEFAULT_REDIRECT_URI
    client_name: str = "agent-runtime"
    scope: str | None = None
    client_id: str | None = None
    client_secret: str | None = None
    token_endpoint_auth_method: TokenAuthMethod | None = None
    client_metadata_url: str | None = None
    application_type: Literal["native", "web"] = "native"
    authorizer: Authorizer | None = None
    """Default: :class:`LoopbackAuthorizer` on ``redirect_uri``."""
    dpop: bool = False
    """Bind tokens to a per-process key (RFC 9449): a stolen token is useless without it."""


# ---------------------------------------------------------------------------------- authorizers


def _code_from_redirect(location: str) -> AuthorizationCodeResult:
    query = parse_qs(urlsplit(location).query)
    if "error" in query:
        detail = query.get("error_description", [""])[0]
        raise PermissionError(f"authorization refused: {query['error'][0]} {detail}".strip())
    if "code" not in query:
        raise PermissionError(f"authorization redirect carried no code: {location}")
    return AuthorizationCodeResult(
        code=query["code"][0],
        state=query.get("state", [None])[0],
        iss=query.get("iss", [None])[0],
    )


class HeadlessAuthorizer:
    """Fetch the authorization URL and read the code from the redirect it answers with.

    For authorization servers that grant without a person in the loop (test and CI servers,
    enterprise clients with standing consent). A login page instead of a redirect is an error.
    """

    def __init__(self, *, timeout_s: float = 30.0) -> None:
        self.timeout_s = timeout_s

    async def __call__(self, authorization_url: str) -> AuthorizationCodeResult:
        async with httpx2.AsyncClient(timeout=self.timeout_s) as client:
            response = await client.get(authorization_url, follow_redirects=False)
        location = response.headers.get("location")
        if response.status_code not in (301, 302, 303, 307, 308) or not location:
            raise PermissionError(
                f"authorization endpoint answered {response.status_code} without a redirect; "
                "it needs a person: use LoopbackAuthorizer"
            )
        return _code_from_redirect(location)


class LoopbackAuthorizer:
    """Show the authorization URL to a person and catch the redirect on a loopback port.

    The redirect URI must be ``http://127.0.0.1:PORT/path`` (or ``localhost``); this listens there
    for one request, answers it with a short page and returns the code. ``open_url`` defaults to
    opening the system browser (and logging the URL for headless terminals).
    """

    def __init__(
        self,
        redirect_uri: str = DEFAULT_REDIRECT_URI,
        *,
        open_url: Callable[[str], Awaitable[None] | None] | None = None,
        timeout_s: float = 300.0,
    ) -> None:
        parts = urlsplit(redirect_uri)
        if parts.scheme != "http" or parts.hostname not in ("127.0.0.1", "localhost", "::1"):
            raise OAuthConfigError(
                f"LoopbackAuthorizer needs an http loopback redirect URI, got {redirect_uri}"
            )
        self.redirect_uri = redirect_uri
        self._host = "127.0.0.1" if parts.hostname == "localhost" else str(parts.hostname)
        self._port = parts.port or 80
        self._path = parts.path or "/"
        self._open_url = open_url
        self.timeout_s = timeout_s

    async def _show(self, url: str) -> None:
        if self._open_url is None:
            logger.warning("Open this URL to authorize the MCP server: %s", url)
            webbrowser.open(url)
            return
        maybe = self._open_url(url)
        if maybe is not None:
            await maybe

    async def __call__(self, authorization_url: str) -> AuthorizationCodeResult:
        found: list[AuthorizationCodeResult | PermissionError] = []
        with anyio.fail_after(self.timeout_s):
            listener = await anyio.create_tcp_listener(local_host=self._host, local_port=self._port)
            async with listener, anyio.create_task_group() as tg:

                async def serve(stream: SocketStream) -> None:
                    async with stream:
                        target = await _request_target(stream)
                        if urlsplit(target).path != self._path:
                            # A favicon or a stray probe: not the redirect; keep waiting.
                            await _respond(stream, 404, b"Not found.")
                            return
                        try:
                            found.append(_code_from_redirect(target))
                            await _respond(
                                stream, 200, b"Authorization complete. You can close this window."
                            )
                        except PermissionError as exc:
                            found.append(exc)
                            await _respond(
                                stream, 200, b"Authorization failed. You can close this window."
                            )
                    tg.cancel_scope.cancel()

                tg.start_soon(listener.serve, serve)
                await self._show(authorization_url)
                await anyio.sleep_forever()
        result = found[0]
        if isinstance(result, PermissionError):
            raise result
        return result


async def _request_target(stream: SocketStream) -> str:
    """The request target of one HTTP/1.1 request head (``/path?query``)."""
    head = b""
    with anyio.move_on_after(10):
        while b"\r\n\r\n" not in head and len(head) < 65536:
            head += await stream.receive()
    parts = head.split(b" ", 2)
    return parts[1].decode("latin-1") if len(parts) == 3 else "/"


async def _respond(stream: SocketStream, status: int, body: bytes) -> None:
    reason = b"OK" if status == 200 else b"Not Found"
    await stream.send(
        b"HTTP/1.1 %d %s\r\nContent-Type: text/plain\r\nConnection: close\r\n"
        b"Content-Length: %d\r\n\r\n%s" % (status, reason, len(body), body)
    )


# ---------------------------------------------------------------------------------- the flow


class _AuthorizerBridge:
    """Adapt one :data:`Authorizer` to the SDK's redirect-then-callback handler pair."""

    def __init__(self, authorizer: Authorizer) -> None:
        self._authorizer = authorizer
        self._result: AuthorizationCodeResult | None = None

    async def redirect(self, authorization_url: str) -> None:
        self._result = await self._authorizer(authorization_url)

    async def callback(self) -> AuthorizationCodeResult:
        result, self._result = self._result, None
        if result is None:
            raise PermissionError("authorization produced no code")
        return result


def authorization_code_auth(
    server_url: str, config: AuthorizationCodeOAuth, store: TokenStorage
) -> httpx2.Auth:
    """The SDK's provider for the interactive flow, with ``config``'s authorizer and registration."""
    authorizer = config.authorizer or LoopbackAuthorizer(config.redirect_uri)
    bridge = _AuthorizerBridge(authorizer)
    metadata = OAuthClientMetadata(
        client_name=config.client_name,
        redirect_uris=[AnyUrl(config.redirect_uri)],
        grant_types=["authorization_code", "refresh_token"],
        response_types=["code"],
        scope=config.scope,
        token_endpoint_auth_method=config.token_endpoint_auth_method,
        application_type=config.application_type,
    )
    return OAuthClientProvider(
        server_url=server_url,
        client_metadata=metadata,
        storage=_PreRegistered(store, config) if config.client_id else store,
        redirect_handler=bridge.redirect,
        callback_handler=bridge.callback,
        client_metadata_url=config.client_metadata_url,
    )


class _PreRegistered(TokenStorage):
    """Storage that answers with the configured registration until the flow stores another."""

    def __init__(self, inner: TokenStorage, config: AuthorizationCodeOAuth) -> None:
        self._inner = inner
        method = config.token_endpoint_auth_method or (
            "client_secret_basic" if config.client_secret else "none"
        )
        self._fixed = OAuthClientInformationFull(
            client_id=config.client_id,
            client_secret=config.client_secret,
            redirect_uris=[AnyUrl(config.redirect_uri)],
            token_endpoint_auth_method=method,
        )

    async def get_tokens(self) -> OAuthToken | None:
        return await self._inner.get_tokens()

    async def set_tokens(self, tokens: OAuthToken) -> None:
        await self._inner.set_tokens(tokens)

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return await self._inner.get_client_info() or self._fixed

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        await self._inner.set_client_info(client_info)
