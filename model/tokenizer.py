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

The pieces live in ``tokenizer_base.py`` (the interface, errors, streaming),
``tokenizer_kimi.py`` (tiktoken) and ``tokenizer_hf.py`` (``tokenizer.json``); this module is the
one to import from, and :func:`load_tokenizer` picks the right one for a model folder.
"""

from __future__ import annotations

import os
from pathlib import Path

from .tokenizer_base import StreamDecoder, Tokenizer, TokenizerError, UnknownTokenError
from .tokenizer_hf import BYTE_LEVEL_CHARS, HFTokenizer
from .tokenizer_kimi import (
    KIMI_NUM_SPECIAL_TOKENS,
    KIMI_PATTERN,
    KIMI_SPECIAL_TOKENS,
    KimiTokenizer,
)

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
