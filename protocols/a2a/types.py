"""A2A 1.0 wire objects as pydantic v2 models (from ``a2a-v1.0.1.proto``).

The JSON form is ProtoJSON, as the official SDKs write it: camelCase field names, enums as their
``SCREAMING_SNAKE`` names, ``bytes`` as base64, timestamps as ISO 8601 UTC with a ``Z``. ProtoJSON
leaves out fields that hold their default (empty string, empty list, ``false``, unset message), so
``to_wire()`` dumps with ``exclude_defaults``: a field is written only when it says something.
Fields the proto marks ``optional`` (explicit presence, e.g. ``capabilities.streaming``) default to
``None`` here, so an explicit ``false`` still goes on the wire.

Unknown fields are ignored on input (spec 5.7: forward compatibility). Python code may use the
snake_case names; the wire uses the aliases.

A ``oneof`` in the proto (``Part.content``, ``SecurityScheme.scheme``, ``StreamResponse.payload``
...) is one model with one optional field per branch and a check that exactly one is set.
"""

from __future__ import annotations

import base64
import binascii
import os
from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PlainSerializer,
    field_validator,
    model_validator,
)
from pydantic.alias_generators import to_camel

JSONValue = Any
"""Any value ``json.dumps`` accepts (a ``google.protobuf.Value``)."""

PROTOCOL_VERSION = "1.0"
"""The protocol version this package speaks (``A2A-Version`` header, ``protocolVersion``)."""

A2A_CONTENT_TYPE = "application/a2a+json"
"""Media type of the HTTP+JSON (REST) binding."""

JSONRPC_BINDING = "JSONRPC"
HTTP_JSON_BINDING = "HTTP+JSON"
GRPC_BINDING = "GRPC"


def new_id() -> str:
    """A fresh opaque identifier (UUID4 text), the form both official SDKs use.

    Built from ``os.urandom`` like ``uuid.uuid4()``, without the ``UUID`` object (half the
    cost: a request makes several)."""
    raw = bytearray(os.urandom(16))
    raw[6] = (raw[6] & 0x0F) | 0x40  # version 4
    raw[8] = (raw[8] & 0x3F) | 0x80  # RFC 4122 variant
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def utc_now() -> datetime:
    return datetime.now(UTC)


def format_timestamp(value: datetime) -> str:
    """ISO 8601 in UTC with millisecond precision and a ``Z`` (spec 5.6.1)."""
    if value.tzinfo is not UTC:
        value = value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    return value.replace(tzinfo=None).isoformat(timespec="milliseconds") + "Z"


def parse_timestamp(value: str) -> datetime:
    """Parse an ISO 8601 timestamp (``Z`` or offset; naive means UTC)."""
    text = value.strip()
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    parsed = datetime.fromisoformat(text)
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


# Plain serializers on the type (not field serializers) so ``exclude_defaults`` still drops an
# unset field before the serializer would see it.
Base64Bytes = Annotated[
    bytes,
    PlainSerializer(
        lambda v: base64.b64encode(v).decode("ascii"), return_type=str, when_used="json"
    ),
]
Timestamp = Annotated[
    datetime, PlainSerializer(format_timestamp, return_type=str, when_used="json")
]


class A2AModel(BaseModel):
    """Base of every wire object: camelCase aliases, unknown fields ignored."""

    model_config = ConfigDict(
        alias_generator=to_camel,
        validate_by_name=True,
        validate_by_alias=True,
        serialize_by_alias=True,
        extra="ignore",
    )

    def to_wire(self) -> dict[str, Any]:
        """The ProtoJSON dict: aliases, defaults left out."""
        return self.model_dump(mode="json", by_alias=True, exclude_defaults=True)

    def to_wire_json(self) -> str:
        """The ProtoJSON text (compact)."""
        return self.model_dump_json(by_alias=True, exclude_defaults=True)

    @classmethod
    def from_wire(cls, data: Any) -> Self:
        """Validate a parsed JSON value (camelCase or snake_case keys)."""
        return cls.model_validate(data)


# --------------------------------------------------------------------------- enums


