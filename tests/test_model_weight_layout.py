"""Weights laid out for the decode kernels: each projection's memory layout follows
``layers.out_major`` for its dtype and shape, the HF key views and ``.to()`` keep working on any
layout, and the bf16 decode step (attention in fp32 on CPU) is no less accurate than
transformers' own bf16 forward."""

from __future__ import annotations

import copy
import statistics
from typing import Any

import pytest
import torch
from model_support import eager_reference

from agent_runtime.model import layers
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.interop import from_transformers
from agent_runtime.model.layers import out_major, projection_weight
from agent_runtime.model.mla import MLAttention
from agent_runtime.model.moe import DenseMLP, MoEBlock
from agent_runtime.model.presets import tiny_hf_config
from agent_runtime.model.transformer import DecoderLayer, MoEForCausalLM


def _projections(model: MoEForCausalLM) -> list[tuple[str, torch.Tensor]]:
    """Every ``x @ W`` weight as (name, [..., in, out] tensor); the lm_head seen transposed."""
    out: list[tuple[str, torch.Tensor]] = [("lm_head", model.lm_head.t())]
    for i, layer in enumerate(model.layers):
        assert isinstance(layer, DecoderLayer)
        attn: MLAttention = layer.attn
        assert attn.w_qb is not None
        out += [(f"{i}.w_a", attn.w_a), (f"{i}.w_qb", attn.w_qb), (f"{i}.w_o", attn.w_o)]
        mlp = layer.mlp
        dense: DenseMLP | None = mlp.shared if isinstance(mlp, MoEBlock) else mlp
        if isinstance(mlp, MoEBlock):
            out += [(f"{i}.experts.w13", mlp.w13), (f"{i}.experts.w2", mlp.w2)]
        assert dense is not None
        out += [(f"{i}.w13", dense.w13), (f"{i}.w2", dense.w2)]
    return out


def _is_out_major(w: torch.Tensor) -> bool:
    return w.stride()[-2] == 1 and w.stride()[-1] == w.shape[-2]


@pytest.fixture
def mkl_layout(monkeypatch: pytest.MonkeyPatch) -> None:
    """A host without the native kernels: fp32 layouts follow MKL's speeds (both layouts occur,
    which the relayout tests need); with the kernels every projection is out-major."""
    monkeypatch.setattr(layers, "native_layout", lambda: False)


