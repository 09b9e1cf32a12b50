"""What a server sends to the host on its own: sampling, elicitation, roots, logs, junk.

Kept apart from the connection logic of ``MCPToolset`` (which mixes this in): each handler
turns a server's request into a call on something the host handed in (a ``ModelBackend``, an
elicitation callback, configured roots, Python logging) and never lets a host-side failure
reach the server as anything but an error answer. What cannot be read at all (a stray line on
a stdio server's stdout) is one short warning, never a traceback.
"""

from __future__ import annotations

import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, Literal

import mcp_types as mt
from mcp.client.session import ClientRequestContext, IncomingMessage
from pydantic import ValidationError

from agent_runtime.backend import ModelBackend, ModelSettings

from . import _convert

SamplingApproval = Callable[[mt.CreateMessageRequestParams], Awaitable[bool] | bool]
ServerChange = Literal["resources", "prompts", "resource_updated"]
"""What a server said changed: its resource list, its prompt list, or one resource's content."""
ServerChangeListener = Callable[[ServerChange, "str | None"], None]
"""``(change, uri)``: ``uri`` is the resource's URI for ``"resource_updated"``, else ``None``."""

_LOG_LEVELS = {
    "debug": logging.DEBUG,
    "info": logging.INFO,
    "notice": logging.INFO,
    "warning": logging.WARNING,
    "error": logging.ERROR,
    "critical": logging.CRITICAL,
    "alert": logging.CRITICAL,
    "emergency": logging.CRITICAL,
}
_JUNK_PREVIEW_CHARS = 200


@dataclass
class ElicitationResult:
    """A host's answer to a server's elicitation request.

    ``accept`` sends ``content`` (the form's values); ``decline`` and ``cancel`` send nothing.
    An elicitation callback may also return a plain dict (accept with that content) or ``None``
    (decline).
    """

    action: Literal["accept", "decline", "cancel"]
    content: dict[str, Any] = field(default_factory=dict)


ElicitationCallback = Callable[
    [str, dict[str, Any]],
    Awaitable[ElicitationResult | dict[str, Any] | None]
    | ElicitationResult
    | dict[str, Any]
    | None,
]
"""``(message, requested_schema) -> answer``. URL-mode requests get the URL in the message and
an empty schema."""


