"""Every A2A method against our server, on both bindings (JSON-RPC and HTTP+JSON).

The agent is the echo model of ``a2a_support.agents`` behind a real ``Agent``; the server runs
under uvicorn on a free loopback port; requests are raw httpx so the wire itself is what is
tested.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

import anyio
import pytest
from a2a_support.bindings import BINDINGS, Binding
from a2a_support.fixtures import node
from a2a_support.net import text_message

from agent_runtime.protocols.a2a.types import StreamResponse, Task

pytestmark = pytest.mark.anyio


@pytest.fixture(params=sorted(BINDINGS))
async def api(request: pytest.FixtureRequest) -> AsyncIterator[Binding]:
    async with node() as (base, client):
        yield BINDINGS[request.param](client, base)


def _task(result: dict[str, Any]) -> dict[str, Any]:
    assert set(result) == {"task"}, result
    return result["task"]  # type: ignore[no-any-return]


async def _send(api: Binding, text: str, **config: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"message": text_message(text)}
    if config:
        params["configuration"] = config
    return _task((await api.send(params)).unwrap())


async def _wait_state(api: Binding, task_id: str, *states: str) -> dict[str, Any]:
    with anyio.fail_after(10):
        while True:
            task = (await api.get(task_id)).unwrap()
            if task["status"]["state"] in states:
                return task  # type: ignore[no-any-return]
            await anyio.sleep(0.02)


async def test_send_message_blocks_until_the_task_completes(api: Binding) -> None:
    task = await _send(api, "hello")
    Task.from_wire(task)
    assert task["status"]["state"] == "TASK_STATE_COMPLETED"
    assert task["status"]["message"]["role"] == "ROLE_AGENT"
    assert task["artifacts"][0]["parts"] == [{"text": "echo: hello (turn 1)"}]
    assert [m["role"] for m in task["history"]] == ["ROLE_USER", "ROLE_AGENT"]
    assert task["history"][0]["taskId"] == task["id"]
    assert task["history"][0]["contextId"] == task["contextId"]


async def test_return_immediately_answers_before_the_run_ends(api: Binding) -> None:
    task = await _send(api, "slow:0.3", returnImmediately=True)
    assert task["status"]["state"] in ("TASK_STATE_SUBMITTED", "TASK_STATE_WORKING")
    assert "artifacts" not in task
    done = await _wait_state(api, task["id"], "TASK_STATE_COMPLETED")
    assert done["artifacts"][0]["parts"][0]["text"] == "echo: slow:0.3 (turn 1)"


async def test_stream_starts_with_the_task_and_ends_after_the_terminal_status(
    api: Binding,
) -> None:
    events = await api.stream({"message": text_message("stream me")})
    parsed = [StreamResponse.from_wire(e) for e in events]
    assert parsed[0].task is not None
    assert parsed[0].task.status.state == "TASK_STATE_SUBMITTED"
    assert parsed[1].status_update is not None
    assert parsed[1].status_update.status.state == "TASK_STATE_WORKING"
    last = parsed[-1].status_update
    assert last is not None and last.status.state == "TASK_STATE_COMPLETED"
    # Rebuild the artifact from its chunks as a client would: append, or replace.
    text = ""
    for event in parsed:
        if event.artifact_update is not None:
            chunk = event.artifact_update.artifact.text
            text = text + chunk if event.artifact_update.append else chunk
    assert text == "echo: stream me (turn 1)"
    assert [e.artifact_update.last_chunk for e in parsed if e.artifact_update][-1] is True
    assert all(e.task_id == parsed[0].task.id for e in (p.payload for p in parsed[1:]))


async def test_stream_reports_tool_activity_as_status_updates(api: Binding) -> None:
    events = await api.stream({"message": text_message("tool:quiet")})
    data = [
        e["statusUpdate"]["status"]["message"]["parts"][0]["data"]
        for e in events
        if "statusUpdate" in e
        and "message" in e["statusUpdate"]["status"]
        and "data" in e["statusUpdate"]["status"]["message"]["parts"][0]
    ]
    assert data[0]["toolCall"]["name"] == "shout"
    assert data[1]["toolResult"] == {
        "id": "call_1",
        "name": "shout",
        "isError": False,
        "text": "QUIET!",
    }
    assert events[-1]["statusUpdate"]["status"]["message"]["parts"][0]["text"] == (
        "tool said: QUIET!"
    )


async def test_get_task_honours_history_length(api: Binding) -> None:
    task = await _send(api, "remember")
    full = (await api.get(task["id"])).unwrap()
    assert len(full["history"]) == 2
    assert "history" not in (await api.get(task["id"], history_length=0)).unwrap()
    last = (await api.get(task["id"], history_length=1)).unwrap()["history"]
    assert [m["role"] for m in last] == ["ROLE_AGENT"]


async def test_get_unknown_task_is_task_not_found(api: Binding) -> None:
    outcome = await api.get("no-such-task")
    assert outcome.reason == "TASK_NOT_FOUND"
    assert outcome.code == (-32001 if api.name == "jsonrpc" else 404)


async def test_list_tasks_pages_newest_first_with_a_cursor(api: Binding) -> None:
    ids = []
    for i in range(5):
        ids.append((await _send(api, f"t{i}"))["id"])
        await anyio.sleep(0.003)  # distinct millisecond timestamps
    seen: list[str] = []
    token = None
    pages = 0
    while True:
        query: dict[str, Any] = {"pageSize": 2}
        if token:
            query["pageToken"] = token
        page = (await api.list(**query)).unwrap()
        pages += 1
        assert page["totalSize"] == 5 and page["pageSize"] == 2
        seen += [t["id"] for t in page["tasks"]]
        token = page["nextPageToken"]
        if not token:
            break
    assert pages == 3
    assert seen == list(reversed(ids))


async def test_list_tasks_filters_and_leaves_artifacts_out_by_default(api: Binding) -> None:
    first = await _send(api, "one")
    ctx = first["contextId"]
    params = {"message": text_message("two", contextId=ctx)}
    second = _task((await api.send(params)).unwrap())
    await _send(api, "elsewhere")
    asked = await _send(api, "ask:which one?")
    by_ctx = (await api.list(contextId=ctx)).unwrap()
    assert {t["id"] for t in by_ctx["tasks"]} == {first["id"], second["id"]}
    assert all("artifacts" not in t for t in by_ctx["tasks"])
    with_art = (await api.list(contextId=ctx, includeArtifacts=True)).unwrap()
    assert all(t["artifacts"] for t in with_art["tasks"])
    waiting = (await api.list(status="TASK_STATE_INPUT_REQUIRED")).unwrap()
    assert [t["id"] for t in waiting["tasks"]] == [asked["id"]]
    no_history = (await api.list(historyLength=0)).unwrap()
    assert all("history" not in t for t in no_history["tasks"])


async def test_list_tasks_rejects_bad_page_size_and_token(api: Binding) -> None:
    assert (await api.list(pageSize=0)).reason == "INVALID_PARAMS"
    assert (await api.list(pageSize=101)).reason == "INVALID_PARAMS"
    assert (await api.list(pageToken="%%%not-a-token")).reason == "INVALID_PARAMS"


async def test_cancel_stops_a_running_task(api: Binding) -> None:
    task = await _send(api, "slow:30", returnImmediately=True)
    with anyio.fail_after(5):
        canceled = (await api.cancel(task["id"])).unwrap()
    assert canceled["status"]["state"] == "TASK_STATE_CANCELED"
    stored = (await api.get(task["id"])).unwrap()
    assert stored["status"]["state"] == "TASK_STATE_CANCELED"
    again = await api.cancel(task["id"])
    assert again.reason == "TASK_NOT_CANCELABLE"
    assert again.code == (-32002 if api.name == "jsonrpc" else 400)


async def test_cancel_unknown_task_is_task_not_found(api: Binding) -> None:
    assert (await api.cancel("nope")).reason == "TASK_NOT_FOUND"


async def test_subscribe_starts_with_a_snapshot_and_follows_to_the_end(api: Binding) -> None:
    task = await _send(api, "slow:1.0", returnImmediately=True)
    outcome, events = await api.subscribe(task["id"])
    outcome.unwrap()
    assert events[0]["task"]["id"] == task["id"]
    assert events[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_subscribe_to_a_terminal_task_is_unsupported(api: Binding) -> None:
    task = await _send(api, "done already")
    outcome, events = await api.subscribe(task["id"])
    assert outcome.reason == "UNSUPPORTED_OPERATION" and events == []


async def test_input_required_then_follow_up_continues_in_the_task_context(
    api: Binding,
) -> None:
    asked = await _send(api, "ask:which colour?")
    assert asked["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
    assert asked["status"]["message"]["parts"] == [{"text": "which colour?"}]
    # The follow-up carries only the taskId: the server must use the task's contextId.
    reply = text_message("blue", taskId=asked["id"])
    done = _task((await api.send({"message": reply})).unwrap())
    assert done["id"] == asked["id"]
    assert done["contextId"] == asked["contextId"]
    assert done["status"]["state"] == "TASK_STATE_COMPLETED"
    # The model saw the earlier turn: this is the second user message of the conversation.
    assert done["artifacts"][0]["parts"][0]["text"] == "echo: blue (turn 2)"
    assert [m["role"] for m in done["history"]] == ["ROLE_USER", "ROLE_AGENT"] * 2
    assert all(m["contextId"] == asked["contextId"] for m in done["history"])


async def test_follow_up_with_another_context_is_rejected(api: Binding) -> None:
    asked = await _send(api, "ask:really?")
    reply = text_message("yes", taskId=asked["id"], contextId="some-other-context")
    outcome = await api.send({"message": reply})
    assert outcome.reason == "INVALID_PARAMS"
    unchanged = (await api.get(asked["id"])).unwrap()
    assert unchanged["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"


async def test_follow_up_to_a_terminal_task_is_unsupported(api: Binding) -> None:
    done = await _send(api, "finished")
    outcome = await api.send({"message": text_message("more", taskId=done["id"])})
    assert outcome.reason == "UNSUPPORTED_OPERATION"
    assert outcome.code == (-32004 if api.name == "jsonrpc" else 400)


async def test_follow_up_to_an_unknown_task_is_task_not_found(api: Binding) -> None:
    outcome = await api.send({"message": text_message("hi", taskId="missing")})
    assert outcome.reason == "TASK_NOT_FOUND"


async def test_new_task_in_an_existing_context_continues_the_conversation(api: Binding) -> None:
    first = await _send(api, "first")
    params = {"message": text_message("second", contextId=first["contextId"])}
    second = _task((await api.send(params)).unwrap())
    assert second["id"] != first["id"]
    assert second["contextId"] == first["contextId"]
    assert second["artifacts"][0]["parts"][0]["text"] == "echo: second (turn 2)"


async def test_a_failing_run_ends_the_task_failed(api: Binding) -> None:
    task = await _send(api, "fail")
    assert task["status"]["state"] == "TASK_STATE_FAILED"
    assert "the model broke on purpose" in task["status"]["message"]["parts"][0]["text"]


async def test_unsupported_part_media_type_is_refused(api: Binding) -> None:
    message = text_message("look")
    message["parts"].append({"url": "https://example.com/a.png", "mediaType": "image/png"})
    outcome = await api.send({"message": message})
    assert outcome.reason == "CONTENT_TYPE_NOT_SUPPORTED"
    assert outcome.code == (-32005 if api.name == "jsonrpc" else 400)


async def test_data_parts_reach_the_model_as_json(api: Binding) -> None:
    message = text_message("payload:")
    message["parts"].append({"data": {"k": [1, 2]}, "mediaType": "application/json"})
    task = _task((await api.send({"message": message})).unwrap())
    assert task["artifacts"][0]["parts"][0]["text"] == 'echo: payload:\n{"k": [1, 2]} (turn 1)'


async def test_message_without_parts_is_invalid_params(api: Binding) -> None:
    message = text_message("x")
    message["parts"] = []
    outcome = await api.send({"message": message})
    assert outcome.reason == "INVALID_PARAMS"
    assert (await api.send({})).reason == "INVALID_PARAMS"


async def test_a_message_must_come_from_the_user_role(api: Binding) -> None:
    for role in ("ROLE_AGENT", "ROLE_UNSPECIFIED"):
        message = text_message("who speaks?")
        message["role"] = role
        outcome = await api.send({"message": message})
        assert outcome.reason == "INVALID_PARAMS", role
        assert "message.role" in outcome.message
    assert (await api.list()).unwrap()["tasks"] == []


async def test_extended_card_is_unsupported_without_auth(api: Binding) -> None:
    outcome = await api.extended_card()
    assert outcome.reason == "UNSUPPORTED_OPERATION"


async def test_push_config_methods_need_an_existing_task(api: Binding) -> None:
    outcome = await api.push_create("missing", {"url": "https://example.com/hook"})
    assert outcome.reason == "TASK_NOT_FOUND"


async def test_cancel_a_task_waiting_for_input(api: Binding) -> None:
    asked = await _send(api, "ask:still there?")
    canceled = (await api.cancel(asked["id"])).unwrap()
    assert canceled["status"]["state"] == "TASK_STATE_CANCELED"
    outcome = await api.send({"message": text_message("yes", taskId=asked["id"])})
    assert outcome.reason == "UNSUPPORTED_OPERATION"


async def test_subscribe_to_a_task_waiting_for_input_follows_it_to_the_end(api: Binding) -> None:
    # Spec 3.1.6: the stream stays open until a terminal state (more: test_a2a_subscribe_*).
    from a2a_support.bindings import open_subscribe

    asked = await _send(api, "ask:and now?")
    async with open_subscribe(api, asked["id"]) as events:
        first = await anext(events)
        assert first["task"]["status"]["state"] == "TASK_STATE_INPUT_REQUIRED"
        (await api.cancel(asked["id"])).unwrap()
        with anyio.fail_after(10):
            rest = [event async for event in events]
    assert rest[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_CANCELED"


async def test_all_subscribers_get_the_same_events(api: Binding) -> None:
    task = await _send(api, "slow:1.0", returnImmediately=True)
    results: list[list[dict[str, Any]]] = []

    async def follow() -> None:
        outcome, events = await api.subscribe(task["id"])
        outcome.unwrap()
        results.append(events)

    async with anyio.create_task_group() as tg:
        tg.start_soon(follow)
        tg.start_soon(follow)
    first, second = results
    assert [list(e) for e in first[1:]] == [list(e) for e in second[1:]]
    assert first[-1] == second[-1]
    assert first[-1]["statusUpdate"]["status"]["state"] == "TASK_STATE_COMPLETED"


async def test_a_message_to_a_running_task_is_refused(api: Binding) -> None:
    task = await _send(api, "ask:q?")
    slow = text_message("slow:1.5", taskId=task["id"])
    first = await api.send({"message": slow, "configuration": {"returnImmediately": True}})
    assert first.unwrap()["task"]["status"]["state"] in (
        "TASK_STATE_SUBMITTED",
        "TASK_STATE_WORKING",
    )
    clash = await api.send({"message": text_message("again", taskId=task["id"])})
    assert clash.reason == "UNSUPPORTED_OPERATION"
    done = await _wait_state(api, task["id"], "TASK_STATE_COMPLETED")
    assert done["artifacts"][0]["parts"][0]["text"] == "echo: slow:1.5 (turn 2)"


async def test_list_finds_running_tasks_by_working_state(api: Binding) -> None:
    task = await _send(api, "slow:1.5", returnImmediately=True)
    await _send(api, "quick")
    working = (await api.list(status="TASK_STATE_WORKING")).unwrap()
    assert [t["id"] for t in working["tasks"]] == [task["id"]]
    assert working["tasks"][0]["status"]["state"] == "TASK_STATE_WORKING"
    await _wait_state(api, task["id"], "TASK_STATE_COMPLETED")
    assert (await api.list(status="TASK_STATE_WORKING")).unwrap()["tasks"] == []


async def test_referenced_tasks_are_given_to_the_model(api: Binding) -> None:
    earlier = await _send(api, "the answer is 42")
    params = {
        "message": text_message("use it", referenceTaskIds=[earlier["id"], "not-mine"]),
    }
    task = _task((await api.send(params)).unwrap())
    text = task["artifacts"][0]["parts"][0]["text"]
    assert text.startswith(
        f"echo: [referenced task {earlier['id']} (TASK_STATE_COMPLETED): "
        "echo: the answer is 42 (turn 1)]\nuse it"
    )
    assert "not-mine" not in text
