"""Block-wise FP8 (e4m3) weights as DeepSeek-V3 and Kimi K2 checkpoints store them.

A quantised linear weight ``X.weight`` of shape ``[N, K]`` is stored as ``float8_e4m3fn`` beside
``X.weight_scale_inv`` (fp32), one scale per ``[bn, bk]`` block (``weight_block_size``, by default
``[128, 128]``), so the scale grid is ``[ceil(N / bn), ceil(K / bk)]``. The last block row and column
are partial when a dimension is not a multiple of the block: K2's ``kv_a_proj_with_mqa`` has 576 rows,
for example. The real weight is ``fp32(block) * scale_inv`` for every element of a block.

Dequantisation pads the weight up to whole blocks, multiplies every block by its scale through a
broadcast view (no per-element scale grid is built) and crops the padding away. The product is formed
in fp32: an e4m3 value has a 4-bit significand and the scale a 24-bit one, so the single fp32 rounding
of the product is the correctly rounded exact product, the same value a float64 computation rounded
to fp32 gives.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import torch
import torch.nn.functional as F

__all__ = [
    "DEFAULT_BLOCK_SIZE",
    "FP8_E4M3_MAX",
    "dequantize_fp8_blockwise",
    "dequantize_fp8_blockwise_into",
    "has_nan_codes",
    "is_fp8_quantisable",
    "quantize_fp8_blockwise",
    "scale_grid_shape",
]

DEFAULT_BLOCK_SIZE: tuple[int, int] = (128, 128)
"""The block size used when a checkpoint's ``quantization_config`` names none."""

FP8_E4M3_MAX: float = float(torch.finfo(torch.float8_e4m3fn).max)
"""The largest finite e4m3 value (448): the quantiser maps each block's absolute maximum onto it."""


def _block(block_size: Sequence[int]) -> tuple[int, int]:
    if len(block_size) != 2 or any(int(b) <= 0 for b in block_size):
        raise ValueError(f"weight_block_size must be two positive integers, got {list(block_size)}")
    return int(block_size[0]), int(block_size[1])


def scale_grid_shape(
    weight_shape: Sequence[int], block_size: Sequence[int] = DEFAULT_BLOCK_SIZE
) -> tuple[int, int]:
    """The shape of the ``weight_scale_inv`` grid for a 2-D weight: ceil-divided, edge blocks partial."""
    if len(weight_shape) != 2:
        raise ValueError(f"block-quantised weights are 2-D, got shape {tuple(weight_shape)}")
    bn, bk = _block(block_size)
    return math.ceil(weight_shape[0] / bn), math.ceil(weight_shape[1] / bk)


def is_fp8_quantisable(key: str, shape: Sequence[int]) -> bool:
    """Whether DeepSeek-V3 / K2 checkpoints store this tensor in FP8: every linear weight except
    the embeddings, lm_head and the router (norms and biases are 1-D and never quantised)."""
    return (
        len(shape) == 2
        and key.endswith(".weight")
        and not key.endswith("embed_tokens.weight")
        and not key.startswith("lm_head.")
        and not key.endswith("mlp.gate.weight")
        and "norm" not in key.rsplit(".", 2)[-2]
    )


_BF16_FACTOR = 2.0**120
"""e4m3 bits ``s eeee mmm`` placed as bf16 ``s 0000eee emmm0000`` are the same value times 2^-120."""


def _widen(weight: torch.Tensor, out: torch.Tensor | None = None) -> tuple[torch.Tensor, float]:
    """An fp32 copy of ``weight`` divided by a power of two, and that power of two.

    torch's own e4m3 -> fp32 conversion runs element by element on CPU (about 10x slower than
    reading the weight). Every e4m3 value is exactly representable in bf16, and the e4m3 bit
    pattern ``s eeee mmm`` placed as bf16 ``s 0000eee emmm0000`` is the same value times 2^-120
    (subnormals included: both formats' subnormals scale the same way), so three integer passes
    plus the cheap bf16 -> fp32 widening give exactly ``value / 2^120``. The two NaN codes would
    come out finite, so a weight holding them takes torch's path. ``out`` (fp32, the weight's
    shape, any strides) receives the values when given.
    """
    if weight.dtype == torch.float8_e4m3fn and weight.device.type == "cpu":
        raw = weight.view(torch.uint8)
        bits = raw.to(torch.int16)
        sign = bits.bitwise_and(0x80)
        if not bool((bits.bitwise_xor(sign) == 0x7F).any()):
            bits.bitwise_and_(0x7F).bitwise_left_shift_(4)
            bits.bitwise_or_(sign.bitwise_left_shift_(8))
            halves = bits.view(torch.bfloat16)
            if out is None:
                return halves.to(torch.float32), _BF16_FACTOR
            out.copy_(halves)
            return out, _BF16_FACTOR
    if out is None:
        values = weight.to(torch.float32)
        if values.data_ptr() == weight.data_ptr():
            values = values.clone()  # the scaling below works in place: never on the caller's
        return values, 1.0
    out.copy_(weight)
    return out, 1.0


