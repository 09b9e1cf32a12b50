"""The ``agent-runtime`` command.

``agent-runtime --version``; ``agent-runtime tools --config FILE`` lists the tools a config
provides; ``agent-runtime run --config FILE PROMPT`` runs the configured agent once;
``agent-runtime serve --a2a --config FILE`` serves it as an A2A node; ``agent-runtime chat``
is the terminal host for a person (:mod:`.chat`), ``agent-runtime mcp-serve`` serves the agent to
MCP hosts (:mod:`.cli_mcp_serve`), ``agent-runtime serve-model`` a model over the OpenAI API
(:mod:`.cli_serve_model`).

A config that names no model (or no config at all) runs the embedded model, the small local
MoE shipped with the package; ``--verbose`` logs which model runs. The commands that run or serve
an agent or a model take ``--trace console|otlp`` (OpenTelemetry spans and metrics on stderr, or
to an OTLP/HTTP collector at ``--trace-endpoint``) and ``--trace-content`` (also record tool
arguments and results, scrubbed of secrets). Nothing runs blindly: a tool
not marked read-only runs only when the config's ``policy`` allows it, ``--yes`` is given, or
the person at the terminal says so. Ctrl-C ends a command with exit status 130 and no
traceback.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
from collections.abc import Sequence
from contextlib import AsyncExitStack

import anyio

from . import __version__
from ._terminal import Terminal
from .config import RuntimeConfig, build_agent, build_toolsets, load_config, serve_a2a
from .errors import AgentRuntimeError
from .telemetry import Telemetry
from .types import ToolSpec

# The CLI parses arguments, talks to the terminal and prints; what it runs comes from the
# composition root, agent_runtime.config (build_agent), as it would in any other program.

_INTERRUPTED = 130
"""The exit status of a command ended by Ctrl-C (128 + SIGINT), as shells report it."""


async def _list_tools(config: RuntimeConfig) -> list[ToolSpec]:
    specs: list[ToolSpec] = []
    async with AsyncExitStack() as stack:
        for toolset in build_toolsets(config):
            entered = await stack.enter_async_context(toolset)
            # A server that failed to start is reported once, by the MCP manager's warning.
            specs.extend(await entered.list_tools())
    return specs


def _one_line(text: str, width: int = 80) -> str:
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _cmd_tools(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else RuntimeConfig()
    specs = anyio.run(_list_tools, config)
    if args.json:
        print(json.dumps([s.model_dump(mode="json") for s in specs], indent=2))
        return 0
    if not specs:
        print("no tools")
        return 0
    name_width = max(len(s.name) for s in specs)
    origin_width = max(len(s.origin) for s in specs)
    for spec in specs:
        print(
            f"{spec.name:<{name_width}}  {spec.origin:<{origin_width}}  "
            f"{_one_line(spec.description)}"
        )
    return 0


def _cmd_run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else RuntimeConfig()
    terminal = Terminal(
        interactive=sys.stdin.isatty(), assume_yes=args.yes, ask_patterns=config.policy.ask
    )
    agent = build_agent(
        config,
        approval=terminal.approve,
        elicitation_callback=terminal.elicit if terminal.interactive else None,
    )

    async def main() -> None:
        result = await agent.run(args.prompt)
        for record in result.tool_calls:
            flag = " (error)" if record.result.is_error else ""
            compact = " ".join(record.result.text_content.split())
            print(f"tool {record.call.name}{flag}: {_one_line(compact, 100)}")
        print(result.output)

    anyio.run(main)
    return 0


def _cmd_serve(args: argparse.Namespace) -> int:
    if not args.a2a:
        print("agent-runtime serve: choose what to serve (--a2a)", file=sys.stderr)
        return 2
    config = load_config(args.config) if args.config else RuntimeConfig()
    # Requests come from peers, not from the person at this terminal: a served agent never
    # prompts. Tools not marked read-only need the config's policy.allow or --yes.
    terminal = Terminal(
        interactive=False,
        assume_yes=args.yes,
        ask_patterns=config.policy.ask,
        no_one_to_ask="no one to ask in a served agent",
    )
    agent = build_agent(config, approval=terminal.approve)
    serve_a2a(config, agent, host=args.host, port=args.port)
    return 0


_YES_HELP = "run tools not marked read-only without asking (the config's policy.deny still applies)"

_TRACED_COMMANDS = ("run", "serve", "chat", "mcp-serve", "serve-model")
"""The commands that run or serve an agent or a model: they take the ``--trace`` options."""
_DEFAULT_OTLP_ENDPOINT = "http://localhost:4318"


def _add_trace_options(command: argparse.ArgumentParser) -> None:
    group = command.add_argument_group("telemetry (OpenTelemetry traces and metrics)")
    group.add_argument(
        "--trace",
        choices=("console", "otlp"),
        help="record spans and metrics: print them on stderr, or send them over OTLP/HTTP",
    )
    group.add_argument(
        "--trace-endpoint",
        metavar="URL",
        help="the OTLP/HTTP collector for --trace otlp (default: $OTEL_EXPORTER_OTLP_ENDPOINT, "
        f"else {_DEFAULT_OTLP_ENDPOINT}); headers come from $OTEL_EXPORTER_OTLP_HEADERS",
    )
    group.add_argument(
        "--trace-content",
        action="store_true",
        help="also record tool arguments and results (size-capped, secrets removed)",
    )


def _start_telemetry(args: argparse.Namespace) -> Telemetry | None:
    """Telemetry as the ``--trace`` options ask (``None`` when not asked: nothing is imported)."""
    mode = getattr(args, "trace", None)
    if mode is None:
        return None
    from .telemetry import configure

    if mode == "console":
        return configure(console=True, capture_content=args.trace_content)
    endpoint = (
        args.trace_endpoint
        or os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT")
        or _DEFAULT_OTLP_ENDPOINT
    )
    return configure(otlp_endpoint=endpoint, capture_content=args.trace_content)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="agent-runtime", description=__doc__)
    parser.add_argument("--version", action="version", version=f"agent-runtime {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    commands = parser.add_subparsers(dest="command")

    tools = commands.add_parser("tools", help="list the tools a config provides")
    tools.add_argument("--config", help="runtime config JSON (mcpServers, tools, a2aPeers)")
    tools.add_argument("--json", action="store_true", help="print the tool specs as JSON")
    tools.set_defaults(handler=_cmd_tools)

    run = commands.add_parser("run", help="run the configured agent on one prompt")
    run.add_argument("--config", help="runtime config JSON")
    run.add_argument("-y", "--yes", action="store_true", help=_YES_HELP)
    run.add_argument("prompt")
    run.set_defaults(handler=_cmd_run)

    serve = commands.add_parser("serve", help="serve the configured agent")
    serve.add_argument("--a2a", action="store_true", help="as an A2A 1.0 node")
    serve.add_argument("--config", help="runtime config JSON")
    serve.add_argument("--host", default="127.0.0.1")
    serve.add_argument("--port", type=int, default=8000)
    serve.add_argument("-y", "--yes", action="store_true", help=_YES_HELP)
    serve.set_defaults(handler=_cmd_serve)

    from .cli_mcp_serve import add_command as add_mcp_serve

    add_mcp_serve(commands, _YES_HELP)

    from .cli_serve_model import add_serve_model_command

    add_serve_model_command(commands)

    from .chat.command import register as add_chat

    add_chat(commands, _YES_HELP)

    for name in _TRACED_COMMANDS:
        _add_trace_options(commands.choices[name])
    return parser


class _LogFormatter(logging.Formatter):
    """Log records as the command's own lines: ``agent-runtime: warning: ...``."""

    def format(self, record: logging.LogRecord) -> str:
        return f"agent-runtime: {record.levelname.lower()}: {super().format(record)}"


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.setFormatter(_LogFormatter("%(message)s"))
    logging.basicConfig(level=logging.INFO if verbose else logging.WARNING, handlers=[handler])


