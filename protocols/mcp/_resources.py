"""A server's resources and prompts: each listing followed through every page.

Kept apart from ``MCPToolset``'s tool and connection logic (which mixes this in and supplies
``_request``: one request in its client span, resent once on a new session if the server forgot
the old one; ``send`` gets the ``_meta`` to send it with).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

import mcp_types as mt
from mcp import Client

from agent_runtime.types import ResourcePart

from . import _convert

_T = TypeVar("_T")
Meta = mt.RequestParamsMeta | None
"""What a request carries in ``_meta`` (the ``traceparent`` of its span, when tracing)."""
_MAX_PAGES = 1000


class _Page(Protocol):
    @property
    def next_cursor(self) -> str | None: ...


_PageT = TypeVar("_PageT", bound=_Page)


async def _all_pages(fetch: Callable[[str | None], Awaitable[_PageT]]) -> list[_PageT]:
    """Every page of a paginated list (``fetch`` gets the cursor; ``None`` asks for the first)."""
    pages: list[_PageT] = []
    cursor: str | None = None
    for _ in range(_MAX_PAGES):
        page = await fetch(cursor)
        pages.append(page)
        cursor = page.next_cursor
        if not cursor:
            break
    return pages


class ResourcesAndPrompts:
    """Mixin: resources, resource templates and prompts of the server behind ``_request``."""

    async def _request(self, method: str, send: Callable[[Client, Meta], Awaitable[_T]]) -> _T:
        raise NotImplementedError

    async def list_resources(self) -> list[mt.Resource]:
        """Every resource the server lists (all pages)."""

        async def send(client: Client, meta: Meta) -> list[mt.Resource]:
            pages = await _all_pages(lambda cursor: client.list_resources(cursor=cursor, meta=meta))
            return [item for page in pages for item in page.resources]

        return await self._request("resources/list", send)

    async def list_resource_templates(self) -> list[mt.ResourceTemplate]:
        """Every resource template the server lists (all pages)."""

        async def send(client: Client, meta: Meta) -> list[mt.ResourceTemplate]:
            pages = await _all_pages(
                lambda cursor: client.list_resource_templates(cursor=cursor, meta=meta)
            )
            return [item for page in pages for item in page.resource_templates]

        return await self._request("resources/templates/list", send)

    async def read_resource(self, uri: str) -> list[ResourcePart]:
        """A resource's contents as content parts (text, or decoded bytes)."""

        async def send(client: Client, meta: Meta) -> mt.ReadResourceResult:
            return await client.read_resource(uri, meta=meta)

        result = await self._request("resources/read", send)
        return [_convert.resource_part(contents) for contents in result.contents]

    async def subscribe_resource(self, uri: str) -> None:
        """Ask the server for ``notifications/resources/updated`` about ``uri`` (they reach
        the toolset's change listeners)."""

        async def send(client: Client, meta: Meta) -> mt.EmptyResult:
            return await client.subscribe_resource(uri, meta=meta)

        await self._request("resources/subscribe", send)

    async def unsubscribe_resource(self, uri: str) -> None:
        """Stop the server's update notifications about ``uri``."""

        async def send(client: Client, meta: Meta) -> mt.EmptyResult:
            return await client.unsubscribe_resource(uri, meta=meta)

        await self._request("resources/unsubscribe", send)

    async def complete(
        self,
        ref: mt.PromptReference | mt.ResourceTemplateReference,
        argument: dict[str, str],
        context_arguments: dict[str, str] | None = None,
    ) -> mt.CompleteResult:
        """The server's completions for one argument of a prompt or resource template."""

        async def send(client: Client, meta: Meta) -> mt.CompleteResult:
            return await client.complete(ref, argument, context_arguments)  # takes no _meta

        return await self._request("completion/complete", send)

    async def list_prompts(self) -> list[mt.Prompt]:
        """Every prompt the server lists (all pages)."""

        async def send(client: Client, meta: Meta) -> list[mt.Prompt]:
            pages = await _all_pages(lambda cursor: client.list_prompts(cursor=cursor, meta=meta))
            return [item for page in pages for item in page.prompts]

        return await self._request("prompts/list", send)

    async def get_prompt(
        self, name: str, arguments: dict[str, str] | None = None
    ) -> mt.GetPromptResult:
        """One prompt, rendered by the server with ``arguments``."""

        async def send(client: Client, meta: Meta) -> mt.GetPromptResult:
            return await client.get_prompt(name, arguments, meta=meta)

        return await self._request("prompts/get", send)
