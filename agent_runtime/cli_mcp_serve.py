"""``agent-runtime mcp-serve --config FILE [--http PORT] [--gateway]``: the agent to MCP hosts.

Over stdio by default (what desktop hosts start from their ``mcpServers`` config), or
streamable HTTP at ``http://HOST:PORT/mcp``. The agent is one tool, ``ask_<name>``; with
``--gateway`` every tool of its toolsets is served too, each call checked by its dispatcher.
Tools the agent itself calls inside ``ask_<name>`` follow the config's policy; no one is there
to ask, so tools not marked read-only need ``policy.allow`` or ``--yes``. Wiring lives in the
composition root (``agent_runtime.config.serve_mcp``); this module parses and hands over.
"""

from __future__ import annotations

import argparse

from ._terminal import Terminal
from .config import RuntimeConfig, load_config, serve_mcp


def run(args: argparse.Namespace) -> int:
    config = load_config(args.config) if args.config else RuntimeConfig()
    # The person at this terminal is not the one asking: nothing here prompts.
    terminal = Terminal(
        interactive=False,
        assume_yes=args.yes,
        ask_patterns=config.policy.ask,
        no_one_to_ask="no one to ask in an agent served over MCP",
    )
    serve_mcp(
        config,
        approval=terminal.approve,
        gateway=args.gateway,
        http_port=args.http,
        host=args.host,
    )
    return 0


def add_command(
    commands: argparse._SubParsersAction[argparse.ArgumentParser], yes_help: str
) -> None:
    """Register ``mcp-serve`` on the CLI's subcommands."""
    command = commands.add_parser("mcp-serve", help="serve the configured agent to MCP hosts")
    command.add_argument("--config", help="runtime config JSON")
    command.add_argument(
        "--http", type=int, metavar="PORT", help="serve streamable HTTP on PORT (default: stdio)"
    )
    command.add_argument("--host", default="127.0.0.1", help="the address --http listens on")
    command.add_argument(
        "--gateway",
        action="store_true",
        help="also serve every tool of the agent's toolsets, validated by its dispatcher",
    )
    command.add_argument("-y", "--yes", action="store_true", help=yes_help)
    command.set_defaults(handler=run)
