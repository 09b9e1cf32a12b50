"""The Lark grammar of one assistant turn, written in a chat format's own tool-call layout.

:func:`turn_grammar` spells out what ``constrained.py``'s module docstring describes: an optional
reasoning block, free text, then (by ``tool_choice``) a tool section whose calls name an offered
tool and carry arguments that match its ``%json`` schema (prepared by ``grammar_schema.py``),
control tokens as token ids, never as text. :func:`compile_matcher` turns such a grammar into
llguidance's matcher under this runtime's parser limits.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from llguidance import LLMatcher, LLParserLimits, LLTokenizer

from .chat_format import ChatFormat

__all__ = [
    "CallLayout",
    "compile_matcher",
    "first_line",
    "parser_limits",
    "turn_grammar",
]

# Digits of a Kimi call index (``functions.NAME:IDX``). Bounded so a model that keeps emitting
# digits is forced on after a few.
_INDEX_REGEX = "[0-9]{1,6}"


@dataclass(frozen=True)
class CallLayout:
    """A chat format's tool-call layout (its marker attributes), hashable for the cache key.

    Texts may mix control-token texts and plain text; see :class:`ChatFormat`."""

    section_begin: str
    section_end: str
    call_head: str
    index_separator: str | None
    argument_begin: str
    argument_end: str
    call_end: str
    call_separator: str
    think_begin: str | None
    think_end: str | None

    @classmethod
    def of(cls, fmt: ChatFormat) -> CallLayout:
        return cls(
            section_begin=fmt.section_begin,
            section_end=fmt.section_end,
            call_head=fmt.call_begin + fmt.call_name_prefix,
            index_separator=fmt.call_index_separator,
            argument_begin=fmt.argument_begin,
            argument_end=fmt.argument_end,
            call_end=fmt.call_end,
            call_separator=fmt.call_separator,
            think_begin=fmt.think_begin,
            think_end=fmt.think_end,
        )


def _lark_text(text: str, specials: Mapping[str, int]) -> list[str]:
    """Lark items for ``text``: control-token texts become ``<[id]>``, the rest literals."""
    names = sorted((n for n in specials if n and n in text), key=len, reverse=True)
    if not names:
        return [_lark_string(text)] if text else []
    splitter = re.compile("(" + "|".join(map(re.escape, names)) + ")")
    items: list[str] = []
    for piece in splitter.split(text):
        if piece in specials:
            items.append(f"<[{specials[piece]}]>")
        elif piece:
            items.append(_lark_string(piece))
    return items


def _lark_string(text: str) -> str:
    return json.dumps(text, ensure_ascii=False)


def turn_grammar(
    layout: CallLayout,
    specials: Mapping[str, int],
    tools: Sequence[tuple[str, str]],
    tool_choice: str,
    text: bool,
) -> str:
    """The Lark grammar of one assistant turn. ``tools`` are (name, prepared schema) pairs;
    ``text``: free text may precede the section (always, in ``auto`` mode)."""
    lines = ["%llguidance {}", "TEXT: /(?s:.*)/"]
    think = ""
    if (
        layout.think_begin is not None
        and layout.think_end is not None
        and layout.think_begin in specials
        and layout.think_end in specials
    ):
        think = "think? "
        lines.append(
            f"think: <[{specials[layout.think_begin]}]> TEXT <[{specials[layout.think_end]}]>"
        )
    if not tools or tool_choice == "none":
        lines.append(f"start: {think}TEXT")
        return "\n".join(lines) + "\n"
    if layout.index_separator is not None:
        lines.append(f"INDEX: /{_INDEX_REGEX}/")
    for i, (name, schema) in enumerate(tools):
        items = [*_lark_text(layout.call_head, specials), _lark_string(name)]
        if layout.index_separator is not None:
            items += [*_lark_text(layout.index_separator, specials), "INDEX"]
        items += _lark_text(layout.argument_begin, specials)
        items.append(f"args_{i}")
        items += _lark_text(layout.argument_end + layout.call_end, specials)
        lines.append(f"call_{i}: {' '.join(items)}")
        lines.append(f"args_{i}: %json {schema}")
    begin = " ".join(_lark_text(layout.section_begin, specials))
    end = " ".join(_lark_text(layout.section_end, specials))
    if tool_choice in ("auto", "required"):
        lines.append("call: " + " | ".join(f"call_{i}" for i in range(len(tools))))
        separator = " ".join(_lark_text(layout.call_separator, specials))
        lines.append(f"section: {begin} call ({separator} call)* {end}")
        optional = "?" if tool_choice == "auto" else ""
        lead = "TEXT " if text or tool_choice == "auto" else ""
        lines.append(f"start: {think}{lead}section{optional}")
    else:
        index = next(i for i, (name, _) in enumerate(tools) if name == tool_choice)
        lines.append(f"section: {begin} call_{index} {end}")
        lines.append(f"start: {think}{'TEXT ' if text else ''}section")
    return "\n".join(lines) + "\n"


# The tool section multiplies Earley items per row by the number of tools; a large catalogue
# needs more than llguidance's default row limit (2000).
_LIMITS_ROW = 20000


def parser_limits() -> LLParserLimits:
    return LLParserLimits(max_items_in_row=_LIMITS_ROW)


def compile_matcher(lltok: LLTokenizer, lark: str) -> LLMatcher:
    return LLMatcher(lltok, LLMatcher.grammar_from_lark(lark), log_level=0, limits=parser_limits())


_POSITION = re.compile(r"^at \d+\(\d+\): ")


def first_line(text: str) -> str:
    """The first line of an llguidance message, without the grammar position it starts with."""
    line = text.strip().splitlines()[0] if text.strip() else "unknown error"
    return _POSITION.sub("", line)[:300]
