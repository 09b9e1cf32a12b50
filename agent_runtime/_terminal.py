"""The person at the CLI's terminal: asked before a tool that may change something runs.

Desktop MCP hosts ask before a tool that is not marked read-only runs (allow once, always for
this tool, deny); the CLI does the same through ``Terminal.approve``, the dispatcher policy's
approval callback. Where no one can answer here (stdin is not a terminal, or a served agent),
the call goes to the run's own approver when there is one (``policy.run_approver``: the A2A
node asks the peer that sent the task, which then waits in AUTH_REQUIRED); without one it is
denied and the model is told why. Either way a line on stderr says what happened and how to
pre-approve the tool.

Answers are read from stdin without a thread (the event loop waits for the terminal to be
readable), so Ctrl-C at a prompt ends the run at once instead of waiting for a line that a
blocked thread would still be reading. Server-initiated elicitation shares the same terminal
and lock, so two questions never interleave.
"""

from __future__ import annotations

import json
import os
import sys
import unicodedata
from collections.abc import Sequence
from typing import Any, TextIO

import anyio

from .policy import ApprovalUnavailable, approval_reason, has_run_approver
from .types import ToolCall, ToolSpec

_MAX_VALUE_CHARS = 200
_MAX_ARGUMENT_LINES = 40


class Terminal:
    """Asks the person at the terminal, one question at a time.

    ``interactive``: someone can answer (the CLI's stdin is a terminal). ``assume_yes``: every
    call the policy asks about is approved (``--yes``). ``ask_patterns``: the config policy's
    ``ask`` patterns, named in the prompt as the reason for asking. ``no_one_to_ask`` finishes
    the sentence "...and there is ..." when no one can answer.
    """

    def __init__(
        self,
        *,
        interactive: bool,
        assume_yes: bool = False,
        ask_patterns: Sequence[str] = (),
        no_one_to_ask: str = "no terminal to ask (stdin is not a terminal)",
        stdin: TextIO | None = None,
        stderr: TextIO | None = None,
    ) -> None:
        self.interactive = interactive
        self.assume_yes = assume_yes
        self.ask_patterns = list(ask_patterns)
        self.no_one_to_ask = no_one_to_ask
        self.always: set[str] = set()
        """Tools the person allowed for the rest of this run."""
        self._stdin = stdin if stdin is not None else sys.stdin
        self._stderr = stderr if stderr is not None else sys.stderr
        self._lock = anyio.Lock()

    # ------------------------------------------------------------------ tool approval

    async def approve(self, call: ToolCall, spec: ToolSpec, arguments: dict[str, Any]) -> bool:
        """The policy's approval callback: True runs the call; a denial says why."""
        if self.assume_yes or spec.name in self.always:
            return True
        why = approval_reason(spec, self.ask_patterns)
        if not self.interactive:
            pre_approve = f'--yes or "policy": {{"allow": [{json.dumps(spec.name)}]}}'
            if has_run_approver():  # the policy passes the call on to it (an A2A peer)
                self._say(
                    f"agent-runtime: {printable(spec.name)} needs approval: {why}; asking "
                    f"whoever this run is for instead (no one answers here; pre-approve it with "
                    f"{pre_approve})"
                )
            else:
                self._say(
                    f"agent-runtime: denied {printable(spec.name)}: {why}, and there is "
                    f"{self.no_one_to_ask}; pre-approve it with {pre_approve}"
                )
            raise ApprovalUnavailable(
                f"{why}, so it needs the user's approval, and there is {self.no_one_to_ask}. "
                "The user can pre-approve it (--yes, or the config's policy.allow)."
            )
        async with self._lock:
            if spec.name in self.always:  # allowed while this call waited its turn
                return True
            return await self._ask_approval(spec, arguments, why)

    async def _ask_approval(self, spec: ToolSpec, arguments: dict[str, Any], why: str) -> bool:
        name = printable(spec.name)
        lines = [f"\nagent-runtime: the model wants to run {name} ({printable(spec.origin)})"]
        lines.append(f"  {why}")
        summary = _first_line(spec.description)
        if summary:
            lines.append(f"  {summary}")
        lines.extend(_argument_lines(arguments))
        self._say("\n".join(lines))
        while True:
            answer = await self._ask("  allow? [y] once, [a] always for this tool, [n] deny: ")
            if answer is None:
                self._say("  (no answer: denied)")
                return False
            choice = answer.strip().lower()
            if choice in ("y", "yes"):
                return True
            if choice in ("a", "always"):
                self.always.add(spec.name)
                self._say(f"  {name} will run without asking for the rest of this run")
                return True
            if choice in ("n", "no", ""):
                return False
            self._say("  please answer y, a or n")

    # ------------------------------------------------------------------ elicitation

    async def elicit(self, message: str, schema: dict[str, Any]) -> dict[str, Any] | None:
        """Ask for what an MCP server requests; ``None`` (decline) without a terminal."""
        if not self.interactive:
            return None
        async with self._lock:
            self._say(f"\n[MCP server asks] {printable(message)}")
            answer: dict[str, Any] = {}
            properties = schema.get("properties", {})
            if not isinstance(properties, dict):
                properties = {}
            for name, field in properties.items():
                field = field if isinstance(field, dict) else {}
                kind = str(field.get("type", "string"))
                description = field.get("description")
                hint = f" ({printable(str(description))})" if description else ""
                raw = await self._ask(
                    f"  {printable(str(name))}{hint} [{printable(kind)}, empty to decline]: "
                )
                if raw is None or not raw.strip():
                    return None
                answer[name] = coerce_answer(raw.strip(), kind)
            if not properties:
                raw = await self._ask("  accept? [y/N]: ")
                if raw is None or raw.strip().lower() != "y":
                    return None
            return answer

    # ------------------------------------------------------------------ terminal I/O

    def _say(self, text: str) -> None:
        print(text, file=self._stderr, flush=True)

    async def _ask(self, prompt: str) -> str | None:
        """Show ``prompt`` and read one line; ``None`` at end of input."""
        self._stderr.write(prompt)
        self._stderr.flush()
        fd = self._stdin.fileno()
        try:
            await anyio.wait_readable(fd)
        except BaseException:  # Ctrl-C at the prompt: what follows starts on a line of its own
            self._stderr.write("\n")
            self._stderr.flush()
            raise
        data = os.read(fd, 4096)  # a terminal in canonical mode gives at most one line
        if not data:
            return None
        return data.decode(errors="replace").rstrip("\r\n")


