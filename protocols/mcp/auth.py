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

:func:`build_oauth` turns a config into the ``httpx2.Auth`` that ``HttpServerConfig(auth=...)``
takes; :func:`oauth_config_from_dict` reads the ``"oauth"`` object of an ``mcpServers`` entry.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import os
import secrets
import time
import webbrowser
from collections.abc import AsyncGenerator, Awaitable, Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qs, urlsplit

import anyio
import httpx2
import jwt
from cryptography.hazmat.primitives.asymmetric import ec
from mcp.client.auth import OAuthClientProvider, OAuthFlowError, OAuthTokenError, TokenStorage
from mcp.client.auth.extensions.client_credentials import (
    ClientCredentialsOAuthProvider,
    PrivateKeyJWTOAuthProvider,
    SignedJWTParameters,
)
from mcp.client.auth.extensions.identity_assertion import IdentityAssertionOAuthProvider
from mcp.client.auth.utils import (
    build_oauth_authorization_server_metadata_discovery_urls,
    create_oauth_metadata_request,
    handle_auth_metadata_response,
    handle_token_response_scopes,
    validate_metadata_issuer,
)
from mcp.shared.auth import (
    AuthorizationCodeResult,
    OAuthClientInformationFull,
    OAuthClientMetadata,
    OAuthToken,
)
from mcp.shared.auth_utils import calculate_token_expiry, resource_url_from_server_url
from pydantic import AnyUrl

if TYPE_CHECKING:
    from anyio.abc import SocketStream

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

logger = logging.getLogger(__name__)

Authorizer = Callable[[str], Awaitable[AuthorizationCodeResult]]
"""Given the authorization URL, get the user's consent and return the redirect's code, state and
``iss``. The SDK checks ``state`` and ``iss``; an authorizer only reports what came back."""

TokenAuthMethod = Literal["client_secret_basic", "client_secret_post", "none"]

DEFAULT_REDIRECT_URI = "http://127.0.0.1:33418/callback"


class OAuthConfigError(ValueError):
    """An ``oauth`` configuration that cannot work (missing secret, unknown grant ...)."""


# ---------------------------------------------------------------------------------- storage


class MemoryTokenStorage(TokenStorage):
    """Tokens and client registration for the life of the process."""

    def __init__(self) -> None:
        self._tokens: OAuthToken | None = None
        self._client_info: OAuthClientInformationFull | None = None

    async def get_tokens(self) -> OAuthToken | None:
        return self._tokens

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self._tokens = tokens

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        return self._client_info

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self._client_info = client_info


class FileTokenStorage(TokenStorage):
    """Tokens and registration in one JSON file (mode 0600), so a restart needs no new login.

    One file per server: the registration is bound to that server's authorization server.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)

    def _load(self) -> dict[str, Any]:
        try:
            data = json.loads(self.path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError):
            logger.warning("ignoring unreadable OAuth token file %s", self.path)
            return {}
        return data if isinstance(data, dict) else {}

    def _store(self, key: str, value: dict[str, Any]) -> None:
        data = self._load()
        data[key] = value
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            json.dump(data, fh)
        os.replace(tmp, self.path)

    async def get_tokens(self) -> OAuthToken | None:
        raw = self._load().get("tokens")
        return OAuthToken.model_validate(raw) if raw else None

    async def set_tokens(self, tokens: OAuthToken) -> None:
        self._store("tokens", tokens.model_dump(mode="json", exclude_none=True))

    async def get_client_info(self) -> OAuthClientInformationFull | None:
        raw = self._load().get("client_info")
        return OAuthClientInformationFull.model_validate(raw) if raw else None

    async def set_client_info(self, client_info: OAuthClientInformationFull) -> None:
        self._store("client_info", client_info.model_dump(mode="json", exclude_none=True))


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


# ---------------------------------------------------------------------------------- configs


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


OAuthConfig = (
    AuthorizationCodeOAuth | ClientCredentialsOAuth | EnterpriseOAuth | WorkloadIdentityOAuth
)


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


def build_oauth(
    server_url: str, config: OAuthConfig, storage: TokenStorage | None = None
) -> httpx2.Auth:
    """The ``httpx2.Auth`` that runs ``config`` against the MCP server at ``server_url``."""
    store: TokenStorage = storage if storage is not None else MemoryTokenStorage()
    if isinstance(config, ClientCredentialsOAuth):
        auth = _client_credentials(server_url, config, store)
        return DPoPAuth(auth) if config.dpop else auth
    if isinstance(config, WorkloadIdentityOAuth):
        return _JwtBearerGrantAuth(server_url, config, store)
    if isinstance(config, EnterpriseOAuth):
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
    provider = OAuthClientProvider(
        server_url=server_url,
        client_metadata=metadata,
        storage=_PreRegistered(store, config) if config.client_id else store,
        redirect_handler=bridge.redirect,
        callback_handler=bridge.callback,
        client_metadata_url=config.client_metadata_url,
    )
    return DPoPAuth(provider) if config.dpop else provider


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


_JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"


class _JwtBearerGrantAuth(httpx2.Auth):
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


def _client_credentials(
    server_url: str, config: ClientCredentialsOAuth, storage: TokenStorage
) -> httpx2.Auth:
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