class TaskState(StrEnum):
    UNSPECIFIED = "TASK_STATE_UNSPECIFIED"
    SUBMITTED = "TASK_STATE_SUBMITTED"
    WORKING = "TASK_STATE_WORKING"
    COMPLETED = "TASK_STATE_COMPLETED"
    FAILED = "TASK_STATE_FAILED"
    CANCELED = "TASK_STATE_CANCELED"
    INPUT_REQUIRED = "TASK_STATE_INPUT_REQUIRED"
    REJECTED = "TASK_STATE_REJECTED"
    AUTH_REQUIRED = "TASK_STATE_AUTH_REQUIRED"

    @property
    def is_terminal(self) -> bool:
        """No further messages are accepted (completed, failed, canceled, rejected)."""
        return self in TERMINAL_STATES

    @property
    def is_interrupted(self) -> bool:
        """The agent waits for the client (input or auth required)."""
        return self in INTERRUPTED_STATES


TERMINAL_STATES = frozenset(
    {TaskState.COMPLETED, TaskState.FAILED, TaskState.CANCELED, TaskState.REJECTED}
)
INTERRUPTED_STATES = frozenset({TaskState.INPUT_REQUIRED, TaskState.AUTH_REQUIRED})


class Role(StrEnum):
    UNSPECIFIED = "ROLE_UNSPECIFIED"
    USER = "ROLE_USER"
    AGENT = "ROLE_AGENT"


# --------------------------------------------------------------------------- content


def _decode_base64(value: Any) -> Any:
    if isinstance(value, str):
        text = value.strip()
        padded = text + "=" * (-len(text) % 4)
        try:
            if "-" in text or "_" in text:
                return base64.urlsafe_b64decode(padded)
            return base64.b64decode(padded, validate=True)
        except (binascii.Error, ValueError) as exc:
            raise ValueError(f"'raw' is not valid base64: {exc}") from None
    return value


class Part(A2AModel):
    """One piece of content: exactly one of ``text``, ``raw``, ``url``, ``data``.

    ``raw`` holds bytes in Python and base64 text on the wire.
    """

    text: str | None = None
    raw: Base64Bytes | None = None
    url: str | None = None
    data: JSONValue = None
    metadata: dict[str, Any] | None = None
    filename: str | None = None
    media_type: str | None = None

    @field_validator("raw", mode="before")
    @classmethod
    def _raw_from_base64(cls, value: Any) -> Any:
        return _decode_base64(value)

    @model_validator(mode="after")
    def _exactly_one_content(self) -> Self:
        # The common case first, without building a list (this runs for every Part).
        if self.text is not None and self.raw is None and self.url is None and self.data is None:
            return self
        present = [
            name for name in ("text", "raw", "url", "data") if getattr(self, name) is not None
        ]
        if len(present) != 1:
            raise ValueError(
                "a Part holds exactly one of 'text', 'raw', 'url', 'data'"
                + (f"; got {', '.join(present)}" if present else "; got none")
            )
        return self

    @classmethod
    def from_text(cls, text: str, **kw: Any) -> Part:
        return cls(text=text, **kw)

    @classmethod
    def from_data(cls, data: JSONValue, **kw: Any) -> Part:
        return cls(data=data, **kw)

    @classmethod
    def from_bytes(cls, raw: bytes, media_type: str, **kw: Any) -> Part:
        return cls(raw=raw, media_type=media_type, **kw)

    @classmethod
    def from_url(cls, url: str, media_type: str | None = None, **kw: Any) -> Part:
        return cls(url=url, media_type=media_type, **kw)


class Message(A2AModel):
    """One unit of communication between client and agent."""

    message_id: str
    context_id: str | None = None
    task_id: str | None = None
    role: Role
    parts: list[Part]
    metadata: dict[str, Any] | None = None
    extensions: list[str] = Field(default_factory=list)
    reference_task_ids: list[str] = Field(default_factory=list)

    @classmethod
    def user_text(
        cls, text: str, *, context_id: str | None = None, task_id: str | None = None
    ) -> Message:
        return cls(
            message_id=new_id(),
            role=Role.USER,
            parts=[Part(text=text)],
            context_id=context_id,
            task_id=task_id,
        )

    @classmethod
    def agent_text(
        cls, text: str, *, context_id: str | None = None, task_id: str | None = None
    ) -> Message:
        return cls(
            message_id=new_id(),
            role=Role.AGENT,
            parts=[Part(text=text)],
            context_id=context_id,
            task_id=task_id,
        )

    @property
    def text(self) -> str:
        """The text parts joined (what a text-only reader sees)."""
        return "".join(p.text for p in self.parts if p.text is not None)


