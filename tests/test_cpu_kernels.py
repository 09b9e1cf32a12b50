"""The native one-row GEMV kernels (model/cpu_kernels.c) against torch, and the model with them on
and off.

Tolerances: every kernel accumulates in fp32 in another order than the reference, so results agree
to fp32 reordering error relative to the sum of |w_i x_i| (a few 1e-7 for the sizes here; bounded
at 2e-6); a bf16 output is additionally one bf16 rounding (2^-8 relative) away. The FP8 and INT4
kernels are compared with the exact dequantised weight (``dequantize()``) multiplied in float64.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from model_support import small_moe_config

from agent_runtime.model import cpu_kernels
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.cpu_kernels import (
    bxw,
    fp8_xwt,
    int4_pack,
    int4_xwt,
    native_kernels,
    xw,
)
from agent_runtime.model.quant import Fp8BlockLinear, Int4Linear, quantize_experts
from agent_runtime.model.transformer import MoEForCausalLM

SHAPES = [(1, 1), (3, 17), (33, 5), (130, 257), (1000, 3), (256, 1024), (1024, 512), (100, 1)]
FP32_TOL = 2e-6


NATIVE = cpu_kernels.available()


def test_kernels_build_wherever_a_compiler_and_avx2_exist() -> None:
    # Guards every comparison below: a silent fallback would compare torch with itself. (On a
    # host without gcc or AVX2 the wrappers run torch, which the same tests then check.)
    forced_off = os.environ.get("AGENT_RUNTIME_NATIVE_KERNELS", "1") in ("0", "false", "off")
    if shutil.which("gcc") and cpu_kernels._cpu_supported() and not forced_off:
        assert NATIVE and cpu_kernels.library_path().exists()
    else:
        assert not NATIVE


def _ref(x: torch.Tensor, w_in_out: torch.Tensor) -> torch.Tensor:
    return x.double().reshape(1, -1) @ w_in_out.double()


def _scale(x: torch.Tensor, w_in_out: torch.Tensor) -> float:
    """Sum of |x_i w_io| per output, the largest: the size fp32 reordering errors scale with."""
    return float((x.double().abs().reshape(1, -1) @ w_in_out.double().abs()).max())


def _check(y: torch.Tensor, ref: torch.Tensor, scale: float, tol: float) -> None:
    err = float((y.double().reshape(ref.shape) - ref).abs().max())
    assert err <= tol * scale, (err, scale)


@pytest.mark.parametrize(("n_in", "n_out"), SHAPES)
def test_fp32_both_layouts_and_accumulate(n_in: int, n_out: int) -> None:
    g = torch.Generator().manual_seed(n_in * 1000 + n_out)
    x = torch.randn(1, n_in, generator=g)
    w = torch.randn(n_out, n_in, generator=g)  # [out, in]
    ref, scale = _ref(x, w.t()), _scale(x, w.t())
    out_major = w.t()  # seen [in, out], stored [out, in]: the dot-product kernel
    in_major = w.t().contiguous()  # stored [in, out]: the axpy kernel
    for weight in (out_major, in_major):
        _check(xw(x, weight), ref, scale, FP32_TOL)
        start = torch.randn(1, n_out, generator=g)
        acc = start.clone()
        assert xw(x, weight, acc, alpha=0.37, accumulate=True) is acc
        _check(acc, start.double() + 0.37 * ref, scale, FP32_TOL)
        dst = torch.full((1, n_out), 5.0)
        xw(x, weight, dst, alpha=-2.0)
        _check(dst, -2.0 * ref, 2 * scale, FP32_TOL)


@pytest.mark.parametrize(("n_in", "n_out"), SHAPES)
def test_bf16_weights(n_in: int, n_out: int) -> None:
    g = torch.Generator().manual_seed(n_in + 7 * n_out)
    x = torch.randn(1, n_in, generator=g)
    w = torch.randn(n_out, n_in, generator=g).to(torch.bfloat16)
    # fp32 activations, fp32 result: the bf16 weights widened exactly, fp32 sums.
    ref, scale = _ref(x, w.t()), _scale(x, w.t())
    y = xw(x, w.t(), torch.empty(1, n_out))
    _check(y, ref, scale, FP32_TOL)
    # bf16 activations and result (the bf16 model): one bf16 rounding of the fp32 sum.
    xb = x.to(torch.bfloat16)
    yb = xw(xb, w.t())
    assert yb.dtype == torch.bfloat16
    ref_b = _ref(xb, w.t())
    _check(yb, ref_b, _scale(xb, w.t()), 2.0**-8 + FP32_TOL)
    torch_b = torch.mm(xb, w.t())
    assert float((yb.float() - torch_b.float()).abs().max()) <= 2.0**-7 * _scale(xb, w.t())


def test_unsupported_inputs_fall_back_to_torch() -> None:
    x = torch.randn(3, 16)  # several rows: not a GEMV
    w = torch.randn(16, 8)
    assert torch.equal(xw(x, w), torch.mm(x, w))
    wd = torch.randn(16, 8, dtype=torch.float64)  # a dtype without a kernel
    xd = torch.randn(1, 16, dtype=torch.float64)
    assert torch.equal(xw(xd, wd), torch.mm(xd, wd))
    strided = torch.randn(1, 32)[:, ::2]  # non-contiguous activations
    assert torch.allclose(xw(strided, w), torch.mm(strided, w), rtol=0, atol=1e-5)


def test_switch_off_gives_torch_results() -> None:
    x, w = torch.randn(1, 300), torch.randn(300, 70)
    with native_kernels(False):
        assert not cpu_kernels.enabled()
        off = xw(x, w)
    assert cpu_kernels.enabled() == NATIVE
    assert torch.equal(off, torch.mm(x, w))  # torch itself when off
    on = xw(x, w)
    _check(on, _ref(x, w), _scale(x, w), FP32_TOL)


@pytest.mark.parametrize(("n_out", "n_in"), [(256, 1024), (1, 130), (17, 300), (200, 64), (3, 31)])
def test_fp8_block_kernel_matches_dequantised_weight(n_out: int, n_in: int) -> None:
    g = torch.Generator().manual_seed(n_out + n_in)
    w = torch.randn(n_out, n_in, generator=g) * 0.05
    w[0, : min(n_in, 5)] = torch.tensor([0.0, 1e-7, -3e-6, 2e-5, -1.0])[: min(n_in, 5)]
    lin = Fp8BlockLinear.quantize(w)
    x = torch.randn(1, n_in, generator=g)
    dense = lin.dequantize()
    ref, scale = _ref(x, dense.t()), _scale(x, dense.t())
    _check(lin.mm(x), ref, scale, FP32_TOL)  # the expert format (the kernel for one row)
    y = fp8_xwt(x, lin.weight.view(torch.uint8), lin.scale_inv, lin.block)
    if not NATIVE:
        assert y is None  # no kernel on this host: the format computed the reference way above
        return
    assert y is not None
    _check(y, ref, scale, FP32_TOL)
    acc = torch.ones(1, n_out)
    fp8_xwt(
        x, lin.weight.view(torch.uint8), lin.scale_inv, lin.block, acc, alpha=0.5, accumulate=True
    )
    _check(acc, 1.0 + 0.5 * ref, scale, FP32_TOL)


def test_fp8_every_code_decodes_exactly() -> None:
    """All 254 non-NaN e4m3 codes (subnormals, both zeros) in one row, picked out one at a time
    by a one-hot activation: the product is the code's exact value."""
    codes = torch.arange(256, dtype=torch.uint8)
    codes = codes[(codes & 0x7F) != 0x7F]  # the two NaN codes are excluded by the callers
    n = codes.numel()
    lin = Fp8BlockLinear(codes.view(1, n).view(torch.float8_e4m3fn), torch.ones(1, 2))
    expect = codes.view(torch.float8_e4m3fn).double()
    for i in range(n):
        x = torch.zeros(1, n)
        x[0, i] = 1.0
        y = lin.mm(x)
        assert float(y) == float(expect[i]), (int(codes[i]), float(y))


