"""Conformance details an independent A2A 1.0 run checks: the REST error statuses of spec 5.4
(and our client mapping them back), content types on both bindings, trailing-slash endpoints,
and the card's Last-Modified / If-Modified-Since (RFC 9110 13.1.3, 13.2.2)."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, MutableMapping
from email.utils import formatdate, parsedate_to_datetime
from typing import Any

import pytest
from a2a_support.agents import echo_agent
from a2a_support.fixtures import node
from a2a_support.net import V1, running, text_message

from agent_runtime.protocols.a2a import errors
from agent_runtime.protocols.a2a.client import A2AClient
from agent_runtime.protocols.a2a.errors import (
    A2AError,
    TaskNotCancelableError,
    TaskNotFoundError,
    error_from_jsonrpc,
    error_from_rest,
)
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore
from agent_runtime.protocols.a2a.types import Task, TaskState

pytestmark = pytest.mark.anyio

CARD = "/.well-known/agent-card.json"

# --------------------------------------------------------------------------- spec 5.4

# The table of spec section 5.4 (A2A 1.0.1), row by row: error, JSON-RPC code, gRPC status,
# HTTP status. The official SDKs map the same way.
SPEC_5_4 = [
    ("TaskNotFoundError", -32001, "NOT_FOUND", 404),
    ("TaskNotCancelableError", -32002, "FAILED_PRECONDITION", 400),
    ("PushNotificationNotSupportedError", -32003, "FAILED_PRECONDITION", 400),
    ("UnsupportedOperationError", -32004, "FAILED_PRECONDITION", 400),
    ("ContentTypeNotSupportedError", -32005, "INVALID_ARGUMENT", 400),
    ("InvalidAgentResponseError", -32006, "INTERNAL", 500),
    ("ExtendedAgentCardNotConfiguredError", -32007, "FAILED_PRECONDITION", 400),
    ("ExtensionSupportRequiredError", -32008, "FAILED_PRECONDITION", 400),
    ("VersionNotSupportedError", -32009, "FAILED_PRECONDITION", 400),
]


@pytest.mark.parametrize(("name", "code", "grpc", "http"), SPEC_5_4)
async def test_errors_follow_the_spec_mapping_table_and_map_back(
    name: str, code: int, grpc: str, http: int
) -> None:
    cls: type[A2AError] = getattr(errors, name)
    assert (cls.code, cls.grpc_status, cls.http_status) == (code, grpc, http)
    err = cls("why", metadata={"taskId": "t1"})
    body = err.to_rest_body()
    assert body["error"]["code"] == http and body["error"]["status"] == grpc
    # Our client turns the REST answer (status + body) and the JSON-RPC error into the class.
    back = error_from_rest(http, json.loads(json.dumps(body)))
    assert type(back) is cls and back.message == "why" and back.metadata == {"taskId": "t1"}
    assert type(error_from_jsonrpc(err.to_jsonrpc_error())) is cls
    # Without an ErrorInfo the JSON-RPC code alone still names the class.
    assert type(error_from_jsonrpc({"code": code, "message": "m"})) is cls


async def test_a_not_cancelable_task_answers_the_spec_status_on_rest() -> None:
    async with node() as (base, client):
        rpc = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage"}
        rpc["params"] = {"message": text_message("done soon")}
        task = (await client.post(base + "/a2a/jsonrpc", json=rpc, headers=V1)).json()["result"]
        task_id = task["task"]["id"]
        r = await client.post(base + f"/a2a/rest/tasks/{task_id}:cancel", headers=V1)
        assert r.status_code == 400, r.text
        assert r.json()["error"]["status"] == "FAILED_PRECONDITION"
        assert r.json()["error"]["details"][0]["reason"] == "TASK_NOT_CANCELABLE"


# --------------------------------------------------------------------------- content types


async def test_content_types_of_both_bindings() -> None:
    async with node() as (base, client):
        for ctype in (
            "application/json",
            "application/a2a+json",
            "application/json; charset=utf-8",
        ):
            headers = {**V1, "Content-Type": ctype}
            body = {"message": text_message("ct")}
            r = await client.post(base + "/a2a/rest/message:send", json=body, headers=headers)
            assert r.status_code == 200, (ctype, r.text)
            # HTTP+JSON answers in the binding's media type (spec 11.1), errors too.
            assert r.headers["content-type"] == "application/a2a+json"
            rpc = {"jsonrpc": "2.0", "id": 1, "method": "SendMessage", "params": body}
            r = await client.post(base + "/a2a/jsonrpc", json=rpc, headers=headers)
            assert "result" in r.json(), (ctype, r.text)
            # JSON-RPC answers application/json (spec 9.1).
            assert r.headers["content-type"] == "application/json"
        r = await client.get(base + "/a2a/rest/tasks/missing", headers=V1)
        assert r.status_code == 404 and r.headers["content-type"] == "application/a2a+json"


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
ASGI = Callable[
    [Scope, Callable[[], Awaitable[Message]], Callable[[Message], Awaitable[None]]], Any
]


def answering_as(app: Any, media_type: str) -> ASGI:
    """``app`` with every JSON response relabelled ``media_type`` (what another server sends)."""
    target = media_type.encode()

    async def relabelled(scope: Scope, receive: Any, send: Any) -> None:
        async def relabel(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for key, value in message.get("headers", []):
                    media = value.split(b";", 1)[0].strip()
                    if key.lower() == b"content-type" and media.endswith(b"json"):
                        value = target
                    headers.append((key, value))
                message = {**message, "headers": headers}
            await send(message)

        await app(scope, receive, relabel)

    return relabelled


@pytest.mark.parametrize("media_type", ["application/json", "application/a2a+json"])
@pytest.mark.parametrize("binding", ["JSONRPC", "HTTP+JSON"])
async def test_our_client_takes_either_json_media_type(media_type: str, binding: str) -> None:
    app = create_a2a_app(echo_agent(), store=InMemoryTaskStore())
    async with running(answering_as(app, media_type)) as base:  # type: ignore[arg-type]
        async with A2AClient(base, bindings=[binding]) as client:
            task = await client.send_message("either")
            assert isinstance(task, Task) and task.status.state == TaskState.COMPLETED
            assert (await client.get_task(task.id)).id == task.id
            with pytest.raises(TaskNotFoundError):
                await client.get_task("missing")
            with pytest.raises(TaskNotCancelableError):
                await client.cancel_task(task.id)


# --------------------------------------------------------------------------- trailing slashes


async def test_endpoints_with_a_trailing_slash_answer_without_a_redirect() -> None:
    async with node() as (base, client):
        rpc = {"jsonrpc": "2.0", "id": 7, "method": "SendMessage"}
        rpc["params"] = {"message": text_message("slash")}
        r = await client.post(base + "/a2a/jsonrpc/", json=rpc, headers=V1)
        assert r.status_code == 200, r.status_code
        task_id = r.json()["result"]["task"]["id"]
        r = await client.post(
            base + "/a2a/jsonrpc/",
            json={"jsonrpc": "2.0", "id": 8, "method": "GetTask", "params": {"id": task_id}},
            headers=V1,
        )
        assert r.json()["result"]["id"] == task_id
        rest = base + "/a2a/rest"
        r = await client.post(rest + "/message:send/", json=rpc["params"], headers=V1)
        assert r.status_code == 200, r.text
        r = await client.get(rest + "/tasks/", headers=V1)
        assert r.status_code == 200 and r.json()["tasks"], r.text
        r = await client.get(rest + f"/tasks/{task_id}/", headers=V1)
        assert r.status_code == 200 and r.json()["id"] == task_id
        r = await client.get(base + "/a2a/jsonrpc/", headers=V1)
        assert r.status_code == 405  # the same endpoint: POST only, still no redirect


# --------------------------------------------------------------------------- Last-Modified


async def test_card_last_modified_and_if_modified_since() -> None:
    async with node() as (base, client):
        r = await client.get(base + CARD)
        last_modified = r.headers["last-modified"]
        etag = r.headers["etag"]
        assert last_modified.endswith(" GMT")
        stamp = parsedate_to_datetime(last_modified)
        assert stamp.tzinfo is not None
        assert formatdate(stamp.timestamp(), usegmt=True) == last_modified

        r = await client.get(base + CARD, headers={"If-Modified-Since": last_modified})
        assert r.status_code == 304 and r.content == b""
        assert r.headers["etag"] == etag and r.headers["last-modified"] == last_modified
        later = formatdate(stamp.timestamp() + 3600, usegmt=True)
        assert (
            await client.get(base + CARD, headers={"If-Modified-Since": later})
        ).status_code == 304
        earlier = formatdate(stamp.timestamp() - 1, usegmt=True)
        r = await client.get(base + CARD, headers={"If-Modified-Since": earlier})
        assert r.status_code == 200 and r.json()["name"] == "echo"
        for junk in ("yesterday", "", "Sun, 06 Nov 1994 08:49:37"):
            r = await client.get(base + CARD, headers={"If-Modified-Since": junk})
            assert r.status_code == 200, junk

        # If-None-Match wins when both are sent (RFC 9110 13.2.2).
        both = {"If-None-Match": '"other"', "If-Modified-Since": last_modified}
        assert (await client.get(base + CARD, headers=both)).status_code == 200
        both = {"If-None-Match": etag, "If-Modified-Since": earlier}
        assert (await client.get(base + CARD, headers=both)).status_code == 304
