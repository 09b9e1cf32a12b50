"""Tokenizers of the local models: Kimi K2's tiktoken vocabulary and DeepSeek-V3's ``tokenizer.json``.

Both sit behind one :class:`Tokenizer` interface whose first concern is that *text stays text*.
A chat template renders control tokens (``<|im_end|>``, ``<|tool_call_begin|>``,
``<｜tool▁sep｜>`` ...) as their literal text, and the reference tokenizers turn that text into the
control token wherever it occurs -- including inside a user message, a tool result or a document,
which lets such content forge turns and tool calls. Here:

* :meth:`Tokenizer.encode` treats its input as ordinary text: the text of a special token becomes
  ordinary tokens, never the control token;
* :meth:`Tokenizer.encode_prompt` takes a rendered prompt plus the character spans that came from
  untrusted sources; special-token text outside those spans becomes control tokens, and whatever
  lies between two control tokens is encoded as one ordinary chunk, so a benign prompt gets exactly
  the ids the reference tokenizer would give it.

Decoding renders special tokens as their text (the tool-call parser needs the markers), and
:class:`StreamDecoder` turns ids into text deltas one token at a time without ever splitting a
UTF-8 sequence that a byte-level vocabulary spreads over several tokens.
"""

from __future__ import annotations

import bisect
import codecs
import json
import os
import re
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from types import MappingProxyType
from typing import Any

import tiktoken
import tokenizers

from agent_runtime.errors import ConfigError

__all__ = [
    "BYTE_LEVEL_CHARS",
    "KIMI_NUM_SPECIAL_TOKENS",
    "KIMI_PATTERN",
    "KIMI_SPECIAL_TOKENS",
    "HFTokenizer",
    "KimiTokenizer",
    "StreamDecoder",
    "Tokenizer",
    "TokenizerError",
    "UnknownTokenError",
    "load_tokenizer",
]

# ---------------------------------------------------------------------------------------- facts

#: Kimi K2's named special tokens, as offsets from the end of the base vocabulary (163584 in the
#: real model, so ``<|im_end|>`` is 163586). Offsets without a name here are reserved tokens.
KIMI_SPECIAL_TOKENS: dict[str, int] = {
    "[BOS]": 0,
    "[EOS]": 1,
    "<|im_end|>": 2,
    "<|im_user|>": 3,
    "<|im_assistant|>": 4,
    "<|start_header_id|>": 6,
    "<|end_header_id|>": 7,
    "[EOT]": 9,
    "<|im_system|>": 10,
    "<|tool_calls_section_begin|>": 11,
    "<|tool_calls_section_end|>": 12,
    "<|tool_call_begin|>": 13,
    "<|tool_call_argument_begin|>": 14,
    "<|tool_call_end|>": 15,
    "<|im_middle|>": 17,
    "<|media_begin|>": 18,
    "<|media_content|>": 19,
    "<|media_end|>": 20,
    "<|media_pad|>": 21,
    "<think>": 22,
    "</think>": 23,
    "[UNK]": 254,
    "[PAD]": 255,
}

#: How many special ids follow Kimi's base vocabulary (163584 + 256 = 163840 ids in all).
KIMI_NUM_SPECIAL_TOKENS = 256

#: Kimi's pre-tokenisation split pattern in tiktoken's regex syntax (``&&`` intersects classes:
#: letters other than Han characters). Han runs are split off first.
KIMI_PATTERN = "|".join(
    [
        r"[\p{Han}]+",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*"
        r"[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"[^\r\n\p{L}\p{N}]?[\p{Lu}\p{Lt}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]+"
        r"[\p{Ll}\p{Lm}\p{Lo}\p{M}&&[^\p{Han}]]*(?i:'s|'t|'re|'ve|'m|'ll|'d)?",
        r"\p{N}{1,3}",
        r" ?[^\s\p{L}\p{N}]+[\r\n]*",
        r"\s*[\r\n]+",
        r"\s+(?!\S)",
        r"\s+",
    ]
)


