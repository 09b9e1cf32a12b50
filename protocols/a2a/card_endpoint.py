"""Serving the agent card over HTTP: ``GET /.well-known/agent-card.json`` and the extended card.

The card names the URLs of the node's bindings. With ``base_url`` set they are built from it;
without, from the URL each request came in on (its ``Host`` header when that is a plain
``host[:port]``, else the listening socket's address), so the built cards are kept in a
least-recently-used cache of at most :data:`CARD_CACHE_SIZE` entries: distinct Host headers
cannot grow it without bound.

Responses carry ``ETag`` (a hash of the exact bytes), ``Last-Modified`` (when the card's content
last changed) and ``Cache-Control``; ``If-None-Match`` that matches, or (only when no
``If-None-Match`` is sent, RFC 9110 13.2.2) ``If-Modified-Since`` at or after ``Last-Modified``,
gets ``304 Not Modified``. Changing what the card says (:meth:`CardEndpoint.set_grpc_url`)
empties the cache and moves ``Last-Modified`` on, so validators change with the card.
"""

from __future__ import annotations

import re
import time
from collections import OrderedDict
from email.utils import formatdate, parsedate_to_datetime

from starlette.requests import Request
from starlette.responses import Response

from .card import card_etag, etag_matches
from .handler import A2ARequestHandler

CARD_CACHE_SIZE = 32
"""Distinct (base URL, extended) cards kept built; least recently used ones are dropped."""

_HOST_HEADER = re.compile(
    r"(?:[A-Za-z0-9][A-Za-z0-9.-]{0,252}|\[[0-9A-Fa-f:.]{2,45}\])(?::[0-9]{1,5})?"
)


class CardEndpoint:
    """Builds, caches and serves the card for one node's HTTP bindings."""

    def __init__(
        self,
        handler: A2ARequestHandler,
        *,
        base_url: str | None,
        jsonrpc_path: str,
        rest_prefix: str,
    ) -> None:
        self.handler = handler
        self.base_url = base_url.rstrip("/") if base_url else None
        self.jsonrpc_path = jsonrpc_path
        self.rest_prefix = rest_prefix
        self._grpc_url: str | None = None
        self._cache: OrderedDict[tuple[str, bool], tuple[bytes, str]] = OrderedDict()
        self.modified = int(time.time())
        """When the card's content last changed (epoch seconds): ``Last-Modified``."""

    @property
    def grpc_url(self) -> str | None:
        """The gRPC binding's ``host:port`` the card lists (``None``: no gRPC interface)."""
        return self._grpc_url

    def set_grpc_url(self, url: str | None) -> None:
        """List the gRPC binding at ``url`` (``None``: none). A change drops every built card
        and moves ``modified`` past its old value, so a client holding the old card's ETag or
        date gets the new one, even within the same second."""
        if url == self._grpc_url:
            return
        self._grpc_url = url
        self._cache.clear()
        self.modified = max(int(time.time()), self.modified + 1)

    @property
    def cache_size(self) -> int:
        """How many built cards are cached now (at most ``CARD_CACHE_SIZE``)."""
        return len(self._cache)

    def base(self, request: Request) -> str:
        """The URL the bindings are reached at: ``base_url``, else the request's own."""
        return self.base_url or _request_base(request)

    def card_bytes(self, request: Request, *, extended: bool) -> tuple[bytes, str]:
        """The card's JSON and its ETag, built once per (base URL, extended)."""
        base = self.base(request)
        key = (base, extended)
        cached = self._cache.get(key)
        if cached is None:
            card = self.handler.build_card(
                base + self.jsonrpc_path,
                base + self.rest_prefix,
                extended=extended,
                grpc_url=self._grpc_url,
            )
            body = card.to_wire_json().encode()
            cached = (body, card_etag(body))
            self._cache[key] = cached
            while len(self._cache) > CARD_CACHE_SIZE:
                self._cache.popitem(last=False)
        else:
            self._cache.move_to_end(key)
        return cached

    async def serve(self, request: Request) -> Response:
        """``GET /.well-known/agent-card.json``: the public card, or 304."""
        body, etag = self.card_bytes(request, extended=False)
        headers = {
            "ETag": etag,
            "Last-Modified": formatdate(self.modified, usegmt=True),
            "Cache-Control": f"public, max-age={self.handler.card_config.cache_max_age}",
        }
        if_none_match = request.headers.get("if-none-match")
        if if_none_match is not None:  # RFC 9110 13.2.2: it wins over If-Modified-Since
            if etag_matches(if_none_match, etag):
                return Response(status_code=304, headers=headers)
        elif _not_modified_since(request.headers.get("if-modified-since"), self.modified):
            return Response(status_code=304, headers=headers)
        return Response(body, media_type="application/json", headers=headers)


def _request_base(request: Request) -> str:
    """The URL a request came in on, for a card without ``base_url``.

    The Host header is echoed only when it is a plain ``host[:port]``; anything else (empty,
    overlong, odd characters) is replaced by the address of the socket the request arrived on.
    """
    host = request.headers.get("host", "")
    if not _HOST_HEADER.fullmatch(host):
        server = request.scope.get("server")
        if server and server[1] is not None:
            name = f"[{server[0]}]" if ":" in str(server[0]) else str(server[0])
            host = f"{name}:{server[1]}"
        else:
            host = "localhost"
    root = str(request.scope.get("root_path", "")).rstrip("/")
    return f"{request.url.scheme}://{host}{root}"


def _not_modified_since(header: str | None, last_modified: int) -> bool:
    """``If-Modified-Since`` (an HTTP-date) at or after ``last_modified`` (epoch seconds)."""
    if not header:
        return False
    try:
        since = parsedate_to_datetime(header)
    except (TypeError, ValueError, IndexError, OverflowError):
        return False
    if since.tzinfo is None:
        return False  # not an HTTP-date (those are GMT): ignored, as RFC 9110 13.1.3 says
    return int(since.timestamp()) >= last_modified


__all__ = ["CARD_CACHE_SIZE", "CardEndpoint"]
