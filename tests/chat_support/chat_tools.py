"""Local tools for the chat tests: one that writes a file (asks first), one that only reads, and
one that takes its time (to be cancelled)."""

from __future__ import annotations

from pathlib import Path

import anyio

from agent_runtime import tool


@tool
def write_note(path: str, text: str) -> str:
    """Write a note to a file."""
    Path(path).write_text(text)
    return f"wrote {len(text)} characters to {path}"


@tool(read_only=True)
def read_note(path: str) -> str:
    """Read a note."""
    file = Path(path)
    return file.read_text() if file.exists() else "no such note"


@tool(read_only=True)
async def nap(seconds: float, marker: str) -> str:
    """Sleep, leaving ``marker`` + ``.cancelled`` behind when cancelled."""
    try:
        await anyio.sleep(seconds)
    except anyio.get_cancelled_exc_class():
        with anyio.CancelScope(shield=True):  # a cancelled task gets no other await
            await anyio.Path(marker + ".cancelled").write_text("cancelled")
        raise
    return "rested"
