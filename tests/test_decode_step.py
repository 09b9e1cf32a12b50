"""The fused CPU decode step (model/decode_step.c) against the layer-by-layer path.

Both paths use the same native GEMV kernels, so in fp32 the logits agree to fp32 reordering
error (relative to their spread). In bf16 they round at the same points, so they agree to about
one bf16 rounding, as long as no router score sits within a rounding of a tie: the bf16 tests pin
the routing with a large router bias so that a flipped expert cannot hide (or fake) a difference.
"""

from __future__ import annotations

import copy
import logging
import os
import pickle
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

import pytest
import torch
from model_support import small_moe_config

from agent_runtime.model import cpu_kernels, decode_step, layers
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.decode_step import DecodePlan, decode_plan, fused_decode
from agent_runtime.model.moe import MoEBlock
from agent_runtime.model.quant import quantize_experts
from agent_runtime.model.transformer import MoEForCausalLM

pytestmark = pytest.mark.skipif(
    not cpu_kernels.available(), reason="needs the native kernels (gcc and an AVX2 CPU)"
)

PROMPT = [3, 14, 15, 92, 65, 35, 8, 97, 93]


def _decode(model: MoEForCausalLM, steps: int, *, fused: bool) -> torch.Tensor:
    """Logits of ``steps`` teacher-forced decode steps after PROMPT (the same tokens for both
    paths, so the caches and logits compare step by step)."""
    cache = model.new_cache(1, capacity=64)
    rows = []
    with fused_decode(fused):
        model(torch.tensor([PROMPT]), cache, logits_to_keep=1)
        for i in range(steps):
            tok = (i * 37 + 11) % model.config.vocab_size
            rows.append(model(torch.tensor([[tok]]), cache)[0, -1])
    return torch.stack(rows)


@pytest.fixture(params=[1, 2], ids=["1-thread", "2-threads"])
def threads(request: pytest.FixtureRequest) -> Any:
    """torch's (and so the kernels') thread count for the test: on two, the fused step splits
    experts between the threads."""
    before = torch.get_num_threads()
    torch.set_num_threads(request.param)
    yield request.param
    torch.set_num_threads(before)


def _rel(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).abs().max() / b.std())


def _pin_routing(model: MoEForCausalLM) -> None:
    """A router bias far larger than any score: each layer always picks the same experts (and
    groups), so bf16 rounding cannot flip a choice."""
    with torch.no_grad():
        for layer in model.layers:
            mlp = layer.mlp
            if isinstance(mlp, MoEBlock):
                gen = torch.Generator().manual_seed(len(mlp.gate_bias))
                mlp.gate_bias.copy_(torch.randperm(mlp.n_experts, generator=gen).float() * 10.0)


CONFIGS: dict[str, dict[str, Any]] = {
    "q_lora, dense first layers": {},
    "no q_lora, no shared expert": {"q_lora_rank": None, "n_shared_experts": 0},
    "grouped routing, unnormalised": {
        "n_routed_experts": 16,
        "n_group": 4,
        "topk_group": 2,
        "norm_topk_prob": False,
        "first_k_dense_replace": 0,
    },
    "half-split rope, two shared experts": {"rope_interleave": False, "n_shared_experts": 2},
}


@pytest.mark.parametrize("name", list(CONFIGS))
def test_fp32_matches_the_layer_path(name: str, threads: int) -> None:
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300, **CONFIGS[name]))
    model = MoEForCausalLM(cfg, seed=7)
    with torch.no_grad():
        for layer in model.layers:
            if isinstance(layer.mlp, MoEBlock):
                layer.mlp.gate_bias.normal_(0.0, 0.3)  # biased choices, as trained routers make
    layered = _decode(model, 12, fused=False)
    fused = _decode(model, 12, fused=True)
    assert isinstance(model._decode_plan, DecodePlan)  # the fused step did run
    assert _rel(fused, layered) <= 1e-5


def test_fp32_in_major_weights(monkeypatch: pytest.MonkeyPatch) -> None:
    """fp32 projections stored [in, out] (the layout without native kernels, e.g. a model built
    before they were switched on) run through the axpy kernel inside the fused step too."""
    monkeypatch.setattr(layers, "native_layout", lambda: False)
    model = MoEForCausalLM(MoEConfig.from_hf(small_moe_config(vocab_size=300)), seed=15)
    assert model.lm_head.stride() == (1, 300)  # in-major: the rule without native kernels
    layered = _decode(model, 6, fused=False)
    assert _rel(_decode(model, 6, fused=True), layered) <= 1e-5
    assert isinstance(model._decode_plan, DecodePlan)


