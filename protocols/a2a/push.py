"""Push notifications: webhook URL screening and delivery.

A client registers a webhook for a task; the node POSTs every task event to it as a
``StreamResponse`` JSON body (spec 4.3.3), with ``X-A2A-Notification-Token: <token>`` when the
config has a token and ``Authorization: <scheme> <credentials>`` when it has authentication.

Because the node makes the request, a webhook URL is a server-side request forgery vector: by
default a URL whose host resolves to a loopback, private, link-local, shared, reserved,
multicast or unspecified address is refused, at registration and again at each delivery (a DNS
answer can change). ``PushConfig.allow_private_urls`` or ``allowed_hosts`` opt in explicitly.

Events of one task reach a webhook in order, across the task's runs too: each run's events go
through one queue drained by one asyncio task, which first waits for the previous run's drain.
A failing webhook is retried with exponential backoff on connection errors, 5xx, 408 and 429,
then dropped for that event; a slow webhook never slows the run itself. Redirects are not
followed.
"""

from __future__ import annotations

import asyncio
import functools
import ipaddress
import logging
import math
import socket
import urllib.parse
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import anyio
from anyio.streams.memory import MemoryObjectReceiveStream, MemoryObjectSendStream

from .errors import InvalidParamsError
from .types import A2A_CONTENT_TYPE, StreamResponse, TaskPushNotificationConfig

if TYPE_CHECKING:
    import httpx

logger = logging.getLogger(__name__)

NOTIFICATION_TOKEN_HEADER = "X-A2A-Notification-Token"
_RETRY_STATUSES = frozenset({408, 429})
"""Besides 5xx: a webhook that timed out or is rate limiting gets the event again, later."""


@dataclass
class PushConfig:
    """Whether and how this node delivers push notifications."""

    enabled: bool = True
    allow_private_urls: bool = False
    """Allow webhooks on loopback/private/link-local addresses (tests, trusted networks)."""
    allowed_hosts: list[str] = field(default_factory=list)
    """Host names or IP literals allowed even when private (an allowlist, not a restriction)."""
    timeout_s: float = 10.0
    max_attempts: int = 3
    backoff_s: float = 0.25
    queue_size: int = 1000


