"""Cases an outside parity review found untested: a router bias negative enough that the group
mask's value matters, the grouped-GEMM path through the real loader and when its kernel fails,
``model.to(...)``, and our bf16 error measured against transformers' own bf16 error.

Tolerances are relative to the logit scale (max |logit| of the reference), not absolute: the
absolute error of an fp32 forward grows with the size of the logits and of the weights.
"""

from __future__ import annotations

import copy
import dataclasses
import statistics
from pathlib import Path
from typing import Any

import pytest
import torch
import torch.nn.functional as F
from model_support import GROUPED_MOE_CONFIG, eager_reference

from agent_runtime.model import moe
from agent_runtime.model.checkpoint import load_checkpoint
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.generation import SamplingParams, generate
from agent_runtime.model.interop import from_transformers
from agent_runtime.model.moe import MoEBlock
from agent_runtime.model.presets import tiny_hf_config
from agent_runtime.model.transformer import MoEForCausalLM

transformers = pytest.importorskip("transformers")

# fp32 against fp32, as a fraction of the reference's largest |logit|.
REL_TOL = 2e-5


def relative_diffs(
    ref: Any, ours: MoEForCausalLM, *, prompt_len: int = 11, steps: int = 6
) -> list[float]:
    """Max |logit difference| / max |reference logit| after the prefill and each decode step."""
    ids = torch.randint(0, ref.config.vocab_size, (1, prompt_len), generator=_gen(1))
    cache_ref = transformers.DynamicCache(config=ref.config)
    cache_ours = ours.new_cache(1)
    out = []
    with torch.no_grad():
        r = ref(ids, cache=cache_ref, use_cache=True).logits
        o = ours(ids, cache_ours)
        out.append(((r - o).abs().max() / r.abs().max()).item())
        for _ in range(steps):
            tok = r[:, -1:].argmax(-1)
            r = ref(tok, cache=cache_ref, use_cache=True).logits
            o = ours(tok, cache_ours)
            out.append(((r - o).abs().max() / r.abs().max()).item())
    return out


def _gen(seed: int) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


# ------------------------------------------------------------------ negative router bias


@pytest.fixture(scope="module")
def negative_bias_pair() -> tuple[Any, MoEForCausalLM]:
    cfg = tiny_hf_config(n_group=4, topk_group=2, num_hidden_layers=3)
    ref = eager_reference(cfg, seed=11, bias_mean=-0.9)
    return ref, from_transformers(ref)


def test_strongly_negative_router_bias_with_group_limit_matches_transformers(
    negative_bias_pair: tuple[Any, MoEForCausalLM],
) -> None:
    """Biased scores below zero: experts of dropped groups must be out of reach (-inf), not
    scored 0.0, which would beat every eligible expert. Prefill and every decode step."""
    ref, ours = negative_bias_pair
    for layer in ours.layers[1:]:
        assert isinstance(layer.mlp, MoEBlock)
        assert layer.mlp.gate_bias.mean().item() < -0.8
    diffs = relative_diffs(ref, ours)
    assert max(diffs) < REL_TOL, diffs


