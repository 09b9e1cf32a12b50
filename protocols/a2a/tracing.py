"""What the spans of A2A requests record: method, peer, task id, context id and task state.

Client spans (``a2a {method}``, kind client) and server spans (kind server, continuing the
caller's ``traceparent`` header) are made by :func:`agent_runtime.telemetry.rpc.start_request`;
this module names their attributes, read from the wire JSON a client gets back or the typed
objects a server answers with, and follows a stream of events to its end. Only ids and states are
recorded: never a message's content, a header, a push config's URL, token or credentials.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, AsyncIterator, Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import urlsplit

from agent_runtime.telemetry.rpc import RequestSpan, start_request
from agent_runtime.telemetry.spans import AttributeValue

from .types import Message, SendMessageResponse, StreamResponse, Task

__all__ = [
    "event_attributes",
    "peer_attributes",
    "request_attributes",
    "result_attributes",
    "serve_request",
    "traced_stream",
    "wire_result_attributes",
]

Attributes = dict[str, AttributeValue | None]


def peer_attributes(url: str) -> Attributes:
    """``server.address`` / ``server.port`` of a peer URL (never its userinfo or path)."""
    parts = urlsplit(url)
    try:
        port = parts.port
    except ValueError:
        port = None
    return {"server.address": parts.hostname, "server.port": port}


def request_attributes(params: Mapping[str, Any]) -> Attributes:
    """The task and context a request names (a message continuing a task, GetTask's id ...)."""
    message = params.get("message")
    if isinstance(message, Mapping):
        return {
            "a2a.task.id": _str(message.get("taskId")),
            "a2a.context.id": _str(message.get("contextId")),
        }
    return {"a2a.task.id": _str(params.get("id") or params.get("taskId"))}


def _str(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def wire_result_attributes(payload: Any) -> Attributes:
    """Task id, context id and state of a result as it came off the wire (JSON)."""
    if not isinstance(payload, Mapping):
        return {}
    task = payload.get("task", payload)
    if isinstance(task, Mapping) and "status" in task:
        status = task.get("status")
        state = status.get("state") if isinstance(status, Mapping) else None
        return {
            "a2a.task.id": _str(task.get("id")),
            "a2a.context.id": _str(task.get("contextId")),
            "a2a.task.state": _str(state),
        }
    message = payload.get("message")
    if isinstance(message, Mapping):
        return {
            "a2a.task.id": _str(message.get("taskId")),
            "a2a.context.id": _str(message.get("contextId")),
        }
    return {}


def _task_attributes(task: Task) -> Attributes:
    return {
        "a2a.task.id": task.id,
        "a2a.context.id": task.context_id,
        "a2a.task.state": task.status.state.value,
    }


def _message_attributes(message: Message) -> Attributes:
    return {"a2a.task.id": message.task_id, "a2a.context.id": message.context_id}


def result_attributes(result: Any) -> Attributes:
    """Task id, context id and state of what a server handler answered."""
    if isinstance(result, SendMessageResponse):
        if result.task is not None:
            return _task_attributes(result.task)
        if result.message is not None:
            return _message_attributes(result.message)
        return {}
    if isinstance(result, Task):
        return _task_attributes(result)
    return {}


def event_attributes(event: StreamResponse) -> Attributes:
    """Task id, context id and state an event carries (artifact events: ids only)."""
    if event.task is not None:
        return _task_attributes(event.task)
    if event.status_update is not None:
        update = event.status_update
        return {
            "a2a.task.id": update.task_id,
            "a2a.context.id": update.context_id,
            "a2a.task.state": update.status.state.value,
        }
    if event.message is not None:
        return _message_attributes(event.message)
    if event.artifact_update is not None:
        return {
            "a2a.task.id": event.artifact_update.task_id,
            "a2a.context.id": event.artifact_update.context_id,
        }
    return {}


async def traced_stream(
    events: AsyncIterator[StreamResponse], request: RequestSpan
) -> AsyncGenerator[StreamResponse, None]:
    """``events`` as they come, each noted on ``request``'s span, which ends with the stream
    (closed early by its consumer: not an error; broken or cancelled: an error)."""
    error: BaseException | None = None
    count = 0
    try:
        async for event in events:
            count += 1
            if request.recording:
                request.set_many(event_attributes(event))
            yield event
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        try:
            aclose = getattr(events, "aclose", None)
            if aclose is not None:
                await aclose()
        finally:
            request.set("a2a.stream.events", count)
            request.end(error)


async def serve_request(
    method: str,
    headers: Mapping[str, Any],
    run: Callable[[], Awaitable[Any]],
    *,
    streaming: bool,
) -> Any:
    """Answer one request (any binding) inside its server span, which continues the caller's
    ``traceparent`` (``headers``: HTTP headers or gRPC metadata). The handler runs with the span
    current, so an agent call it starts in a background task is the span's child. A streaming
    answer comes back wrapped: the span ends with the stream."""
    request = start_request(
        "a2a",
        method,
        "server",
        attributes={"rpc.system": "a2a", "rpc.method": method},
        parent_carrier=headers,
    )
    try:
        with request.activate():
            result = await run()
    except BaseException as exc:
        request.end(exc)
        raise
    if streaming:
        return traced_stream(result, request) if request.active else result
    if request.recording:
        request.set_many(result_attributes(result))
    request.end()
    return result
