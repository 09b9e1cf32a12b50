"""A peer A2A agent as a toolset: the model delegates by calling a tool.

``A2APeerToolset("researcher", "http://host:8000")`` offers one tool, ``ask_researcher``, whose
description comes from the peer's card (its description and skills). A call sends the model's
message to the peer, follows the task until it is terminal or waits on us, and hands the peer's
artifacts back as the tool result (text, data, files). The result's ``structured_content`` holds
``task_id``, ``context_id`` and ``state`` so the model can continue the same conversation.

When the peer needs more input (``TASK_STATE_INPUT_REQUIRED``) the result is not an error: it
quotes the peer's question and tells the model to call again with that ``task_id``. A failed or
rejected task is an ``is_error`` result with the peer's reason. A peer that cannot be reached
(after the client's retries) or does not settle within ``timeout_s`` is an ``is_error`` result
too; on a timeout (ours, or the dispatcher's cancelling the call) the remote task is cancelled so
it does not run on unobserved. That is why, without streaming, the message goes out with
``returnImmediately`` and the task is polled: the task id is known from the first answer.

With ``skills_as_tools=True`` each skill on the card becomes its own tool (the skill id travels in
the message metadata as ``skillId``), for peers whose skills differ enough that the model should
choose among them.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from types import TracebackType
from typing import Any, Self

import anyio
import httpx

from agent_runtime.errors import ConfigError
from agent_runtime.toolset import ToolContext, Toolset
from agent_runtime.types import (
    BinaryPart,
    ContentPart,
    DataPart,
    ResourceLink,
    TextPart,
    ToolAnnotations,
    ToolResult,
    ToolSpec,
)

from .client import A2AClient
from .errors import A2AClientError, A2AError, TaskFollowTimeout
from .types import (
    AgentCard,
    AgentSkill,
    Message,
    Part,
    StreamResponse,
    Task,
    TaskState,
)

__all__ = ["A2APeerToolset", "parts_to_content", "peers_from_config"]

_NAME_UNSAFE = re.compile(r"[^A-Za-z0-9_-]+")
_STATE_NAMES = {state: state.value.removeprefix("TASK_STATE_").lower() for state in TaskState}


def _tool_name(text: str) -> str:
    """A tool name providers accept: ``[A-Za-z0-9_-]``, at most 64 characters."""
    cleaned = _NAME_UNSAFE.sub("_", text).strip("_") or "peer"
    return cleaned[:64]


def parts_to_content(parts: list[Part]) -> list[ContentPart]:
    """A2A parts as runtime content parts: text, data, inline bytes, or a link to a file.

    Adjacent text parts are joined into one: a streamed artifact arrives as many small chunks,
    and the model should read it as the one text it is.
    """
    out: list[ContentPart] = []
    for part in parts:
        if part.text is not None:
            previous = out[-1] if out else None
            if isinstance(previous, TextPart):
                previous.text += part.text
            else:
                out.append(TextPart(text=part.text))
        elif part.raw is not None:
            out.append(
                BinaryPart(data=part.raw, media_type=part.media_type or "application/octet-stream")
            )
        elif part.url is not None:
            out.append(
                ResourceLink(uri=part.url, name=part.filename or None, media_type=part.media_type)
            )
        else:
            out.append(DataPart(data=part.data))
    return out


_INPUT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "message": {
            "type": "string",
            "description": "What to ask or tell the peer agent, self-contained.",
        },
        "context_id": {
            "type": "string",
            "description": "Continue an earlier conversation with this peer (its context_id).",
        },
        "task_id": {
            "type": "string",
            "description": (
                "Answer a peer that asked for input: the task_id from its earlier result."
            ),
        },
    },
    "required": ["message"],
    "additionalProperties": False,
}


class A2APeerToolset(Toolset):
    """One A2A peer agent, offered to the model as a tool (or one tool per skill).

    ``name`` labels the peer (the default tool is ``ask_<name>``; ``tool_name`` overrides it).
    ``url`` is the peer's base URL or card URL. ``timeout_s`` bounds one call end to end;
    ``max_concurrency`` bounds how many calls to this peer run at once (further calls wait).
    Credentials and transport settings go to the underlying :class:`A2AClient`; pass ``client``
    to use one you built.
    """

    def __init__(
        self,
        name: str,
        url: str | None = None,
        *,
        client: A2AClient | None = None,
        tool_name: str | None = None,
        description: str | None = None,
        skills_as_tools: bool = False,
        timeout_s: float = 300.0,
        max_concurrency: int = 4,
        streaming: bool | None = None,
        bearer_token: str | None = None,
        api_key: str | None = None,
        headers: Mapping[str, str] | None = None,
        http: httpx.AsyncClient | None = None,
        retries: int = 3,
        bindings: tuple[str, ...] | None = None,
    ) -> None:
        super().__init__()
        if client is None and url is None:
            raise ValueError("A2APeerToolset needs the peer's url or a client")
        self.name = name
        self._tool_name = tool_name or _tool_name(f"ask_{name}")
        self._description = description
        self._skills_as_tools = skills_as_tools
        self._timeout_s = timeout_s
        self._streaming = streaming
        self._calls = anyio.CapacityLimiter(max_concurrency)
        self._owns_client = client is None
        if client is None:
            assert url is not None
            extra: dict[str, Any] = {}
            if bindings is not None:
                extra["bindings"] = bindings
            client = A2AClient(
                url,
                http=http,
                headers=headers,
                bearer_token=bearer_token,
                api_key=api_key,
                retries=retries,
                max_concurrency=max(2 * max_concurrency, 8),
                timeout=timeout_s,
                **extra,
            )
        self.client = client
        self._skill_by_tool: dict[str, AgentSkill | None] = {}

    # ------------------------------------------------------------------ lifecycle

    async def __aenter__(self) -> Self:
        # Resolve the card now so a misconfigured URL shows up at startup, not mid-run;
        # an unreachable peer is not fatal (its tool reports the failure when called).
        try:
            await self.client.get_card()
        except (A2AClientError, A2AError):
            pass
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        if self._owns_client:
            await self.client.aclose()

    # ------------------------------------------------------------------ tools

    async def list_tools(self) -> list[ToolSpec]:
        try:
            card: AgentCard | None = await self.client.get_card()
        except (A2AClientError, A2AError):
            card = None
        annotations = ToolAnnotations(
            title=card.name if card else self.name, read_only=False, open_world=True
        )
        origin = f"a2a:{self.name}"
        if self._skills_as_tools and card is not None and card.skills:
            specs = []
            self._skill_by_tool = {}
            for skill in card.skills:
                name = _tool_name(f"{self.name}_{skill.id}")
                self._skill_by_tool[name] = skill
                specs.append(
                    ToolSpec(
                        name=name,
                        description=self._skill_description(card, skill),
                        input_schema=_INPUT_SCHEMA,
                        annotations=annotations,
                        origin=origin,
                    )
                )
            return specs
        self._skill_by_tool = {self._tool_name: None}
        return [
            ToolSpec(
                name=self._tool_name,
                description=self._describe(card),
                input_schema=_INPUT_SCHEMA,
                annotations=annotations,
                origin=origin,
            )
        ]

    def _describe(self, card: AgentCard | None) -> str:
        if self._description:
            return self._description
        if card is None:
            return (
                f"Delegate a request to the peer agent '{self.name}' and get its answer "
                "(its card could not be read yet)."
            )
        lines = [f"Delegate to the peer agent '{card.name}': {card.description}".rstrip()]
        if card.skills:
            lines.append("Skills:")
            for skill in card.skills:
                line = f"- {skill.name}: {skill.description}"
                if skill.examples:
                    line += f" (e.g. {skill.examples[0]!r})"
                lines.append(line)
        lines.append(
            "Send a self-contained message. If the peer asks for more input, call again with "
            "its task_id and your answer."
        )
        return "\n".join(lines)

    def _skill_description(self, card: AgentCard, skill: AgentSkill) -> str:
        text = f"Ask the peer agent '{card.name}' to {skill.name}: {skill.description}"
        if skill.examples:
            text += f" Example: {skill.examples[0]!r}."
        return text

    # ------------------------------------------------------------------ calling

    @asynccontextmanager
    async def _call_slot(self) -> Any:
        borrower = object()
        await self._calls.acquire_on_behalf_of(borrower)
        try:
            yield
        finally:
            self._calls.release_on_behalf_of(borrower)

    async def call_tool(self, name: str, arguments: dict[str, Any], ctx: ToolContext) -> ToolResult:
        """Send the model's message to the peer and follow the task to a result.

        The steps: know the tool, build the message, send and follow it within the deadline
        (tracking the task so it can be cancelled if we give up), and turn the answer, or the
        failure, into a tool result.
        """
        if name not in self._skill_by_tool:
            await self.list_tools()
        if name not in self._skill_by_tool:
            return ToolResult.error(f"unknown tool {name!r} for peer {self.name!r}")
        request = _PeerRequest.from_arguments(arguments, self._skill_by_tool[name])
        tracker = _TaskTracker(ctx)
        timeout_s = self._deadline(ctx)
        async with self._call_slot():
            try:
                reply = await self.client.send_and_wait(
                    request.message,
                    timeout_s=timeout_s,
                    streaming=self._streaming,
                    metadata=request.metadata,
                    on_event=tracker,
                    return_immediately=True,
                )
            except TaskFollowTimeout as exc:
                return await self._timed_out(exc.task or tracker.seen, timeout_s)
            except anyio.get_cancelled_exc_class():
                # Our caller gave up (e.g. the dispatcher's timeout): do not leave the peer
                # working on a task nobody will read.
                if tracker.seen is not None:
                    with anyio.CancelScope(shield=True):
                        await self._cancel_quietly(tracker.seen.id)
                raise
            except A2AError as exc:
                return self._refused(exc, request)
            except A2AClientError as exc:
                return ToolResult.error(f"Could not reach the peer agent '{self.name}': {exc}")
        if isinstance(reply, Message):
            return _message_result(reply)
        return self._task_result(reply, name)

    def _deadline(self, ctx: ToolContext) -> float:
        """How long one call may take: ours, and a little less than the dispatcher's."""
        timeout_s = self._timeout_s
        if ctx.timeout_s:
            # Finish (and cancel the peer's task) a little before the dispatcher gives up on us.
            timeout_s = min(timeout_s, max(ctx.timeout_s * 0.9, ctx.timeout_s - 1.0))
        return timeout_s

    async def _timed_out(self, last: Task | None, timeout_s: float) -> ToolResult:
        """The peer did not settle in time: cancel its task and say so."""
        if last is not None:
            await self._cancel_quietly(last.id)
        return ToolResult(
            content=[
                TextPart(
                    text=f"The peer agent '{self.name}' did not finish within "
                    f"{timeout_s:g}s" + (f"; its task {last.id} was cancelled." if last else ".")
                )
            ],
            structured_content=_structured(last, "timeout"),
            is_error=True,
        )

    def _refused(self, exc: A2AError, request: _PeerRequest) -> ToolResult:
        """The peer answered with an A2A error."""
        return ToolResult(
            content=[
                TextPart(
                    text=f"The peer agent '{self.name}' refused the request: "
                    f"{type(exc).__name__}: {exc.message}"
                )
            ],
            structured_content={
                "task_id": request.task_id,
                "context_id": request.context_id,
                "state": "error",
                "error_code": exc.code,
            },
            is_error=True,
        )

    async def _cancel_quietly(self, task_id: str) -> None:
        with anyio.move_on_after(5):
            try:
                await self.client.cancel_task(task_id)
            except (A2AClientError, A2AError):
                pass

    def _task_result(self, task: Task, tool: str) -> ToolResult:
        state = task.status.state
        structured = _structured(task, _STATE_NAMES.get(state, str(state)))
        content: list[ContentPart] = []
        for artifact in task.artifacts:
            content.extend(parts_to_content(artifact.parts))
        status_text = task.status.message.text if task.status.message is not None else ""
        if state == TaskState.COMPLETED:
            if not content and task.status.message is not None:
                content = parts_to_content(task.status.message.parts)
            if not content:
                content = [TextPart(text=_last_agent_text(task) or "(the peer returned nothing)")]
            return ToolResult(content=content, structured_content=structured)
        if state.is_interrupted:
            what = "input" if state == TaskState.INPUT_REQUIRED else "authorization"
            question = status_text or _last_agent_text(task) or "(no question given)"
            note = (
                f"The peer agent '{self.name}' needs more {what} before it can finish.\n"
                f"Its question: {question}\n"
                f"To answer, call {tool} again with task_id={task.id!r}"
                + (f" and context_id={task.context_id!r}" if task.context_id else "")
                + " and your answer as the message."
            )
            return ToolResult(
                content=[TextPart(text=note), *content], structured_content=structured
            )
        if state == TaskState.CANCELED:
            reason = status_text or "the task was canceled"
            return ToolResult(
                content=[
                    TextPart(text=f"The peer agent '{self.name}' canceled the task: {reason}")
                ],
                structured_content=structured,
                is_error=True,
            )
        word = "rejected" if state == TaskState.REJECTED else "failed"
        reason = status_text or _last_agent_text(task) or "no reason given"
        return ToolResult(
            content=[TextPart(text=f"The peer agent '{self.name}' {word} the task: {reason}")],
            structured_content=structured,
            is_error=True,
        )


