"""Push notifications: delivery to a loopback webhook (explicitly allowed), SSRF screening, and
config CRUD that never echoes stored credentials."""

from __future__ import annotations

import logging
from typing import Any

import anyio
import httpx
import pytest
from a2a_support.agents import gated_agent
from a2a_support.bindings import BINDINGS
from a2a_support.fixtures import node
from a2a_support.net import text_message
from a2a_support.webhook import final_state, webhook

from agent_runtime.protocols.a2a.errors import InvalidParamsError
from agent_runtime.protocols.a2a.push import (
    NOTIFICATION_TOKEN_HEADER,
    PushConfig,
    PushNotifier,
    blocked_address,
    check_webhook_url,
    redact_url,
)
from agent_runtime.protocols.a2a.types import (
    StreamResponse,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    TaskStatus,
)

pytestmark = pytest.mark.anyio

ALLOW = PushConfig(allow_private_urls=True, backoff_s=0.01)


@pytest.mark.parametrize("binding", sorted(BINDINGS))
async def test_events_reach_a_loopback_webhook_with_token_and_credentials(binding: str) -> None:
    async with webhook() as hook, node(push=ALLOW) as (base, client):
        api = BINDINGS[binding](client, base)
        config = {
            "url": hook.url,
            "token": "tok-123",
            "authentication": {"scheme": "Bearer", "credentials": "secret-xyz"},
        }
        params = {
            "message": text_message("push me"),
            "configuration": {"taskPushNotificationConfig": config},
        }
        task = (await api.send(params)).unwrap()["task"]
        await hook.wait_for(lambda b: final_state(b) == "TASK_STATE_COMPLETED")
        bodies = hook.bodies()
        assert bodies[0]["task"]["id"] == task["id"]
        assert bodies[0]["task"]["status"]["state"] == "TASK_STATE_SUBMITTED"
        assert bodies[1]["statusUpdate"]["status"]["state"] == "TASK_STATE_WORKING"
        text = ""
        for body in bodies:
            if "artifactUpdate" in body:
                update = body["artifactUpdate"]
                chunk = update["artifact"]["parts"][0]["text"]
                text = text + chunk if update.get("append") else chunk
        assert text == "echo: push me (turn 1)"
        for headers, body in hook.posts:
            assert headers["x-a2a-notification-token"] == "tok-123"
            assert headers["authorization"] == "Bearer secret-xyz"
            assert headers["content-type"] == "application/a2a+json"
            payload = body.get("task") or next(iter(body.values()))
            assert payload.get("taskId", payload.get("id")) == task["id"]


@pytest.mark.parametrize("binding", sorted(BINDINGS))
async def test_config_crud_never_echoes_credentials(binding: str) -> None:
    async with node(push=ALLOW) as (base, client):
        api = BINDINGS[binding](client, base)
        task = (await api.send({"message": text_message("ask:later?")})).unwrap()["task"]
        config = {
            "url": "https://example.com/hook",
            "token": "tok",
            "authentication": {"scheme": "Bearer", "credentials": "s3cret"},
        }
        created = (await api.push_create(task["id"], config)).unwrap()
        assert created["taskId"] == task["id"] and created["id"]
        assert created["authentication"] == {"scheme": "Bearer"}
        assert created["url"] == "https://example.com/hook"
        fetched = (await api.push_get(task["id"], created["id"])).unwrap()
        # Neither the token nor the credentials come back from storage.
        assert fetched == {
            "id": created["id"],
            "taskId": task["id"],
            "url": "https://example.com/hook",
            "authentication": {"scheme": "Bearer"},
        }
        listed = (await api.push_list(task["id"])).unwrap()
        assert listed["configs"] == [fetched]
        assert "s3cret" not in str(listed) and "tok" not in str(listed)
        (await api.push_delete(task["id"], created["id"])).unwrap()
        (await api.push_delete(task["id"], created["id"])).unwrap()  # idempotent
        assert (await api.push_list(task["id"])).unwrap().get("configs", []) == []
        assert (await api.push_get(task["id"], created["id"])).reason == "TASK_NOT_FOUND"


