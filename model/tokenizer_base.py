"""The tokenizer interface the local models share: text stays text, control tokens stay apart.

:class:`Tokenizer` holds everything that does not depend on the vocabulary's kind: the
prompt encoding that keeps special-token text inside untrusted spans ordinary
(:meth:`Tokenizer.encode_prompt`), special-token lookup, byte access and streaming decode
(:class:`StreamDecoder`). The vocabularies themselves are in ``tokenizer_kimi.py`` (tiktoken) and
``tokenizer_hf.py`` (``tokenizer.json``); ``tokenizer.py`` is where callers import them from.
"""

from __future__ import annotations

import bisect
import codecs
import json
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

from agent_runtime.errors import ConfigError

__all__ = [
    "StreamDecoder",
    "Tokenizer",
    "TokenizerError",
    "UnknownTokenError",
    "bos_eos",
    "read_json",
]


# ---------------------------------------------------------------------------------------- errors


class TokenizerError(ConfigError):
    """A tokenizer folder that cannot be used; the message names the file and the reason."""


class UnknownTokenError(TokenizerError, KeyError):
    """A special token or token id that this vocabulary does not have."""

    def __str__(self) -> str:  # KeyError would repr() the message
        return str(self.args[0]) if self.args else ""


# ---------------------------------------------------------------------------------------- streaming


class StreamDecoder:
    """Token ids in, text deltas out, for one generated sequence.

    A byte-level vocabulary may spread one character over several tokens (an emoji is four bytes),
    so a token's bytes alone are not always text. The deltas hold back an unfinished UTF-8
    sequence until the token that completes it; invalid bytes become U+FFFD exactly where
    :meth:`Tokenizer.decode` puts them, so the deltas plus :meth:`flush` always equal the decode of
    all ids.
    """

    def __init__(self, token_bytes: Callable[[int], bytes]) -> None:
        self._token_bytes = token_bytes
        self._utf8 = codecs.getincrementaldecoder("utf-8")("replace")

    def push(self, token_id: int) -> str:
        """The text this token completes ("" while a split UTF-8 sequence is unfinished)."""
        return self._utf8.decode(self._token_bytes(token_id))

    def flush(self) -> str:
        """Whatever is held back (an unfinished sequence as U+FFFD); the decoder starts afresh."""
        return self._utf8.decode(b"", final=True)


# ---------------------------------------------------------------------------------------- interface


class Tokenizer(ABC):
    """Text <-> ids for one model, with control tokens kept apart from text (see the module doc)."""

    vocab_size: int
    special_tokens: Mapping[str, int]
    bos_id: int | None
    eos_ids: tuple[int, ...]
    # every id's bytes (None for an id the vocabulary skips); filled in by the subclasses
    _bytes: list[bytes | None]

    def __init__(
        self,
        *,
        vocab_size: int,
        special_tokens: Mapping[str, int],
        bos_id: int | None,
        eos_ids: Iterable[int],
    ) -> None:
        self.vocab_size = vocab_size
        self.special_tokens = MappingProxyType(dict(special_tokens))
        self.bos_id = bos_id
        self.eos_ids = tuple(dict.fromkeys(eos_ids))
        self._special_ids = frozenset(self.special_tokens.values())
        self._longest_special = max(map(len, self.special_tokens), default=0)
        self._special_pattern: re.Pattern[str] | None = (
            _literal_union(self.special_tokens) if self.special_tokens else None
        )

    # -- encoding
    @abstractmethod
    def encode(self, text: str) -> list[int]:
        """Ordinary text: the TEXT of a special token (e.g. '<|tool_call_begin|>') is encoded as
        ordinary characters, never as the control token."""

    def encode_prompt(self, text: str, untrusted: Sequence[tuple[int, int]] = ()) -> list[int]:
        """A rendered prompt: special-token texts OUTSIDE the untrusted [start, end) character spans
        become control tokens; everything between control tokens (template text and untrusted text
        together) is encoded as one ordinary chunk, so a benign prompt tokenizes exactly as the
        reference tokenizer would encode the whole string with all specials allowed.

        A special-token text that overlaps an untrusted span even by one character stays text.
        When no special-token text touches an untrusted span, the reference tokenizer's own
        all-specials encoding is used as is."""
        starts, ends = _merge_spans(untrusted, len(text))
        pattern = self._special_pattern
        if pattern is None or not self._touches_special(text, starts, ends):
            return self._encode_trusted(text)
        accepted: list[tuple[int, int]] = []
        refused = False
        pos = 0
        while (m := pattern.search(text, pos)) is not None:
            s, e = m.span()
            # the first untrusted span that ends after s; it overlaps [s, e) iff it starts < e
            i = bisect.bisect_right(ends, s)
            if i < len(starts) and starts[i] < e:
                refused = True
                pos = s + 1
                continue
            accepted.append((s, e))
            pos = e
        if not refused:
            return self._encode_trusted(text)
        return self._encode_between(text, accepted)

    def _touches_special(self, text: str, starts: list[int], ends: list[int]) -> bool:
        """Whether any occurrence of a special-token text overlaps an untrusted span. Only the
        text around each span is searched, so a benign prompt costs one pass over its untrusted
        parts before the reference encoding."""
        pattern = self._special_pattern
        if pattern is None:
            return False
        reach = self._longest_special - 1
        for start, end in zip(starts, ends, strict=True):
            pos, stop = max(0, start - reach), min(len(text), end + reach)
            while (m := pattern.search(text, pos, stop)) is not None:
                if m.start() < end and start < m.end():
                    return True
                pos = m.start() + 1  # occurrences may overlap one another
        return False

    def _encode_trusted(self, text: str) -> list[int]:
        """Every special-token text in ``text`` as its control token, the rest as ordinary text:
        the reference tokenizer's encoding with all specials allowed."""
        pattern = self._special_pattern
        if pattern is None:
            return self.encode(text)
        return self._encode_between(text, [m.span() for m in pattern.finditer(text)])

    def _encode_between(self, text: str, controls: Sequence[tuple[int, int]]) -> list[int]:
        """Control tokens at the given spans; each stretch between them encoded as ordinary text."""
        specials = self.special_tokens
        ids: list[int] = []
        pending = 0  # start of the ordinary text not yet encoded
        for s, e in controls:
            if s > pending:
                ids.extend(self.encode(text[pending:s]))
            ids.append(specials[text[s:e]])
            pending = e
        if pending < len(text):
            ids.extend(self.encode(text[pending:]))
        return ids

    # -- specials
    def special_id(self, text: str) -> int:
        """The id of a special token, by its text."""
        try:
            return self.special_tokens[text]
        except KeyError:
            raise UnknownTokenError(
                f"this tokenizer has no special token {text!r} "
                f"({len(self.special_tokens)} special tokens)"
            ) from None

    def is_special(self, token_id: int) -> bool:
        """Whether the id is a control (special or added) token rather than text."""
        return token_id in self._special_ids

    # -- decoding
    @abstractmethod
    def decode(self, ids: Sequence[int]) -> str:
        """Specials rendered as their text; bytes that are not valid UTF-8 become U+FFFD."""

    def token_bytes(self, token_id: int) -> bytes:
        """Raw bytes of one token (a special token: its UTF-8 text)."""
        if token_id < 0:
            raise self._unknown_id(token_id)
        try:
            token = self._bytes[token_id]
        except IndexError:
            raise self._unknown_id(token_id) from None
        if token is None:
            raise self._unknown_id(token_id)
        return token

    def _known(self, token_id: object) -> bool:
        return (
            isinstance(token_id, int)
            and 0 <= token_id < self.vocab_size
            and self._bytes[token_id] is not None
        )

    def stream_decoder(self) -> StreamDecoder:
        """A fresh incremental decoder for one generated sequence."""
        return StreamDecoder(self.token_bytes)

    def _unknown_id(self, token_id: object) -> UnknownTokenError:
        return UnknownTokenError(
            f"token id {token_id!r} is not in this vocabulary (ids 0..{self.vocab_size - 1})"
        )


