"""Grammar-constrained tool calls: a token mask that keeps the model inside its own tool format.

A local model is asked to call tools in its native chat format (Kimi K2's
``<|tool_calls_section_begin|>`` section, DeepSeek's ``<｜tool▁calls▁begin｜>`` one). Sampling
freely, a small or quantised model misspells a tool name, forgets a required argument or
writes JSON that does not parse, and the turn is lost. So each decode step is masked by a
grammar (llguidance, a Lark grammar with inline JSON schemas) that allows:

* optionally a leading ``<think> … </think>`` block (K2 Thinking and DeepSeek-V3.1 reason first),
* free text: every ordinary token, no control token (the markers cannot appear by accident),
* then, depending on ``tool_choice``, a tool section whose calls name an offered tool and whose
  arguments are valid JSON for that tool's (normalised) input schema (with a named tool, by
  default, the section comes straight after the reasoning: no free text),
* then only the end of the turn (the format's stop tokens).

Schemas are checked one by one before they go into the grammar. A schema llguidance implements
exactly stays as it is; one that uses keywords llguidance does not implement (``not``,
``if``/``then``/``else``, ``uniqueItems`` …) is compiled leniently, the unimplemented keywords
ignored, which still admits every valid call ("relaxed"); one llguidance cannot take at all
(remote ``$ref``, grammar limits) becomes an unconstrained JSON object ("fallback"). Both log a
warning naming the tool; the dispatcher validates every call anyway. Where llguidance is known to
be laxer than the dispatcher's checks (29 February of any year and year 0000 in dates, second 60
at any time, host-name label and length rules in ``hostname``/``email``) the schema is tightened
with patterns so generated values pass; the price is a few valid values the grammar never
writes (leap seconds, quoted email local parts, ``xn--`` labels).

Arguments are written the way the chat templates' ``tojson`` renders past calls
(``json.dumps(..., ensure_ascii=False)``: ``", "`` and ``": "``, no other whitespace, characters
as themselves rather than ``\\uXXXX``), with keys in schema order. That keeps the model on the
form its prompt shows, and leaves keys and punctuation forced, so the generation loop can append
them without sampling (:meth:`ToolConstraint.forced_tokens`).

Compiled grammars are cached per (tokenizer, format layout, tools, tool_choice) in a bounded LRU;
llguidance's tokenizer view is built once per :class:`Tokenizer` (about a second for a real
vocabulary). A :class:`ToolConstraint` per generated turn then costs a copy of the compiled
matcher, and each step a bitmask computation plus its application to the logits.

The pieces: ``grammar_schema.py`` prepares each tool's schema, ``grammar_lark.py`` writes the
turn's Lark grammar in the format's layout, ``logit_mask.py`` applies a step's mask to the
logits; this module caches what they compile and holds the public face.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
import weakref
from collections import OrderedDict
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from llguidance import LLMatcher, LLTokenizer, TokenizerWrapper

from agent_runtime.types import ToolSpec

from .chat_format import ChatFormat
from .grammar_lark import CallLayout, compile_matcher, first_line, turn_grammar
from .grammar_schema import PreparedSchema, SchemaMode, fallback_schema, schema_for_grammar
from .logit_mask import apply_mask, unpack_on
from .tokenizer import HFTokenizer, KimiTokenizer, Tokenizer

__all__ = [
    "SchemaMode",
    "ToolConstraint",
    "ToolGrammar",
    "tool_grammar",
]

logger = logging.getLogger(__name__)

_CHOICES = ("auto", "required", "none")
_GRAMMAR_CACHE_SIZE = 64
_SCHEMA_CACHE_SIZE = 1024


# --------------------------------------------------------------------------- per tokenizer


class _TokenizerState:
    """llguidance's view of one tokenizer, and what was compiled for it."""

    def __init__(self, lltok: LLTokenizer) -> None:
        self.lltok = lltok
        self.grammars: OrderedDict[tuple[Any, ...], ToolGrammar] = OrderedDict()
        self.schemas: OrderedDict[str, PreparedSchema] = OrderedDict()


# Per tokenizer, per set of stop tokens (llguidance fixes the end-of-sequence ids when its
# tokenizer is built; formats over one tokenizer normally share them).
_STATES: weakref.WeakKeyDictionary[Tokenizer, dict[tuple[int, ...], _TokenizerState]] = (
    weakref.WeakKeyDictionary()
)
_LOCK = threading.RLock()


def _state_for(tokenizer: Tokenizer, stops: tuple[int, ...]) -> _TokenizerState:
    with _LOCK:
        by_stops = _STATES.setdefault(tokenizer, {})
        state = by_stops.get(stops)
        if state is None:
            state = _TokenizerState(_build_lltokenizer(tokenizer, stops))
            by_stops[stops] = state
        return state