def main(argv: Sequence[str] | None = None) -> int:
    telemetry: Telemetry | None = None
    try:
        parser = build_parser()
        args = parser.parse_args(argv)
        _configure_logging(args.verbose)
        handler = getattr(args, "handler", None)
        if handler is None:
            parser.print_help()
            return 2
        try:
            telemetry = _start_telemetry(args)
            code: int = handler(args)
        except AgentRuntimeError as err:
            print(f"agent-runtime: error: {err}", file=sys.stderr)
            return 1
        return code
    except KeyboardInterrupt:
        return _interrupted(telemetry)
    except BaseExceptionGroup as group:
        if _only_interrupts(group):
            return _interrupted(telemetry)
        raise
    finally:
        if telemetry is not None:  # export what is left before the process ends
            telemetry.shutdown()


def _only_interrupts(group: BaseExceptionGroup[BaseException]) -> bool:
    rest = group.subgroup(lambda exc: not isinstance(exc, KeyboardInterrupt | BaseExceptionGroup))
    return rest is None


def _interrupted(telemetry: Telemetry | None = None) -> int:
    """Ctrl-C: one line, status 130. A tool's thread that Python cannot stop (a sync tool still
    running) would hold the exit until it returns, so then the process ends at once, after the
    run's cleanup (servers stopped) has already happened, and the spans recorded exported."""
    print("agent-runtime: interrupted", file=sys.stderr, flush=True)
    lingering = [
        t for t in threading.enumerate() if t is not threading.current_thread() and not t.daemon
    ]
    if lingering:
        if telemetry is not None:
            telemetry.force_flush()
        sys.stdout.flush()
        os._exit(_INTERRUPTED)
    return _INTERRUPTED


if __name__ == "__main__":
    raise SystemExit(main())
