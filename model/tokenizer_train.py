"""Training small tokenizers in the real models' folder layouts.

The tests (and later the project's own training script) need a Kimi K2 or DeepSeek-V3 tokenizer
without downloading one: these functions train a small byte-level BPE with ``tokenizers`` and write
it the way the real checkpoints ship it, with the real special-token tables placed after the base
vocabulary. The output depends only on the texts and the settings (same texts, same files).
"""

from __future__ import annotations

import base64
import json
import os
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, Literal

import tokenizers
from tokenizers import decoders, models, pre_tokenizers, processors, trainers

from .tokenizer import (
    BYTE_LEVEL_CHARS,
    KIMI_NUM_SPECIAL_TOKENS,
    KIMI_PATTERN,
    KIMI_SPECIAL_TOKENS,
)

__all__ = [
    "DEEPSEEK_ADDED_TOKENS",
    "DEEPSEEK_BOS",
    "DEEPSEEK_EOS",
    "DEEPSEEK_PAD",
    "train_deepseek_tokenizer",
    "train_kimi_tokenizer",
]

DEEPSEEK_BOS = "<｜begin▁of▁sentence｜>"
DEEPSEEK_EOS = "<｜end▁of▁sentence｜>"
DEEPSEEK_PAD = "<｜▁pad▁｜>"

#: The tokens DeepSeek-V3 adds after its base vocabulary, in id order, with the ``special`` flag its
#: ``tokenizer.json`` gives them (the role and tool markers are *not* flagged special there).
DEEPSEEK_ADDED_TOKENS: tuple[tuple[str, bool], ...] = (
    ("<think>", False),
    ("</think>", False),
    ("<｜fim▁hole｜>", False),
    ("<｜fim▁begin｜>", False),
    ("<｜fim▁end｜>", False),
    ("<｜User｜>", False),
    ("<｜Assistant｜>", False),
    ("<|EOT|>", True),
    ("<｜tool▁calls▁begin｜>", False),
    ("<｜tool▁calls▁end｜>", False),
    ("<｜tool▁call▁begin｜>", False),
    ("<｜tool▁call▁end｜>", False),
    ("<｜tool▁outputs▁begin｜>", False),
    ("<｜tool▁outputs▁end｜>", False),
    ("<｜tool▁output▁begin｜>", False),
    ("<｜tool▁output▁end｜>", False),
    ("<｜tool▁sep｜>", False),
)

# DeepSeek-V3's pre-tokenisation: digits in threes, CJK runs, then words/punctuation/whitespace.
_DEEPSEEK_SPLITS = (
    r"\p{N}{1,3}",
    r"[一-龥぀-ゟ゠-ヿ]+",
    r"[!\"#$%&'()*+,\-./:;<=>?@\[\\\]^_`{|}~][A-Za-z]+|[^\r\n\p{L}\p{P}\p{S}]?[\p{L}\p{M}]+"
    r"| ?[\p{P}\p{S}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+",
)

_VERY_LARGE_LENGTH = 1000000000000000019884624838656  # transformers' "no limit" value


def train_kimi_tokenizer(
    texts: Iterable[str],
    out_dir: str | os.PathLike[str],
    *,
    vocab_size: int = 512,
    min_frequency: int = 2,
    pattern: str | None = None,
) -> Path:
    """Trains a small byte-level BPE (with `tokenizers`), writes `tiktoken.model` (base64 token,
    space, rank per line; ranks 0..N-1 incl. all 256 single bytes) and `tokenizer_config.json`
    with the real Kimi special-token table placed from N on (added_tokens_decoder, bos/eos,
    model_max_length...). The result loads with KimiTokenizer.from_folder; vocab_size of the whole
    = N + 256.

    ``vocab_size`` bounds N (the base vocabulary, the 256 single bytes included); a small corpus
    may yield fewer merges. Pre-tokenisation uses Kimi's own split pattern, so the merges are the
    ones tiktoken can reach; ``pattern`` replaces it (and is written as ``pat_str``, which
    :class:`KimiTokenizer` then splits with)."""
    if vocab_size < 256:
        raise ValueError(f"vocab_size must be at least 256 (every single byte), got {vocab_size}")
    out = Path(out_dir)
    trained = _train_byte_level(
        texts,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        splits=(pattern or KIMI_PATTERN,),
        leading_specials=(),
    )
    # Ranks: the 256 single bytes first (in byte order), then every merged token in the order the
    # trainer created it, which is the merge priority tiktoken applies.
    merged = sorted(
        (token_id, piece)
        for piece, token_id in trained.get_vocab(with_added_tokens=False).items()
        if len(piece) > 1
    )
    tokens = [bytes([b]) for b in range(256)]
    seen = set(tokens)
    for _, piece in merged:
        raw = bytes(_BYTE_OF_CHAR[ch] for ch in piece)
        if raw not in seen:
            seen.add(raw)
            tokens.append(raw)
    n_base = len(tokens)
    out.mkdir(parents=True, exist_ok=True)
    lines = [f"{base64.b64encode(tok).decode('ascii')} {rank}\n" for rank, tok in enumerate(tokens)]
    (out / "tiktoken.model").write_text("".join(lines), encoding="ascii")

    decoder: dict[str, dict[str, Any]] = {}
    for name, offset in sorted(KIMI_SPECIAL_TOKENS.items(), key=lambda kv: kv[1]):
        assert offset < KIMI_NUM_SPECIAL_TOKENS
        decoder[str(n_base + offset)] = _added_token_entry(name, special=True, normalized=False)
    standard = {"[BOS]", "[EOS]", "[UNK]", "[PAD]"}
    config = {
        "added_tokens_decoder": decoder,
        "additional_special_tokens": [n for n in KIMI_SPECIAL_TOKENS if n not in standard],
        "bos_token": "[BOS]",
        "eos_token": "[EOS]",
        "unk_token": "[UNK]",
        "pad_token": "[PAD]",
        "clean_up_tokenization_spaces": False,
        "model_max_length": _VERY_LARGE_LENGTH,
        "tokenizer_class": "TikTokenTokenizer",
    }
    if pattern is not None:
        config["pat_str"] = pattern
    _write_json(out / "tokenizer_config.json", config)
    return out