@pytest.mark.parametrize(("n_out", "n_in"), [(32, 1024), (3, 40), (17, 31), (64, 256), (1, 1)])
def test_int4_kernel_matches_dequantised_weight(n_out: int, n_in: int) -> None:
    g = torch.Generator().manual_seed(3 * n_out + n_in)
    w = torch.randn(n_out, n_in, generator=g)
    lin = Int4Linear.quantize(w, 32)
    q = lin.int_values()
    scale = lin.group_scales().float().contiguous()
    x = torch.randn(1, n_in, generator=g)
    dense = lin.dequantize()
    ref, sc = _ref(x, dense.t()), _scale(x, dense.t())
    packed = int4_pack(q)
    assert packed.shape == (n_out, -(-n_in // 32) * 16)
    y = int4_xwt(x, packed, scale, n_in)
    _check(lin.mm(x), ref, sc, 2.0**-8)  # the expert format (bf16 activations where torch's)
    if not NATIVE:
        assert y is None
        return
    assert y is not None
    # The kernel's only rounding besides fp32 sums: activations as 15-bit integers, each off by
    # at most half a step, max|x| / 32512.
    step_err = float(x.abs().max()) / 32512 * float(dense.abs().sum(dim=1).max())
    err = float((y.double() - ref).abs().max())
    assert err <= step_err + FP32_TOL * sc, (err, step_err)
    yb = int4_xwt(x.to(torch.bfloat16), packed, scale, n_in)
    assert yb is not None and yb.dtype == torch.bfloat16
    # bf16 scales (the quantiser's are bf16 values): the same products, bit for bit.
    ys = int4_xwt(x, packed, scale.to(torch.bfloat16), n_in)
    assert ys is not None and torch.equal(ys, y)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_batched_heads(dtype: torch.dtype) -> None:
    g = torch.Generator().manual_seed(11)
    heads, n_in, n_out = 5, 40, 19
    stored = torch.randn(heads, n_out, n_in, generator=g).to(dtype)  # each head [out, in]
    w = stored.transpose(1, 2)  # seen [B, in, out]
    x = torch.randn(heads, n_in + 3, generator=g)[:, :n_in]  # strided rows
    y = bxw(x, w)
    assert y.shape == (heads, 1, n_out) and y.dtype == torch.float32
    ref = torch.bmm(x.double().unsqueeze(1), w.double())
    bound = float((x.double().abs().unsqueeze(1) @ w.double().abs()).max())
    assert float((y.double() - ref).abs().max()) <= FP32_TOL * bound


@pytest.mark.skipif(not NATIVE, reason="needs the native kernels")
def test_every_kernel_is_right_when_openmp_gives_fewer_threads() -> None:
    """Two threads asked for, one given (OMP_THREAD_LIMIT=1; also what a call from inside
    another parallel region gets): each kernel splits its work over the team it has."""
    script = (
        "import torch\n"
        "from agent_runtime.model.cpu_kernels import xw, bxw, fp8_xwt, int4_xwt, int4_pack\n"
        "from agent_runtime.model.quant import Fp8BlockLinear, Int4Linear\n"
        "torch.set_num_threads(2)\n"
        "g = torch.Generator().manual_seed(0)\n"
        "x = torch.randn(1, 512, generator=g)\n"
        "w = torch.randn(2048, 512, generator=g)\n"
        "errs = {}\n"
        "ref = x.double() @ w.double().t()\n"
        "errs['f32'] = xw(x, w.t()).double() - ref\n"
        "errs['f32t'] = xw(x, w.t().contiguous()).double() - ref\n"
        "errs['bf16'] = xw(x, w.bfloat16().t()).double() - x.double() @ w.bfloat16().double().t()\n"
        "f8 = Fp8BlockLinear.quantize(w)\n"
        "y8 = fp8_xwt(x, f8.weight.view(torch.uint8), f8.scale_inv, f8.block)\n"
        "errs['fp8'] = y8.double() - x.double() @ f8.dequantize().double().t()\n"
        "i4 = Int4Linear.quantize(w)\n"
        "y4 = int4_xwt(x, int4_pack(i4.int_values()), i4.group_scales().float().contiguous(), 512)\n"
        "errs['int4'] = y4.double() - x.double() @ i4.dequantize().double().t()\n"
        "bound = float(x.abs().max()) / 32512 * float(i4.dequantize().abs().sum(1).max())\n"
        "hw = torch.randn(64, 128, 512, generator=g)\n"
        "hx = torch.randn(64, 512, generator=g)\n"
        "errs['batched'] = bxw(hx, hw.transpose(1, 2)).double() - torch.bmm(\n"
        "    hx.double().unsqueeze(1), hw.double().transpose(1, 2))\n"
        "print(' '.join(f'{k}={float(v.abs().max()):.3e}' for k, v in errs.items()), bound)\n"
    )
    env = dict(os.environ, OMP_THREAD_LIMIT="1")
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    *items, int4_bound = proc.stdout.split()
    errs = {k: float(v) for k, v in (item.split("=") for item in items)}
    assert set(errs) == {"f32", "f32t", "bf16", "fp8", "int4", "batched"}
    # |x|, |w| ~ 1 over 512 products: fp32 reordering stays below 1e-3 (a missing row range is
    # off by the whole product, ~20); INT4 also rounds activations to 15-bit integers, at most
    # max|x| / 32512 per element
    assert all(v < 1e-3 for k, v in errs.items() if k != "int4"), errs
    assert errs["int4"] <= float(int4_bound) + 1e-3, (errs, int4_bound)


def _greedy(model: MoEForCausalLM, prompt: list[int], steps: int) -> tuple[list[int], torch.Tensor]:
    """Prefill ``prompt``, then ``steps`` one-token decode forwards: (tokens, their logits)."""
    cache = model.new_cache(1, capacity=len(prompt) + steps)
    logits = model.forward(torch.tensor([prompt]), cache, logits_to_keep=1)[0, -1]
    tokens, rows = [], []
    for _ in range(steps):
        tok = int(logits.argmax())
        tokens.append(tok)
        logits = model.forward(torch.tensor([[tok]]), cache)[0, -1]
        rows.append(logits)
    return tokens, torch.stack(rows)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_model_decode_same_with_kernels_on_and_off(dtype: torch.dtype) -> None:
    """Every decode projection (MLA, dense MLP, routed and shared experts, lm_head) through the
    kernels: logits within fp32 reordering error of torch's, relative to their spread, and the
    same greedy tokens (bf16: within a few bf16 roundings of the activations)."""
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300))
    model = MoEForCausalLM(cfg, seed=5, dtype=dtype)
    with torch.no_grad():
        model.lm_head.mul_(40.0)  # decisive greedy choices
    kinds = {type(layer.mlp).__name__ for layer in model.layers}
    assert kinds == {"DenseMLP", "MoEBlock"}  # both MLP kinds are exercised
    prompt = [3, 14, 15, 92, 65, 35, 8]
    with native_kernels(False):
        tokens_off, logits_off = _greedy(model, prompt, 10)
    tokens_on, logits_on = _greedy(model, prompt, 10)
    spread = float(logits_off.std())
    err = float((logits_on - logits_off).abs().max()) / spread
    if dtype == torch.float32:
        assert tokens_on == tokens_off
        assert err <= 1e-5, err
    else:
        assert err <= 0.05, err
        assert tokens_on[:3] == tokens_off[:3]