def _byte_level_chars() -> tuple[str, ...]:
    """The printable stand-in of every byte in byte-level BPE vocabularies (GPT-2's convention,
    used by ``tokenizers``' ByteLevel): printable Latin-1 bytes stand for themselves, the others
    take the code points from 256 on, in byte order."""
    printable = set(range(ord("!"), ord("~") + 1))
    printable |= set(range(ord("¡"), ord("¬") + 1))
    printable |= set(range(ord("®"), ord("ÿ") + 1))
    chars: list[str] = []
    extra = 0
    for b in range(256):
        if b in printable:
            chars.append(chr(b))
        else:
            chars.append(chr(256 + extra))
            extra += 1
    return tuple(chars)


#: ``BYTE_LEVEL_CHARS[b]`` is the character that stands for byte ``b`` in a byte-level vocabulary.
BYTE_LEVEL_CHARS: tuple[str, ...] = _byte_level_chars()
_BYTE_OF_CHAR: dict[str, int] = {c: b for b, c in enumerate(BYTE_LEVEL_CHARS)}

# The reference Kimi tokenizer encodes at most this many characters per tiktoken call ...
_MAX_CHUNK_CHARS = 400_000
# ... and cuts runs of whitespace or of non-whitespace longer than this, so tiktoken's regex never
# sees a pathological piece.
_MAX_RUN_CHARS = 25_000
# A run longer than _MAX_RUN_CHARS always covers a whole aligned block of half that size, so
# checking blocks finds every such run in a few C-speed searches per chunk.
_RUN_PROBE_BLOCK = _MAX_RUN_CHARS // 2
_SPACE = re.compile(r"\s")  # Python's \s is exactly str.isspace()
_NON_SPACE = re.compile(r"\S")
_RUNS = re.compile(r"\s+|\S+")


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


# ---------------------------------------------------------------------------------------- Kimi