def test_strongly_negative_router_bias_picks_the_experts_transformers_picks(
    negative_bias_pair: tuple[Any, MoEForCausalLM],
) -> None:
    ref, ours = negative_bias_pair
    block = ours.layers[1].mlp
    assert isinstance(block, MoEBlock)
    x = torch.randn(200, ref.config.hidden_size, generator=_gen(2))
    weights, idx = moe.route(
        x,
        block.gate_w,
        block.gate_bias,
        top_k=block.top_k,
        n_group=4,
        topk_group=2,
        norm_topk_prob=True,
        scaling=block.scaling,
    )
    with torch.no_grad():
        _, ref_w, ref_idx = ref.model.layers[1].mlp.gate(x)
    assert torch.equal(idx.sort(-1)[0], ref_idx.sort(-1)[0])
    # and every token's experts come from at most topk_group groups
    assert all(len(set((row // 4).tolist())) <= 2 for row in idx)


# ------------------------------------------------------------------ grouped GEMM path

CFG = GROUPED_MOE_CONFIG


def _block(config: MoEConfig, dtype: torch.dtype, *, grouped: bool) -> MoEBlock:
    block = MoEBlock(config, dtype=dtype, device=torch.device("cpu"), grouped=grouped)
    with torch.no_grad():
        gen = _gen(0)
        for p in block.parameters():
            p.copy_(torch.randn(p.shape, generator=gen) * 0.3)
    return block


class _GroupedSpy:
    """Stands in for ``F.grouped_mm``: counts calls, fails on request, else runs the real one."""

    def __init__(self, fail: bool) -> None:
        self.real = F.grouped_mm
        self.fail = fail
        self.calls = 0

    def __call__(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        self.calls += 1
        if self.fail:
            raise NotImplementedError("no grouped GEMM kernel here")
        out: torch.Tensor = self.real(*args, **kwargs)
        return out


@pytest.fixture
def fresh_grouped_state(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(moe, "_GROUPED_OK", {})


@pytest.mark.usefixtures("fresh_grouped_state")
def test_failed_grouped_gemm_falls_back_and_counts_router_statistics_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = _GroupedSpy(fail=True)
    monkeypatch.setattr(F, "grouped_mm", spy)
    grouped = _block(CFG, torch.float32, grouped=True)
    loop = _block(CFG, torch.float32, grouped=False)
    grouped.load_counts = torch.zeros(8, dtype=torch.long)
    x = torch.randn(1, 800, 32, generator=_gen(3))
    with torch.no_grad():
        got = grouped(x)
        want = loop(x)
    assert spy.calls == 1
    assert int(grouped.load_counts.sum()) == 800 * 3
    torch.testing.assert_close(got, want, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        grouped(x)  # known to fail now: not tried again, still counted once
    assert spy.calls == 1
    assert int(grouped.load_counts.sum()) == 2 * 800 * 3


@pytest.mark.usefixtures("fresh_grouped_state")
def test_one_grouped_gemm_failure_does_not_disable_other_dtypes_or_shapes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    spy = _GroupedSpy(fail=True)
    monkeypatch.setattr(F, "grouped_mm", spy)
    x = torch.randn(1, 5, 32, generator=_gen(4))
    with torch.no_grad():
        _block(CFG, torch.float32, grouped=True)(x)
    assert spy.calls == 1
    spy.fail = False
    wider = dataclasses.replace(CFG, moe_intermediate_size=24)
    with torch.no_grad():
        _block(CFG, torch.float32, grouped=True)(x)  # same case: stays on the loop
        assert spy.calls == 1
        _block(CFG, torch.bfloat16, grouped=True)(x.bfloat16())  # other dtype: tried
        assert spy.calls == 3  # two grouped GEMMs per forward
        _block(wider, torch.float32, grouped=True)(x)  # other shape: tried
        assert spy.calls == 5


@pytest.mark.usefixtures("fresh_grouped_state")
def test_grouped_gemm_path_through_the_loader_matches_transformers(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The CUDA expert path, forced on CPU, on a checkpoint written by transformers."""
    spy = _GroupedSpy(fail=False)
    monkeypatch.setattr(F, "grouped_mm", spy)
    ref = eager_reference(tiny_hf_config(n_group=4, topk_group=2, num_hidden_layers=3), seed=12)
    ref.save_pretrained(tmp_path)
    ours = load_checkpoint(tmp_path, grouped_experts=True, progress=False)
    blocks = [layer.mlp for layer in ours.layers if isinstance(layer.mlp, MoEBlock)]
    assert blocks and all(b.grouped for b in blocks)
    diffs = relative_diffs(ref, ours)
    assert spy.calls >= 2 * len(blocks) * len(diffs)  # the grouped path really ran every step
    assert max(diffs) < REL_TOL, diffs


# ------------------------------------------------------------------ model.to(...)


@pytest.fixture(scope="module")
def grouped_ref() -> Any:
    return eager_reference(tiny_hf_config(n_group=4, topk_group=2), seed=3)


def test_to_bfloat16_converts_weights_rotary_and_keeps_the_router_fp32(grouped_ref: Any) -> None:
    converted = from_transformers(grouped_ref).to(torch.bfloat16)
    built = from_transformers(grouped_ref, dtype=torch.bfloat16)
    assert converted.dtype == torch.bfloat16
    assert converted.rotary.cos.dtype == torch.bfloat16
    for layer in converted.layers[1:]:
        assert isinstance(layer.mlp, MoEBlock)
        assert layer.mlp.gate_w.dtype == torch.float32
        assert layer.mlp.gate_bias.dtype == torch.float32
        assert layer.mlp.w13.dtype == torch.bfloat16
    ids = torch.randint(0, 1000, (1, 9), generator=_gen(5))
    # the same numbers as a model built in bf16 from the start: nothing was lost on the way
    assert torch.equal(converted(ids), built(ids))
    params = SamplingParams(max_new_tokens=6, stop_token_ids=())
    prompt = [5, 17, 99, 250]
    assert generate(converted, [prompt], params).tokens == generate(built, [prompt], params).tokens
    back = converted.to(torch.float32)
    assert back.dtype == torch.float32 and back.rotary.cos.dtype == torch.float32
    assert torch.isfinite(back(ids)).all()


def test_to_an_unsupported_dtype_is_refused_before_anything_changes(grouped_ref: Any) -> None:
    ours = from_transformers(grouped_ref)
    with pytest.raises(ValueError, match="float64"):
        ours.to(torch.float64)
    assert ours.dtype == torch.float32 and ours.embed.dtype == torch.float32


def test_to_another_device_moves_weights_rotary_and_router(grouped_ref: Any) -> None:
    """The device bookkeeping ``.to("cuda")`` relies on, checked on the meta device (no GPU is
    needed to see that every tensor, the rotary tables and the recorded device follow)."""
    ours = from_transformers(grouped_ref)
    ours.to("meta")
    assert ours.device.type == "meta" and ours.rotary.cos.device.type == "meta"
    assert all(t.device.type == "meta" for t in ours.state_dict().values())
    routers = [t for name, t in ours.state_dict().items() if "gate" in name and "proj" not in name]
    assert routers and all(t.dtype == torch.float32 for t in routers)


# ------------------------------------------------------------------ bf16 against transformers' bf16


def test_bf16_error_is_no_worse_than_transformers_own_bf16_error(grouped_ref: Any) -> None:
    """Both bf16 models against the fp64 reference on the same weights, same prompts: our
    median and 90th-percentile per-position relative errors within 1.5x of transformers'."""
    truth = copy.deepcopy(grouped_ref).double()
    theirs16 = copy.deepcopy(grouped_ref).to(torch.bfloat16)
    ours16 = from_transformers(grouped_ref, dtype=torch.bfloat16)
    ours_err: list[float] = []
    theirs_err: list[float] = []
    for seed in range(8):
        ids = torch.randint(0, 1000, (1, 12), generator=_gen(100 + seed))
        with torch.no_grad():
            r = truth(ids).logits
            t = theirs16(ids).logits.double()
        o = ours16(ids).double()
        ours_err.extend(((o - r).norm(dim=-1) / r.norm(dim=-1))[0].tolist())
        theirs_err.extend(((t - r).norm(dim=-1) / r.norm(dim=-1))[0].tolist())
    q = statistics.quantiles
    ours_q, theirs_q = q(ours_err, n=10), q(theirs_err, n=10)
    assert statistics.median(ours_err) <= 1.5 * statistics.median(theirs_err), (ours_q, theirs_q)
    assert ours_q[-1] <= 1.5 * theirs_q[-1], (ours_q, theirs_q)


# ------------------------------------------------------------------ tolerance vs logit scale


@pytest.mark.parametrize("spread", [False, True], ids=["unit_scale", "fp8_like_spread_rows"])
def test_fp32_error_scales_with_the_logits_like_transformers_own_fp32_error(spread: bool) -> None:
    """An absolute bound such as 1e-4 holds only for small logits: with larger, row-spread
    weights (the magnitudes FP8 checkpoints have) transformers' own fp32 forward is 1e-4 off its
    fp64 forward. The bounds: within ``REL_TOL`` of the logit scale from transformers' fp32,
    and no further from fp64 than twice transformers' fp32 error (or 1e-6 of the scale)."""
    from model_support import random_reference

    ref = random_reference(tiny_hf_config(n_group=4, topk_group=2), seed=7, spread_rows=spread)
    ref.eval()
    ref.set_experts_implementation("eager")
    ref.set_attn_implementation("eager")
    ref64 = copy.deepcopy(ref).double()
    ours = from_transformers(ref)
    ids = torch.randint(0, 1000, (1, 40), generator=_gen(7))
    with torch.no_grad():
        r32 = ref(ids).logits.double()
        r64 = ref64(ids).logits
    o = ours(ids).double()
    scale = r64.abs().max().item()
    theirs = (r32 - r64).abs().max().item()
    assert (o - r32).abs().max().item() < REL_TOL * scale
    assert (o - r64).abs().max().item() <= 2 * max(theirs, 1e-6 * scale), (theirs, scale)
