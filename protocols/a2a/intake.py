"""What the handler checks of an incoming message, and the prompt it makes of it.

A message must have parts, an id and the user's role; its parts' media types must be among the
agent's input modes, and the output modes it accepts must include one the agent produces
(ContentTypeNotSupportedError otherwise). The prompt is the parts in order: text as
is, data as JSON, files as a bracketed note.
"""

from __future__ import annotations

import json
from collections.abc import Sequence

from .card import AgentCardConfig
from .errors import (
    ContentTypeNotSupportedError,
    InvalidParamsError,
    PushNotificationNotSupportedError,
)
from .types import Message, Part, Role, SendMessageRequest


def media_ok(media_type: str, accepted: Sequence[str]) -> bool:
    """Whether ``media_type`` matches one of the ``accepted`` modes (``*/*``, ``image/*`` ...)."""
    media = media_type.split(";", 1)[0].strip().lower()
    major = media.split("/", 1)[0]
    for mode in accepted:
        m = mode.split(";", 1)[0].strip().lower()
        if m in ("*/*", "*", media) or (m.endswith("/*") and m[:-2] == major):
            return True
    return False


def check_message(
    request: SendMessageRequest, card_config: AgentCardConfig, *, push_enabled: bool
) -> None:
    """Raise the A2A error for a message this agent cannot take (before any task exists)."""
    message = request.message
    if not message.parts:
        raise InvalidParamsError.from_violations(
            [("message.parts", "at least one part is required")]
        )
    if not message.message_id:
        raise InvalidParamsError.from_violations(
            [("message.messageId", "a message id is required")]
        )
    if message.role != Role.USER:
        # ROLE_AGENT marks what the server says; a client's message is the user's turn.
        raise InvalidParamsError.from_violations(
            [("message.role", f"must be {Role.USER.value} (got {message.role.value})")]
        )
    inputs = card_config.default_input_modes
    for index, part in enumerate(message.parts):
        if part.media_type and not media_ok(part.media_type, inputs):
            raise ContentTypeNotSupportedError(
                f"message.parts[{index}] has media type {part.media_type!r}; this agent"
                f" accepts {', '.join(inputs)}",
                metadata={"mediaType": part.media_type},
            )
    config = request.configuration
    if config is not None and config.accepted_output_modes:
        outputs = card_config.default_output_modes
        if not any(media_ok(o, config.accepted_output_modes) for o in outputs):
            raise ContentTypeNotSupportedError(
                "None of the accepted output modes"
                f" ({', '.join(config.accepted_output_modes)}) is produced by this agent"
                f" ({', '.join(outputs)})"
            )
    if config is not None and config.task_push_notification_config is not None:
        if not push_enabled:
            raise PushNotificationNotSupportedError()


def _part_to_prompt(part: Part) -> str:
    if part.text is not None:
        return part.text
    if part.data is not None:
        return json.dumps(part.data, ensure_ascii=False)
    label = part.filename or part.media_type or "file"
    if part.url is not None:
        return f"[{label}: {part.url}]"
    return f"[{label}, {len(part.raw or b'')} bytes]"


def prompt_of(message: Message) -> str:
    """The prompt a message's parts make, one part per line."""
    return "\n".join(_part_to_prompt(p) for p in message.parts)