def train_deepseek_tokenizer(
    texts: Iterable[str],
    out_dir: str | os.PathLike[str],
    *,
    vocab_size: int = 512,
    version: Literal["v3", "v3.1"] = "v3",
    min_frequency: int = 2,
) -> Path:
    """tokenizer.json (+ tokenizer_config.json) with DeepSeek's special tokens (<｜begin▁of▁sentence｜>,
    <｜end▁of▁sentence｜>, <｜User｜>, <｜Assistant｜>, <｜tool▁calls▁begin｜> ... <｜tool▁sep｜>,
    <｜tool▁output▁begin｜>/<｜tool▁output▁end｜>, <think>, </think>) as added special tokens.

    As in the real files, bos/eos/pad take ids 0, 1, 2 of the base vocabulary (``vocab_size``
    bounds it) and the other added tokens (:data:`DEEPSEEK_ADDED_TOKENS`) follow it. ``version``
    picks the release whose table is written; V3 and V3.1 share the tokens listed here."""
    if version not in ("v3", "v3.1"):
        raise ValueError(f"version must be 'v3' or 'v3.1', got {version!r}")
    if vocab_size < 259:
        raise ValueError(f"vocab_size must be at least 259 (bytes + bos/eos/pad), got {vocab_size}")
    out = Path(out_dir)
    tok = _train_byte_level(
        texts,
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        splits=_DEEPSEEK_SPLITS,
        leading_specials=(DEEPSEEK_BOS, DEEPSEEK_EOS, DEEPSEEK_PAD),
    )
    for content, special in DEEPSEEK_ADDED_TOKENS:
        token = tokenizers.AddedToken(content, special=special, normalized=True)
        if special:
            tok.add_special_tokens([token])
        else:
            tok.add_tokens([token])
    bos_id = tok.token_to_id(DEEPSEEK_BOS)
    tok.post_processor = processors.TemplateProcessing(
        single=f"{DEEPSEEK_BOS} $A",
        pair=f"{DEEPSEEK_BOS} $A {DEEPSEEK_BOS} $B",
        special_tokens=[(DEEPSEEK_BOS, bos_id)],
    )
    out.mkdir(parents=True, exist_ok=True)
    spec = json.loads(tok.to_str())
    _write_json(out / "tokenizer.json", spec)

    def added(content: str) -> dict[str, Any]:
        return {
            "__type": "AddedToken",
            **_added_token_entry(content, special=True, normalized=True),
        }

    config = {
        "add_bos_token": True,
        "add_eos_token": False,
        "bos_token": added(DEEPSEEK_BOS),
        "eos_token": added(DEEPSEEK_EOS),
        "pad_token": added(DEEPSEEK_EOS),
        "unk_token": None,
        "clean_up_tokenization_spaces": False,
        "legacy": True,
        "model_max_length": 131072,
        "sp_model_kwargs": {},
        "tokenizer_class": "LlamaTokenizerFast",
    }
    _write_json(out / "tokenizer_config.json", config)
    return out


# ---------------------------------------------------------------------------------------- helpers

_BYTE_OF_CHAR: dict[str, int] = {c: b for b, c in enumerate(BYTE_LEVEL_CHARS)}


def _train_byte_level(
    texts: Iterable[str],
    *,
    vocab_size: int,
    min_frequency: int,
    splits: tuple[str, ...],
    leading_specials: tuple[str, ...],
) -> tokenizers.Tokenizer:
    """A byte-level BPE over the given split patterns; every single byte is in the vocabulary."""
    tok = tokenizers.Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.Sequence(
        [
            *(pre_tokenizers.Split(tokenizers.Regex(p), behavior="isolated") for p in splits),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tok.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        min_frequency=min_frequency,
        show_progress=False,
        special_tokens=list(leading_specials),
        initial_alphabet=list(BYTE_LEVEL_CHARS),
    )
    tok.train_from_iterator(list(texts), trainer=trainer)
    return tok


def _added_token_entry(content: str, *, special: bool, normalized: bool) -> dict[str, Any]:
    return {
        "content": content,
        "lstrip": False,
        "normalized": normalized,
        "rstrip": False,
        "single_word": False,
        "special": special,
    }


def _write_json(path: Path, data: Mapping[str, Any]) -> None:
    path.write_text(json.dumps(data, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")
