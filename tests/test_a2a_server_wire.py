"""Our wire models read and write what the official SDKs put on the wire (captures in
shared/a2a/wire-*), and errors round-trip through both binding forms."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from agent_runtime.protocols.a2a import errors as E
from agent_runtime.protocols.a2a.types import (
    AgentCard,
    ListTasksResponse,
    Part,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    Task,
    TaskState,
    format_timestamp,
    parse_timestamp,
)

# Captures of what a2a-sdk 1.3.0 (Python) and @a2a-js/sdk 1.3.0 servers put on the wire.
WIRE = Path(__file__).resolve().parent / "a2a_support" / "wire"
SDKS = ["wire-a2a-sdk-python", "wire-a2a-js"]


def _load(sdk: str, name: str) -> Any:
    return json.loads((WIRE / sdk / name).read_text())


def _normalise(value: Any) -> Any:
    """ProtoJSON defaults may be written or not; timestamps to milliseconds."""
    if isinstance(value, dict):
        out = {}
        for key, item in value.items():
            if item in ("", [], {}, False) and key not in ("nextPageToken", "metadata"):
                continue
            if key == "timestamp":
                item = format_timestamp(parse_timestamp(item))
            out[key] = _normalise(item)
        return out
    if isinstance(value, list):
        return [_normalise(v) for v in value]
    return value


@pytest.mark.parametrize("sdk", SDKS)
def test_agent_card_round_trips(sdk: str) -> None:
    card = _load(sdk, "wire_agent_card.json")
    assert _normalise(AgentCard.from_wire(card).to_wire()) == _normalise(card)


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize(
    "name",
    [
        "wire_sendmessage_task.json",
        "wire_sendmessage_message.json",
        "wire_sendmessage_returnImmediately.json",
    ],
)
def test_send_message_request_and_response_round_trip(sdk: str, name: str) -> None:
    capture = _load(sdk, name)
    params = capture["request"]["body"]["params"]
    assert SendMessageRequest.from_wire(params).to_wire() == params
    result = capture["response"]["body"]["result"]
    assert _normalise(SendMessageResponse.from_wire(result).to_wire()) == _normalise(result)


@pytest.mark.parametrize("sdk", SDKS)
def test_list_tasks_and_get_task_round_trip(sdk: str) -> None:
    listed = _load(sdk, "wire_listtasks.json")["response"]["body"]["result"]
    ours = ListTasksResponse.from_wire(listed).to_wire()
    assert "nextPageToken" in ours  # always present, even when empty
    assert _normalise(ours) == _normalise(listed)
    task = _load(sdk, "wire_gettask.json")["response"]["body"]["result"]
    assert Task.from_wire(task).status.state is TaskState.COMPLETED
    assert _normalise(Task.from_wire(task).to_wire()) == _normalise(task)


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize("name", ["wire_sse_stream.txt", "wire_rest_sse_stream.txt"])
def test_stream_events_round_trip(sdk: str, name: str) -> None:
    lines = [
        ln[5:] for ln in (WIRE / sdk / name).read_text().splitlines() if ln.startswith("data:")
    ]
    assert lines
    for line in lines:
        data = json.loads(line)
        event = data["result"] if "jsonrpc" in data else data
        assert _normalise(StreamResponse.from_wire(event).to_wire()) == _normalise(event)


@pytest.mark.parametrize("sdk", SDKS)
@pytest.mark.parametrize(
    ("name", "cls"),
    [
        ("wire_error_tasknotfound.json", E.TaskNotFoundError),
        ("wire_error_no_version_header.json", E.VersionNotSupportedError),
        ("wire_error_push_unsupported.json", E.PushNotificationNotSupportedError),
        ("wire_error_extended_card.json", E.UnsupportedOperationError),
        ("wire_error_v03_method_name.json", E.MethodNotFoundError),
    ],
)
def test_sdk_errors_decode_to_our_classes(sdk: str, name: str, cls: type[E.A2AError]) -> None:
    error = _load(sdk, name)["response"]["body"]["error"]
    decoded = E.error_from_jsonrpc(error)
    assert type(decoded) is cls and decoded.code == error["code"]
    ours = cls().to_jsonrpc_error()
    assert ours["code"] == error["code"]
    if "data" in error:
        assert ours["data"][0]["reason"] == error["data"][0]["reason"]
        assert ours["data"][0]["@type"] == error["data"][0]["@type"]


def test_every_error_survives_both_binding_forms() -> None:
    classes = [
        c
        for c in vars(E).values()
        if isinstance(c, type) and issubclass(c, E.A2AError) and c is not E.A2AError
    ]

    assert len(classes) >= 18
    for cls in classes:
        err = cls("msg", metadata={"taskId": "t1"})
        back = E.error_from_jsonrpc(err.to_jsonrpc_error())
        assert type(back) is cls and back.metadata == {"taskId": "t1"}  # type: ignore[attr-defined]
        rest = E.error_from_rest(cls.http_status, err.to_rest_body())
        assert type(rest) is cls and rest.message == "msg"


def test_part_is_exactly_one_of_its_kinds_and_raw_is_base64() -> None:
    assert Part(raw=b"\x00\xff", media_type="image/png").to_wire() == {
        "raw": "AP8=",
        "mediaType": "image/png",
    }
    assert Part.from_wire({"raw": "AP8=", "mediaType": "x/y"}).raw == b"\x00\xff"
    assert Part.from_wire({"raw": "AP8", "mediaType": "x/y"}).raw == b"\x00\xff"  # unpadded
    for bad in ({}, {"text": "a", "url": "u"}, {"raw": "%%%"}):
        with pytest.raises(ValueError):
            Part.from_wire(bad)
    assert Part.from_text("hi").to_wire() == {"text": "hi"}
    assert Part.from_data({"a": 1}).to_wire() == {"data": {"a": 1}}


def test_timestamps_are_utc_milliseconds() -> None:
    stamp = parse_timestamp("2026-11-30T03:15:14.556414Z")
    assert format_timestamp(stamp) == "2026-11-30T03:15:14.556Z"
    assert format_timestamp(parse_timestamp("2026-11-30T05:15:14+02:00")) == (
        "2026-11-30T03:15:14.000Z"
    )
