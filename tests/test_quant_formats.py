"""Low-precision expert weights (model/quant.py): each format's kernel path against its exact
reference path (``dequantize()`` then a float matmul), on odd shapes too, and the quantisers."""

from __future__ import annotations

import pytest
import torch

from agent_runtime.model import cpu_kernels
from agent_runtime.model.cpu_kernels import native_kernels
from agent_runtime.model.experts import DenseExpertLinear, ExpertLinear, ResidentExpertBank
from agent_runtime.model.fp8 import dequantize_fp8_blockwise
from agent_runtime.model.quant import (
    Fp8BlockLinear,
    Int4Linear,
    Int8Linear,
    StackedRows,
    bf16_scale_up,
    quantize_linear,
)

SHAPES = [(512, 1024), (96, 64), (37, 100), (130, 257), (16, 96)]


def _weight(shape: tuple[int, int], seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    return torch.randn(shape, generator=gen) * 0.05


def _reference(lin: ExpertLinear, x: torch.Tensor) -> torch.Tensor:
    return (x.double() @ lin.dequantize().double().t()).float()


def _rel_err(got: torch.Tensor, want: torch.Tensor) -> float:
    return float((got.float() - want).abs().max() / want.abs().max())


# Kernel vs the exact reference, relative to the output's largest magnitude. fp32 dense
# accumulation differs only by summation order; the INT8/INT4 kernels run on bf16 activations
# (2^-9 relative rounding of x) and accumulate in their own order; bf16 outputs round to 2^-9.
TOL = {torch.float32: {"fp8": 1e-5, "int8": 1.5e-2, "int4": 1.5e-2}, torch.bfloat16: 2e-2}


@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("fmt", ["fp8", "int8", "int4"])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("rows", [1, 5])
def test_kernel_path_matches_reference(
    shape: tuple[int, int], fmt: str, dtype: torch.dtype, rows: int
) -> None:
    lin = quantize_linear(_weight(shape), fmt)  # type: ignore[arg-type]
    assert (lin.out_features, lin.in_features) == shape
    x = torch.randn(rows, shape[1], generator=torch.Generator().manual_seed(1)).to(dtype)
    got = lin.mm(x)
    assert got.dtype == dtype and got.shape == (rows, shape[0])
    tol = TOL[torch.float32][fmt] if dtype == torch.float32 else TOL[torch.bfloat16]
    assert _rel_err(got, _reference(lin, x)) < tol


@pytest.mark.parametrize("shape", SHAPES)
def test_quantisers_round_to_nearest_within_half_a_step(shape: tuple[int, int]) -> None:
    w = _weight(shape, seed=3)
    i8 = Int8Linear.quantize(w)
    assert (i8.dequantize() - w).abs().le(i8.scale[:, None] / 2 + 1e-9).all()
    for group in (32, 64, 128):
        i4 = Int4Linear.quantize(w, group)
        step = i4.group_scales().float().repeat_interleave(group, dim=1)[:, : shape[1]]
        assert (i4.dequantize() - w).abs().le(step / 2 + 1e-9).all()
        assert i4.int_values().min() >= -8 and i4.int_values().max() <= 7
    f8 = Fp8BlockLinear.quantize(w)
    assert torch.equal(f8.dequantize(), dequantize_fp8_blockwise(f8.weight, f8.scale_inv))


def test_int4_kernel_is_used_where_torch_accepts_the_shape_and_group() -> None:
    w = _weight((64, 256))
    with native_kernels(False):
        assert Int4Linear.quantize(w, 32).kernel and Int4Linear.quantize(w, 128).kernel
        assert Int4Linear.quantize(w, 32).layout == "torch"
        assert not Int4Linear.quantize(_weight((40, 256)), 32).kernel  # rows not a multiple of 16
        assert not Int4Linear.quantize(_weight((64, 80)), 32).kernel  # columns not whole groups
        assert not Int4Linear.quantize(w, 16).kernel  # group size the kernel lacks
    # With the native kernels on, groups of 32 take their layout, whatever the shape.
    native = cpu_kernels.available()
    for shape in ((64, 256), (40, 256), (64, 80)):
        lin = Int4Linear.quantize(_weight(shape), 32)
        assert lin.layout == ("native" if native else "torch" if shape == (64, 256) else "nibbles")
    assert Int4Linear.quantize(w, 128).layout == "torch"  # other group sizes: torch's layout


def test_int4_with_native_kernels_holds_one_layout() -> None:
    """No second copy: the bytes held are the native nibbles plus one bf16 scale per group."""
    n, k = 512, 1000  # a partial last group: padded to whole groups of 16 bytes
    groups = -(-k // 32)
    lin = Int4Linear.quantize(_weight((n, k)), 32)
    held = [v for v in vars(lin).values() if isinstance(v, torch.Tensor)]
    if not cpu_kernels.available():
        assert lin.layout == "nibbles" and lin.nbytes == n * (k // 2) + n * groups * 2
        return
    assert lin.layout == "native" and lin.kernel
    assert lin.packed.shape == (n, groups * 16) and lin.scale.dtype == torch.bfloat16
    assert lin.nbytes == n * groups * 16 + n * groups * 2
    assert sum(t.untyped_storage().nbytes() for t in held) == lin.nbytes
    assert not hasattr(lin, "scales_and_zeros")
    # Every path reads that one layout: decode, a few rows, prefill, values, layout conversion.
    x = torch.randn(9, k, generator=torch.Generator().manual_seed(4))
    ref = _reference(lin, x)
    for rows in (1, 3, 9):
        assert _rel_err(lin.mm(x[:rows]), ref[:rows]) < 1e-3
    assert _rel_err(lin.mm(x), ref) < 1e-5  # prefill: the exact (dequantised) weight, one GEMM
    with native_kernels(False):  # switched off later: the reference path, same values
        assert _rel_err(lin.mm(x[:1]), ref[:1]) < 1e-5
    q = lin.int_values()
    again = Int4Linear.from_layout("native", lin.packed, lin.scale, (n, k), 32)
    assert again.packed is lin.packed and torch.equal(again.int_values(), q)


@pytest.mark.parametrize("shape", [(64, 256), (48, 96)])
def test_int4_layouts_convert_exactly(shape: tuple[int, int]) -> None:
    lin = Int4Linear.quantize(_weight(shape, seed=9), 32)
    packed, scale = lin.torch_layout()
    back = Int4Linear.from_layout("torch", packed, scale, shape, 32)
    assert back.layout == lin.layout
    assert torch.equal(back.int_values(), lin.int_values())
    assert torch.equal(back.dequantize(), lin.dequantize())
    with native_kernels(False):
        held = Int4Linear.from_layout("torch", packed, scale, shape, 32)
        assert held.layout == "torch" and held.packed is packed
        assert torch.equal(held.dequantize(), lin.dequantize())
    with pytest.raises(ValueError, match="does not take"):
        Int4Linear.quantize(_weight((40, 256)), 32).torch_layout()


@pytest.mark.parametrize("shape", [(64, 256), (48, 96), (40, 70)])
def test_int4_values_and_scales_survive_both_storage_layouts_exactly(
    shape: tuple[int, int],
) -> None:
    gen = torch.Generator().manual_seed(5)
    q = torch.randint(-8, 8, shape, generator=gen, dtype=torch.int8)
    groups = -(-shape[1] // 32)
    scale = bf16_scale_up(torch.rand(shape[0], groups, generator=gen) + 0.01)
    lin = Int4Linear(q, scale.to(torch.bfloat16), 32)
    assert torch.equal(lin.int_values(), q)
    expect = q.float() * scale.repeat_interleave(32, dim=1)[:, : shape[1]]
    assert torch.equal(lin.dequantize(), expect)


def test_bf16_scale_up_is_the_next_bf16_at_or_above() -> None:
    s = torch.rand(1000) * 10 + 1e-6
    up = bf16_scale_up(s)
    assert (up >= s).all()
    assert torch.equal(up.to(torch.bfloat16).float(), up)
    below = up.view(torch.int32) - 0x10000
    assert (below.view(torch.float32) < s).all()


def test_fp8_reference_is_exact_for_every_code() -> None:
    codes = torch.arange(256, dtype=torch.uint8)
    codes = codes[(codes & 0x7F) != 0x7F]  # the two NaN codes
    weight = codes.repeat(2).view(2, -1).view(torch.float8_e4m3fn)
    scale = torch.tensor([[0.75, 2.0**-20]])
    lin = Fp8BlockLinear(weight, scale)
    cols = weight.shape[1]
    want = weight.double() * torch.tensor([0.75] * 128 + [2.0**-20] * (cols - 128)).double()
    assert torch.equal(lin.dequantize(), want.float())


def test_invalid_inputs_are_rejected_with_the_shapes() -> None:
    with pytest.raises(ValueError, match=r"needs \[1, 1\]"):
        Fp8BlockLinear(torch.zeros(4, 4).to(torch.float8_e4m3fn), torch.ones(2, 2))
    with pytest.raises(ValueError, match=r"\[4, 2\]"):
        Int4Linear(torch.zeros(4, 64, dtype=torch.int8), torch.ones(4, 3), 32)
    with pytest.raises(ValueError, match=r"\[-8, 7\]"):
        Int4Linear(torch.full((4, 32), 9, dtype=torch.int8), torch.ones(4, 1), 32)
    with pytest.raises(ValueError, match="shape \\[4\\]"):
        Int8Linear(torch.zeros(4, 8, dtype=torch.int8), torch.ones(3))


def test_stored_bytes_shrink_with_the_format() -> None:
    w = _weight((512, 1024))
    dense = DenseExpertLinear(w.bfloat16()).nbytes
    assert dense == 512 * 1024 * 2
    assert quantize_linear(w, "fp8").nbytes == 512 * 1024 + 4 * 8 * 4
    assert quantize_linear(w, "int8").nbytes == 512 * 1024 + 512 * 2
    # int4: half a byte per weight plus (scale, zero) bf16 pairs per group of 32 (torch's
    # layout) or one bf16 scale per group (the native kernels')
    with native_kernels(False):
        assert quantize_linear(w, "int4").nbytes == 512 * 512 + 512 * 32 * 4
    per_group = 2 if cpu_kernels.available() else 4
    assert quantize_linear(w, "int4").nbytes == 512 * 512 + 512 * 32 * per_group


def test_stacked_rows_and_bank_report_their_parts() -> None:
    a, b = quantize_linear(_weight((64, 128)), "fp8"), quantize_linear(_weight((64, 128), 1), "fp8")
    both = StackedRows([a, b])
    x = torch.randn(3, 128)
    assert torch.equal(both.mm(x), torch.cat([a.mm(x), b.mm(x)], 1))
    assert torch.equal(both.dequantize(), torch.cat([a.dequantize(), b.dequantize()]))
    bank = ResidentExpertBank([(both, a), (both, b)])
    assert bank.resident_bytes == 2 * both.nbytes + a.nbytes + b.nbytes
    assert [pair[1] for pair in bank.fetch([1, 0], x)] == [b, a]


def test_fp8_step_path_widens_every_code_exactly() -> None:
    codes = torch.arange(256, dtype=torch.uint8)
    codes = codes[(codes & 0x7F) != 0x7F]
    weight = codes.view(2, -1).view(torch.float8_e4m3fn)  # [2, 127]
    lin = Fp8BlockLinear(weight, torch.tensor([[2.0**-3]]))
    eye = torch.eye(weight.shape[1])
    # x = I: each output is one weight times 1, so the matmul adds nothing but exact zeros
    assert torch.equal(lin.mm(eye).t(), weight.float() * 2.0**-3)
    assert torch.equal(lin.mm(eye).t(), lin.dequantize())


def test_int8_kernel_only_where_its_bf16_variant_is_right() -> None:
    assert Int8Linear.quantize(_weight((130, 256))).kernel
    assert not Int8Linear.quantize(_weight((130, 100))).kernel  # in % 8 != 0: wrong or crashes


@pytest.mark.parametrize("group", [32, 64, 128])
@pytest.mark.parametrize("shape", [(64, 256), (48, 384), (40, 200)])
def test_int4_group_sizes_kernel_and_fallback_match_reference(
    group: int, shape: tuple[int, int]
) -> None:
    lin = Int4Linear.quantize(_weight(shape, seed=group), group)
    native = group == 32 and cpu_kernels.available()
    assert lin.kernel == (native or (shape[0] % 16 == 0 and shape[1] % group == 0))
    x = torch.randn(3, shape[1], generator=torch.Generator().manual_seed(2))
    assert _rel_err(lin.mm(x), _reference(lin, x)) < TOL[torch.float32]["int4"]
    assert _rel_err(lin.mm(x.bfloat16()), _reference(lin, x.bfloat16())) < TOL[torch.bfloat16]
