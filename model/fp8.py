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


def _widen(weight: torch.Tensor) -> tuple[torch.Tensor, float]:
    """A fresh fp32 copy of ``weight`` divided by a power of two, and that power of two.

    torch's own e4m3 -> fp32 conversion runs element by element on CPU (about 5x slower than
    reading the weight). Every e4m3 value is exactly representable in fp16, and the e4m3 bit
    pattern ``s eeee mmm`` placed as fp16 ``s 0eeee mmm0000000`` is the same value times 2^-8
    (subnormals included), so a few integer passes plus the fast fp16 -> fp32 conversion give
    exactly ``value / 256``. The two NaN codes would come out finite, so a weight holding them
    takes torch's path.
    """
    if weight.dtype == torch.float8_e4m3fn and weight.device.type == "cpu":
        bits = weight.view(torch.uint8).to(torch.int16)
        magnitude = bits & 0x7F
        if not bool((magnitude == 0x7F).any()):
            half = magnitude.bitwise_left_shift_(7)
            half.bitwise_or_(bits.bitwise_right_shift_(7).mul_(-32768))
            return half.view(torch.float16).to(torch.float32), 256.0
    values = weight.to(torch.float32)
    if values.data_ptr() == weight.data_ptr():
        values = values.clone()  # the scaling below works in place: never on the caller's tensor
    return values, 1.0


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
    rows, cols = weight.shape
    grid_rows, grid_cols = expected
    values, factor = _widen(weight)
    pad_rows, pad_cols = grid_rows * bn - rows, grid_cols * bk - cols
    if pad_rows or pad_cols:
        values = F.pad(values, (0, pad_cols, 0, pad_rows))
    # ``factor`` is a power of two, so folding it into the scales is exact.
    scales = scale_inv.to(device=values.device, dtype=torch.float32) * factor
    blocks = values.view(grid_rows, bn, grid_cols, bk)
    blocks.mul_(scales[:, None, :, None])
    out = blocks.view(grid_rows * bn, grid_cols * bk)
    if pad_rows or pad_cols:
        out = out[:rows, :cols]
    return out.to(dtype).contiguous()


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