@pytest.mark.parametrize("binding", sorted(BINDINGS))
async def test_private_webhook_urls_are_refused_by_default(binding: str) -> None:
    async with node() as (base, client):
        api = BINDINGS[binding](client, base)
        task = (await api.send({"message": text_message("ask:hmm?")})).unwrap()["task"]
        for url in (
            "http://127.0.0.1:9/hook",
            "http://localhost/hook",
            "http://10.1.2.3/hook",
            "http://192.168.0.1/hook",
            "http://169.254.169.254/latest/meta-data",
            "http://[::1]/hook",
            "http://[::ffff:127.0.0.1]/hook",
            "file:///etc/passwd",
        ):
            outcome = await api.push_create(task["id"], {"url": url})
            assert outcome.reason == "INVALID_PARAMS", url
        assert (await api.push_list(task["id"])).unwrap().get("configs", []) == []
        # Also when it comes with the message.
        params = {
            "message": text_message("x"),
            "configuration": {"taskPushNotificationConfig": {"url": "http://127.0.0.1:1/h"}},
        }
        assert (await api.send(params)).reason == "INVALID_PARAMS"


async def test_allowed_hosts_opt_in_one_host_and_public_hosts_pass() -> None:
    allow_one = PushConfig(allowed_hosts=["127.0.0.1"])
    await check_webhook_url("http://127.0.0.1:8080/h", allow_one)
    with pytest.raises(InvalidParamsError):
        await check_webhook_url("http://10.0.0.1/h", allow_one)
    await check_webhook_url("https://93.184.215.14/hook", PushConfig())


@pytest.mark.parametrize("status", [503, 429, 408])
async def test_a_config_added_while_running_gets_the_rest_and_retries(status: int) -> None:
    async with webhook() as hook, node(push=ALLOW) as (base, client):
        hook.fail_first = 1
        hook.fail_status = status
        api = BINDINGS["jsonrpc"](client, base)
        params = {"message": text_message("slow:1.0"), "configuration": {"returnImmediately": True}}
        task = (await api.send(params)).unwrap()["task"]
        (await api.push_create(task["id"], {"url": hook.url})).unwrap()
        await hook.wait_for(lambda b: final_state(b) == "TASK_STATE_COMPLETED")
        assert hook.attempts == len(hook.posts) + 1
        assert hook.bodies()[0] == hook.refused[0]  # the refused event came again, first


async def test_push_is_refused_when_disabled() -> None:
    async with node(push=PushConfig(enabled=False)) as (base, client):
        api = BINDINGS["rest"](client, base)
        params = {
            "message": text_message("x"),
            "configuration": {"taskPushNotificationConfig": {"url": "https://example.com/h"}},
        }
        outcome = await api.send(params)
        assert outcome.reason == "PUSH_NOTIFICATION_NOT_SUPPORTED" and outcome.code == 400


@pytest.mark.parametrize("binding", sorted(BINDINGS))
async def test_a_config_added_mid_run_gets_every_later_chunk_and_keeps_its_secrets(
    binding: str,
) -> None:
    agent, model = gated_agent()
    async with webhook() as hook, node(agent=agent, push=ALLOW) as (base, client):
        api = BINDINGS[binding](client, base)
        params = {"message": text_message("go"), "configuration": {"returnImmediately": True}}
        task = (await api.send(params)).unwrap()["task"]
        await model.first_chunk_sent.wait()
        config = {
            "url": hook.url,
            "token": "tok-late",
            "authentication": {"scheme": "Bearer", "credentials": "late-secret"},
        }
        created = (await api.push_create(task["id"], config)).unwrap()
        fetched = (await api.push_get(task["id"], created["id"])).unwrap()
        assert "token" not in fetched and "credentials" not in fetched["authentication"]
        model.release.set()
        await hook.wait_for(lambda b: final_state(b) == "TASK_STATE_COMPLETED")
    chunks = [b["artifactUpdate"] for b in hook.bodies() if "artifactUpdate" in b]
    assert chunks[0]["append"] is True  # "alpha " came before the config existed
    assert chunks[0]["artifact"]["parts"] == [{"text": "beta"}]
    assert chunks[-1]["lastChunk"] is True
    assert chunks[-1]["artifact"]["parts"] == [{"text": "alpha beta"}]
    for headers, _ in hook.posts:  # stored secrets are still used for delivery
        assert headers["x-a2a-notification-token"] == "tok-late"
        assert headers["authorization"] == "Bearer late-secret"