@dataclass(frozen=True)
class _PeerRequest:
    """What one tool call sends: the model's message, in its conversation or task."""

    message: Message
    context_id: str | None
    task_id: str | None
    metadata: dict[str, Any] | None

    @classmethod
    def from_arguments(cls, arguments: dict[str, Any], skill: AgentSkill | None) -> _PeerRequest:
        text = str(arguments.get("message", ""))
        context_id = arguments.get("context_id") or None
        task_id = arguments.get("task_id") or None
        return cls(
            message=Message.user_text(text, context_id=context_id, task_id=task_id),
            context_id=context_id,
            task_id=task_id,
            metadata={"skillId": skill.id} if skill is not None else None,
        )


class _TaskTracker:
    """Sees each event the peer streams during one call.

    It remembers the task (so a call we give up on can cancel it) and reports each status the
    peer sends as one step of progress to our caller.
    """

    def __init__(self, ctx: ToolContext) -> None:
        self._ctx = ctx
        self._steps = 0
        self.seen: Task | None = None

    async def __call__(self, event: StreamResponse) -> None:
        if event.task is not None:
            self.seen = event.task
        elif event.status_update is not None and self.seen is None:
            self.seen = Task(
                id=event.status_update.task_id,
                context_id=event.status_update.context_id,
                status=event.status_update.status,
            )
        update = event.status_update
        if update is not None and update.status.message is not None:
            note = update.status.message.text or _describe_parts(update.status.message.parts)
            self._steps += 1
            await self._ctx.report_progress(float(self._steps), None, note[:200] or None)


