"""FP8 checkpoints loaded with the routed experts kept FP8 in memory (``experts="fp8"``): the same
weights and logits as the dequantise-at-load model, a quarter of the expert memory of fp32, and a
model with kept experts saves back to a checkpoint."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from agent_runtime.model.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from agent_runtime.model.config import MoEConfig
from agent_runtime.model.moe import MoEBlock
from agent_runtime.model.presets import tiny_hf_config
from agent_runtime.model.quant import Fp8BlockLinear, StackedRows, quantize_experts
from agent_runtime.model.transformer import MoEForCausalLM


def _fp8_dir(tmp: Path, moe_inter: int) -> Path:
    cfg = MoEConfig.from_hf(tiny_hf_config(moe_intermediate_size=moe_inter, num_hidden_layers=3))
    model = MoEForCausalLM(cfg, seed=5)
    return save_checkpoint(model, tmp / f"fp8-{moe_inter}", fp8_block_size=(128, 128))


def _logits(model: MoEForCausalLM) -> torch.Tensor:
    prompt = torch.randint(0, 1000, (1, 8), generator=torch.Generator().manual_seed(0))
    cache = model.new_cache(1, capacity=12)
    with torch.inference_mode():
        rows = [model(prompt, cache)[0]]
        rows += [model(torch.tensor([[t]]), cache)[0] for t in (3, 99, 512)]
    return torch.cat(rows)


# 64 gate rows: not a whole 128-row block, so gate and up stay two FP8 weights; 128: one.
@pytest.mark.parametrize("moe_inter", [64, 128])
def test_fp8_experts_kept_fp8_match_the_dequantised_model(tmp_path: Path, moe_inter: int) -> None:
    folder = _fp8_dir(tmp_path, moe_inter)
    dense = load_checkpoint(folder, progress=False)
    kept = load_checkpoint(folder, progress=False, experts="fp8")
    dense_views = dict(dense.hf_state_items())
    for i, layer in enumerate(kept.layers):
        block = layer.mlp
        if not isinstance(block, MoEBlock):
            continue
        assert block.bank is not None and block.w13.is_meta
        for e, (gate_up, down) in enumerate(
            block.bank.fetch(range(block.n_experts), torch.empty(0))
        ):
            assert isinstance(gate_up, StackedRows if moe_inter % 128 else Fp8BlockLinear)
            assert isinstance(down, Fp8BlockLinear)
            p = f"model.layers.{i}.mlp.experts.{e}."
            want = torch.cat(
                [dense_views[p + "gate_proj.weight"], dense_views[p + "up_proj.weight"]]
            )
            assert torch.equal(gate_up.dequantize(), want)
            assert torch.equal(down.dequantize(), dense_views[p + "down_proj.weight"])
        expert_bytes = block.n_experts * 3 * block.inter * kept.config.hidden_size
        assert block.bank.resident_bytes < expert_bytes * 1.01  # one byte per weight plus scales
    got, want = _logits(kept), _logits(dense)
    assert float((got - want).abs().max()) <= 1e-5 * float(want.abs().max())


def test_keeping_fp8_experts_needs_an_fp8_checkpoint(tmp_path: Path) -> None:
    model = MoEForCausalLM(MoEConfig.from_hf(tiny_hf_config(num_hidden_layers=2)), seed=1)
    folder = save_checkpoint(model, tmp_path / "plain")
    with pytest.raises(CheckpointError, match="experts='fp8' needs an FP8 checkpoint"):
        load_checkpoint(folder, progress=False, experts="fp8")
    with pytest.raises(CheckpointError, match="experts='int4' needs a compressed-tensors"):
        load_checkpoint(folder, progress=False, experts="int4")


@pytest.mark.parametrize("fmt", ["fp8", "int4"])
def test_a_model_with_kept_experts_saves_their_real_weights(tmp_path: Path, fmt: str) -> None:
    model = MoEForCausalLM(MoEConfig.from_hf(tiny_hf_config(num_hidden_layers=2)), seed=1).eval()
    quantize_experts(model, fmt, shared=True)  # type: ignore[arg-type]
    reloaded = load_checkpoint(save_checkpoint(model, tmp_path / fmt), progress=False)
    block = model.layers[1].mlp
    assert isinstance(block, MoEBlock) and block.bank is not None
    gate_up, down = block.bank.fetch([2], torch.empty(0))[0]
    views = dict(reloaded.hf_state_items())
    assert torch.equal(views["model.layers.1.mlp.experts.2.down_proj.weight"], down.dequantize())
    assert torch.equal(
        views["model.layers.1.mlp.experts.2.up_proj.weight"], gate_up.dequantize()[block.inter :]
    )
    assert block.shared_pair is not None
    assert torch.equal(
        views["model.layers.1.mlp.shared_experts.down_proj.weight"],
        block.shared_pair[1].dequantize(),
    )
    got, want = _logits(reloaded), _logits(model)
    # the reloaded model runs dense fp32; the INT4 kernel runs on bf16 activations
    assert float((got - want).abs().max()) <= (1e-5 if fmt == "fp8" else 2e-2) * float(
        want.abs().max()
    )
