"""The chat's slash commands: /tools, /servers, /history, /reset, /save FILE, /model, /quit.

Each command reads or changes the session's state and prints; ``run_command`` returns True
when the session should end.
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

import anyio
from rich.table import Table
from rich.text import Text

from agent_runtime._terminal import printable
from agent_runtime.errors import UserError
from agent_runtime.policy import Decision
from agent_runtime.types import AssistantMessage, SystemMessage, ToolResultMessage, UserMessage

from .render import printable_lines, result_summary
from .servers import server_groups

if TYPE_CHECKING:
    from .session import ChatSession

HELP = {
    "/tools": "the tools on offer, and which ones ask before they run",
    "/servers": "the MCP servers: connected, failed (with their stderr), given up",
    "/history": "the conversation so far",
    "/reset": "forget the conversation (start over)",
    "/save FILE": "write the conversation to FILE as JSON",
    "/model [NAME]": "which model answers, its settings and the config's other models; "
    "with NAME, switch to that one (the conversation carries over)",
    "/help": "this list",
    "/quit": "end the session (also Ctrl-D)",
}
NAMES = [name.split()[0] for name in HELP]

Command = Callable[["ChatSession", str], Awaitable[bool]]


async def run_command(session: ChatSession, line: str) -> bool:
    """Run one ``/command``; True ends the session."""
    name, _, argument = line.strip().partition(" ")
    command = _COMMANDS.get(name.lower())
    if command is None:
        session.console.print(
            Text(f"unknown command {printable(name)}: /help lists them", style="red")
        )
        return False
    return await command(session, argument.strip())


async def _help(session: ChatSession, argument: str) -> bool:
    table = Table.grid(padding=(0, 2))
    for name, what in HELP.items():
        table.add_row(Text(name, style="bold"), what)
    session.console.print(table)
    session.console.print(
        "Enter sends; Esc then Enter starts a new line. Ctrl-C cancels a running turn; "
        "Ctrl-C twice or Ctrl-D quits.",
        style="dim",
    )
    return False


async def _tools(session: ChatSession, argument: str) -> bool:
    specs = await session.agent.dispatcher.tool_specs()
    if not specs:
        session.console.print("no tools")
        return False
    policy = session.agent.dispatcher.config.policy
    # The name, origin and verdict keep their width; the description is cut to what is left.
    name_width = max(len(s.name) for s in specs)
    origin_width = max(len(s.origin) for s in specs)
    room = max(12, session.console.width - name_width - origin_width - 6 - 9)
    table = Table(show_edge=False, pad_edge=False)
    table.add_column("tool", style="bold", no_wrap=True)
    table.add_column("from", no_wrap=True)
    table.add_column("runs", no_wrap=True)
    table.add_column("description", no_wrap=True)
    for spec in specs:
        decision = policy.decision_for(spec)
        if decision is Decision.DENY:
            runs = Text("denied", style="red")
        elif decision is Decision.ALLOW or spec.name in session.asker.always:
            runs = Text("freely", style="green")
        else:
            runs = Text("asks", style="yellow")
        lines = spec.description.strip().splitlines()
        description = printable(lines[0]) if lines else ""
        if len(description) > room:
            description = description[: room - 1] + "…"
        table.add_row(printable(spec.name), printable(spec.origin), runs, description)
    session.console.print(table)
    return False


async def _servers(session: ChatSession, argument: str) -> bool:
    groups = server_groups(session.toolsets)
    if not groups:
        session.console.print("no MCP servers in this config")
        return False
    for group in groups:
        connected = {getattr(s, "name", None): s for s in group.toolsets}
        for name in group.configs:
            server = connected.get(name)
            failure = group.failures.get(name) or getattr(server, "failure", None)
            line = Text(f"{printable(name)}: ", style="bold")
            if failure:
                line.append("failed", style="bold red")
                session.console.print(line)
                indented = "\n".join(f"  {line}" for line in str(failure).splitlines())
                session.console.print(Text(printable_lines(indented), style="red"))
            elif server is not None:
                up = bool(getattr(server, "connected", False))
                line.append("connected" if up else "down", style="green" if up else "yellow")
                info = getattr(server, "server_info", None)
                if info is not None:
                    line.append(f"  {printable(str(info.name))} {printable(str(info.version))}")
                version = getattr(server, "protocol_version", None)
                if version:
                    line.append(f"  protocol {version}", style="dim")
                session.console.print(line)
                left_out = getattr(server, "left_out", {}) or {}
                for tool, why in left_out.items():
                    session.console.print(
                        Text(f"  left out {printable(tool)}: {printable(why)}", style="yellow")
                    )
            else:
                line.append("not started", style="yellow")
                session.console.print(line)
            stderr = session.log.stderr_of(name)
            if stderr and not failure:  # a failure already ends with its stderr
                session.console.print(Text("  stderr:", style="dim"))
                for text in stderr:
                    session.console.print(Text(f"    {printable(text)}", style="dim"))
    return False


async def _history(session: ChatSession, argument: str) -> bool:
    if not session.history:
        session.console.print("no conversation yet")
        return False
    for message in session.history:
        line = Text()
        if isinstance(message, SystemMessage):
            line.append("system: ", style="dim")
            line.append(printable_lines(message.content), style="dim")
        elif isinstance(message, UserMessage):
            line.append("you: ", style="bold cyan")
            line.append(printable_lines(message.content))
        elif isinstance(message, AssistantMessage):
            line.append("assistant: ", style="bold green")
            line.append(printable_lines(message.text))
            for call in message.tool_calls:
                line.append(f"\n  calls {printable(call.name)} {printable(call.arguments)}")
        elif isinstance(message, ToolResultMessage):
            failed = message.result.is_error
            line.append(f"tool {printable(message.tool_name)}: ", style="bold")
            line.append(
                printable_lines(result_summary(message.result.text_content)),
                style="red" if failed else "",
            )
        session.console.print(line)
    return False


async def _reset(session: ChatSession, argument: str) -> bool:
    session.history = []
    session.console.print("conversation cleared")
    return False


async def _save(session: ChatSession, argument: str) -> bool:
    if not argument:
        session.console.print(Text("usage: /save FILE", style="red"))
        return False
    path = await anyio.Path(argument).expanduser()
    document = {
        "agent": session.agent.name,
        "model": session.agent.model.name,
        "messages": [message.model_dump(mode="json") for message in session.history],
    }
    try:
        await path.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", "utf-8")
    except OSError as err:
        session.console.print(Text(f"cannot save to {printable(str(path))}: {err}", style="red"))
        return False
    session.console.print(f"saved {len(session.history)} messages to {printable(str(path))}")
    return False


async def _model(session: ChatSession, argument: str) -> bool:
    if argument:
        try:
            await session.switch_model(argument)
        except Exception as err:  # noqa: BLE001 - a model that fails to load keeps the session
            message = str(err) if isinstance(err, UserError) else f"{type(err).__name__}: {err}"
            session.console.print(Text(f"cannot switch model: {printable(message)}", style="red"))
            return False
        session.console.print(
            Text(f"switched to {printable(argument)}; the conversation carries over", style="green")
        )
    loaded = session.models.in_use()
    line = Text("model: ", style="bold")
    line.append(printable(session.agent.model.name))
    line.append(f"  backend {printable(loaded.backend_kind)}", style="dim")
    line.append(f"  (config: {printable(loaded.name)})", style="dim")
    session.console.print(line)
    if loaded.options:
        options = json.dumps(loaded.options, ensure_ascii=False, default=str)
        session.console.print(Text(f"options: {printable(options)}", style="dim"))
    settings = session.agent.settings.model_dump(exclude_defaults=True)
    session.console.print(
        Text(
            f"settings: {printable(json.dumps(settings)) if settings else 'defaults'}", style="dim"
        )
    )
    names = session.models.names
    if len(names) > 1:
        listed = Text("models: ")
        for index, name in enumerate(names):
            if index:
                listed.append(", ")
            listed.append(printable(name), style="bold" if name == loaded.name else "")
        listed.append("  (/model NAME switches)", style="dim")
        session.console.print(listed)
    return False


async def _quit(session: ChatSession, argument: str) -> bool:
    return True


_COMMANDS: dict[str, Command] = {
    "/help": _help,
    "/tools": _tools,
    "/servers": _servers,
    "/history": _history,
    "/reset": _reset,
    "/save": _save,
    "/model": _model,
    "/quit": _quit,
    "/exit": _quit,
}