async def test_a_follow_up_run_is_pushed_after_the_previous_run_even_to_a_slow_webhook() -> None:
    def input_required(body: dict[str, Any]) -> bool:
        return final_state([body]) == "TASK_STATE_INPUT_REQUIRED"

    async with webhook() as hook, node(push=ALLOW) as (base, client):
        hook.hold = input_required
        api = BINDINGS["jsonrpc"](client, base)
        params = {
            "message": text_message("ask:colour?"),
            "configuration": {"taskPushNotificationConfig": {"url": hook.url}},
        }
        task = (await api.send(params)).unwrap()["task"]
        with anyio.fail_after(10):
            await hook.holding.wait()  # the webhook sits on the INPUT_REQUIRED event
        reply = text_message("red", taskId=task["id"])
        done = (await api.send({"message": reply})).unwrap()["task"]
        assert done["status"]["state"] == "TASK_STATE_COMPLETED"
        await anyio.sleep(0.2)  # room for a wrongly ordered delivery to overtake
        hook.resume.set()
        await hook.wait_for(lambda b: final_state(b) == "TASK_STATE_COMPLETED")
    states = [
        (b.get("task") or b["statusUpdate"])["status"]["state"]
        for b in hook.bodies()
        if "task" in b or "statusUpdate" in b
    ]
    assert states == [
        "TASK_STATE_SUBMITTED",
        "TASK_STATE_WORKING",
        "TASK_STATE_INPUT_REQUIRED",
        "TASK_STATE_SUBMITTED",
        "TASK_STATE_WORKING",
        "TASK_STATE_COMPLETED",
    ]


# --------------------------------------------------------------------------- screening table

BLOCKED_ADDRESSES = [
    ("2002:7f00:1::", "6to4 of 127.0.0.1"),
    ("2002:a00:1::", "6to4 of 10.0.0.1"),
    ("2002:c0a8:101::1", "6to4 of 192.168.1.1"),
    ("2002:a9fe:a9fe::", "6to4 of 169.254.169.254"),
    ("64:ff9b::7f00:1", "NAT64 of 127.0.0.1"),
    ("64:ff9b::a9fe:a9fe", "NAT64 of 169.254.169.254"),
    ("64:ff9b:1::a00:1", "local-use NAT64 (RFC 8215)"),
    ("2001:0:4136:e378:8000:63bf:80ff:fffe", "Teredo, client 127.0.0.1"),
    ("2001:0:4136:e378:8000:63bf:f5ff:fffe", "Teredo, client 10.0.0.1"),
    ("::ffff:127.0.0.1", "IPv4-mapped loopback"),
    ("::ffff:10.0.0.1", "IPv4-mapped private"),
    ("::127.0.0.1", "IPv4-compatible loopback"),
    ("::a00:1", "IPv4-compatible private"),
    ("fec0::1", "site-local"),
    ("fedc:ba98::1", "site-local"),
    ("fc00::1", "unique local"),
    ("fe80::1", "link-local"),
    ("::1", "loopback"),
    ("::", "unspecified"),
    ("127.0.0.1", "IPv4 loopback"),
    ("100.64.0.1", "shared address space"),
]
ALLOWED_ADDRESSES = [
    ("93.184.215.14", "public IPv4"),
    ("2606:4700:4700::1111", "public IPv6"),
    ("::ffff:93.184.215.14", "IPv4-mapped public"),
]


@pytest.mark.parametrize(("address", "why"), BLOCKED_ADDRESSES)
async def test_screening_refuses_addresses_that_lead_somewhere_private(
    address: str, why: str
) -> None:
    assert blocked_address(address), why
    literal = f"[{address}]" if ":" in address else address
    with pytest.raises(InvalidParamsError):
        await check_webhook_url(f"https://{literal}/hook", PushConfig())
    # A name that resolves to it is refused the same way.
    with pytest.raises(InvalidParamsError):
        await check_webhook_url("https://hook.example/h", PushConfig(resolver=answers(address)))


@pytest.mark.parametrize(("address", "why"), ALLOWED_ADDRESSES)
async def test_screening_lets_public_addresses_through(address: str, why: str) -> None:
    assert not blocked_address(address), why
    await check_webhook_url("https://hook.example/h", PushConfig(resolver=answers(address)))


# --------------------------------------------------------------------------- DNS rebinding


def answers(*addresses: str) -> Any:
    """A resolver answering ``addresses`` for every name, counting its calls."""

    async def resolve(host: str, port: int) -> list[str]:
        resolve.calls.append((host, port))  # type: ignore[attr-defined]
        return list(addresses)

    resolve.calls = []  # type: ignore[attr-defined]
    return resolve