def _message_result(reply: Message) -> ToolResult:
    """A peer that answered with a plain message (no task)."""
    return ToolResult(
        content=parts_to_content(reply.parts) or [TextPart(text="")],
        structured_content={
            "task_id": reply.task_id,
            "context_id": reply.context_id,
            "state": "message",
        },
    )


def _structured(task: Task | None, state: str) -> dict[str, Any]:
    return {
        "task_id": task.id if task else None,
        "context_id": task.context_id if task else None,
        "state": state,
    }


def _describe_parts(parts: list[Part]) -> str:
    """A short line for non-text status parts (e.g. the peer's tool activity as data)."""
    for part in parts:
        if isinstance(part.data, dict) and isinstance(part.data.get("toolCall"), dict):
            return f"peer calls {part.data['toolCall'].get('name', 'a tool')}"
    return ""


def _last_agent_text(task: Task) -> str:
    for message in reversed(task.history):
        if message.role.value == "ROLE_AGENT" and message.text:
            return message.text
    return ""


# --------------------------------------------------------------------------- config

_CONFIG_KEYS = {
    "url": "url",
    "toolName": "tool_name",
    "tool_name": "tool_name",
    "description": "description",
    "skillsAsTools": "skills_as_tools",
    "skills_as_tools": "skills_as_tools",
    "timeoutS": "timeout_s",
    "timeout_s": "timeout_s",
    "maxConcurrency": "max_concurrency",
    "max_concurrency": "max_concurrency",
    "streaming": "streaming",
    "bearerToken": "bearer_token",
    "bearer_token": "bearer_token",
    "apiKey": "api_key",
    "api_key": "api_key",
    "headers": "headers",
    "retries": "retries",
    "bindings": "bindings",
}
_SECRET_KEYS = {"bearer_token", "api_key"}


