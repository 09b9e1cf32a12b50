"""Byte-level BPE tokenizers from a ``tokenizer.json`` (DeepSeek-V3's layout), via ``tokenizers``.

:class:`HFTokenizer` keeps every added token a control token and encodes ordinary text through a
copy of the tokenizer without them; :data:`BYTE_LEVEL_CHARS` is the byte alphabet of such
vocabularies (the training of small tokenizers uses it too). The shared behaviour (untrusted
spans, streaming) is :class:`~agent_runtime.model.tokenizer_base.Tokenizer`'s.
"""

from __future__ import annotations

import json
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import tokenizers

from .tokenizer_base import Tokenizer, TokenizerError, bos_eos, read_json

__all__ = [
    "BYTE_LEVEL_CHARS",
    "HFTokenizer",
]


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
        config = read_json(folder / "tokenizer_config.json", required=False)
        vocab = backend.get_vocab(with_added_tokens=True)
        bos_id, eos_ids = bos_eos(folder, config, vocab)
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
