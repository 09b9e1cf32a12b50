"""Between the gRPC binding's protobuf messages and our wire objects, both ways.

Our wire objects (:mod:`.types`) serialise to ProtoJSON, the JSON form of the very messages the
spec's ``a2a.proto`` defines, so a protobuf message and a wire object meet in that JSON:
``json_format.MessageToDict`` / ``ParseDict`` on one side, ``to_wire`` / ``model_validate`` on
the other. This module also names the service's methods (request and response message of each)
and turns an :class:`~.errors.A2AError` into a ``google.rpc.Status`` (ErrorInfo first, as spec
10.6 asks) and back.

Everything a peer sends is decoded here, so every failure is an A2A error: bytes that are not
the message, JSON nested deeper than :data:`MAX_DEPTH` or a message that breaks our schema are
invalid params; an answer we cannot read is an invalid agent response.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, TypeVar

from google.api import field_behavior_pb2
from google.protobuf import json_format
from google.protobuf.descriptor import Descriptor, FieldDescriptor
from google.protobuf.message import DecodeError
from google.rpc import error_details_pb2, status_pb2
from pydantic import BaseModel, ValidationError

from .errors import (
    BAD_REQUEST_TYPE,
    ERROR_INFO_TYPE,
    A2AError,
    InvalidAgentResponseError,
    InvalidParamsError,
    error_from_rest,
)
from .proto import a2a_pb2

SERVICE = "lf.a2a.v1.A2AService"
# Nesting cap for decoded requests, the same as the HTTP bindings' (a deeper document could be
# stored but not read back). Protobuf itself refuses messages nested past 100 levels.
MAX_DEPTH = 64
STATUS_DETAILS_KEY = "grpc-status-details-bin"

_M = TypeVar("_M", bound=BaseModel)

# The error detail types a Status may carry: importing error_details_pb2 registers them in
# protobuf's default pool, where ParseDict / MessageToDict look ``@type`` up.
_DETAIL_TYPES = (ERROR_INFO_TYPE, BAD_REQUEST_TYPE)
_DETAIL_MESSAGES = (error_details_pb2.ErrorInfo, error_details_pb2.BadRequest)


@dataclass(frozen=True)
class GrpcMethod:
    """One rpc of ``A2AService``: its request and response message names, and streaming."""

    name: str
    request: str
    response: str
    streaming: bool = False

    @property
    def path(self) -> str:
        return f"/{SERVICE}/{self.name}"


METHODS: dict[str, GrpcMethod] = {
    m.name: m
    for m in (
        GrpcMethod("SendMessage", "SendMessageRequest", "SendMessageResponse"),
        GrpcMethod("SendStreamingMessage", "SendMessageRequest", "StreamResponse", True),
        GrpcMethod("GetTask", "GetTaskRequest", "Task"),
        GrpcMethod("ListTasks", "ListTasksRequest", "ListTasksResponse"),
        GrpcMethod("CancelTask", "CancelTaskRequest", "Task"),
        GrpcMethod("SubscribeToTask", "SubscribeToTaskRequest", "StreamResponse", True),
        GrpcMethod(
            "CreateTaskPushNotificationConfig",
            "TaskPushNotificationConfig",
            "TaskPushNotificationConfig",
        ),
        GrpcMethod(
            "GetTaskPushNotificationConfig",
            "GetTaskPushNotificationConfigRequest",
            "TaskPushNotificationConfig",
        ),
        GrpcMethod(
            "ListTaskPushNotificationConfigs",
            "ListTaskPushNotificationConfigsRequest",
            "ListTaskPushNotificationConfigsResponse",
        ),
        GrpcMethod(
            "DeleteTaskPushNotificationConfig", "DeleteTaskPushNotificationConfigRequest", "Empty"
        ),
        GrpcMethod("GetExtendedAgentCard", "GetExtendedAgentCardRequest", "AgentCard"),
    )
}


def _message_class(name: str) -> Any:
    if name == "Empty":
        from google.protobuf import empty_pb2

        return empty_pb2.Empty
    return getattr(a2a_pb2, name)


def depth_of(value: Any) -> int:
    """How deep ``value`` nests objects and arrays (a scalar is 0); iterative, no recursion."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in children if isinstance(child, dict | list))
    return deepest


# --------------------------------------------------------------------------- messages


