"""What a served agent is given about the request it handles: the message as sent, typed.

The node fills a :class:`RequestContext` for every accepted ``SendMessage`` (or streaming send):
the message with all its parts (text, file bytes, file URLs, data), its ids, metadata and
extensions, the task it starts or continues, the tasks it references that the caller may read,
and who the caller is. It is read-only: an agent answers through its
:class:`~.reply.TaskReply`.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from .intake import prompt_of
from .types import Message, Part, SendMessageConfiguration, Task


@dataclass(frozen=True)
class RequestContext:
    """One incoming message and where it belongs.

    ``message`` carries the ``taskId`` and ``contextId`` the node gave it. ``task`` is the task
    as it stood when the message arrived (for a new task: SUBMITTED, with this message as its
    only history). ``referenced_tasks`` are the tasks named in ``referenceTaskIds`` that belong
    to the caller (others are left out, unannounced). ``state`` is what the agent saved with
    ``TaskReply.save_state`` on this task, or, for a new task in a known context, on the latest
    task of that context (empty otherwise).
    """

    message: Message
    task: Task
    principal: str
    referenced_tasks: tuple[Task, ...] = ()
    configuration: SendMessageConfiguration | None = None
    request_metadata: dict[str, Any] | None = None
    state: list[dict[str, Any]] = field(default_factory=list)
    continues_task: bool = False
    """The message answers an existing task (its ``taskId`` was given)."""

    @property
    def task_id(self) -> str:
        return self.task.id

    @property
    def context_id(self) -> str:
        return self.task.context_id or ""

    @property
    def message_id(self) -> str:
        return self.message.message_id

    @property
    def metadata(self) -> dict[str, Any]:
        """The message's metadata (empty when it has none)."""
        return self.message.metadata or {}

    @property
    def parts(self) -> list[Part]:
        return self.message.parts

    @property
    def text(self) -> str:
        """The message as one prompt: text parts as is, data as JSON, files as a note."""
        return prompt_of(self.message)

    def data_parts(self) -> list[Any]:
        """The values of the message's data parts, in order."""
        return [p.data for p in self.message.parts if p.data is not None]

    def file_parts(self) -> list[Part]:
        """The message's file parts: inline bytes (``raw``) or a link (``url``)."""
        return [p for p in self.message.parts if p.raw is not None or p.url is not None]