def _build_lltokenizer(tokenizer: Tokenizer, eos: Sequence[int]) -> LLTokenizer:
    """llguidance's tokenizer: from the tiktoken encoding or the ``tokenizers`` backend (then
    tokenisation runs in Rust), else through the generic :class:`Tokenizer` interface."""
    eos_ids = list(dict.fromkeys(eos)) or list(tokenizer.eos_ids)
    vocab_size = int(tokenizer.vocab_size)
    if isinstance(tokenizer, KimiTokenizer):
        encoding = tokenizer.encoding
        return LLTokenizer.from_tiktoken(  # type: ignore[attr-defined,no-any-return]
            encoder=encoding._mergeable_ranks,
            special_tokens=encoding._special_tokens,
            pattern=encoding._pat_str,
            eos_token=eos_ids,
            n_vocab=vocab_size,
        )
    if isinstance(tokenizer, HFTokenizer):
        import copy

        own = copy.copy(tokenizer.backend)
        own.no_padding()
        own.no_truncation()
        return LLTokenizer(own.to_str(), n_vocab=vocab_size, eos_token=eos_ids)
    return LLTokenizer(
        TokenizerWrapper(_GenericTokens(tokenizer, eos_ids[0] if eos_ids else 0)),
        n_vocab=vocab_size,
        eos_token=eos_ids,
    )


class _GenericTokens:
    """The attributes llguidance's ``TokenizerWrapper`` reads, from our Tokenizer interface."""

    def __init__(self, tokenizer: Tokenizer, eos: int) -> None:
        self._tokenizer = tokenizer
        self.eos_token_id = eos
        self.bos_token_id = tokenizer.bos_id
        self.tokens = [_bytes_or_empty(tokenizer, i) for i in range(tokenizer.vocab_size)]
        self.special_token_ids = sorted(set(tokenizer.special_tokens.values()))

    def __call__(self, text: str) -> list[int]:
        return self._tokenizer.encode(text)


def _bytes_or_empty(tokenizer: Tokenizer, token_id: int) -> bytes:
    try:
        return tokenizer.token_bytes(token_id)
    except Exception:  # an id the vocabulary skips
        return b""


# --------------------------------------------------------------------------- schemas


def _prepare_schema(state: _TokenizerState, tool: ToolSpec) -> PreparedSchema:
    try:
        canonical = json.dumps(tool.input_schema, sort_keys=True, ensure_ascii=False)
    except (TypeError, ValueError) as exc:
        return fallback_schema(f"schema is not JSON ({exc})")
    with _LOCK:
        hit = state.schemas.get(canonical)
        if hit is not None:
            state.schemas.move_to_end(canonical)
            return hit
    prepared = schema_for_grammar(state.lltok, tool.input_schema)
    with _LOCK:
        state.schemas[canonical] = prepared
        while len(state.schemas) > _SCHEMA_CACHE_SIZE:
            state.schemas.popitem(last=False)
    return prepared


def _names(names: Sequence[str], limit: int = 5) -> str:
    """Tool names for a log line: the first few, then how many more."""
    shown = ", ".join(names[:limit])
    return shown if len(names) <= limit else f"{shown} and {len(names) - limit} more"


# --------------------------------------------------------------------------- public API


class ToolGrammar:
    """The compiled grammar of one (tokenizer, format, tool set, tool_choice).

    Build with :func:`tool_grammar` (which caches); start a :meth:`matcher` per generated turn.
    """

    def __init__(
        self,
        *,
        lltok: LLTokenizer,
        matcher: LLMatcher,
        lark: str,
        tool_names: tuple[str, ...],
        tool_choice: str,
        schema_modes: Mapping[str, SchemaMode],
        stop_token_ids: tuple[int, ...],
        think_begin_id: int | None,
        text_before_calls: bool,
    ) -> None:
        self._lltok = lltok
        self._matcher = matcher
        self.lark = lark
        """The Lark source (for debugging and tests)."""
        self.tool_names = tool_names
        """The tools a call may name, in the order given (empty for text only)."""
        self.tool_choice = tool_choice
        self.text_before_calls = text_before_calls
        """Whether free text may precede the tool section (see :func:`tool_grammar`)."""
        self.schema_modes: Mapping[str, SchemaMode] = dict(schema_modes)
        """Per tool: how faithfully the grammar enforces its schema (see :data:`SchemaMode`)."""
        self.stop_token_ids = stop_token_ids
        self.vocab_size = int(lltok.vocab_size)
        self._think_begin_id = think_begin_id

    def matcher(self, *, inside_think: bool = False) -> ToolConstraint:
        """A fresh constraint for one assistant turn.

        ``inside_think``: the prompt already opened the reasoning block (DeepSeek-V3.1's
        thinking mode ends the prompt with ``<think>``), so the turn starts inside it.
        """
        matcher = self._matcher.deep_copy()
        if inside_think:
            if self._think_begin_id is None:
                raise ValueError("this format has no reasoning block to start inside")
            matcher.consume_token(self._think_begin_id)
        return ToolConstraint(matcher, self.vocab_size, self)

    def __repr__(self) -> str:
        return f"ToolGrammar(tools={list(self.tool_names)}, tool_choice={self.tool_choice!r})"