def to_json(message: Any, *, with_required: bool = False) -> dict[str, Any]:
    """A protobuf message as its ProtoJSON dict.

    ProtoJSON leaves out fields at their default value. ``with_required`` writes back those the
    spec marks REQUIRED (``nextPageToken: ""``, ``parts: []``), which our objects require, and
    only those: an unset optional string stays absent (``None`` in our objects), as it is over
    the HTTP bindings, rather than becoming ``""``.
    """
    data: dict[str, Any] = json_format.MessageToDict(message)
    if with_required:
        _add_required(message, data)
    return data


# Fields without presence that the proto marks REQUIRED, per message type.
_REQUIRED: dict[str, tuple[FieldDescriptor, ...]] = {}


def _required_fields(descriptor: Descriptor) -> tuple[FieldDescriptor, ...]:
    found = _REQUIRED.get(descriptor.full_name)
    if found is None:
        found = tuple(
            f
            for f in descriptor.fields
            if not f.has_presence
            and field_behavior_pb2.REQUIRED
            in f.GetOptions().Extensions[field_behavior_pb2.field_behavior]
        )
        _REQUIRED[descriptor.full_name] = found
    return found


def _is_map(field: FieldDescriptor) -> bool:
    return field.message_type is not None and field.message_type.GetOptions().map_entry


def _default_json(field: FieldDescriptor) -> Any:
    """The ProtoJSON of a field at its default value (ints of 64 bits are strings)."""
    if _is_map(field):
        return {}
    if field.is_repeated:
        return []
    if field.enum_type is not None:
        return field.enum_type.values_by_number[0].name
    if field.type in _JSON_STRING_TYPES:
        return (
            "" if field.type in (FieldDescriptor.TYPE_STRING, FieldDescriptor.TYPE_BYTES) else "0"
        )
    return False if field.type == FieldDescriptor.TYPE_BOOL else 0


_JSON_STRING_TYPES = frozenset(
    {
        FieldDescriptor.TYPE_STRING,
        FieldDescriptor.TYPE_BYTES,
        FieldDescriptor.TYPE_INT64,
        FieldDescriptor.TYPE_UINT64,
        FieldDescriptor.TYPE_SINT64,
        FieldDescriptor.TYPE_FIXED64,
        FieldDescriptor.TYPE_SFIXED64,
    }
)


def _add_required(message: Any, data: dict[str, Any]) -> None:
    """Write the REQUIRED fields ProtoJSON left out of ``data`` (the JSON of ``message``), in
    it and in every A2A message it holds (well-known types such as Struct are left alone)."""
    required = _required_fields(message.DESCRIPTOR)
    for field in message.DESCRIPTOR.fields:
        key = field.json_name
        if key not in data:
            if field in required:
                data[key] = _default_json(field)
            continue
        kind = field.message_type
        if kind is None or kind.full_name.startswith("google.protobuf."):
            continue
        value = getattr(message, field.name)
        if _is_map(field):
            item_kind = kind.fields_by_name["value"].message_type
            if item_kind is not None and not item_kind.full_name.startswith("google.protobuf."):
                for map_key, item in value.items():
                    _add_required(item, data[key][str(map_key)])
        elif field.is_repeated:
            for item, item_data in zip(value, data[key], strict=True):
                _add_required(item, item_data)
        else:
            _add_required(value, data[key])


def encode(name: str, data: dict[str, Any]) -> bytes:
    """The ProtoJSON ``data`` as the binary protobuf message ``name``.

    Raises :class:`InvalidParamsError` when ``data`` does not fit the message (our own objects
    always fit; this guards what a caller passed through).
    """
    try:
        message = json_format.ParseDict(data, _message_class(name)(), ignore_unknown_fields=True)
    except (json_format.ParseError, ValueError, TypeError) as exc:
        raise InvalidParamsError(f"Invalid parameters for {name}: {exc}") from None
    body: bytes = message.SerializeToString()
    return body


def encode_model(name: str, value: BaseModel | None) -> bytes:
    """A wire object (or ``None`` for ``Empty``) as the binary protobuf message ``name``."""
    if value is None:
        return b""
    data = value.to_wire() if hasattr(value, "to_wire") else value.model_dump(by_alias=True)
    return encode(name, data)


