"""Malformed and refused requests get the spec's errors on both bindings, never a 500."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import pytest
from a2a_support.fixtures import node
from a2a_support.net import V1, text_message

pytestmark = pytest.mark.anyio

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"


def _rpc_error(body: dict[str, Any], code: int, reason: str | None = None) -> None:
    assert body["jsonrpc"] == "2.0"
    assert body["error"]["code"] == code, body
    if reason is not None:
        info = body["error"]["data"][0]
        assert info["@type"] == ERROR_INFO and info["reason"] == reason
        assert info["domain"] == "a2a-protocol.org"


async def test_jsonrpc_protocol_errors_have_their_codes() -> None:
    async with node() as (base, client):
        url = base + "/a2a/jsonrpc"
        headers = {**V1, "Content-Type": "application/json"}

        r = await client.post(url, content=b'{"jsonrpc": "2.0", "id": 1,', headers=headers)
        assert r.status_code == 200
        _rpc_error(r.json(), -32700, "PARSE_ERROR")
        assert r.json()["id"] is None

        r = await client.post(url, content=b"[1, 2]", headers=headers)
        _rpc_error(r.json(), -32600, "INVALID_REQUEST")

        r = await client.post(
            url, json={"jsonrpc": "1.0", "id": 7, "method": "GetTask"}, headers=V1
        )
        _rpc_error(r.json(), -32600)
        assert r.json()["id"] == 7

        r = await client.post(
            url, json={"jsonrpc": "2.0", "id": [1], "method": "GetTask"}, headers=V1
        )
        _rpc_error(r.json(), -32600)

        # 0.3 method names are unknown in 1.0.
        body: dict[str, Any] = {
            "jsonrpc": "2.0",
            "id": "a",
            "method": "message/send",
            "params": {"message": text_message("hi")},
        }
        r = await client.post(url, json=body, headers=V1)
        _rpc_error(r.json(), -32601, "METHOD_NOT_FOUND")
        assert r.json()["id"] == "a"

        body = {"jsonrpc": "2.0", "id": 2, "method": "GetTask", "params": [1]}
        _rpc_error((await client.post(url, json=body, headers=V1)).json(), -32602)

        body = {"jsonrpc": "2.0", "id": 3, "method": "GetTask", "params": {"historyLength": 3}}
        r = await client.post(url, json=body, headers=V1)
        _rpc_error(r.json(), -32602, "INVALID_PARAMS")
        violations = r.json()["error"]["data"][1]
        assert violations["@type"] == "type.googleapis.com/google.rpc.BadRequest"
        assert violations["fieldViolations"][0]["field"] == "params.id"


async def test_version_header_is_required_and_must_be_1_x() -> None:
    async with node() as (base, client):
        url = base + "/a2a/jsonrpc"
        body = {"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}}
        r = await client.post(url, json=body)
        assert r.status_code == 200
        _rpc_error(r.json(), -32009, "VERSION_NOT_SUPPORTED")
        assert "0.3" in r.json()["error"]["message"]
        r = await client.post(url, json=body, headers={"A2A-Version": "0.3"})
        _rpc_error(r.json(), -32009)
        r = await client.post(url, json=body, headers={"A2A-Version": "2.0"})
        _rpc_error(r.json(), -32009)
        for ok in ("1.0", "1.1", "1"):
            r = await client.post(url, json=body, headers={"A2A-Version": ok})
            assert "result" in r.json(), ok
        # The spec also allows the version as a query parameter.
        r = await client.post(url + "?A2A-Version=1.0", json=body)
        assert "result" in r.json()
        r = await client.get(base + "/a2a/rest/tasks")
        assert r.status_code == 400
        err = r.json()["error"]
        assert err["status"] == "FAILED_PRECONDITION"
        assert err["details"][0]["reason"] == "VERSION_NOT_SUPPORTED"


async def test_wrong_content_type_and_oversized_body_are_refused() -> None:
    async with node(max_body_bytes=2000) as (base, client):
        url = base + "/a2a/jsonrpc"
        body = json.dumps({"jsonrpc": "2.0", "id": 1, "method": "ListTasks", "params": {}})
        r = await client.post(url, content=body, headers={**V1, "Content-Type": "text/plain"})
        assert r.status_code == 415
        _rpc_error(r.json(), -32600, "UNSUPPORTED_MEDIA_TYPE")
        big = {
            "jsonrpc": "2.0",
            "id": 1,
            "method": "SendMessage",
            "params": {"message": text_message("x" * 5000)},
        }
        r = await client.post(url, json=big, headers=V1)
        assert r.status_code == 413
        _rpc_error(r.json(), -32600, "PAYLOAD_TOO_LARGE")
        # A chunked body (no Content-Length) is cut off at the limit too.

        async def chunks() -> AsyncIterator[bytes]:
            for _ in range(10):
                yield b" " * 500

        r = await client.post(
            url, content=chunks(), headers={**V1, "Content-Type": "application/json"}
        )
        assert r.status_code == 413
        rest = base + "/a2a/rest/message:send"
        r = await client.post(rest, content="{}", headers={**V1, "Content-Type": "application/xml"})
        assert r.status_code == 415
        assert r.json()["error"]["code"] == 415
        r = await client.post(rest, json={"message": text_message("y" * 5000)}, headers=V1)
        assert r.status_code == 413


async def test_rest_errors_are_google_rpc_status_bodies() -> None:
    async with node() as (base, client):
        rest = base + "/a2a/rest"
        r = await client.get(rest + "/tasks/missing", headers=V1)
        assert r.status_code == 404
        assert r.headers["content-type"].startswith("application/a2a+json")
        err = r.json()["error"]
        assert err["code"] == 404 and err["status"] == "NOT_FOUND"
        assert err["details"][0]["reason"] == "TASK_NOT_FOUND"
        assert err["details"][0]["metadata"] == {"taskId": "missing"}
        r = await client.get(rest + "/no/such/route", headers=V1)
        assert r.status_code == 404
        assert r.json()["error"]["details"][0]["reason"] == "METHOD_NOT_FOUND"
        r = await client.delete(rest + "/tasks", headers=V1)
        assert r.status_code == 404
        r = await client.post(rest + "/message:send", content=b"{oops", headers=V1)
        assert r.status_code == 400
        assert r.json()["error"]["details"][0]["reason"] == "PARSE_ERROR"
        r = await client.post(rest + "/message:send", json={"message": {"role": 5}}, headers=V1)
        assert r.status_code == 400
        assert r.json()["error"]["details"][0]["reason"] == "INVALID_PARAMS"
        r = await client.get(rest + "/tasks?pageSize=abc", headers=V1)
        assert r.status_code == 400


async def test_a_wrong_http_verb_gets_an_a2a_error_body() -> None:
    async with node() as (base, client):
        r = await client.get(base + "/a2a/jsonrpc", headers=V1)
        assert r.status_code == 405 and r.headers["allow"] == "POST"
        _rpc_error(r.json(), -32600, "INVALID_REQUEST")
        for verb, path in [("PUT", "/message:send"), ("PATCH", "/tasks"), ("DELETE", "/tasks/x")]:
            r = await client.request(verb, base + "/a2a/rest" + path, headers=V1)
            assert r.status_code == 404, (verb, path)
            assert r.headers["content-type"].startswith("application/a2a+json")
            assert r.json()["error"]["details"][0]["reason"] == "METHOD_NOT_FOUND"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"null",
        b"42",
        b'"str"',
        b"{}",
        b'{"jsonrpc":"2.0"}',
        b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":null}}',
        b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"parts":[{}]}}}',
        b'{"jsonrpc":"2.0","id":1,"method":"SendMessage","params":{"message":{"messageId":"m",'
        b'"role":"ROLE_USER","parts":[{"text":"a","data":1}]}}}',
        b'{"jsonrpc":"2.0","id":1,"method":"ListTasks","params":{"status":"BOGUS"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"ListTasks","params":{"statusTimestampAfter":"x"}}',
        b'{"jsonrpc":"2.0","id":1,"method":"GetTask","params":{"id":1e400}}',
        b"\xff\xfe\x00garbage",
        b"[" * 100_000 + b"]" * 100_000,
    ],
)
async def test_garbage_never_causes_a_server_error(raw: bytes) -> None:
    async with node() as (base, client):
        r = await client.post(
            base + "/a2a/jsonrpc", content=raw, headers={**V1, "Content-Type": "application/json"}
        )
        assert r.status_code == 200
        assert r.json()["error"]["code"] in (-32700, -32600, -32602)
        r = await client.post(
            base + "/a2a/rest/message:send",
            content=raw,
            headers={**V1, "Content-Type": "application/a2a+json"},
        )
        assert 400 <= r.status_code < 500


async def test_rest_accepts_a_tenant_prefix() -> None:
    async with node() as (base, client):
        rest = base + "/a2a/rest/acme"
        r = await client.post(
            rest + "/message:send", json={"message": text_message("tenant")}, headers=V1
        )
        assert r.status_code == 200
        task_id = r.json()["task"]["id"]
        r = await client.get(rest + f"/tasks/{task_id}", headers=V1)
        assert r.status_code == 200 and r.json()["id"] == task_id
