"""A2A 1.0 client: talk to one peer agent over JSON-RPC, HTTP+JSON (REST) or gRPC.

The client resolves the peer's agent card (cached, revalidated with ``If-None-Match``), picks
the first interface in the card's ``supportedInterfaces`` order whose binding it speaks (the
server's preference wins unless told otherwise), and then offers every A2A operation as a typed
method. The rooms next door:

- :mod:`.transport`: how a request travels on each binding (gRPC in :mod:`.grpc_transport`,
  which needs the ``grpcio`` package only when a gRPC interface is used), with retries (connection failures
  with backoff; a request that may have reached the peer only for idempotent operations) and at
  most ``max_concurrency`` requests to one peer in flight;
- :mod:`.follow`: ``follow_task`` / ``send_and_wait`` take a task to a terminal or interrupted
  state, through ``SubscribeToTask`` when the card says it streams, polling ``GetTask`` with
  backoff when a stream breaks or is not offered (other frameworks' issue trackers show tasks
  never followed to completion);
- :mod:`.errors`: what the peer answers with (never retried) and the client's own failures.

Every request carries ``A2A-Version: 1.0`` and the configured credentials.
"""

from __future__ import annotations

import math
import re
import time
from collections.abc import AsyncGenerator, Mapping, Sequence
from contextlib import aclosing
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypedDict, Unpack
from urllib.parse import urljoin, urlsplit

import anyio
import httpx

from agent_runtime.telemetry.rpc import RequestSpan, start_request
from agent_runtime.telemetry.spans import tracing_enabled

from . import follow
from .errors import (
    A2AClientError,
    A2AConnectionError,
    A2AHTTPError,
    NoCompatibleInterfaceError,
    TaskFollowTimeout,
)
from .follow import apply_event
from .tracing import (
    peer_attributes,
    request_attributes,
    traced_stream,
    wire_result_attributes,
)
from .transport import Transport, loads, not_served, parse
from .types import (
    GRPC_BINDING,
    HTTP_JSON_BINDING,
    JSONRPC_BINDING,
    PROTOCOL_VERSION,
    AgentCard,
    AgentInterface,
    AuthenticationInfo,
    ListTaskPushNotificationConfigsResponse,
    ListTasksRequest,
    ListTasksResponse,
    Message,
    SendMessageConfiguration,
    SendMessageRequest,
    SendMessageResponse,
    StreamResponse,
    Task,
    TaskPushNotificationConfig,
    TaskState,
    format_timestamp,
)

__all__ = [
    "A2AClient",
    "A2AClientError",
    "A2AConnectionError",
    "A2AHTTPError",
    "NoCompatibleInterfaceError",
    "SendOptions",
    "TaskFilters",
    "TaskFollowTimeout",
    "apply_event",
]

WELL_KNOWN_CARD_PATH = "/.well-known/agent-card.json"
SUPPORTED_BINDINGS = (JSONRPC_BINDING, HTTP_JSON_BINDING, GRPC_BINDING)
_DEFAULT_CARD_MAX_AGE_S = 300.0

Binding = Literal["JSONRPC", "HTTP+JSON", "GRPC"]


class TaskFilters(TypedDict, total=False):
    """What ``list_tasks`` and ``iter_tasks`` select by (``None``: not filtered)."""

    context_id: str | None
    status: TaskState | None
    page_size: int | None
    history_length: int | None
    status_timestamp_after: datetime | None
    include_artifacts: bool | None


class SendOptions(TypedDict, total=False):
    """What a sent message carries besides its text (``None``: left out).

    ``context_id`` / ``task_id`` continue a conversation or a task; ``history_length``,
    ``accepted_output_modes`` and ``push_config`` shape the peer's answer.
    """

    context_id: str | None
    task_id: str | None
    history_length: int | None
    accepted_output_modes: Sequence[str] | None
    push_config: TaskPushNotificationConfig | None
    metadata: dict[str, Any] | None


def _refuse_unknown(given: Mapping[str, Any], known: frozenset[str], what: str) -> None:
    """Refuse an unknown keyword as Python does for a function without ``**kwargs``."""
    unknown = sorted(given.keys() - known)
    if unknown:
        raise TypeError(f"unexpected {what}(s): {', '.join(unknown)}")


