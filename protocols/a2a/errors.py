"""A2A errors: one class per spec error, each knowing its JSON-RPC code and HTTP mapping.

The A2A-specific classes carry exactly the codes and statuses of the spec's mapping table
(section 5.4: e.g. TaskNotCancelable -32002 / FAILED_PRECONDITION / 400, InvalidAgentResponse
-32006 / INTERNAL / 500), as the official SDKs do; ``tests/test_a2a_conformance.py`` pins it.

The server raises these anywhere in a request; the binding layer turns them into a JSON-RPC
error object (``code``, ``message``, ``data`` = list of typed details) or a REST
``google.rpc.Status`` body (``error.code`` = HTTP status, ``status``, ``message``, ``details``).
Both carry a ``google.rpc.ErrorInfo`` detail with the UPPER_SNAKE reason and domain
``a2a-protocol.org`` (spec 9.5 and 11.6). A client turns either form back into the same class
with :func:`error_from_jsonrpc` / :func:`error_from_rest`.

The client's own failures (the peer unreachable, an HTTP error without an A2A error in it, no
interface it can use, a task that does not settle in time) are :class:`A2AClientError`; a
``ListTasks`` page token the store did not issue is :class:`InvalidPageToken`. Every class here
is an :class:`~agent_runtime.errors.AgentRuntimeError`.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, ClassVar

from agent_runtime.errors import AgentRuntimeError

if TYPE_CHECKING:
    from .types import Task

ERROR_INFO_TYPE = "type.googleapis.com/google.rpc.ErrorInfo"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
A2A_DOMAIN = "a2a-protocol.org"


class A2AError(AgentRuntimeError):
    """Base class: an error the protocol defines, with its code, reason and HTTP status."""

    code: ClassVar[int] = -32603
    reason: ClassVar[str] = "INTERNAL_ERROR"
    http_status: ClassVar[int] = 500
    grpc_status: ClassVar[str] = "INTERNAL"
    default_message: ClassVar[str] = "Internal error"

    def __init__(
        self,
        message: str | None = None,
        *,
        metadata: dict[str, str] | None = None,
        details: list[dict[str, Any]] | None = None,
    ) -> None:
        self.message = message or self.default_message
        self.metadata: dict[str, str] = dict(metadata or {})
        self.extra_details: list[dict[str, Any]] = list(details or [])
        super().__init__(self.message)

    @property
    def data(self) -> list[dict[str, Any]]:
        """The JSON-RPC ``error.data`` (the typed details)."""
        return self.error_details()

    def error_details(self) -> list[dict[str, Any]]:
        """The typed details: an ErrorInfo first, then any extra (e.g. BadRequest)."""
        info = {
            "@type": ERROR_INFO_TYPE,
            "reason": self.reason,
            "domain": A2A_DOMAIN,
            "metadata": dict(self.metadata),
        }
        return [info, *self.extra_details]

    def to_jsonrpc_error(self) -> dict[str, Any]:
        """The ``error`` member of a JSON-RPC response."""
        return {"code": self.code, "message": self.message, "data": self.error_details()}

    def to_rest_body(self) -> dict[str, Any]:
        """The ``google.rpc.Status``-shaped body of a REST error response."""
        return {
            "error": {
                "code": self.http_status,
                "status": self.grpc_status,
                "message": self.message,
                "details": self.error_details(),
            }
        }

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.message!r})"


# --------------------------------------------------------------------------- A2A-specific


class TaskNotFoundError(A2AError):
    code = -32001
    reason = "TASK_NOT_FOUND"
    http_status = 404
    grpc_status = "NOT_FOUND"
    default_message = "Task not found"


class TaskNotCancelableError(A2AError):
    code = -32002
    reason = "TASK_NOT_CANCELABLE"
    http_status = 400
    grpc_status = "FAILED_PRECONDITION"
    default_message = "Task cannot be canceled"


class PushNotificationNotSupportedError(A2AError):
    code = -32003
    reason = "PUSH_NOTIFICATION_NOT_SUPPORTED"
    http_status = 400
    grpc_status = "FAILED_PRECONDITION"
    default_message = "Push notifications are not supported by the agent"


class UnsupportedOperationError(A2AError):
    code = -32004
    reason = "UNSUPPORTED_OPERATION"
    http_status = 400
    grpc_status = "FAILED_PRECONDITION"
    default_message = "This operation is not supported"


class ContentTypeNotSupportedError(A2AError):
    code = -32005
    reason = "CONTENT_TYPE_NOT_SUPPORTED"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    default_message = "Incompatible content types"


class InvalidAgentResponseError(A2AError):
    code = -32006
    reason = "INVALID_AGENT_RESPONSE"
    http_status = 500
    grpc_status = "INTERNAL"
    default_message = "Invalid agent response"


class ExtendedAgentCardNotConfiguredError(A2AError):
    code = -32007
    reason = "EXTENDED_AGENT_CARD_NOT_CONFIGURED"
    http_status = 400
    grpc_status = "FAILED_PRECONDITION"
    default_message = "Extended agent card is not configured"


class ExtensionSupportRequiredError(A2AError):
    code = -32008
    reason = "EXTENSION_SUPPORT_REQUIRED"
    http_status = 400
    grpc_status = "FAILED_PRECONDITION"
    default_message = "A required extension is not supported by the client"


class VersionNotSupportedError(A2AError):
    code = -32009
    reason = "VERSION_NOT_SUPPORTED"
    http_status = 400
    grpc_status = "FAILED_PRECONDITION"
    default_message = "A2A version not supported"


# --------------------------------------------------------------------------- JSON-RPC standard


class JSONParseError(A2AError):
    code = -32700
    reason = "PARSE_ERROR"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    default_message = "Invalid JSON payload"


class InvalidRequestError(A2AError):
    code = -32600
    reason = "INVALID_REQUEST"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    default_message = "Request payload validation error"


class MethodNotFoundError(A2AError):
    code = -32601
    reason = "METHOD_NOT_FOUND"
    http_status = 404
    grpc_status = "NOT_FOUND"
    default_message = "Method not found"


class InvalidParamsError(A2AError):
    code = -32602
    reason = "INVALID_PARAMS"
    http_status = 400
    grpc_status = "INVALID_ARGUMENT"
    default_message = "Invalid parameters"

    @classmethod
    def from_violations(
        cls, violations: list[tuple[str, str]], message: str | None = None
    ) -> InvalidParamsError:
        """With a ``google.rpc.BadRequest`` detail listing (field, description) pairs."""
        detail = {
            "@type": BAD_REQUEST_TYPE,
            "fieldViolations": [{"field": f, "description": d} for f, d in violations],
        }
        text = message or "Invalid parameters: " + "; ".join(
            f"{f}: {d}" if f else d for f, d in violations[:5]
        )
        return cls(text, details=[detail])


class InternalError(A2AError):
    code = -32603
    reason = "INTERNAL_ERROR"
    http_status = 500
    grpc_status = "INTERNAL"
    default_message = "Internal error"


# --------------------------------------------------------------------------- transport-level
# The spec leaves authentication errors to "a JSON-RPC custom error" (3.3.2); we use codes just
# after the A2A range so a client can tell them apart, with HTTP 401/403/408/413/415 semantics.


class UnauthenticatedError(A2AError):
    code = -32010
    reason = "UNAUTHENTICATED"
    http_status = 401
    grpc_status = "UNAUTHENTICATED"
    default_message = "Authentication required"


class PermissionDeniedError(A2AError):
    code = -32011
    reason = "PERMISSION_DENIED"
    http_status = 403
    grpc_status = "PERMISSION_DENIED"
    default_message = "Permission denied"


class PayloadTooLargeError(InvalidRequestError):
    """An oversized body is an invalid request (-32600) with HTTP 413 on REST."""

    reason = "PAYLOAD_TOO_LARGE"
    http_status = 413
    default_message = "Request body too large"


class UnsupportedMediaTypeError(InvalidRequestError):
    """A request body in a content type the binding does not take (-32600, HTTP 415)."""

    reason = "UNSUPPORTED_MEDIA_TYPE"
    http_status = 415
    default_message = "Unsupported request content type"


class RequestTimeoutError(InvalidRequestError):
    """The request body did not arrive in time (-32600, HTTP 408; the connection is closed)."""

    reason = "REQUEST_TIMEOUT"
    http_status = 408
    default_message = "The request body did not arrive in time"


_BY_CODE: dict[int, type[A2AError]] = {
    cls.code: cls
    for cls in (
        TaskNotFoundError,
        TaskNotCancelableError,
        PushNotificationNotSupportedError,
        UnsupportedOperationError,
        ContentTypeNotSupportedError,
        InvalidAgentResponseError,
        ExtendedAgentCardNotConfiguredError,
        ExtensionSupportRequiredError,
        VersionNotSupportedError,
        JSONParseError,
        InvalidRequestError,
        MethodNotFoundError,
        InvalidParamsError,
        InternalError,
        UnauthenticatedError,
        PermissionDeniedError,
    )
}

_BY_REASON: dict[str, type[A2AError]] = {cls.reason: cls for cls in _BY_CODE.values()}
_BY_REASON.update(
    {
        PayloadTooLargeError.reason: PayloadTooLargeError,
        UnsupportedMediaTypeError.reason: UnsupportedMediaTypeError,
        RequestTimeoutError.reason: RequestTimeoutError,
    }
)


# --------------------------------------------------------------------------- our side of the wire


class A2AClientError(AgentRuntimeError):
    """A failure on our side of the wire: the peer could not be reached or understood.

    Errors the peer answers with (task not found, not cancelable ...) are not this class: they
    raise the :class:`A2AError` subclass the peer named.
    """


class A2AConnectionError(A2AClientError):
    """The peer could not be reached (after the configured retries).

    ``delivered`` tells whether the request may have reached the peer before the connection
    failed (then a non-idempotent operation may have taken effect).
    """

    def __init__(self, message: str, *, delivered: bool = False) -> None:
        super().__init__(message)
        self.delivered = delivered


class A2AHTTPError(A2AClientError):
    """The peer answered with an HTTP error that carries no A2A error object (a proxy's 502 ...)."""

    def __init__(self, status_code: int, body: str) -> None:
        super().__init__(f"HTTP {status_code}: {body[:300]}")
        self.status_code = status_code
        self.body = body


class NoCompatibleInterfaceError(A2AClientError):
    """The card lists no interface in a binding and protocol version this client speaks."""


class TaskFollowTimeout(A2AClientError, TimeoutError):
    """A task did not reach a terminal or interrupted state in time. ``task`` is the last seen."""

    def __init__(self, message: str, task: Task | None) -> None:
        super().__init__(message)
        self.task = task


class InvalidPageToken(AgentRuntimeError, ValueError):
    """A ListTasks page token the task store did not issue."""


# --------------------------------------------------------------------------- rebuilding errors


def _reason_and_metadata(details: Any) -> tuple[str | None, dict[str, str], list[dict[str, Any]]]:
    reason = None
    metadata: dict[str, str] = {}
    extra: list[dict[str, Any]] = []
    if isinstance(details, list):
        for item in details:
            if not isinstance(item, dict):
                continue
            if item.get("@type") == ERROR_INFO_TYPE and reason is None:
                reason = item.get("reason") if isinstance(item.get("reason"), str) else None
                meta = item.get("metadata")
                if isinstance(meta, dict):
                    metadata = {str(k): str(v) for k, v in meta.items()}
            else:
                extra.append(item)
    return reason, metadata, extra


def error_from_jsonrpc(error: dict[str, Any]) -> A2AError:
    """Rebuild the error class from a JSON-RPC ``error`` object (unknown codes -> A2AError)."""
    code = error.get("code")
    message = str(error.get("message") or "")
    reason, metadata, extra = _reason_and_metadata(error.get("data"))
    cls = _BY_REASON.get(reason or "") or (_BY_CODE.get(code) if isinstance(code, int) else None)
    if cls is None:
        err = A2AError(message or f"JSON-RPC error {code}", metadata=metadata, details=extra)
        err.code = code if isinstance(code, int) else -32603  # type: ignore[misc]
        return err
    return cls(message or None, metadata=metadata, details=extra)


def error_from_rest(http_status: int, body: Any) -> A2AError:
    """Rebuild the error class from a REST error response (status + ``{"error": ...}`` body)."""
    err_obj = body.get("error") if isinstance(body, dict) else None
    if not isinstance(err_obj, dict):
        err_obj = {}
    message = str(err_obj.get("message") or f"HTTP {http_status}")
    reason, metadata, extra = _reason_and_metadata(err_obj.get("details"))
    cls = _BY_REASON.get(reason or "")
    if cls is None:
        cls = {
            401: UnauthenticatedError,
            403: PermissionDeniedError,
            404: TaskNotFoundError,
            408: RequestTimeoutError,
            413: PayloadTooLargeError,
            415: UnsupportedMediaTypeError,
        }.get(http_status, InternalError if http_status >= 500 else InvalidRequestError)
    return cls(message, metadata=metadata, details=extra)


def error_from_code(code: int, message: str, data: Any = None) -> A2AError:
    """Same as :func:`error_from_jsonrpc`, from the three members separately."""
    return error_from_jsonrpc({"code": code, "message": message, "data": data})


def error_from_reason(reason: str, message: str, http_status: int = 400) -> A2AError:
    """The class for an ErrorInfo ``reason`` (e.g. ``TASK_NOT_FOUND``), or by HTTP status."""
    return error_from_rest(
        http_status,
        {"error": {"message": message, "details": [{"@type": ERROR_INFO_TYPE, "reason": reason}]}},
    )
