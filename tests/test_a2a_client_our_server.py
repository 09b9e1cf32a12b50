"""Our A2A client against our A2A server, on both bindings, over real HTTP on loopback.

The server runs in-process under uvicorn (free port) with the echo agent, except for the
persistence test, which stops and restarts a server subprocess on the same SQLite file. What
the official SDK's server must do alike (a plain send, streaming) is tested against both servers
in ``test_a2a_interop_our_client.py``.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from contextlib import aclosing
from pathlib import Path
from typing import Any

import anyio
import pytest
from a2a_interop_support.echo_model import EchoModel
from a2a_interop_support.processes import our_echo_server, serve_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from agent_runtime.agent import Agent
from agent_runtime.protocols.a2a.auth import A2AAuthConfig
from agent_runtime.protocols.a2a.card import AgentCardConfig
from agent_runtime.protocols.a2a.client import A2AClient
from agent_runtime.protocols.a2a.errors import (
    TaskNotCancelableError,
    TaskNotFoundError,
    UnauthenticatedError,
    UnsupportedOperationError,
)
from agent_runtime.protocols.a2a.push import PushConfig
from agent_runtime.protocols.a2a.server import create_a2a_app
from agent_runtime.protocols.a2a.store import InMemoryTaskStore
from agent_runtime.protocols.a2a.types import (
    AgentSkill,
    AuthenticationInfo,
    Message,
    Task,
    TaskPushNotificationConfig,
    TaskState,
)

BINDINGS = ["JSONRPC", "HTTP+JSON"]


def _echo_app(**kwargs: Any) -> Starlette:
    agent = Agent(EchoModel(), name="Echo Agent", description="Echoes text back")
    kwargs.setdefault("store", InMemoryTaskStore())
    kwargs.setdefault("push", PushConfig(allow_private_urls=True))
    app: Starlette = create_a2a_app(agent, **kwargs)
    return app


@pytest.fixture
async def our_url() -> AsyncIterator[str]:
    async with serve_app(_echo_app()) as url:
        yield url


@pytest.fixture(params=BINDINGS)
def binding(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.mark.anyio
async def test_return_immediately_then_follow_to_completion(our_url: str, binding: str) -> None:
    async with A2AClient(our_url, bindings=[binding]) as client:
        task = await client.send_message("later", return_immediately=True)
        assert isinstance(task, Task)
        assert task.status.state in (TaskState.SUBMITTED, TaskState.WORKING, TaskState.COMPLETED)
        for use_streaming in (False, True):
            final = await client.follow_task(task.id, timeout_s=10, use_streaming=use_streaming)
            assert final.status.state == TaskState.COMPLETED
            assert final.artifacts[0].text == "echo: later"


@pytest.mark.anyio
async def test_get_task_with_history_length(our_url: str, binding: str) -> None:
    async with A2AClient(our_url, bindings=[binding]) as client:
        task = await client.send_message("history")
        assert isinstance(task, Task)
        full = await client.get_task(task.id)
        assert len(full.history) >= 2  # the question and the answer
        short = await client.get_task(task.id, history_length=1)
        assert len(short.history) == 1
        assert short.history[0].text == full.history[-1].text
        none = await client.get_task(task.id, history_length=0)
        assert none.history == []


@pytest.mark.anyio
async def test_list_tasks_filters_by_context_and_pages(our_url: str, binding: str) -> None:
    async with A2AClient(our_url, bindings=[binding]) as client:
        first = await client.send_message("one")
        assert isinstance(first, Task) and first.context_id
        ids = {first.id}
        for i in range(4):
            task = await client.send_message(f"more {i}", context_id=first.context_id)
            assert isinstance(task, Task) and task.context_id == first.context_id
            ids.add(task.id)
        await client.send_message("elsewhere")  # another context: must not be listed
        page = await client.list_tasks(context_id=first.context_id, page_size=2)
        assert len(page.tasks) == 2 and page.next_page_token
        assert page.total_size == 5
        listed = [t.id async for t in client.iter_tasks(context_id=first.context_id, page_size=2)]
        assert sorted(listed) == sorted(ids)
        completed = await client.list_tasks(
            context_id=first.context_id, status=TaskState.COMPLETED, include_artifacts=True
        )
        assert len(completed.tasks) == 5
        assert all(t.artifacts for t in completed.tasks)
        iterated = client.iter_tasks(context_id=first.context_id, status=TaskState.COMPLETED)
        assert len([t async for t in iterated]) == 5
        with pytest.raises(TypeError, match="contxt_id"):
            await client.list_tasks(contxt_id="x")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="contxt_id"):
            await client.send_message("x", contxt_id="x")  # type: ignore[call-arg]
        with pytest.raises(TypeError, match="contxt_id"):
            client.send_message_streaming("x", contxt_id="x")  # type: ignore[call-arg]


@pytest.mark.anyio
async def test_cancel_running_task_and_cancel_again_fails(our_url: str, binding: str) -> None:
    async with A2AClient(our_url, bindings=[binding]) as client:
        task = await client.send_message("slow:cancel me", return_immediately=True)
        assert isinstance(task, Task)
        canceled = await client.cancel_task(task.id)
        assert canceled.status.state == TaskState.CANCELED
        assert (await client.get_task(task.id)).status.state == TaskState.CANCELED
        with pytest.raises(TaskNotCancelableError):
            await client.cancel_task(task.id)
        with pytest.raises(TaskNotFoundError):
            await client.cancel_task("no-such-task")


@pytest.mark.anyio
async def test_subscribe_gets_snapshot_then_the_cancel(our_url: str, binding: str) -> None:
    async with A2AClient(our_url, bindings=[binding]) as client:
        task = await client.send_message("slow:watch", return_immediately=True)
        assert isinstance(task, Task)
        seen: list[str] = []
        with anyio.fail_after(10):
            async with aclosing(client.subscribe(task.id)) as events:
                async for event in events:
                    if event.task is not None:
                        seen.append("snapshot")
                        await client.cancel_task(task.id)
                    elif event.status_update is not None:
                        seen.append(event.status_update.status.state.value)
        assert seen[0] == "snapshot"
        assert seen[-1] == TaskState.CANCELED.value


@pytest.mark.anyio
async def test_input_required_answer_continues_the_same_task_and_context(
    our_url: str, binding: str
) -> None:
    async with A2AClient(our_url, bindings=[binding]) as client:
        asked = await client.send_and_wait("ask:Which size?")
        assert isinstance(asked, Task)
        assert asked.status.state == TaskState.INPUT_REQUIRED
        assert asked.status.message is not None and "Which size?" in asked.status.message.text
        # Only the task id: the server must keep the task's own context (a2a-python #1206).
        done = await client.send_and_wait(Message.user_text("large", task_id=asked.id))
        assert isinstance(done, Task)
        assert done.id == asked.id and done.context_id == asked.context_id
        assert done.status.state == TaskState.COMPLETED
        assert done.artifacts[-1].text == "answer: large"


@pytest.mark.anyio
async def test_failed_run_is_a_failed_task(our_url: str, binding: str) -> None:
    async with A2AClient(our_url, bindings=[binding]) as client:
        task = await client.send_and_wait("fail:out of paper")
    assert isinstance(task, Task)
    assert task.status.state == TaskState.FAILED


@pytest.mark.anyio
async def test_push_config_crud_and_webhook_delivery(our_url: str, binding: str) -> None:
    received: list[tuple[dict[str, str], dict[str, Any]]] = []
    done = anyio.Event()

    async def hook(request: Request) -> Response:
        body = json.loads(await request.body())
        received.append((dict(request.headers), body))
        status = body.get("statusUpdate", {}).get("status", {}).get("state")
        if (
            status == TaskState.COMPLETED.value
            or body.get("task", {}).get("status", {}).get("state") == TaskState.COMPLETED.value
        ):
            done.set()
        return Response(status_code=200)

    webhook = Starlette(routes=[Route("/hook", hook, methods=["POST"])])
    async with serve_app(webhook) as hook_url, A2AClient(our_url, bindings=[binding]) as client:
        slow = await client.send_message("slow:push", return_immediately=True)
        assert isinstance(slow, Task)
        created = await client.create_push_config(
            slow.id,
            hook_url + "/hook",
            token="tok-123",
            authentication=AuthenticationInfo(scheme="Bearer", credentials="secret-xyz"),
        )
        assert created.id and created.task_id == slow.id and created.token == "tok-123"
        got = await client.get_push_config(slow.id, created.id)
        assert got.url == hook_url + "/hook"
        listed = await client.list_push_configs(slow.id)
        assert [c.id for c in listed.configs] == [created.id]
        # Stored credentials are never echoed back.
        for config in (created, got, *listed.configs):
            assert config.authentication is None or not config.authentication.credentials
        await client.delete_push_config(slow.id, created.id)
        assert (await client.list_push_configs(slow.id)).configs == []
        await client.cancel_task(slow.id)

        # Delivery: a config given with the message sees the task through to completion.
        reply = await client.send_message(
            "push me",
            return_immediately=True,
            push_config=TaskPushNotificationConfig(url=hook_url + "/hook", token="tok-9"),
        )
        assert isinstance(reply, Task)
        with anyio.fail_after(10):
            await done.wait()
    assert received
    for headers, body in received:
        assert headers["x-a2a-notification-token"] == "tok-9"
        assert set(body) <= {"task", "statusUpdate", "artifactUpdate", "message"}
    task_ids = {
        (body.get("task") or body.get("statusUpdate") or body.get("artifactUpdate") or {}).get(
            "id" if "task" in body else "taskId"
        )
        for _, body in received
    }
    assert task_ids == {reply.id}


@pytest.mark.anyio
async def test_auth_is_enforced_and_tasks_are_private_to_their_principal(binding: str) -> None:
    auth = A2AAuthConfig(bearer_tokens={"tok-alice": "alice", "tok-bob": "bob"})
    async with serve_app(_echo_app(auth=auth)) as url:
        async with A2AClient(url, bindings=[binding]) as anonymous:
            card = await anonymous.get_card()  # the public card needs no credentials
            assert card.security_schemes
            with pytest.raises(UnauthenticatedError):
                await anonymous.send_message("let me in")
        async with A2AClient(url, bindings=[binding], bearer_token="wrong") as intruder:
            with pytest.raises(UnauthenticatedError):
                await intruder.list_tasks()
        async with (
            A2AClient(url, bindings=[binding], bearer_token="tok-alice") as alice,
            A2AClient(url, bindings=[binding], bearer_token="tok-bob") as bob,
        ):
            task = await alice.send_message("alice's secret")
            assert isinstance(task, Task) and task.status.state == TaskState.COMPLETED
            assert (await alice.get_task(task.id)).id == task.id
            with pytest.raises(TaskNotFoundError):
                await bob.get_task(task.id)
            with pytest.raises(TaskNotFoundError):
                await bob.cancel_task(task.id)
            assert task.id not in {t.id async for t in bob.iter_tasks()}
            assert task.id in {t.id async for t in alice.iter_tasks()}


@pytest.mark.anyio
async def test_auth_off_accepts_anonymous_callers(our_url: str, binding: str) -> None:
    async with A2AClient(our_url, bindings=[binding]) as client:
        card = await client.get_card()
        assert not card.security_schemes
        reply = await client.send_message("open door")
        assert isinstance(reply, Task) and reply.status.state == TaskState.COMPLETED


@pytest.mark.anyio
async def test_task_survives_a_server_restart(tmp_path: Path) -> None:
    store = str(tmp_path / "tasks.sqlite3")
    with our_echo_server("--store", store) as url:
        async with A2AClient(url) as client:
            running = await client.send_message("slow:outlive me", return_immediately=True)
            done = await client.send_message("finished before the restart")
    assert isinstance(running, Task) and isinstance(done, Task)
    with our_echo_server("--store", store) as url:
        for binding in BINDINGS:
            async with A2AClient(url, bindings=[binding]) as client:
                again = await client.get_task(running.id)
                assert again.id == running.id
                assert again.history[0].text == "slow:outlive me"
                finished = await client.get_task(done.id)
                assert finished.status.state == TaskState.COMPLETED
                assert finished.artifacts[0].text == "echo: finished before the restart"


@pytest.mark.anyio
async def test_extended_card_for_authenticated_callers(binding: str) -> None:
    secret_skill = AgentSkill(
        id="vault", name="Vault", description="Opens the vault", tags=["internal"]
    )
    card = AgentCardConfig(extended_skills=[secret_skill])
    auth = A2AAuthConfig(bearer_tokens={"tok": "alice"})
    async with serve_app(_echo_app(auth=auth, card=card)) as url:
        async with A2AClient(url, bindings=[binding], bearer_token="tok") as client:
            public = await client.get_card()
            assert public.capabilities.extended_agent_card
            assert "vault" not in [s.id for s in public.skills]
            extended = await client.get_extended_card()
            assert "vault" in [s.id for s in extended.skills]
            # The extended card replaces the cached public one for this client.
            assert await client.get_card() is extended
        async with A2AClient(url, bindings=[binding]) as anonymous:
            with pytest.raises(UnauthenticatedError):
                await anonymous.get_extended_card()


@pytest.mark.anyio
async def test_extended_card_unsupported_without_auth(our_url: str, binding: str) -> None:
    async with A2AClient(our_url, bindings=[binding]) as client:
        with pytest.raises(UnsupportedOperationError):
            await client.get_extended_card()