def test_bf16_matches_the_layer_path_within_a_rounding(threads: int) -> None:
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300, n_group=2, topk_group=1))
    model = MoEForCausalLM(cfg, seed=8, dtype=torch.bfloat16)
    _pin_routing(model)
    layered = _decode(model, 10, fused=False)
    fused = _decode(model, 10, fused=True)
    assert isinstance(model._decode_plan, DecodePlan)
    err = _rel(fused.float(), layered.float())
    assert err <= 0.03, err
    # and both are as far from the fp32 model on the same weights
    reference = _decode(copy.deepcopy(model).float(), 10, fused=False)
    assert _rel(fused.float(), reference) <= 2 * _rel(layered.float(), reference) + 0.01


@pytest.mark.parametrize("inter", [64, 128])
@pytest.mark.parametrize("fmt", ["fp8", "int4"])
def test_quantised_experts_match_the_layer_path(fmt: str, inter: int, threads: int) -> None:
    """FP8 with 64 rows per projection: gate and up are two stacked block matrices. The INT4
    kernel rounds its input row to 15-bit integers (2^-15 of its largest value), so an fp32
    reordering difference upstream may move one rounding: a looser bound there."""
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300, moe_intermediate_size=inter))
    model = MoEForCausalLM(cfg, seed=9)
    quantize_experts(model, fmt, shared=True)  # type: ignore[arg-type]
    layered = _decode(model, 8, fused=False)
    fused = _decode(model, 8, fused=True)
    assert isinstance(model._decode_plan, DecodePlan)
    assert _rel(fused, layered) <= (1e-5 if fmt == "fp8" else 2e-4)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16], ids=["fp32", "bf16"])
def test_long_context_attention_splits_rows_between_threads(
    dtype: torch.dtype, threads: int
) -> None:
    """Past ~2700 cached rows (this config), the attention's passes over the cache run on every
    thread, each on a range of rows with its own partial sum."""
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300, max_position_embeddings=8192))
    model = MoEForCausalLM(cfg, seed=16, dtype=dtype)
    _pin_routing(model)
    prompt = torch.randint(0, 300, (1, 3000), generator=torch.Generator().manual_seed(5))
    out = {}
    for fused in (False, True):
        cache = model.new_cache(1, capacity=3010)
        with fused_decode(fused):
            model(prompt, cache, logits_to_keep=1)
            out[fused] = torch.stack(
                [model(torch.tensor([[t]]), cache)[0, -1] for t in (7, 8, 9, 10)]
            )
    assert isinstance(model._decode_plan, DecodePlan)
    assert _rel(out[True].float(), out[False].float()) <= (1e-5 if dtype == torch.float32 else 0.03)


def test_fewer_openmp_threads_than_asked(tmp_path: Path) -> None:
    """OpenMP may give a team smaller than the thread count asked for (here OMP_THREAD_LIMIT=1
    under torch's 2): the expert split and the attention's row ranges use the team they got."""
    script = (
        "import torch\n"
        "from model_support import small_moe_config\n"
        "from agent_runtime.model.config import MoEConfig\n"
        "from agent_runtime.model.decode_step import fused_decode\n"
        "from agent_runtime.model.transformer import MoEForCausalLM\n"
        "torch.set_num_threads(2)\n"
        "cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300, max_position_embeddings=8192))\n"
        "model = MoEForCausalLM(cfg, seed=17)\n"
        "prompt = torch.randint(0, 300, (1, 3000), generator=torch.Generator().manual_seed(6))\n"
        "out = []\n"
        "for fused in (False, True):\n"
        "    cache = model.new_cache(1, capacity=3004)\n"
        "    with fused_decode(fused):\n"
        "        model(prompt, cache, logits_to_keep=1)\n"
        "        out.append(torch.stack([model(torch.tensor([[t]]), cache)[0, -1] for t in (3, 4)]))\n"
        "err = float((out[1] - out[0]).abs().max() / out[0].std())\n"
        "print('ERR', err, model._decode_plan is not None and not isinstance(model._decode_plan, tuple))\n"
    )
    env = dict(os.environ, OMP_THREAD_LIMIT="1", PYTHONPATH=str(Path(__file__).parent))
    proc = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=300
    )
    assert proc.returncode == 0, proc.stderr
    _, err, used = proc.stdout.split()
    assert used == "True" and float(err) <= 1e-5, proc.stdout