class KimiTokenizer(Tokenizer):
    """Kimi K2's tokenizer: a tiktoken BPE (``tiktoken.model``) plus the special tokens named in
    ``tokenizer_config.json``, split with :data:`KIMI_PATTERN` (or the config's ``pat_str``, which
    small models trained here set to keep values copyable), long inputs chunked the way the
    reference tokenizer chunks them.

    ``encoding`` is public so that grammar engines can build their vocabulary from it; calling its
    ``encode`` with specials allowed reopens the injection hole this class closes.
    """

    encoding: tiktoken.Encoding

    def __init__(
        self,
        mergeable_ranks: Mapping[bytes, int],
        special_tokens: Mapping[str, int],
        *,
        bos_id: int | None = None,
        eos_ids: Iterable[int] = (),
        name: str = "kimi",
        pattern: str = KIMI_PATTERN,
    ) -> None:
        ranks = dict(mergeable_ranks)
        n_base = len(ranks)
        if sorted(ranks.values()) != list(range(n_base)):
            raise TokenizerError(f"{name}: BPE ranks must be exactly 0..{n_base - 1}")
        missing = [b for b in range(256) if bytes([b]) not in ranks]
        if missing:
            raise TokenizerError(
                f"{name}: the vocabulary lacks {len(missing)} single bytes "
                f"(e.g. {bytes([missing[0]])!r}); some texts could not be encoded"
            )
        for text, token_id in special_tokens.items():
            if token_id < n_base:
                raise TokenizerError(
                    f"{name}: special token {text!r} has id {token_id}, inside the base "
                    f"vocabulary (0..{n_base - 1})"
                )
        vocab_size = max([n_base - 1, *special_tokens.values()]) + 1
        super().__init__(
            vocab_size=vocab_size, special_tokens=special_tokens, bos_id=bos_id, eos_ids=eos_ids
        )
        self.encoding = tiktoken.Encoding(
            name, pat_str=pattern, mergeable_ranks=ranks, special_tokens=dict(special_tokens)
        )
        self.pattern = pattern
        self._encode_ordinary = self.encoding.encode_ordinary
        self._all_specials = frozenset(special_tokens)
        table: list[bytes | None] = [None] * vocab_size
        for token, rank in ranks.items():
            table[rank] = token
        for text, token_id in special_tokens.items():
            table[token_id] = text.encode("utf-8")
        self._bytes = table

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str]) -> KimiTokenizer:
        """Load ``tiktoken.model`` and ``tokenizer_config.json`` (its ``added_tokens_decoder``
        names the special ids; an id it does not name is ``<|reserved_token_{id}|>``)."""
        folder = Path(path)
        model_file = folder / "tiktoken.model"
        ranks = _read_tiktoken_model(model_file)
        n_base = len(ranks)
        config = _read_json(folder / "tokenizer_config.json", required=False)
        named: dict[int, str] = {}
        for key, entry in dict(config.get("added_tokens_decoder") or {}).items():
            content = entry.get("content") if isinstance(entry, Mapping) else entry
            if not isinstance(content, str):
                raise TokenizerError(
                    f"{folder / 'tokenizer_config.json'}: added token {key} has no text content"
                )
            try:
                named[int(key)] = content
            except ValueError:
                raise TokenizerError(
                    f"{folder / 'tokenizer_config.json'}: added token id {key!r} is not a number"
                ) from None
        last = max([n_base + KIMI_NUM_SPECIAL_TOKENS - 1, *named])
        specials: dict[str, int] = {}
        for token_id in range(n_base, last + 1):
            text = named.get(token_id, f"<|reserved_token_{token_id}|>")
            if text in specials:
                raise TokenizerError(
                    f"{folder / 'tokenizer_config.json'}: special token {text!r} is named twice "
                    f"(ids {specials[text]} and {token_id})"
                )
            specials[text] = token_id
        bos_id, eos_ids = _bos_eos(folder, config, specials)
        pattern = config.get("pat_str", KIMI_PATTERN)
        if not isinstance(pattern, str) or not pattern:
            raise TokenizerError(
                f"{folder / 'tokenizer_config.json'}: pat_str must be a non-empty regex string"
            )
        try:
            return cls(
                ranks,
                specials,
                bos_id=bos_id,
                eos_ids=eos_ids,
                name=f"kimi:{folder.name}",
                pattern=pattern,
            )
        except ValueError as exc:  # tiktoken refuses a pattern it cannot compile
            raise TokenizerError(
                f"{folder / 'tokenizer_config.json'}: pat_str is not a usable split pattern ({exc})"
            ) from None

    def encode(self, text: str) -> list[int]:
        if len(text) <= _MAX_RUN_CHARS:  # no chunking possible: straight to tiktoken
            return self._encode_ordinary(text)
        return self._encode_long(text)

    def _encode_long(self, text: str) -> list[int]:
        ids: list[int] = []
        encode = self._encode_ordinary
        for piece in _reference_pieces(text):
            ids.extend(encode(piece))
        return ids

    def _encode_trusted(self, text: str) -> list[int]:
        # tiktoken finds the specials itself; chunked as the reference chunks.
        allowed = self._all_specials
        if len(text) <= _MAX_RUN_CHARS:
            return self.encoding.encode(text, allowed_special=allowed, disallowed_special=())
        ids: list[int] = []
        for piece in _reference_pieces(text):
            ids.extend(self.encoding.encode(piece, allowed_special=allowed, disallowed_special=()))
        return ids

    def decode(self, ids: Sequence[int]) -> str:
        try:
            return self.encoding.decode(ids)
        except (KeyError, OverflowError, TypeError):
            bad = next((i for i in ids if not self._known(i)), None)
            raise self._unknown_id(bad) from None


def _reference_pieces(text: str) -> Iterator[str]:
    """The reference tokenizer's chunking: 400k-character chunks, each cut inside runs of
    whitespace / non-whitespace longer than 25k characters."""
    for begin in range(0, len(text), _MAX_CHUNK_CHARS):
        chunk = text[begin : begin + _MAX_CHUNK_CHARS]
        prev = 0
        for cut in _long_run_cuts(chunk):
            yield chunk[prev:cut]
            prev = cut
        yield chunk[prev:]


