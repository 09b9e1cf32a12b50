"""OAuth support for HTTP MCP servers: storage, config parsing, and the two authorizers.

The full OAuth flows (discovery, registration, PKCE, step-up, client credentials, SEP-990) run
against the conformance suite's authorization servers in ``test_mcp_conformance.py``; these
tests cover the pieces the suite cannot see, on real loopback sockets.
"""

from __future__ import annotations

import base64
import hashlib
import stat
from pathlib import Path

import anyio
import httpx2
import jwt
import pytest
from anyio.abc import SocketStream
from mcp.shared.auth import OAuthClientInformationFull, OAuthToken
from pydantic import AnyUrl
from support_processes import free_port

from agent_runtime.protocols.mcp.auth import (
    AuthorizationCodeOAuth,
    ClientCredentialsOAuth,
    DPoPAuth,
    EnterpriseOAuth,
    FileTokenStorage,
    HeadlessAuthorizer,
    LoopbackAuthorizer,
    MemoryTokenStorage,
    OAuthConfigError,
    auth_from_config,
    build_oauth,
    oauth_config_from_dict,
)


@pytest.mark.anyio
async def test_file_token_storage_survives_a_restart_and_is_private(tmp_path: Path) -> None:
    path = tmp_path / "tokens" / "server.json"
    first = FileTokenStorage(path)
    await first.set_tokens(OAuthToken(access_token="at-1", refresh_token="rt-1", expires_in=60))
    await first.set_client_info(
        OAuthClientInformationFull(client_id="cid", redirect_uris=[AnyUrl("http://127.0.0.1:9/cb")])
    )

    second = FileTokenStorage(path)
    tokens = await second.get_tokens()
    info = await second.get_client_info()
    assert tokens is not None and tokens.access_token == "at-1" and tokens.refresh_token == "rt-1"
    assert info is not None and info.client_id == "cid"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600