def decode(name: str, raw: bytes, *, with_required: bool = False) -> dict[str, Any]:
    """Binary protobuf ``raw`` as message ``name``, in ProtoJSON; bad input is invalid params.

    ``with_required``: see :func:`to_json`.
    """
    message = _message_class(name)()
    try:
        message.ParseFromString(raw)
    except (DecodeError, RecursionError, ValueError) as exc:
        if isinstance(exc, RecursionError) or "depth" in str(exc).lower():
            raise InvalidParamsError(
                f"Request is not a valid {name} message: nested too deep ({exc})"
            ) from None
        raise InvalidParamsError(f"Request is not a valid {name} message: {exc}") from None
    data = to_json(message)
    if depth_of(data) > MAX_DEPTH:
        raise InvalidParamsError.from_violations(
            [("", f"nesting exceeds the limit of {MAX_DEPTH} levels")],
            message=f"Invalid parameters: nesting exceeds the limit of {MAX_DEPTH} levels",
        )
    if with_required:
        _add_required(message, data)
    return data


def decode_model(name: str, raw: bytes, model: type[_M]) -> _M:
    """Binary ``raw`` (message ``name``) validated as our wire object ``model``."""
    data = decode(name, raw)
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        violations = []
        for err in exc.errors(include_url=False)[:20]:
            field = ".".join(str(p) for p in err.get("loc", ()))
            violations.append((field, str(err.get("msg", "invalid"))))
        raise InvalidParamsError.from_violations(violations) from None


def decode_answer(name: str, raw: bytes, what: str) -> dict[str, Any]:
    """A peer's answer (message ``name``) as ProtoJSON; unreadable is an invalid response."""
    try:
        return decode(name, raw, with_required=True)
    except InvalidParamsError as exc:
        raise InvalidAgentResponseError(f"{what}: {exc.message}") from None


# --------------------------------------------------------------------------- errors

# gRPC status code numbers (google.rpc.Code), by the names errors.py uses.
GRPC_CODES: dict[str, int] = {
    "OK": 0,
    "CANCELLED": 1,
    "UNKNOWN": 2,
    "INVALID_ARGUMENT": 3,
    "DEADLINE_EXCEEDED": 4,
    "NOT_FOUND": 5,
    "ALREADY_EXISTS": 6,
    "PERMISSION_DENIED": 7,
    "RESOURCE_EXHAUSTED": 8,
    "FAILED_PRECONDITION": 9,
    "ABORTED": 10,
    "OUT_OF_RANGE": 11,
    "UNIMPLEMENTED": 12,
    "INTERNAL": 13,
    "UNAVAILABLE": 14,
    "DATA_LOSS": 15,
    "UNAUTHENTICATED": 16,
}

# The HTTP status that means the same as a gRPC code, to rebuild errors that carry no ErrorInfo.
_HTTP_FOR_CODE = {
    "INVALID_ARGUMENT": 400,
    "FAILED_PRECONDITION": 400,
    "OUT_OF_RANGE": 400,
    "UNAUTHENTICATED": 401,
    "PERMISSION_DENIED": 403,
    "NOT_FOUND": 404,
    "RESOURCE_EXHAUSTED": 413,
    "UNIMPLEMENTED": 501,
}


def status_of(error: A2AError) -> tuple[int, bytes]:
    """The gRPC code of ``error`` and its ``google.rpc.Status`` (serialised), details included."""
    code = GRPC_CODES.get(error.grpc_status, GRPC_CODES["INTERNAL"])
    details = [d for d in error.error_details() if d.get("@type") in _DETAIL_TYPES]
    status = status_pb2.Status()
    try:
        json_format.ParseDict({"code": code, "message": error.message, "details": details}, status)
    except (json_format.ParseError, ValueError, TypeError):
        status = status_pb2.Status(code=code, message=error.message)
    body: bytes = status.SerializeToString()
    return code, body


def error_of(code_name: str, message: str, status_bin: bytes | None) -> A2AError:
    """Rebuild the A2A error a peer answered with (its ErrorInfo reason, else its gRPC code)."""
    details: list[dict[str, Any]] = []
    if status_bin:
        status = status_pb2.Status()
        try:
            status.ParseFromString(status_bin)
            for item in status.details:
                if item.type_url in _DETAIL_TYPES:
                    details.append(json_format.MessageToDict(item))
            message = status.message or message
        except (DecodeError, json_format.ParseError, ValueError, TypeError):
            details = []
    http_status = _HTTP_FOR_CODE.get(code_name, 500)
    return error_from_rest(http_status, {"error": {"message": message, "details": details}})