def dequantize_fp8_blockwise(
    weight: torch.Tensor,
    scale_inv: torch.Tensor,
    block_size: Sequence[int] = DEFAULT_BLOCK_SIZE,
    dtype: torch.dtype = torch.float32,
) -> torch.Tensor:
    """Turn a block-quantised FP8 weight back into real numbers of ``dtype``.

    Works for any ``[N, K]``, including dimensions that are not multiples of the block size. Raises
    ``ValueError`` naming both shapes when the scale grid does not fit the weight.
    """
    bn, bk = _block(block_size)
    expected = scale_grid_shape(tuple(weight.shape), (bn, bk))
    if tuple(scale_inv.shape) != expected:
        raise ValueError(
            f"weight_scale_inv has shape {tuple(scale_inv.shape)} but a weight of shape "
            f"{tuple(weight.shape)} with blocks {[bn, bk]} needs {expected}"
        )
    grid_rows, grid_cols = expected
    space = torch.empty(grid_rows * bn * grid_cols * bk, dtype=torch.float32, device=weight.device)
    return dequantize_fp8_blockwise_into(weight, scale_inv, (bn, bk), space).to(dtype).contiguous()


def has_nan_codes(weight: torch.Tensor) -> bool:
    """Whether an e4m3 weight holds either NaN code (``s 1111 111``)."""
    return bool((weight.view(torch.uint8).bitwise_and(0x7F) == 0x7F).any())


def _widen_finite_into(weight: torch.Tensor, out: torch.Tensor, bits: torch.Tensor) -> float:
    """:func:`_widen` for a CPU e4m3 weight known to hold no NaN code, into ``out`` through the
    int16 scratch ``bits`` (the weight's shape): the byte read as int8 and sign-extended to
    int16, shifted left by 4 and masked with ``0x87F0`` is exactly the bf16 pattern of
    ``value * 2^-120`` (three passes, no temporaries). Returns the factor 2^120."""
    bits.copy_(weight.view(torch.int8))
    bits.bitwise_left_shift_(4).bitwise_and_(-0x7810)  # 0x87F0 as a signed 16-bit value
    out.copy_(bits.view(torch.bfloat16))
    return _BF16_FACTOR


def dequantize_fp8_blockwise_into(
    weight: torch.Tensor,
    scale_inv: torch.Tensor,
    block_size: Sequence[int],
    space: torch.Tensor,
    bits: torch.Tensor | None = None,
) -> torch.Tensor:
    """:func:`dequantize_fp8_blockwise` into a caller's flat fp32 ``space`` (at least the padded
    whole-block size): returns the ``[N, K]`` fp32 view of it that holds the weight (strided when
    a dimension is not a multiple of the block), so an FP8 expert can be dequantised into one
    reused buffer per step. ``bits`` (int16, at least ``N * K``) is scratch for a CPU weight the
    caller has checked for NaN codes (:func:`has_nan_codes`): with it nothing is allocated. The
    scale grid must fit (not checked here: callers check it once when the weight is made)."""
    bn, bk = _block(block_size)
    rows, cols = weight.shape
    grid_rows, grid_cols = math.ceil(rows / bn), math.ceil(cols / bk)
    padded = space[: grid_rows * bn * grid_cols * bk].view(grid_rows * bn, grid_cols * bk)
    if grid_rows * bn != rows or grid_cols * bk != cols:
        padded.zero_()
    view = padded[:rows, :cols]
    if bits is not None and weight.dtype == torch.float8_e4m3fn and weight.device.type == "cpu":
        factor = _widen_finite_into(weight, view, bits[: rows * cols].view(rows, cols))
    else:
        factor = _widen(weight, out=view)[1]
    # ``factor`` is a power of two, so folding it into the scales is exact, unless that overflows.
    scales = scale_inv.to(device=weight.device, dtype=torch.float32) * factor
    if factor != 1.0 and not bool(torch.isfinite(scales).all()):
        view.mul_(factor)
        scales = scale_inv.to(device=weight.device, dtype=torch.float32)
    padded.view(grid_rows, bn, grid_cols, bk).mul_(scales[:, None, :, None])
    return view


def quantize_fp8_blockwise(
    weight: torch.Tensor, block_size: Sequence[int] = DEFAULT_BLOCK_SIZE
) -> tuple[torch.Tensor, torch.Tensor]:
    """Quantise a 2-D weight to e4m3 blocks; returns ``(fp8 weight, fp32 scale_inv)``.

    Each block's scale is its absolute maximum over 448, so the largest element maps to the largest
    e4m3 value. An all-zero block gets scale 1 (any scale reproduces zeros). This writes checkpoints in
    the layout DeepSeek-V3 and Kimi K2 ship; it is the inverse that :func:`dequantize_fp8_blockwise` undoes.
    """
    bn, bk = _block(block_size)
    grid_rows, grid_cols = scale_grid_shape(tuple(weight.shape), (bn, bk))
    rows, cols = weight.shape
    values = weight.to(torch.float32)
    pad_rows, pad_cols = grid_rows * bn - rows, grid_cols * bk - cols
    if pad_rows or pad_cols:
        values = F.pad(values, (0, pad_cols, 0, pad_rows))
    blocks = values.view(grid_rows, bn, grid_cols, bk)
    amax = blocks.abs().amax(dim=(1, 3))
    scale_inv = torch.where(amax > 0, amax / FP8_E4M3_MAX, torch.ones_like(amax))
    scaled = (blocks / scale_inv[:, None, :, None]).clamp_(-FP8_E4M3_MAX, FP8_E4M3_MAX)
    quantised = scaled.view(grid_rows * bn, grid_cols * bk)[:rows, :cols]
    return quantised.to(torch.float8_e4m3fn).contiguous(), scale_inv.contiguous()