def test_with_native_kernels_every_cpu_projection_is_out_major(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(layers, "native_layout", lambda: True)
    assert out_major(torch.float32, "cpu", 256, 1024) is True
    assert out_major(torch.float32, "cpu", 1024, 32000) is True
    model = MoEForCausalLM(MoEConfig.from_hf(tiny_hf_config()))
    assert all(_is_out_major(w) for _, w in _projections(model))


@pytest.mark.usefixtures("mkl_layout")
def test_layout_rule_by_dtype_and_shape() -> None:
    assert out_major(torch.bfloat16, "cpu", 256, 1024) is True  # bf16: always [out, in]
    assert out_major(torch.float16, "cpu", 1024, 256) is True
    assert out_major(torch.float32, "cpu", 1024, 512) is True  # narrower output: dot products
    assert out_major(torch.float32, "cpu", 256, 1024) is False  # wider output: axpy form
    assert out_major(torch.float32, "meta", 1024, 32000) is False
    assert out_major(torch.bfloat16, "cuda", 1024, 512) is None  # cuBLAS: no preference
    w = projection_weight((3, 8, 4), torch.float32, "cpu")
    assert w.shape == (3, 8, 4) and w.stride() == (32, 1, 8)  # stacked, each [out, in]
    w = projection_weight((4, 8), torch.float32, "cpu")
    assert w.shape == (4, 8) and w.is_contiguous()


@pytest.mark.usefixtures("mkl_layout")
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_every_projection_is_stored_the_way_the_rule_says(dtype: torch.dtype) -> None:
    model = MoEForCausalLM(MoEConfig.from_hf(tiny_hf_config()), dtype=dtype)
    seen = {"out_major": 0, "in_major": 0}
    for name, w in _projections(model):
        want = out_major(dtype, "cpu", w.shape[-2], w.shape[-1])
        assert _is_out_major(w) == want, (name, tuple(w.shape), w.stride())
        if not want:
            assert w.is_contiguous(), name
        seen["out_major" if want else "in_major"] += 1
    if dtype == torch.bfloat16:
        assert seen["in_major"] == 0
    else:  # the tiny config has both kinds of shapes in fp32
        assert seen["in_major"] > 0 and seen["out_major"] > 0


@pytest.mark.usefixtures("mkl_layout")
def test_to_bfloat16_relays_projections_and_the_hf_views_stay_exact() -> None:
    model = MoEForCausalLM(MoEConfig.from_hf(tiny_hf_config()), seed=4)
    before = {k: v.clone() for k, v in model.hf_state_items()}
    assert any(not _is_out_major(w) for _, w in _projections(model))
    model.to(torch.bfloat16)
    assert all(_is_out_major(w) for _, w in _projections(model))
    after = dict(model.hf_state_items())
    assert after.keys() == before.keys()
    for key, value in before.items():
        expected = value if "mlp.gate." in key else value.to(torch.bfloat16)
        assert torch.equal(after[key], expected), key
    # and back: the fp32 layouts return, values as they were in bf16
    model.to(torch.float32)
    for name, w in _projections(model):
        want = out_major(torch.float32, "cpu", w.shape[-2], w.shape[-1])
        assert _is_out_major(w) == want, name
    for key, value in model.hf_state_items():
        assert torch.equal(value, after[key].float()), key


@pytest.mark.usefixtures("mkl_layout")
def test_weights_loaded_through_the_hf_keys_land_in_any_layout() -> None:
    """A bf16 model (all out-major) loaded from an fp32 model's HF views (mixed layouts)
    computes exactly what the fp32 model converted with ``.to`` computes."""
    src = MoEForCausalLM(MoEConfig.from_hf(tiny_hf_config()), seed=9)
    dst = MoEForCausalLM(MoEConfig.from_hf(tiny_hf_config()), dtype=torch.bfloat16, init="empty")
    for key, value in src.hf_state_items():
        dst.load_hf_tensor(key, value)
    assert dst.missing_hf_keys() == []
    ids = torch.tensor([[3, 14, 15, 92, 65, 35]])
    assert torch.equal(dst(ids), src.to(torch.bfloat16)(ids))


def _rel_errors(logits: torch.Tensor, truth: torch.Tensor) -> list[float]:
    errors: torch.Tensor = (logits.double() - truth).norm(dim=-1) / truth.norm(dim=-1)
    return [float(e) for e in errors.reshape(-1)]


@pytest.fixture(scope="module")
def reference() -> Any:
    pytest.importorskip("transformers")
    return eager_reference(tiny_hf_config(), seed=11)


def test_bf16_decode_steps_are_no_less_accurate_than_transformers_bf16(reference: Any) -> None:
    """Token by token through the decode path (fp32 attention over a bf16 cache on CPU)
    against the fp64 forward on the same weights; transformers' bf16 forward is the yardstick:
    our median and worst per-position relative errors within 1.5x of its."""
    truth_model = copy.deepcopy(reference).double()
    theirs16 = copy.deepcopy(reference).to(torch.bfloat16)
    ours16 = from_transformers(reference, dtype=torch.bfloat16)
    ours_err: list[float] = []
    theirs_err: list[float] = []
    gen = torch.Generator().manual_seed(21)
    for _ in range(4):
        ids = torch.randint(0, 1000, (1, 24), generator=gen)
        cache = ours16.new_cache(1, capacity=24)
        ours16(ids[:, :8], cache, logits_to_keep=1)
        steps = torch.cat([ours16(ids[:, t : t + 1], cache) for t in range(8, 24)], dim=1)
        assert cache.length == 24
        with torch.no_grad():
            truth = truth_model(ids).logits[:, 8:]
            theirs = theirs16(ids).logits[:, 8:]
        ours_err += _rel_errors(steps, truth)
        theirs_err += _rel_errors(theirs, truth)
    assert statistics.median(ours_err) <= 1.5 * statistics.median(theirs_err), (
        statistics.median(ours_err),
        statistics.median(theirs_err),
    )
    assert max(ours_err) <= 1.5 * max(theirs_err), (max(ours_err), max(theirs_err))
