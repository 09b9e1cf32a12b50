"""What one chat turn looks like on the terminal: streamed markdown, tool-call panels, progress.

A ``TurnView`` is the run's event sink (``Agent.run(on_event=view.on_event)``). Text is shown
as markdown while it streams: finished blocks (up to a blank line outside a code fence) are
printed for good, and only the block still being written lives in a redrawn region, so a long
answer never has to be redrawn whole. Tool calls show in that region while they run (with a
progress bar once the tool reports progress) and are printed as a panel when they finish: name,
arguments, duration and a summary of the result, red when it failed.

Whoever asks the person something mid-turn (an approval, a form) wraps the question in
``paused()``: the redrawn region is taken off the screen while the question is on it.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from prompt_toolkit.application import get_app_or_none, run_in_terminal
from rich.console import Console, Group, RenderableType
from rich.live import Live
from rich.markdown import Markdown
from rich.panel import Panel
from rich.progress_bar import ProgressBar
from rich.table import Table
from rich.text import Text

from agent_runtime._terminal import printable
from agent_runtime.events import (
    ModelTurnFinished,
    RunEvent,
    TextDeltaEvent,
    ToolCallFinished,
    ToolCallProgress,
    ToolCallStarted,
)
from agent_runtime.types import ToolCall, ToolCallRecord

_ARGUMENTS_CHARS = 300
_RESULT_LINES = 6
_RESULT_CHARS = 600
_FENCES = ("```", "~~~")


@dataclass
class _Running:
    call: ToolCall
    progress: float | None = None
    total: float | None = None
    message: str | None = None


def split_finished_blocks(text: str) -> tuple[str, str]:
    """``(finished, rest)``: the markdown blocks of ``text`` that end in a blank line outside a
    code fence (they will not change as more text streams in), and what follows them."""
    in_fence = False
    cut = 0
    position = 0
    for line in text.splitlines(keepends=True):
        position += len(line)
        stripped = line.strip()
        if stripped.startswith(_FENCES):
            in_fence = not in_fence
        elif not stripped and not in_fence and line.endswith("\n"):
            cut = position
    return text[:cut], text[cut:]


def one_line_json(value: Any, limit: int = _ARGUMENTS_CHARS) -> str:
    """``value`` as compact JSON on one line, cut at ``limit`` characters."""
    text = json.dumps(value, ensure_ascii=False, separators=(", ", ": "))
    return text if len(text) <= limit else text[: limit - 1] + "…"


def result_summary(text: str) -> str:
    """The first lines of a tool result, with a count of what was left out."""
    lines = text.strip().splitlines()
    shown = "\n".join(lines[:_RESULT_LINES])
    if len(shown) > _RESULT_CHARS:
        shown = shown[: _RESULT_CHARS - 1] + "…"
    hidden = len(lines) - _RESULT_LINES
    if hidden > 0:
        shown += f"\n… {hidden} more lines"
    return shown or "(empty result)"


def printable_lines(text: str) -> str:
    """``text`` with control characters escaped, line breaks kept."""
    return "\n".join(printable(line) for line in text.split("\n"))


def _call_arguments(call: ToolCall) -> str:
    try:
        return one_line_json(json.loads(call.arguments))
    except ValueError:
        return call.arguments[:_ARGUMENTS_CHARS]


def tool_panel(record: ToolCallRecord) -> Panel:
    """The panel printed when a tool call has finished."""
    failed = record.result.is_error
    arguments = (
        one_line_json(record.arguments)
        if record.arguments is not None
        else _call_arguments(record.call)
    )
    body = Text()
    body.append("arguments: ", style="dim")
    body.append(printable(arguments))
    body.append("\n")
    body.append("error: " if failed else "result: ", style="bold red" if failed else "dim")
    body.append(
        printable_lines(result_summary(record.result.text_content)), style="red" if failed else ""
    )
    title = Text(printable(record.call.name), style="bold")
    if record.error_kind is not None:
        title.append(f" ({record.error_kind})", style="red")
    return Panel(
        body,
        title=title,
        title_align="left",
        subtitle=Text(f"{record.duration_s:.2f}s", style="dim"),
        subtitle_align="right",
        border_style="red" if failed else "green",
        expand=True,
    )


def print_above_prompt(console: Console, renderable: RenderableType) -> None:
    """Print ``renderable``; while a question is waiting for an answer, above its prompt (a
    tool that finishes meanwhile must not write into the line being typed)."""
    app = get_app_or_none()
    if app is not None and app.is_running:
        run_in_terminal(lambda: console.print(renderable))
    else:
        console.print(renderable)


class TurnView:
    """Shows one turn's events as they come; ``close()`` when the turn is over."""

    def __init__(self, console: Console) -> None:
        self.console = console
        self._text = ""
        self._running: dict[str, _Running] = {}
        self._live: Live | None = None
        self._paused = 0

    # ------------------------------------------------------------------ events

    async def on_event(self, event: RunEvent) -> None:
        """The run's event sink."""
        if isinstance(event, TextDeltaEvent):
            self._text += event.text
            finished, self._text = split_finished_blocks(self._text)
            if finished.strip():
                self._print(Markdown(finished))
        elif isinstance(event, ModelTurnFinished):
            self._flush_text()
        elif isinstance(event, ToolCallStarted):
            self._flush_text()
            self._running[event.call.id] = _Running(event.call)
        elif isinstance(event, ToolCallProgress):
            running = self._running.get(event.call_id)
            if running is not None:
                running.progress, running.total = event.progress, event.total
                running.message = event.message
        elif isinstance(event, ToolCallFinished):
            self._running.pop(event.record.call.id, None)
            self._print(tool_panel(event.record))
        self._refresh()

    def _flush_text(self) -> None:
        if self._text.strip():
            self._print(Markdown(self._text))
        self._text = ""

    # ------------------------------------------------------------------ screen

    def _print(self, renderable: RenderableType) -> None:
        """Print for good (above the redrawn region while it is shown)."""
        print_above_prompt(self.console, renderable)

    def _region(self) -> RenderableType:
        parts: list[RenderableType] = []
        if self._text.strip():
            parts.append(Markdown(self._text))
        for running in self._running.values():
            parts.append(_running_line(running))
        return Group(*parts)

    def _refresh(self) -> None:
        if self._paused:
            return
        if not self._text.strip() and not self._running:
            self._stop_live()
            return
        if self._live is None:
            self._live = Live(
                console=self.console,
                auto_refresh=False,
                transient=True,
                get_renderable=self._region,
                vertical_overflow="visible",
            )
            self._live.start()
        self._live.refresh()

    def _stop_live(self) -> None:
        live, self._live = self._live, None
        if live is not None:
            live.stop()

    @contextmanager
    def paused(self) -> Iterator[None]:
        """Take the redrawn region off the screen while someone is asked something."""
        self._paused += 1
        self._stop_live()
        try:
            yield
        finally:
            self._paused -= 1
            self._refresh()

    def close(self, *, cancelled: bool = False) -> None:
        """The turn is over: print what is still pending, mark calls that never finished."""
        self._paused += 1
        self._stop_live()
        self._flush_text()
        for running in self._running.values():
            line = Text(f"✗ {printable(running.call.name)} ", style="bold red")
            line.append("cancelled" if cancelled else "did not finish", style="red")
            self._print(line)
        self._running.clear()


def _running_line(running: _Running) -> RenderableType:
    grid = Table.grid(padding=(0, 1))
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(overflow="ellipsis", no_wrap=True)
    label = Text("⋯ ", style="yellow")
    label.append(printable(running.call.name), style="bold")
    if running.progress is None:
        grid.add_row(label, Text("running", style="dim"), Text(_call_arguments(running.call)))
        return grid
    if running.total:
        bar: RenderableType = ProgressBar(
            total=running.total, completed=min(running.progress, running.total), width=30
        )
        count = f"{running.progress:g}/{running.total:g}"
    else:
        bar = ProgressBar(total=None, width=30)
        count = f"{running.progress:g}"
    note = f"{count} {running.message}" if running.message else count
    grid.add_row(label, bar, Text(printable(note)))
    return grid