def _long_run_cuts(chunk: str) -> list[int]:
    """Where the reference tokenizer cuts a chunk: every 25k characters into a run of whitespace
    or of non-whitespace longer than 25k (the run count restarting at each cut)."""
    n = len(chunk)
    if n <= _MAX_RUN_CHARS:
        return []
    for block in range(0, n - _RUN_PROBE_BLOCK + 1, _RUN_PROBE_BLOCK):
        end = block + _RUN_PROBE_BLOCK
        if _SPACE.search(chunk, block, end) is None or _NON_SPACE.search(chunk, block, end) is None:
            break
    else:
        return []  # every block mixes both classes: no long run anywhere
    cuts: list[int] = []
    for m in _RUNS.finditer(chunk):
        start, end = m.span()
        if end - start > _MAX_RUN_CHARS:
            cuts.extend(range(start + _MAX_RUN_CHARS, end, _MAX_RUN_CHARS))
    return cuts


def _read_tiktoken_model(path: Path) -> dict[bytes, int]:
    """``tiktoken.model``: one ``base64(token) rank`` pair per line."""
    import base64
    import binascii

    try:
        raw = path.read_bytes()
    except OSError as exc:
        raise TokenizerError(f"cannot read {path}: {exc}") from exc
    ranks: dict[bytes, int] = {}
    for lineno, line in enumerate(raw.splitlines(), 1):
        if not line.strip():
            continue
        parts = line.split()
        try:
            if len(parts) != 2:
                raise ValueError("expected 'base64token rank'")
            token = base64.b64decode(parts[0], validate=True)
            rank = int(parts[1])
        except (ValueError, binascii.Error) as exc:
            raise TokenizerError(f"{path}:{lineno}: not a tiktoken BPE line ({exc})") from None
        if token in ranks:
            raise TokenizerError(f"{path}:{lineno}: token {token!r} appears twice")
        ranks[token] = rank
    if not ranks:
        raise TokenizerError(f"{path}: no tokens")
    return ranks


# ---------------------------------------------------------------------------------------- HF / DeepSeek


class HFTokenizer(Tokenizer):
    """A byte-level BPE ``tokenizer.json`` through ``tokenizers`` (DeepSeek-V3's layout).

    Every added token counts as a control token, whether ``tokenizer.json`` flags it special or
    not: DeepSeek marks ``<｜User｜>``, ``<｜Assistant｜>`` and the tool markers as non-special, and
    ``tokenizers`` would match those in any text. Ordinary text therefore goes through a copy of
    the tokenizer that has no added tokens at all; ``backend`` is the tokenizer as loaded.
    """

    backend: tokenizers.Tokenizer

    def __init__(
        self,
        backend: tokenizers.Tokenizer,
        *,
        bos_id: int | None = None,
        eos_ids: Iterable[int] = (),
        name: str = "tokenizer.json",
    ) -> None:
        spec = json.loads(backend.to_str())
        if not _is_byte_level(spec.get("decoder")):
            raise TokenizerError(
                f"{name}: only byte-level BPE tokenizers are supported "
                f"(decoder is {(spec.get('decoder') or {}).get('type')!r})"
            )
        added = {str(t["content"]): int(t["id"]) for t in spec.get("added_tokens") or ()}
        vocab = backend.get_vocab(with_added_tokens=False)
        vocab_size = max([*vocab.values(), *added.values()]) + 1
        super().__init__(
            vocab_size=vocab_size, special_tokens=added, bos_id=bos_id, eos_ids=eos_ids
        )
        self.backend = backend
        spec["added_tokens"] = []
        spec["post_processor"] = None
        self._plain = tokenizers.Tokenizer.from_str(json.dumps(spec))
        table: list[bytes | None] = [None] * vocab_size
        for piece, token_id in vocab.items():
            table[token_id] = _byte_level_bytes(piece)
        for text, token_id in added.items():
            table[token_id] = text.encode("utf-8")
        self._bytes = table

    @classmethod
    def from_folder(cls, path: str | os.PathLike[str]) -> HFTokenizer:
        """Load ``tokenizer.json``; bos/eos come from ``tokenizer_config.json`` and
        ``generation_config.json`` when present."""
        folder = Path(path)
        file = folder / "tokenizer.json"
        try:
            backend = tokenizers.Tokenizer.from_file(str(file))
        except Exception as exc:  # tokenizers raises plain Exception for bad files
            raise TokenizerError(f"cannot load {file}: {exc}") from exc
        config = _read_json(folder / "tokenizer_config.json", required=False)
        vocab = backend.get_vocab(with_added_tokens=True)
        bos_id, eos_ids = _bos_eos(folder, config, vocab)
        return cls(backend, bos_id=bos_id, eos_ids=eos_ids, name=str(file))

    def encode(self, text: str) -> list[int]:
        try:
            return self._plain.encode(text, add_special_tokens=False).ids
        except (UnicodeEncodeError, TypeError):
            if not isinstance(text, str):
                raise
            # lone surrogates (tokenizers refuses them): replace them, as tiktoken does
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self._plain.encode(text, add_special_tokens=False).ids

    def _encode_trusted(self, text: str) -> list[int]:
        try:
            return self.backend.encode(text, add_special_tokens=False).ids
        except (UnicodeEncodeError, TypeError):
            if not isinstance(text, str):
                raise
            text = text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
            return self.backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        table = self._bytes
        try:
            parts = [table[i] if i >= 0 else None for i in ids]
            return b"".join(parts).decode("utf-8", "replace")  # type: ignore[arg-type]
        except (IndexError, TypeError):
            bad = next((i for i in ids if not self._known(i)), None)
            raise self._unknown_id(bad) from None


