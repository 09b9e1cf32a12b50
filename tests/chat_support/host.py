"""Starting ``agent-runtime chat`` in a tmux terminal for a test, with the test model and tools
of this folder and the MCP servers a test names."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from .terminal import TmuxTerminal

HERE = Path(__file__).resolve().parent
GATE_SERVER = HERE / "gate_server.py"
TEST_SERVER = HERE.parent / "mcp_support" / "mcp_test_server.py"

PROMPT = r"^›\s*\Z"
"""The chat waiting at its prompt with nothing typed (the last line on the screen)."""
APPROVAL = r"allow\? \[y\] once, \[a\] always for this tool, \[n\] deny:\s*\Z"

LOCAL_TOOLS = ["chat_tools:write_note", "chat_tools:read_note", "chat_tools:nap"]


def stdio(script: Path, **env: str) -> dict[str, Any]:
    """An ``mcpServers`` entry running ``script`` with this Python."""
    return {"command": sys.executable, "args": [str(script)], "env": env}


def start_chat(folder: Path, **config: Any) -> TmuxTerminal:
    """Write ``agent.json`` in ``folder`` (the test model, the local tools, then ``config``) and
    start the chat on it; returns once the session is ready for input."""
    document = {"model": {"backend": "chat_model:make"}, "tools": LOCAL_TOOLS, **config}
    (folder / "agent.json").write_text(json.dumps(document))
    terminal = TmuxTerminal(
        folder / "tmux.sock",
        [sys.executable, "-m", "agent_runtime.cli", "chat", "--config", "agent.json"],
        folder,
        {
            "PYTHONPATH": str(HERE),
            "XDG_STATE_HOME": str(folder / "state"),
            "TERM": "xterm-256color",
        },
    )
    try:
        terminal.wait_for(PROMPT, timeout_s=90)
    except BaseException:
        terminal.close()
        raise
    return terminal
