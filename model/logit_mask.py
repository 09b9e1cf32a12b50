"""A token bitmask applied to a row of logits: what is not allowed next becomes ``-inf``.

llguidance writes the allowed tokens of a step as packed 32-bit words (bit ``i`` of word ``w``
for token ``32 * w + i``). :func:`apply_mask` picks the cheapest way to apply them (by index when
few tokens are allowed or few banned, a byte-lookup bias or an on-device unpack otherwise), since
it runs once per generated token.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

__all__ = ["apply_mask", "unpack_on"]

# Below this many 32-token words with any allowed (or any banned) token, the mask is applied by
# index: far cheaper than a full boolean pass over the vocabulary, and the common case (JSON
# structure allows a handful of tokens, free text bans only the control tokens).
_SPARSE_WORDS = 48


def _byte_bias() -> np.ndarray[Any, Any]:
    """Per mask byte, the 8 additive biases (0.0 allowed, -inf not) as 32 raw bytes."""
    bits = np.unpackbits(np.arange(256, dtype=np.uint8)[:, None], axis=1, bitorder="little")
    bias = np.where(bits == 1, np.float32(0.0), np.float32(-np.inf)).astype(np.float32)
    return bias.view(np.uint64).copy()


_BYTE_BIAS = _byte_bias()
_BIT_INDEX: dict[torch.device, torch.Tensor] = {}


def apply_mask(row: torch.Tensor, words: np.ndarray[Any, Any], width: int) -> None:
    """Set ``row[i]`` to ``-inf`` for every ``i < width`` whose bit in ``words`` is clear."""
    # fp32 on the CPU is handled through a numpy view: per-call overhead of a few torch ops
    # would otherwise cost more than the work.
    host = row.numpy()[:width] if _numpy_view_ok(row) else None
    allowed_words = np.flatnonzero(words)
    if allowed_words.size <= _SPARSE_WORDS:
        allowed = _bit_ids(words, allowed_words, width)
        if host is not None:
            keep = host[allowed]
            host.fill(-np.inf)
            host[allowed] = keep
        else:
            index = torch.from_numpy(allowed).to(row.device)
            keep_t = row.index_select(0, index)
            row[:width] = float("-inf")
            row.index_copy_(0, index, keep_t)
        return
    partial_words = np.flatnonzero(words != -1)
    if partial_words.size <= _SPARSE_WORDS:
        banned = _bit_ids(np.invert(words), partial_words, width)
        if host is not None:
            host[banned] = -np.inf
        else:
            row.index_fill_(0, torch.from_numpy(banned).to(row.device), float("-inf"))
        return
    if host is not None:
        # One row lookup per mask byte (8 floats of 0 or -inf), then one add: several times
        # quicker than a boolean masked_fill over the whole vocabulary.
        bias = np.take(_BYTE_BIAS, words.view(np.uint8), axis=0).view(np.float32).reshape(-1)
        np.add(host, bias[:width], out=host)
    elif row.device.type == "cpu":
        clear = np.unpackbits(np.invert(words).view(np.uint8), count=width, bitorder="little")
        row[:width].masked_fill_(torch.from_numpy(clear.view(np.bool_)), float("-inf"))
    else:
        row[:width].masked_fill_(unpack_on(row.device, words, width), float("-inf"))


def _numpy_view_ok(row: torch.Tensor) -> bool:
    return (
        row.device.type == "cpu"
        and row.dtype == torch.float32
        and row.is_contiguous()
        and not row.requires_grad
    )


def _bit_ids(words: np.ndarray[Any, Any], which: np.ndarray[Any, Any], width: int) -> Any:
    """The ids (below ``width``) of the set bits of ``words[which]``, as int64."""
    bits = np.unpackbits(words[which].view(np.uint8), bitorder="little").reshape(-1, 32)
    word, bit = np.nonzero(bits)
    ids = which[word].astype(np.int64) * 32 + bit
    return ids[ids < width]


def unpack_on(device: torch.device, words: np.ndarray[Any, Any], width: int) -> torch.Tensor:
    """The disallowed-token mask on ``device``: the packed words go over (V/8 bytes), the bits
    are unpacked there."""
    shifts = _BIT_INDEX.get(device)
    if shifts is None:
        shifts = torch.arange(32, dtype=torch.int32, device=device)
        _BIT_INDEX[device] = shifts
    packed = torch.from_numpy(words).to(device, non_blocking=True)
    bits = (packed.unsqueeze(1) >> shifts) & 1
    return bits.reshape(-1)[:width] == 0
