"""Docstring parsing: a tool's description and its parameters' descriptions.

A model only knows what a tool does from its description and from the description of each
parameter, and Python programmers already write both into docstrings. This module splits a
docstring into the prose the model reads as the tool's description and a ``{parameter:
description}`` map, in the three styles people use:

Google::

    Args:
        city: The city to look up.
        days (int): How many days, at most 7.

Sphinx / reST::

    :param city: The city to look up.
    :param int days: How many days, at most 7.

NumPy::

    Parameters
    ----------
    city : str
        The city to look up.

Only the parameter sections are removed from the description; other sections (``Returns:``,
``Raises:`` ...) stay, since they tell the model what comes back.
"""

from __future__ import annotations

import inspect
import re
from dataclasses import dataclass, field

__all__ = ["Docstring", "parse_docstring"]


@dataclass(frozen=True)
class Docstring:
    """A docstring split into the tool description and per-parameter descriptions."""

    description: str = ""
    params: dict[str, str] = field(default_factory=dict)


_GOOGLE_HEADER = re.compile(
    r"^(?P<indent>\s*)(?:Args|Arguments|Parameters|Params|Keyword Args|Keyword Arguments"
    r"|Kwargs|Other Parameters)\s*:\s*$"
)
_GOOGLE_ENTRY = re.compile(r"^\*{0,2}(?P<name>\w+)\s*(?:\([^)]*\))?\s*:\s*(?P<desc>.*)$")

_NUMPY_HEADER = re.compile(
    r"^(?P<indent>\s*)(?:Parameters|Other Parameters|Keyword Arguments|Params)\s*$"
)
_NUMPY_UNDERLINE = re.compile(r"^\s*-{3,}\s*$")
_NUMPY_ENTRY = re.compile(r"^(?P<names>\*{0,2}\w+(?:\s*,\s*\*{0,2}\w+)*)\s*(?::.*)?$")

_SPHINX_PARAM = re.compile(
    r"^(?P<indent>\s*):(?:param|parameter|arg|argument|key|keyword)\s+"
    r"(?:[^:]*?\s+)?\*{0,2}(?P<name>\w+)\s*:\s*(?P<desc>.*)$"
)
_SPHINX_TYPE = re.compile(r"^(?P<indent>\s*):type\s+\*{0,2}\w+\s*:.*$")


def parse_docstring(doc: str | None) -> Docstring:
    """Split ``doc`` into a description and parameter descriptions.

    Never raises: text the parser does not recognise stays in the description.
    """
    if not doc or not doc.strip():
        return Docstring()
    lines = inspect.cleandoc(doc).splitlines()
    params: dict[str, str] = {}
    keep = [True] * len(lines)
    _parse_numpy(lines, keep, params)
    _parse_google(lines, keep, params)
    _parse_sphinx(lines, keep, params)
    text = "\n".join(line for line, k in zip(lines, keep, strict=True) if k)
    text = re.sub(r"\n\s*\n(\s*\n)+", "\n\n", text).strip()
    return Docstring(description=text, params=params)


def _indent(line: str) -> int:
    return len(line) - len(line.lstrip())


def _join(parts: list[str]) -> str:
    return " ".join(p.strip() for p in parts if p.strip())


def _parse_google(lines: list[str], keep: list[bool], params: dict[str, str]) -> None:
    i = 0
    while i < len(lines):
        match = _GOOGLE_HEADER.match(lines[i]) if keep[i] else None
        if match is None:
            i += 1
            continue
        header_indent = len(match.group("indent"))
        keep[i] = False
        i += 1
        entry_indent: int | None = None
        current: str | None = None
        parts: list[str] = []
        while i < len(lines):
            line = lines[i]
            if line.strip() and _indent(line) <= header_indent:
                break  # the section ended: dedent back to the header's level
            keep[i] = False
            if line.strip():
                indent = _indent(line)
                if entry_indent is None:
                    entry_indent = indent
                entry = _GOOGLE_ENTRY.match(line.strip()) if indent <= entry_indent else None
                if entry is not None:
                    if current is not None:
                        params[current] = _join(parts)
                    current, parts = entry.group("name"), [entry.group("desc")]
                elif current is not None:
                    parts.append(line)
            i += 1
        if current is not None:
            params[current] = _join(parts)


def _parse_numpy(lines: list[str], keep: list[bool], params: dict[str, str]) -> None:
    i = 0
    while i < len(lines) - 1:
        match = _NUMPY_HEADER.match(lines[i])
        if match is None or not _NUMPY_UNDERLINE.match(lines[i + 1]):
            i += 1
            continue
        header_indent = len(match.group("indent"))
        keep[i] = keep[i + 1] = False
        i += 2
        names: list[str] = []
        parts: list[str] = []
        while i < len(lines):
            line = lines[i]
            nxt = lines[i + 1] if i + 1 < len(lines) else ""
            if line.strip() and _NUMPY_UNDERLINE.match(nxt):
                break  # the next section's header
            if line.strip() and _indent(line) <= header_indent:
                entry = _NUMPY_ENTRY.match(line.strip())
                if entry is None:
                    break
                for name in names:
                    params[name] = _join(parts)
                names = [n.strip().lstrip("*") for n in entry.group("names").split(",")]
                parts = []
            elif line.strip():
                parts.append(line)
            keep[i] = False
            i += 1
        for name in names:
            params[name] = _join(parts)


def _parse_sphinx(lines: list[str], keep: list[bool], params: dict[str, str]) -> None:
    i = 0
    while i < len(lines):
        param = _SPHINX_PARAM.match(lines[i]) if keep[i] else None
        type_line = _SPHINX_TYPE.match(lines[i]) if keep[i] and param is None else None
        found = param or type_line
        if found is None:
            i += 1
            continue
        field_indent = len(found.group("indent"))
        keep[i] = False
        parts = [param.group("desc")] if param else []
        i += 1
        # Continuation lines are indented deeper than the field and are not a new field.
        while i < len(lines) and lines[i].strip() and _indent(lines[i]) > field_indent:
            if lines[i].lstrip().startswith(":"):
                break
            parts.append(lines[i])
            keep[i] = False
            i += 1
        if param is not None:
            params[param.group("name")] = _join(parts)