def _blocked_address(ip_text: str) -> bool:
    try:
        addr = ipaddress.ip_address(ip_text.split("%", 1)[0])
    except ValueError:
        return True
    mapped = getattr(addr, "ipv4_mapped", None)
    if mapped is not None:
        addr = mapped
    return (
        not addr.is_global
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_private
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


async def check_webhook_url(url: str, config: PushConfig) -> None:
    """Raise ``InvalidParamsError`` unless ``url`` is an http(s) URL this node may call."""
    try:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port
    except ValueError:
        raise InvalidParamsError.from_violations([("url", "not a valid URL")]) from None
    if parsed.scheme not in ("http", "https"):
        raise InvalidParamsError.from_violations([("url", "scheme must be http or https")])
    host = parsed.hostname
    if not host:
        raise InvalidParamsError.from_violations([("url", "URL has no host")])
    if config.allow_private_urls or host.lower() in {h.lower() for h in config.allowed_hosts}:
        return
    port = port or (443 if parsed.scheme == "https" else 80)
    try:
        infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except OSError:
        raise InvalidParamsError.from_violations(
            [("url", f"host {host!r} does not resolve")]
        ) from None
    for info in infos:
        address = str(info[4][0])
        if _blocked_address(address):
            raise InvalidParamsError.from_violations(
                [
                    (
                        "url",
                        f"host {host!r} resolves to a loopback, private or link-local address"
                        " (refused; the node's push config must allow it explicitly)",
                    )
                ]
            )


def redact(
    config: TaskPushNotificationConfig, *, keep_token: bool = False
) -> TaskPushNotificationConfig:
    """The config as shown to clients: stored secrets are never echoed back.

    Get and List leave out both the notification ``token`` and
    ``authentication.credentials`` (the scheme stays, so a client can see that authentication
    is set); delivery still uses them. ``keep_token`` is for the Create answer only, which
    repeats the token the caller sent in that same request and nothing read from storage.
    """
    update: dict[str, object] = {}
    if config.token is not None and not keep_token:
        update["token"] = None
    if config.authentication is not None and config.authentication.credentials is not None:
        update["authentication"] = config.authentication.model_copy(update={"credentials": None})
    return config.model_copy(update=update) if update else config


class PushNotifier:
    """Delivers events to the webhooks of each task, in order, off the request path.

    One asyncio task per task with pending deliveries drains that task's queue; it needs no
    surrounding task group, so it works the same under uvicorn and under an in-process ASGI
    transport.
    """

    def __init__(self, config: PushConfig, client: httpx.AsyncClient | None = None) -> None:
        self.config = config
        self._client = client
        self._owns_client = client is None
        self._queues: dict[
            str, MemoryObjectSendStream[tuple[list[TaskPushNotificationConfig], bytes]]
        ] = {}
        self._drains: set[asyncio.Task[None]] = set()
        self._last_drain: dict[str, asyncio.Task[None]] = {}

    def notify(
        self, task_id: str, configs: list[TaskPushNotificationConfig], event: StreamResponse
    ) -> None:
        """Queue ``event`` for every config of the task (non-blocking)."""
        if not configs:
            return
        body = event.to_wire_json().encode()
        send = self._queues.get(task_id)
        if send is None:
            send, receive = anyio.create_memory_object_stream[
                tuple[list[TaskPushNotificationConfig], bytes]
            ](max_buffer_size=self.config.queue_size)
            self._queues[task_id] = send
            # A task's next run (a follow-up after INPUT_REQUIRED) gets a new queue; its drain
            # waits for the previous one, so a slow webhook still sees the runs in order.
            previous = self._last_drain.get(task_id)
            drain = asyncio.get_running_loop().create_task(self._drain(receive, previous))
            self._drains.add(drain)
            self._last_drain[task_id] = drain
            drain.add_done_callback(self._drains.discard)
            drain.add_done_callback(functools.partial(self._forget, task_id))
        try:
            send.send_nowait((list(configs), body))
        except anyio.WouldBlock:
            logger.warning("push queue full for task %s; event dropped", task_id)

    def _forget(self, task_id: str, drain: asyncio.Task[None]) -> None:
        if self._last_drain.get(task_id) is drain:
            del self._last_drain[task_id]

    def finish(self, task_id: str) -> None:
        """No more events for this task now: its queue closes once drained."""
        send = self._queues.pop(task_id, None)
        if send is not None:
            send.close()

    async def wait_idle(self, timeout_s: float = 10.0) -> None:
        """Wait until queued deliveries are done (tests, shutdown)."""
        with anyio.move_on_after(timeout_s):
            while self._drains:
                await asyncio.gather(*list(self._drains), return_exceptions=True)

    async def aclose(self) -> None:
        for task_id in list(self._queues):
            self.finish(task_id)
        await self.wait_idle(2.0)
        for drain in list(self._drains):
            drain.cancel()
        if self._client is not None and self._owns_client:
            await self._client.aclose()
            self._client = None

    def _http(self) -> httpx.AsyncClient:
        if self._client is None:
            import httpx

            # Never follow redirects: a webhook could point the node at an address the URL
            # screening refused.
            self._client = httpx.AsyncClient(timeout=self.config.timeout_s, follow_redirects=False)
        return self._client

    async def _drain(
        self,
        receive: MemoryObjectReceiveStream[tuple[list[TaskPushNotificationConfig], bytes]],
        previous: asyncio.Task[None] | None = None,
    ) -> None:
        if previous is not None and not previous.done():
            await asyncio.wait([previous])
        async with receive:
            async for configs, body in receive:
                for cfg in configs:
                    try:
                        await self._deliver(cfg, body)
                    except Exception:
                        logger.exception("push delivery to %s failed", cfg.url)

    async def _deliver(self, cfg: TaskPushNotificationConfig, body: bytes) -> bool:
        try:
            await check_webhook_url(cfg.url, self.config)
        except InvalidParamsError as exc:
            logger.warning("push to %s refused: %s", cfg.url, exc.message)
            return False
        headers = {"Content-Type": A2A_CONTENT_TYPE}
        if cfg.token:
            headers[NOTIFICATION_TOKEN_HEADER] = cfg.token
        if cfg.authentication is not None and cfg.authentication.credentials:
            scheme = cfg.authentication.scheme or "Bearer"
            headers["Authorization"] = f"{scheme} {cfg.authentication.credentials}"
        client = self._http()
        delay = self.config.backoff_s
        attempts = max(1, self.config.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                response = await client.post(cfg.url, content=body, headers=headers)
                if response.status_code < 500 and response.status_code not in _RETRY_STATUSES:
                    if response.status_code >= 300:
                        logger.warning("webhook %s answered %s", cfg.url, response.status_code)
                    return response.status_code < 300
            except Exception as exc:  # connection refused, timeout, ...
                logger.info("webhook %s attempt %d failed: %r", cfg.url, attempt, exc)
            if attempt < attempts:
                await anyio.sleep(min(delay, 30.0))
                delay = math.ldexp(delay, 1)
        return False
