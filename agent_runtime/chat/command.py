"""The ``chat`` subcommand of ``agent-runtime``: its arguments, and starting the session.

Imported by the CLI when it builds its parser, so it imports nothing heavy: prompt_toolkit and
rich (the ``chat`` extra) are imported only when the command runs.
"""

from __future__ import annotations

import argparse
import logging
import sys
from typing import Any

import anyio

from agent_runtime.config import RuntimeConfig, load_config
from agent_runtime.errors import ConfigError, UserError


def register(commands: Any, yes_help: str) -> None:
    """Add ``chat`` to the CLI's subcommands (``commands``: argparse's subparsers object)."""
    chat = commands.add_parser("chat", help="talk with the configured agent in the terminal")
    chat.add_argument("--config", help="runtime config JSON")
    chat.add_argument("-y", "--yes", action="store_true", help=yes_help)
    chat.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    """Run the chat session the arguments describe; its exit status."""
    try:
        from .session import ChatSession
    except ImportError as err:
        raise ConfigError(
            f"agent-runtime chat needs the chat extra ({err.name} is missing): "
            "pip install 'agent-runtime[chat]'"
        ) from None
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        raise UserError(
            "agent-runtime chat needs a terminal (stdin and stdout); for one prompt from a "
            "script use: agent-runtime run --config FILE PROMPT"
        )
    config = load_config(args.config) if args.config else RuntimeConfig()
    verbose = logging.getLogger().isEnabledFor(logging.INFO)
    session = ChatSession(config, assume_yes=args.yes, verbose=verbose)
    code: int = anyio.run(session.run)
    return code
