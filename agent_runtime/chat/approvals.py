"""The questions a chat asks mid-turn: tool approvals, MCP elicitation forms, sampling requests.

``ChatAsker`` holds the three callbacks the agent's parts call: ``approve`` (the dispatcher
policy's approval callback: allow once, always for this tool, deny), ``elicit`` (an MCP
server's form: one field at a time, each answer parsed and checked against the field's schema
before the next, the whole answer against the requested schema at the end) and
``approve_sampling`` (a server wants the agent's model to answer something). Questions are
asked one at a time, with the turn's redrawn region paused. Ctrl-C at a question cancels the
turn; Ctrl-D declines.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import anyio
from jsonschema import Draft202012Validator, FormatChecker
from prompt_toolkit import PromptSession
from prompt_toolkit.document import Document
from prompt_toolkit.validation import ValidationError, Validator
from rich.console import Console
from rich.panel import Panel
from rich.text import Text

from agent_runtime._terminal import printable
from agent_runtime.policy import approval_reason
from agent_runtime.types import ToolCall, ToolSpec

from .render import TurnView, one_line_json, printable_lines

_CHOICES = {
    "y": "once",
    "yes": "once",
    "a": "always",
    "always": "always",
    "n": "deny",
    "no": "deny",
}


class _Choice(Validator):
    def __init__(self, allowed: Sequence[str]) -> None:
        self.allowed = allowed

    def validate(self, document: Document) -> None:
        if document.text.strip().lower() not in self.allowed:
            raise ValidationError(len(document.text), f"answer {', '.join(self.allowed)}")


class ChatAsker:
    """Asks the person at the chat; ``cancel_turn`` is called on Ctrl-C at a question."""

    def __init__(
        self,
        console: Console,
        cancel_turn: Callable[[], None],
        *,
        assume_yes: bool = False,
        ask_patterns: Sequence[str] = (),
    ) -> None:
        self.console = console
        self.cancel_turn = cancel_turn
        self.assume_yes = assume_yes
        self.ask_patterns = list(ask_patterns)
        self.always: set[str] = set()
        """Tools allowed for the rest of the session."""
        self.view: TurnView | None = None
        """The running turn's view, paused while a question is on the screen."""
        self._lock = anyio.Lock()
        self._session: PromptSession[str] = PromptSession()

    # ------------------------------------------------------------------ plumbing

    @contextmanager
    def _paused(self) -> Iterator[None]:
        if self.view is None:
            yield
        else:
            with self.view.paused():
                yield

    async def _ask(
        self, message: str, validator: Validator | None = None, default: str = ""
    ) -> str | None:
        """One answer; ``None`` on Ctrl-D, and on Ctrl-C (which also cancels the turn)."""
        try:
            return await self._session.prompt_async(
                message,
                validator=validator,
                validate_while_typing=False,
                default=default,
                handle_sigint=False,  # keep the session's own Ctrl-C handler in place
            )
        except EOFError:
            return None
        except KeyboardInterrupt:
            self.cancel_turn()
            return None

    # ------------------------------------------------------------------ tool approval

    async def approve(self, call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]) -> bool:
        """The policy's approval callback: True runs the call."""
        if self.assume_yes or spec.name in self.always:
            return True
        async with self._lock:
            if spec.name in self.always:  # allowed while this call waited its turn
                return True
            with self._paused():
                return await self._ask_approval(spec, arguments)

    async def _ask_approval(self, spec: ToolSpec, arguments: dict[str, Any]) -> bool:
        body = Text()
        body.append(f"{approval_reason(spec, self.ask_patterns)}\n", style="yellow")
        summary = spec.description.strip().splitlines()[0] if spec.description.strip() else ""
        if summary:
            body.append(f"{printable(summary)}\n", style="dim")
        body.append("arguments: ", style="dim")
        body.append(printable(one_line_json(arguments)))
        title = Text("approve ", style="bold yellow")
        title.append(f"{printable(spec.name)} ({printable(spec.origin)})", style="bold")
        self.console.print(Panel(body, title=title, title_align="left", border_style="yellow"))
        answer = await self._ask(
            "allow? [y] once, [a] always for this tool, [n] deny: ", _Choice(list(_CHOICES))
        )
        choice = _CHOICES.get((answer or "n").strip().lower(), "deny")
        if choice == "always":
            self.always.add(spec.name)
            self.console.print(f"{printable(spec.name)} runs without asking from now on")
        elif choice == "deny":
            self.console.print(Text(f"denied {printable(spec.name)}", style="red"))
        return choice != "deny"

    # ------------------------------------------------------------------ sampling

    async def approve_sampling(self, server: str, params: Any) -> bool:
        """An MCP server asks the agent's model to answer ``params`` (its sampling request)."""
        if self.assume_yes:
            return True
        async with self._lock:
            with self._paused():
                return await self._ask_sampling(server, params)

    async def _ask_sampling(self, server: str, params: Any) -> bool:
        body = Text()
        system = getattr(params, "system_prompt", None)
        if system:
            body.append("system: ", style="dim")
            body.append(f"{printable_lines(str(system))}\n")
        for message in getattr(params, "messages", None) or []:
            content = getattr(message, "content", None)
            text = getattr(content, "text", None)
            body.append(f"{getattr(message, 'role', '?')}: ", style="dim")
            body.append(f"{printable_lines(str(text if text is not None else content))}\n")
        body.append(f"max tokens: {getattr(params, 'max_tokens', '?')}", style="dim")
        title = Text(f"MCP server {printable(server)} asks the model", style="bold yellow")
        self.console.print(Panel(body, title=title, title_align="left", border_style="yellow"))
        answer = await self._ask("let the model answer? [y/n]: ", _Choice(["y", "yes", "n", "no"]))
        allowed = (answer or "n").strip().lower() in ("y", "yes")
        if not allowed:
            self.console.print(Text("sampling request denied", style="red"))
        return allowed

    # ------------------------------------------------------------------ elicitation

    async def elicit(self, message: str, schema: dict[str, Any]) -> dict[str, Any] | None:
        """An MCP server's form; ``None`` declines."""
        async with self._lock:
            with self._paused():
                answer = await self._fill_form(message, schema)
        if answer is None:
            self.console.print(Text("form declined", style="red"))
        return answer

    async def _fill_form(self, message: str, schema: dict[str, Any]) -> dict[str, Any] | None:
        title = Text("an MCP server asks", style="bold cyan")
        self.console.print(
            Panel(
                Text(printable_lines(message)), title=title, title_align="left", border_style="cyan"
            )
        )
        properties = schema.get("properties")
        properties = properties if isinstance(properties, dict) else {}
        required = schema.get("required")
        required = set(required) if isinstance(required, list) else set()
        answer: dict[str, Any] = {}
        for name, field in properties.items():
            field = field if isinstance(field, dict) else {}
            value = await self._ask_field(str(name), field, name in required)
            if value is _DECLINED:
                return None
            if value is not _SKIPPED:
                answer[str(name)] = value
        problems = _problems(schema, answer)
        if problems:  # a constraint across fields that no single answer could break
            self.console.print(Text(f"the answer does not fit the form: {problems}", style="red"))
            return None
        sent = await self._ask("send? [y] send, [n] decline: ", _Choice(["y", "yes", "n", "no"]))
        if (sent or "n").strip().lower() not in ("y", "yes"):
            return None
        return answer

    async def _ask_field(self, name: str, field: dict[str, Any], required: bool) -> Any:
        label = field.get("title") or name
        kind = _field_kind(field)
        hint = kind
        choices = _choices(field)
        if choices:
            hint = "one of " + ", ".join(str(c) for c in choices)
            if kind == "array":
                hint = "comma-separated, from " + ", ".join(str(c) for c in choices)
        if not required:
            hint += ", empty to skip"
        description = field.get("description")
        if description:
            self.console.print(Text(f"  {printable(str(description))}", style="dim"))
        default = field.get("default")
        shown_default = "" if default is None else _as_text(default)
        raw = await self._ask(
            f"{printable(str(label))} [{printable(hint)}]: ",
            _FieldValidator(field, required),
            default=shown_default,
        )
        if raw is None:
            return _DECLINED
        if not raw.strip():
            return _SKIPPED
        return parse_field(raw, field)


