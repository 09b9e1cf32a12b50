"""Block-wise FP8 dequantisation against a plain float64 loop, for shapes with partial edge blocks."""

from __future__ import annotations

import math

import pytest
import torch
from model_support import reference_dequant

from agent_runtime.model.fp8 import (
    dequantize_fp8_blockwise,
    quantize_fp8_blockwise,
    scale_grid_shape,
)

SHAPES = [(576, 200), (192, 200), (128, 128), (130, 257), (1, 1), (7, 300), (256, 384)]


def _random_weight(rows: int, cols: int, seed: int) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    # Magnitudes that vary by orders of magnitude along both axes so every block gets its own scale.
    row_scale = torch.logspace(-3, 1, rows, dtype=torch.float32)[:, None]
    col_scale = torch.logspace(0, -2, cols, dtype=torch.float32)[None, :]
    return torch.randn(rows, cols, generator=gen) * row_scale * col_scale


@pytest.mark.parametrize("block", [(128, 128), (64, 48)])
@pytest.mark.parametrize("shape", SHAPES)
def test_dequantisation_equals_float64_block_loop(
    shape: tuple[int, int], block: tuple[int, int]
) -> None:
    weight = _random_weight(*shape, seed=shape[0] * 1000 + shape[1])
    quantised, scale_inv = quantize_fp8_blockwise(weight, block)
    assert quantised.dtype == torch.float8_e4m3fn
    assert scale_inv.dtype == torch.float32
    assert tuple(scale_inv.shape) == (
        math.ceil(shape[0] / block[0]),
        math.ceil(shape[1] / block[1]),
    )

    ours = dequantize_fp8_blockwise(quantised, scale_inv, block, dtype=torch.float32)
    reference = reference_dequant(quantised, scale_inv, block).to(torch.float32)
    assert ours.shape == weight.shape
    assert torch.equal(ours, reference)


@pytest.mark.parametrize("shape", [(576, 200), (192, 200)])
def test_edge_blocks_use_their_own_scale(shape: tuple[int, int]) -> None:
    # The last (partial) block row is 1000x larger than the rest: a mis-scaled edge shows at once.
    weight = torch.randn(*shape, generator=torch.Generator().manual_seed(1))
    weight[(shape[0] // 128) * 128 :] *= 1000.0
    weight[:, (shape[1] // 128) * 128 :] *= 0.001
    quantised, scale_inv = quantize_fp8_blockwise(weight)
    restored = dequantize_fp8_blockwise(quantised, scale_inv)
    # e4m3 keeps 3 mantissa bits: every element is within 1/16 relative of its block's maximum.
    for bi in range(scale_inv.shape[0]):
        for bj in range(scale_inv.shape[1]):
            rows = slice(bi * 128, (bi + 1) * 128)
            cols = slice(bj * 128, (bj + 1) * 128)
            block_max = weight[rows, cols].abs().max()
            err = (restored[rows, cols] - weight[rows, cols]).abs().max()
            assert err <= block_max / 16


def test_bf16_output_is_the_fp32_result_rounded() -> None:
    weight = _random_weight(576, 200, seed=3)
    quantised, scale_inv = quantize_fp8_blockwise(weight)
    fp32 = dequantize_fp8_blockwise(quantised, scale_inv, dtype=torch.float32)
    bf16 = dequantize_fp8_blockwise(quantised, scale_inv, dtype=torch.bfloat16)
    assert bf16.dtype == torch.bfloat16
    assert torch.equal(bf16, fp32.to(torch.bfloat16))


def test_all_zero_blocks_round_trip_to_zero() -> None:
    weight = torch.zeros(130, 140)
    weight[:128, :128] = 1.0
    quantised, scale_inv = quantize_fp8_blockwise(weight)
    restored = dequantize_fp8_blockwise(quantised, scale_inv)
    assert torch.equal(restored, weight)
    assert scale_inv[1, 1].item() == 1.0


def test_scale_grid_of_wrong_shape_names_both_shapes() -> None:
    quantised, _ = quantize_fp8_blockwise(torch.randn(576, 200))
    with pytest.raises(ValueError, match=r"\(4, 2\).*\(576, 200\).*\(5, 2\)"):
        dequantize_fp8_blockwise(quantised, torch.ones(4, 2))


def test_scale_grid_shape_ceil_divides() -> None:
    assert scale_grid_shape((576, 7168)) == (5, 56)
    assert scale_grid_shape((192, 200), (128, 128)) == (2, 2)
    with pytest.raises(ValueError):
        scale_grid_shape((3, 4, 5))
    with pytest.raises(ValueError):
        scale_grid_shape((3, 4), (0, 128))


@pytest.mark.parametrize("with_nan", [False, True])
def test_every_e4m3_code_dequantises_exactly(with_nan: bool) -> None:
    codes = torch.arange(256, dtype=torch.uint8)
    if not with_nan:
        codes = codes[(codes & 0x7F) != 0x7F]  # the two NaN codes
    # Every code in several blocks with different scales, including subnormals and -0.
    weight = codes.repeat(6)[: 3 * 130].reshape(3, 130).view(torch.float8_e4m3fn)
    scale_inv = torch.tensor([[0.37, 1.0e-5], [3.0, 7.5]])[:1]
    block = (128, 128)
    ours = dequantize_fp8_blockwise(weight, scale_inv, block)
    reference = reference_dequant(weight, scale_inv, block).to(torch.float32)
    torch.testing.assert_close(ours, reference, atol=0, rtol=0, equal_nan=True)
    assert torch.equal(torch.signbit(ours), torch.signbit(reference))
    assert bool(ours.isnan().any()) == with_nan


def test_fp32_input_is_not_modified() -> None:
    weight = torch.randn(130, 70)
    before = weight.clone()
    out = dequantize_fp8_blockwise(weight, torch.full((2, 1), 3.0))
    assert torch.equal(weight, before)
    assert torch.equal(out, before * 3.0)