class ServerRequestHandlers:
    """Mixin: the SDK callbacks for what a server asks of the host.

    The class mixing it in sets the attributes declared here.
    """

    name: str
    logger: logging.Logger
    sampling_model: ModelBackend | None
    sampling_max_tokens: int
    sampling_approval: SamplingApproval | None
    elicitation_callback: ElicitationCallback | None
    roots: list[str]
    _change_listeners: list[ServerChangeListener]

    def _tools_changed(self) -> None:
        raise NotImplementedError

    def add_change_listener(self, listener: ServerChangeListener) -> None:
        """Call ``listener`` when the server says its resources or prompts changed, or that a
        subscribed resource was updated (tool list changes: ``add_tools_changed_listener``)."""
        self._change_listeners.append(listener)

    def _server_changed(self, change: ServerChange, uri: str | None = None) -> None:
        for listener in list(self._change_listeners):
            try:
                listener(change, uri)
            except Exception as exc:  # noqa: BLE001 - a listener's bug must not end the session
                self.logger.warning("a change listener of MCP server %r failed: %r", self.name, exc)

    def _on_junk(self, line: bytes) -> None:
        """A line on a stdio server's stdout that is not JSON-RPC: one short warning."""
        text = repr(line.decode("utf-8", "replace").strip())
        if len(text) > _JUNK_PREVIEW_CHARS:
            text = text[: _JUNK_PREVIEW_CHARS - 3] + "..."
        self.logger.warning(
            "MCP server %r wrote a line that is not JSON-RPC to stdout (ignored): %s",
            self.name,
            text,
        )

    async def _on_message(self, message: IncomingMessage) -> None:
        if isinstance(message, Exception):
            # What the transport could not read (a stdio server's junk lines are handled by
            # ``_on_junk`` before this): noted, and the session goes on.
            detail = str(message).strip().splitlines()
            if isinstance(message, ValidationError) and message.errors():
                detail = [repr(message.errors()[0].get("input"))[:_JUNK_PREVIEW_CHARS]]
            self.logger.warning(
                "MCP server %r sent something that is not JSON-RPC (ignored): %s",
                self.name,
                detail[0] if detail else type(message).__name__,
            )
        elif isinstance(message, mt.ToolListChangedNotification):
            self._tools_changed()
        elif isinstance(message, mt.ResourceListChangedNotification):
            self._server_changed("resources")
        elif isinstance(message, mt.PromptListChangedNotification):
            self._server_changed("prompts")
        elif isinstance(message, mt.ResourceUpdatedNotification):
            self._server_changed("resource_updated", str(message.params.uri))

    async def _on_log(self, params: mt.LoggingMessageNotificationParams) -> None:
        level = _LOG_LEVELS.get(params.level, logging.INFO)
        source = f"[{params.logger}] " if params.logger else ""
        self.logger.log(level, "%s%s", source, params.data)

    async def _on_list_roots(self, context: ClientRequestContext) -> mt.ListRootsResult:
        return mt.ListRootsResult(
            roots=[mt.Root.model_validate({"uri": uri}) for uri in self.roots]
        )

    async def _on_sampling(
        self, context: ClientRequestContext, params: mt.CreateMessageRequestParams
    ) -> mt.CreateMessageResult | mt.ErrorData:
        model = self.sampling_model
        if model is None:
            return mt.ErrorData(code=mt.INVALID_REQUEST, message="sampling is not enabled")
        if self.sampling_approval is not None:
            verdict = self.sampling_approval(params)
            if inspect.isawaitable(verdict):
                verdict = await verdict
            if not verdict:
                return mt.ErrorData(code=-1, message="the user denied the sampling request")
        settings = ModelSettings(
            max_tokens=min(params.max_tokens, self.sampling_max_tokens),
            temperature=params.temperature,
            stop=list(params.stop_sequences or []),
        )
        try:
            response = await model.complete(_convert.sampling_messages(params), [], settings)
        except Exception as exc:  # noqa: BLE001 - the server gets an error, the host keeps going
            self.logger.warning("sampling for MCP server %r failed: %r", self.name, exc)
            return mt.ErrorData(code=mt.INTERNAL_ERROR, message=f"sampling failed: {exc}")
        stop_reason = (
            "maxTokens" if response.finish_reason in ("length", "max_tokens") else "endTurn"
        )
        return mt.CreateMessageResult(
            role="assistant",
            content=mt.TextContent(type="text", text=response.message.text),
            model=model.name,
            stop_reason=stop_reason,
        )

    async def _on_elicitation(
        self, context: ClientRequestContext, params: mt.ElicitRequestParams
    ) -> mt.ElicitResult | mt.ErrorData:
        callback = self.elicitation_callback
        if callback is None:
            return mt.ElicitResult(action="decline")
        if isinstance(params, mt.ElicitRequestURLParams):
            message, schema = f"{params.message}\n{params.url}", {}
        else:
            message, schema = params.message, dict(params.requested_schema)
        try:
            answer = callback(message, schema)
            if inspect.isawaitable(answer):
                answer = await answer
        except Exception as exc:  # noqa: BLE001 - a failing host callback cancels the request
            self.logger.warning("elicitation callback failed: %r", exc)
            return mt.ElicitResult(action="cancel")
        if answer is None:
            return mt.ElicitResult(action="decline")
        if isinstance(answer, ElicitationResult):
            action, content = answer.action, answer.content
        else:
            action, content = "accept", dict(answer)
        if action != "accept" or isinstance(params, mt.ElicitRequestURLParams):
            # URL mode: the user acts in the browser; an answer carries no form content.
            return mt.ElicitResult(action=action)
        return mt.ElicitResult(action="accept", content=content)