def _task_filter_params(filters: Mapping[str, Any]) -> dict[str, Any]:
    """ListTasks parameters (wire names) for the filters given; ``None`` and ``""`` left out."""
    _refuse_unknown(filters, TaskFilters.__optional_keys__, "task filter")
    params: dict[str, Any] = {}
    for key, value in filters.items():
        if value is None or value == "":
            continue
        if key == "status":
            value = TaskState(value).value
        elif key == "status_timestamp_after":
            value = format_timestamp(value)
        params[ListTasksRequest.model_fields[key].alias or key] = value
    return params


class _CardCache:
    def __init__(self) -> None:
        self.card: AgentCard | None = None
        self.etag: str | None = None
        self.expires_at = 0.0
        self.fetches = 0


class A2AClient:
    """A client for one A2A peer.

    ``url`` is the peer's base URL (the card is read from ``/.well-known/agent-card.json``
    below it) or the full URL of its card (anything ending in ``.json``). Pass ``card`` to skip
    discovery. Credentials: ``bearer_token`` (``Authorization: Bearer``), ``api_key`` (sent the
    way the card's API-key scheme says: header, query or cookie; ``X-API-Key`` header when the
    card names none), or any ``headers``.

    ``bindings`` lists the bindings this client may use; the card's order decides among them
    unless ``prefer_client_order`` is set. Use as an async context manager, or call
    :meth:`aclose`; an ``http`` client passed in is left open for its owner.
    """

    def __init__(
        self,
        url: str,
        *,
        card: AgentCard | None = None,
        http: httpx.AsyncClient | None = None,
        headers: Mapping[str, str] | None = None,
        bearer_token: str | None = None,
        api_key: str | None = None,
        timeout: float = 60.0,
        bindings: Sequence[str] = SUPPORTED_BINDINGS,
        prefer_client_order: bool = False,
        max_concurrency: int = 16,
        retries: int = 3,
        backoff_s: float = 0.2,
        max_backoff_s: float = 5.0,
        card_max_age_s: float = _DEFAULT_CARD_MAX_AGE_S,
    ) -> None:
        unknown = [b for b in bindings if b not in SUPPORTED_BINDINGS]
        if unknown or not bindings:
            raise ValueError(
                f"bindings must be a non-empty subset of {SUPPORTED_BINDINGS}; got {list(bindings)}"
            )
        self._card_url = self._card_url_for(url)
        self._peer = peer_attributes(self._card_url)
        self._transport = Transport(
            http=http,
            headers=headers,
            bearer_token=bearer_token,
            api_key=api_key,
            timeout=timeout,
            max_concurrency=max_concurrency,
            retries=retries,
            backoff_s=backoff_s,
            max_backoff_s=max_backoff_s,
        )
        self._bindings = tuple(bindings)
        self._prefer_client_order = prefer_client_order
        self._card_max_age_s = card_max_age_s
        self._cache = _CardCache()
        self._card_lock = anyio.Lock()
        self._fixed_card = card is not None
        if card is not None:
            self._cache.card = card
            self._cache.expires_at = math.inf
        self._interface: AgentInterface | None = None
        self._unusable: set[tuple[str, str]] = set()
        self._has_alternative = False

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._transport.aclose()

    @property
    def http(self) -> httpx.AsyncClient:
        return self._transport.http

    @property
    def card_url(self) -> str:
        return self._card_url

    @staticmethod
    def _card_url_for(url: str) -> str:
        path = urlsplit(url).path
        if path.endswith(".json"):
            return url
        return url.rstrip("/") + WELL_KNOWN_CARD_PATH

    # ------------------------------------------------------------------ card and binding

    async def get_card(self, *, refresh: bool = False) -> AgentCard:
        """The peer's agent card: cached for its ``max-age``, then revalidated by ETag."""
        cache = self._cache
        if cache.card is not None and (
            self._fixed_card or (not refresh and time.monotonic() < cache.expires_at)
        ):
            return cache.card
        fetched_before = cache.fetches
        async with self._card_lock:
            # Concurrent first calls share one fetch instead of each asking the peer.
            if cache.card is not None and cache.fetches != fetched_before:
                return cache.card
            return await self._fetch_card()

    async def _fetch_card(self) -> AgentCard:
        cache = self._cache
        headers = self._transport.base_headers()
        headers["Accept"] = "application/json"
        if cache.card is not None and cache.etag:
            headers["If-None-Match"] = cache.etag
        response = await self._transport.send_with_retries(
            lambda: self.http.build_request("GET", self._card_url, headers=headers),
            idempotent=True,
        )
        cache.fetches += 1
        if response.status_code == 304 and cache.card is not None:
            cache.expires_at = time.monotonic() + self._max_age(response)
            return cache.card
        if response.status_code != 200:
            raise A2AHTTPError(response.status_code, response.text)
        card = parse(AgentCard, loads(response.content, "agent card"), "agent card")
        if cache.card is None or card != cache.card:
            self._interface = None
            self._unusable.clear()
        cache.card = card
        cache.etag = response.headers.get("etag")
        cache.expires_at = time.monotonic() + self._max_age(response)
        return card

    def _max_age(self, response: httpx.Response) -> float:
        control = response.headers.get("cache-control", "")
        if "no-store" in control or "no-cache" in control:
            return 0.0
        match = re.search(r"max-age\s*=\s*(\d+)", control)
        return float(match.group(1)) if match else self._card_max_age_s

    async def interface(self) -> AgentInterface:
        """The interface this client talks to: the first usable one in preference order.

        An interface that turns out not to be served (connection refused, or an HTTP 404/405/
        415/501 without an A2A error) is skipped for the next one the card lists (spec 5.2:
        clients should fall back to alternative protocols).
        """
        card = await self.get_card()
        if self._interface is not None:
            return self._interface
        compatible = [
            iface
            for iface in card.supported_interfaces
            if iface.protocol_binding in self._bindings
            and (iface.protocol_version or PROTOCOL_VERSION).split(".")[0] == "1"
        ]
        if self._prefer_client_order:
            compatible.sort(key=lambda iface: self._bindings.index(iface.protocol_binding))
        if not compatible:
            offered = [
                f"{i.protocol_binding} {i.protocol_version}" for i in card.supported_interfaces
            ]
            raise NoCompatibleInterfaceError(
                f"{card.name!r} offers {offered}; this client speaks {list(self._bindings)} 1.x"
            )
        # A gRPC interface's URL is a target (``host:port``), not relative to the card.
        resolved = [
            i
            if i.protocol_binding == GRPC_BINDING
            else i.model_copy(update={"url": urljoin(self._card_url, i.url)})
            for i in compatible
        ]
        usable = [i for i in resolved if (i.protocol_binding, i.url) not in self._unusable]
        if not usable:
            # Every interface failed once: start over rather than give up for good.
            self._unusable.clear()
            usable = resolved
        self._interface = usable[0]
        self._has_alternative = len(usable) > 1
        return self._interface

    def _skip_interface(self, iface: AgentInterface) -> bool:
        """Mark ``iface`` unusable; whether another interface is left to try."""
        self._unusable.add((iface.protocol_binding, iface.url))
        alternative = self._has_alternative
        self._interface = None
        return alternative

    async def binding(self) -> str:
        return (await self.interface()).protocol_binding

    # ------------------------------------------------------------------ one operation

    def _start_span(self, method: str, params: dict[str, Any]) -> RequestSpan:
        """The client span of one operation (its ``traceparent`` goes out with the request)."""
        if not tracing_enabled():
            return start_request("a2a", method, "client")
        attributes = {"rpc.system": "a2a", "rpc.method": method, **self._peer}
        attributes.update(request_attributes(params))
        return start_request("a2a", method, "client", attributes=attributes)

    async def _call(self, method: str, params: dict[str, Any]) -> Any:
        """Run one unary operation on the chosen interface, falling back to the next one."""
        with self._start_span(method, params) as request:
            while True:
                iface = await self.interface()
                try:
                    result = await self._transport.call(iface, method, params, self._cache.card)
                except (A2AConnectionError, A2AHTTPError) as exc:
                    if not not_served(exc) or not self._skip_interface(iface):
                        raise
                    continue
                if request.recording:
                    request.set_many(wire_result_attributes(result))
                return result

    async def _stream(
        self, method: str, params: dict[str, Any]
    ) -> AsyncGenerator[StreamResponse, None]:
        """Run one streaming operation; yield each event as a StreamResponse. Its span ends
        with the stream."""
        request = self._start_span(method, params)
        events = traced_stream(self._stream_once(method, params, request), request)
        async with aclosing(events):
            async for event in events:
                yield event

    async def _stream_once(
        self, method: str, params: dict[str, Any], request: RequestSpan
    ) -> AsyncGenerator[StreamResponse, None]:
        """The events of one streaming operation on the chosen interface, falling back to the
        next one. The request's span is current only while the request is built (so its
        ``traceparent`` goes out), not between events, where the consumer runs."""
        while True:
            iface = await self.interface()
            with request.activate():
                events = self._transport.stream(iface, method, params, self._cache.card)
            yielded = False
            try:
                async for event in events:
                    yielded = True
                    yield event
                return
            except (A2AConnectionError, A2AHTTPError) as exc:
                if yielded or not not_served(exc) or not self._skip_interface(iface):
                    raise
            finally:
                await events.aclose()

    # ------------------------------------------------------------------ messages

    @staticmethod
    def _request(
        message: Message | str, return_immediately: bool, options: SendOptions
    ) -> dict[str, Any]:
        _refuse_unknown(options, SendOptions.__optional_keys__, "send option")
        context_id = options.get("context_id")
        task_id = options.get("task_id")
        if isinstance(message, str):
            msg = Message.user_text(message, context_id=context_id, task_id=task_id)
        else:
            updates: dict[str, Any] = {}
            if context_id is not None:
                updates["context_id"] = context_id
            if task_id is not None:
                updates["task_id"] = task_id
            msg = message.model_copy(update=updates) if updates else message
        config = SendMessageConfiguration(
            accepted_output_modes=list(options.get("accepted_output_modes") or []),
            task_push_notification_config=options.get("push_config"),
            history_length=options.get("history_length"),
            return_immediately=return_immediately,
        )
        request = SendMessageRequest(
            message=msg,
            configuration=config if config.to_wire() else None,
            metadata=options.get("metadata"),
        )
        return request.to_wire()

    async def send_message(
        self,
        message: Message | str,
        *,
        return_immediately: bool = False,
        **options: Unpack[SendOptions],
    ) -> Task | Message:
        """SendMessage. Blocking by default: the peer answers once the task settles."""
        params = self._request(message, return_immediately, options)
        result = parse(SendMessageResponse, await self._call("SendMessage", params), "SendMessage")
        return result.task if result.task is not None else result.message  # type: ignore[return-value]

    def send_message_streaming(
        self, message: Message | str, **options: Unpack[SendOptions]
    ) -> AsyncGenerator[StreamResponse, None]:
        """SendStreamingMessage: the events as they come (a Task or Message first)."""
        params = self._request(message, False, options)
        return self._stream("SendStreamingMessage", params)

    # ------------------------------------------------------------------ tasks

    async def get_task(self, task_id: str, *, history_length: int | None = None) -> Task:
        params: dict[str, Any] = {"id": task_id}
        if history_length is not None:
            params["historyLength"] = history_length
        return parse(Task, await self._call("GetTask", params), "GetTask")

    async def list_tasks(
        self, *, page_token: str | None = None, **filters: Unpack[TaskFilters]
    ) -> ListTasksResponse:
        """One page of ListTasks; ``next_page_token`` is empty on the last page."""
        params = _task_filter_params(filters)
        if page_token:
            params["pageToken"] = page_token
        return parse(ListTasksResponse, await self._call("ListTasks", params), "ListTasks")

    async def iter_tasks(self, **filters: Unpack[TaskFilters]) -> AsyncGenerator[Task, None]:
        """Every task the peer lists for these filters, following ``nextPageToken``."""
        token: str | None = None
        seen: set[str] = set()
        while True:
            page = await self.list_tasks(page_token=token, **filters)
            for task in page.tasks:
                yield task
            if not page.next_page_token or page.next_page_token in seen:
                return
            seen.add(page.next_page_token)
            token = page.next_page_token

    async def cancel_task(self, task_id: str, *, metadata: dict[str, Any] | None = None) -> Task:
        params: dict[str, Any] = {"id": task_id}
        if metadata:
            params["metadata"] = metadata
        return parse(Task, await self._call("CancelTask", params), "CancelTask")

    def subscribe(self, task_id: str) -> AsyncGenerator[StreamResponse, None]:
        """SubscribeToTask: a Task snapshot first, then updates until the task settles."""
        return self._stream("SubscribeToTask", {"id": task_id})

    # ------------------------------------------------------------------ push notification configs

    async def create_push_config(
        self,
        task_id: str,
        url: str,
        *,
        token: str | None = None,
        authentication: AuthenticationInfo | None = None,
        config_id: str | None = None,
    ) -> TaskPushNotificationConfig:
        config = TaskPushNotificationConfig(
            id=config_id, task_id=task_id, url=url, token=token, authentication=authentication
        )
        result = await self._call("CreateTaskPushNotificationConfig", config.to_wire())
        return parse(TaskPushNotificationConfig, result, "CreateTaskPushNotificationConfig")

    async def get_push_config(self, task_id: str, config_id: str) -> TaskPushNotificationConfig:
        result = await self._call(
            "GetTaskPushNotificationConfig", {"taskId": task_id, "id": config_id}
        )
        return parse(TaskPushNotificationConfig, result, "GetTaskPushNotificationConfig")

    async def list_push_configs(
        self, task_id: str, *, page_size: int | None = None, page_token: str | None = None
    ) -> ListTaskPushNotificationConfigsResponse:
        params: dict[str, Any] = {"taskId": task_id}
        if page_size is not None:
            params["pageSize"] = page_size
        if page_token:
            params["pageToken"] = page_token
        result = await self._call("ListTaskPushNotificationConfigs", params)
        return parse(
            ListTaskPushNotificationConfigsResponse, result, "ListTaskPushNotificationConfigs"
        )

    async def delete_push_config(self, task_id: str, config_id: str) -> None:
        await self._call("DeleteTaskPushNotificationConfig", {"taskId": task_id, "id": config_id})

    async def get_extended_card(self) -> AgentCard:
        """GetExtendedAgentCard (authenticated). It replaces the cached public card."""
        card = parse(AgentCard, await self._call("GetExtendedAgentCard", {}), "extended card")
        self._cache.card = card
        self._fixed_card = True
        self._interface = None
        return card

    # ------------------------------------------------------------------ following tasks

    async def follow_task(
        self,
        task: Task | str,
        *,
        timeout_s: float | None = None,
        poll_interval_s: float = 0.1,
        max_poll_interval_s: float = 2.0,
        use_streaming: bool | None = None,
    ) -> Task:
        """Wait until a task is terminal or interrupted and return its final snapshot.

        Subscribes when the card says the peer streams (``use_streaming`` overrides), and polls
        GetTask with growing intervals otherwise, or when the stream ends early or breaks.
        Raises :class:`TaskFollowTimeout` after ``timeout_s``.
        """
        return await follow.follow_task(
            self,
            task,
            timeout_s=timeout_s,
            poll_interval_s=poll_interval_s,
            max_poll_interval_s=max_poll_interval_s,
            use_streaming=use_streaming,
        )

    async def send_and_wait(
        self,
        message: Message | str,
        *,
        timeout_s: float | None = None,
        streaming: bool | None = None,
        on_event: Any = None,
        return_immediately: bool = False,
        **options: Unpack[SendOptions],
    ) -> Task | Message:
        """Send a message and follow the task it starts until it is terminal or interrupted.

        Streams when the card says the peer streams (``streaming`` overrides); ``on_event`` (an
        async callable) sees each streamed event. Without streaming, ``return_immediately`` asks
        the peer for the task at once and polls it, so a caller that times out knows which task
        to cancel. A peer that answers with a Message returns it. ``options`` are the
        ``SendOptions`` of the message.
        """
        return await follow.send_and_wait(
            self,
            message,
            timeout_s=timeout_s,
            streaming=streaming,
            on_event=on_event,
            return_immediately=return_immediately,
            options=options,
        )
