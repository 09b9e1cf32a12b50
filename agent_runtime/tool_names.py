"""Tool names as the model sees them: a spelling every model API accepts, and the closest real
names when the model asks for one that does not exist.

The dispatcher offers each tool under :func:`normalize_tool_name` of its own name and answers an
unknown name with :func:`unknown_tool_message`.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

__all__ = ["normalize_tool_name", "unknown_tool_message"]

_TOOL_NAME_BAD = re.compile(r"[^A-Za-z0-9_-]+")
_TOOL_NAME_MAX = 64


def normalize_tool_name(name: str) -> str:
    """Return a wire-safe tool name: only ``[A-Za-z0-9_-]``, at most 64 characters.

    Model APIs (OpenAI, Anthropic, most chat templates) reject other characters, yet catalogues
    use dotted names such as ``math.factorial``. Runs of other characters become one ``_``; an
    over-long name keeps its head and gets a short stable hash so two long names stay distinct.
    """
    safe = _TOOL_NAME_BAD.sub("_", name).strip("_") or "tool"
    if len(safe) <= _TOOL_NAME_MAX:
        return safe
    import hashlib

    digest = hashlib.sha1(name.encode("utf-8")).hexdigest()[:8]
    return f"{safe[: _TOOL_NAME_MAX - 9]}_{digest}"


def unknown_tool_message(name: str, known: Sequence[str]) -> str:
    """Name the closest real tools, so the model can correct its call."""
    if not known:
        return f"Unknown tool '{name}': no tools are available."
    close = difflib.get_close_matches(name, known, n=3, cutoff=0.5)
    lowered = {k.lower(): k for k in known}
    if name.lower() in lowered and lowered[name.lower()] not in close:
        close.insert(0, lowered[name.lower()])
    for k in known:
        if k not in close and (k.endswith(name) or name.endswith(k)) and len(close) < 3:
            close.append(k)
    listed = ", ".join(sorted(known)[:30]) + (" …" if len(known) > 30 else "")
    if close:
        return (
            f"Unknown tool '{name}'. Did you mean: {', '.join(close)}? Available tools: {listed}."
        )
    return f"Unknown tool '{name}'. Available tools: {listed}."