def _is_byte_level(decoder: Any) -> bool:
    if not isinstance(decoder, Mapping):
        return False
    if decoder.get("type") == "ByteLevel":
        return True
    if decoder.get("type") == "Sequence":
        return any(_is_byte_level(d) for d in decoder.get("decoders") or ())
    return False


def _byte_level_bytes(piece: str) -> bytes:
    """A byte-level vocabulary entry back to its raw bytes (a character outside the byte alphabet,
    which only unreachable entries have, stands for its own UTF-8)."""
    out = bytearray()
    for ch in piece:
        b = _BYTE_OF_CHAR.get(ch)
        if b is None:
            out += ch.encode("utf-8")
        else:
            out.append(b)
    return bytes(out)


# ---------------------------------------------------------------------------------------- folders


def load_tokenizer(path: str | os.PathLike[str]) -> Tokenizer:
    """The tokenizer of a model folder, picked by the files present: ``tiktoken.model`` (Kimi)
    or ``tokenizer.json`` (DeepSeek and other byte-level BPEs)."""
    folder = Path(path)
    if folder.is_file():
        folder = folder.parent
    if (folder / "tiktoken.model").is_file():
        return KimiTokenizer.from_folder(folder)
    if (folder / "tokenizer.json").is_file():
        return HFTokenizer.from_folder(folder)
    raise TokenizerError(
        f"{folder}: no tokenizer found (expected tiktoken.model with tokenizer_config.json, "
        "or tokenizer.json)"
    )


def _read_json(path: Path, *, required: bool) -> dict[str, Any]:
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


def _bos_eos(
    folder: Path, config: Mapping[str, Any], vocab: Mapping[str, int]
) -> tuple[int | None, tuple[int, ...]]:
    """bos from tokenizer_config.json; eos from there plus generation_config.json's ids."""
    bos_text = _token_text(config.get("bos_token"))
    bos_id = vocab.get(bos_text) if bos_text is not None else None
    eos: list[int] = []
    eos_text = _token_text(config.get("eos_token"))
    if eos_text is not None and eos_text in vocab:
        eos.append(vocab[eos_text])
    generation = _read_json(folder / "generation_config.json", required=False)
    gen_eos = generation.get("eos_token_id")
    if isinstance(gen_eos, int):
        eos.append(gen_eos)
    elif isinstance(gen_eos, list):
        eos.extend(int(i) for i in gen_eos if isinstance(i, int))
    return bos_id, tuple(dict.fromkeys(eos))
