"""Push notifications: webhook URL screening and delivery.

A client registers a webhook for a task; the node POSTs every task event to it as a
``StreamResponse`` JSON body (spec 4.3.3), with ``X-A2A-Notification-Token: <token>`` when the
config has a token and ``Authorization: <scheme> <credentials>`` when it has authentication.

Because the node makes the request, a webhook URL is a server-side request forgery vector: by
default a URL whose host resolves to a loopback, private, link-local, site-local, shared,
reserved, multicast or unspecified address is refused, and so is an IPv6 address that embeds
such an IPv4 one (IPv4-mapped or -compatible, 6to4, NAT64, Teredo). The check runs at
registration and again at each delivery (a DNS answer can change); a delivery resolves the host
once, screens the answer and connects to that very address (the ``Host`` header and TLS SNI and
certificate check stay on the name), so a rebinding DNS server cannot swap in a loopback
address between check and use. ``PushConfig.allow_private_urls`` or ``allowed_hosts`` opt in
explicitly. ``PushConfig.resolver`` is the name lookup (the system's by default).

Webhook URLs reach the logs redacted (:func:`redact_url`): no userinfo, no query.

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
from collections.abc import Awaitable, Callable
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


Resolver = Callable[[str, int], Awaitable[list[str]]]
"""A name lookup: ``(host, port)`` -> the IP addresses (text) to connect to, in order."""


async def system_resolver(host: str, port: int) -> list[str]:
    """The operating system's lookup (``getaddrinfo``), run off the event loop."""
    infos = await anyio.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return [str(info[4][0]) for info in infos]


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
    resolver: Resolver = field(default=system_resolver, repr=False, compare=False)
    """How webhook host names are resolved (a seam for tests and custom DNS)."""


_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_NAT64_LOCAL = ipaddress.IPv6Network("64:ff9b:1::/48")
_IPV4_COMPATIBLE = ipaddress.IPv6Network("::/96")


def _embedded_ipv4(addr: ipaddress.IPv6Address) -> list[ipaddress.IPv4Address]:
    """The IPv4 addresses an IPv6 address carries: compatible, 6to4, NAT64, Teredo client."""
    found: list[ipaddress.IPv4Address] = []
    if addr.sixtofour is not None:
        found.append(addr.sixtofour)
    if addr.teredo is not None:
        found.append(addr.teredo[1])  # the client address (bits inverted on the wire)
    if addr in _NAT64 or (addr in _IPV4_COMPATIBLE and int(addr) > 1):
        found.append(ipaddress.IPv4Address(int(addr) & 0xFFFFFFFF))
    return found


def _blocked_ip(addr: ipaddress.IPv4Address | ipaddress.IPv6Address) -> bool:
    return (
        not addr.is_global
        or addr.is_loopback
        or addr.is_link_local
        or addr.is_private
        or addr.is_multicast
        or addr.is_reserved
        or addr.is_unspecified
    )


def blocked_address(ip_text: str) -> bool:
    """Whether push screening refuses a webhook at this IP address (text; a zone is ignored)."""
    try:
        addr = ipaddress.ip_address(ip_text.split("%", 1)[0])
    except ValueError:
        return True
    if isinstance(addr, ipaddress.IPv6Address):
        if addr.ipv4_mapped is not None:
            return _blocked_ip(addr.ipv4_mapped)  # the same host as the IPv4 address
        if addr.is_site_local or addr in _NAT64_LOCAL:
            return True
        # Where it really leads counts too: a translated or tunnelled IPv4 address.
        if any(_blocked_ip(v4) for v4 in _embedded_ipv4(addr)):
            return True
    return _blocked_ip(addr)


@dataclass(frozen=True)
class WebhookTarget:
    """A screened webhook: where to connect (``address``; ``None``: let the client resolve)."""

    url: str
    host: str
    address: str | None


def _bad_url(text: str) -> InvalidParamsError:
    return InvalidParamsError.from_violations([("url", text)])


