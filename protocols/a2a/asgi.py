"""The node's ASGI app: starlette, with the protocol endpoints reached without its routing layers.

:class:`A2AStarlette` is what :func:`~.server.create_a2a_app` returns. A request to the JSON-RPC
endpoint or under the HTTP+JSON prefix (every verb reaches those endpoints, which answer any
failure themselves) goes straight to its endpoint: no middleware stack, router scan or exception
wrappers, which cost as much per request as the A2A work of a small message. Everything else (the
agent card, lifespan, unknown paths) goes through starlette as usual, and so does every request
once middleware or exception handlers are added to the app, so they apply to all requests.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

Endpoint = Callable[[Request], Awaitable[Response]]


class A2AStarlette(Starlette):
    """A starlette app whose A2A endpoints are called directly (see the module docstring)."""

    _direct_exact: dict[str, Endpoint] = {}  # noqa: RUF012 (replaced, never mutated)
    _direct_prefix: tuple[str, Endpoint] | None = None

    def set_direct_endpoints(
        self, exact: dict[str, Endpoint], prefix: tuple[str, Endpoint] | None = None
    ) -> None:
        """``exact``: endpoints by exact path; ``prefix``: one endpoint for every path under a
        prefix (``"/a2a/rest/"``). Each must answer every verb and catch its own errors."""
        self._direct_exact = dict(exact)
        self._direct_prefix = prefix

    def _direct(self, scope: Scope) -> Endpoint | None:
        if scope["type"] != "http" or self.user_middleware or self.exception_handlers:
            return None
        path: str = scope["path"]
        endpoint = self._direct_exact.get(path)
        prefix = self._direct_prefix
        if endpoint is None and prefix is not None and path.startswith(prefix[0]):
            endpoint = prefix[1]
        return endpoint

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        endpoint = self._direct(scope)
        if endpoint is None:
            await super().__call__(scope, receive, send)
            return
        scope["app"] = self
        response = await endpoint(Request(scope, receive, send))
        await response(scope, receive, send)


__all__ = ["A2AStarlette"]