def test_model_with_fp8_and_int4_experts_same_with_kernels_on_and_off() -> None:
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300))
    for fmt in ("fp8", "int4"):
        model = MoEForCausalLM(cfg, seed=6)
        with torch.no_grad():
            model.lm_head.mul_(40.0)
        quantize_experts(model, fmt, shared=True)  # type: ignore[arg-type]
        prompt = [5, 6, 7, 8, 200, 100]
        with native_kernels(False):
            tokens_off, logits_off = _greedy(model, prompt, 6)
        tokens_on, logits_on = _greedy(model, prompt, 6)
        err = float((logits_on - logits_off).abs().max()) / float(logits_off.std())
        # FP8: the same fp32 products reordered; INT4: torch's kernel rounds activations to bf16.
        assert err <= (1e-5 if fmt == "fp8" else 0.05), (fmt, err)
        assert tokens_on[:3] == tokens_off[:3], fmt


def test_without_a_compiler_everything_falls_back(tmp_path: Path) -> None:
    """A fresh process with no compiler on PATH and an empty kernel cache: the library cannot be
    built, a warning is logged once, and results are torch's own."""
    script = (
        "import logging, torch\n"
        "logging.basicConfig(level=logging.WARNING)\n"
        "from agent_runtime.model import cpu_kernels as ck\n"
        "assert not ck.available() and not ck.enabled()\n"
        "x, w = torch.randn(1, 64), torch.randn(64, 9)\n"
        "assert torch.equal(ck.xw(x, w), torch.mm(x, w))\n"
        "print('FALLBACK-OK')\n"
    )
    env = dict(os.environ, PATH=str(tmp_path), AGENT_RUNTIME_CACHE=str(tmp_path / "cache"))
    env.pop("CC", None)
    env.pop("AGENT_RUNTIME_NATIVE_KERNELS", None)
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    assert "FALLBACK-OK" in proc.stdout
    assert proc.stderr.count("native CPU kernels unavailable") == 1


def test_env_var_forces_torch_and_build_is_cached(tmp_path: Path) -> None:
    env = dict(os.environ, AGENT_RUNTIME_NATIVE_KERNELS="0")
    script = "from agent_runtime.model import cpu_kernels as ck\nprint(ck.available())\n"
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0 and proc.stdout.strip() == "False", proc.stderr
    if not NATIVE:
        return  # nothing can be built on this host (covered by the no-compiler test)
    # Two processes building into the same empty cache at once both load a working library.
    env = dict(os.environ, AGENT_RUNTIME_CACHE=str(tmp_path))
    script = (
        "import torch\nfrom agent_runtime.model import cpu_kernels as ck\n"
        "assert ck.available()\nx, w = torch.randn(1, 40), torch.randn(40, 7)\n"
        "assert torch.allclose(ck.xw(x, w), x @ w, atol=1e-5)\nprint(ck.library_path())\n"
    )
    procs = [
        subprocess.Popen([sys.executable, "-c", script], env=env, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    paths = {p.communicate(timeout=180)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(paths) == 1
    built = Path(paths.pop())
    assert built.parent == tmp_path / "kernels" and built.exists()
    assert [f.name for f in built.parent.iterdir()] == [built.name]  # no temporary files left