def test_unsupported_models_and_states_take_the_layer_path() -> None:
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300))
    model = MoEForCausalLM(cfg, seed=10)
    quantize_experts(model, "int8")  # no native INT8 kernel: not described
    assert decode_plan(model) is None
    layered = _decode(model, 4, fused=False)
    assert torch.equal(_decode(model, 4, fused=True), layered)

    model = MoEForCausalLM(cfg, seed=10)
    assert isinstance(decode_plan(model), DecodePlan)
    model.set_attention_path("expanded")  # forced: the fused step would not honour it
    assert decode_plan(model) is None
    model.set_attention_path("auto")
    assert isinstance(decode_plan(model), DecodePlan)
    with cpu_kernels.native_kernels(False):
        assert decode_plan(model) is None
    with fused_decode(False):
        assert decode_plan(model) is None


def test_router_statistics_still_count_every_decode_token() -> None:
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300))
    model = MoEForCausalLM(cfg, seed=11)
    moe = [layer.mlp for layer in model.layers if isinstance(layer.mlp, MoEBlock)]
    for block in moe:
        block.load_counts = torch.zeros(block.n_experts, dtype=torch.int64)
    assert decode_plan(model) is None
    _decode(model, 5, fused=True)
    # prompt + 5 decode tokens, top-k choices each
    assert all(int(b.load_counts.sum()) == (len(PROMPT) + 5) * b.top_k for b in moe)  # type: ignore[union-attr]


def test_plan_follows_weight_changes() -> None:
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300))
    model = MoEForCausalLM(cfg, seed=12)
    first = decode_plan(model)
    assert first is not None and decode_plan(model) is first  # cached while nothing changes
    block = next(layer.mlp for layer in model.layers if isinstance(layer.mlp, MoEBlock))
    block.w13.data = block.w13.data.clone() * 2.0  # new storage: the expert views are rebuilt
    second = decode_plan(model)
    assert second is not None and second is not first
    # the fused step reads the new weights: it still equals the layer path
    assert _rel(_decode(model, 4, fused=True), _decode(model, 4, fused=False)) <= 1e-5
    model.to(torch.bfloat16)
    third = decode_plan(model)
    assert third is not None and third is not second


def test_a_failing_native_step_falls_back_with_the_input_intact(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300))
    model = MoEForCausalLM(cfg, seed=13)
    layered = _decode(model, 4, fused=False)

    def failing(lib: Any) -> Any:
        return lambda *args: -1

    monkeypatch.setattr(decode_step, "_entry", failing)
    with caplog.at_level(logging.WARNING):
        out = _decode(model, 4, fused=True)
    assert torch.equal(out, layered)
    assert "fused decode step failed" in caplog.text
    assert isinstance(model._decode_plan, DecodePlan) and model._decode_plan.broken


def test_two_threads_decode_two_sequences_of_one_model_at_once() -> None:
    """The native call releases the GIL: two Python threads decoding their own sequences on the
    same model (same plan) get what each gets alone (each call fills its own copy of the step's
    inputs)."""
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300))
    model = MoEForCausalLM(cfg, seed=18)
    prompts = ([5, 6, 7], [100, 200, 30, 40, 50])

    def run(prompt: list[int], out: list[torch.Tensor]) -> None:
        cache = model.new_cache(1, capacity=len(prompt) + 200)
        model(torch.tensor([prompt]), cache, logits_to_keep=1)
        for i in range(200):
            out.append(model(torch.tensor([[(i * 13 + prompt[0]) % 300]]), cache)[0, -1])

    alone: list[list[torch.Tensor]] = [[], []]
    for prompt, out in zip(prompts, alone, strict=True):
        run(prompt, out)
    together: list[list[torch.Tensor]] = [[], []]
    threads = [
        threading.Thread(target=run, args=(prompt, out))
        for prompt, out in zip(prompts, together, strict=True)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert isinstance(model._decode_plan, DecodePlan)
    for a, b in zip(alone, together, strict=True):
        # (not bit-equal: OpenMP may give a concurrent call a smaller team, another sum order)
        assert len(b) == 200 and _rel(torch.stack(b), torch.stack(a)) <= 1e-5


def test_models_with_a_plan_copy_and_pickle() -> None:
    cfg = MoEConfig.from_hf(small_moe_config(vocab_size=300))
    model = MoEForCausalLM(cfg, seed=14)
    expected = _decode(model, 3, fused=True)
    assert isinstance(model._decode_plan, DecodePlan)
    for clone in (copy.deepcopy(model), pickle.loads(pickle.dumps(model))):
        assert clone._decode_plan is None  # its own plan, over its own weights
        assert _rel(_decode(clone, 3, fused=True), expected) <= 1e-6
        assert isinstance(clone._decode_plan, DecodePlan)