@pytest.mark.anyio
async def test_file_token_storage_starts_empty_and_ignores_a_corrupt_file(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    assert await FileTokenStorage(path).get_tokens() is None
    path.write_text("{not json", encoding="utf-8")
    assert await FileTokenStorage(path).get_client_info() is None


def test_oauth_config_from_dict_reads_both_grants_in_camel_or_snake_case() -> None:
    cc = oauth_config_from_dict(
        {"grant": "client_credentials", "clientId": "svc", "clientSecret": "s3", "scope": "read"}
    )
    assert cc == ClientCredentialsOAuth(client_id="svc", client_secret="s3", scope="read")
    code = oauth_config_from_dict({"redirect_uri": "http://127.0.0.1:5000/cb", "clientId": "app"})
    assert isinstance(code, AuthorizationCodeOAuth)
    assert code.redirect_uri == "http://127.0.0.1:5000/cb" and code.client_id == "app"
    jwt = oauth_config_from_dict({"clientId": "svc", "privateKeyPem": "-----BEGIN..."})
    assert isinstance(jwt, ClientCredentialsOAuth) and jwt.private_key_pem == "-----BEGIN..."


@pytest.mark.parametrize(
    "raw",
    [
        {"grant": "client_credentials", "clientSecret": "x"},
        {"grant": "client_credentials", "clientId": "a"},
        {"grant": "client_credentials", "clientId": "a", "clientSecret": "x", "privateKeyPem": "k"},
        {"grant": "password"},
    ],
)
def test_oauth_config_from_dict_rejects_configs_that_cannot_work(raw: dict[str, str]) -> None:
    with pytest.raises(OAuthConfigError):
        oauth_config_from_dict(raw)


@pytest.mark.anyio
async def test_loopback_authorizer_gives_up_after_its_timeout() -> None:
    async def nobody_logs_in(url: str) -> None:
        return None

    port = free_port()
    authorize = LoopbackAuthorizer(
        f"http://127.0.0.1:{port}/cb", open_url=nobody_logs_in, timeout_s=0.3
    )
    with pytest.raises(TimeoutError):
        await authorize("https://as.example/authorize")


def test_loopback_authorizer_refuses_a_non_loopback_redirect() -> None:
    with pytest.raises(OAuthConfigError):
        LoopbackAuthorizer("https://example.com/callback")


@pytest.mark.anyio
async def test_loopback_authorizer_catches_the_browser_redirect() -> None:
    port = free_port()
    seen: dict[str, object] = {}

    async def browser(url: str) -> None:
        seen["url"] = url
        # The "user" approves and the authorization server sends the browser back to us; a
        # stray request for another path first must not end the wait.
        async with httpx2.AsyncClient() as client:
            stray = await client.get(f"http://127.0.0.1:{port}/favicon.ico")
            seen["stray"] = stray.status_code
            response = await client.get(
                f"http://127.0.0.1:{port}/callback?code=abc&state=st&iss=https%3A%2F%2Fas.example"
            )
        seen["page"] = (response.status_code, response.text)

    authorize = LoopbackAuthorizer(f"http://127.0.0.1:{port}/callback", open_url=browser)
    with anyio.fail_after(10):
        result = await authorize("https://as.example/authorize?x=1")
    assert seen["url"] == "https://as.example/authorize?x=1"
    assert (result.code, result.state, result.iss) == ("abc", "st", "https://as.example")
    assert seen["page"] == (200, "Authorization complete. You can close this window.")
    assert seen["stray"] == 404


@pytest.mark.anyio
async def test_loopback_authorizer_reports_a_refusal() -> None:
    port = free_port()

    async def browser(url: str) -> None:
        async with httpx2.AsyncClient() as client:
            await client.get(f"http://127.0.0.1:{port}/cb?error=access_denied&state=s")

    authorize = LoopbackAuthorizer(f"http://localhost:{port}/cb", open_url=browser)
    with anyio.fail_after(10), pytest.raises(PermissionError, match="access_denied"):
        await authorize("https://as.example/authorize")


@pytest.mark.anyio
async def test_headless_authorizer_reads_the_code_from_the_redirect() -> None:
    requests: list[bytes] = []
    listener = await anyio.create_tcp_listener(local_host="127.0.0.1", local_port=0)
    port = listener.extra(anyio.abc.SocketAttribute.local_port)

    async def serve(stream: SocketStream) -> None:
        async with stream:
            requests.append(await stream.receive())
            await stream.send(
                b"HTTP/1.1 302 Found\r\nLocation: http://localhost:3000/callback?code=c1&state=s1"
                b"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"
            )

    async with listener, anyio.create_task_group() as tg:
        tg.start_soon(listener.serve, serve)
        result = await HeadlessAuthorizer()(f"http://127.0.0.1:{port}/authorize?client_id=x")
        tg.cancel_scope.cancel()
    assert (result.code, result.state, result.iss) == ("c1", "s1", None)
    assert requests and requests[0].startswith(b"GET /authorize?client_id=x ")


def test_build_oauth_gives_an_httpx_auth_for_every_config() -> None:
    url = "http://127.0.0.1:9/mcp"
    configs = [
        AuthorizationCodeOAuth(authorizer=HeadlessAuthorizer()),
        AuthorizationCodeOAuth(
            client_id="pre", client_secret="reg", authorizer=HeadlessAuthorizer()
        ),
        ClientCredentialsOAuth(client_id="svc", client_secret="s", issuer="http://127.0.0.1:9"),
        EnterpriseOAuth(
            idp_token_endpoint="http://127.0.0.1:8/token",
            id_token="idt",
            issuer="http://127.0.0.1:9",
            client_id="c",
            client_secret="s",
        ),
    ]
    for config in configs:
        assert isinstance(build_oauth(url, config, MemoryTokenStorage()), httpx2.Auth)


@pytest.mark.anyio
async def test_pre_registered_client_is_used_until_the_flow_stores_another() -> None:
    storage = MemoryTokenStorage()
    auth = build_oauth(
        "http://127.0.0.1:9/mcp",
        AuthorizationCodeOAuth(
            client_id="pre", client_secret="reg", authorizer=HeadlessAuthorizer()
        ),
        storage,
    )
    store = auth.context.storage
    info = await store.get_client_info()
    assert info is not None and info.client_id == "pre"
    assert info.token_endpoint_auth_method == "client_secret_basic"
    await store.set_client_info(OAuthClientInformationFull(client_id="new"))
    again = await store.get_client_info()
    assert again is not None and again.client_id == "new"
    assert (await storage.get_client_info()) is not None


@pytest.mark.anyio
async def test_auth_from_config_keeps_tokens_in_the_named_file(tmp_path: Path) -> None:
    token_file = tmp_path / "srv.json"
    auth = auth_from_config(
        "http://127.0.0.1:9/mcp",
        {
            "grant": "client_credentials",
            "clientId": "svc",
            "clientSecret": "s",
            "issuer": "http://127.0.0.1:9",
            "tokenFile": str(token_file),
        },
    )
    await auth.context.storage.set_tokens(OAuthToken(access_token="kept"))
    tokens = await FileTokenStorage(token_file).get_tokens()
    assert tokens is not None and tokens.access_token == "kept"


def test_dpop_proof_is_bound_to_method_url_key_and_token() -> None:
    class _Inner(httpx2.Auth):
        pass

    dpop = DPoPAuth(_Inner())
    request = httpx2.Request("POST", "http://127.0.0.1:9/mcp?x=1")
    proof = dpop._proof(request, "tok-1")
    header = jwt.get_unverified_header(proof)
    assert header["typ"] == "dpop+jwt" and header["alg"] == "ES256"
    assert set(header["jwk"]) == {"kty", "crv", "x", "y"}  # the public half only
    key = jwt.PyJWK(header["jwk"]).key
    claims = jwt.decode(proof, key, algorithms=["ES256"])
    assert claims["htm"] == "POST" and claims["htu"] == "http://127.0.0.1:9/mcp"
    expected_ath = base64.urlsafe_b64encode(hashlib.sha256(b"tok-1").digest()).rstrip(b"=")
    assert claims["ath"] == expected_ath.decode()
    assert dpop._proof(request, "tok-1") != proof  # fresh jti every time
