"""Kimi K2's tokenizer: a tiktoken BPE vocabulary (``tiktoken.model``) and its special tokens.

The facts of the format (:data:`KIMI_SPECIAL_TOKENS`, :data:`KIMI_PATTERN`), the
:class:`KimiTokenizer` that reads a Kimi folder, and the reference tokenizer's chunking of long
inputs, reproduced so long prompts get the reference ids. The shared behaviour (untrusted spans,
streaming) is :class:`~agent_runtime.model.tokenizer_base.Tokenizer`'s.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

import tiktoken

from .tokenizer_base import Tokenizer, TokenizerError, bos_eos, read_json

__all__ = [
    "KIMI_NUM_SPECIAL_TOKENS",
    "KIMI_PATTERN",
    "KIMI_SPECIAL_TOKENS",
    "KimiTokenizer",
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


# ---------------------------------------------------------------------------------------- tokenizer


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
        config = read_json(folder / "tokenizer_config.json", required=False)
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
        bos_id, eos_ids = bos_eos(folder, config, specials)
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
