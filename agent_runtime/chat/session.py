"""``agent-runtime chat``: the configured agent in a conversation at the terminal.

``ChatSession`` is the host: it builds the agent from the config (through the composition
root's ``build_*`` parts, so it can reach its MCP servers for ``/servers`` and sampling
approval), keeps the servers connected for the whole session, reads input with prompt_toolkit
(history, multi-line), runs each turn with the conversation so far and shows it with a
``TurnView``. ``/model NAME`` swaps the agent's model for another of the config's (see
:mod:`.models`) between turns; the conversation carries over.

Interrupts: Ctrl-C during a turn cancels that turn (the model's stream and running tools are
cancelled; MCP servers are told), and the conversation stays as it was before it. A second
Ctrl-C (while the turn is still stopping, or at the prompt right after) or Ctrl-D quits; leaving
stops every server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import sys
import termios
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import anyio
from prompt_toolkit import PromptSession
from prompt_toolkit.completion import WordCompleter
from prompt_toolkit.history import FileHistory, History, InMemoryHistory
from prompt_toolkit.key_binding import KeyBindings, KeyPressEvent
from rich.console import Console
from rich.text import Text

from agent_runtime._terminal import printable
from agent_runtime.agent import Agent
from agent_runtime.config import (
    RuntimeConfig,
    build_limits,
    build_policy,
    build_toolsets,
)
from agent_runtime.errors import AgentRunError
from agent_runtime.toolset import Toolset
from agent_runtime.types import Message

from .approvals import ChatAsker
from .commands import NAMES, run_command
from .models import ChatModels, LoadedModel
from .render import TurnView, print_above_prompt, printable_lines
from .servers import ChatLog, server_groups, wire_sampling_approval


@contextmanager
def _no_echo() -> Iterator[None]:
    """Keys typed while a turn runs are not echoed into its output (Ctrl-C still works)."""
    fd = sys.stdin.fileno() if sys.stdin is not None else -1
    try:
        saved = termios.tcgetattr(fd)
    except (termios.error, ValueError, OSError):
        yield
        return
    quiet = list(saved)
    quiet[3] &= ~(termios.ECHO | termios.ICANON)
    termios.tcsetattr(fd, termios.TCSANOW, quiet)
    try:
        yield
    finally:
        termios.tcsetattr(fd, termios.TCSANOW, saved)


def history_file() -> History:
    """Input history kept across sessions (``$XDG_STATE_HOME/agent-runtime/chat-history``)."""
    state = os.environ.get("XDG_STATE_HOME") or str(Path.home() / ".local" / "state")
    path = Path(state) / "agent-runtime" / "chat-history"
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return FileHistory(str(path))
    except OSError:
        return InMemoryHistory()


def _key_bindings() -> KeyBindings:
    bindings = KeyBindings()

    @bindings.add("escape", "enter")
    def _newline(event: KeyPressEvent) -> None:
        event.current_buffer.insert_text("\n")

    return bindings


class ChatSession:
    """One conversation with the configured agent."""

    def __init__(
        self,
        config: RuntimeConfig,
        *,
        assume_yes: bool = False,
        verbose: bool = False,
        console: Console | None = None,
    ) -> None:
        self.config = config
        self.console = console or Console(highlight=False)
        self.log = ChatLog(self._show_log, logging.INFO if verbose else logging.WARNING)
        self.asker = ChatAsker(
            self.console,
            self.cancel_turn,
            assume_yes=assume_yes,
            ask_patterns=config.policy.ask,
        )
        self.history: list[Message] = []
        self.toolsets: list[Toolset] = []
        self.agent = self._build_agent()
        self._turn_scope: anyio.CancelScope | None = None
        self._main_scope: anyio.CancelScope | None = None
        self._interrupted = False
        """A Ctrl-C was the last thing that happened: another one quits."""

    def _build_agent(self) -> Agent:
        config = self.config
        self.models = ChatModels(config)
        start = self.models.load_default()
        self.toolsets = build_toolsets(
            config, start.backend, elicitation_callback=self.asker.elicit
        )
        return Agent(
            start.backend,
            self.toolsets,
            instructions=config.instructions,
            limits=build_limits(config),
            settings=start.settings,
            policy=build_policy(config, approval=self.asker.approve),
            name=config.name,
            description=config.description,
        )

    # ------------------------------------------------------------------ running

    async def run(self) -> int:
        """The session, until /quit, Ctrl-D or a second Ctrl-C; every server is stopped."""
        restore_logging = self.log.install()
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGINT, self._on_sigint)
        try:
            with anyio.CancelScope() as self._main_scope:
                self.console.print(Text("starting…", style="dim"))
                async with self.agent:
                    wire_sampling_approval(
                        server_groups(self.toolsets), self.asker.approve_sampling
                    )
                    try:
                        await self._welcome()
                        await self._loop()
                    finally:
                        with anyio.CancelScope(shield=True):
                            await self.models.aclose()
            self.console.print(Text("bye", style="dim"))
        finally:
            loop.remove_signal_handler(signal.SIGINT)
            restore_logging()
        return 0

    async def _welcome(self) -> None:
        specs = await self.agent.dispatcher.tool_specs()
        failed = sum(len(g.failures) for g in server_groups(self.toolsets))
        line = Text("agent-runtime chat", style="bold")
        line.append(f"  model {printable(self.agent.model.name)}, {len(specs)} tools")
        if failed:
            line.append(f", {failed} MCP server(s) failed (/servers)", style="red")
        self.console.print(line)
        self.console.print(
            "/help for commands. Enter sends, Esc Enter adds a line; Ctrl-C cancels a turn, "
            "Ctrl-D quits.",
            style="dim",
        )

    async def _loop(self) -> None:
        prompt: PromptSession[str] = PromptSession(
            history=history_file(),
            completer=WordCompleter(NAMES, sentence=True),
            key_bindings=_key_bindings(),
            complete_while_typing=False,
        )
        while True:
            try:
                text = await prompt.prompt_async("› ", handle_sigint=False)
            except KeyboardInterrupt:
                if self._interrupted:
                    return
                self._interrupted = True
                self.console.print(Text("(Ctrl-C again or Ctrl-D to quit)", style="dim"))
                continue
            except EOFError:
                return
            self._interrupted = False
            text = text.strip()
            if not text:
                continue
            if text.startswith("/"):
                if await run_command(self, text):
                    return
                continue
            await self._turn(text)

    async def _turn(self, prompt: str) -> None:
        with _no_echo():  # what is typed meanwhile waits for the next prompt, unshown
            await self._run_turn(prompt)

    async def _run_turn(self, prompt: str) -> None:
        view = TurnView(self.console)
        self.asker.view = view
        try:
            with anyio.CancelScope() as scope:
                self._turn_scope = scope
                try:
                    result = await self.agent.run(prompt, self.history, on_event=view.on_event)
                except AgentRunError as err:
                    view.close()
                    self.console.print(Text(f"error: {err}", style="bold red"))
                    if err.messages:
                        self.history = list(err.messages)
                except Exception as err:  # noqa: BLE001 - a failed turn must not end the session
                    view.close()
                    self.console.print(
                        Text(f"error: {type(err).__name__}: {err}", style="bold red")
                    )
                else:
                    self.history = list(result.messages)
        finally:
            self._turn_scope = None
            self.asker.view = None
            view.close(cancelled=scope.cancel_called)
        if scope.cancel_called:
            self._interrupted = True
            self.console.print(
                Text("turn cancelled (Ctrl-C again or Ctrl-D to quit)", style="yellow")
            )

    # ------------------------------------------------------------------ models

    async def switch_model(self, name: str) -> LoadedModel:
        """Answer the next turns with the config's model ``name`` (``/model NAME``); the
        conversation so far carries over. Raises ``ConfigError`` for an unknown name; a model
        that fails to build leaves the one in use."""
        loaded = await self.models.choose(name)
        self.agent.model = loaded.backend
        self.agent.settings = loaded.settings
        return loaded

    # ------------------------------------------------------------------ interrupts

    def cancel_turn(self) -> None:
        """Ctrl-C: cancel the running turn; when there is none (or it is already stopping),
        quit."""
        turn = self._turn_scope
        if turn is not None and not turn.cancel_called:
            turn.cancel()
        elif self._main_scope is not None:
            self._main_scope.cancel()

    def _on_sigint(self) -> None:
        self.cancel_turn()

    # ------------------------------------------------------------------ logging

    def _show_log(self, record: logging.LogRecord) -> None:
        style = "red" if record.levelno >= logging.ERROR else "yellow"
        text = Text(f"{record.levelname.lower()}: {printable_lines(record.getMessage())}", style)
        print_above_prompt(self.console, text)