class Artifact(A2AModel):
    """An output of a task."""

    artifact_id: str
    name: str | None = None
    description: str | None = None
    parts: list[Part]
    metadata: dict[str, Any] | None = None
    extensions: list[str] = Field(default_factory=list)

    @property
    def text(self) -> str:
        return "".join(p.text for p in self.parts if p.text is not None)


class TaskStatus(A2AModel):
    state: TaskState
    message: Message | None = None
    timestamp: Timestamp | None = None

    @field_validator("timestamp", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> Any:
        return parse_timestamp(value) if isinstance(value, str) else value


class Task(A2AModel):
    """The unit of work: status, artifacts and history."""

    id: str
    context_id: str | None = None
    status: TaskStatus
    artifacts: list[Artifact] = Field(default_factory=list)
    history: list[Message] = Field(default_factory=list)
    metadata: dict[str, Any] | None = None


class TaskStatusUpdateEvent(A2AModel):
    task_id: str
    context_id: str
    status: TaskStatus
    metadata: dict[str, Any] | None = None


class TaskArtifactUpdateEvent(A2AModel):
    task_id: str
    context_id: str
    artifact: Artifact
    append: bool = False
    last_chunk: bool = False
    metadata: dict[str, Any] | None = None


def _one_of(model: BaseModel, names: tuple[str, ...], what: str) -> None:
    present = [n for n in names if getattr(model, n) is not None]
    if len(present) != 1:
        raise ValueError(
            f"{what} holds exactly one of {', '.join(repr(n) for n in names)}; got {len(present)}"
        )


class StreamResponse(A2AModel):
    """One streamed event (and the push-notification payload): exactly one field set."""

    task: Task | None = None
    message: Message | None = None
    status_update: TaskStatusUpdateEvent | None = None
    artifact_update: TaskArtifactUpdateEvent | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _one_of(self, ("task", "message", "status_update", "artifact_update"), "StreamResponse")
        return self

    @property
    def payload(
        self,
    ) -> Task | Message | TaskStatusUpdateEvent | TaskArtifactUpdateEvent:
        value = self.task or self.message or self.status_update or self.artifact_update
        assert value is not None
        return value


class SendMessageResponse(A2AModel):
    """The answer to SendMessage: a task, or a direct message."""

    task: Task | None = None
    message: Message | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _one_of(self, ("task", "message"), "SendMessageResponse")
        return self


# --------------------------------------------------------------------------- push notifications


class AuthenticationInfo(A2AModel):
    """How the agent authenticates to a webhook: ``Authorization: <scheme> <credentials>``."""

    scheme: str
    credentials: str | None = None


class TaskPushNotificationConfig(A2AModel):
    """A webhook for one task's updates. In 1.0 the config and its task id are one object."""

    tenant: str | None = None
    id: str | None = None
    task_id: str | None = None
    url: str
    token: str | None = None
    authentication: AuthenticationInfo | None = None


PushNotificationConfig = TaskPushNotificationConfig
"""The 0.3 name of the same object; 1.0 merged the two."""


# --------------------------------------------------------------------------- agent card


class AgentInterface(A2AModel):
    url: str
    protocol_binding: str
    tenant: str | None = None
    protocol_version: str = PROTOCOL_VERSION

    def to_wire(self) -> dict[str, Any]:
        # protocolVersion is required: write it even when it equals our default.
        data = super().to_wire()
        data["protocolVersion"] = self.protocol_version
        return data


class AgentProvider(A2AModel):
    url: str
    organization: str


class AgentExtension(A2AModel):
    uri: str | None = None
    description: str | None = None
    required: bool = False
    params: dict[str, Any] | None = None


class AgentCapabilities(A2AModel):
    streaming: bool | None = None
    push_notifications: bool | None = None
    extensions: list[AgentExtension] = Field(default_factory=list)
    extended_agent_card: bool | None = None


class StringList(A2AModel):
    list_: list[str] = Field(default_factory=list, alias="list")


class SecurityRequirement(A2AModel):
    """Scheme name -> required scopes. ``{"schemes": {"bearer": {"list": []}}}`` on the wire."""

    schemes: dict[str, StringList] = Field(default_factory=dict)

    @classmethod
    def of(cls, *names: str) -> SecurityRequirement:
        return cls(schemes={n: StringList() for n in names})


class AgentSkill(A2AModel):
    id: str
    name: str
    description: str
    tags: list[str]
    examples: list[str] = Field(default_factory=list)
    input_modes: list[str] = Field(default_factory=list)
    output_modes: list[str] = Field(default_factory=list)
    security_requirements: list[SecurityRequirement] = Field(default_factory=list)


class AgentCardSignature(A2AModel):
    protected: str
    signature: str
    header: dict[str, Any] | None = None


class APIKeySecurityScheme(A2AModel):
    description: str | None = None
    location: Literal["header", "query", "cookie"] | str
    name: str


class HTTPAuthSecurityScheme(A2AModel):
    description: str | None = None
    scheme: str
    bearer_format: str | None = None


class AuthorizationCodeOAuthFlow(A2AModel):
    authorization_url: str
    token_url: str
    refresh_url: str | None = None
    scopes: dict[str, str] = Field(default_factory=dict)
    pkce_required: bool = False


class ClientCredentialsOAuthFlow(A2AModel):
    token_url: str
    refresh_url: str | None = None
    scopes: dict[str, str] = Field(default_factory=dict)


class ImplicitOAuthFlow(A2AModel):
    authorization_url: str | None = None
    refresh_url: str | None = None
    scopes: dict[str, str] = Field(default_factory=dict)


class PasswordOAuthFlow(A2AModel):
    token_url: str | None = None
    refresh_url: str | None = None
    scopes: dict[str, str] = Field(default_factory=dict)


class DeviceCodeOAuthFlow(A2AModel):
    device_authorization_url: str
    token_url: str
    refresh_url: str | None = None
    scopes: dict[str, str] = Field(default_factory=dict)


class OAuthFlows(A2AModel):
    authorization_code: AuthorizationCodeOAuthFlow | None = None
    client_credentials: ClientCredentialsOAuthFlow | None = None
    implicit: ImplicitOAuthFlow | None = None
    password: PasswordOAuthFlow | None = None
    device_code: DeviceCodeOAuthFlow | None = None


class OAuth2SecurityScheme(A2AModel):
    description: str | None = None
    flows: OAuthFlows
    oauth2_metadata_url: str | None = None


class OpenIdConnectSecurityScheme(A2AModel):
    description: str | None = None
    open_id_connect_url: str


class MutualTlsSecurityScheme(A2AModel):
    description: str | None = None


class SecurityScheme(A2AModel):
    """One way to authenticate (OpenAPI 3.2 style); exactly one field set."""

    api_key_security_scheme: APIKeySecurityScheme | None = None
    http_auth_security_scheme: HTTPAuthSecurityScheme | None = None
    oauth2_security_scheme: OAuth2SecurityScheme | None = None
    open_id_connect_security_scheme: OpenIdConnectSecurityScheme | None = None
    mtls_security_scheme: MutualTlsSecurityScheme | None = None

    @model_validator(mode="after")
    def _check(self) -> Self:
        _one_of(
            self,
            (
                "api_key_security_scheme",
                "http_auth_security_scheme",
                "oauth2_security_scheme",
                "open_id_connect_security_scheme",
                "mtls_security_scheme",
            ),
            "SecurityScheme",
        )
        return self


class AgentCard(A2AModel):
    """The self-description an agent publishes at ``/.well-known/agent-card.json``."""

    name: str
    description: str
    supported_interfaces: list[AgentInterface]
    provider: AgentProvider | None = None
    version: str
    documentation_url: str | None = None
    capabilities: AgentCapabilities = Field(default_factory=AgentCapabilities)
    security_schemes: dict[str, SecurityScheme] = Field(default_factory=dict)
    security_requirements: list[SecurityRequirement] = Field(default_factory=list)
    default_input_modes: list[str] = Field(default_factory=lambda: ["text/plain"])
    default_output_modes: list[str] = Field(default_factory=lambda: ["text/plain"])
    skills: list[AgentSkill] = Field(default_factory=list)
    signatures: list[AgentCardSignature] = Field(default_factory=list)
    icon_url: str | None = None

    def to_wire(self) -> dict[str, Any]:
        # Required fields are written even when they equal our defaults; proto field order.
        data = super().to_wire()
        data["supportedInterfaces"] = [i.to_wire() for i in self.supported_interfaces]
        data["capabilities"] = self.capabilities.to_wire()
        data["defaultInputModes"] = list(self.default_input_modes)
        data["defaultOutputModes"] = list(self.default_output_modes)
        data["skills"] = [s.to_wire() for s in self.skills]
        order = [f.alias or name for name, f in type(self).model_fields.items()]
        return {key: data[key] for key in order if key in data}

    def to_wire_json(self) -> str:
        import json

        return json.dumps(self.to_wire(), separators=(",", ":"), ensure_ascii=False)


# --------------------------------------------------------------------------- requests


class SendMessageConfiguration(A2AModel):
    accepted_output_modes: list[str] = Field(default_factory=list)
    task_push_notification_config: TaskPushNotificationConfig | None = None
    history_length: int | None = None
    return_immediately: bool = False


class SendMessageRequest(A2AModel):
    tenant: str | None = None
    message: Message
    configuration: SendMessageConfiguration | None = None
    metadata: dict[str, Any] | None = None


class GetTaskRequest(A2AModel):
    tenant: str | None = None
    id: str
    history_length: int | None = None


class ListTasksRequest(A2AModel):
    tenant: str | None = None
    context_id: str | None = None
    status: TaskState | None = None
    page_size: int | None = None
    page_token: str | None = None
    history_length: int | None = None
    status_timestamp_after: Timestamp | None = None
    include_artifacts: bool | None = None

    @field_validator("status_timestamp_after", mode="before")
    @classmethod
    def _parse_ts(cls, value: Any) -> Any:
        return parse_timestamp(value) if isinstance(value, str) else value


class ListTasksResponse(A2AModel):
    """``nextPageToken`` is always present; empty on the last page (spec 3.1.4)."""

    tasks: list[Task]
    next_page_token: str
    page_size: int
    total_size: int


class CancelTaskRequest(A2AModel):
    tenant: str | None = None
    id: str
    metadata: dict[str, Any] | None = None


class SubscribeToTaskRequest(A2AModel):
    tenant: str | None = None
    id: str


class GetTaskPushNotificationConfigRequest(A2AModel):
    tenant: str | None = None
    task_id: str
    id: str


class DeleteTaskPushNotificationConfigRequest(A2AModel):
    tenant: str | None = None
    task_id: str
    id: str


class ListTaskPushNotificationConfigsRequest(A2AModel):
    tenant: str | None = None
    task_id: str
    page_size: int | None = None
    page_token: str | None = None


class ListTaskPushNotificationConfigsResponse(A2AModel):
    configs: list[TaskPushNotificationConfig] = Field(default_factory=list)
    next_page_token: str | None = None


class GetExtendedAgentCardRequest(A2AModel):
    tenant: str | None = None


# --------------------------------------------------------------------------- JSON-RPC envelope

JSONRPCId = str | int | None


class JSONRPCRequest(BaseModel):
    """A JSON-RPC 2.0 request. ``params`` stays a dict; each method validates its own."""

    model_config = ConfigDict(extra="ignore")

    jsonrpc: Literal["2.0"] = "2.0"
    id: JSONRPCId = None
    method: str
    params: dict[str, Any] | None = None


class JSONRPCError(BaseModel):
    model_config = ConfigDict(extra="ignore")

    code: int
    message: str
    data: Any = None


class JSONRPCSuccessResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    jsonrpc: Literal["2.0"] = "2.0"
    id: JSONRPCId = None
    result: Any


class JSONRPCErrorResponse(BaseModel):
    model_config = ConfigDict(extra="ignore")

    jsonrpc: Literal["2.0"] = "2.0"
    id: JSONRPCId = None
    error: JSONRPCError


JSONRPC_METHODS = (
    "SendMessage",
    "SendStreamingMessage",
    "GetTask",
    "ListTasks",
    "CancelTask",
    "SubscribeToTask",
    "CreateTaskPushNotificationConfig",
    "GetTaskPushNotificationConfig",
    "ListTaskPushNotificationConfigs",
    "DeleteTaskPushNotificationConfig",
    "GetExtendedAgentCard",
)
"""The JSON-RPC method names of A2A 1.0 (PascalCase, as the gRPC service)."""

STREAMING_METHODS = frozenset({"SendStreamingMessage", "SubscribeToTask"})