def coerce_answer(raw: str, kind: str) -> Any:
    """A typed answer to an elicitation field; text that does not parse is kept as text."""
    if kind == "boolean":
        return raw.lower() in ("y", "yes", "true", "1")
    if kind in ("integer", "number"):
        try:
            return int(raw) if kind == "integer" else float(raw)
        except ValueError:
            return raw
    return raw


def _argument_lines(arguments: dict[str, Any]) -> list[str]:
    """One line per argument, so a long value cannot push another argument out of view."""
    if not arguments:
        return ["  arguments: none"]
    lines = ["  arguments:"]
    for index, (key, value) in enumerate(arguments.items()):
        if index == _MAX_ARGUMENT_LINES:
            lines.append(f"    … and {len(arguments) - index} more arguments")
            break
        text = json.dumps(value, ensure_ascii=False)
        if len(text) > _MAX_VALUE_CHARS:
            text = f"{text[:_MAX_VALUE_CHARS]}… ({len(text)} characters)"
        lines.append(f"    {printable(key)}: {printable(text)}")
    return lines


def _first_line(text: str, width: int = 100) -> str:
    stripped = text.strip()
    line = stripped.splitlines()[0] if stripped else ""
    line = line if len(line) <= width else line[: width - 1] + "…"
    return printable(line)


def printable(text: str) -> str:
    """Text from a model or a server, with control and format characters escaped, so it cannot
    move the cursor, recolour the prompt or reorder what the person reads."""
    if text.isprintable():
        return text
    out = []
    for char in text:
        if unicodedata.category(char) in ("Cc", "Cf", "Zl", "Zp"):
            code = ord(char)
            if code < 0x100:
                out.append(f"\\x{code:02x}")
            elif code < 0x10000:
                out.append(f"\\u{code:04x}")
            else:
                out.append(f"\\U{code:08x}")
        else:
            out.append(char)
    return "".join(out)
