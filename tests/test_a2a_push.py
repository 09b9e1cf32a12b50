"""Push notifications: delivery to a loopback webhook (explicitly allowed), SSRF screening, and
config CRUD that never echoes stored credentials."""

from __future__ import annotations

import pytest
from a2a_support.bindings import BINDINGS
from a2a_support.fixtures import node
from a2a_support.net import text_message
from a2a_support.webhook import final_state, webhook

from agent_runtime.protocols.a2a.errors import InvalidParamsError
from agent_runtime.protocols.a2a.push import PushConfig, check_webhook_url

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
        assert fetched == created
        listed = (await api.push_list(task["id"])).unwrap()
        assert listed["configs"] == [created]
        assert "s3cret" not in str(listed)
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


async def test_a_config_added_while_running_gets_the_rest_and_retries_on_5xx() -> None:
    async with webhook() as hook, node(push=ALLOW) as (base, client):
        hook.fail_first = 1
        api = BINDINGS["jsonrpc"](client, base)
        params = {"message": text_message("slow:1.0"), "configuration": {"returnImmediately": True}}
        task = (await api.send(params)).unwrap()["task"]
        (await api.push_create(task["id"], {"url": hook.url})).unwrap()
        await hook.wait_for(lambda b: final_state(b) == "TASK_STATE_COMPLETED")
        assert hook.attempts == len(hook.posts) + 1  # the 503 was retried


async def test_push_is_refused_when_disabled() -> None:
    async with node(push=PushConfig(enabled=False)) as (base, client):
        api = BINDINGS["rest"](client, base)
        params = {
            "message": text_message("x"),
            "configuration": {"taskPushNotificationConfig": {"url": "https://example.com/h"}},
        }
        outcome = await api.send(params)
        assert outcome.reason == "PUSH_NOTIFICATION_NOT_SUPPORTED" and outcome.code == 400