class ToolConstraint:
    """The grammar's state during one generated turn: mask each step's logits, then accept the
    token that was chosen (and any forced tokens appended).

    A token the grammar refuses never raises: the refusal is recorded in :attr:`error`, logged,
    and the constraint goes inert (masks nothing, forces nothing) so the turn can finish; the
    dispatcher still validates whatever the model wrote.
    """

    def __init__(self, matcher: LLMatcher, vocab_size: int, grammar: ToolGrammar) -> None:
        self._m = matcher
        self._vocab = vocab_size
        self._grammar = grammar
        self._stops = frozenset(grammar.stop_token_ids)
        self._words = np.zeros((vocab_size + 31) // 32, dtype=np.int32)
        self._done = False
        self.error: str | None = None
        """Why the constraint went inert (a refused token, a grammar limit), else ``None``."""
        self.tokens: list[int] = []
        """The tokens accepted so far (not counting a reasoning opener the prompt held)."""

    @property
    def grammar(self) -> ToolGrammar:
        """The grammar this turn follows."""
        return self._grammar

    def mask(self, logits: torch.Tensor) -> torch.Tensor:
        """Set every token the grammar does not allow next to ``-inf``, in place; returns
        ``logits``. Shape ``[V]`` or ``[1, V]``; ids past the tokenizer's vocabulary (padding
        rows of the embedding) are always disallowed. Inert or done: returned unchanged."""
        if logits.numel() != logits.shape[-1]:
            raise ValueError(f"one row of logits expected, got shape {tuple(logits.shape)}")
        if self.error is not None or self._done:
            return logits
        self._m.unsafe_compute_mask_ptr(self._words.ctypes.data, self._words.nbytes)
        if self._m.is_error():
            self._go_inert(self._m.get_error())
            return logits
        row = logits.view(-1)
        width = min(row.shape[0], self._vocab)
        if row.shape[0] > self._vocab:
            row[self._vocab :] = float("-inf")
        apply_mask(row, self._words, width)
        return logits

    def accept(self, token_id: int) -> None:
        """Advance past the token that was generated (sampled or forced)."""
        if self.error is not None or self._done:
            return
        self._consume(token_id)

    def accept_many(self, token_ids: Iterable[int]) -> None:
        """:meth:`accept` each token in order (the forced tokens a step appended)."""
        for token_id in token_ids:
            self.accept(token_id)

    def forced_tokens(self) -> list[int]:
        """Tokens that are the grammar's only continuation from here (jump-forward), in
        order; ``[]`` when the model has a choice. Never includes a stop token. The caller
        appends them and must :meth:`accept` each (or :meth:`accept_many` them)."""
        if self.error is not None or self._done:
            return []
        forced = self._m.compute_ff_tokens()
        if self._m.is_error():
            self._go_inert(self._m.get_error())
            return []
        out: list[int] = []
        for token_id in forced:
            if token_id in self._stops:
                break
            out.append(token_id)
        return out

    def is_done(self) -> bool:
        """Whether the turn is over: a stop token was accepted, or the grammar allows nothing
        but a stop token any more (after a tool section: the caller may end the turn there, or
        sample once more from a mask that holds only the stop tokens)."""
        return self._done or (self.error is None and self._m.is_stopped())

    def _consume(self, token_id: int) -> None:
        if not 0 <= token_id < self._vocab:
            self._go_inert(f"token id {token_id} is outside the vocabulary (0..{self._vocab - 1})")
            return
        if not self._m.consume_token(token_id):
            self._go_inert(self._m.get_error() or f"token {token_id} refused")
            return
        self.tokens.append(token_id)
        if token_id in self._stops:
            self._done = True

    def _go_inert(self, reason: str) -> None:
        self.error = first_line(reason)
        logger.warning(
            "tool-call grammar (%s) stopped constraining this turn: %s",
            _names(self._grammar.tool_names) or "text only",
            self.error,
        )


def tool_grammar(
    fmt: ChatFormat,
    tools: Sequence[ToolSpec],
    tool_choice: str,
    *,
    text_before_calls: bool | None = None,
    reasoning: bool = True,
) -> ToolGrammar:
    """The grammar for one turn of ``fmt`` offering ``tools`` under ``tool_choice``.

    ``tool_choice``: ``"auto"`` (free text, then optionally one tool section), ``"required"``
    (a section with at least one call, no text before it by default), ``"none"`` (free text only) or the name of one offered
    tool (a section with exactly one call of that tool). With no tools offered ``tool_choice``
    is ignored: free text only. Every mode allows the format's leading reasoning block. A tool
    named by ``tool_choice`` but not offered is a caller error (``ValueError``). Schemas never
    make this raise: see the module docstring.

    ``text_before_calls``: whether free text may come before the section in ``required`` and
    named mode. By default it may not: the calls start the answer (after any reasoning), as a
    required or forced call does in the OpenAI API. Without text a model cannot put the call
    off (a weak model could otherwise write until its token limit and never call), and the
    section opener (or the whole call head, for a named tool) is forced.

    ``reasoning``: whether the turn may open with the format's reasoning block. Off for a
    checkpoint that does not reason (K2-Instruct, DeepSeek-V3 0324): a block such a model
    opens by mistake could run until the token limit, since nothing in it ends the turn.

    Cached: the same tokenizer, format layout, tools, ``tool_choice`` and options return the
    same :class:`ToolGrammar`.
    """
    tokenizer = fmt.tokenizer
    stops = tuple(fmt.stop_token_ids)
    layout = CallLayout.of(fmt)
    if not reasoning:
        layout = dataclasses.replace(layout, think_begin=None, think_end=None)
    unique: dict[str, ToolSpec] = {}
    for tool in tools:
        unique.setdefault(tool.name, tool)
    offered = list(unique.values())
    if offered and tool_choice not in _CHOICES and tool_choice not in unique:
        raise ValueError(
            f"tool_choice {tool_choice!r} is not 'auto', 'required', 'none' or an offered tool "
            f"({', '.join(unique)})"
        )
    choice = tool_choice if offered else "none"
    if choice == "none":
        offered = []
    if choice in ("auto", "none"):
        text = True
    else:
        text = bool(text_before_calls)
    state = _state_for(tokenizer, stops)
    signature = tuple(
        (t.name, json.dumps(t.input_schema, sort_keys=True, ensure_ascii=False, default=repr))
        for t in offered
    )
    key = (layout, signature, choice, text)
    with _LOCK:
        hit = state.grammars.get(key)
        if hit is not None:
            state.grammars.move_to_end(key)
            return hit
    grammar = _compile(state, tokenizer, layout, stops, offered, choice, text)
    with _LOCK:
        state.grammars[key] = grammar
        while len(state.grammars) > _GRAMMAR_CACHE_SIZE:
            state.grammars.popitem(last=False)
    return grammar


def _compile(
    state: _TokenizerState,
    tokenizer: Tokenizer,
    layout: CallLayout,
    stops: tuple[int, ...],
    tools: list[ToolSpec],
    choice: str,
    text: bool,
) -> ToolGrammar:
    specials: Mapping[str, int] = tokenizer.special_tokens
    modes: dict[str, SchemaMode] = {}
    pairs: list[tuple[str, str]] = []
    for tool in tools:
        prepared = _prepare_schema(state, tool)
        modes[tool.name] = prepared.mode
        pairs.append((tool.name, prepared.grammar_schema))
        if prepared.mode == "relaxed" and prepared.reason:
            logger.warning(
                "tool %r: its schema is only partly enforced while generating (%s); the "
                "dispatcher still validates the call",
                tool.name,
                prepared.reason,
            )
        elif prepared.mode == "fallback":
            logger.warning(
                "tool %r: its schema cannot be compiled into the tool-call grammar (%s); its "
                "arguments are only held to be a JSON object, the dispatcher still validates",
                tool.name,
                prepared.reason,
            )
    lark = turn_grammar(layout, specials, pairs, choice, text)
    matcher = compile_matcher(state.lltok, lark)
    if matcher.is_error() and tools:
        logger.warning(
            "tool-call grammar for %s does not compile (%s); every tool falls back to a plain "
            "JSON object",
            _names([t.name for t in tools]),
            first_line(matcher.get_error()),
        )
        plain = fallback_schema("the combined grammar did not compile").grammar_schema
        pairs = [(name, plain) for name, _ in pairs]
        modes = dict.fromkeys(modes, "fallback")
        lark = turn_grammar(layout, specials, pairs, choice, text)
        matcher = compile_matcher(state.lltok, lark)
    if matcher.is_error():
        raise RuntimeError(f"the tool-call grammar does not compile: {matcher.get_error()}")
    think_id = specials.get(layout.think_begin) if layout.think_begin else None
    return ToolGrammar(
        lltok=state.lltok,
        matcher=matcher,
        lark=lark,
        tool_names=tuple(t.name for t in tools),
        tool_choice=choice,
        schema_modes=modes,
        stop_token_ids=stops,
        think_begin_id=think_id if think_id is not None and "think?" in lark else None,
        text_before_calls=text,
    )


# The mask helpers' names from before they moved to logit_mask.py (tests drive them from here).
_apply = apply_mask
_unpack_on = unpack_on