class RebindingResolver:
    """Answers a public address the first time, loopback every time after (DNS rebinding)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> list[str]:
        self.calls.append((host, port))
        return ["93.184.215.14"] if len(self.calls) == 1 else ["127.0.0.1"]


def a_task_event(task_id: str) -> StreamResponse:
    return StreamResponse(
        task=Task(id=task_id, context_id="c", status=TaskStatus(state=TaskState.WORKING))
    )


@pytest.mark.parametrize("scheme", ["http", "https"])
async def test_delivery_connects_to_the_address_it_screened(scheme: str) -> None:
    resolver = RebindingResolver()
    seen: list[httpx.Request] = []

    def record(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200)

    client = httpx.AsyncClient(transport=httpx.MockTransport(record))
    notifier = PushNotifier(PushConfig(resolver=resolver, backoff_s=0.01), client=client)
    url = f"{scheme}://hook.example:8443/push?x=1"
    cfg = TaskPushNotificationConfig(id="p1", task_id="t1", url=url, token="push-token")
    notifier.notify("t1", [cfg], a_task_event("t1"))
    notifier.finish("t1")
    await notifier.wait_idle()
    await client.aclose()

    assert len(resolver.calls) == 1, resolver.calls  # resolved once: screened, then used
    assert len(seen) == 1
    request = seen[0]
    assert request.url.host == "93.184.215.14"  # the checked address, never the rebound one
    assert request.url.port == 8443 and request.url.path == "/push"
    assert request.headers["host"] == "hook.example:8443"
    assert request.headers[NOTIFICATION_TOKEN_HEADER] == "push-token"
    assert request.extensions["sni_hostname"] == "hook.example"


async def test_a_host_rebound_to_loopback_before_delivery_gets_nothing() -> None:
    """Registration saw a public address; every later answer is loopback: refused, not sent."""
    calls = 0

    async def rebinding(host: str, port: int) -> list[str]:
        nonlocal calls
        calls += 1
        return ["93.184.215.14"] if calls == 1 else ["127.0.0.1"]

    async with webhook() as hook:
        port = httpx.URL(hook.url).port
        assert port is not None
        config = PushConfig(resolver=rebinding, backoff_s=0.01)
        url = f"http://rebind.example:{port}/hook"
        await check_webhook_url(url, config)  # registration: public, accepted
        notifier = PushNotifier(config)
        cfg = TaskPushNotificationConfig(id="p1", task_id="t1", url=url, token="push-token")
        notifier.notify("t1", [cfg], a_task_event("t1"))
        notifier.finish("t1")
        await notifier.wait_idle()
        await notifier.aclose()
        assert calls == 2
        assert hook.attempts == 0


async def test_an_allowed_name_is_delivered_to_its_resolved_address_over_http() -> None:
    async with webhook() as hook:
        port = httpx.URL(hook.url).port
        resolver = answers("127.0.0.1")
        push = PushConfig(allowed_hosts=["hook.test"], resolver=resolver, backoff_s=0.01)
        async with node(push=push) as (base, client):
            api = BINDINGS["jsonrpc"](client, base)
            config = {"url": f"http://hook.test:{port}/hook", "token": "tok"}
            params = {
                "message": text_message("push me"),
                "configuration": {"taskPushNotificationConfig": config},
            }
            (await api.send(params)).unwrap()
            await hook.wait_for(lambda b: final_state(b) == "TASK_STATE_COMPLETED")
        assert hook.posts
        for headers, _ in hook.posts:
            assert headers["host"] == f"hook.test:{port}"
            assert headers["x-a2a-notification-token"] == "tok"
        assert all(call == ("hook.test", port) for call in resolver.calls)


# --------------------------------------------------------------------------- log redaction


async def test_webhook_urls_are_logged_without_userinfo_or_query(
    caplog: pytest.LogCaptureFixture,
) -> None:
    def fail(request: httpx.Request) -> httpx.Response:
        return httpx.Response(404)

    client = httpx.AsyncClient(transport=httpx.MockTransport(fail))
    config = PushConfig(resolver=answers("93.184.215.14"), backoff_s=0.01, max_attempts=2)
    notifier = PushNotifier(config, client=client)
    good = "https://alice:hunter2-pw@hook.example:8443/in/box?sig=query-secret-42#frag"
    refused = "https://bob:other-pw@10.0.0.1/x?key=refused-secret-7"
    caplog.set_level(logging.DEBUG, logger="agent_runtime.protocols.a2a")
    cfgs = [
        TaskPushNotificationConfig(id="p1", task_id="t1", url=good),
        TaskPushNotificationConfig(id="p2", task_id="t1", url=refused),
    ]
    notifier.notify("t1", cfgs, a_task_event("t1"))
    notifier.finish("t1")
    await notifier.wait_idle()
    await client.aclose()

    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "https://hook.example:8443/in/box" in text  # still says which webhook
    assert "https://10.0.0.1/x" in text
    for secret in ("hunter2-pw", "alice", "query-secret-42", "other-pw", "refused-secret-7"):
        assert secret not in text
    assert redact_url(good) == "https://hook.example:8443/in/box"
    assert redact_url("http://[::1]:80/p?q") == "http://[::1]:80/p"