def _secret(value: str, where: str) -> str:
    """``"env:NAME"`` reads the credential from the environment, so configs hold no secrets."""
    if value.startswith("env:"):
        name = value[4:]
        if name not in os.environ:
            raise ConfigError(f"{where}: environment variable {name!r} is not set")
        return os.environ[name]
    return value


def peers_from_config(peers: Mapping[str, Any]) -> list[A2APeerToolset]:
    """Toolsets for the ``a2aPeers`` section of a runtime config.

    Each entry is ``"name": "http://peer"`` or ``"name": {"url": ..., "toolName", "description",
    "skillsAsTools", "timeoutS", "maxConcurrency", "streaming", "bearerToken", "apiKey",
    "headers", "retries", "bindings"}`` (snake_case keys work too). Credentials and header values
    may be written ``"env:NAME"``.
    """
    toolsets: list[A2APeerToolset] = []
    for name, entry in peers.items():
        where = f"a2aPeers.{name}"
        if isinstance(entry, str):
            entry = {"url": entry}
        if not isinstance(entry, Mapping):
            raise ConfigError(f"{where}: expected a URL or an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(_CONFIG_KEYS))
        if unknown:
            raise ConfigError(f"{where}: unknown keys {unknown}; known: {sorted(_CONFIG_KEYS)}")
        kwargs: dict[str, Any] = {_CONFIG_KEYS[k]: v for k, v in entry.items()}
        url = kwargs.pop("url", None)
        if not isinstance(url, str) or not url.startswith(("http://", "https://")):
            raise ConfigError(f"{where}.url: an http(s) URL is required, got {url!r}")
        for key in _SECRET_KEYS & set(kwargs):
            kwargs[key] = _secret(str(kwargs[key]), f"{where}.{key}")
        if "headers" in kwargs:
            headers = kwargs["headers"]
            if not isinstance(headers, Mapping):
                raise ConfigError(f"{where}.headers: expected an object")
            kwargs["headers"] = {
                str(k): _secret(str(v), f"{where}.headers.{k}") for k, v in headers.items()
            }
        if "bindings" in kwargs:
            kwargs["bindings"] = tuple(kwargs["bindings"])
        try:
            toolsets.append(A2APeerToolset(str(name), url, **kwargs))
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"{where}: {exc}") from exc
    return toolsets
