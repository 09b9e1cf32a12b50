"""One interface over both A2A bindings, so each behaviour test runs on JSON-RPC and REST.

Every call returns an :class:`Outcome`: the result object on success, or the error's ErrorInfo
``reason`` (the same on both bindings) plus the binding's own code (JSON-RPC code or HTTP status).
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx

from .net import V1, sse_events

ERROR_INFO = "type.googleapis.com/google.rpc.ErrorInfo"

Events = list[dict[str, Any]]
"""Parsed SSE events (a name, since ``Binding.list`` shadows ``list`` in class bodies)."""


@dataclass
class Outcome:
    result: Any = None
    reason: str | None = None
    code: int | None = None
    """JSON-RPC error code, or HTTP status for REST."""
    message: str = ""
    http_status: int = 200

    @property
    def ok(self) -> bool:
        return self.reason is None and self.code is None

    def unwrap(self) -> Any:
        assert self.ok, f"expected success, got {self.reason} {self.code}: {self.message}"
        return self.result


def _reason(details: Any) -> str | None:
    for item in details or []:
        if isinstance(item, dict) and item.get("@type") == ERROR_INFO:
            return item.get("reason")
    return None


class Binding:
    name = "?"

    def __init__(self, client: httpx.AsyncClient, base: str, headers: dict[str, str] | None = None):
        self.client = client
        self.base = base
        self.headers = {**V1, **(headers or {})}

    async def send(self, params: dict[str, Any]) -> Outcome:
        raise NotImplementedError

    async def stream(self, params: dict[str, Any]) -> Events:
        raise NotImplementedError

    async def get(self, task_id: str, history_length: int | None = None) -> Outcome:
        raise NotImplementedError

    async def list(self, **query: Any) -> Outcome:
        raise NotImplementedError

    async def cancel(self, task_id: str) -> Outcome:
        raise NotImplementedError

    async def subscribe(self, task_id: str) -> tuple[Outcome, Events]:
        raise NotImplementedError

    async def push_create(self, task_id: str, config: dict[str, Any]) -> Outcome:
        raise NotImplementedError

    async def push_get(self, task_id: str, config_id: str) -> Outcome:
        raise NotImplementedError

    async def push_list(self, task_id: str) -> Outcome:
        raise NotImplementedError

    async def push_delete(self, task_id: str, config_id: str) -> Outcome:
        raise NotImplementedError

    async def extended_card(self) -> Outcome:
        raise NotImplementedError


class JsonRpcBinding(Binding):
    name = "jsonrpc"
    _n = 0

    @property
    def url(self) -> str:
        return self.base + "/a2a/jsonrpc"

    def _body(self, method: str, params: Any) -> dict[str, Any]:
        self._n += 1
        return {"jsonrpc": "2.0", "id": self._n, "method": method, "params": params}

    async def call(self, method: str, params: Any) -> Outcome:
        r = await self.client.post(self.url, json=self._body(method, params), headers=self.headers)
        body = r.json()
        if "error" in body:
            err = body["error"]
            return Outcome(
                reason=_reason(err.get("data")) or f"code{err['code']}",
                code=err["code"],
                message=err.get("message", ""),
                http_status=r.status_code,
            )
        assert r.status_code == 200
        return Outcome(result=body["result"])

    async def _sse(self, method: str, params: Any) -> tuple[Outcome, Events]:
        async with self.client.stream(
            "POST", self.url, json=self._body(method, params), headers=self.headers
        ) as r:
            if not r.headers["content-type"].startswith("text/event-stream"):
                await r.aread()
                body = r.json()
                err = body["error"]
                return Outcome(
                    reason=_reason(err.get("data")), code=err["code"], message=err["message"]
                ), []
            events = []
            async for env in sse_events(r):
                assert env["jsonrpc"] == "2.0"
                events.append(env.get("result", env))
            return Outcome(result=True), events

    async def send(self, params: dict[str, Any]) -> Outcome:
        return await self.call("SendMessage", params)

    async def stream(self, params: dict[str, Any]) -> Events:
        outcome, events = await self._sse("SendStreamingMessage", params)
        outcome.unwrap()
        return events

    async def get(self, task_id: str, history_length: int | None = None) -> Outcome:
        params: dict[str, Any] = {"id": task_id}
        if history_length is not None:
            params["historyLength"] = history_length
        return await self.call("GetTask", params)

    async def list(self, **query: Any) -> Outcome:
        return await self.call("ListTasks", query)

    async def cancel(self, task_id: str) -> Outcome:
        return await self.call("CancelTask", {"id": task_id})

    async def subscribe(self, task_id: str) -> tuple[Outcome, Events]:
        return await self._sse("SubscribeToTask", {"id": task_id})

    async def push_create(self, task_id: str, config: dict[str, Any]) -> Outcome:
        return await self.call("CreateTaskPushNotificationConfig", {**config, "taskId": task_id})

    async def push_get(self, task_id: str, config_id: str) -> Outcome:
        return await self.call(
            "GetTaskPushNotificationConfig", {"taskId": task_id, "id": config_id}
        )

    async def push_list(self, task_id: str) -> Outcome:
        return await self.call("ListTaskPushNotificationConfigs", {"taskId": task_id})

    async def push_delete(self, task_id: str, config_id: str) -> Outcome:
        return await self.call(
            "DeleteTaskPushNotificationConfig", {"taskId": task_id, "id": config_id}
        )

    async def extended_card(self) -> Outcome:
        return await self.call("GetExtendedAgentCard", {})


class RestBinding(Binding):
    name = "rest"

    def _url(self, path: str) -> str:
        return self.base + "/a2a/rest" + path

    async def call(self, verb: str, path: str, body: Any = None) -> Outcome:
        headers = dict(self.headers)
        content = None
        if body is not None:
            headers["Content-Type"] = "application/a2a+json"
            content = json.dumps(body)
        r = await self.client.request(verb, self._url(path), content=content, headers=headers)
        data = r.json() if r.content else None
        if r.status_code >= 400:
            err = (data or {}).get("error", {})
            assert err.get("code") == r.status_code, data
            return Outcome(
                reason=_reason(err.get("details")),
                code=r.status_code,
                message=err.get("message", ""),
                http_status=r.status_code,
            )
        assert r.headers["content-type"].startswith("application/a2a+json"), r.headers
        return Outcome(result=data)

    async def _sse(self, verb: str, path: str, body: Any = None) -> tuple[Outcome, Events]:
        headers = dict(self.headers)
        content = None
        if body is not None:
            headers["Content-Type"] = "application/a2a+json"
            content = json.dumps(body)
        async with self.client.stream(verb, self._url(path), content=content, headers=headers) as r:
            if r.status_code >= 400:
                await r.aread()
                err = r.json()["error"]
                return Outcome(
                    reason=_reason(err.get("details")), code=r.status_code, message=err["message"]
                ), []
            assert r.headers["content-type"].startswith("text/event-stream")
            return Outcome(result=True), [e async for e in sse_events(r)]

    async def send(self, params: dict[str, Any]) -> Outcome:
        return await self.call("POST", "/message:send", params)

    async def stream(self, params: dict[str, Any]) -> Events:
        outcome, events = await self._sse("POST", "/message:stream", params)
        outcome.unwrap()
        return events

    async def get(self, task_id: str, history_length: int | None = None) -> Outcome:
        q = "" if history_length is None else f"?historyLength={history_length}"
        return await self.call("GET", f"/tasks/{quote(task_id)}{q}")

    async def list(self, **query: Any) -> Outcome:
        q = {k: (str(v).lower() if isinstance(v, bool) else v) for k, v in query.items()}
        return await self.call("GET", "/tasks" + ("?" + urlencode(q) if q else ""))

    async def cancel(self, task_id: str) -> Outcome:
        return await self.call("POST", f"/tasks/{quote(task_id)}:cancel", {})

    async def subscribe(self, task_id: str) -> tuple[Outcome, Events]:
        return await self._sse("GET", f"/tasks/{quote(task_id)}:subscribe")

    async def push_create(self, task_id: str, config: dict[str, Any]) -> Outcome:
        return await self.call("POST", f"/tasks/{quote(task_id)}/pushNotificationConfigs", config)

    async def push_get(self, task_id: str, config_id: str) -> Outcome:
        return await self.call(
            "GET", f"/tasks/{quote(task_id)}/pushNotificationConfigs/{config_id}"
        )

    async def push_list(self, task_id: str) -> Outcome:
        return await self.call("GET", f"/tasks/{quote(task_id)}/pushNotificationConfigs")

    async def push_delete(self, task_id: str, config_id: str) -> Outcome:
        return await self.call(
            "DELETE", f"/tasks/{quote(task_id)}/pushNotificationConfigs/{config_id}"
        )

    async def extended_card(self) -> Outcome:
        return await self.call("GET", "/extendedAgentCard")


BINDINGS = {"jsonrpc": JsonRpcBinding, "rest": RestBinding}


@asynccontextmanager
async def _event_stream(
    client: httpx.AsyncClient,
    verb: str,
    url: str,
    headers: dict[str, str],
    body: Any,
    jsonrpc: bool,
) -> AsyncIterator[AsyncIterator[dict[str, Any]]]:
    """An open SSE answer as an iterator of StreamResponse dicts, read as they arrive."""
    content = None if body is None else json.dumps(body)
    send_headers = dict(headers)
    if content is not None:
        send_headers["Content-Type"] = "application/a2a+json" if not jsonrpc else _JSON
    async with client.stream(verb, url, content=content, headers=send_headers) as r:
        assert r.status_code == 200, await r.aread()
        assert r.headers["content-type"].startswith("text/event-stream"), r.headers

        async def events() -> AsyncIterator[dict[str, Any]]:
            async for event in sse_events(r):
                if jsonrpc:
                    assert "result" in event, event
                    yield event["result"]
                else:
                    yield event

        yield events()


_JSON = "application/json"


def open_stream(api: Binding, params: dict[str, Any]) -> Any:
    """``async with open_stream(api, params) as events``: SendStreamingMessage, read live."""
    if isinstance(api, JsonRpcBinding):
        body = api._body("SendStreamingMessage", params)
        return _event_stream(api.client, "POST", api.url, api.headers, body, jsonrpc=True)
    assert isinstance(api, RestBinding)
    url = api._url("/message:stream")
    return _event_stream(api.client, "POST", url, api.headers, params, jsonrpc=False)


def open_subscribe(api: Binding, task_id: str) -> Any:
    """``async with open_subscribe(api, task_id) as events``: SubscribeToTask, read live."""
    if isinstance(api, JsonRpcBinding):
        body = api._body("SubscribeToTask", {"id": task_id})
        return _event_stream(api.client, "POST", api.url, api.headers, body, jsonrpc=True)
    assert isinstance(api, RestBinding)
    url = api._url(f"/tasks/{quote(task_id)}:subscribe")
    return _event_stream(api.client, "POST", url, api.headers, None, jsonrpc=False)