def _literal_union(words: Iterable[str]) -> re.Pattern[str]:
    """A regex matching any of the words, built as a trie: hundreds of special tokens share a few
    prefixes, and a flat alternation would try every one of them at each '<' of a long prompt.
    Where one word extends another the longer is tried first, so matches are leftmost-longest
    like the reference tokenizers'."""
    trie: dict[str, Any] = {}
    for word in words:
        node = trie
        for ch in word:
            node = node.setdefault(ch, {})
        node[""] = True  # a word ends here

    def build(node: dict[str, Any]) -> str:
        alternatives = [re.escape(ch) + build(node[ch]) for ch in sorted(node) if ch]
        if not alternatives:
            return ""
        if len(alternatives) == 1 and "" not in node:
            return alternatives[0]
        return "(?:" + "|".join(alternatives) + ("|" if "" in node else "") + ")"

    return re.compile(build(trie))


def _merge_spans(spans: Sequence[tuple[int, int]], length: int) -> tuple[list[int], list[int]]:
    """Sorted, disjoint [start, end) spans as two parallel lists (empty spans dropped)."""
    if not spans:
        return [], []
    clean: list[tuple[int, int]] = []
    for span in spans:
        start, end = int(span[0]), int(span[1])
        if not 0 <= start <= end <= length:
            raise ValueError(
                f"untrusted span {span!r} is not a [start, end) range inside the text "
                f"(length {length})"
            )
        if start < end:
            clean.append((start, end))
    clean.sort()
    starts: list[int] = []
    ends: list[int] = []
    for start, end in clean:
        if ends and start <= ends[-1]:
            ends[-1] = max(ends[-1], end)
        else:
            starts.append(start)
            ends.append(end)
    return starts, ends


# ---------------------------------------------------------------------------------------- folder files


def read_json(path: Path, *, required: bool) -> dict[str, Any]:
    """A JSON object file of a tokenizer folder (``{}`` when it is absent and not required)."""
    if not path.is_file():
        if required:
            raise TokenizerError(f"{path} is missing")
        return {}
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise TokenizerError(f"cannot read {path}: {exc}") from exc
    if not isinstance(data, dict):
        raise TokenizerError(f"{path}: expected a JSON object")
    return data


def _token_text(value: Any) -> str | None:
    """A token as tokenizer_config.json writes it: a string or an AddedToken dict."""
    if isinstance(value, str):
        return value
    if isinstance(value, Mapping) and isinstance(value.get("content"), str):
        return str(value["content"])
    return None


def bos_eos(
    folder: Path, config: Mapping[str, Any], vocab: Mapping[str, int]
) -> tuple[int | None, tuple[int, ...]]:
    """bos from tokenizer_config.json; eos from there plus generation_config.json's ids."""
    bos_text = _token_text(config.get("bos_token"))
    bos_id = vocab.get(bos_text) if bos_text is not None else None
    eos: list[int] = []
    eos_text = _token_text(config.get("eos_token"))
    if eos_text is not None and eos_text in vocab:
        eos.append(vocab[eos_text])
    generation = read_json(folder / "generation_config.json", required=False)
    gen_eos = generation.get("eos_token_id")
    if isinstance(gen_eos, int):
        eos.append(gen_eos)
    elif isinstance(gen_eos, list):
        eos.extend(int(i) for i in gen_eos if isinstance(i, int))
    return bos_id, tuple(dict.fromkeys(eos))