class _Marker:
    pass


_DECLINED = _Marker()
_SKIPPED = _Marker()


def _field_kind(field: dict[str, Any]) -> str:
    kind = field.get("type", "string")
    return kind if isinstance(kind, str) else "string"


def _choices(field: dict[str, Any]) -> list[Any]:
    if isinstance(field.get("enum"), list):
        return list(field["enum"])
    options = field.get("oneOf") or field.get("anyOf")
    if isinstance(options, list):
        return [o["const"] for o in options if isinstance(o, dict) and "const" in o]
    items = field.get("items")
    if isinstance(items, dict):
        return _choices(items)
    return []


def _as_text(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value)
    return str(value)


class FieldError(ValueError):
    """An answer that does not fit its field."""


_TRUE = ("y", "yes", "true", "1")
_FALSE = ("n", "no", "false", "0")


def parse_field(raw: str, field: dict[str, Any]) -> Any:
    """The typed value of an answer to a form field; ``FieldError`` says what is wrong."""
    text = raw.strip()
    kind = _field_kind(field)
    value: Any
    if kind == "boolean":
        if text.lower() in _TRUE:
            value = True
        elif text.lower() in _FALSE:
            value = False
        else:
            raise FieldError("answer yes or no")
    elif kind == "integer":
        if not re.fullmatch(r"[+-]?\d+", text):
            raise FieldError("a whole number is needed")
        value = int(text)
    elif kind == "number":
        try:
            value = float(text)
        except ValueError:
            raise FieldError("a number is needed") from None
        if value.is_integer() and re.fullmatch(r"[+-]?\d+", text):
            value = int(text)
    elif kind == "array":
        value = [item.strip() for item in text.split(",") if item.strip()]
    else:
        value = text
    problems = _problems(field, value)
    if problems:
        raise FieldError(problems)
    return value


def _problems(schema: dict[str, Any], value: Any) -> str:
    try:
        validator = Draft202012Validator(schema, format_checker=FormatChecker())
        errors = sorted(validator.iter_errors(value), key=lambda e: list(e.path))
    except Exception as exc:  # noqa: BLE001 - a server's odd schema is not the person's fault
        return f"the form's schema cannot be checked ({exc})"
    return "; ".join(error.message for error in errors[:3])


class _FieldValidator(Validator):
    def __init__(self, field: dict[str, Any], required: bool) -> None:
        self.field = field
        self.required = required

    def validate(self, document: Document) -> None:
        if not document.text.strip():
            if self.required:
                raise ValidationError(
                    len(document.text), "this field is required (Ctrl-D declines the form)"
                )
            return
        try:
            parse_field(document.text, self.field)
        except FieldError as err:
            raise ValidationError(len(document.text), str(err)) from None