def _split(url: str) -> tuple[urllib.parse.SplitResult, str, int]:
    try:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port
    except ValueError:
        raise _bad_url("not a valid URL") from None
    if parsed.scheme not in ("http", "https"):
        raise _bad_url("scheme must be http or https")
    host = parsed.hostname
    if not host:
        raise _bad_url("URL has no host")
    return parsed, host, port or (443 if parsed.scheme == "https" else 80)


def _allowed(host: str, config: PushConfig) -> bool:
    return config.allow_private_urls or host.lower() in {h.lower() for h in config.allowed_hosts}


def _refused(host: str) -> InvalidParamsError:
    return _bad_url(
        f"host {host!r} resolves to a loopback, private or link-local address"
        " (refused; the node's push config must allow it explicitly)"
    )


async def resolve_webhook(url: str, config: PushConfig) -> WebhookTarget:
    """Resolve ``url``'s host once and screen the answer; the target pins the checked address.

    Raises ``InvalidParamsError`` for a URL this node may not call (or a host that does not
    resolve). An IP literal is screened as is.
    """
    _, host, port = _split(url)
    allowed = _allowed(host, config)
    try:
        ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        pass
    else:
        if not allowed and blocked_address(host):
            raise _refused(host)
        return WebhookTarget(url=url, host=host, address=None)
    try:
        addresses = await config.resolver(host, port)
    except OSError:
        addresses = []
    if not addresses:
        raise _bad_url(f"host {host!r} does not resolve")
    if not allowed and any(blocked_address(a) for a in addresses):
        raise _refused(host)
    return WebhookTarget(url=url, host=host, address=addresses[0])


async def check_webhook_url(url: str, config: PushConfig) -> None:
    """Raise ``InvalidParamsError`` unless ``url`` is an http(s) URL this node may call."""
    _, host, _ = _split(url)
    if _allowed(host, config):
        return
    await resolve_webhook(url, config)


def redact_url(url: str) -> str:
    """``url`` for a log line: scheme, host, port and path; userinfo, query and fragment cut."""
    try:
        parsed = urllib.parse.urlsplit(url)
        port = parsed.port
    except ValueError:
        return "<unparseable URL>"
    host = parsed.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    netloc = f"{host}:{port}" if port is not None else host
    return urllib.parse.urlunsplit((parsed.scheme, netloc, parsed.path, "", ""))


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
                        logger.exception("push delivery to %s failed", redact_url(cfg.url))

    async def _deliver(self, cfg: TaskPushNotificationConfig, body: bytes) -> bool:
        shown = redact_url(cfg.url)
        try:
            target = await resolve_webhook(cfg.url, self.config)
        except InvalidParamsError as exc:
            logger.warning("push to %s refused: %s", shown, exc.message)
            return False
        headers = {"Content-Type": A2A_CONTENT_TYPE}
        if cfg.token:
            headers[NOTIFICATION_TOKEN_HEADER] = cfg.token
        if cfg.authentication is not None and cfg.authentication.credentials:
            scheme = cfg.authentication.scheme or "Bearer"
            headers["Authorization"] = f"{scheme} {cfg.authentication.credentials}"
        client = self._http()
        request = client.build_request("POST", cfg.url, content=body, headers=headers)
        if target.address is not None:
            # Connect to the screened address, not to whatever the name resolves to now; the
            # Host header (already set from the URL) and TLS SNI/verification keep the name.
            request.url = request.url.copy_with(host=target.address)
            request.extensions = {**request.extensions, "sni_hostname": target.host}
        delay = self.config.backoff_s
        attempts = max(1, self.config.max_attempts)
        for attempt in range(1, attempts + 1):
            try:
                response = await client.send(request)
                await response.aclose()
                if response.status_code < 500 and response.status_code not in _RETRY_STATUSES:
                    if response.status_code >= 300:
                        logger.warning("webhook %s answered %s", shown, response.status_code)
                    return response.status_code < 300
            except Exception as exc:  # connection refused, timeout, ...
                logger.info("webhook %s attempt %d failed: %s", shown, attempt, type(exc).__name__)
            if attempt < attempts:
                await anyio.sleep(min(delay, 30.0))
                delay = math.ldexp(delay, 1)
        return False
